//! `/api/executions`: the search across workflows; one execution, its
//! state, its item log, cancel, resume, signals, answers and deletion.

use actix_web::{delete, get, post, web, HttpRequest, HttpResponse};
use baton_actors::store::entities::{execution, item_log};
use baton_actors::store::{
    ChildCounts, Deletion, ExecutionFilter, ExecutionState, ANSWER, INTERACTION,
};
use baton_actors::supervisor::{AnswerInteraction, CancelExecution, DeliverSignal, ResumeFailed};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{iso, paging, parse_query, AppState};
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
    /// The execution that started it (a `workflow` or `foreach` item), if any.
    parent_id: Option<String>,
    /// How many child executions it started, and how many of them are not finished.
    #[schema(value_type = Object, example = json!({"total": 3, "unfinished": 1}))]
    children: ChildCounts,
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
    /// What a parked execution waits for: `{"kind": "timer" | "signal" |
    /// "interaction", "name"?, "until"?}`.
    #[schema(value_type = Option<Object>)]
    waiting_for: Option<Value>,
}

fn json_column(what: &str, text: Option<&str>) -> Result<Value, ApiError> {
    match text {
        None => Ok(Value::Object(Default::default())),
        Some(t) => serde_json::from_str(t)
            .map_err(|e| ApiError::Internal(format!("stored {what} is not JSON: {e}"))),
    }
}

fn waiting_for(state: &str, awaited: Option<&str>, until: Option<i64>) -> Option<Value> {
    let until = until.map(iso);
    match (ExecutionState::parse(state)?, awaited) {
        (ExecutionState::Waiting, _) => {
            Some(serde_json::json!({ "kind": "timer", "until": until }))
        }
        (ExecutionState::WaitingSignal, Some(INTERACTION)) => {
            Some(serde_json::json!({ "kind": "interaction", "until": until }))
        }
        // Answered; resumes at the owner's next wake.
        (ExecutionState::WaitingSignal, Some(ANSWER)) => {
            Some(serde_json::json!({ "kind": "interaction", "answered": true, "until": until }))
        }
        (ExecutionState::WaitingSignal, Some(name)) => {
            Some(serde_json::json!({ "kind": "signal", "name": name, "until": until }))
        }
        _ => None,
    }
}

fn is_finished(state: &str) -> bool {
    ExecutionState::parse(state).is_some_and(ExecutionState::is_finished)
}

