//! The actor-message test driver: a node's supervisor tree started in
//! process and driven with its public messages: force a heartbeat, force a
//! peer scan, fence, rejoin, query state. Also two active nodes sharing the
//! work (`active_nodes = 2`).

use std::time::Duration;

use baton::{Config, Node, NodeHandle};
use baton_actors::failover::ScanPeers;
use baton_actors::heartbeat::Beat;
use baton_actors::messages::NodeState;
use baton_actors::supervisor::{FenceNow, GetChildren, QueryState, Rejoin};
use serde_json::json;

use crate::util::*;

async fn node(db: &TestDb, id: &str, active_nodes: u32) -> NodeHandle {
    let mut config = Config::default();
    config.database.url = db.url.clone();
    config.http.listen = "127.0.0.1:0".into();
    config.http.workers = 1;
    config.node.id = Some(id.to_owned());
    config.cluster.enabled = true;
    config.cluster.active_nodes = active_nodes;
    config.cluster.heartbeat_interval_ms = 100;
    config.cluster.failover_heartbeats = 5;
    Node::builder()
        .config(config)
        .start()
        .await
        .expect("node starts")
}

async fn state(n: &NodeHandle) -> NodeState {
    n.supervisor().send(QueryState).await.expect("query").state
}

async fn wait_state(n: &NodeHandle, want: NodeState) {
    eventually(
        &format!("{} is {}", n.node_id(), want.as_str()),
        Duration::from_secs(30),
        || async { state(n).await == want },
    )
    .await;
}

#[actix_rt::test]
async fn messages_drive_heartbeat_fencing_takeover_and_rejoin() {
    let db = TestDb::create(Backend::Sqlite).expect("sqlite");
    let a = node(&db, "da", 1).await;
    wait_state(&a, NodeState::Running).await;
    let b = node(&db, "db", 1).await;
    wait_state(&b, NodeState::Standby).await;

    let children = b.supervisor().send(GetChildren).await.expect("children");
    let heartbeat = children.heartbeat.expect("heartbeat actor");
    let detector = children.detector.expect("detector");
    assert_eq!(heartbeat.send(Beat).await.expect("beat"), Ok(true));
    let quiet = detector
        .send(ScanPeers)
        .await
        .expect("scan")
        .expect("scan ok");
    assert!(quiet.taken_over.is_empty(), "nobody is dead yet: {quiet:?}");

    let http = Http::new(&a.url());
    import(&http, &json!({"id": "nap", "start": "s", "items": {
        "s": {"type": "action", "action": "sleep", "inputs": {"ms": "300"}, "next": "e"}, "e": {"type": "end"}}}))
    .await;
    let id = start(&http, "nap", json!({})).await;

    a.supervisor()
        .send(FenceNow {
            reason: "test".into(),
        })
        .await
        .expect("fence");
    assert_eq!(state(&a).await, NodeState::Fenced);
    assert_eq!(
        a.supervisor()
            .send(QueryState)
            .await
            .expect("query")
            .running,
        0,
        "a fenced node runs nothing"
    );
    wait_state(&b, NodeState::Running).await;
    let e = wait_final(&Http::new(&b.url()), &id, Duration::from_secs(30)).await;
    assert_eq!(
        (e["state"].clone(), e["owner_node"].clone()),
        (json!("completed"), json!("db"))
    );

    // a rejoins as a standby (by itself, or at once with Rejoin).
    let _ = a.supervisor().send(Rejoin).await.expect("rejoin");
    wait_state(&a, NodeState::Standby).await;
    let refused = b.supervisor().send(Rejoin).await.expect("rejoin");
    assert!(refused.is_err(), "only a fenced node rejoins");
    a.stop().await;
    b.stop().await;
}

#[actix_rt::test]
async fn two_active_nodes_each_run_what_they_accept_and_share_a_dead_nodes_work() {
    let db = TestDb::create(Backend::Sqlite).expect("sqlite");
    let a = node(&db, "pa", 2).await;
    wait_state(&a, NodeState::Running).await;
    let b = node(&db, "pb", 2).await;
    wait_state(&b, NodeState::Running).await;
    let c = node(&db, "pc", 2).await;
    wait_state(&c, NodeState::Standby).await;

    let ha = Http::new(&a.url());
    import(&ha, &json!({"id": "nap", "start": "s", "items": {
        "s": {"type": "action", "action": "sleep", "inputs": {"ms": "800"}, "next": "e"}, "e": {"type": "end"}}}))
    .await;
    let mut on_a = Vec::new();
    for _ in 0..6 {
        on_a.push(start(&ha, "nap", json!({})).await);
    }
    let on_b = start(&Http::new(&b.url()), "nap", json!({})).await;
    let s = store(&db).await;
    assert_eq!(
        s.execution(&on_b)
            .await
            .expect("read")
            .expect("row")
            .owner_node
            .as_deref(),
        Some("pb")
    );

    // a dies (fenced, heartbeats stop): c is promoted and a's executions
    // are spread over the live active nodes b and c.
    a.supervisor()
        .send(FenceNow {
            reason: "test".into(),
        })
        .await
        .expect("fence");
    wait_state(&c, NodeState::Running).await;
    let hb = Http::new(&b.url());
    let mut owners = std::collections::HashSet::new();
    for id in &on_a {
        let e = wait_final(&hb, id, Duration::from_secs(30)).await;
        assert_eq!(e["state"], "completed");
        owners.insert(e["owner_node"].as_str().unwrap_or("").to_owned());
    }
    assert!(!owners.contains("pa"), "{owners:?}");
    let (nodes, _) = s.nodes().await.expect("nodes");
    let active = nodes
        .iter()
        .filter(|n| n.role == "active" && n.state == "RUNNING")
        .count();
    assert!(active <= 2, "never more than active_nodes");
    for n in [a, b, c] {
        n.stop().await;
    }
}
