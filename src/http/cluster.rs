//! `/api/cluster`: the cluster's settings, its nodes and its events.

use actix_web::{get, post, web, HttpRequest, HttpResponse};
use baton_actors::store::Takeover;
use baton_actors::supervisor::{EvictNode, Rejoin};
use serde::{Deserialize, Serialize};

use super::{iso, parse_query, AppState};
use crate::error::{ApiError, ErrorBody};

/// The cluster-wide settings.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ClusterSettings {
    active_nodes: u32,
    heartbeat_interval_ms: u64,
    failover_heartbeats: u32,
    failover_timeout_ms: u64,
}

/// One node as the cluster sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct NodeView {
    id: String,
    address: String,
    role: String,
    state: String,
    epoch: i64,
    /// When it last wrote its heartbeat; `null` in standalone mode, where
    /// nodes write none.
    last_heartbeat: Option<String>,
    /// Age of the last heartbeat by the database clock; `null` in
    /// standalone mode.
    heartbeat_age_ms: Option<i64>,
    /// Unfinished executions it owns.
    executions: i64,
}

/// The whole cluster.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ClusterView {
    /// `standalone` or `cluster`.
    mode: String,
    settings: ClusterSettings,
    nodes: Vec<NodeView>,
}

/// The cluster: settings and nodes.
#[utoipa::path(get, path = "/api/cluster", tag = "cluster", responses((status = 200, body = ClusterView)))]
#[get("/api/cluster")]
pub(crate) async fn status(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (nodes, now) = state.store.nodes().await?;
    let owned = state.store.unfinished_by_owner().await?;
    let c = &state.config.cluster;
    let view = ClusterView {
        mode: if c.enabled { "cluster" } else { "standalone" }.into(),
        settings: ClusterSettings {
            active_nodes: c.active_nodes,
            heartbeat_interval_ms: c.heartbeat_interval_ms,
            failover_heartbeats: c.failover_heartbeats,
            failover_timeout_ms: c.failover_timeout_ms(),
        },
        nodes: nodes
            .into_iter()
            .map(|n| NodeView {
                executions: owned.get(&n.id).copied().unwrap_or(0),
                heartbeat_age_ms: c.enabled.then(|| (now - n.last_heartbeat).max(0)),
                last_heartbeat: c.enabled.then(|| iso(n.last_heartbeat)),
                id: n.id,
                address: n.address,
                role: n.role,
                state: n.state,
                epoch: n.epoch,
            })
            .collect(),
    };
    Ok(HttpResponse::Ok().json(view))
}

/// One cluster event.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct EventView {
    id: i64,
    time: String,
    /// `join`, `leave`, `promote`, `fence`, `failover`, `adopt`,
    /// `config-refused`, `poison-pill` or `database-regained`.
    kind: String,
    node_id: String,
    message: String,
    /// Its webhook deliveries (`[[notify.webhooks]]`), one per webhook
    /// that wants this kind of event; empty when none does.
    deliveries: Vec<DeliveryView>,
}

/// One webhook delivery of a cluster event.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct DeliveryView {
    /// The webhook's name.
    webhook: String,
    /// `pending` (being sent or retried), `delivered` or `failed`.
    #[schema(pattern = "^(pending|delivered|failed)$")]
    state: String,
    /// Attempts made.
    attempts: i32,
    /// The receiver's last status, if it answered.
    last_status: Option<i32>,
    /// The last attempt's error, if it failed.
    last_error: Option<String>,
    /// The node that delivered it.
    delivered_by: Option<String>,
    /// When it was delivered (RFC 3339, database clock).
    delivered_at: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    limit: Option<u64>,
}

/// Cluster events, newest first.
#[utoipa::path(get, path = "/api/cluster/events", tag = "cluster",
    params(("limit" = Option<u64>, Query, minimum = 1, maximum = 1000, description = "At most this many (1 to 1000, default 100)")),
    responses((status = 200, body = Vec<EventView>), (status = 400, body = ErrorBody)))]
#[get("/api/cluster/events")]
pub(crate) async fn events(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q: EventsQuery = parse_query(&req)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit",
            "must be between 1 and 1000",
        ));
    }
    let rows = state.store.events(limit).await?;
    let mut deliveries: std::collections::HashMap<i64, Vec<DeliveryView>> =
        std::collections::HashMap::new();
    for d in state
        .store
        .deliveries_of(rows.iter().map(|e| e.id).collect())
        .await?
    {
        deliveries
            .entry(d.event_id)
            .or_default()
            .push(DeliveryView {
                webhook: d.webhook,
                state: d.state,
                attempts: d.attempts,
                last_status: d.last_status,
                last_error: d.last_error,
                delivered_by: d.delivered_by,
                delivered_at: d.delivered_at.map(iso),
            });
    }
    let views: Vec<EventView> = rows
        .into_iter()
        .map(|e| EventView {
            deliveries: deliveries.remove(&e.id).unwrap_or_default(),
            id: e.id,
            time: iso(e.time),
            kind: e.kind,
            node_id: e.node_id,
            message: e.message,
        })
        .collect();
    Ok(HttpResponse::Ok().json(views))
}

/// Evicts a node as if it had failed: it is declared dead (its epoch moves
/// on, so any write it still attempts is refused), its executions move to
/// live active nodes, and a standby is promoted if needed. The evicted
/// node fences itself at its next heartbeat.
#[utoipa::path(post, path = "/api/cluster/nodes/{id}/fence", tag = "cluster",
    params(("id" = String, Path, description = "Node id")),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
#[post("/api/cluster/nodes/{id}/fence")]
pub(crate) async fn fence(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    // The detector's takeover path, forced: one transaction, the active
    // count enforced inside it (DESIGN.md invariant 6).
    let outcome = state
        .supervisor
        .send(EvictNode { id: id.to_string() })
        .await
        .map_err(baton_actors::EngineError::from)??;
    match outcome {
        Takeover::Won { moved, promoted } => {
            let moved: Vec<serde_json::Value> = moved
                .into_iter()
                .map(|(n, k)| serde_json::json!({"node": n, "executions": k}))
                .collect();
            Ok(HttpResponse::Ok().json(serde_json::json!({ "node": *id, "evicted": true, "moved": moved, "promoted": promoted })))
        }
        Takeover::Lost => Err(ApiError::Conflict(format!(
            "node {id} changed while being evicted; look again"
        ))),
        Takeover::Busy => Err(ApiError::Conflict(format!(
            "the cluster lock was busy while evicting node {id}; try again"
        ))),
    }
}

/// Makes a fenced node rejoin the cluster as a standby now (it also does
/// by itself once the database is reachable). Send it to the node itself.
#[utoipa::path(post, path = "/api/cluster/nodes/{id}/restart", tag = "cluster",
    params(("id" = String, Path, description = "Node id")),
    responses((status = 202, body = Object), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
#[post("/api/cluster/nodes/{id}/restart")]
pub(crate) async fn restart(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if *id != state.node_id {
        let row = state
            .store
            .node(&id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("node {id} not found")))?;
        return Err(ApiError::Conflict(format!(
            "this is node {}; send the restart to node {id} itself at {}",
            state.node_id, row.address
        )));
    }
    state
        .supervisor
        .send(Rejoin)
        .await
        .map_err(baton_actors::EngineError::from)??;
    Ok(HttpResponse::Accepted().json(serde_json::json!({ "node": *id, "rejoining": true })))
}
