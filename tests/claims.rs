//! One run per execution at a time (DESIGN.md invariant 10), on SQLite,
//! PostgreSQL and MariaDB: a run starts only by claiming the row with a
//! compare-and-set on the run token, step and attempt it read, so a row
//! read before someone else's claim, wake or progress starts nothing, and
//! of two claims from one read exactly one wins.

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Context, Handler};
use baton_actors::execution::{ExecutionActor, ExecutionSetup, StartKind};
use baton_actors::messages::{ExecutionEnded, RunOutcome, StartChild};
use baton_actors::metrics::EngineMetrics;
use baton_actors::store::{Fence, NewExecution, StartOutcome};
use baton_actors::workflow::script::{ScriptLimits, ScriptPool};
use baton_actors::workflow::DefinitionCache;
use baton_actors::ActionRegistry;
use futures::channel::mpsc;
use futures::StreamExt;
use serde_json::json;

use crate::on_all_backends;
use crate::util::*;

// SQLite cannot hold a row lock while another writer waits on it: the
// whole file is one lock, so the interleaving does not exist there.
#[actix_rt::test]
async fn postgres_a_heartbeat_that_commits_during_a_takeover_wins_it() {
    a_heartbeat_that_commits_during_a_takeover_wins_it(Backend::Postgres).await
}

#[actix_rt::test]
async fn mysql_a_heartbeat_that_commits_during_a_takeover_wins_it() {
    a_heartbeat_that_commits_during_a_takeover_wins_it(Backend::Mysql).await
}

// The wait is the database server's (`lock_timeout`,
// `innodb_lock_wait_timeout`); SQLite has one lock for the whole file.
#[actix_rt::test]
async fn postgres_a_scans_membership_steps_give_up_on_a_held_cluster_lock() {
    a_scans_membership_steps_give_up_on_a_held_cluster_lock(Backend::Postgres).await
}

#[actix_rt::test]
async fn mysql_a_scans_membership_steps_give_up_on_a_held_cluster_lock() {
    a_scans_membership_steps_give_up_on_a_held_cluster_lock(Backend::Mysql).await
}

// SQLite writes one transaction at a time: no start can race another's.
#[actix_rt::test]
async fn postgres_an_id_taken_while_its_batch_is_written_is_answered_as_existing() {
    an_id_taken_while_its_batch_is_written_is_answered_as_existing(Backend::Postgres).await
}

#[actix_rt::test]
async fn mysql_an_id_taken_while_its_batch_is_written_is_answered_as_existing() {
    an_id_taken_while_its_batch_is_written_is_answered_as_existing(Backend::Mysql).await
}

on_all_backends!(
    an_execution_is_created_only_under_the_nodes_current_epoch,
    a_stale_row_starts_no_second_run,
    of_two_claims_from_one_read_exactly_one_wins,
    a_write_under_a_stale_fence_writes_nothing,
    a_stale_active_row_keeps_its_slot_until_its_takeover,
    batched_checkpoints_refuse_rows_that_went_backwards,
    starts_made_together_stay_idempotent_and_epoch_checked,
    starts_with_a_remembered_version_are_written_only_while_it_is_current,
    a_wake_is_the_claim_of_the_run_it_wakes,
    batched_completions_are_fenced_and_consume_only_their_own_signals,
    starts_wait_for_a_takeover_in_flight_and_are_refused_by_it,
    batched_parks_are_fenced,
    a_batch_of_every_shape_writes_each_as_asked,
    a_rejoined_node_does_not_jump_the_standby_queue,
);

const LONG: Duration = Duration::from_secs(30);

/// Registers node `n1`, running and active; its epoch.
async fn running_node(store: &baton_actors::Store) -> i64 {
    store
        .register_node(baton_actors::store::NodeRegistration {
            id: "n1".into(),
            address: "http://127.0.0.1:1".into(),
            role: "active".into(),
            state: baton_actors::store::node_state::RUNNING.into(),
            fingerprint: String::new(),
        })
        .await
        .expect("register")
}

/// Stands in for the supervisor: reports how each run ended.
struct Ends(mpsc::UnboundedSender<RunOutcome>);

impl Actor for Ends {
    type Context = Context<Self>;
}

impl Handler<ExecutionEnded> for Ends {
    type Result = ();
    fn handle(&mut self, msg: ExecutionEnded, _: &mut Context<Self>) {
        let _ = self.0.unbounded_send(msg.outcome);
    }
}

impl Handler<StartChild> for Ends {
    type Result = ();
    fn handle(&mut self, _: StartChild, _: &mut Context<Self>) {}
}

/// Issue 7 item 1: the rescan, wake, child-start, resume and retry paths
/// read a row and spawn later. A row read at step 1 and used after the
/// execution moved on (here: parked at step 2) must start no run: before
/// the claim, such a run replayed the completed step 1.
async fn a_stale_row_starts_no_second_run(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let node = start_node(&db, |_| {}).await;
    let http = Http::new(&node.url());
    import(
        &http,
        &json!({"id": "once", "variables": {"n": 0}, "start": "a", "items": {
        "a": {"type": "task", "script": "n = n + 1;", "next": "w"},
        "w": {"type": "signal", "name": "go", "next": "e"},
        "e": {"type": "end"}}}),
    )
    .await;
    let id = start(&http, "once", json!({})).await;
    let store = node.store().clone();
    eventually("the execution parks at step 2", LONG, || {
        let (store, id) = (store.clone(), id.clone());
        async move {
            store
                .execution(&id)
                .await
                .ok()
                .flatten()
                .is_some_and(|r| r.state == "waiting-signal")
        }
    })
    .await;
    let now = store.execution(&id).await.expect("read").expect("row");
    assert_eq!(now.step, 2);
    // The row as a reader saw it while step 1 ran.
    let mut stale = now.clone();
    stale.state = "running".into();
    stale.step = 1;
    stale.attempt = 1;
    stale.current_item = Some("a".into());
    stale.variables = json!({"n": 0}).to_string();

    let (tx, mut ended) = mpsc::unbounded();
    let ends = Ends(tx).start();
    let definitions = DefinitionCache::default();
    let definition = definitions
        .get(&store, "once", now.workflow_version)
        .await
        .expect("definition");
    ExecutionActor::new(ExecutionSetup {
        store: store.clone(),
        scripts: ScriptPool::start(
            1,
            ScriptLimits {
                timeout_ms: 1000,
                memory_limit_mb: 32,
            },
        ),
        actions: ActionRegistry::default(),
        definitions,
        definition,
        row: stale,
        node: node.node_id().to_owned(),
        node_epoch: 0,
        kind: StartKind::Recovered,
        claimed: None,
        signals: None,
        max_item_starts: 10,
        max_depth: 8,
        fan_out: 4,
        starter: ends.clone().recipient(),
        supervisor: ends.clone().recipient(),
        metrics: Arc::new(EngineMetrics::default()),
    })
    .start();
    let outcome = actix_rt::time::timeout(LONG, ended.next())
        .await
        .expect("the stale run ends")
        .expect("an outcome");
    assert_eq!(outcome, RunOutcome::Superseded);
    let after = store.execution(&id).await.expect("read").expect("row");
    assert_eq!(
        (
            after.state.as_str(),
            after.step,
            after.attempt,
            after.variables.as_str()
        ),
        (
            now.state.as_str(),
            now.step,
            now.attempt,
            now.variables.as_str()
        ),
        "the stale run wrote nothing"
    );
    let log = store.item_log(&id).await.expect("log");
    let step1_starts = log
        .iter()
        .filter(|l| l.step == 1 && l.event == "started")
        .count();
    assert_eq!(step1_starts, 1, "step 1 was not replayed: {log:?}");
    assert!(!log.iter().any(|l| l.event == "resumed"), "{log:?}");
    // The real execution goes on untouched.
    let r = http
        .post(
            &format!("/api/executions/{id}/signals/go"),
            &json!({"payload": 1}),
        )
        .await;
    assert_eq!(r.status / 100, 2, "{}", r.text);
    let e = wait_final(&http, &id, LONG).await;
    assert_eq!(
        (e["state"].clone(), e["variables"]["n"].clone()),
        (json!("completed"), json!(1)),
        "{e}"
    );
    node.stop().await;
}

