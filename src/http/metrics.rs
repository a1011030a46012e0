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
    let states = baton_actors::messages::NodeState::ALL.map(|s| (s.as_str(), s == status.state));
    one_hot(&mut out, node, "baton_node_state", "state", &states);
    let roles = [
        baton_actors::messages::NodeRole::Active,
        baton_actors::messages::NodeRole::Standby,
    ]
    .map(|r| (r.as_str(), r == status.role));
    one_hot(&mut out, node, "baton_node_role", "role", &roles);
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

/// A gauge with one series per value of `label`, every value always
/// present: 1 for the current one, 0 for the others.
fn one_hot(out: &mut String, node: &str, name: &str, label: &str, values: &[(&str, bool)]) {
    let _ = writeln!(
        out,
        "# HELP {name} 1 for the node's current {label}, 0 for the others."
    );
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (value, current) in values {
        let _ = writeln!(
            out,
            "{name}{{node=\"{node}\",{label}=\"{value}\"}} {}",
            u8::from(*current)
        );
    }
}
