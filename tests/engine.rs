//! The engine suite, run on SQLite, PostgreSQL and MariaDB, each test in a
//! fresh database: workflows run to completion with their outputs,
//! checkpoints and the item log, idempotent starts, definitions with
//! versions, cancel, fencing, restart recovery and concurrent migrations.

use std::time::Duration;

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{json, Value};

use crate::on_all_backends;
use crate::util::*;
use baton_actors::store::entities::{execution, item_log};

on_all_backends!(
    large_inputs_variables_and_signals_are_stored_whole,
    order_runs_to_completion_with_outputs_and_log,
    repeated_execution_id_starts_nothing_new,
    definitions_have_versions_and_running_executions_keep_theirs,
    a_start_after_another_node_replaced_the_workflow_runs_the_new_version,
    cancel_stops_a_running_execution_and_is_idempotent,
    fenced_write_refused_after_epoch_bump_stops_the_actor,
    restart_resumes_only_the_interrupted_item,
    concurrent_migrations_do_not_race,
    errors_retries_and_handlers,
    a_failed_execution_resumes_from_its_failed_item,
    an_item_that_keeps_crashing_its_node_fails_after_the_budget,
    starts_beyond_max_running_wait_for_a_slot_then_get_503,
    a_child_holds_a_slot_so_parents_cannot_flood_past_max_running,
);

const LONG: Duration = Duration::from_secs(30);

/// Two sleeps and two counting tasks; the sleep length is an input.
fn slow() -> Value {
    json!({
        "id": "slow", "inputs": {"ms": "number"}, "outputs": {"count": "number"}, "variables": {"count": 0},
        "start": "s1",
        "items": {
            "s1": {"type": "action", "action": "sleep", "inputs": {"ms": "ms"}, "next": "c1"},
            "c1": {"type": "task", "script": "count = count + 1;", "next": "s2"},
            "s2": {"type": "action", "action": "sleep", "inputs": {"ms": "ms"}, "next": "c2"},
            "c2": {"type": "task", "script": "count = count + 1;", "next": "done"},
            "done": {"type": "end"}
        }
    })
}

