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

use crate::on_all_backends;
use crate::util::*;

const LONG: Duration = Duration::from_secs(30);

on_all_backends!(
    a_second_standalone_process_with_the_same_node_id_fences_the_first,
    a_cancel_reaches_an_execution_running_on_another_node,
    a_standalone_node_recovers_a_stranded_row_without_a_restart,
    a_second_process_with_the_same_node_id_waits_for_the_first,
    a_graceful_stop_between_items_hands_the_next_one_off_as_attempt_1,
    an_active_node_adopts_executions_whose_owner_is_not_active,
);

async fn node(db: &TestDb, id: &str, active_nodes: u32) -> NodeHandle {
    node_with(db, id, active_nodes, 100).await
}

async fn node_with(db: &TestDb, id: &str, active_nodes: u32, interval_ms: u64) -> NodeHandle {
    let mut config = Config::default();
    config.database.url = db.url.clone();
    config.http.listen = "127.0.0.1:0".into();
    config.http.workers = 1;
    config.node.id = Some(id.to_owned());
    config.cluster.enabled = true;
    config.cluster.active_nodes = active_nodes;
    config.cluster.heartbeat_interval_ms = interval_ms;
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
    // Its actors stop at once (an actor still claiming its row ends when
    // the claim answers, writing nothing more).
    eventually(
        "a fenced node runs nothing",
        Duration::from_secs(5),
        || async {
            a.supervisor()
                .send(QueryState)
                .await
                .expect("query")
                .running
                == 0
        },
    )
    .await;
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

    // a fences itself (it rejoins as a standby a moment later): c, the
    // standby up longest, takes the freed slot, and a's executions move to
    // the live active nodes.
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

/// Issue 7 item 8: a cancel sent to a node that does not run the execution
/// (two active nodes; the execution runs on the other) is carried out by
/// the owner, not refused with "cancel it there".
async fn a_cancel_reaches_an_execution_running_on_another_node(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let a = node(&db, "ca", 2).await;
    wait_state(&a, NodeState::Running).await;
    let b = node(&db, "cb", 2).await;
    wait_state(&b, NodeState::Running).await;
    let ha = Http::new(&a.url());
    import(&ha, &json!({"id": "long-nap", "start": "s", "items": {
        "s": {"type": "action", "action": "sleep", "inputs": {"ms": "20000"}, "next": "e"}, "e": {"type": "end"}}}))
    .await;
    let id = start(&ha, "long-nap", json!({})).await;
    let hb = Http::new(&b.url());
    let r = hb
        .post(&format!("/api/executions/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(r.status, 202, "handed to its owner: {}", r.text);
    let e = wait_final(&hb, &id, Duration::from_secs(10)).await;
    assert_eq!(
        (e["state"].clone(), e["owner_node"].clone()),
        (json!("canceled"), json!("ca"))
    );
    a.stop().await;
    b.stop().await;
}

/// Issue 7 item 5: a row left `running` with no actor on a standalone node
/// (an outage longer than the checkpoint retries, a failed wake) is picked
/// up again by the periodic rescan, without a restart.
async fn a_standalone_node_recovers_a_stranded_row_without_a_restart(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let n = start_node(&db, |_| {}).await;
    let http = Http::new(&n.url());
    import(
        &http,
        &json!({"id": "quick", "variables": {"x": 0}, "start": "a", "items": {
        "a": {"type": "task", "script": "x = 41 + 1;", "next": "e"}, "e": {"type": "end"}}}),
    )
    .await;
    // A row that is `running` and owned by this node, with no actor.
    let created = n
        .store()
        .create_execution(baton_actors::store::NewExecution {
            id: "stranded".into(),
            workflow_id: "quick".into(),
            workflow_version: 1,
            parent_id: None,
            inputs: json!({}),
            variables: json!({"x": 0}),
            start_item: "a".into(),
            owner_node: n.node_id().to_owned(),
            node_epoch: None,
            expect_current: false,
        })
        .await
        .expect("create");
    assert!(matches!(
        created,
        baton_actors::store::StartOutcome::Created(_)
    ));
    let e = wait_final(&http, "stranded", Duration::from_secs(10)).await;
    assert_eq!(
        (e["state"].clone(), e["variables"]["x"].clone()),
        (json!("completed"), json!(42))
    );
    n.stop().await;
}

/// Issue 7 item 6: a second process with the same node id (a restarted
/// pod while the old one still runs) must not join while the first one's
/// lease is valid; the first keeps running, and the second joins once the
/// first has left.
async fn a_second_process_with_the_same_node_id_waits_for_the_first(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    // 300 ms x 5: the test runs beside others; no self-fencing on jitter.
    let first = node_with(&db, "twin", 1, 300).await;
    wait_state(&first, NodeState::Running).await;
    let second = node_with(&db, "twin", 1, 300).await;
    // For two failover timeouts, the first stays active and the second
    // stays out.
    let until = std::time::Instant::now() + Duration::from_millis(3000);
    while std::time::Instant::now() < until {
        assert_eq!(
            state(&first).await,
            NodeState::Running,
            "the first keeps its lease"
        );
        assert_eq!(
            state(&second).await,
            NodeState::Starting,
            "the second is refused"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    first.stop().await;
    wait_state(&second, NodeState::Running).await;
    second.stop().await;
}

/// Issue 7 item 6, standalone: a second process with the same node id on
/// the same database takes the node over (it claims every unfinished
/// execution under new epochs); the first one sees the node's epoch move on
/// at its next rescan and fences itself instead of fighting for the rows.
async fn a_second_standalone_process_with_the_same_node_id_fences_the_first(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let first = start_node(&db, |c| c.node.id = Some("solo".into())).await;
    let http = Http::new(&first.url());
    import(
        &http,
        &json!({"id": "naps", "start": "s1", "items": {
        "s1": {"type": "action", "action": "sleep", "inputs": {"ms": "400"}, "next": "s2"},
        "s2": {"type": "action", "action": "sleep", "inputs": {"ms": "400"}, "next": "s3"},
        "s3": {"type": "action", "action": "sleep", "inputs": {"ms": "400"}, "next": "e"},
        "e": {"type": "end"}}}),
    )
    .await;
    let id = start(&http, "naps", json!({})).await;
    let second = start_node(&db, |c| c.node.id = Some("solo".into())).await;
    eventually(
        "the first fences itself",
        Duration::from_secs(10),
        || async { first.state() == NodeState::Fenced },
    )
    .await;
    let e = wait_final(&Http::new(&second.url()), &id, Duration::from_secs(30)).await;
    assert_eq!(e["state"], "completed", "{e}");
    assert_eq!(second.state(), NodeState::Running);
    first.stop().await;
    second.stop().await;
}

/// Issue 7 item 10: the lease a join gives counts from when the join was
/// sent, not from when its answer came back. The join is held up for
/// 1.5 s (another transaction holds the cluster lock: PostgreSQL and
/// MariaDB, SQLite has no row lock to hold apart from the file); the
/// lease (800 ms at 200 ms x 5) must end before the hold did: counted from
/// the answer, it would end 800 ms after it.
#[actix_rt::test]
async fn postgres_the_lease_after_a_slow_join_counts_from_when_it_was_sent() {
    the_lease_after_a_slow_join_counts_from_when_it_was_sent(Backend::Postgres).await
}

#[actix_rt::test]
async fn mysql_the_lease_after_a_slow_join_counts_from_when_it_was_sent() {
    the_lease_after_a_slow_join_counts_from_when_it_was_sent(Backend::Mysql).await
}

async fn the_lease_after_a_slow_join_counts_from_when_it_was_sent(b: Backend) {
    use sea_orm::{ConnectionTrait, Database, TransactionTrait};
    let Some(db) = TestDb::create(b) else {
        return;
    };
    // The schema first (a node migrates at start; this one would wait on
    // the held lock only in its join).
    let store = store(&db).await;
    store.migrate().await.expect("migrate");
    let other = Database::connect(&db.url).await.expect("connect");
    let txn = other.begin().await.expect("begin");
    txn.execute_unprepared("UPDATE cluster_lock SET counter = counter + 1 WHERE id = 1")
        .await
        .expect("hold the cluster lock");
    let hold = Duration::from_millis(1500);
    let release = actix_rt::spawn(async move {
        actix_rt::time::sleep(hold).await;
        let released = std::time::Instant::now();
        txn.commit().await.expect("release");
        released
    });
    let n = node_with(&db, "slowjoin", 1, 200).await;
    let released = release.await.expect("released");
    eventually("the join answered", Duration::from_secs(10), || async {
        n.supervisor()
            .send(QueryState)
            .await
            .expect("query")
            .lease_until
            .is_some()
    })
    .await;
    let lease = n
        .supervisor()
        .send(QueryState)
        .await
        .expect("query")
        .lease_until
        .expect("lease");
    assert!(
        lease < released,
        "the lease ends {:?} after the join's answer could come; it must count from the send",
        lease.saturating_duration_since(released)
    );
    n.stop().await;
}

/// Issue 7 item 11: a stopping node starts no run. A parked execution
/// whose timer falls due while the node drains is woken by a scan that
/// began before the stop (its wake write held up by another transaction's
/// row lock until the node is `STOPPING`); the woken row must be left for
/// the next owner, not run by a node that is handing off. Without the
/// guard in `spawn_execution` the draining node runs the next item.
/// PostgreSQL and MariaDB: SQLite has no row lock to hold the write.
#[actix_rt::test]
async fn postgres_a_stopping_node_starts_no_run() {
    a_stopping_node_starts_no_run(Backend::Postgres).await
}

#[actix_rt::test]
async fn mysql_a_stopping_node_starts_no_run() {
    a_stopping_node_starts_no_run(Backend::Mysql).await
}

async fn a_stopping_node_starts_no_run(b: Backend) {
    use sea_orm::{ConnectionTrait, Database, DbBackend, Statement, TransactionTrait};
    let Some(db) = TestDb::create(b) else {
        return;
    };
    // The wake's UPDATE of the held row, waiting a second or more.
    let watcher = LockWatcher::new(&db, b, "executions", 1).await;
    let backend = watcher.backend();
    let node_id = unique("guard-");
    let id_for = node_id.clone();
    let node = start_node(&db, move |c| c.node.id = Some(id_for)).await;
    let http = Http::new(&node.url());
    import(
        &http,
        &json!({"id": "nap", "start": "t", "items": {
            "t": {"type": "timer", "for_ms": 1500, "next": "after"},
            "after": {"type": "task", "script": "1;", "next": "e"},
            "e": {"type": "end"}}}),
    )
    .await;
    import(
        &http,
        &json!({"id": "long", "start": "s", "items": {
            "s": {"type": "action", "action": "sleep", "inputs": {"ms": "5000"}, "next": "e"},
            "e": {"type": "end"}}}),
    )
    .await;
    let nap = start(&http, "nap", json!({})).await;
    let store = node.store().clone();
    let parked = |want: &'static str| {
        let (store, nap) = (store.clone(), nap.clone());
        move || {
            let (store, nap) = (store.clone(), nap.clone());
            async move {
                store
                    .execution(&nap)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|r| r.state == want)
            }
        }
    };
    eventually("the timer parks", LONG, parked("waiting")).await;
    // Hold the parked row: the wake scan's write waits on it.
    let other = Database::connect(&db.url).await.expect("connect");
    let txn = other.begin().await.expect("begin");
    txn.execute_raw(Statement::from_sql_and_values(
        backend,
        match backend {
            DbBackend::Postgres => "SELECT id FROM executions WHERE id = $1 FOR UPDATE",
            _ => "SELECT id FROM executions WHERE id = ? FOR UPDATE",
        },
        [nap.clone().into()],
    ))
    .await
    .expect("lock the row");
    // Something to drain, so the stop lasts past the wake.
    let long = start(&http, "long", json!({})).await;
    eventually("the wake waits on the held row", LONG, || watcher.waiting()).await;
    let sup = node.supervisor().clone();
    let stopping = actix_rt::spawn(node.stop_with_grace(Duration::from_secs(10)));
    eventually("the node is stopping", LONG, || async {
        sup.send(QueryState)
            .await
            .is_ok_and(|s| s.state == NodeState::Stopping)
    })
    .await;
    txn.commit().await.expect("release the row");
    stopping.await.expect("stopped");
    // The node's own pool closed with it.
    let log = store_of(&db).await.item_log(&nap).await.expect("log");
    assert!(
        !log.iter().any(|r| r.item == "after"),
        "a stopping node ran the woken execution: {log:?}"
    );

    // Nothing is lost: the node's next start runs it, once.
    let id_for = node_id.clone();
    let again = start_node(&db, move |c| c.node.id = Some(id_for)).await;
    let http = Http::new(&again.url());
    for id in [&nap, &long] {
        let e = wait_final(&http, id, LONG).await;
        assert_eq!(e["state"], "completed", "{e}");
    }
    let log = again.store().item_log(&nap).await.expect("log");
    let starts = log
        .iter()
        .filter(|r| r.item == "after" && (r.event == "started" || r.event == "resumed"))
        .count();
    assert_eq!(starts, 1, "{log:?}");
    again.stop().await;
}

async fn store_of(db: &TestDb) -> baton_actors::Store {
    crate::util::store(db).await
}

/// Issue 11 item 13: a graceful stop lets the running item finish, and the
/// next item, whose start was recorded with that completion but which
/// never began, is handed off: the next owner runs it as attempt 1 (no
/// `resumed`, no attempt 2), and the log says `handed-off`, not `started`,
/// for the node that stopped.
async fn a_graceful_stop_between_items_hands_the_next_one_off_as_attempt_1(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let node_id = unique("handoff-");
    let id_for = node_id.clone();
    let node = start_node(&db, move |c| c.node.id = Some(id_for)).await;
    let http = Http::new(&node.url());
    import(
        &http,
        &json!({"id": "two", "start": "a", "items": {
            "a": {"type": "action", "action": "sleep", "inputs": {"ms": "700"}, "next": "b"},
            "b": {"type": "task", "script": "seen = ctx.attempt;", "next": "e"},
            "e": {"type": "end"}},
            "variables": {"seen": 0}, "outputs": {"seen": "number"}}),
    )
    .await;
    let id = start(&http, "two", json!({})).await;
    // `a`'s start is recorded when the execution is created; it has begun
    // when the node counts an item started.
    let metrics = node.metrics();
    eventually("item a runs", LONG, || async {
        metrics
            .items_started
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    })
    .await;
    // A grace longer than the item: it finishes, then the run stops.
    node.stop_with_grace(Duration::from_secs(10)).await;
    let log = store_of(&db).await.item_log(&id).await.expect("log");
    assert!(
        log.iter().any(|r| r.item == "a" && r.event == "completed"),
        "the running item finished within the grace: {log:?}"
    );
    assert!(
        log.iter()
            .any(|r| r.item == "b" && r.event == "handed-off" && r.attempt == 1),
        "the next item is recorded as handed off: {log:?}"
    );
    assert!(
        !log.iter().any(|r| r.item == "b" && r.event == "started"),
        "b never began on the stopping node: {log:?}"
    );

    let id_for = node_id.clone();
    let again = start_node(&db, move |c| c.node.id = Some(id_for)).await;
    let http = Http::new(&again.url());
    let e = wait_final(&http, &id, LONG).await;
    assert_eq!(e["state"], "completed", "{e}");
    assert_eq!(e["variables"]["seen"], 1, "b ran as attempt 1: {e}");
    let log = again.store().item_log(&id).await.expect("log");
    let b_records: Vec<_> = log
        .iter()
        .filter(|r| r.item == "b")
        .map(|r| (r.event.as_str(), r.attempt))
        .collect();
    assert_eq!(
        b_records,
        [("handed-off", 1), ("started", 1), ("completed", 1)],
        "{log:?}"
    );
    again.stop().await;
}

/// Issue 12 item 9: orphan adoption. Unfinished executions owned by a node
/// that is not a running active node (one that left, a standby, one never
/// registered) are adopted by the active node under a new epoch and run to
/// the end; an execution of the active node itself is not touched.
async fn an_active_node_adopts_executions_whose_owner_is_not_active(b: Backend) {
    use baton_actors::store::{NewExecution, NodeRegistration};
    let Some(db) = TestDb::create(b) else { return };
    let n = node(&db, "adopter", 1).await;
    wait_state(&n, NodeState::Running).await;
    let http = Http::new(&n.url());
    import(
        &http,
        &json!({"id": "w", "start": "a", "variables": {"done": false},
            "items": {"a": {"type": "task", "script": "done = true;", "next": "e"},
            "e": {"type": "end"}}}),
    )
    .await;
    let s = store_of(&db).await;
    // A standby that registered (with the cluster's settings), and a node
    // that never did.
    let fingerprint = s
        .node("adopter")
        .await
        .expect("read")
        .expect("row")
        .fingerprint;
    s.join_cluster(
        NodeRegistration {
            id: "bystander".into(),
            address: "http://bystander".into(),
            role: "standby".into(),
            state: "STANDBY".into(),
            fingerprint,
        },
        60_000,
        None,
    )
    .await
    .expect("join");
    for (id, owner) in [("orphan-standby", "bystander"), ("orphan-ghost", "ghost")] {
        s.create_execution(NewExecution {
            id: id.into(),
            workflow_id: "w".into(),
            workflow_version: 1,
            parent_id: None,
            inputs: json!({}),
            variables: json!({"done": false}),
            start_item: "a".into(),
            owner_node: owner.into(),
            node_epoch: None,
            expect_current: false,
        })
        .await
        .expect("create");
    }
    for id in ["orphan-standby", "orphan-ghost"] {
        let e = wait_final(&http, id, LONG).await;
        assert_eq!(e["state"], "completed", "{e}");
        assert_eq!(e["variables"]["done"], true, "{e}");
        let row = s.execution(id).await.expect("read").expect("row");
        assert_eq!(row.owner_node.as_deref(), Some("adopter"));
        assert_eq!(row.owner_epoch, 2, "adopted once, under a new epoch");
    }
    let events = http.get("/api/cluster/events").await.json;
    assert!(
        events
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["kind"] == "adopt" && e["node_id"] == "adopter"),
        "{events}"
    );
    n.stop().await;
}
