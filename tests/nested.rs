//! Nested workflows and foreach: a child is an execution of its own,
//! linked to its parent; the parent waits parked, resumes with the child's
//! outputs, and sees a failed child as an error. Children have stable ids,
//! so a re-run after a crash never starts an element twice.

use std::time::Duration;

use serde_json::{json, Value};

use crate::on_all_backends;
use crate::util::*;

on_all_backends!(
    a_parent_waits_for_its_child_and_takes_its_outputs,
    foreach_collects_outputs_in_element_order,
    a_canceled_parked_child_ends_its_waiting_parent,
    a_retried_child_item_starts_a_new_child,
    a_retried_foreach_starts_new_children,
    kill_dash_nine_mid_parallel_foreach_reruns_no_completed_element,
    kill_dash_nine_mid_child_workflow_finishes_parent_and_child_once,
);

const LONG: Duration = Duration::from_secs(60);

async fn setup(http: &Http) {
    import(http, &json!({"id": "double", "inputs": {"x": "number"}, "outputs": {"y": "number"}, "variables": {"y": 0},
        "start": "a", "items": {"a": {"type": "task", "script": "if (x < 0) throw new Error('negative'); y = x * 2;", "next": "e"}, "e": {"type": "end"}}}))
    .await;
    import(http, &json!({"id": "slow-square", "inputs": {"x": "number", "ms": "number"}, "outputs": {"y": "number"}, "variables": {"y": 0},
        "start": "s", "items": {
        "s": {"type": "action", "action": "sleep", "inputs": {"ms": "ms"}, "next": "a"},
        "a": {"type": "task", "script": "y = x * x;", "next": "e"}, "e": {"type": "end"}}}))
    .await;
}

async fn a_parent_waits_for_its_child_and_takes_its_outputs(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let node = start_node(&db, |_| {}).await;
    let http = Http::new(&node.url());
    setup(&http).await;
    import(&http, &json!({"id": "parent", "inputs": {"n": "number"}, "outputs": {"total": "number"},
        "variables": {"total": 0, "kid": "", "why": ""}, "start": "call", "items": {
        "call": {"type": "workflow", "workflow": "double", "inputs": {"x": "n + 1"}, "outputs": {"total": "y", "kid": "execution_id"},
                 "next": "e", "on_error": "caught"},
        "caught": {"type": "task", "script": "why = error.message;", "next": "e"},
        "e": {"type": "end"}}}))
    .await;
    let id = start(&http, "parent", json!({"n": 20})).await;
    let e = wait_final(&http, &id, LONG).await;
    assert_eq!(
        (e["state"].clone(), e["outputs"]["total"].clone()),
        (json!("completed"), json!(42)),
        "{e}"
    );
    let kid = e["variables"]["kid"].as_str().unwrap_or("").to_owned();
    let child = http.get(&format!("/api/executions/{kid}")).await.json;
    assert_eq!(
        (child["workflow_id"].clone(), child["state"].clone()),
        (json!("double"), json!("completed"))
    );
    // A failed child is an error in the parent, caught by on_error.
    let id = start(&http, "parent", json!({"n": -5})).await;
    let e = wait_final(&http, &id, LONG).await;
    assert_eq!(e["state"], "completed", "{e}");
    assert!(
        e["variables"]["why"]
            .as_str()
            .unwrap_or("")
            .contains("negative"),
        "{e}"
    );
    node.stop().await;
}

async fn foreach_collects_outputs_in_element_order(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let node = start_node(&db, |c| c.engine.foreach_parallelism = 3).await;
    let http = Http::new(&node.url());
    setup(&http).await;
    for (id, parallel) in [("seq", false), ("par", true)] {
        import(&http, &json!({"id": id, "inputs": {"xs": "array"}, "outputs": {"squares": "array"}, "variables": {"squares": []},
            "start": "each", "items": {
            "each": {"type": "foreach", "over": "xs", "as": "x", "workflow": "slow-square", "inputs": {"x": "x", "ms": "(5 - x) * 20"},
                     "collect": {"squares": "y"}, "parallel": parallel, "next": "e"},
            "e": {"type": "end"}}}))
        .await;
        let eid = start(&http, id, json!({"xs": [1, 2, 3, 4, 5]})).await;
        let e = wait_final(&http, &eid, LONG).await;
        assert_eq!(
            e["outputs"]["squares"],
            json!([1, 4, 9, 16, 25]),
            "{id}: {e}"
        );
    }
    let empty = start(&http, "seq", json!({"xs": []})).await;
    assert_eq!(
        wait_final(&http, &empty, LONG).await["outputs"]["squares"],
        json!([])
    );
    node.stop().await;
}

