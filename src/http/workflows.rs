//! `/api/workflows`: import, read, replace and delete definitions, and
//! start and list their executions.

use actix_web::http::header;
use actix_web::{delete, get, post, put, web, HttpRequest, HttpResponse};
use baton_actors::store::ExecutionFilter;
use baton_actors::workflow::SUPPORTED_ITEM_TYPES;
use baton_actors::workflow::{parse_definition, Definition, ParseOptions, Problem, SourceFormat};
use serde::{Deserialize, Serialize};

use super::executions::ExecutionView;
use super::{parse_json, parse_query, read_body, require_running, AppState};
use crate::error::{ApiError, ErrorBody};

/// A definition in a listing.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct WorkflowSummary {
    /// Its id.
    id: String,
    /// Its name.
    name: String,
    /// Its current version.
    version: i64,
}

fn format_of(req: &HttpRequest) -> Result<SourceFormat, ApiError> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => {
            Ok(SourceFormat::Yaml)
        }
        // curl's `-d` sends form-urlencoded; read such bodies as the JSON they are.
        "application/json"
        | ""
        | "text/json"
        | "text/plain"
        | "application/x-www-form-urlencoded" => Ok(SourceFormat::Json),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "content type `{other}` is not supported: send application/json or application/yaml"
        ))),
    }
}

/// Parses and validates a definition, compiling every script; all
/// problems come back together, each with its path.
async fn validate(
    state: &AppState,
    body: &[u8],
    format: SourceFormat,
) -> Result<Definition, ApiError> {
    validate_definition(&state.actions, &state.scripts, body, format).await
}

/// [`validate`] with its parts: the registered actions and the script pool
/// (for an in-process import, `NodeHandle::import_definition`).
pub(crate) async fn validate_definition(
    actions: &baton_actors::ActionRegistry,
    scripts: &baton_actors::workflow::script::ScriptPool,
    body: &[u8],
    format: SourceFormat,
) -> Result<Definition, ApiError> {
    let actions = actions.clone();
    let known = move |name: &str| actions.contains(name);
    let opts = ParseOptions {
        known_action: &known,
        supported_types: SUPPORTED_ITEM_TYPES,
    };
    let parsed = parse_definition(body, format, &opts);
    let mut problems = parsed.problems;
    let compiled = scripts.compile(parsed.scripts).await;
    problems.extend(
        compiled
            .into_iter()
            .map(|(path, message)| Problem::new(path, message)),
    );
    // Names starting with `__` are Baton's own signals (cancel requests,
    // children's notices, answers): an item awaiting one would take them
    // (a cancel swallowed as a payload), and no client can send one.
    // Checked at import only: a definition stored before this check still
    // loads and runs as it did.
    for (id, item) in parsed.definition.iter().flat_map(|d| &d.items) {
        if let baton_actors::workflow::ItemKind::Signal { name, .. } = &item.kind {
            if name.starts_with("__") {
                problems.push(Problem::new(
                    format!("items.{id}.name"),
                    "signal names starting with `__` are reserved for Baton's own signals",
                ));
            }
        }
    }
    match parsed.definition {
        Some(def) if problems.is_empty() => Ok(def),
        _ => {
            let first = problems
                .first()
                .map(ToString::to_string)
                .unwrap_or_default();
            Err(ApiError::BadRequest {
                code: "invalid_definition",
                message: format!(
                    "the definition has {} problem(s); the first: {first}",
                    problems.len()
                ),
                details: problems,
            })
        }
    }
}

fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

fn definition_response(
    mut resp: actix_web::HttpResponseBuilder,
    body: &str,
    version: i64,
) -> HttpResponse {
    resp.insert_header((header::ETAG, etag(version)))
        .content_type("application/json")
        .body(body.to_owned())
}

/// Lists every definition.
#[utoipa::path(get, path = "/api/workflows", tag = "workflows",
    responses((status = 200, body = Vec<WorkflowSummary>)))]
#[get("/api/workflows")]
pub(crate) async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let rows = state.store.workflows().await?;
    let list: Vec<WorkflowSummary> = rows
        .into_iter()
        .map(|w| WorkflowSummary {
            id: w.id,
            name: w.name,
            version: w.version,
        })
        .collect();
    Ok(HttpResponse::Ok().json(list))
}

