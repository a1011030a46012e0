//! `/api/openapi.json`: the OpenAPI 3 document, generated from the
//! handlers' annotations so that it cannot drift from the code.

use std::sync::OnceLock;

use actix_web::{get, HttpResponse};
use serde_json::{json, Value};
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

/// The methods the document lists for the path template that `path`
/// matches (a `{param}` matches one non-empty segment), as an `Allow`
/// value; `None` when no path matches. The route table is the document:
/// every handler is in it.
pub(crate) fn allowed_methods(path: &str) -> Option<String> {
    static TABLE: OnceLock<Vec<(Vec<String>, String)>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        ApiDoc::openapi()
            .paths
            .paths
            .iter()
            .map(|(template, item)| {
                let methods: Vec<&str> = [
                    ("GET", item.get.is_some()),
                    ("PUT", item.put.is_some()),
                    ("POST", item.post.is_some()),
                    ("DELETE", item.delete.is_some()),
                    ("PATCH", item.patch.is_some()),
                ]
                .into_iter()
                .filter_map(|(m, present)| present.then_some(m))
                .collect();
                let segments = template.split('/').map(str::to_owned).collect();
                (segments, methods.join(", "))
            })
            .collect()
    });
    let segments: Vec<&str> = path.split('/').collect();
    table
        .iter()
        .find(|(template, _)| {
            template.len() == segments.len()
                && template.iter().zip(&segments).all(|(t, s)| {
                    if t.starts_with('{') && t.ends_with('}') {
                        !s.is_empty()
                    } else {
                        t == s
                    }
                })
        })
        .map(|(_, allow)| allow.clone())
}

/// A JavaScript identifier: declared inputs, outputs and variables.
const IDENTIFIER: &str = "^[A-Za-z_$][A-Za-z0-9_$]*$";
/// A workflow or item id.
const ID: &str = "^[A-Za-z0-9_.-]{1,128}$";

/// The JSON Schema of a workflow definition (API.md), as precise as a
/// schema can be: what it cannot say (targets that exist, scripts that
/// compile, reserved names, one `end` item) the import answers with 400.
fn definition_schemas() -> Value {
    let strings = json!({"type": "object", "additionalProperties": {"type": "string"}});
    let count = json!({"type": "integer", "minimum": 0, "maximum": u64::MAX});
    let types = json!({
        "type": "object",
        "propertyNames": {"pattern": IDENTIFIER},
        "additionalProperties": {"enum": ["string", "number", "boolean", "object", "array", "any"]}
    });
    json!({
        "Definition": {
            "type": "object",
            "description": "A workflow definition (API.md, Workflow definitions)",
            "additionalProperties": false,
            "required": ["id", "start", "items"],
            "properties": {
                "id": {"type": "string", "pattern": ID},
                "name": {"type": "string"},
                "inputs": types,
                "outputs": types,
                "variables": {"type": "object", "propertyNames": {"pattern": IDENTIFIER}},
                "start": {"type": "string", "description": "The first item's id"},
                "on_error": {"type": "string", "description": "The item that catches what no item does"},
                "items": {
                    "type": "object",
                    "minProperties": 1,
                    "propertyNames": {"pattern": ID},
                    "additionalProperties": {"$ref": "#/components/schemas/DefinitionItem"}
                }
            }
        },
        "DefinitionItem": {
            "type": "object",
            "description": "One item; which fields apply depends on `type` (API.md, Item types)",
            "additionalProperties": false,
            "required": ["type"],
            "properties": {
                "type": {"enum": ["task", "decision", "action", "workflow", "foreach", "timer", "signal", "interaction", "end"]},
                "script": {"type": "string"},
                "next": {"type": "string"},
                "condition": {"type": "string"},
                "then": {"type": "string"},
                "else": {"type": "string"},
                "action": {"type": "string"},
                "inputs": strings,
                "outputs": strings,
                "workflow": {"type": "string"},
                "async": {"type": "boolean"},
                "over": {"type": "string"},
                "as": {"type": "string"},
                "collect": strings,
                "parallel": {"type": "boolean"},
                "for_ms": count,
                "until": {"type": "string"},
                "name": {"type": "string"},
                "store": {"type": "string"},
                "timeout_ms": count,
                "fail": {"type": "string"},
                "on_error": {"type": "string"},
                "retry": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["max_attempts"],
                    "properties": {
                        "max_attempts": {"type": "integer", "minimum": 1, "maximum": 1000},
                        "backoff_ms": count
                    }
                }
            }
        }
    })
}

/// The definition operations, whose bodies are a `Definition`: (path,
/// method, request body too).
const DEFINITION_BODIES: &[(&str, &str, bool)] = &[
    ("/api/workflows", "post", true),
    ("/api/workflows/{id}", "get", false),
    ("/api/workflows/{id}", "put", true),
];

/// The served document: the generated one with the definition schemas.
fn document_json() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
        let definition = json!({"$ref": "#/components/schemas/Definition"});
        if let (Some(schemas), Value::Object(extra)) = (
            doc.pointer_mut("/components/schemas")
                .and_then(Value::as_object_mut),
            definition_schemas(),
        ) {
            schemas.extend(extra);
        }
        for (path, method, request) in DEFINITION_BODIES {
            let Some(op) = doc
                .get_mut("paths")
                .and_then(|p| p.get_mut(*path))
                .and_then(|p| p.get_mut(*method))
            else {
                continue;
            };
            if *request {
                if let Some(content) = op
                    .pointer_mut("/requestBody/content")
                    .and_then(Value::as_object_mut)
                {
                    content.insert("application/json".into(), json!({"schema": definition}));
                    content.insert("application/yaml".into(), json!({"schema": definition}));
                }
            }
            if let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) {
                for (status, response) in responses.iter_mut() {
                    if status.starts_with('2') {
                        if let Some(c) = response.pointer_mut("/content/application~1json") {
                            *c = json!({"schema": definition});
                        }
                    }
                }
            }
        }
        doc
    })
}

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "health", responses((status = 200, body = Object)))]
#[get("/api/openapi.json")]
pub(crate) async fn document() -> HttpResponse {
    HttpResponse::Ok().json(document_json())
}