#[actix_rt::test]
async fn bad_nesting_is_an_error_with_a_clear_message() {
    let db = TestDb::create(Backend::Sqlite).expect("sqlite");
    let node = start_node(&db, |c| c.engine.max_depth = 3).await;
    let http = Http::new(&node.url());
    setup(&http).await;
    import(
        &http,
        &json!({"id": "forever", "start": "again", "items": {
        "again": {"type": "workflow", "workflow": "forever", "next": "e"}, "e": {"type": "end"}}}),
    )
    .await;
    let id = start(&http, "forever", json!({})).await;
    let e = wait_final(&http, &id, LONG).await;
    assert_eq!(e["state"], "failed", "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap_or("")
            .contains("engine.max_depth"),
        "{e}"
    );
    import(&http, &json!({"id": "not-a-list", "variables": {"xs": 7}, "start": "each", "items": {
        "each": {"type": "foreach", "over": "xs", "as": "x", "workflow": "double", "inputs": {"x": "x"}, "next": "e"}, "e": {"type": "end"}}}))
    .await;
    let id = start(&http, "not-a-list", json!({})).await;
    let e = wait_final(&http, &id, LONG).await;
    assert!(
        e["error"]
            .as_str()
            .unwrap_or("")
            .contains("expected an array, found number"),
        "{e}"
    );
    node.stop().await;
}

#[actix_rt::test]
async fn async_children_run_on_their_own_and_cancel_follows_the_parent() {
    let db = TestDb::create(Backend::Sqlite).expect("sqlite");
    let node = start_node(&db, |_| {}).await;
    let http = Http::new(&node.url());
    import(
        &http,
        &json!({"id": "waiter", "start": "w", "items": {
        "w": {"type": "signal", "name": "go", "next": "e"}, "e": {"type": "end"}}}),
    )
    .await;
    import(&http, &json!({"id": "fire", "variables": {"kid": ""}, "start": "spawn", "items": {
        "spawn": {"type": "workflow", "workflow": "waiter", "async": true, "outputs": {"kid": "execution_id"}, "next": "e"},
        "e": {"type": "end"}}}))
    .await;
    let id = start(&http, "fire", json!({})).await;
    let e = wait_final(&http, &id, LONG).await;
    assert_eq!(e["state"], "completed", "the parent moved on: {e}");
    let kid = e["variables"]["kid"].as_str().unwrap_or("").to_owned();
    eventually("the async child waits", LONG, || async {
        http.get(&format!("/api/executions/{kid}")).await.json["state"] == "waiting-signal"
    })
    .await;
    // A synchronous parent waiting on a child: cancelling it cancels the child.
    import(
        &http,
        &json!({"id": "hold", "start": "call", "items": {
        "call": {"type": "workflow", "workflow": "waiter", "next": "e"}, "e": {"type": "end"}}}),
    )
    .await;
    let id = start(&http, "hold", json!({})).await;
    eventually("the parent waits on its child", LONG, || async {
        http.get(&format!("/api/executions/{id}")).await.json["state"] == "waiting-signal"
    })
    .await;
    let r = http
        .request("POST", &format!("/api/executions/{id}/cancel"), &[], None)
        .await;
    assert_eq!(r.json["state"], "canceled", "{}", r.text);
    let children: Vec<Value> = http
        .get("/api/workflows/waiter/executions")
        .await
        .json
        .as_array()
        .cloned()
        .unwrap_or_default();
    let held = children
        .iter()
        .find(|c| c["id"] != kid.as_str())
        .cloned()
        .unwrap_or_default();
    let held_id = held["id"].as_str().unwrap_or("").to_owned();
    eventually("the child is canceled too", LONG, || async {
        http.get(&format!("/api/executions/{held_id}")).await.json["state"] == "canceled"
    })
    .await;
    node.stop().await;
}

