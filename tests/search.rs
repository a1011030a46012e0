//! Finding and removing executions: the search across workflows with its
//! cursor, the item log in pages, `DELETE /api/executions/{eid}` and
//! retention, on SQLite, PostgreSQL and MariaDB.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use baton_actors::store::entities::{execution, item_log, signal};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, ExprTrait, PaginatorTrait, QueryFilter};
use serde_json::{json, Value};

use crate::on_all_backends;
use crate::util::*;

on_all_backends!(
    the_search_filters_pages_and_counts_children,
    the_item_log_comes_in_pages,
    only_a_finished_execution_outside_a_running_family_is_deleted,
    retention_purges_ten_thousand_old_executions_and_nothing_else,
);

const LONG: Duration = Duration::from_secs(30);

async fn setup(http: &Http) {
    import(
        http,
        &json!({"id": "quick", "variables": {"x": 0}, "start": "t", "items": {
            "t": {"type": "task", "script": "x = 1;", "next": "e"}, "e": {"type": "end"}}}),
    )
    .await;
    import(
        http,
        &json!({"id": "napper", "start": "w", "items": {
            "w": {"type": "signal", "name": "go", "next": "e"}, "e": {"type": "end"}}}),
    )
    .await;
    // Waits for `go` when x is 2, ends at once otherwise.
    import(
        http,
        &json!({"id": "maybe", "inputs": {"x": "number"}, "start": "d", "items": {
            "d": {"type": "decision", "condition": "x == 2", "then": "w", "else": "e"},
            "w": {"type": "signal", "name": "go", "next": "e"}, "e": {"type": "end"}}}),
    )
    .await;
    import(
        http,
        &json!({"id": "fan", "variables": {"xs": [1, 2]}, "start": "each", "items": {
            "each": {"type": "foreach", "over": "xs", "as": "x", "workflow": "maybe",
                     "inputs": {"x": "x"}, "parallel": true, "next": "e"},
            "e": {"type": "end"}}}),
    )
    .await;
    // Fails when x is 2; a foreach over [1, 2] of it fails its parent.
    import(
        http,
        &json!({"id": "fail-on-2", "inputs": {"x": "number"}, "start": "d", "items": {
            "d": {"type": "decision", "condition": "x == 2", "then": "bad", "else": "e"},
            "bad": {"type": "end", "fail": "'two'"}, "e": {"type": "end"}}}),
    )
    .await;
    import(
        http,
        &json!({"id": "fan-fails", "variables": {"xs": [1, 2]}, "start": "each", "items": {
            "each": {"type": "foreach", "over": "xs", "as": "x", "workflow": "fail-on-2",
                     "inputs": {"x": "x"}, "next": "e"},
            "e": {"type": "end"}}}),
    )
    .await;
    import(
        http,
        &json!({"id": "spawner", "variables": {"kid": ""}, "start": "s", "items": {
            "s": {"type": "workflow", "workflow": "napper", "async": true,
                  "outputs": {"kid": "execution_id"}, "next": "e"},
            "e": {"type": "end"}}}),
    )
    .await;
}