async fn logs(http: &Http, id: &str) -> Vec<Value> {
    http.get(&format!("/api/executions/{id}/logs"))
        .await
        .json
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn count(log: &[Value], event: &str, step: i64) -> usize {
    log.iter()
        .filter(|l| l["event"] == event && l["step"] == step)
        .count()
}

async fn order_runs_to_completion_with_outputs_and_log(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let node = start_node(&db, |_| {}).await;
    let http = Http::new(&node.url());
    let r = http
        .request("POST", "/api/workflows", &[], Some(example("order.json")))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let big = start(&http, "order", json!({"n": 7, "who": "ann"})).await;
    let small = start(&http, "order", json!({"n": 2, "who": "bo"})).await;
    let e = wait_final(&http, &big, LONG).await;
    assert_eq!(e["state"], "completed", "{e}");
    assert_eq!(e["outputs"], json!({"total": 114, "greeting": "hello ann"}));
    assert_eq!(e["owner_node"], node.node_id());
    let e = wait_final(&http, &small, LONG).await;
    assert_eq!(e["outputs"], json!({"total": 4, "greeting": "hello bo"}));

    // double -> check -> big -> done: four steps, each started and completed once.
    let log = logs(&http, &big).await;
    let items: Vec<&str> = log
        .iter()
        .filter(|l| l["event"] == "completed")
        .map(|l| l["item"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(items, ["double", "check", "big", "done"]);
    for step in 1..=4 {
        assert_eq!(count(&log, "started", step), 1, "step {step}: {log:?}");
        assert_eq!(count(&log, "completed", step), 1, "step {step}: {log:?}");
    }
    // Invariant 1: each step's start is recorded before its completion,
    // and the next step's start in the same transaction as the completion.
    let pos = |event: &str, step: i64| {
        log.iter()
            .position(|l| l["event"] == event && l["step"] == step)
            .unwrap_or(usize::MAX)
    };
    for step in 1..=3 {
        assert!(pos("started", step) < pos("completed", step));
        assert!(pos("completed", step) < pos("started", step + 1));
    }
    assert!(
        log.iter()
            .any(|l| l["event"] == "log" && l["message"] == "doubled 7"),
        "script log() lands in the item log"
    );
    // The plain `end` is started and completed in the checkpoint of the
    // item before it, with the same records, and the row ends at the
    // `end`'s step: one checkpoint per item before it (big: double, check,
    // big; small: double, check), five in all where it took seven.
    let row = store(&db)
        .await
        .execution(&big)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(
        (row.step, row.attempt, row.item_retries, row.wait_until),
        (4, 1, 0, None)
    );
    assert_eq!(
        (pos("started", 4), pos("completed", 4)),
        (pos("completed", 3) + 1, pos("completed", 3) + 2),
        "{log:?}"
    );
    let metrics = http.get("/metrics").await.text;
    let batched = metric_value(&metrics, "baton_checkpoints_batched_total", &[]);
    assert_eq!(batched, Some(5.0), "{metrics}");
    node.stop().await;
}

async fn repeated_execution_id_starts_nothing_new(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let node = start_node(&db, |_| {}).await;
    let http = Http::new(&node.url());
    import(&http, &slow()).await;
    let body = json!({"inputs": {"ms": 10}, "execution_id": "order-42"});
    let first = http.post("/api/workflows/slow/executions", &body).await;
    assert_eq!(first.status, 202, "{}", first.text);
    assert_eq!(
        first.header("location").as_deref(),
        Some("/api/executions/order-42")
    );
    assert_eq!(first.header("baton-created").as_deref(), Some("true"));
    let again = http.post("/api/workflows/slow/executions", &body).await;
    assert_eq!(again.status, 202);
    assert_eq!(again.header("baton-created").as_deref(), Some("false"));
    assert_eq!(again.json["id"], "order-42");
    let e = wait_final(&http, "order-42", LONG).await;
    assert_eq!(e["state"], "completed");
    let third = http.post("/api/workflows/slow/executions", &body).await;
    assert_eq!(
        third.json["state"], "completed",
        "a repeat after completion returns the same, finished execution"
    );
    let list = http.get("/api/workflows/slow/executions").await;
    assert_eq!(list.json.as_array().map(Vec::len), Some(1), "{}", list.text);
    let log = logs(&http, "order-42").await;
    assert_eq!(
        log.iter().filter(|l| l["event"] == "completed").count(),
        5,
        "ran once: {log:?}"
    );
    node.stop().await;
}

async fn definitions_have_versions_and_running_executions_keep_theirs(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let node = start_node(&db, |_| {}).await;
    let http = Http::new(&node.url());
    import(&http, &slow()).await;
    let got = http.get("/api/workflows/slow").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("etag").as_deref(), Some("\"1\""));
    assert_eq!(got.json["id"], "slow");
    let dup = http.post("/api/workflows", &slow()).await;
    assert_eq!(dup.status, 409, "{}", dup.text);

    let running = start(&http, "slow", json!({"ms": 300})).await;
    // Version 2 counts by tens.
    let mut v2 = slow();
    v2["items"]["c1"]["script"] = json!("count = count + 10;");
    v2["items"]["c2"]["script"] = json!("count = count + 10;");
    let body = Some(v2.to_string().into_bytes());
    let no_match = http
        .request("PUT", "/api/workflows/slow", &[], body.clone())
        .await;
    assert_eq!(no_match.status, 428, "{}", no_match.text);
    let stale = http
        .request(
            "PUT",
            "/api/workflows/slow",
            &[("If-Match", "\"7\"")],
            body.clone(),
        )
        .await;
    assert_eq!(stale.status, 412, "{}", stale.text);
    let ok = http
        .request(
            "PUT",
            "/api/workflows/slow",
            &[("If-Match", "\"1\"")],
            body.clone(),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.header("etag").as_deref(), Some("\"2\""));
    let again = http
        .request("PUT", "/api/workflows/slow", &[("If-Match", "\"1\"")], body)
        .await;
    assert_eq!(
        again.status, 412,
        "a second writer with the old ETag loses: {}",
        again.text
    );

    let fresh = start(&http, "slow", json!({"ms": 1})).await;
    let busy = http
        .request("DELETE", "/api/workflows/slow", &[], None)
        .await;
    assert_eq!(
        busy.status, 409,
        "delete refused while executions run: {}",
        busy.text
    );
    let old = wait_final(&http, &running, LONG).await;
    assert_eq!(
        (
            old["workflow_version"].clone(),
            old["outputs"]["count"].clone()
        ),
        (json!(1), json!(2))
    );
    let new = wait_final(&http, &fresh, LONG).await;
    assert_eq!(
        (
            new["workflow_version"].clone(),
            new["outputs"]["count"].clone()
        ),
        (json!(2), json!(20))
    );

    let gone = http
        .request("DELETE", "/api/workflows/slow", &[], None)
        .await;
    assert_eq!(gone.status, 204, "{}", gone.text);
    assert_eq!(http.get("/api/workflows/slow").await.status, 404);
    assert_eq!(
        http.request("DELETE", "/api/workflows/slow", &[], None)
            .await
            .status,
        404
    );
    // Re-importing continues the version numbers: a version never names two bodies.
    import(&http, &slow()).await;
    assert_eq!(
        http.get("/api/workflows/slow")
            .await
            .header("etag")
            .as_deref(),
        Some("\"3\"")
    );
    node.stop().await;
}

/// Version `v` of workflow `ver`: its inputs are `inputs`, and it
/// records `v` as its output.
fn versioned(v: i64, inputs: Value) -> Value {
    json!({"id": "ver", "inputs": inputs, "outputs": {"v": "number"}, "variables": {"v": 0},
        "start": "t", "items": {
            "t": {"type": "task", "script": format!("v = {v};"), "next": "e"},
            "e": {"type": "end"}}})
}

/// Waits for execution `id` of `ver` and asserts it ran version `v`.
async fn ran_version(http: &Http, id: &str, v: i64) {
    let e = wait_final(http, id, LONG).await;
    assert_eq!(
        (e["workflow_version"].clone(), e["outputs"]["v"].clone()),
        (json!(v), json!(v)),
        "{e}"
    );
}

/// A node remembers each workflow's current version instead of reading
/// it for every start; its starts check, when they commit, that it still
/// is. Another node replaces and deletes the workflow behind its back:
/// its starts (alone and sixteen at once, which the group commit batches),
/// its inputs check and its children follow what is stored, never the
/// version it remembered.
async fn a_start_after_another_node_replaced_the_workflow_runs_the_new_version(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let a = start_node(&db, |_| {}).await;
    let b_node = start_node(&db, |_| {}).await;
    let (ha, hb) = (Http::new(&a.url()), Http::new(&b_node.url()));
    import(&ha, &versioned(1, json!({"x": "number"}))).await;
    let first = start(&ha, "ver", json!({"x": 1})).await;
    assert_eq!(wait_final(&ha, &first, LONG).await["outputs"]["v"], 1);

    // Version 2, stored by node b, also takes `y`.
    let replace = |http: &Http, v: i64, inputs: Value| {
        let body = versioned(v, inputs).to_string().into_bytes();
        let etag = format!("\"{}\"", v - 1);
        let http = http.clone();
        async move {
            let r = http
                .request(
                    "PUT",
                    "/api/workflows/ver",
                    &[("If-Match", etag.as_str())],
                    Some(body),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.text);
        }
    };
    let xy = json!({"x": "number", "y": "number"});
    replace(&hb, 2, xy.clone()).await;
    // Inputs only version 2 takes: refused by the version node a
    // remembers, accepted on a fresh read, and run at version 2.
    let alone = start(&ha, "ver", json!({"x": 1, "y": 2})).await;
    ran_version(&ha, &alone, 2).await;

    // Version 3 takes the same inputs: only the check at commit can tell
    // node a that 2 is stale, for sixteen starts at once (batched) ...
    replace(&hb, 3, xy.clone()).await;
    let starts = (0..16).map(|_| start(&ha, "ver", json!({"x": 1, "y": 2})));
    for id in futures::future::join_all(starts).await {
        ran_version(&ha, &id, 3).await;
    }
    // ... for one alone ...
    replace(&hb, 4, xy.clone()).await;
    let alone = start(&ha, "ver", json!({"x": 1, "y": 2})).await;
    ran_version(&ha, &alone, 4).await;
    // ... and for a child started by a parent running on node a.
    replace(&hb, 5, xy).await;
    import(&ha, &json!({"id": "parent", "outputs": {"kid": "number"}, "variables": {"kid": 0},
        "start": "call", "items": {
        "call": {"type": "workflow", "workflow": "ver", "inputs": {"x": "1", "y": "2"}, "outputs": {"kid": "v"}, "next": "e"},
        "e": {"type": "end"}}}))
    .await;
    let parent = start(&ha, "parent", json!({})).await;
    let e = wait_final(&ha, &parent, LONG).await;
    assert_eq!(
        (e["state"].clone(), e["outputs"]["kid"].clone()),
        (json!("completed"), json!(5)),
        "{e}"
    );

    // Deleted by node b: node a answers 404 and stores nothing.
    let count = |http: &Http| {
        let http = http.clone();
        async move {
            let r = http.get("/api/executions?workflow=ver&limit=100").await;
            assert_eq!(r.status, 200, "{}", r.text);
            r.json["executions"].as_array().map_or(0, Vec::len)
        }
    };
    let before = count(&ha).await;
    assert_eq!(before, 20, "1 + 1 + 16 + 1 + the child");
    let gone = hb.request("DELETE", "/api/workflows/ver", &[], None).await;
    assert_eq!(gone.status, 204, "{}", gone.text);
    let r = ha
        .post(
            "/api/workflows/ver/executions",
            &json!({"inputs": {"x": 1, "y": 2}}),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(count(&ha).await, before, "the refused start stored nothing");
    a.stop().await;
    b_node.stop().await;
}

async fn cancel_stops_a_running_execution_and_is_idempotent(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let node = start_node(&db, |_| {}).await;
    let http = Http::new(&node.url());
    import(&http, &slow()).await;
    let id = start(&http, "slow", json!({"ms": 60000})).await;
    eventually("the sleep item runs", LONG, || async {
        logs(&http, &id)
            .await
            .iter()
            .any(|l| l["item"] == "s1" && l["event"] == "started")
    })
    .await;
    let r = http
        .request("POST", &format!("/api/executions/{id}/cancel"), &[], None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json["state"], "canceled",
        "cancel answers once the state is written: {}",
        r.text
    );
    let again = http
        .request("POST", &format!("/api/executions/{id}/cancel"), &[], None)
        .await;
    assert_eq!(
        (again.status, again.json["state"].clone()),
        (200, json!("canceled"))
    );
    assert_eq!(
        http.get(&format!("/api/executions/{id}/state")).await.json,
        json!({"state": "canceled"})
    );
    let log = logs(&http, &id).await;
    assert!(
        !log.iter().any(|l| l["event"] == "completed"),
        "the aborted sleep never completed: {log:?}"
    );
    eventually("no actor left", LONG, || async {
        node.state() == baton_actors::messages::NodeState::Running
            && node
                .metrics()
                .executions_canceled
                .load(std::sync::atomic::Ordering::Relaxed)
                == 1
    })
    .await;
    node.stop().await;
}

/// Invariant 2: an execution's owner epoch is bumped behind the actor's
/// back (as a takeover would); its next write is refused, it stops, and
/// nothing it does afterwards reaches the store.
async fn fenced_write_refused_after_epoch_bump_stops_the_actor(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let node = start_node(&db, |_| {}).await;
    let http = Http::new(&node.url());
    import(&http, &slow()).await;
    let id = start(&http, "slow", json!({"ms": 400})).await;
    eventually("s1 runs", LONG, || async {
        logs(&http, &id).await.iter().any(|l| l["item"] == "s1")
    })
    .await;

    let s = store(&db).await;
    let (eid, bumped) = (id.clone(), s.clone());
    let changed = bumped
        .db()
        .run(move |c| async move {
            // What a takeover does: another owner, a new epoch.
            let r = execution::Entity::update_many()
                .col_expr(
                    execution::Column::OwnerEpoch,
                    Expr::col(execution::Column::OwnerEpoch).add(1),
                )
                .col_expr(execution::Column::OwnerNode, Expr::value("elsewhere"))
                .filter(execution::Column::Id.eq(eid))
                .exec(&c)
                .await?;
            Ok(r.rows_affected)
        })
        .await
        .expect("bump");
    assert_eq!(changed, 1);
    let log_before = logs(&http, &id).await.len();

    eventually("the actor hits the fence and stops", LONG, || async {
        node.metrics()
            .ownership_lost
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1
    })
    .await;
    actix_rt::time::sleep(Duration::from_millis(600)).await;
    let row = s.execution(&id).await.expect("row").expect("exists");
    assert_eq!(
        row.state, "running",
        "the fenced actor did not finish the execution"
    );
    assert_eq!(
        row.current_item.as_deref(),
        Some("s1"),
        "no checkpoint after the fence"
    );
    assert_eq!(row.step, 1);
    let log_after = logs(&http, &id).await.len();
    assert_eq!(
        log_before, log_after,
        "no item-log record written after the fence"
    );
    let completed = s
        .db()
        .run({
            let id = id.clone();
            move |c| async move {
                Ok(item_log::Entity::find()
                    .filter(item_log::Column::ExecutionId.eq(id))
                    .filter(item_log::Column::Event.eq("completed"))
                    .all(&c)
                    .await?
                    .len())
            }
        })
        .await
        .expect("log");
    assert_eq!(completed, 0);
    node.stop().await;
}

/// Crash recovery in-process: a node stopped with no grace abandons its
/// running item; the next node on the database resumes it with attempt 2
/// and never re-runs completed items.
async fn restart_resumes_only_the_interrupted_item(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let node = start_node(&db, |c| c.node.id = Some("node-a".into())).await;
    let http = Http::new(&node.url());
    import(&http, &slow()).await;
    let id = start(&http, "slow", json!({"ms": 1500})).await;
    items_begun(&node, 1).await;
    node.stop_with_grace(Duration::from_millis(1)).await;

    let node = start_node(&db, |c| c.node.id = Some("node-a".into())).await;
    let http = Http::new(&node.url());
    let e = wait_final(&http, &id, LONG).await;
    assert_eq!(e["state"], "completed", "{e}");
    assert_eq!(e["outputs"]["count"], 2);
    let log = logs(&http, &id).await;
    assert_eq!(
        count(&log, "started", 1),
        2,
        "s1 ran twice (attempts 1 and 2): {log:?}"
    );
    assert_eq!(count(&log, "resumed", 1), 1);
    assert!(log
        .iter()
        .any(|l| l["event"] == "started" && l["step"] == 1 && l["attempt"] == 2));
    for step in 2..=5 {
        assert_eq!(
            count(&log, "started", step),
            1,
            "step {step} ran once: {log:?}"
        );
    }
    for step in 1..=5 {
        assert_eq!(
            count(&log, "completed", step),
            1,
            "one completion record for step {step}"
        );
    }
    node.stop().await;
}

async fn concurrent_migrations_do_not_race(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let url = db.url.clone();
        tasks.push(actix_rt::spawn(async move {
            let s = baton_actors::Store::connect(&url, 2)
                .await
                .expect("connect");
            s.migrate().await
        }));
    }
    for t in tasks {
        t.await
            .expect("join")
            .expect("every concurrent migrate succeeds");
    }
    let s = store(&db).await;
    s.migrate().await.expect("migrating again is a no-op");
    assert!(s.workflows().await.expect("tables exist").is_empty());
}

async fn errors_retries_and_handlers(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let node = start_node(&db, |_| {}).await;
    let http = Http::new(&node.url());
    let r = http
        .request(
            "POST",
            "/api/workflows",
            &[],
            Some(example("retry-and-catch.json")),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = start(&http, "retry-and-catch", json!({})).await;
    let e = wait_final(&http, &id, LONG).await;
    assert_eq!(e["state"], "completed", "{e}");
    // `error.message` is the thrown Error's message, as in JavaScript;
    // `error.name` its name.
    assert_eq!(
        e["outputs"]["handled"],
        "flaky: still broken after 3 attempt(s)"
    );
    assert_eq!(e["variables"]["error"]["name"], "Error");
    assert_eq!(e["variables"]["error"]["attempt"], 3);
    let log = logs(&http, &id).await;
    assert_eq!(
        count(&log, "failed", 1),
        3,
        "three attempts failed: {log:?}"
    );
    assert_eq!(count(&log, "started", 1), 3);

    // An uncaught error fails the execution and keeps its variables.
    import(
        &http,
        &json!({"id": "boom", "variables": {"seen": 1}, "start": "a", "items": {
        "a": {"type": "task", "script": "seen = 2;", "next": "b"},
        "b": {"type": "task", "script": "throw new TypeError('no good');", "next": "e"},
        "e": {"type": "end"}}}),
    )
    .await;
    let id = start(&http, "boom", json!({})).await;
    let e = wait_final(&http, &id, LONG).await;
    assert_eq!(e["state"], "failed");
    assert_eq!(e["error"], "TypeError: no good");
    assert_eq!(e["current_item"], "b");
    assert_eq!(e["variables"]["seen"], 2);

    // `end` with `fail` ends failed with the expression's message.
    import(
        &http,
        &json!({"id": "refuse", "inputs": {"why": "string"}, "start": "e", "items": {
        "e": {"type": "end", "fail": "'refused: ' + why"}}}),
    )
    .await;
    let id = start(&http, "refuse", json!({"why": "no stock"})).await;
    let e = wait_final(&http, &id, LONG).await;
    assert_eq!(
        (e["state"].clone(), e["error"].clone()),
        (json!("failed"), json!("refused: no stock"))
    );
    node.stop().await;
}

async fn a_failed_execution_resumes_from_its_failed_item(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let node = start_node(&db, |_| {}).await;
    let http = Http::new(&node.url());
    import(
        &http,
        &json!({"id": "fragile", "variables": {"fixed": false, "count": 0}, "outputs": {"count": "number"},
            "start": "a", "items": {
            "a": {"type": "task", "script": "count = count + 1;", "next": "b"},
            "b": {"type": "task", "script": "if (!fixed) throw new Error('not fixed'); count = count + 10;", "next": "e"},
            "e": {"type": "end"}}}),
    )
    .await;
    let id = start(&http, "fragile", json!({})).await;
    let e = wait_final(&http, &id, LONG).await;
    assert_eq!(
        (e["state"].clone(), e["current_item"].clone()),
        (json!("failed"), json!("b"))
    );
    let path = format!("/api/executions/{id}/resume");
    let bad = http.post(&path, &json!({"variables": {"nope": 1}})).await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert!(bad.text.contains("variables.nope"), "{}", bad.text);
    let r = http
        .post(&path, &json!({"variables": {"fixed": true}}))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json["state"], "running");
    let e = wait_final(&http, &id, LONG).await;
    assert_eq!(e["state"], "completed", "{e}");
    assert_eq!(
        e["outputs"]["count"], 11,
        "a ran once, b ran again with the fix: {e}"
    );
    let log = logs(&http, &id).await;
    assert_eq!(
        count(&log, "completed", 1),
        1,
        "the completed item did not run again: {log:?}"
    );
    assert_eq!(count(&log, "resumed", 2), 1);
    let again = http.post(&path, &json!({})).await;
    assert_eq!(
        again.status, 409,
        "only a failed execution resumes: {}",
        again.text
    );
    assert_eq!(
        http.post("/api/executions/ghost/resume", &json!({}))
            .await
            .status,
        404
    );
    // A running execution cannot be resumed either.
    import(&http, &slow()).await;
    let running = start(&http, "slow", json!({"ms": 2000})).await;
    let r = http
        .post(&format!("/api/executions/{running}/resume"), &json!({}))
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("only a failed execution"), "{}", r.text);
    node.stop().await;
}

/// The poison-pill budget: an item whose runs keep ending with the node
/// (crash loop) fails its execution after `engine.max_item_starts` starts.
async fn an_item_that_keeps_crashing_its_node_fails_after_the_budget(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let budget = |c: &mut baton::Config| {
        c.node.id = Some("looping".into());
        c.engine.max_item_starts = 2;
    };
    let node = start_node(&db, budget).await;
    let http = Http::new(&node.url());
    import(&http, &slow()).await;
    let id = start(&http, "slow", json!({"ms": 60000})).await;
    // A stop before `s1` has begun hands it off, and a handed-off start is
    // not a start that crashed: wait until it has begun.
    items_begun(&node, 1).await;
    node.stop_with_grace(Duration::from_millis(1)).await;
    // Second start of s1: within the budget.
    let node = start_node(&db, budget).await;
    let http = Http::new(&node.url());
    items_begun(&node, 1).await;
    assert_eq!(count(&logs(&http, &id).await, "started", 1), 2);
    node.stop_with_grace(Duration::from_millis(1)).await;
    // A third start would exceed it: the execution fails instead.
    let node = start_node(&db, budget).await;
    let http = Http::new(&node.url());
    let e = wait_final(&http, &id, LONG).await;
    assert_eq!(e["state"], "failed", "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap_or("")
            .contains("engine.max_item_starts = 2"),
        "{e}"
    );
    assert_eq!(
        count(&logs(&http, &id).await, "started", 1),
        2,
        "not started a third time"
    );
    // A cluster event too (for the operator and the webhooks), recorded
    // just after the failure commits.
    eventually("a poison-pill event naming the execution", LONG, || async {
        let events = http.get("/api/cluster/events").await.json;
        events.as_array().into_iter().flatten().any(|e| {
            e["kind"] == "poison-pill"
                && e["node_id"] == "looping"
                && e["message"].as_str().unwrap_or("").contains(&id)
        })
    })
    .await;
    node.stop().await;
}

/// Admission control: a node holds at most `engine.max_running` runs in
/// memory. A client's start beyond it waits up to `engine.start_wait_ms`
/// for one to end or park, then is refused with 503 `overloaded` and
/// nothing is created; a repeat of an existing start needs no slot; a
/// parked execution holds none.
async fn starts_beyond_max_running_wait_for_a_slot_then_get_503(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let node = start_node(&db, |c| {
        c.engine.max_running = 2;
        c.engine.start_wait_ms = 1_500;
    })
    .await;
    let http = Http::new(&node.url());
    import(&http, &slow()).await;
    import(
        &http,
        &json!({
            "id": "parks", "start": "w",
            "items": {
                "w": {"type": "signal", "name": "go", "next": "e"},
                "e": {"type": "end"}
            }
        }),
    )
    .await;
    async fn post(http: &Http, workflow: &str, id: &str, inputs: Value) -> Resp {
        let path = format!("/api/workflows/{workflow}/executions");
        let body = json!({"inputs": inputs, "execution_id": id});
        http.post(&path, &body).await
    }
    for id in ["a", "b"] {
        let r = post(&http, "slow", id, json!({"ms": 60_000})).await;
        assert_eq!(r.status, 202, "{}", r.text);
    }
    // Both slots held for the whole wait: refused, nothing created.
    let r = post(&http, "slow", "c", json!({"ms": 1})).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "overloaded", "{}", r.text);
    assert!(r.text.contains("engine.max_running"), "{}", r.text);
    assert!(r.headers.contains_key("retry-after"), "{:?}", r.headers);
    assert_eq!(http.get("/api/executions/c").await.status, 404);
    let metrics = http.get("/metrics").await.text;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("baton_starts_refused_overloaded_total{") && l.ends_with("} 1")),
        "{metrics}"
    );
    // A repeat of a start that exists is answered at once, full or not.
    let r = post(&http, "slow", "a", json!({"ms": 60_000})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json["id"], "a");
    // A start waiting for a slot (seen waiting in /metrics) gets the one
    // a cancel frees.
    let other = Http::new(&node.url());
    let waiting = async {
        eventually("a start waits for a slot", LONG, || async {
            http.get("/metrics")
                .await
                .text
                .lines()
                .any(|l| l.starts_with("baton_starts_waiting{") && l.ends_with("} 1"))
        })
        .await;
        http.post("/api/executions/a/cancel", &json!({})).await
    };
    let (waited, canceled) = futures::join!(post(&other, "slow", "d", json!({"ms": 1})), waiting);
    assert_eq!(canceled.status, 200, "{}", canceled.text);
    assert_eq!(waited.status, 202, "{}", waited.text);
    assert_eq!(wait_final(&http, "d", LONG).await["state"], "completed");
    // Parked executions hold no slot: with `b` still running, two park
    // and a third start is still taken.
    for id in ["p1", "p2"] {
        let r = post(&http, "parks", id, json!({})).await;
        assert_eq!(r.status, 202, "{}", r.text);
        eventually("parked", LONG, || async {
            http.get(&format!("/api/executions/{id}")).await.json["state"] == "waiting-signal"
        })
        .await;
    }
    let r = post(&http, "slow", "e", json!({"ms": 1})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(wait_final(&http, "e", LONG).await["state"], "completed");
    node.stop_with_grace(Duration::from_millis(1)).await;
}

