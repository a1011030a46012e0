//! `/api/executions/{eid}`: one execution, its state, its item log, cancel.

use actix_web::{get, post, web, HttpResponse};
use baton_actors::store::entities::{execution, item_log};
use baton_actors::supervisor::{CancelExecution, ResumeFailed};
use serde::Serialize;
use serde_json::Value;

use super::{iso, AppState};
use crate::error::{ApiError, ErrorBody};

/// An execution as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ExecutionView {
    /// Its id.
    pub(crate) id: String,
    /// The workflow it runs.
    workflow_id: String,
    /// The workflow version it runs.
    workflow_version: i64,
    /// `running`, `waiting`, `waiting-signal`, `completed`, `failed` or `canceled`.
    state: String,
    /// Its inputs.
    #[schema(value_type = Object)]
    inputs: Value,
    /// Its outputs (final once completed).
    #[schema(value_type = Object)]
    outputs: Value,
    /// Its variables.
    #[schema(value_type = Object)]
    variables: Value,
    /// The item running or next to run.
    current_item: Option<String>,
    /// The attempt number of the current item.
    attempt: i32,
    /// The node that owns it.
    owner_node: Option<String>,
    /// When it was created (RFC 3339, database clock).
    created_at: String,
    /// When it started.
    started_at: Option<String>,
    /// When it ended.
    ended_at: Option<String>,
    /// Why it failed.
    error: Option<String>,
}

fn json_column(what: &str, text: Option<&str>) -> Result<Value, ApiError> {
    match text {
        None => Ok(Value::Object(Default::default())),
        Some(t) => serde_json::from_str(t)
            .map_err(|e| ApiError::Internal(format!("stored {what} is not JSON: {e}"))),
    }
}

impl ExecutionView {
    pub(crate) fn from_row(row: execution::Model) -> Result<ExecutionView, ApiError> {
        Ok(ExecutionView {
            inputs: json_column("inputs", Some(&row.inputs))?,
            outputs: json_column("outputs", row.outputs.as_deref())?,
            variables: json_column("variables", Some(&row.variables))?,
            id: row.id,
            workflow_id: row.workflow_id,
            workflow_version: row.workflow_version,
            state: row.state,
            current_item: row.current_item,
            attempt: row.attempt,
            owner_node: row.owner_node,
            created_at: iso(row.created_at),
            started_at: row.started_at.map(iso),
            ended_at: row.ended_at.map(iso),
            error: row.error,
        })
    }
}

/// One record of the item log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct LogView {
    /// When (RFC 3339, database clock).
    time: String,
    /// The item.
    item: String,
    /// The execution's step number for this item run.
    step: i64,
    /// `started`, `completed`, `failed`, `resumed` or `log`.
    event: String,
    /// The attempt number.
    attempt: i32,
    /// The node that wrote it.
    node: String,
    /// Free text.
    message: Option<String>,
}

impl From<item_log::Model> for LogView {
    fn from(r: item_log::Model) -> LogView {
        LogView {
            time: iso(r.time),
            item: r.item,
            step: r.step,
            event: r.event,
            attempt: r.attempt,
            node: r.node,
            message: r.message,
        }
    }
}

async fn load(state: &AppState, id: &str) -> Result<execution::Model, ApiError> {
    state
        .store
        .execution(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("execution {id} not found")))
}

/// One execution.
#[utoipa::path(get, path = "/api/executions/{eid}", tag = "executions",
    params(("eid" = String, Path, description = "Execution id")),
    responses((status = 200, body = ExecutionView), (status = 404, body = ErrorBody)))]
#[get("/api/executions/{eid}")]
pub(crate) async fn get(
    state: web::Data<AppState>,
    eid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(ExecutionView::from_row(load(&state, &eid).await?)?))
}

/// Just the state of an execution.
#[utoipa::path(get, path = "/api/executions/{eid}/state", tag = "executions",
    params(("eid" = String, Path, description = "Execution id")),
    responses((status = 200, body = Object, example = json!({"state": "running"})), (status = 404, body = ErrorBody)))]
#[get("/api/executions/{eid}/state")]
pub(crate) async fn get_state(
    state: web::Data<AppState>,
    eid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let row = load(&state, &eid).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "state": row.state })))
}

/// The item log, oldest first.
#[utoipa::path(get, path = "/api/executions/{eid}/logs", tag = "executions",
    params(("eid" = String, Path, description = "Execution id")),
    responses((status = 200, body = Vec<LogView>), (status = 404, body = ErrorBody)))]
#[get("/api/executions/{eid}/logs")]
pub(crate) async fn logs(
    state: web::Data<AppState>,
    eid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    load(&state, &eid).await?;
    let rows = state.store.item_log(&eid).await?;
    Ok(HttpResponse::Ok().json(rows.into_iter().map(LogView::from).collect::<Vec<_>>()))
}

/// Cancels an execution (idempotent); answers the execution afterwards.
#[utoipa::path(post, path = "/api/executions/{eid}/cancel", tag = "executions",
    params(("eid" = String, Path, description = "Execution id")),
    responses((status = 200, body = ExecutionView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
#[post("/api/executions/{eid}/cancel")]
pub(crate) async fn cancel(
    state: web::Data<AppState>,
    eid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let row = state
        .supervisor
        .send(CancelExecution {
            id: eid.into_inner(),
        })
        .await
        .map_err(baton_actors::EngineError::from)??;
    Ok(HttpResponse::Ok().json(ExecutionView::from_row(row)?))
}

/// The body of a resume request.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResumeRequest {
    /// Variables to set before the failed item runs again.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    variables: Option<serde_json::Map<String, Value>>,
}

/// Runs a failed execution again from its failed item (409 unless failed).
#[utoipa::path(post, path = "/api/executions/{eid}/resume", tag = "executions",
    params(("eid" = String, Path, description = "Execution id")),
    request_body = ResumeRequest,
    responses((status = 202, body = ExecutionView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
#[post("/api/executions/{eid}/resume")]
pub(crate) async fn resume(
    state: web::Data<AppState>,
    eid: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = super::read_body(payload, state.config.http.max_body_bytes).await?;
    let request: ResumeRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ResumeRequest::default()
    } else {
        super::parse_json(&body)?
    };
    let row = state
        .supervisor
        .send(ResumeFailed {
            id: eid.into_inner(),
            variables: request.variables,
        })
        .await
        .map_err(baton_actors::EngineError::from)??;
    Ok(HttpResponse::Accepted().json(ExecutionView::from_row(row)?))
}
