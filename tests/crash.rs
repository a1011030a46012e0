//! Real crashes: the `baton` binary is killed with SIGKILL mid-run and
//! started again on the same database (SQLite, PostgreSQL, MariaDB). Every
//! execution completes, each step has exactly one completion record, and
//! only the item that was running when the process died runs again.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::on_all_backends;
use crate::util::*;

on_all_backends!(
    kill_dash_nine_mid_run_loses_nothing_and_reruns_only_the_running_item,
    sigterm_finishes_the_running_item_and_restart_continues,
    a_row_that_went_backwards_is_resumed_not_skipped
);

const N: usize = 6;
const LONG: Duration = Duration::from_secs(30);

async fn logs(http: &Http, id: &str) -> Vec<Value> {
    http.get(&format!("/api/executions/{id}/logs"))
        .await
        .json
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn kill_dash_nine_mid_run_loses_nothing_and_reruns_only_the_running_item(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let env = [
        ("BATON_DATABASE__URL", db.url.clone()),
        ("BATON_NODE__ID", "crashy".to_owned()),
    ];
    let mut first = serve(&env);
    let http = Http::new(&first.url);
    import_slow_steps(&http).await;
    let mut ids = Vec::new();
    for _ in 0..N {
        ids.push(start(&http, "slow-steps", json!({"ms": 400})).await);
    }
    eventually(
        "every execution is past its first item",
        Duration::from_secs(30),
        || async {
            for id in &ids {
                if !logs(&http, id)
                    .await
                    .iter()
                    .any(|l| l["event"] == "completed")
                {
                    return false;
                }
            }
            true
        },
    )
    .await;
    first.kill9();

    // What was running at the moment of the kill, read from the store.
    let s = store(&db).await;
    let mut running_at_kill: HashMap<String, (i64, String)> = HashMap::new();
    for id in &ids {
        let row = s.execution(id).await.expect("read").expect("row");
        assert_eq!(row.state, "running", "{id} was mid-run when killed");
        running_at_kill.insert(
            id.clone(),
            (row.step, row.current_item.clone().unwrap_or_default()),
        );
    }

    let mut second = serve(&env);
    let http = Http::new(&second.url);
    for id in &ids {
        let e = wait_final(&http, id, Duration::from_secs(60)).await;
        assert_eq!(e["state"], "completed", "{e}");
        assert_eq!(e["outputs"]["count"], 3, "{e}");
        let log = logs(&http, id).await;
        let (kill_step, kill_item) = &running_at_kill[id];
        for step in 1..=7i64 {
            let of = |event: &str| {
                log.iter()
                    .filter(|l| l["step"] == step && l["event"] == event)
                    .count()
            };
            assert_eq!(
                of("completed"),
                1,
                "{id} step {step}: exactly one completion record: {log:?}"
            );
            if step == *kill_step {
                assert_eq!(
                    of("started"),
                    2,
                    "{id}: the interrupted item {kill_item} ran again: {log:?}"
                );
                assert_eq!(of("resumed"), 1);
                let rerun = log
                    .iter()
                    .find(|l| l["step"] == step && l["event"] == "started" && l["attempt"] == 2);
                assert!(rerun.is_some(), "re-run as attempt 2: {log:?}");
            } else {
                assert_eq!(of("started"), 1, "{id} step {step} ran once: {log:?}");
            }
        }
    }
    let status = second.terminate().expect("terminate");
    assert!(status.success(), "graceful exit: {status:?}");
}

async fn sigterm_finishes_the_running_item_and_restart_continues(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let env = [
        ("BATON_DATABASE__URL", db.url.clone()),
        ("BATON_NODE__ID", "planned".to_owned()),
    ];
    let mut first = serve(&env);
    let http = Http::new(&first.url);
    import_slow_steps(&http).await;
    let id = start(&http, "slow-steps", json!({"ms": 1000})).await;
    // Running, not only recorded as started: the node counts the item
    // begun (a new execution's run needs no claim of its own: its insert
    // was the claim, so the row does not say it).
    eventually("s1 runs", Duration::from_secs(30), || async {
        let m = http.get("/metrics").await;
        metric_value(&m.text, "baton_items_started_total", &[]).is_some_and(|v| v >= 1.0)
    })
    .await;
    let status = first.terminate().expect("terminate");
    assert!(status.success(), "{status:?}");
    let s = store(&db).await;
    let row = s.execution(&id).await.expect("read").expect("row");
    assert_eq!(
        row.current_item.as_deref(),
        Some("c1"),
        "the running sleep finished and was checkpointed before exit"
    );

    let second = serve(&env);
    let http = Http::new(&second.url);
    let e = wait_final(&http, &id, Duration::from_secs(60)).await;
    assert_eq!(
        (e["state"].clone(), e["outputs"]["count"].clone()),
        (json!("completed"), json!(3))
    );
    let log = logs(&http, &id).await;
    let s1_runs = log
        .iter()
        .filter(|l| l["item"] == "s1" && l["event"] == "started")
        .count();
    assert_eq!(
        s1_runs, 1,
        "the item running at SIGTERM was not run again: {log:?}"
    );
}

/// Issue 13 item 4: after a database failover with asynchronous
/// replication (or a restore), commits the node saw acknowledged can be
/// missing: the execution row is back at an earlier step and the log
/// records of the lost steps are gone, while the node's actor still holds
/// the later state. Its next write is refused (the fence names the step
/// it last committed), it stops, and the rescan resumes the execution
/// from the row as it is: the lost steps run again, each recorded
/// completed exactly once, none skipped. Before, the actor wrote its later
/// state over the row and the lost steps had no completion record.
async fn a_row_that_went_backwards_is_resumed_not_skipped(b: Backend) {
    use baton_actors::store::entities::{execution, item_log};
    use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter};
    let Some(db) = TestDb::create(b) else { return };
    let node = start_node(&db, |_| {}).await;
    let http = Http::new(&node.url());
    import_slow_steps(&http).await;
    let id = start(&http, "slow-steps", json!({"ms": 600})).await;
    let conn = sea_orm::Database::connect(db.url.as_str())
        .await
        .expect("connect");
    let at_step = |step: i64| {
        let conn = conn.clone();
        let id = id.clone();
        move || {
            let (conn, id) = (conn.clone(), id.clone());
            async move {
                execution::Entity::find_by_id(id)
                    .one(&conn)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|r| r.step == step)
            }
        }
    };
    // Sleeping in s2 (step 3): what the new primary will hold.
    eventually("the run is at step 3", LONG, at_step(3)).await;
    let snapshot = execution::Entity::find_by_id(id.clone())
        .one(&conn)
        .await
        .expect("read")
        .expect("row");
    let last_log = item_log::Entity::find()
        .filter(item_log::Column::ExecutionId.eq(id.as_str()))
        .all(&conn)
        .await
        .expect("log")
        .iter()
        .map(|l| l.id)
        .max()
        .unwrap_or(0);
    // Sleeping in s3 (step 5): two checkpoints later, they are lost.
    eventually("the run is at step 5", LONG, at_step(5)).await;
    let mut back: execution::ActiveModel = snapshot.clone().into();
    back = back.reset_all();
    back.update(&conn)
        .await
        .expect("the row goes back to step 3");
    item_log::Entity::delete_many()
        .filter(item_log::Column::ExecutionId.eq(id.as_str()))
        .filter(item_log::Column::Id.gt(last_log))
        .exec(&conn)
        .await
        .expect("the lost steps' records go");

    let e = wait_final(&http, &id, LONG).await;
    assert_eq!(
        (e["state"].clone(), e["outputs"]["count"].clone()),
        (json!("completed"), json!(3)),
        "{e}"
    );
    let log = logs(&http, &id).await;
    assert_runs(&id, &log, SLOW_STEPS, 1);
    assert!(
        log.iter()
            .any(|l| l["event"] == "resumed" && l["step"] == 3),
        "the step the row went back to is resumed: {log:?}"
    );
    conn.close().await.expect("close");
    node.stop().await;
}