async fn kill_dash_nine_mid_parallel_foreach_reruns_no_completed_element(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let env = [
        ("BATON_DATABASE__URL", db.url.clone()),
        ("BATON_NODE__ID", "fanout".to_owned()),
        ("BATON_ENGINE__FOREACH_PARALLELISM", "4".to_owned()),
    ];
    let mut first = serve(&env);
    let http = Http::new(&first.url);
    setup(&http).await;
    import(&http, &json!({"id": "fan", "inputs": {"xs": "array"}, "outputs": {"squares": "array"}, "variables": {"squares": []},
        "start": "each", "items": {
        "each": {"type": "foreach", "over": "xs", "as": "x", "workflow": "slow-square", "inputs": {"x": "x", "ms": "200 + x * 10"},
                 "collect": {"squares": "y"}, "parallel": true, "next": "e"},
        "e": {"type": "end"}}}))
    .await;
    let xs: Vec<i64> = (1..=12).collect();
    let id = start(&http, "fan", json!({"xs": xs})).await;
    eventually("some elements are done", LONG, || async {
        let list = http
            .get("/api/workflows/slow-square/executions?state=completed")
            .await
            .json;
        list.as_array().is_some_and(|l| l.len() >= 3)
    })
    .await;
    first.kill9();
    let second = serve(&env);
    let http = Http::new(&second.url);
    let e = wait_final(&http, &id, LONG).await;
    let expected: Vec<i64> = xs.iter().map(|x| x * x).collect();
    assert_eq!(
        e["outputs"]["squares"],
        json!(expected),
        "complete and in order: {e}"
    );
    let children = http
        .get("/api/workflows/slow-square/executions?limit=100")
        .await
        .json;
    let children = children.as_array().cloned().unwrap_or_default();
    assert_eq!(
        children.len(),
        12,
        "one child per element, none started twice"
    );
    for c in &children {
        let cid = c["id"].as_str().unwrap_or("");
        let log = http.get(&format!("/api/executions/{cid}/logs")).await.json;
        let done = log
            .as_array()
            .into_iter()
            .flatten()
            .filter(|l| l["item"] == "a" && l["event"] == "completed")
            .count();
        assert_eq!(done, 1, "{cid}: each element completed once: {log}");
    }
}

async fn kill_dash_nine_mid_child_workflow_finishes_parent_and_child_once(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let env = [
        ("BATON_DATABASE__URL", db.url.clone()),
        ("BATON_NODE__ID", "nest".to_owned()),
    ];
    let mut first = serve(&env);
    let http = Http::new(&first.url);
    import_slow_steps(&http).await;
    import(&http, &json!({"id": "outer", "outputs": {"count": "number"}, "variables": {"count": 0}, "start": "call", "items": {
        "call": {"type": "workflow", "workflow": "slow-steps", "inputs": {"ms": "300"}, "outputs": {"count": "count"}, "next": "e"},
        "e": {"type": "end"}}}))
    .await;
    let id = start(&http, "outer", json!({})).await;
    eventually("the child is under way", LONG, || async {
        let list = http.get("/api/workflows/slow-steps/executions").await.json;
        let Some(kid) = list
            .as_array()
            .and_then(|l| l.first())
            .and_then(|c| c["id"].as_str())
            .map(str::to_owned)
        else {
            return false;
        };
        let log = http.get(&format!("/api/executions/{kid}/logs")).await.json;
        log.as_array()
            .is_some_and(|l| l.iter().any(|e| e["event"] == "completed"))
    })
    .await;
    first.kill9();
    let second = serve(&env);
    let http = Http::new(&second.url);
    let e = wait_final(&http, &id, LONG).await;
    assert_eq!(
        (e["state"].clone(), e["outputs"]["count"].clone()),
        (json!("completed"), json!(3)),
        "{e}"
    );
    let kids = http.get("/api/workflows/slow-steps/executions").await.json;
    let kids = kids.as_array().cloned().unwrap_or_default();
    assert_eq!(kids.len(), 1, "one child, not started again: {kids:?}");
    let kid = kids[0]["id"].as_str().unwrap_or("");
    let log = http.get(&format!("/api/executions/{kid}/logs")).await.json;
    for step in 1..=7 {
        let done = log
            .as_array()
            .into_iter()
            .flatten()
            .filter(|l| l["step"] == step && l["event"] == "completed")
            .count();
        assert_eq!(done, 1, "child step {step} completed once: {log}");
    }
}

