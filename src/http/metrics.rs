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
    // One series per state and per role, each always present (1 for the
    // current one): a series whose label changed with the state broke
    // rates and alerts across a failover.
    let _ = writeln!(
        out,
        "# HELP baton_node_up 1 when the node runs workflows (state RUNNING), else 0."
    );
    let _ = writeln!(out, "# TYPE baton_node_up gauge");
    let up = u8::from(status.state == baton_actors::messages::NodeState::Running);
    let _ = writeln!(out, "baton_node_up{{node=\"{node}\"}} {up}");
    let _ = writeln!(
        out,
        "# HELP baton_node_state 1 for the node's current state, 0 for the others."
    );
    let _ = writeln!(out, "# TYPE baton_node_state gauge");
    for s in baton_actors::messages::NodeState::ALL {
        let _ = writeln!(
            out,
            "baton_node_state{{node=\"{node}\",state=\"{}\"}} {}",
            s.as_str(),
            u8::from(s == status.state)
        );
    }
    let _ = writeln!(
        out,
        "# HELP baton_node_role 1 for the node's current role, 0 for the other."
    );
    let _ = writeln!(out, "# TYPE baton_node_role gauge");
    for r in [
        baton_actors::messages::NodeRole::Active,
        baton_actors::messages::NodeRole::Standby,
    ] {
        let _ = writeln!(
            out,
            "baton_node_role{{node=\"{node}\",role=\"{}\"}} {}",
            r.as_str(),
            u8::from(r == status.role)
        );
    }
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
