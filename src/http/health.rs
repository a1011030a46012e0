//! Health endpoints for load balancers and process supervisors.

use actix_web::{get, web, HttpResponse};
use serde::Serialize;

use super::AppState;
use baton_actors::messages::{NodeRole, NodeState};

/// What `/api/healthstatus` answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct HealthStatus {
    /// This node's id.
    node_id: String,
    /// `RUNNING`, `STANDBY`, `FENCED`, `STARTING` or `STOPPING`.
    state: String,
    /// `active` or `standby`.
    role: String,
}

/// 200 only when this node is an active node that runs workflows; 503 otherwise.
#[utoipa::path(get, path = "/api/healthstatus", tag = "health",
    responses((status = 200, body = HealthStatus), (status = 503, body = HealthStatus)))]
#[get("/api/healthstatus")]
pub(crate) async fn healthstatus(state: web::Data<AppState>) -> HttpResponse {
    let s = state.status.get();
    let body = HealthStatus {
        node_id: state.node_id.clone(),
        state: s.state.as_str().to_owned(),
        role: s.role.as_str().to_owned(),
    };
    if s.state == NodeState::Running && s.role == NodeRole::Active {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(body)
    }
}

/// 200 while the process serves HTTP.
#[utoipa::path(get, path = "/health/liveness", tag = "health", responses((status = 200)))]
#[get("/health/liveness")]
pub(crate) async fn liveness() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "UP" }))
}
