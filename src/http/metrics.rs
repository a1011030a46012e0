//! `/metrics` in the Prometheus text format.

use std::fmt::Write;

use actix_web::{get, web, HttpResponse};

use super::AppState;

/// Prometheus metrics of this node.
#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, content_type = "text/plain")))]
#[get("/metrics")]
pub(crate) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let status = state.status.get();
    let m = &state.metrics;
    let mut out = String::new();
    let node = &state.node_id;
    let _ = writeln!(
        out,
        "# HELP baton_node_up 1 when the node runs workflows (state RUNNING)."
    );
    let _ = writeln!(out, "# TYPE baton_node_up gauge");
    let up = u8::from(status.state == baton_actors::messages::NodeState::Running);
    let _ = writeln!(
        out,
        "baton_node_up{{node=\"{node}\",state=\"{}\"}} {up}",
        status.state.as_str()
    );
    let _ = writeln!(
        out,
        "# HELP baton_executions_running Executions with a running actor on this node."
    );
    let _ = writeln!(out, "# TYPE baton_executions_running gauge");
    let _ = writeln!(
        out,
        "baton_executions_running{{node=\"{node}\"}} {}",
        status.running
    );
    m.render_prometheus(&mut out, node);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(out)
}
