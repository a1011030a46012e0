//! `/api/cluster`: the cluster's settings, its nodes and its events.

use actix_web::{get, web, HttpRequest, HttpResponse};
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
    last_heartbeat: String,
    /// Age of the last heartbeat by the database clock.
    heartbeat_age_ms: i64,
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
                heartbeat_age_ms: (now - n.last_heartbeat).max(0),
                last_heartbeat: iso(n.last_heartbeat),
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
    /// `join`, `leave`, `fence`, `failover`, ...
    kind: String,
    node_id: String,
    message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    limit: Option<u64>,
}

/// Cluster events, newest first.
#[utoipa::path(get, path = "/api/cluster/events", tag = "cluster",
    params(("limit" = Option<u64>, Query, description = "At most this many (1 to 1000, default 100)")),
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
    let views: Vec<EventView> = rows
        .into_iter()
        .map(|e| EventView {
            id: e.id,
            time: iso(e.time),
            kind: e.kind,
            node_id: e.node_id,
            message: e.message,
        })
        .collect();
    Ok(HttpResponse::Ok().json(views))
}