impl ExecutionView {
    /// The view of `row`, given its children counts.
    pub(crate) fn from_row(
        row: execution::Model,
        children: ChildCounts,
    ) -> Result<ExecutionView, ApiError> {
        Ok(ExecutionView {
            children,
            parent_id: row.parent_id.clone(),
            waiting_for: waiting_for(&row.state, row.wait_signal.as_deref(), row.wait_until),
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

/// The view of one row, with its children counted.
pub(crate) async fn view_of(
    state: &AppState,
    row: execution::Model,
) -> Result<ExecutionView, ApiError> {
    let counts = state.store.child_counts(vec![row.id.clone()]).await?;
    let children = counts.get(&row.id).copied().unwrap_or_default();
    ExecutionView::from_row(row, children)
}

/// The views of a page of rows, their children counted in one query.
pub(crate) async fn views_of(
    state: &AppState,
    rows: Vec<execution::Model>,
) -> Result<Vec<ExecutionView>, ApiError> {
    let counts = state
        .store
        .child_counts(rows.iter().map(|r| r.id.clone()).collect())
        .await?;
    rows.into_iter()
        .map(|r| {
            let children = counts.get(&r.id).copied().unwrap_or_default();
            ExecutionView::from_row(r, children)
        })
        .collect()
}

/// The cursor of the page after `rows`, when it was full.
pub(crate) fn next_cursor(rows: &[execution::Model], limit: u64) -> Option<String> {
    if (rows.len() as u64) < limit {
        return None;
    }
    rows.last()
        .map(|r| paging::execution_cursor(r.created_at, &r.id))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchQuery {
    workflow: Option<String>,
    state: Option<String>,
    parent: Option<String>,
    node: Option<String>,
    created_after: Option<String>,
    created_before: Option<String>,
    limit: Option<u64>,
    cursor: Option<String>,
}

/// A page of a search.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SearchPage {
    /// The executions, newest first.
    executions: Vec<ExecutionView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// Searches executions across workflows, newest first. Every filter given
/// must hold; each is served by an index, so a page costs the same however
/// many executions are stored.
#[utoipa::path(get, path = "/api/executions", tag = "executions",
    params(("workflow" = Option<String>, Query, description = "Only executions of this workflow"),
           ("state" = Option<paging::StateName>, Query, description = "Only this state"),
           ("parent" = Option<String>, Query, description = "Only children of this execution"),
           ("node" = Option<String>, Query, description = "Only executions owned by this node"),
           ("created_after" = Option<String>, Query, format = DateTime, description = "Only those created at or after this RFC 3339 time"),
           ("created_before" = Option<String>, Query, format = DateTime, description = "Only those created before this RFC 3339 time"),
           ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000, description = "At most this many (1 to 1000, default 100)"),
           ("cursor" = Option<String>, Query, pattern = "^[0-9a-f]{16}(?:[0-9a-f]{2})*$", description = "The next_cursor of the previous page")),
    responses((status = 200, body = SearchPage), (status = 400, body = ErrorBody)))]
#[get("/api/executions")]
pub(crate) async fn search(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q: SearchQuery = parse_query(&req)?;
    if let Some(s) = &q.state {
        paging::state("state", s)?;
    }
    let limit = paging::limit(q.limit, 100, 1000)?;
    let filter = ExecutionFilter {
        workflow_id: q.workflow,
        state: q.state,
        parent_id: q.parent,
        owner_node: q.node,
        created_after: q
            .created_after
            .as_deref()
            .map(|t| paging::time("created_after", t))
            .transpose()?,
        created_before: q
            .created_before
            .as_deref()
            .map(|t| paging::time("created_before", t))
            .transpose()?,
        limit,
        after: None,
        below: q.cursor.as_deref().map(paging::execution_key).transpose()?,
    };
    let rows = state.store.executions(filter).await?;
    let next_cursor = next_cursor(&rows, limit);
    Ok(HttpResponse::Ok().json(SearchPage {
        executions: views_of(&state, rows).await?,
        next_cursor,
    }))
}

/// Deletes a finished execution with its item log and signals (its
/// children, if any, stay). 409 while it is unfinished, while its parent
/// is unfinished (the parent may still read it), or while any of its
/// children is unfinished.
#[utoipa::path(delete, path = "/api/executions/{eid}", tag = "executions",
    params(("eid" = String, Path, description = "Execution id")),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
#[delete("/api/executions/{eid}")]
pub(crate) async fn remove(
    state: web::Data<AppState>,
    eid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    match state.store.delete_execution(&eid).await? {
        Deletion::Deleted => Ok(HttpResponse::NoContent().finish()),
        Deletion::NotFound => Err(ApiError::NotFound(format!("execution {eid} not found"))),
        Deletion::Unfinished(s) => Err(ApiError::Conflict(format!(
            "execution {eid} is {s}; only a finished execution can be deleted (cancel it first)"
        ))),
        Deletion::ParentUnfinished(p) => Err(ApiError::Conflict(format!(
            "execution {eid} is a child of execution {p}, which is not finished and may still read it"
        ))),
        Deletion::ChildrenUnfinished(n) => Err(ApiError::Conflict(format!(
            "execution {eid} has {n} unfinished child execution(s); they must finish first"
        ))),
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
    let row = load(&state, &eid).await?;
    Ok(HttpResponse::Ok().json(view_of(&state, row).await?))
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    limit: Option<u64>,
    cursor: Option<String>,
}

/// The item log, oldest first, in pages: when more records follow, the
/// `Baton-Next-Cursor` header gives the `cursor` of the next page.
#[utoipa::path(get, path = "/api/executions/{eid}/logs", tag = "executions",
    params(("eid" = String, Path, description = "Execution id"),
           ("limit" = Option<u64>, Query, minimum = 1, maximum = 10000, description = "At most this many records (1 to 10000, default 1000)"),
           ("cursor" = Option<String>, Query, pattern = "^[0-9a-f]{16}$", description = "The Baton-Next-Cursor of the previous page")),
    responses((status = 200, body = Vec<LogView>,
               headers(("Baton-Next-Cursor" = String, description = "The cursor of the next page, when there may be one"))),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[get("/api/executions/{eid}/logs")]
pub(crate) async fn logs(
    state: web::Data<AppState>,
    eid: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q: LogQuery = parse_query(&req)?;
    let limit = paging::limit(q.limit, 1000, 10_000)?;
    let after = q.cursor.as_deref().map(paging::log_key).transpose()?;
    load(&state, &eid).await?;
    let rows = state.store.item_log_page(&eid, after, limit).await?;
    let mut answer = HttpResponse::Ok();
    if rows.len() as u64 == limit {
        if let Some(last) = rows.last() {
            answer.insert_header((paging::NEXT_CURSOR, paging::log_cursor(last.id)));
        }
    }
    Ok(answer.json(rows.into_iter().map(LogView::from).collect::<Vec<_>>()))
}

/// Cancels an execution (idempotent); answers the execution afterwards:
/// 200 when it is canceled (or had finished), 202 when the cancel was
/// handed to the node that runs it and is not done yet.
#[utoipa::path(post, path = "/api/executions/{eid}/cancel", tag = "executions",
    params(("eid" = String, Path, description = "Execution id")),
    responses((status = 200, body = ExecutionView), (status = 202, body = ExecutionView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
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
    let pending = !is_finished(&row.state);
    let view = view_of(&state, row).await?;
    Ok(if pending {
        HttpResponse::Accepted().json(view)
    } else {
        HttpResponse::Ok().json(view)
    })
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
    request_body(content = Option<ResumeRequest>, description = "optional: no body resumes with the variables as they are"),
    responses((status = 202, body = ExecutionView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
#[post("/api/executions/{eid}/resume")]
pub(crate) async fn resume(
    state: web::Data<AppState>,
    eid: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = super::read_body(payload, state.config.http.max_body_bytes).await?;
    let request: ResumeRequest = super::json_or_default(&body)?;
    let row = state
        .supervisor
        .send(ResumeFailed {
            id: eid.into_inner(),
            variables: request.variables,
        })
        .await
        .map_err(baton_actors::EngineError::from)??;
    Ok(HttpResponse::Accepted().json(view_of(&state, row).await?))
}

/// The body of a signal.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignalRequest {
    /// Any JSON value, stored in the waiting item's `store` variable.
    #[serde(default)]
    #[schema(value_type = serde_json::Value)]
    payload: Value,
}

/// Delivers a named signal. Kept until the execution waits for it (so one
/// sent early, or while the owner is down, is not lost); wakes it at once
/// when this node owns it and it waits.
#[utoipa::path(post, path = "/api/executions/{eid}/signals/{name}", tag = "executions",
    params(("eid" = String, Path, description = "Execution id"), ("name" = String, Path, description = "Signal name")),
    request_body(content = Option<SignalRequest>, description = "optional: no body delivers a null payload"),
    responses((status = 202, body = Object), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
#[post("/api/executions/{eid}/signals/{name}")]
pub(crate) async fn deliver_signal(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (eid, name) = path.into_inner();
    if name.is_empty() || name.len() > 128 || name.starts_with("__") {
        return Err(ApiError::bad_request(
            "invalid_signal",
            "name",
            "must be 1 to 128 characters and not start with `__`",
        ));
    }
    let body = super::read_body(payload, state.config.http.max_body_bytes).await?;
    let request: SignalRequest = super::json_or_default(&body)?;
    let waiting = state
        .supervisor
        .send(DeliverSignal {
            id: eid.clone(),
            name: name.clone(),
            payload: request.payload,
        })
        .await
        .map_err(baton_actors::EngineError::from)??;
    Ok(HttpResponse::Accepted()
        .json(serde_json::json!({ "execution": eid, "signal": name, "waiting": waiting })))
}

/// The body of an interaction answer.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct InteractionRequest {
    /// The answer: every input the interaction item declares.
    #[schema(value_type = Object)]
    inputs: serde_json::Map<String, Value>,
}

/// Answers a waiting user interaction (400 when the answer lacks a declared
/// input or has the wrong type; 409 when the execution is not waiting for
/// an answer).
#[utoipa::path(post, path = "/api/executions/{eid}/interaction", tag = "executions",
    params(("eid" = String, Path, description = "Execution id")),
    request_body = InteractionRequest,
    responses((status = 202, body = Object), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
#[post("/api/executions/{eid}/interaction")]
pub(crate) async fn interaction(
    state: web::Data<AppState>,
    eid: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = super::read_body(payload, state.config.http.max_body_bytes).await?;
    let request: InteractionRequest = super::parse_json(&body)?;
    let row = load(&state, &eid).await?;
    if row.state != ExecutionState::WaitingSignal.as_str()
        || row.wait_signal.as_deref() != Some(INTERACTION)
    {
        return Err(ApiError::Conflict(format!(
            "execution {eid} is {} and not waiting for an interaction",
            row.state
        )));
    }
    let def = state
        .definitions
        .get(&state.store, &row.workflow_id, row.workflow_version)
        .await?;
    let item = row.current_item.as_deref().and_then(|i| def.items.get(i));
    let Some(baton_actors::workflow::ItemKind::Interaction {
        inputs: declared, ..
    }) = item.map(|i| &i.kind)
    else {
        return Err(ApiError::Conflict(format!(
            "execution {eid} is not at an interaction item"
        )));
    };
    let mut details = Vec::new();
    for (k, ty) in declared {
        match request.inputs.get(k) {
            None => details.push(baton_actors::workflow::Problem::new(
                format!("inputs.{k}"),
                format!("missing (declared as {})", ty.name()),
            )),
            Some(v) if !ty.accepts(v) => details.push(baton_actors::workflow::Problem::new(
                format!("inputs.{k}"),
                format!("expected {}", ty.name()),
            )),
            Some(_) => {}
        }
    }
    for k in request.inputs.keys() {
        if !declared.contains_key(k) {
            details.push(baton_actors::workflow::Problem::new(
                format!("inputs.{k}"),
                "not an input of this interaction",
            ));
        }
    }
    if !details.is_empty() {
        return Err(ApiError::BadRequest {
            code: "invalid_answer",
            message: details
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
            details,
        });
    }
    // Taken once, for the item it was meant for: refused if another
    // answer won, the execution moved on, or the timeout passed.
    let taken = state
        .supervisor
        .send(AnswerInteraction {
            id: eid.to_string(),
            step: row.step,
            answer: Value::Object(request.inputs),
        })
        .await
        .map_err(baton_actors::EngineError::from)??;
    if !taken {
        return Err(ApiError::Conflict(format!(
            "execution {eid} is no longer waiting for this interaction (answered already, moved on, or timed out)"
        )));
    }
    Ok(HttpResponse::Accepted().json(serde_json::json!({ "execution": *eid, "answered": true })))
}