/// Every page of a search, following `next_cursor`.
async fn all_pages(http: &Http, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let path = match &cursor {
            Some(c) => format!("/api/executions?{query}&cursor={c}"),
            None => format!("/api/executions?{query}"),
        };
        let r = http.get(&path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        out.extend(r.json["executions"].as_array().cloned().unwrap_or_default());
        match r.json["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
    panic!("the pages never ended");
}

fn ids(views: &[Value]) -> Vec<String> {
    views
        .iter()
        .map(|v| v["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn wait_state(http: &Http, id: &str, want: &str) {
    eventually(&format!("{id} is {want}"), LONG, || async {
        http.get(&format!("/api/executions/{id}")).await.json["state"] == want
    })
    .await;
}

async fn the_search_filters_pages_and_counts_children(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let node = start_node(&db, |_| {}).await;
    let http = Http::new(&node.url());
    setup(&http).await;
    let mut quick = Vec::new();
    for _ in 0..7 {
        quick.push(start(&http, "quick", json!({})).await);
    }
    let nappers = [
        start(&http, "napper", json!({})).await,
        start(&http, "napper", json!({})).await,
    ];
    let fan = start(&http, "fan", json!({})).await;
    for id in quick.iter() {
        wait_state(&http, id, "completed").await;
    }
    for id in nappers.iter().chain([&fan]) {
        wait_state(&http, id, "waiting-signal").await;
    }
    // Server-made ids are UUIDv7: their text sorts by creation time.
    for id in &quick {
        assert_eq!(id.len(), 36, "{id}");
        assert_eq!(&id[14..15], "7", "a version 7 UUID: {id}");
    }
    let mut sorted = quick.clone();
    sorted.sort();
    assert_eq!(sorted, quick, "ids created one after another sort in order");

    // Everything, newest first, three at a time: each execution once.
    let every = all_pages(&http, "limit=3").await;
    let total = 7 + 2 + 1 + 2; // quick, nappers, fan and its two children
    assert_eq!(every.len(), total, "{every:?}");
    assert_eq!(ids(&every).into_iter().collect::<HashSet<_>>().len(), total);
    let created: Vec<&str> = every
        .iter()
        .map(|v| v["created_at"].as_str().unwrap_or_default())
        .collect();
    assert!(
        created.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {created:?}"
    );
    let first = http.get("/api/executions?limit=3").await;
    assert_eq!(first.json["executions"].as_array().map(Vec::len), Some(3));
    // A page taken after more executions were created does not shift: the
    // cursor continues below the last row seen.
    let cursor = first.json["next_cursor"]
        .as_str()
        .expect("a next cursor")
        .to_owned();
    let late = start(&http, "quick", json!({})).await;
    let second = http
        .get(&format!("/api/executions?limit=3&cursor={cursor}"))
        .await;
    assert_eq!(
        ids(second.json["executions"].as_array().unwrap()),
        ids(&every[3..6])
    );
    assert!(!ids(&all_pages(&http, "limit=100").await).is_empty());
    wait_state(&http, &late, "completed").await;

    // Each filter.
    let q = ids(&all_pages(&http, "workflow=quick&limit=2").await);
    let mut want: Vec<String> = quick.iter().cloned().chain([late.clone()]).collect();
    want.reverse();
    assert_eq!(q, want, "the quick ones, newest first");
    // Two nappers, the fan and its child 2 (which may still be on its way).
    eventually("four executions wait", LONG, || async {
        all_pages(&http, "state=waiting-signal").await.len() == 4
    })
    .await;
    let kids = all_pages(&http, &format!("parent={fan}")).await;
    assert_eq!(kids.len(), 2, "{kids:?}");
    assert!(kids
        .iter()
        .all(|k| k["parent_id"] == fan.as_str() && k["workflow_id"] == "maybe"));
    let owned = all_pages(&http, &format!("node={}", node.node_id())).await;
    assert_eq!(owned.len(), total + 1);
    assert!(all_pages(&http, "node=nobody").await.is_empty());
    let both = ids(&all_pages(&http, "workflow=napper&state=waiting-signal").await);
    assert_eq!(both, vec![nappers[1].clone(), nappers[0].clone()]);
    assert!(all_pages(&http, "created_after=2999-01-01T00:00:00Z")
        .await
        .is_empty());
    assert_eq!(
        all_pages(
            &http,
            "created_after=2000-01-01T00:00:00Z&created_before=2999-01-01T00:00:00%2B02:00"
        )
        .await
        .len(),
        total + 1
    );
    assert!(all_pages(&http, "created_before=2000-01-01T00:00:00Z")
        .await
        .is_empty());

    // The view: parent and children counts.
    let f = http.get(&format!("/api/executions/{fan}")).await.json;
    assert_eq!(f["children"], json!({"total": 2, "unfinished": 1}), "{f}");
    assert_eq!(f["parent_id"], Value::Null);
    let q0 = http
        .get(&format!("/api/executions/{}", quick[0]))
        .await
        .json;
    assert_eq!(q0["children"], json!({"total": 0, "unfinished": 0}), "{q0}");

    // Bad queries name the parameter.
    for (query, param) in [
        ("state=sleeping", "state"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("cursor=zz", "cursor"),
        ("cursor=6c6f673a31", "cursor"), // a log cursor
        ("created_after=yesterday", "created_after"),
        ("created_before=2026-13-01T00:00:00Z", "created_before"),
    ] {
        let r = http.get(&format!("/api/executions?{query}")).await;
        assert_eq!(r.status, 400, "{query}: {}", r.text);
        assert_eq!(
            r.json["error"]["details"][0]["path"], param,
            "{query}: {}",
            r.text
        );
    }
    let r = http.get("/api/executions?colour=red").await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("colour"), "{}", r.text);

    // The per-workflow list pages by the same cursor, in a header.
    let r = http.get("/api/workflows/quick/executions?limit=5").await;
    assert_eq!(r.json.as_array().map(Vec::len), Some(5));
    let next = r.header("Baton-Next-Cursor").expect("a next cursor");
    let r = http
        .get(&format!(
            "/api/workflows/quick/executions?limit=5&cursor={next}"
        ))
        .await;
    assert_eq!(r.json.as_array().map(Vec::len), Some(3), "{}", r.text);
    assert_eq!(r.header("Baton-Next-Cursor"), None, "the last page");
    node.stop().await;
}

async fn the_item_log_comes_in_pages(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let node = start_node(&db, |_| {}).await;
    let http = Http::new(&node.url());
    let items: serde_json::Map<String, Value> = (0..6)
        .map(|i| {
            let next = if i == 5 {
                "e".to_owned()
            } else {
                format!("t{}", i + 1)
            };
            (
                format!("t{i}"),
                json!({"type": "task", "script": "n = n + 1;", "next": next}),
            )
        })
        .chain([("e".to_owned(), json!({"type": "end"}))])
        .collect();
    import(
        &http,
        &json!({"id": "six", "variables": {"n": 0}, "start": "t0", "items": items}),
    )
    .await;
    let id = start(&http, "six", json!({})).await;
    let e = wait_final(&http, &id, LONG).await;
    assert_eq!(e["state"], "completed", "{e}");
    let whole = http.get(&format!("/api/executions/{id}/logs")).await;
    let whole = whole.json.as_array().cloned().expect("a log");
    assert!(
        whole.len() >= 13,
        "started and completed for 7 items: {whole:?}"
    );
    let mut paged = Vec::new();
    let mut path = format!("/api/executions/{id}/logs?limit=4");
    loop {
        let r = http.get(&path).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let page = r.json.as_array().cloned().unwrap_or_default();
        assert!(page.len() <= 4);
        paged.extend(page);
        match r.header("Baton-Next-Cursor") {
            Some(c) => path = format!("/api/executions/{id}/logs?limit=4&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(paged, whole, "the pages put together are the log");
    for query in ["limit=0", "limit=10001", "cursor=nothex", "after=3"] {
        let r = http
            .get(&format!("/api/executions/{id}/logs?{query}"))
            .await;
        assert_eq!(r.status, 400, "{query}: {}", r.text);
    }
    node.stop().await;
}

async fn only_a_finished_execution_outside_a_running_family_is_deleted(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let node = start_node(&db, |_| {}).await;
    let http = Http::new(&node.url());
    setup(&http).await;
    let del = |id: String| {
        let http = http.clone();
        async move {
            http.request("DELETE", &format!("/api/executions/{id}"), &[], None)
                .await
        }
    };
    // A finished one goes, with its log; then it is unknown.
    let done = start(&http, "quick", json!({})).await;
    wait_state(&http, &done, "completed").await;
    let r = del(done.clone()).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(
        http.get(&format!("/api/executions/{done}")).await.status,
        404
    );
    assert_eq!(
        http.get(&format!("/api/executions/{done}/logs"))
            .await
            .status,
        404
    );
    let store = node.store();
    let left = store.item_log(&done).await.expect("log");
    assert!(left.is_empty(), "its log went with it: {left:?}");
    assert_eq!(del(done.clone()).await.status, 404);

    // An unfinished one stays.
    let napper = start(&http, "napper", json!({})).await;
    wait_state(&http, &napper, "waiting-signal").await;
    let r = del(napper.clone()).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("waiting-signal"), "{}", r.text);

    // A finished child of a waiting parent stays: the parent reads it.
    let fan = start(&http, "fan", json!({})).await;
    wait_state(&http, &fan, "waiting-signal").await;
    let kids = http
        .get(&format!("/api/executions?parent={fan}"))
        .await
        .json["executions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let finished_kid = eventually_value(&http, &fan).await;
    let r = del(finished_kid.clone()).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains(&fan), "names the parent: {}", r.text);
    assert_eq!(del(fan.clone()).await.status, 409);
    // A finished parent with an unfinished (async) child stays too.
    let spawner = start(&http, "spawner", json!({})).await;
    let s = wait_final(&http, &spawner, LONG).await;
    assert_eq!(s["state"], "completed", "{s}");
    let kid = s["variables"]["kid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    wait_state(&http, &kid, "waiting-signal").await;
    let r = del(spawner.clone()).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("1 unfinished child"), "{}", r.text);

    // Once the families finish, they go.
    let waiting_kid = kids
        .iter()
        .map(|k| k["id"].as_str().unwrap_or_default().to_owned())
        .find(|k| *k != finished_kid)
        .expect("the waiting child");
    for id in [&waiting_kid, &kid] {
        let r = http
            .post(&format!("/api/executions/{id}/signals/go"), &json!({}))
            .await;
        assert!(r.status < 300, "{}", r.text);
    }
    assert_eq!(wait_final(&http, &fan, LONG).await["state"], "completed");
    wait_state(&http, &kid, "completed").await;
    assert_eq!(del(fan.clone()).await.status, 204);
    assert_eq!(del(finished_kid).await.status, 204, "its parent is gone");
    assert_eq!(del(spawner).await.status, 204);
    // The other child of the deleted parent stays until it is deleted.
    assert_eq!(
        http.get(&format!("/api/executions/{waiting_kid}"))
            .await
            .status,
        200
    );

    // A failed parent may be resumed, which runs its foreach again and
    // reads its children: they stay while it is failed.
    let parent = start(&http, "fan-fails", json!({})).await;
    assert_eq!(wait_final(&http, &parent, LONG).await["state"], "failed");
    let ok_kid = http
        .get(&format!("/api/executions?parent={parent}&state=completed"))
        .await
        .json["executions"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let r = del(ok_kid.clone()).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains(&parent), "{}", r.text);
    assert_eq!(
        del(parent).await.status,
        204,
        "a failed parent with finished children goes"
    );
    assert_eq!(del(ok_kid).await.status, 204);
    node.stop().await;
}

/// The child of `fan` that finished (x = 1), once it has.
async fn eventually_value(http: &Http, fan: &str) -> String {
    let path = format!("/api/executions?parent={fan}&state=completed");
    eventually("one child of the fan finished", LONG, || async {
        http.get(&path).await.json["executions"][0]["id"].is_string()
    })
    .await;
    http.get(&path).await.json["executions"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// An old finished (or not) execution row, as a node long gone left it.
fn row(
    id: String,
    state: &str,
    parent: Option<String>,
    ended_at: Option<i64>,
) -> execution::ActiveModel {
    execution::ActiveModel {
        id: Set(id),
        workflow_id: Set("quick".into()),
        workflow_version: Set(1),
        parent_id: Set(parent),
        state: Set(state.into()),
        inputs: Set("{}".into()),
        variables: Set("{\"x\":1}".into()),
        outputs: Set(Some("{}".into())),
        current_item: Set(Some("e".into())),
        step: Set(2),
        attempt: Set(1),
        owner_node: Set(Some("gone".into())),
        owner_epoch: Set(1),
        error: Set(None),
        wait_until: Set(None),
        wait_signal: Set(if state == "waiting-signal" {
            Some("go".into())
        } else {
            None
        }),
        created_at: Set(ended_at.unwrap_or(0) - 1000),
        started_at: Set(Some(ended_at.unwrap_or(0) - 1000)),
        ended_at: Set(ended_at),
        updated_at: Set(ended_at.unwrap_or(0)),
        run_token: Set(1),
        item_retries: Set(0),
        signaled: Set(0),
    }
}

fn log_row(execution: &str) -> item_log::ActiveModel {
    item_log::ActiveModel {
        execution_id: Set(execution.to_owned()),
        item: Set("t".into()),
        step: Set(1),
        attempt: Set(1),
        event: Set("completed".into()),
        node: Set("gone".into()),
        time: Set(0),
        message: Set(None),
        completed_step: Set(Some(1)),
        ..Default::default()
    }
}

async fn retention_purges_ten_thousand_old_executions_and_nothing_else(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    // Two active nodes of one cluster purge, taking turns.
    let policy = |id: &'static str| {
        move |c: &mut baton::Config| {
            c.node.id = Some(id.into());
            c.cluster.enabled = true;
            c.cluster.active_nodes = 2;
            c.cluster.heartbeat_interval_ms = 200;
            c.retention.finished_after_ms = 3_600_000;
            c.retention.batch = 500;
            c.retention.interval_ms = 50;
            // Off while the old rows are written; `on` turns it on.
            c.retention.enabled = false;
        }
    };
    let seed = start_node(&db, policy("seeder")).await;
    let http = Http::new(&seed.url());
    eventually("the seeder runs", LONG, || async {
        http.get("/api/healthstatus").await.status == 200
    })
    .await;
    setup(&http).await;
    let store = seed.store();
    let now = store.db_now_ms().await.expect("clock");
    let old = now - 2 * 3_600_000;
    const N: usize = 10_000;
    let victims: Vec<String> = (0..N).map(|i| format!("old-{i:05}")).collect();
    for chunk in victims.chunks(500) {
        let rows: Vec<_> = chunk
            .iter()
            .enumerate()
            .map(|(i, id)| {
                row(
                    id.clone(),
                    ["completed", "failed", "canceled"][i % 3],
                    None,
                    Some(old),
                )
            })
            .collect();
        let logs: Vec<_> = chunk.iter().map(|id| log_row(id)).collect();
        let signals: Vec<_> = chunk
            .iter()
            .map(|id| signal::ActiveModel {
                execution_id: Set(id.clone()),
                name: Set("late".into()),
                payload: Set("null".into()),
                created_at: Set(old),
                consumed_at: Set(None),
                ..Default::default()
            })
            .collect();
        store
            .db()
            .run(move |c| async move {
                execution::Entity::insert_many(rows).exec(&c).await?;
                item_log::Entity::insert_many(logs).exec(&c).await?;
                signal::Entity::insert_many(signals).exec(&c).await?;
                Ok(())
            })
            .await
            .expect("old rows written");
    }
    // What must stay: old finished rows of unfinished families, a recent
    // one, unfinished ones, and whatever runs meanwhile.
    let keep = vec![
        row("waiting-parent".into(), "waiting-signal", None, None),
        row(
            "child-of-waiting".into(),
            "completed",
            Some("waiting-parent".into()),
            Some(old),
        ),
        row("finished-parent".into(), "completed", None, Some(old)),
        row(
            "unfinished-child".into(),
            "waiting-signal",
            Some("finished-parent".into()),
            None,
        ),
        row("recent".into(), "completed", None, Some(now)),
        // A failed parent may be resumed and read its children again.
        row("failed-parent".into(), "failed", None, Some(now)),
        row(
            "child-of-failed".into(),
            "completed",
            Some("failed-parent".into()),
            Some(old),
        ),
    ];
    let kept: Vec<String> = keep.iter().map(|r| r.id.clone().unwrap()).collect();
    // A signal sent to an execution that is gone.
    let orphan = signal::ActiveModel {
        execution_id: Set("deleted-long-ago".into()),
        name: Set("late".into()),
        payload: Set("null".into()),
        created_at: Set(old),
        consumed_at: Set(None),
        ..Default::default()
    };
    store
        .db()
        .run(move |c| async move {
            execution::Entity::insert_many(keep).exec(&c).await?;
            signal::Entity::insert(orphan).exec(&c).await?;
            Ok(())
        })
        .await
        .expect("kept rows written");
    seed.stop().await;

    let on = |id: &'static str| {
        move |c: &mut baton::Config| {
            policy(id)(c);
            c.retention.enabled = true;
        }
    };
    let a = start_node(&db, on("purger-a")).await;
    let b2 = start_node(&db, on("purger-b")).await;
    let ha = Http::new(&a.url());
    let hb = Http::new(&b2.url());
    eventually("both nodes are active", LONG, || async {
        ha.get("/api/healthstatus").await.status == 200
            && hb.get("/api/healthstatus").await.status == 200
    })
    .await;
    // Executions started while the purge runs finish and stay.
    let mut live = Vec::new();
    for i in 0..20 {
        let h = if i % 2 == 0 { &ha } else { &hb };
        live.push(start(h, "quick", json!({})).await);
    }
    let purged = || {
        a.metrics().purged_executions.load(Ordering::Relaxed)
            + b2.metrics().purged_executions.load(Ordering::Relaxed)
    };
    eventually(
        "every old execution is purged",
        Duration::from_secs(120),
        || async { purged() >= N as u64 },
    )
    .await;
    for id in &live {
        assert_eq!(wait_final(&ha, id, LONG).await["state"], "completed");
    }
    let store = a.store();
    let (executions, logs, signals) = store
        .db()
        .run(|c| async move {
            let e = execution::Entity::find()
                .filter(execution::Column::Id.like("old-%"))
                .count(&c)
                .await?;
            let l = item_log::Entity::find()
                .filter(item_log::Column::ExecutionId.like("old-%"))
                .count(&c)
                .await?;
            let s = signal::Entity::find()
                .filter(
                    signal::Column::ExecutionId
                        .like("old-%")
                        .or(signal::Column::ExecutionId.eq("deleted-long-ago")),
                )
                .count(&c)
                .await?;
            Ok((e, l, s))
        })
        .await
        .expect("counts");
    assert_eq!(
        (executions, logs, signals),
        (0, 0, 0),
        "the old rows are gone with their logs and signals"
    );
    assert_eq!(purged(), N as u64, "each purged once, by one node");
    for id in kept.iter().chain(live.iter()) {
        assert!(
            store.execution(id).await.expect("read").is_some(),
            "{id} was purged"
        );
    }
    for id in &live {
        assert!(
            !store.item_log(id).await.expect("log").is_empty(),
            "{id} keeps its log"
        );
    }
    let m = ha.get("/metrics").await.text;
    assert!(
        m.contains("baton_purged_executions_total{node=\"purger-a\"}"),
        "{m}"
    );
    a.stop().await;
    b2.stop().await;
}

/// Every search filter is an index range scan on PostgreSQL (the plans
/// behind `baton bench search`'s figures), on a table large enough for the
/// planner to choose, and below a cursor. A sort is allowed only over the
/// rows an index scan bounded (a parent's few children).
#[actix_rt::test]
async fn postgres_every_search_is_an_index_scan() {
    let Some(db) = TestDb::create(Backend::Postgres) else {
        return;
    };
    let node = start_node(&db, |c| c.retention.enabled = false).await;
    let base = baton::bench::search::seed(node.store(), 20_000)
        .await
        .expect("seeded");
    for (name, _, mut filter) in baton::bench::search::filters() {
        filter.limit = 100;
        filter.below = Some(baton_actors::store::PageKey {
            created_at: base + 10_000,
            id: "bench-0001".into(),
        });
        let plan = baton::bench::search::explain(node.store(), &filter)
            .await
            .expect("explain");
        assert!(plan.contains("Index Scan"), "{name}:\n{plan}");
        assert!(
            !plan.contains("Seq Scan"),
            "{name} scans the table:\n{plan}"
        );
        assert!(
            !plan.contains("Sort") || plan.contains("Bitmap Index Scan"),
            "{name} sorts what no index bounded:\n{plan}"
        );
    }
    node.stop().await;
}