/// Every run holds a slot, not only a client's start: a parent that
/// starts a child and parks frees its slot, and the child (started by the
/// node, never made to wait) takes it, or runs over the limit and is owed
/// back. Either way a flood of such parents stays within
/// `engine.max_running`: here the one slot is the child's, and the next
/// start is refused.
async fn a_child_holds_a_slot_so_parents_cannot_flood_past_max_running(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let node = start_node(&db, |c| {
        c.engine.max_running = 1;
        c.engine.start_wait_ms = 300;
    })
    .await;
    let http = Http::new(&node.url());
    import(&http, &slow()).await;
    import(
        &http,
        &json!({
            "id": "parent", "start": "c",
            "items": {
                "c": {"type": "workflow", "workflow": "slow", "inputs": {"ms": "60000"}, "next": "e"},
                "e": {"type": "end"}
            }
        }),
    )
    .await;
    let parent = start(&http, "parent", json!({})).await;
    eventually("the parent parks on its child", LONG, || async {
        http.get(&format!("/api/executions/{parent}")).await.json["state"] == "waiting-signal"
    })
    .await;
    items_begun(&node, 2).await;
    let r = http
        .post(
            "/api/workflows/slow/executions",
            &json!({"inputs": {"ms": 1}}),
        )
        .await;
    assert_eq!(r.status, 503, "the child holds no slot? {}", r.text);
    assert_eq!(r.json["error"]["code"], "overloaded", "{}", r.text);
    node.stop_with_grace(Duration::from_millis(1)).await;
}

