//! The HTTP API (actix-web), one file per resource. Handlers translate
//! between HTTP and the engine; they never touch SQL or run scripts
//! themselves, and never `unwrap` on a request path.
//!
//! # Layout
//! - `health`: `/api/healthstatus`, `/health/liveness`
//! - `workflows`: definitions and starting executions
//! - `executions`: the search, one execution, its state, log, cancel and deletion
//! - `paging`: list parameters and cursors
//! - `cluster`: `/api/cluster`, `/api/cluster/events`
//! - `metrics`: `/metrics`
//! - `openapi`: `/api/openapi.json`, generated from the handlers
//! - `auth`: bearer tokens
//! - `standby`: the standby gate (503 with the active nodes' addresses)

mod auth;
mod cluster;
mod dashboard;
mod executions;
mod health;
mod metrics;
pub(crate) mod openapi;
mod paging;
mod standby;
pub(crate) mod workflows;

use std::sync::Arc;

use actix::Addr;
use actix_web::{web, HttpRequest, HttpResponse};
use baton_actors::status::StatusCell;
use baton_actors::workflow::script::ScriptPool;
use baton_actors::workflow::ROOT_PATH;
use baton_actors::{ActionRegistry, NodeSupervisor, Store};
use futures::StreamExt;
use serde::de::DeserializeOwned;

use crate::config::Config;
use crate::error::ApiError;
use openapi::{Security, Unavailable};

/// What every handler can reach.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) node_id: String,
    pub(crate) supervisor: Addr<NodeSupervisor>,
    pub(crate) store: Store,
    pub(crate) scripts: ScriptPool,
    pub(crate) actions: ActionRegistry,
    pub(crate) status: Arc<StatusCell>,
    /// The node's definition cache.
    pub(crate) definitions: baton_actors::workflow::DefinitionCache,
    pub(crate) config: Arc<Config>,
    pub(crate) metrics: Arc<baton_actors::metrics::EngineMetrics>,
    /// `/metrics`' counts of owned executions, refreshed in the background.
    pub(crate) owned_cache: Arc<std::sync::Mutex<metrics::OwnedCache>>,
    /// Starts executions under `engine.max_running`.
    pub(crate) starter: baton_actors::supervisor::Starter,
}

/// The route table and the OpenAPI document, made from one list of
/// handlers so that neither can miss a route the other has.
macro_rules! api {
    ($($handler:path),* $(,)?) => {
        /// Registers every route.
        pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
            $( cfg.service($handler); )*
        }

        /// The OpenAPI document of the HTTP API.
        #[derive(utoipa::OpenApi)]
        #[openapi(
            info(title = "Baton", description = "A clustered, durable workflow runtime. Errors are `{\"error\": {\"code\", \"message\", \"details\"}}`."),
            paths($($handler),*),
            modifiers(&Unavailable, &Security),
            components(schemas(paging::StateName)),
            tags(
                (name = "health", description = "For load balancers and supervisors"),
                (name = "workflows", description = "Workflow definitions"),
                (name = "executions", description = "Workflow runs"),
                (name = "cluster", description = "Nodes and cluster events"),
            )
        )]
        pub(crate) struct ApiDoc;
    };
}

api!(
    dashboard::index,
    health::healthstatus,
    health::liveness,
    auth::whoami,
    workflows::list,
    workflows::import,
    workflows::get,
    workflows::replace,
    workflows::delete,
    workflows::start,
    workflows::executions,
    executions::search,
    executions::remove,
    executions::get,
    executions::get_state,
    executions::logs,
    executions::cancel,
    executions::resume,
    executions::deliver_signal,
    executions::interaction,
    cluster::status,
    cluster::events,
    cluster::fence,
    cluster::restart,
    metrics::metrics,
    openapi::document,
);

/// The answer for a request no route takes: 405 with `Allow` when the
/// path is one of the API's with another method, else 404.
pub(crate) async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    if let Some(allow) = openapi::allowed_methods(req.path()) {
        return Err(ApiError::MethodNotAllowed(allow));
    }
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}

/// Reads a request body, refusing more than `limit` bytes.
pub(crate) async fn read_body(
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request("invalid_body", "", format!("cannot read the body: {e}"))
        })?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// True when there is no body. A body of whitespace alone is not JSON
/// (schemathesis holds the server to that) and gets 400 `invalid_json`.
pub(crate) fn is_blank(bytes: &[u8]) -> bool {
    bytes.is_empty()
}

/// [`parse_json`], or the type's default when there is no body: for
/// requests whose every field is optional.
pub(crate) fn json_or_default<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if is_blank(bytes) {
        Ok(T::default())
    } else {
        parse_json(bytes)
    }
}

/// Parses a JSON body into `T`, naming the field at fault.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Every request body is an object: serde would read a struct from an
    // array too, field by field in order (`[]` gave every default).
    if bytes.trim_ascii_start().starts_with(b"[") {
        return Err(ApiError::bad_request(
            "invalid_body",
            ROOT_PATH,
            "the body must be a JSON object, not an array",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request("invalid_json", ROOT_PATH, format!("invalid JSON: {inner}"))
        } else {
            let path = if path == "." {
                ROOT_PATH.to_owned()
            } else {
                path
            };
            ApiError::bad_request("invalid_body", &path, inner.to_string())
        }
    })?;
    // One JSON value and nothing after it but whitespace: `{}` followed by
    // stray bytes is not a body the caller meant.
    de.end().map_err(|e| {
        ApiError::bad_request("invalid_json", ROOT_PATH, format!("invalid JSON: {e}"))
    })?;
    Ok(value)
}

/// Milliseconds since the Unix epoch as RFC 3339 text.
pub(crate) fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// Parses a query string into `T`, answering 400 naming the parameter.
pub(crate) fn parse_query<T: DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| {
            ApiError::bad_request("invalid_query", "", format!("invalid query string: {e}"))
        })
}

/// Refuses work that only a running active node may do.
pub(crate) fn require_running(state: &AppState) -> Result<(), ApiError> {
    let status = state.status.get();
    if status.state == baton_actors::messages::NodeState::Running {
        Ok(())
    } else {
        Err(ApiError::Unavailable {
            code: "not_running",
            message: format!("node {} is {}", state.node_id, status.state.as_str()),
        })
    }
}

/// One access log line per request, at debug (`BATON_LOG=baton::access=debug`):
/// method, path, status and milliseconds.
pub(crate) async fn access_log(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let method = req.method().clone();
    let path = req.path().to_owned();
    // The route's pattern, not the path: a bounded set of series.
    let route = req
        .match_pattern()
        .unwrap_or_else(|| "(unmatched)".to_owned());
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.metrics.clone());
    let started = std::time::Instant::now();
    let result = next.call(req).await;
    let status = match &result {
        Ok(r) => r.status().as_u16(),
        Err(e) => e.as_response_error().status_code().as_u16(),
    };
    if let Some(m) = metrics {
        m.http_request(&route, method.as_str(), status, started.elapsed());
    }
    tracing::debug!(
        target: "baton::access",
        %method,
        %path,
        status,
        ms = started.elapsed().as_secs_f64() * 1e3,
        "request"
    );
    result
}

pub(crate) use auth::check as auth_check;
pub(crate) use standby::gate as standby_gate;