/// Issue 7: a child parked on a long timer is canceled by a caller (no
/// actor runs it); its waiting parent must hear of it and go on to its
/// `on_error` handler, not wait forever (DESIGN.md invariant 12).
async fn a_canceled_parked_child_ends_its_waiting_parent(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let node = start_node(&db, |_| {}).await;
    let http = Http::new(&node.url());
    import(
        &http,
        &json!({"id": "napper", "start": "nap", "items": {
        "nap": {"type": "timer", "for_ms": 3_600_000, "next": "e"}, "e": {"type": "end"}}}),
    )
    .await;
    import(
        &http,
        &json!({"id": "waits-on-napper", "variables": {"why": ""}, "start": "call", "items": {
        "call": {"type": "workflow", "workflow": "napper", "next": "e", "on_error": "caught"},
        "caught": {"type": "task", "script": "why = error.message;", "next": "e"},
        "e": {"type": "end"}}}),
    )
    .await;
    let parent = start(&http, "waits-on-napper", json!({})).await;
    let store = node.store().clone();
    eventually("the child parks on its timer", LONG, || {
        let (store, parent) = (store.clone(), parent.clone());
        async move {
            let kids = store.unfinished_children(&parent).await.unwrap_or_default();
            kids.first().is_some_and(|c| c.state == "waiting")
        }
    })
    .await;
    let child = store
        .unfinished_children(&parent)
        .await
        .expect("children")
        .remove(0)
        .id;
    let r = http
        .post(&format!("/api/executions/{child}/cancel"), &json!({}))
        .await;
    assert!(r.status / 100 == 2, "{} {}", r.status, r.text);
    let e = wait_final(&http, &parent, Duration::from_secs(20)).await;
    assert_eq!(e["state"], "completed", "{e}");
    assert!(
        e["variables"]["why"]
            .as_str()
            .unwrap_or("")
            .contains("canceled"),
        "{e}"
    );
    node.stop().await;
}

/// Issue 7 item 12: a retried `workflow` item starts a new child; before,
/// the retry found the failed child under the same id and failed at once.
async fn a_retried_child_item_starts_a_new_child(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let node = start_node(&db, |_| {}).await;
    let http = Http::new(&node.url());
    import(
        &http,
        &json!({"id": "fails-first", "inputs": {"n": "number"}, "start": "a", "items": {
        "a": {"type": "task", "script": "if (n < 1) throw new Error('not yet');", "next": "e"},
        "e": {"type": "end"}}}),
    )
    .await;
    // The parent's retry runs the child again with `tries`, counted up by
    // the attempt: the first child fails, the second one succeeds.
    import(
        &http,
        &json!({"id": "retries-child", "start": "call", "items": {
        "call": {"type": "workflow", "workflow": "fails-first", "inputs": {"n": "ctx.attempt - 1"},
                 "retry": {"max_attempts": 2, "backoff_ms": 0}, "next": "e"},
        "e": {"type": "end"}}}),
    )
    .await;
    let id = start(&http, "retries-child", json!({})).await;
    let e = wait_final(&http, &id, LONG).await;
    assert_eq!(e["state"], "completed", "{e}");
    let children = children_of(&node, &id, "fails-first").await;
    assert_eq!(children.len(), 2, "a new child for the retry: {children:?}");
    node.stop().await;
}

/// Issue 7 item 12, foreach: a retried `foreach` starts new children (its
/// failed ones keep their ids, the retry's get new ones).
async fn a_retried_foreach_starts_new_children(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let node = start_node(&db, |_| {}).await;
    let http = Http::new(&node.url());
    import(
        &http,
        &json!({"id": "fails-first", "inputs": {"n": "number"}, "start": "a", "items": {
        "a": {"type": "task", "script": "if (n < 1) throw new Error('not yet');", "next": "e"},
        "e": {"type": "end"}}}),
    )
    .await;
    import(
        &http,
        &json!({"id": "retries-each", "variables": {"xs": [1, 2]}, "start": "each", "items": {
        "each": {"type": "foreach", "over": "xs", "as": "x", "workflow": "fails-first",
                 "inputs": {"n": "ctx.attempt - 1"}, "parallel": true,
                 "retry": {"max_attempts": 2, "backoff_ms": 0}, "next": "e"},
        "e": {"type": "end"}}}),
    )
    .await;
    let id = start(&http, "retries-each", json!({})).await;
    let e = wait_final(&http, &id, LONG).await;
    assert_eq!(e["state"], "completed", "{e}");
    let children = children_of(&node, &id, "fails-first").await;
    let completed = children.iter().filter(|(_, s)| s == "completed").count();
    assert_eq!(
        (children.len(), completed),
        (4, 2),
        "two failed, two new for the retry: {children:?}"
    );
    node.stop().await;
}

/// The children of `parent` running `workflow`: (id, state).
async fn children_of(
    node: &baton::NodeHandle,
    parent: &str,
    workflow: &str,
) -> Vec<(String, String)> {
    node.store()
        .executions(baton_actors::store::ExecutionFilter {
            workflow_id: Some(workflow.into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("children")
        .into_iter()
        .filter(|c| c.parent_id.as_deref() == Some(parent))
        .map(|c| (c.id, c.state))
        .collect()
}
