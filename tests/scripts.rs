//! Script limits: an infinite loop, a memory bomb, a thrown exception and
//! a syntax error each fail (or are refused) with a clear error, while the
//! node and other executions keep running.

use std::time::Duration;

use serde_json::json;

use crate::util::*;

fn one_task(id: &str, script: &str) -> serde_json::Value {
    json!({"id": id, "variables": {"x": 0}, "outputs": {"x": "number"}, "start": "a", "items": {
        "a": {"type": "task", "script": script, "next": "e"},
        "e": {"type": "end"}}})
}

#[actix_rt::test]
async fn runaway_scripts_fail_their_item_not_the_node() {
    let db = TestDb::create(Backend::Sqlite).expect("sqlite");
    let node = start_node(&db, |c| {
        c.scripts.timeout_ms = 300;
        c.scripts.memory_limit_mb = 16;
    })
    .await;
    let http = Http::new(&node.url());
    import(&http, &one_task("spin", "while (true) {}")).await;
    import(
        &http,
        &one_task("nested", "for (;;) { for (var i = 0; i < 1e9; i++) {} }"),
    )
    .await;
    import(
        &http,
        &one_task(
            "bomb",
            "var a = []; while (true) { a.push(new Array(100000).fill(7)); }",
        ),
    )
    .await;
    import(
        &http,
        &one_task("strbomb", "var s = 'x'; while (true) { s = s + s; }"),
    )
    .await;
    // Small allocations to the last byte, in a global the context keeps.
    import(
        &http,
        &one_task("chain", "var h = null; while (true) { h = {n: h}; }"),
    )
    .await;
    import(
        &http,
        &one_task("throws", "throw new RangeError('x out of range');"),
    )
    .await;
    import(&http, &one_task("fine", "x = 41 + 1;")).await;
    // A loop runs on a script thread, never on the calling thread.
    import(
        &http,
        &one_task("counts", "for (let i = 0; i < 42; i++) { x = x + 1; }"),
    )
    .await;

    let spin = start(&http, "spin", json!({})).await;
    let nested = start(&http, "nested", json!({})).await;
    let bomb = start(&http, "bomb", json!({})).await;
    let strbomb = start(&http, "strbomb", json!({})).await;
    let chain = start(&http, "chain", json!({})).await;
    let throws = start(&http, "throws", json!({})).await;
    let fine = start(&http, "fine", json!({})).await;
    let t = Duration::from_secs(30);
    for id in [&spin, &nested] {
        let e = wait_final(&http, id, t).await;
        assert_eq!(e["state"], "failed");
        assert_eq!(
            e["error"],
            "script timed out after 300 ms (scripts.timeout_ms)"
        );
    }
    for id in [&bomb, &strbomb, &chain] {
        let e = wait_final(&http, id, t).await;
        assert_eq!(e["state"], "failed");
        // Whatever QuickJS managed to throw (`null`, when the heap had
        // no room left even for the error).
        assert_eq!(
            e["error"],
            "script ran out of memory (limit 16 MB, scripts.memory_limit_mb)"
        );
    }
    let e = wait_final(&http, &throws, t).await;
    assert_eq!(e["error"], "RangeError: x out of range");
    let e = wait_final(&http, &fine, t).await;
    assert_eq!(
        (e["state"].clone(), e["outputs"]["x"].clone()),
        (json!("completed"), json!(42))
    );
    // Counted by /metrics (this process's script threads).
    let metrics = http.get("/metrics").await.text;
    let timeouts = metric_value(&metrics, "baton_script_timeouts_total{", &[]);
    assert!(timeouts.is_some_and(|n| n >= 2.0), "{metrics}");
    // The node still runs scripts after all that, on every script thread
    // (a bomb's heap is given back with its context).
    let mut again = Vec::new();
    for _ in 0..8 {
        again.push(start(&http, "counts", json!({})).await);
    }
    for id in &again {
        let e = wait_final(&http, id, t).await;
        assert_eq!(
            (e["state"].clone(), e["outputs"]["x"].clone()),
            (json!("completed"), json!(42)),
            "{e}"
        );
    }
    assert_eq!(http.get("/api/healthstatus").await.status, 200);
    node.stop().await;
}

#[actix_rt::test]
async fn scripts_see_declared_names_and_ctx_and_write_back_only_declared_ones() {
    let db = TestDb::create(Backend::Sqlite).expect("sqlite");
    let node = start_node(&db, |_| {}).await;
    let http = Http::new(&node.url());
    import(&http, &json!({"id": "scope", "inputs": {"n": "number"}, "outputs": {"key": "string"},
        "variables": {"v": 1, "seen": null}, "start": "a", "items": {
        "a": {"type": "task", "script": "var undeclared = 5; key = ctx.idempotency_key; seen = [n, v, ctx.item, ctx.attempt, typeof undeclared]; v = v + n; n = 100;", "next": "b"},
        "b": {"type": "task", "script": "v = v + (typeof undeclared === 'undefined' ? 1000 : 0);", "next": "e"},
        "e": {"type": "end"}}}))
    .await;
    let id = start(&http, "scope", json!({"n": 2})).await;
    let e = wait_final(&http, &id, Duration::from_secs(30)).await;
    assert_eq!(e["state"], "completed", "{e}");
    assert_eq!(e["outputs"]["key"], format!("{id}/a"));
    assert_eq!(e["variables"]["seen"], json!([2, 1, "a", 1, "number"]));
    assert_eq!(
        e["variables"]["v"], 1003,
        "v = 1 + 2, then + 1000: undeclared globals do not survive the item"
    );
    assert_eq!(e["inputs"]["n"], 2, "inputs are read-only");
    assert!(e["variables"].get("undeclared").is_none());
    node.stop().await;
}

