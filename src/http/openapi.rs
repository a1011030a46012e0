//! `/api/openapi.json`: the OpenAPI 3 document, generated from the
//! handlers' annotations so that it cannot drift from the code.

use actix_web::{get, HttpResponse};
use utoipa::OpenApi;

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
    tags(
        (name = "health", description = "For load balancers and supervisors"),
        (name = "workflows", description = "Workflow definitions"),
        (name = "executions", description = "Workflow runs"),
        (name = "cluster", description = "Nodes and cluster events"),
    )
)]
pub(crate) struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "health", responses((status = 200, body = Object)))]
#[get("/api/openapi.json")]
pub(crate) async fn document() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
