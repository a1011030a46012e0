//! `/api/openapi.json`: the OpenAPI 3 document, generated from the
//! handlers' annotations so that it cannot drift from the code.

use actix_web::{get, HttpResponse};
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::{Object, Ref, RefOr, Type};
use utoipa::{Modify, OpenApi};

use super::{cluster, executions, health, metrics, workflows};

/// The OpenAPI document of the HTTP API.
#[derive(OpenApi)]
#[openapi(
    info(title = "Baton", description = "A clustered, durable workflow runtime. Errors are `{\"error\": {\"code\", \"message\", \"details\"}}`."),
    paths(
        health::healthstatus,
        health::liveness,
        workflows::list,
        workflows::import,
        workflows::get,
        workflows::replace,
        workflows::delete,
        workflows::start,
        workflows::executions,
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
        document,
    ),
    modifiers(&Unavailable),
    tags(
        (name = "health", description = "For load balancers and supervisors"),
        (name = "workflows", description = "Workflow definitions"),
        (name = "executions", description = "Workflow runs"),
        (name = "cluster", description = "Nodes and cluster events"),
    )
)]
pub(crate) struct ApiDoc;

/// Paths that answer without the database and are served by a standby too.
const NEVER_UNAVAILABLE: &[&str] = &["/health/liveness", "/metrics", "/api/healthstatus"];

/// Every other path may answer 503 with `Retry-After`: the database is
/// unavailable (`database_unavailable`), or this node is not a running
/// active node (`standby`, `not_running`). Added here once rather than on
/// each handler.
struct Unavailable;

impl Modify for Unavailable {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let response = ResponseBuilder::new()
            .description(
                "Unavailable: the database cannot be reached (`database_unavailable`), or this \
                 node is not a running active node (`standby`, `not_running`); try again after \
                 `Retry-After` seconds",
            )
            .header(
                "Retry-After",
                HeaderBuilder::new()
                    .schema(Object::with_type(Type::Integer))
                    .description(Some("Seconds to wait before trying again"))
                    .build(),
            )
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build();
        for (path, item) in openapi.paths.paths.iter_mut() {
            if NEVER_UNAVAILABLE.contains(&path.as_str()) {
                continue;
            }
            let operations: [&mut Option<Operation>; 5] = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in operations.into_iter().flatten() {
                op.responses
                    .responses
                    .insert("503".into(), RefOr::T(response.clone()));
            }
        }
    }
}

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "health", responses((status = 200, body = Object)))]
#[get("/api/openapi.json")]
pub(crate) async fn document() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