/// Two claims made from one read of a row (say, a rescan and a retry that
/// raced): exactly one wins, and only its token fences writes.
async fn of_two_claims_from_one_read_exactly_one_wins(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let store = store(&db).await;
    store.migrate().await.expect("migrate");
    let created = store
        .create_execution(NewExecution {
            id: "claimed-once".into(),
            workflow_id: "w".into(),
            workflow_version: 1,
            parent_id: None,
            inputs: json!({}),
            variables: json!({}),
            start_item: "a".into(),
            owner_node: "n1".into(),
            node_epoch: None,
            expect_current: false,
        })
        .await
        .expect("create");
    let StartOutcome::Created(row) = created else {
        panic!("created")
    };
    let fence = Fence {
        execution: row.id.clone(),
        node: "n1".into(),
        epoch: row.owner_epoch,
        run: None,
        step: None,
    };
    let (a, b2) = futures::join!(
        store.claim_run(&fence, row.run_token, row.step, row.attempt),
        store.claim_run(&fence, row.run_token, row.step, row.attempt)
    );
    let wins: Vec<i64> = [a.expect("claim"), b2.expect("claim")]
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(wins.len(), 1, "exactly one claim wins: {wins:?}");
    // A claim from a read older than the winner's is refused too.
    let again = store
        .claim_run(&fence, row.run_token, row.step, row.attempt)
        .await
        .expect("claim");
    assert_eq!(again, None);
    // The loser's (absent) token fences nothing; a write under a wrong
    // token is refused.
    let wrong = Fence {
        run: Some(wins[0] + 100),
        ..fence.clone()
    };
    let refused = store
        .checkpoint(
            &wrong,
            baton_actors::store::Checkpoint {
                attempt: Some(2),
                ..Default::default()
            },
        )
        .await;
    assert!(refused.is_err_and(|e| e.is_ownership_lost()));
    let right = Fence {
        run: Some(wins[0]),
        ..fence
    };
    store
        .checkpoint(
            &right,
            baton_actors::store::Checkpoint {
                attempt: Some(2),
                ..Default::default()
            },
        )
        .await
        .expect("the winner writes");
}

/// Issue 7 item 11: an execution is created under the owner node's
/// current epoch: a node whose row moved on (declared dead, or another
/// process registered with its id) creates nothing, in the same
/// transaction that would have created it.
async fn an_execution_is_created_only_under_the_nodes_current_epoch(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let node = start_node(&db, |_| {}).await;
    let http = Http::new(&node.url());
    import(
        &http,
        &json!({"id": "w", "start": "e", "items": {"e": {"type": "end"}}}),
    )
    .await;
    let store = node.store().clone();
    let me = store
        .node(node.node_id())
        .await
        .expect("read")
        .expect("row");
    let new = |id: &str, epoch: i64| NewExecution {
        id: id.into(),
        workflow_id: "w".into(),
        workflow_version: 1,
        parent_id: None,
        inputs: json!({}),
        variables: json!({}),
        start_item: "e".into(),
        owner_node: me.id.clone(),
        node_epoch: Some(epoch),
        expect_current: false,
    };
    let refused = store
        .create_execution(new("stale-epoch", me.epoch - 1))
        .await;
    assert!(
        matches!(refused, Err(baton_actors::StoreError::Conflict(_))),
        "{refused:?}"
    );
    assert!(store
        .execution("stale-epoch")
        .await
        .expect("read")
        .is_none());
    let created = store
        .create_execution(new("current-epoch", me.epoch))
        .await
        .expect("created at the current epoch");
    assert!(matches!(created, StartOutcome::Created(_)));
    node.stop().await;
}

/// Issue 7 item 9: `take_over` repeats the staleness condition in its
/// `UPDATE` and checks the row count. A victim read as stale whose
/// heartbeat commits while the takeover waits on its row is alive, and
/// the takeover loses (PostgreSQL re-checks the `WHERE` on the row as
/// committed). Before, it was declared dead on the stale read.
async fn a_heartbeat_that_commits_during_a_takeover_wins_it(b: Backend) {
    use baton_actors::store::Takeover;
    use sea_orm::{ConnectionTrait, Database, TransactionTrait};
    let Some(db) = TestDb::create(b) else {
        return;
    };
    let watcher = LockWatcher::new(&db, b, "nodes", 0).await;
    let backend = watcher.backend();
    let store = store(&db).await;
    store.migrate().await.expect("migrate");
    let reg = standby_registration;
    store
        .join_cluster(reg("me"), 60_000, None)
        .await
        .expect("join");
    let epoch = store
        .join_cluster(reg("victim"), 60_000, None)
        .await
        .expect("join");
    let other = Database::connect(&db.url).await.expect("connect");
    other
        .execute_unprepared(
            "UPDATE nodes SET last_heartbeat = last_heartbeat - 60000 WHERE id = 'victim'",
        )
        .await
        .expect("make it stale");
    // Its heartbeat is being written, not yet committed: the row is locked.
    let txn = other.begin().await.expect("begin");
    txn.execute_unprepared(&format!(
        "UPDATE nodes SET last_heartbeat = {} WHERE id = 'victim'",
        baton_actors::Store::now_sql(backend)
    ))
    .await
    .expect("heartbeat");
    let s = store.clone();
    let takeover =
        actix_rt::spawn(async move { s.take_over("me", "victim", epoch, 1000, 1, false).await });
    eventually("the takeover waits on the victim's row", LONG, || {
        watcher.waiting()
    })
    .await;
    txn.commit().await.expect("the heartbeat commits");
    let outcome = takeover.await.expect("join").expect("takeover");
    assert_eq!(
        outcome,
        Takeover::Lost,
        "a node whose heartbeat committed is alive"
    );
    let row = store.node("victim").await.expect("read").expect("row");
    assert_ne!(row.state, "FAILED");
}