/// Imports a definition (JSON, or YAML with `Content-Type: application/yaml`).
#[utoipa::path(post, path = "/api/workflows", tag = "workflows",
    request_body(content = Object, description = "A workflow definition (API.md)", content_type = "application/json"),
    responses(
        (status = 201, description = "Imported", body = Object,
         headers(("Location" = String, description = "`/api/workflows/{id}`"),
                 ("ETag" = String, description = "The stored version, quoted: `\"1\"`"))),
        (status = 400, description = "Every problem, with its path", body = ErrorBody),
        (status = 409, description = "The id exists", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
#[post("/api/workflows")]
pub(crate) async fn import(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let format = format_of(&req)?;
    let body = read_body(payload, state.config.http.max_body_bytes).await?;
    let def = validate(&state, &body, format).await?;
    let text = def.to_json_string();
    let version = state
        .store
        .insert_workflow(&def.id, &def.name, text.clone())
        .await?;
    let mut resp = HttpResponse::Created();
    resp.insert_header((header::LOCATION, format!("/api/workflows/{}", def.id)));
    Ok(definition_response(resp, &text, version))
}

/// One definition, with an `ETag` of its version.
#[utoipa::path(get, path = "/api/workflows/{id}", tag = "workflows",
    params(("id" = String, Path, description = "Workflow id")),
    responses((status = 200, body = Object,
               headers(("ETag" = String, description = "The current version, quoted: `\"3\"`; send it as `If-Match` to replace it"))),
              (status = 404, body = ErrorBody)))]
#[get("/api/workflows/{id}")]
pub(crate) async fn get(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (summary, body) = state
        .store
        .workflow(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("workflow {id} not found")))?;
    Ok(definition_response(
        HttpResponse::Ok(),
        &body,
        summary.version,
    ))
}

fn if_match(req: &HttpRequest) -> Result<Option<i64>, ApiError> {
    let Some(v) = req.headers().get(header::IF_MATCH) else {
        return Err(ApiError::PreconditionRequired(
            "replacing a workflow requires If-Match with the ETag from GET /api/workflows/{id}"
                .into(),
        ));
    };
    let text = v.to_str().unwrap_or_default().trim();
    if text == "*" {
        return Ok(None);
    }
    let text = text.trim_start_matches("W/").trim_matches('"');
    text.parse::<i64>().map(Some).map_err(|_| {
        ApiError::bad_request(
            "invalid_header",
            "If-Match",
            format!("`{text}` is not an ETag of this API (a quoted version number)"),
        )
    })
}

/// Replaces a definition; running executions keep their version.
#[utoipa::path(put, path = "/api/workflows/{id}", tag = "workflows",
    params(("id" = String, Path, description = "Workflow id"),
           ("If-Match" = String, Header, description = "The ETag of the version being replaced")),
    request_body(content = Object, description = "A workflow definition"),
    responses((status = 200, body = Object, headers(("ETag" = String, description = "The new version, quoted"))),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 412, description = "`If-Match` names a version that is no longer current", body = ErrorBody),
              (status = 428, description = "No `If-Match`", body = ErrorBody)))]
#[put("/api/workflows/{id}")]
pub(crate) async fn replace(
    state: web::Data<AppState>,
    id: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let expected = if_match(&req)?;
    let format = format_of(&req)?;
    let body = read_body(payload, state.config.http.max_body_bytes).await?;
    let def = validate(&state, &body, format).await?;
    if def.id != *id {
        return Err(ApiError::bad_request(
            "invalid_definition",
            "id",
            format!("`{}` does not match the URL's `{id}`", def.id),
        ));
    }
    let expected = match expected {
        Some(v) => v,
        None => {
            state
                .store
                .workflow(&id)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("workflow {id} not found")))?
                .0
                .version
        }
    };
    let text = def.to_json_string();
    let version = state
        .store
        .replace_workflow(&id, expected, &def.name, text.clone())
        .await?;
    // This node's next start reads the new version (another node's finds
    // its remembered one stale when it commits, and reads it then).
    state.definitions.forget_current(&id);
    Ok(definition_response(HttpResponse::Ok(), &text, version))
}

