//! `/api/openapi.json`: the OpenAPI 3 document, generated from the
//! handlers' annotations so that it cannot drift from the code.

use std::sync::OnceLock;

use actix_web::{get, HttpResponse};
use serde_json::{json, Value};
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Object, Ref, RefOr, Type};
use utoipa::{Modify, OpenApi};

use super::ApiDoc;

// `ApiDoc`, the OpenAPI document of the HTTP API, is declared with the
// route table in `super::api!`: one list of handlers makes both.

/// Paths that answer without the database and are served by a standby too.
const NEVER_UNAVAILABLE: &[&str] = &["/health/liveness", "/metrics", "/api/healthstatus"];

/// Every other path may answer 503 with `Retry-After`: the database is
/// unavailable (`database_unavailable`), or this node is not a running
/// active node (`standby`, `not_running`), or a start found the node at
/// `engine.max_running` (`overloaded`). Added here once rather than on
/// each handler.
pub(crate) struct Unavailable;

impl Modify for Unavailable {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let response = ResponseBuilder::new()
            .description(
                "Unavailable: the database cannot be reached (`database_unavailable`), or this \
                 node is not a running active node (`standby`, `not_running`), or (a start) it \
                 runs `engine.max_running` new executions and none ended in time \
                 (`overloaded`); try again after `Retry-After` seconds",
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

/// Bearer tokens (`[auth] tokens`): the `bearer` scheme, optional on
/// every operation (a node without tokens takes none), and the 401 (no or
/// unknown token) and 403 (a viewer token on a write) that every path but
/// the open ones can answer. Added here once rather than on each handler.
pub(crate) struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        let error = |description: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build(),
            )
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            if super::auth::OPEN.contains(&path.as_str()) {
                continue;
            }
            let operations: [(&mut Option<Operation>, bool); 5] = [
                (&mut item.get, false),
                (&mut item.put, true),
                (&mut item.post, true),
                (&mut item.delete, true),
                (&mut item.patch, true),
            ];
            for (op, writes) in operations {
                let Some(op) = op else { continue };
                op.security = Some(vec![
                    SecurityRequirement::new("bearer", Vec::<String>::new()),
                    SecurityRequirement::default(),
                ]);
                op.responses.responses.insert(
                    "401".into(),
                    error("`unauthorized`: no `Authorization: Bearer` token, or an unknown one (only when [auth] tokens are configured)"),
                );
                if writes {
                    op.responses.responses.insert(
                        "403".into(),
                        error("`forbidden`: a viewer token may only read"),
                    );
                }
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
        "DefinitionItem": item_union(&strings, &count, &types),
    })
}

/// An item type's schema: (type, what it does, required fields, its
/// fields).
type ItemKindSchema<'a> = (&'a str, &'a str, Vec<&'a str>, Vec<(&'a str, &'a Value)>);

/// One item schema per item type, told apart by `type` (a tagged union):
/// each lists its own fields, which of them are required, and no others.
fn item_union(strings: &Value, count: &Value, types: &Value) -> Value {
    let text = json!({"type": "string"});
    let flag = json!({"type": "boolean"});
    let retry = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["max_attempts"],
        "properties": {
            "max_attempts": {"type": "integer", "minimum": 1, "maximum": 1000},
            "backoff_ms": count
        }
    });
    let kinds: Vec<ItemKindSchema<'_>> = vec![
        (
            "task",
            "Runs JavaScript",
            vec!["script", "next"],
            vec![("script", &text), ("next", &text)],
        ),
        (
            "decision",
            "Goes to `then` or `else` by a JavaScript expression",
            vec!["condition", "then", "else"],
            vec![("condition", &text), ("then", &text), ("else", &text)],
        ),
        (
            "action",
            "Calls an action by name",
            vec!["action", "next"],
            vec![
                ("action", &text),
                ("inputs", strings),
                ("outputs", strings),
                ("next", &text),
            ],
        ),
        (
            "workflow",
            "Runs another workflow; waits for it unless `async`",
            vec!["workflow", "next"],
            vec![
                ("workflow", &text),
                ("inputs", strings),
                ("outputs", strings),
                ("async", &flag),
                ("next", &text),
            ],
        ),
        (
            "foreach",
            "Runs a workflow for each element of an array variable",
            vec!["over", "as", "workflow", "next"],
            vec![
                ("over", &text),
                ("as", &text),
                ("workflow", &text),
                ("inputs", strings),
                ("collect", strings),
                ("parallel", &flag),
                ("next", &text),
            ],
        ),
        (
            "timer",
            "Waits `for_ms` or `until` a time (exactly one of them)",
            vec!["next"],
            vec![("for_ms", count), ("until", &text), ("next", &text)],
        ),
        (
            "signal",
            "Waits for a named signal",
            vec!["name", "next"],
            vec![
                ("name", &text),
                ("store", &text),
                ("timeout_ms", count),
                ("next", &text),
            ],
        ),
        (
            "interaction",
            "Waits for a user's answer with these inputs",
            vec!["next"],
            vec![("inputs", types), ("timeout_ms", count), ("next", &text)],
        ),
        (
            "end",
            "Ends the execution, completed or failed",
            vec![],
            vec![("fail", &text)],
        ),
    ];
    let mut variants = Vec::new();
    for (kind, what, required, fields) in kinds {
        let mut properties = serde_json::Map::new();
        properties.insert("type".into(), json!({"const": kind}));
        for (name, schema) in fields {
            properties.insert(name.into(), schema.clone());
        }
        if kind != "end" {
            properties.insert(
                "on_error".into(),
                json!({"type": "string", "description": "The item to go to when this one fails"}),
            );
            properties.insert("retry".into(), retry.clone());
        }
        let mut all_required = vec!["type"];
        all_required.extend(required);
        let name = format!("{}Item", capitalize(kind));
        variants.push(json!({
            "title": name,
            "description": what,
            "type": "object",
            "additionalProperties": false,
            "required": all_required,
            "properties": properties
        }));
    }
    json!({
        "description": "One item, by its `type` (API.md, Item types)",
        "oneOf": variants
    })
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_parameters_carry_the_pattern_the_server_reads() {
        let doc = document_json();
        for (path, pattern) in [
            ("/api/executions", super::super::paging::EXECUTION_CURSOR),
            (
                "/api/workflows/{id}/executions",
                super::super::paging::EXECUTION_CURSOR,
            ),
            (
                "/api/executions/{eid}/logs",
                super::super::paging::LOG_CURSOR,
            ),
        ] {
            let cursor = doc["paths"][path]["get"]["parameters"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["name"] == "cursor"))
                .cloned()
                .unwrap_or_default();
            assert_eq!(cursor["schema"]["pattern"], pattern, "{path}: {cursor}");
        }
    }
}