/// A peer scan's membership steps (a takeover, a promotion, an adoption)
/// with a cluster node's session limits wait for a held `cluster_lock` at
/// most one interval and then do nothing (`Busy`, not promoted, nothing
/// adopted) and leave the step to the next scan, so that a frozen holder
/// cannot stall the scans that watch it. Each would otherwise wait as long
/// as the lock is held (here: until the test lets go). Once the lock is
/// free the same steps go through. An operator's eviction still waits.
async fn a_scans_membership_steps_give_up_on_a_held_cluster_lock(b: Backend) {
    use baton_actors::db::SessionLimits;
    use baton_actors::store::Takeover;
    use sea_orm::{ConnectionTrait, Database, TransactionTrait};
    let Some(db) = TestDb::create(b) else {
        return;
    };
    let plain = store(&db).await;
    plain.migrate().await.expect("migrate");
    let interval = Duration::from_millis(200);
    let limits = SessionLimits::for_cluster(interval, interval * 5);
    let node = baton_actors::Store::connect_with(&db.url, 2, limits)
        .await
        .expect("connect");
    let reg = standby_registration;
    node.join_cluster(reg("me"), 60_000, None)
        .await
        .expect("join");
    let epoch = node
        .join_cluster(reg("victim"), 60_000, None)
        .await
        .expect("join");
    // An orphan to adopt (its owner is not an active node).
    node.create_execution(new_start("orphan", "victim", None))
        .await
        .expect("create");
    let other = Database::connect(&db.url).await.expect("connect");
    other
        .execute_unprepared(
            "UPDATE nodes SET last_heartbeat = last_heartbeat - 3600000 WHERE id = 'victim'",
        )
        .await
        .expect("make it stale");
    let holder = other.begin().await.expect("begin");
    holder
        .execute_unprepared("UPDATE cluster_lock SET counter = counter + 1 WHERE id = 1")
        .await
        .expect("hold the lock");
    // A bound that only a step waiting for the holder reaches.
    fn bounded<T>(what: &str) -> impl FnOnce(Result<T, tokio::time::error::Elapsed>) -> T + '_ {
        move |r| r.unwrap_or_else(|_| panic!("{what} waited for the held lock"))
    }
    let within = Duration::from_secs(20);
    let took = tokio::time::timeout(
        within,
        node.take_over("me", "victim", epoch, 60_000, 1, false),
    )
    .await;
    assert_eq!(
        bounded("the takeover")(took).expect("takeover"),
        Takeover::Busy
    );
    let promoted = tokio::time::timeout(within, node.promote_if_needed("me", 60_000, 1)).await;
    assert!(!bounded("the promotion")(promoted).expect("promote"));
    assert_eq!(
        active_nodes(&plain).await,
        Vec::<String>::new(),
        "no one promoted"
    );
    // An adoption only by an active node: "me" is made one behind the lock's back.
    other
        .execute_unprepared("UPDATE nodes SET role = 'active', state = 'RUNNING' WHERE id = 'me'")
        .await
        .expect("make me active");
    let adopted = tokio::time::timeout(within, node.adopt_orphans("me")).await;
    assert_eq!(bounded("the adoption")(adopted).expect("adopt"), 0);
    // An operator's eviction waits its turn instead.
    let n = node.clone();
    let evict =
        actix_rt::spawn(async move { n.take_over("me", "victim", epoch, 60_000, 1, true).await });
    actix_rt::time::sleep(interval * 3).await;
    assert!(!evict.is_finished(), "an eviction waits for the lock");
    holder.commit().await.expect("let go");
    let evicted = evict.await.expect("join").expect("evict");
    assert!(matches!(evicted, Takeover::Won { .. }), "{evicted:?}");
    assert_eq!(
        plain
            .execution("orphan")
            .await
            .expect("read")
            .expect("row")
            .owner_node
            .as_deref(),
        Some("me"),
        "the evicted node's execution moved to the active node"
    );
}

/// The store's fenced writes (issue 12 item 9): a checkpoint is written
/// only by the owner node, at its epoch, under the run's token, on an
/// unfinished execution. Each stale part alone refuses the whole write
/// (`OwnershipLost`): the row and the item log stay as they were.
async fn a_write_under_a_stale_fence_writes_nothing(b: Backend) {
    use baton_actors::store::ExecutionState;
    use baton_actors::store::{Checkpoint, LogEntry};
    let Some(db) = TestDb::create(b) else { return };
    let store = store(&db).await;
    store.migrate().await.expect("migrate");
    let StartOutcome::Created(row) = store
        .create_execution(NewExecution {
            id: "fenced".into(),
            workflow_id: "w".into(),
            workflow_version: 1,
            parent_id: None,
            inputs: json!({}),
            variables: json!({"n": 0}),
            start_item: "a".into(),
            owner_node: "n1".into(),
            node_epoch: None,
            expect_current: false,
        })
        .await
        .expect("create")
    else {
        panic!("created")
    };
    let base = Fence {
        execution: row.id.clone(),
        node: "n1".into(),
        epoch: row.owner_epoch,
        run: None,
        step: None,
    };
    let token = store
        .claim_run(&base, row.run_token, row.step, row.attempt)
        .await
        .expect("claim")
        .expect("won");
    let fence = Fence {
        run: Some(token),
        ..base
    };
    let write = |n: i64| Checkpoint {
        variables: Some(json!({ "n": n })),
        logs: vec![LogEntry {
            item: "a".into(),
            step: 1,
            attempt: 1,
            event: "log",
            message: Some(format!("write {n}")),
        }],
        ..Default::default()
    };
    let stale = [
        (
            "another node",
            Fence {
                node: "n2".into(),
                ..fence.clone()
            },
        ),
        (
            "an old epoch",
            Fence {
                epoch: fence.epoch - 1,
                ..fence.clone()
            },
        ),
        (
            "a newer epoch",
            Fence {
                epoch: fence.epoch + 1,
                ..fence.clone()
            },
        ),
        (
            "an old run",
            Fence {
                run: Some(token - 1),
                ..fence.clone()
            },
        ),
        (
            "a row that went backwards (a step it saw committed is gone)",
            Fence {
                step: Some(row.step + 2),
                ..fence.clone()
            },
        ),
    ];
    for (what, f) in &stale {
        let r = store.checkpoint(f, write(99)).await;
        assert!(r.is_err_and(|e| e.is_ownership_lost()), "{what}: refused");
    }
    let now = store.execution("fenced").await.expect("read").expect("row");
    assert_eq!(
        now.variables,
        json!({"n": 0}).to_string(),
        "nothing written"
    );
    assert!(
        store
            .item_log("fenced")
            .await
            .expect("log")
            .iter()
            .all(|l| l.event != "log"),
        "no log record from a refused write"
    );
    // The right fence writes; then the execution ends, and even the right
    // fence writes nothing more.
    store
        .checkpoint(&fence, write(1))
        .await
        .expect("the owner writes");
    store
        .checkpoint(
            &fence,
            Checkpoint {
                state: Some(ExecutionState::Completed),
                ended: true,
                ..Default::default()
            },
        )
        .await
        .expect("it ends");
    let r = store.checkpoint(&fence, write(2)).await;
    assert!(
        r.is_err_and(|e| e.is_ownership_lost()),
        "a finished execution is never written again"
    );
    let now = store.execution("fenced").await.expect("read").expect("row");
    assert_eq!(now.variables, json!({"n": 1}).to_string());
    assert_eq!(now.state, "completed");
}

/// Invariant 6, for rows: with `active_nodes = 1`, a standby is not
/// promoted while the active node's row is merely stale (paused, cut): the
/// slot is freed by the takeover that marks it failed, which promotes in
/// the same transaction. Before, `promote_if_needed` counted only live
/// rows and promoted beside the stale one: two `active`/`RUNNING` rows.
async fn a_stale_active_row_keeps_its_slot_until_its_takeover(b: Backend) {
    use baton_actors::store::Takeover;
    use sea_orm::{ConnectionTrait, Database};
    let Some(db) = TestDb::create(b) else { return };
    let store = store(&db).await;
    store.migrate().await.expect("migrate");
    let reg = standby_registration;
    let epoch = store
        .join_cluster(reg("first"), 1000, None)
        .await
        .expect("join");
    assert!(store
        .promote_if_needed("first", 1000, 1)
        .await
        .expect("promote"));
    store
        .join_cluster(reg("second"), 1000, None)
        .await
        .expect("join");
    assert_eq!(active_nodes(&store).await, ["first"]);
    Database::connect(&db.url)
        .await
        .expect("connect")
        .execute_unprepared(
            "UPDATE nodes SET last_heartbeat = last_heartbeat - 60000 WHERE id = 'first'",
        )
        .await
        .expect("stale");
    assert!(
        !store
            .promote_if_needed("second", 1000, 1)
            .await
            .expect("promote"),
        "no promotion beside a stale active row"
    );
    assert_eq!(active_nodes(&store).await, ["first"]);
    let won = store
        .take_over("second", "first", epoch, 1000, 1, false)
        .await
        .expect("takeover");
    assert!(
        matches!(&won, Takeover::Won { promoted, .. } if promoted == &["second".to_owned()]),
        "{won:?}"
    );
    assert_eq!(active_nodes(&store).await, ["second"]);
}