/// Deletes a definition (409 while executions of it are unfinished).
#[utoipa::path(delete, path = "/api/workflows/{id}", tag = "workflows",
    params(("id" = String, Path, description = "Workflow id")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
#[delete("/api/workflows/{id}")]
pub(crate) async fn delete(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.store.delete_workflow(&id).await?;
    state.definitions.forget_current(&id);
    Ok(HttpResponse::NoContent().finish())
}

/// The body of a start request.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartRequest {
    /// The workflow's inputs.
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    inputs: serde_json::Value,
    /// A caller-chosen id; repeating it starts nothing new.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,64}$")]
    execution_id: Option<String>,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// Starts an execution of the workflow's current version.
#[utoipa::path(post, path = "/api/workflows/{id}/executions", tag = "executions",
    params(("id" = String, Path, description = "Workflow id")),
    request_body(content = Option<StartRequest>, description = "Optional: an empty body starts with no inputs"),
    responses((status = 202, description = "Started (or already started with this execution_id)", body = ExecutionView,
               headers(("Location" = String, description = "`/api/executions/{eid}`"),
                       ("Baton-Created" = String, description = "`true`, or `false` when this execution_id had started before"))),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
#[post("/api/workflows/{id}/executions")]
pub(crate) async fn start(
    state: web::Data<AppState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    require_running(&state)?;
    let body = read_body(payload, state.config.http.max_body_bytes).await?;
    // No body, or `null`, starts with no inputs (the body is optional).
    let request: StartRequest = if super::is_blank(&body)
        || serde_json::from_slice::<serde_json::Value>(&body).is_ok_and(|v| v.is_null())
    {
        StartRequest {
            inputs: empty_object(),
            execution_id: None,
        }
    } else {
        parse_json(&body)?
    };
    if let Some(eid) = &request.execution_id {
        if eid.is_empty()
            || eid.len() > 64
            || !eid
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return Err(ApiError::bad_request(
                "invalid_body",
                "execution_id",
                "must be 1 to 64 letters, digits, `_`, `.` or `-`",
            ));
        }
    }
    let (row, created) = state
        .starter
        .start(id.into_inner(), request.inputs, request.execution_id)
        .await?;
    // A new execution has no children yet: no query on the start path.
    // One found by its caller-chosen id may have some.
    let view = if created {
        ExecutionView::from_row(row, Default::default())?
    } else {
        super::executions::view_of(&state, row).await?
    };
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, format!("/api/executions/{}", view.id)))
        .insert_header(("Baton-Created", if created { "true" } else { "false" }))
        .json(view))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    limit: Option<u64>,
    after: Option<String>,
    cursor: Option<String>,
}

/// The workflow's executions, newest first. When more may follow, the
/// `Baton-Next-Cursor` header gives the `cursor` of the next page.
#[utoipa::path(get, path = "/api/workflows/{id}/executions", tag = "executions",
    params(("id" = String, Path, description = "Workflow id"),
           ("state" = Option<super::paging::StateName>, Query, description = "Only this state"),
           ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000, description = "At most this many (1 to 1000, default 100)"),
           ("cursor" = Option<String>, Query, pattern = "^[0-9a-f]{16}(?:[0-9a-f]{2})*$", description = "The Baton-Next-Cursor of the previous page"),
           ("after" = Option<String>, Query, description = "Continue after this execution id (older form of cursor)")),
    responses((status = 200, body = Vec<ExecutionView>,
               headers(("Baton-Next-Cursor" = String, description = "The cursor of the next page, when there may be one"))),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[get("/api/workflows/{id}/executions")]
pub(crate) async fn executions(
    state: web::Data<AppState>,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q: ListQuery = parse_query(&req)?;
    if let Some(s) = &q.state {
        super::paging::state("state", s)?;
    }
    let limit = super::paging::limit(q.limit, 100, 1000)?;
    if q.after.is_some() && q.cursor.is_some() {
        return Err(ApiError::bad_request(
            "invalid_query",
            "cursor",
            "give cursor or after, not both",
        ));
    }
    let below = q
        .cursor
        .as_deref()
        .map(super::paging::execution_key)
        .transpose()?;
    if state.store.workflow(&id).await?.is_none() {
        return Err(ApiError::NotFound(format!("workflow {id} not found")));
    }
    let rows = state
        .store
        .executions(ExecutionFilter {
            workflow_id: Some(id.into_inner()),
            state: q.state,
            limit,
            after: q.after,
            below,
            ..Default::default()
        })
        .await?;
    let next = super::executions::next_cursor(&rows, limit);
    let mut answer = HttpResponse::Ok();
    if let Some(c) = next {
        answer.insert_header((super::paging::NEXT_CURSOR, c));
    }
    Ok(answer.json(super::executions::views_of(&state, rows).await?))
}
