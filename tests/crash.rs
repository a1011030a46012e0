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
    sigterm_finishes_the_running_item_and_restart_continues
);

const N: usize = 6;

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
    // Running, not only recorded as started: its run has claimed the row
    // (the item starts right after the claim).
    let s = store(&db).await;
    eventually("s1 runs", Duration::from_secs(30), || async {
        s.execution(&id)
            .await
            .ok()
            .flatten()
            .is_some_and(|r| r.run_token >= 1 && r.current_item.as_deref() == Some("s1"))
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