/// `Fence::step` in the group commit: many "next item" checkpoints
/// submitted at once are written by one bulk `UPDATE` per batch. Those
/// whose row is not at the step their run last committed (it went
/// backwards) are refused there too, and only those.
async fn batched_checkpoints_refuse_rows_that_went_backwards(b: Backend) {
    use baton_actors::store::Checkpoint;
    let Some(db) = TestDb::create(b) else { return };
    let store = store(&db).await;
    store.migrate().await.expect("migrate");
    let mut fences = Vec::new();
    for i in 0..24 {
        let StartOutcome::Created(row) = store
            .create_execution(NewExecution {
                id: format!("b{i}"),
                workflow_id: "w".into(),
                workflow_version: 1,
                parent_id: None,
                inputs: json!({}),
                variables: json!({"n": 0}),
                start_item: "a".into(),
                owner_node: "n1".into(),
                node_epoch: None,
                expect_current: false,
            })
            .await
            .expect("create")
        else {
            panic!("created")
        };
        let base = Fence {
            execution: row.id.clone(),
            node: "n1".into(),
            epoch: row.owner_epoch,
            run: None,
            step: None,
        };
        let token = store
            .claim_run(&base, row.run_token, row.step, row.attempt)
            .await
            .expect("claim")
            .expect("won");
        // Every other run believes it is two steps further than its row.
        let believed = if i % 2 == 0 { row.step } else { row.step + 2 };
        fences.push((
            Fence {
                run: Some(token),
                step: Some(believed),
                ..base
            },
            row.step,
        ));
    }
    let advance = |step: i64| Checkpoint {
        variables: Some(json!({"n": 1})),
        outputs: Some(json!({})),
        current_item: Some(Some("b".into())),
        step: Some(step + 1),
        attempt: Some(1),
        item_retries: Some(0),
        clear_wait: true,
        ..Default::default()
    };
    let results = futures::future::join_all(
        fences
            .iter()
            .map(|(f, step)| store.checkpoint(f, advance(f.step.unwrap_or(*step)))),
    )
    .await;
    for (i, ((f, step), r)) in fences.iter().zip(results).enumerate() {
        let now = store
            .execution(&f.execution)
            .await
            .expect("read")
            .expect("row");
        if i % 2 == 0 {
            assert!(r.is_ok(), "{}: written: {r:?}", f.execution);
            assert_eq!(now.step, step + 1, "{}", f.execution);
        } else {
            assert!(
                r.is_err_and(|e| e.is_ownership_lost()),
                "{}: refused",
                f.execution
            );
            assert_eq!(now.step, *step, "{}: nothing written", f.execution);
        }
    }
}

/// Issue 14 item 3: starts made at the same moment share one transaction
/// (the store's start batcher). An `execution_id` repeated in one batch,
/// or already taken, creates nothing new and answers the stored row; each
/// created execution has exactly one `started` record; a start under an
/// epoch the node has left is refused without taking the rest of its
/// batch with it.
/// Starts that name their workflow's version from memory
/// (`expect_current`), made together so that the group commit batches
/// them, some with the version a replace has just superseded: those are
/// refused as `NotCurrent` and write nothing, whatever batch they share;
/// the others are written; an id already taken is answered as existing
/// either way; an id asked twice, once stale and once current, is
/// created once.
async fn starts_with_a_remembered_version_are_written_only_while_it_is_current(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let store = store(&db).await;
    store.migrate().await.expect("migrate");
    let epoch = running_node(&store).await;
    let body = json!({"id": "w", "start": "a", "items": {"a": {"type": "end"}}}).to_string();
    assert_eq!(
        store
            .insert_workflow("w", "w", body.clone())
            .await
            .expect("import"),
        1
    );
    let at = |id: &str, version: i64| NewExecution {
        workflow_version: version,
        expect_current: true,
        ..new_start(id, "n1", Some(epoch))
    };
    assert!(matches!(
        store.create_execution(at("taken", 1)).await,
        Ok(StartOutcome::Created(_))
    ));
    assert_eq!(
        store
            .replace_workflow("w", 1, "w", body)
            .await
            .expect("replace"),
        2
    );

    // Alone.
    let alone = store.create_execution(at("alone", 1)).await;
    assert!(
        matches!(&alone, Err(baton_actors::StoreError::NotCurrent { workflow, version }) if workflow == "w" && *version == 1),
        "{alone:?}"
    );
    // Together: stale and current interleaved, the taken id stale, and
    // one id stale then current.
    let mut wave = Vec::new();
    for i in 0..20 {
        wave.push(at(&format!("old-{i:02}"), 1));
        wave.push(at(&format!("new-{i:02}"), 2));
    }
    wave.push(at("taken", 1));
    wave.push(at("both", 1));
    wave.push(at("both", 2));
    let asked: Vec<(String, i64)> = wave
        .iter()
        .map(|n| (n.id.clone(), n.workflow_version))
        .collect();
    let outcomes =
        futures::future::join_all(wave.into_iter().map(|n| store.create_execution(n))).await;
    let mut both_created = 0;
    for ((id, version), outcome) in asked.iter().zip(outcomes) {
        match (id.as_str(), version, &outcome) {
            ("taken", _, Ok(StartOutcome::Existing(row))) => assert_eq!(row.workflow_version, 1),
            ("both", _, Ok(StartOutcome::Created(row))) => {
                assert_eq!(row.workflow_version, 2);
                both_created += 1;
            }
            ("both", 2, Ok(StartOutcome::Existing(row))) => assert_eq!(row.workflow_version, 2),
            ("both", 1, _) if row_or_stale(&outcome) => {}
            (_, 1, Err(baton_actors::StoreError::NotCurrent { .. })) if id.starts_with("old-") => {}
            (_, 2, Ok(StartOutcome::Created(row))) if id.starts_with("new-") => {
                assert_eq!(row.workflow_version, 2)
            }
            _ => panic!("{id} at version {version}: {outcome:?}"),
        }
    }
    assert_eq!(both_created, 1, "`both` created once");
    for id in ["alone".to_owned()]
        .into_iter()
        .chain((0..20).map(|i| format!("old-{i:02}")))
    {
        assert!(
            store.execution(&id).await.expect("read").is_none(),
            "{id} was written"
        );
        assert!(
            store.item_log(&id).await.expect("log").is_empty(),
            "{id} was logged"
        );
    }
    for i in 0..20 {
        let id = format!("new-{i:02}");
        let log = store.item_log(&id).await.expect("log");
        assert_eq!(
            log.iter().filter(|l| l.event == "started").count(),
            1,
            "{id}: {log:?}"
        );
    }
}

/// A stale start of an id is refused, or answered with the row its
/// current twin created.
fn row_or_stale(outcome: &Result<StartOutcome, baton_actors::StoreError>) -> bool {
    match outcome {
        Ok(StartOutcome::Existing(row)) => row.workflow_version == 2,
        Err(baton_actors::StoreError::NotCurrent { version, .. }) => *version == 1,
        _ => false,
    }
}