/// Data past 64 KB (MySQL/MariaDB's `TEXT`) is stored whole on every
/// database: inputs of 100 KB, a variable a script grows to 200 KB, a
/// signal payload of 100 KB, all within the 1 MiB request limit. Before
/// migration 12 MariaDB refused each ("Data too long for column").
async fn large_inputs_variables_and_signals_are_stored_whole(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let node = start_node(&db, |_| {}).await;
    let http = Http::new(&node.url());
    import(&http, &json!({"id": "big", "inputs": {"text": "string"},
        "variables": {"grown": "", "got": null},
        "outputs": {"in_len": "number", "grown_len": "number", "got_len": "number"},
        "start": "grow", "items": {
        "grow": {"type": "task", "script": "grown = text + text;", "next": "wait"},
        "wait": {"type": "signal", "name": "data", "store": "got", "next": "sum"},
        "sum": {"type": "task", "script": "in_len = text.length; grown_len = grown.length; got_len = got.length;", "next": "e"},
        "e": {"type": "end"}}}))
    .await;
    let text = "x".repeat(100 * 1024);
    let id = start(&http, "big", json!({ "text": text })).await;
    eventually("parked on the signal", Duration::from_secs(30), || async {
        http.get(&format!("/api/executions/{id}")).await.json["state"] == "waiting-signal"
    })
    .await;
    let r = http
        .post(
            &format!("/api/executions/{id}/signals/data"),
            &json!({ "payload": "y".repeat(100 * 1024) }),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let e = wait_final(&http, &id, Duration::from_secs(30)).await;
    assert_eq!(
        e["state"],
        "completed",
        "{}",
        &e.to_string()[..e.to_string().len().min(500)]
    );
    assert_eq!(
        (
            e["outputs"]["in_len"].clone(),
            e["outputs"]["grown_len"].clone(),
            e["outputs"]["got_len"].clone()
        ),
        (json!(102400), json!(204800), json!(102400))
    );
    node.stop().await;
}