#[actix_rt::test]
async fn a_syntax_error_is_refused_at_import() {
    let db = TestDb::create(Backend::Sqlite).expect("sqlite");
    let node = start_node(&db, |c| c.scripts.timeout_ms = 60_000).await;
    let http = Http::new(&node.url());
    let r = http
        .post("/api/workflows", &one_task("broken", "x = (1 + ;"))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json["error"]["details"][0]["path"], "items.a.script");
    assert!(
        r.json["error"]["details"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("SyntaxError"),
        "{}",
        r.text
    );
    // A script that would escape a function wrapper is still just a syntax error.
    // A script that would escape a function wrapper is just a syntax error,
    // found without running anything (the 60 s limit would show otherwise).
    let r = http
        .post(
            "/api/workflows",
            &one_task("escape", "}); while(true){}; (function(){"),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        r.text.contains("SyntaxError") && !r.text.contains("timed out"),
        "{}",
        r.text
    );
    node.stop().await;
}

fn evaluations(metrics: &str, thread: &str) -> f64 {
    let label = format!("thread=\"{thread}\"");
    metric_value(metrics, "baton_script_evaluations_total{", &[&label]).unwrap_or_else(|| {
        panic!("no baton_script_evaluations_total{{thread={thread}}} in {metrics}")
    })
}

/// `scripts.inline`: straight-line scripts run on the actors' thread with
/// the same results as on a script thread, a thrown error included; a
/// doubling string fails its item, not the node. `/metrics` says where
/// each evaluation ran.
#[actix_rt::test]
async fn straight_line_scripts_run_on_the_actors_thread_under_the_same_limits() {
    // Too many conversions to be straight-line: it runs on a script thread
    // and outgrows its 16 MB there.
    let bomb = format!(
        "let s = '{}'; {} x = s.length;",
        "x".repeat(1500),
        "s = s + s; ".repeat(14)
    );
    let mut finals = Vec::new();
    for inline in [false, true] {
        let db = TestDb::create(Backend::Sqlite).expect("sqlite");
        let node = start_node(&db, |c| {
            c.scripts.memory_limit_mb = 16;
            c.scripts.inline = inline;
        })
        .await;
        let http = Http::new(&node.url());
        import(&http, &json!({"id": "count", "variables": {"x": 1}, "outputs": {"x": "number"}, "start": "a", "items": {
            "a": {"type": "task", "script": "x = x + 1; if (x > 1) { x = x * 20 } else { x = 0 }", "next": "d"},
            "d": {"type": "decision", "condition": "x === 40", "then": "b", "else": "e"},
            "b": {"type": "task", "script": "x = x + 2 // 42\n", "next": "e"},
            "e": {"type": "end"}}}))
        .await;
        import(&http, &one_task("strbomb", &bomb)).await;
        import(&http, &one_task("throws", "throw 'no stock for ' + x;")).await;
        let before = http.get("/metrics").await.text;
        let t = Duration::from_secs(30);
        let mut got = Vec::new();
        for w in ["count", "strbomb", "throws"] {
            let id = start(&http, w, json!({})).await;
            let e = wait_final(&http, &id, t).await;
            got.push((e["state"].clone(), e["outputs"].clone(), e["error"].clone()));
        }
        let after = http.get("/metrics").await.text;
        let here = evaluations(&after, "caller") - evaluations(&before, "caller");
        let there = evaluations(&after, "script") - evaluations(&before, "script");
        if inline {
            // Two items and a decision here. The bomb is not
            // straight-line; the throw failed here and, as every failure
            // here does, ran again on a script thread for its answer.
            assert_eq!((here, there), (3.0, 2.0), "{after}");
        } else {
            assert_eq!((here, there), (0.0, 5.0), "{after}");
        }
        assert_eq!(got[0].0, "completed");
        assert_eq!(got[0].1["x"], 42);
        assert_eq!(got[1].0, "failed");
        let err = got[1].2.as_str().unwrap_or("");
        assert!(
            err.contains("out of memory") || err.contains("too long"),
            "{err}"
        );
        assert_eq!(got[2].2, "no stock for 0");
        // The node still answers and runs scripts.
        let again = start(&http, "count", json!({})).await;
        assert_eq!(wait_final(&http, &again, t).await["state"], "completed");
        finals.push(got);
        node.stop().await;
    }
    assert_eq!(finals[0], finals[1], "the same answers on either thread");
}