async fn starts_made_together_stay_idempotent_and_epoch_checked(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let store = store(&db).await;
    store.migrate().await.expect("migrate");
    let epoch = running_node(&store).await;
    let StartOutcome::Created(before) = store
        .create_execution(new_start("taken", "n1", Some(epoch)))
        .await
        .expect("create")
    else {
        panic!("created")
    };
    // Wave 1: 40 new ids, one id asked 10 times, and the taken id.
    let mut wave: Vec<NewExecution> = (0..40)
        .map(|i| new_start(&format!("s-{i:02}"), "n1", Some(epoch)))
        .collect();
    wave.extend((0..10).map(|_| new_start("twice", "n1", Some(epoch))));
    wave.push(new_start("taken", "n1", Some(epoch)));
    let ids: Vec<String> = wave.iter().map(|n| n.id.clone()).collect();
    let outcomes =
        futures::future::join_all(wave.into_iter().map(|n| store.create_execution(n))).await;
    let mut created = std::collections::HashMap::<String, usize>::new();
    for (id, outcome) in ids.iter().zip(outcomes) {
        match outcome.expect("start") {
            StartOutcome::Created(row) => {
                assert_eq!(&row.id, id);
                *created.entry(row.id).or_default() += 1;
            }
            StartOutcome::Existing(row) => {
                assert_eq!(&row.id, id);
                assert!(id == "twice" || id == "taken", "{id} answered as existing");
                if id == "taken" {
                    assert_eq!(row.created_at, before.created_at);
                }
            }
        }
    }
    assert_eq!(created.len(), 41, "40 new ids and `twice`: {created:?}");
    assert!(created.values().all(|n| *n == 1), "{created:?}");
    assert!(!created.contains_key("taken"));
    for id in created.keys().chain(["taken".to_owned()].iter()) {
        let log = store.item_log(id).await.expect("log");
        let started = log.iter().filter(|l| l.event == "started").count();
        assert_eq!(started, 1, "{id}: {log:?}");
        let row = store.execution(id).await.expect("read").expect("row");
        assert_eq!((row.step, row.attempt, row.owner_epoch), (1, 1, 1));
    }
    // Wave 2: ten good starts beside one under an epoch the node has left.
    let mut wave: Vec<NewExecution> = (0..10)
        .map(|i| new_start(&format!("t-{i}"), "n1", Some(epoch)))
        .collect();
    wave.insert(5, new_start("stale", "n1", Some(epoch - 1)));
    let ids: Vec<String> = wave.iter().map(|n| n.id.clone()).collect();
    let outcomes =
        futures::future::join_all(wave.into_iter().map(|n| store.create_execution(n))).await;
    for (id, outcome) in ids.iter().zip(outcomes) {
        if id == "stale" {
            assert!(
                matches!(outcome, Err(baton_actors::StoreError::Conflict(_))),
                "{outcome:?}"
            );
            assert!(store.execution(id).await.expect("read").is_none());
        } else {
            assert!(
                matches!(outcome, Ok(StartOutcome::Created(_))),
                "{id}: {outcome:?}"
            );
        }
    }
    // Wave 3: a whole batch under the epoch the node has left (on
    // PostgreSQL one statement, whose owner check writes nothing), with a
    // taken id among them: the new ids are refused, the taken one answered.
    let mut wave: Vec<NewExecution> = (0..10)
        .map(|i| new_start(&format!("u-{i}"), "n1", Some(epoch - 1)))
        .collect();
    wave.push(new_start("taken", "n1", Some(epoch - 1)));
    wave.push(new_start("u-3", "n1", Some(epoch - 1)));
    let ids: Vec<String> = wave.iter().map(|n| n.id.clone()).collect();
    let outcomes =
        futures::future::join_all(wave.into_iter().map(|n| store.create_execution(n))).await;
    for (id, outcome) in ids.iter().zip(outcomes) {
        if id == "taken" {
            assert!(
                matches!(&outcome, Ok(StartOutcome::Existing(row)) if row.created_at == before.created_at),
                "{outcome:?}"
            );
        } else {
            assert!(
                matches!(outcome, Err(baton_actors::StoreError::Conflict(_))),
                "{id}: {outcome:?}"
            );
            assert!(store.execution(id).await.expect("read").is_none());
        }
    }
}

/// Issue 14: a wake moves the run token of exactly the rows it wakes, so
/// on PostgreSQL and SQLite (`UPDATE ... RETURNING`) the woken run holds
/// that token without a claim of its own, and a run from a read before the
/// wake cannot claim it (invariant 10). On MySQL/MariaDB the woken rows
/// are read back and each run claims its token.
async fn a_wake_is_the_claim_of_the_run_it_wakes(b: Backend) {
    use sea_orm::ConnectionTrait;
    let Some(db) = TestDb::create(b) else { return };
    let store = store(&db).await;
    store.migrate().await.expect("migrate");
    let StartOutcome::Created(row) = store
        .create_execution(new_start("parked", "n1", None))
        .await
        .expect("create")
    else {
        panic!("created")
    };
    store
        .db()
        .run(|c| async move {
            c.execute_unprepared(
                "UPDATE executions SET state = 'waiting', wait_until = 1 WHERE id = 'parked'",
            )
            .await?;
            Ok(())
        })
        .await
        .expect("park");
    let read = store.execution("parked").await.expect("read").expect("row");
    let woken = store
        .wake("n1", vec!["parked".into(), "missing".into()])
        .await
        .expect("wake");
    assert_eq!(woken.len(), 1, "{woken:?}");
    let (woken_row, claimed) = &woken[0];
    assert_eq!(woken_row.run_token, read.run_token + 1);
    assert_eq!(woken_row.state, "running");
    assert_eq!(*claimed, b != Backend::Mysql, "{b:?}");
    // A second wake moves nothing (MySQL reads the running row back, as
    // not claimed by it); a claim from the read before the wake loses.
    let again = store.wake("n1", vec!["parked".into()]).await.expect("wake");
    assert!(again.iter().all(|(_, claimed)| !claimed), "{again:?}");
    assert!(b == Backend::Mysql || again.is_empty(), "{again:?}");
    let fence = Fence {
        execution: row.id.clone(),
        node: "n1".into(),
        epoch: row.owner_epoch,
        run: None,
        step: None,
    };
    let stale = store
        .claim_run(&fence, read.run_token, read.step, read.attempt)
        .await
        .expect("claim");
    assert_eq!(stale, None, "a read from before the wake claims nothing");
    // The woken token writes.
    let holder = Fence {
        run: Some(woken_row.run_token),
        ..fence
    };
    store
        .checkpoint(
            &holder,
            baton_actors::store::Checkpoint {
                attempt: Some(1),
                ..Default::default()
            },
        )
        .await
        .expect("the woken run writes");
}

/// Creates execution `id` owned by `n1`, claims its run, and returns the
/// run's fence (token and step); `lost`: a token another run has since
/// replaced, so that every write under it is refused.
async fn claimed_run(store: &baton_actors::Store, id: &str, lost: bool) -> Fence {
    let StartOutcome::Created(row) = store
        .create_execution(new_start(id, "n1", None))
        .await
        .expect("create")
    else {
        panic!("created")
    };
    let base = Fence {
        execution: row.id.clone(),
        node: "n1".into(),
        epoch: row.owner_epoch,
        run: None,
        step: None,
    };
    let token = store
        .claim_run(&base, row.run_token, row.step, row.attempt)
        .await
        .expect("claim")
        .expect("won");
    Fence {
        run: Some(if lost { token + 100 } else { token }),
        step: Some(row.step),
        ..base
    }
}

