//! The standby gate (cluster mode): a node that is not a running active
//! node answers only `/` (the dashboard), `/api/healthstatus`, `/health/*`, `/api/cluster*` and
//! `/metrics`; every other path gets 503 with code `standby`, a
//! `Retry-After` header and the addresses of the active nodes.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use baton_actors::messages::{NodeRole, NodeState};
use baton_actors::store::node_state;
use serde_json::json;

use super::AppState;

fn always_served(path: &str) -> bool {
    path == "/api/healthstatus"
        || path == "/"
        || path == "/metrics"
        || path == "/api/auth/whoami"
        || path.starts_with("/health/")
        || path == "/api/cluster"
        || path.starts_with("/api/cluster/")
}

/// The gate middleware.
pub(crate) async fn gate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let status = state.status.get();
    if !state.config.cluster.enabled
        || status.state == NodeState::Running
        || always_served(req.path())
    {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    let active: Vec<String> = match state.store.nodes().await {
        Ok((nodes, _)) => nodes
            .into_iter()
            .filter(|n| n.role == NodeRole::Active.as_str() && n.state == node_state::RUNNING)
            .map(|n| n.address)
            .collect(),
        Err(_) => Vec::new(),
    };
    let message = format!(
        "node {} is {} and does not serve this path; use an active node: [{}]",
        state.node_id,
        status.state.as_str(),
        active.join(", ")
    );
    let resp = HttpResponse::ServiceUnavailable()
        .insert_header(("Retry-After", "1"))
        .json(json!({ "error": { "code": "standby", "message": message, "details": [], "active_nodes": active } }));
    Ok(req.into_response(resp).map_into_right_body())
}