/// Sends `execution` a signal `go` and returns the id it is pending under.
async fn pending_go(
    store: &baton_actors::Store,
    execution: &str,
    payload: serde_json::Value,
) -> i64 {
    store
        .insert_signal(execution, "go", &payload)
        .await
        .expect("signal");
    store
        .pending_signal(execution, "go")
        .await
        .expect("read")
        .expect("pending")
        .id
}

/// Issue 14: completions and signal consumption join the group commit
/// (one bulk fenced `UPDATE` for the executions that complete together,
/// one `UPDATE` of the signals they consumed). A completion under a token
/// that no longer holds writes nothing: its execution stays running, its
/// signal stays pending, it gets no `completed` record; the others end.
async fn batched_completions_are_fenced_and_consume_only_their_own_signals(b: Backend) {
    use baton_actors::store::{Checkpoint, LogEntry};
    let Some(db) = TestDb::create(b) else { return };
    let store = store(&db).await;
    store.migrate().await.expect("migrate");
    let mut runs = Vec::new();
    for i in 0..24 {
        // Every third run lost its claim to another run since.
        let fence = claimed_run(&store, &format!("c{i}"), i % 3 == 0).await;
        let signal = pending_go(&store, &fence.execution, json!(i)).await;
        runs.push((fence, signal));
    }
    let complete = |signal: i64| Checkpoint {
        variables: Some(json!({"n": 1})),
        outputs: Some(json!({"done": true})),
        current_item: Some(None),
        state: Some(baton_actors::store::ExecutionState::Completed),
        ended: true,
        consume_signals: vec![signal],
        logs: vec![LogEntry {
            item: "a".into(),
            step: 1,
            attempt: 1,
            event: "completed",
            message: None,
        }],
        ..Default::default()
    };
    // The runs that still hold their rows complete together (on MySQL the
    // bulk statement writes them all), then the fenced-out ones.
    let (held, lost): (Vec<_>, Vec<_>) = runs.iter().enumerate().partition(|(i, _)| i % 3 != 0);
    let mut results: Vec<Option<Result<(), baton_actors::StoreError>>> =
        runs.iter().map(|_| None).collect();
    for wave in [held, lost] {
        let done = futures::future::join_all(
            wave.iter()
                .map(|(_, (f, signal))| store.checkpoint(f, complete(*signal))),
        )
        .await;
        for ((i, _), r) in wave.iter().zip(done) {
            results[*i] = Some(r);
        }
    }
    for (i, ((f, _), r)) in runs.iter().zip(results).enumerate() {
        let r = r.expect("answered");
        let row = store
            .execution(&f.execution)
            .await
            .expect("read")
            .expect("row");
        let pending = store
            .pending_signal(&f.execution, "go")
            .await
            .expect("read");
        let completed = store
            .item_log(&f.execution)
            .await
            .expect("log")
            .iter()
            .filter(|l| l.event == "completed")
            .count();
        if i % 3 == 0 {
            assert!(r.is_err_and(|e| e.is_ownership_lost()), "{}", f.execution);
            assert_eq!(row.state, "running", "{}", f.execution);
            assert!(row.ended_at.is_none() && row.outputs.is_none());
            assert!(pending.is_some(), "{}: its signal is kept", f.execution);
            assert_eq!(completed, 0, "{}", f.execution);
        } else {
            assert!(r.is_ok(), "{}: {r:?}", f.execution);
            assert_eq!(row.state, "completed", "{}", f.execution);
            assert!(row.ended_at.is_some() && row.current_item.is_none());
            assert_eq!(row.outputs.as_deref(), Some(r#"{"done":true}"#));
            assert!(pending.is_none(), "{}: its signal is consumed", f.execution);
            assert_eq!(completed, 1, "{}", f.execution);
        }
    }
}

/// Review of issue 14's start batcher: a start checks its owner's epoch
/// with a locking read, so a takeover that has moved the node's epoch but
/// not yet committed makes the starts wait for it, and they are refused
/// when it commits. With a plain read they passed the check against the
/// row as it was, and were created under a node declared dead (on MySQL,
/// a plain read even sees the transaction's earlier snapshot).
async fn starts_wait_for_a_takeover_in_flight_and_are_refused_by_it(b: Backend) {
    use sea_orm::{ConnectionTrait, Database, TransactionTrait};
    let Some(db) = TestDb::create(b) else { return };
    let store = store(&db).await;
    store.migrate().await.expect("migrate");
    let epoch = running_node(&store).await;
    let other = Database::connect(db.url.as_str()).await.expect("connect");
    let takeover = other.begin().await.expect("begin");
    takeover
        .execute_unprepared("UPDATE nodes SET epoch = epoch + 1, state = 'FAILED' WHERE id = 'n1'")
        .await
        .expect("the takeover moves the epoch");
    let starts = actix_rt::spawn({
        let store = store.clone();
        async move {
            futures::future::join_all((0..8).map(|i| {
                store.create_execution(new_start(&format!("late-{i}"), "n1", Some(epoch)))
            }))
            .await
        }
    });
    // Let the starts reach their read of the node row (they wait on the
    // takeover's lock; had they not reached it yet, they read the new
    // epoch after the commit all the same).
    actix_rt::time::sleep(Duration::from_millis(500)).await;
    takeover.commit().await.expect("the takeover commits");
    for r in starts.await.expect("starts") {
        assert!(
            matches!(r, Err(baton_actors::StoreError::Conflict(_))),
            "a start under the old epoch: {r:?}"
        );
    }
    for i in 0..8 {
        assert!(store
            .execution(&format!("late-{i}"))
            .await
            .expect("read")
            .is_none());
    }
}

/// A start batch whose id another writer (another node, the other start
/// writer) inserts while the batch is written. On PostgreSQL the batch's
/// one statement waits for that insert, leaves the id alone when it
/// commits, and cannot see its row (the statement's snapshot is older):
/// the id's start is then tried alone and finds it. The others of the
/// batch are created; the raced id is answered with the other writer's
/// row, and gets no `started` record from this batch.
async fn an_id_taken_while_its_batch_is_written_is_answered_as_existing(b: Backend) {
    use sea_orm::{ConnectionTrait, Database, TransactionTrait};
    let Some(db) = TestDb::create(b) else { return };
    let store = store(&db).await;
    store.migrate().await.expect("migrate");
    let epoch = running_node(&store).await;
    let other = Database::connect(db.url.as_str()).await.expect("connect");
    let writer = other.begin().await.expect("begin");
    writer
        .execute_unprepared(
            "INSERT INTO executions (id, workflow_id, workflow_version, state, inputs, variables, \
             current_item, step, attempt, owner_node, owner_epoch, created_at, updated_at) \
             VALUES ('raced', 'wf', 1, 'running', '{}', '{}', 'a', 1, 1, 'n1', 1, 12345, 12345)",
        )
        .await
        .expect("the other writer's insert");
    let mut wave: Vec<NewExecution> = (0..15)
        .map(|i| new_start(&format!("r-{i:02}"), "n1", Some(epoch)))
        .collect();
    wave.insert(8, new_start("raced", "n1", Some(epoch)));
    let ids: Vec<String> = wave.iter().map(|n| n.id.clone()).collect();
    let starts = actix_rt::spawn({
        let store = store.clone();
        async move {
            futures::future::join_all(wave.into_iter().map(|n| store.create_execution(n))).await
        }
    });
    // Let the batch reach the raced key (it waits on the open insert; had
    // it not reached it yet, it finds the committed row all the same).
    actix_rt::time::sleep(Duration::from_millis(500)).await;
    writer.commit().await.expect("the other writer commits");
    for (id, r) in ids.iter().zip(starts.await.expect("starts")) {
        match r.unwrap_or_else(|e| panic!("{id}: {e:?}")) {
            StartOutcome::Existing(row) => {
                assert_eq!(id, "raced", "{id} answered as existing");
                assert_eq!(row.created_at, 12345, "the other writer's row");
            }
            StartOutcome::Created(row) => {
                assert_ne!(id, "raced", "the raced id answered as created");
                assert_eq!(&row.id, id);
            }
        }
    }
    let log = store.item_log("raced").await.expect("log");
    assert!(log.is_empty(), "no started record from the batch: {log:?}");
}

/// Issue 14: parks join the group commit's bulk `UPDATE` (a `Park` shape:
/// state, deadline, awaited signal). Runs that still hold their rows park
/// together, half on a signal and half on a timer; a run that lost its
/// claim parks nothing and its row stays running.
async fn batched_parks_are_fenced(b: Backend) {
    use baton_actors::store::{Checkpoint, ExecutionState, LogEntry, Wait};
    let Some(db) = TestDb::create(b) else { return };
    let store = store(&db).await;
    store.migrate().await.expect("migrate");
    let mut runs = Vec::new();
    for i in 0..24 {
        runs.push(claimed_run(&store, &format!("p{i}"), i % 4 == 3).await);
    }
    let park = |i: usize| Checkpoint {
        wait: Some(if i.is_multiple_of(2) {
            Wait {
                state: ExecutionState::WaitingSignal,
                until: None,
                signal: Some("go".into()),
            }
        } else {
            Wait {
                state: ExecutionState::Waiting,
                until: Some(4_102_444_800_000),
                signal: None,
            }
        }),
        logs: vec![LogEntry {
            item: "a".into(),
            step: 1,
            attempt: 1,
            event: "log",
            message: Some("parked".into()),
        }],
        ..Default::default()
    };
    let results = futures::future::join_all(
        runs.iter()
            .enumerate()
            .map(|(i, f)| store.checkpoint(f, park(i))),
    )
    .await;
    for (i, (f, r)) in runs.iter().zip(results).enumerate() {
        let row = store
            .execution(&f.execution)
            .await
            .expect("read")
            .expect("row");
        let logged = store
            .item_log(&f.execution)
            .await
            .expect("log")
            .iter()
            .filter(|l| l.message.as_deref() == Some("parked"))
            .count();
        if i % 4 == 3 {
            assert!(r.is_err_and(|e| e.is_ownership_lost()), "{}", f.execution);
            assert_eq!(row.state, "running", "{}", f.execution);
            assert!(row.wait_until.is_none() && row.wait_signal.is_none());
            assert_eq!(logged, 0, "{}", f.execution);
        } else if i % 2 == 0 {
            assert!(r.is_ok(), "{}: {r:?}", f.execution);
            assert_eq!(row.state, "waiting-signal", "{}", f.execution);
            assert_eq!(row.wait_signal.as_deref(), Some("go"));
            assert_eq!(row.wait_until, None);
            assert_eq!(logged, 1, "{}", f.execution);
        } else {
            assert!(r.is_ok(), "{}: {r:?}", f.execution);
            assert_eq!(row.state, "waiting", "{}", f.execution);
            assert_eq!(row.wait_until, Some(4_102_444_800_000));
            assert_eq!(row.wait_signal, None);
            assert_eq!(logged, 1, "{}", f.execution);
        }
    }
}

/// A node that fenced itself and rejoined at once (its slot freed by its
/// own fence) must not take the slot back ahead of the standby that was
/// waiting: promotion goes to the standby up longest, whoever asks. When
/// the caller came first, the rejoined node's first scan won the slot
/// whenever it reached the lock before the waiting standby's, and that
/// standby stayed standby for good (a CI flake of
/// `driver::two_active_nodes_each_run_what_they_accept_and_share_a_dead_nodes_work`).
async fn a_rejoined_node_does_not_jump_the_standby_queue(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let store = store(&db).await;
    store.migrate().await.expect("migrate");
    let reg = standby_registration;
    let epoch_a = store
        .join_cluster(reg("pa"), 30_000, None)
        .await
        .expect("join");
    assert!(store
        .promote_if_needed("pa", 30_000, 2)
        .await
        .expect("promote"));
    store
        .join_cluster(reg("pb"), 30_000, None)
        .await
        .expect("join");
    assert!(store
        .promote_if_needed("pb", 30_000, 2)
        .await
        .expect("promote"));
    store
        .join_cluster(reg("pc"), 30_000, None)
        .await
        .expect("join");
    assert!(!store
        .promote_if_needed("pc", 30_000, 2)
        .await
        .expect("promote"));
    assert_eq!(active_nodes(&store).await, ["pa", "pb"]);
    // `pa` rejoins later than `pc` joined, on the database clock (ms).
    let pc_started = |store: baton_actors::Store| async move {
        let (nodes, _) = store.nodes().await.expect("nodes");
        nodes
            .into_iter()
            .find(|n| n.id == "pc")
            .expect("pc")
            .started_at
    };
    let since = pc_started(store.clone()).await;
    store.mark_fenced("pa", epoch_a).await.expect("fence");
    eventually("the database clock passes pc's start", LONG, || {
        let store = store.clone();
        async move { store.nodes().await.expect("nodes").1 > since }
    })
    .await;
    store
        .join_cluster(reg("pa"), 30_000, Some(epoch_a))
        .await
        .expect("rejoin");
    // pa's scan comes first: it promotes pc, not itself.
    assert!(
        !store
            .promote_if_needed("pa", 30_000, 2)
            .await
            .expect("promote"),
        "the rejoined node took the slot back"
    );
    assert_eq!(active_nodes(&store).await, ["pb", "pc"]);
    // A standby up longer but whose heartbeat lags (a node that may be
    // dying) goes after a fresh one: pb fences itself, pa's heartbeat is
    // 20 s old (live under the 30 s timeout), pd just joined.
    let epoch_b = store
        .nodes()
        .await
        .expect("nodes")
        .0
        .into_iter()
        .find(|n| n.id == "pb")
        .expect("pb")
        .epoch;
    store
        .join_cluster(reg("pd"), 30_000, None)
        .await
        .expect("join");
    {
        use sea_orm::{ConnectionTrait, Database};
        Database::connect(&db.url)
            .await
            .expect("connect")
            .execute_unprepared(
                "UPDATE nodes SET last_heartbeat = last_heartbeat - 20000 WHERE id = 'pa'",
            )
            .await
            .expect("lag");
    }
    store.mark_fenced("pb", epoch_b).await.expect("fence");
    assert!(!store
        .promote_if_needed("pa", 30_000, 2)
        .await
        .expect("promote"));
    assert_eq!(active_nodes(&store).await, ["pc", "pd"]);
}

/// SQLite: a write transaction that reads first (a definition's import
/// reads the newest version, then inserts) must wait for another writer
/// to the file, not fail. A deferred `BEGIN` took its read snapshot while
/// the other connection held the write lock, and once that one committed
/// its write failed at once with `SQLITE_BUSY` (a stale snapshot cannot
/// become a writer; no busy handler helps): nodes sharing one file
/// answered 503 "the database is busy" under load. Write transactions now
/// begin `IMMEDIATE`.
#[actix_rt::test]
async fn sqlite_a_write_transaction_waits_for_another_writer_instead_of_failing() {
    use sea_orm::{ConnectionTrait, Database, TransactionTrait};
    let Some(db) = TestDb::create(Backend::Sqlite) else {
        return;
    };
    let store = store(&db).await;
    store.migrate().await.expect("migrate");
    let other = Database::connect(&db.url).await.expect("connect");
    let holder = other.begin().await.expect("begin");
    holder
        .execute_unprepared(
            "INSERT INTO workflows (id, name, version, created_at, updated_at) \
             VALUES ('other', 'other', 1, 0, 0)",
        )
        .await
        .expect("the other connection takes the write lock");
    let body = json!({"id": "w", "start": "e", "items": {"e": {"type": "end"}}}).to_string();
    let import = {
        let store = store.clone();
        actix_rt::spawn(async move { store.insert_workflow("w", "w", body).await })
    };
    // Long enough for the import to have begun (and, deferred, to have
    // read) while the lock is held: the race this test builds.
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    holder.commit().await.expect("commit");
    let version = import
        .await
        .expect("task")
        .expect("the import waited and wrote");
    assert_eq!(version, 1);
}

/// The group commit's shapes mixed in one batch: "next item", "run
/// again", "completed" (consuming a signal) and "parked", each with a run
/// that still holds its row and one that lost it, all submitted at once.
/// On PostgreSQL the batch is one statement holding only the shapes
/// present, its parameters numbered on from one shape to the next: each
/// row must get its own shape's values, and the fenced-out rows nothing.
async fn a_batch_of_every_shape_writes_each_as_asked(b: Backend) {
    use baton_actors::store::{Checkpoint, ExecutionState, LogEntry, Wait};
    let Some(db) = TestDb::create(b) else { return };
    let store = store(&db).await;
    store.migrate().await.expect("migrate");
    let log = |event: &'static str, step: i64| LogEntry {
        item: "a".into(),
        step,
        attempt: 1,
        event,
        message: None,
    };
    // Rounds of shapes submitted together: one shape alone (a batch of
    // it alone, numbered from $1 whatever its place among the shapes),
    // then pairs and all four, each twice so that some batch holds them
    // together. Every other run has lost its claim.
    let rounds: [&[usize]; 7] = [
        &[3],
        &[1],
        &[2],
        &[0, 2, 0, 2],
        &[1, 3, 1, 3],
        &[2, 3, 2, 3],
        &[0, 1, 2, 3, 0, 1, 2, 3],
    ];
    let mut results = Vec::new();
    let mut runs = Vec::new();
    let mut n = 0;
    for round in rounds {
        let mut wave = Vec::new();
        for &shape in round {
            let i = n;
            n += 1;
            let fence = claimed_run(&store, &format!("m{i}"), i % 2 == 1).await;
            let step = fence.step.expect("step");
            let attempt = store
                .execution(&fence.execution)
                .await
                .expect("read")
                .expect("row")
                .attempt;
            let cp = match shape {
                0 => Checkpoint {
                    variables: Some(json!({"shape": "advance", "i": i})),
                    outputs: Some(json!({"o": i})),
                    current_item: Some(Some("b".into())),
                    step: Some(step + 1),
                    attempt: Some(1),
                    item_retries: Some(0),
                    logs: vec![log("completed", step), log("started", step + 1)],
                    ..Default::default()
                },
                1 => Checkpoint {
                    attempt: Some(7),
                    logs: vec![log("resumed", step)],
                    ..Default::default()
                },
                2 => {
                    let signal = pending_go(&store, &fence.execution, json!(i)).await;
                    // An item and the plain `end` after it, as the engine
                    // writes them (the bulk shape carries the end's step and
                    // attempt).
                    Checkpoint {
                        variables: Some(json!({"shape": "complete", "i": i})),
                        outputs: Some(json!({"done": i})),
                        current_item: Some(None),
                        step: Some(step + 1),
                        attempt: Some(1),
                        item_retries: Some(0),
                        clear_wait: true,
                        state: Some(ExecutionState::Completed),
                        ended: true,
                        consume_signals: vec![signal],
                        logs: vec![
                            log("completed", step),
                            log("started", step + 1),
                            log("completed", step + 1),
                        ],
                        ..Default::default()
                    }
                }
                _ => Checkpoint {
                    wait: Some(Wait {
                        state: ExecutionState::Waiting,
                        until: Some(4_102_444_800_000 + i as i64),
                        signal: None,
                    }),
                    ..Default::default()
                },
            };
            wave.push((i, shape, fence, cp, step, attempt));
        }
        results.extend(
            futures::future::join_all(
                wave.iter()
                    .map(|(_, _, f, cp, _, _)| store.checkpoint(f, cp.clone())),
            )
            .await,
        );
        runs.extend(wave);
    }
    for ((i, shape, f, _, step, attempt), r) in runs.iter().zip(results) {
        let id = &f.execution;
        let row = store.execution(id).await.expect("read").expect("row");
        let pending = store.pending_signal(id, "go").await.expect("read");
        let events: Vec<String> = store
            .item_log(id)
            .await
            .expect("log")
            .iter()
            .map(|l| l.event.clone())
            .collect();
        if i % 2 == 1 {
            assert!(r.is_err_and(|e| e.is_ownership_lost()), "{id}");
            assert_eq!(row.state, "running", "{id}");
            assert_eq!((row.step, row.attempt), (*step, *attempt), "{id}");
            assert_eq!(row.current_item.as_deref(), Some("a"), "{id}");
            assert!(row.wait_until.is_none() && row.ended_at.is_none(), "{id}");
            assert_eq!(events, ["started"], "{id}: no record of the lost run");
            if *shape == 2 {
                assert!(pending.is_some(), "{id}: its signal is kept");
            }
            continue;
        }
        assert!(r.is_ok(), "{id}: {r:?}");
        match shape {
            0 => {
                assert_eq!(row.state, "running", "{id}");
                assert_eq!(row.current_item.as_deref(), Some("b"), "{id}");
                assert_eq!((row.step, row.attempt), (step + 1, 1), "{id}");
                let vars: serde_json::Value =
                    serde_json::from_str(&row.variables).expect("variables");
                assert_eq!(vars, json!({"shape": "advance", "i": i}), "{id}");
                assert_eq!(events, ["started", "completed", "started"], "{id}");
            }
            1 => {
                assert_eq!(row.state, "running", "{id}");
                assert_eq!((row.step, row.attempt), (*step, 7), "{id}");
                assert_eq!(events, ["started", "resumed"], "{id}");
            }
            2 => {
                assert_eq!(row.state, "completed", "{id}");
                assert!(row.ended_at.is_some() && row.current_item.is_none(), "{id}");
                let outputs = format!(r#"{{"done":{i}}}"#);
                assert_eq!(row.outputs.as_deref(), Some(outputs.as_str()), "{id}");
                assert!(pending.is_none(), "{id}: its signal is consumed");
                assert_eq!(
                    (row.step, row.attempt, row.item_retries),
                    (step + 1, 1, 0),
                    "{id}"
                );
                assert_eq!(
                    events,
                    ["started", "completed", "started", "completed"],
                    "{id}"
                );
            }
            _ => {
                assert_eq!(row.state, "waiting", "{id}");
                assert_eq!(
                    row.wait_until,
                    Some(4_102_444_800_000 + i64::from(*i)),
                    "{id}"
                );
                assert_eq!(events, ["started"], "{id}");
            }
        }
    }
}
