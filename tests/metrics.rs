//! `/metrics` read the way Prometheus reads it (parsed by a Prometheus
//! text parser, not by string matching), from real `baton` processes: every
//! series has its `# HELP`, and the failover, fencing and oldest-unowned-
//! work metrics move when a node is paused or killed.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use crate::util::*;

const LONG: Duration = Duration::from_secs(60);

crate::on_all_backends!(
    failover_fencing_and_unowned_work_metrics_move_when_nodes_pause_and_die,
    database_calls_that_wait_for_a_connection_are_counted,
);

/// One scrape: each sample's value by its name and sorted labels.
struct Scrape {
    values: HashMap<String, f64>,
    text: String,
}

impl Scrape {
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.values.get(&key(name, labels)).copied()
    }
}

fn key(name: &str, labels: &[(&str, &str)]) -> String {
    let mut l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    l.sort();
    format!("{name}{{{}}}", l.join(","))
}

/// Scrapes `url`, parses it with `prometheus-parse`, and checks that every
/// sample belongs to a family with a `# HELP`.
async fn scrape(url: &str) -> Option<Scrape> {
    let r = Http::new(url).get("/metrics").await;
    if r.status != 200 {
        return None;
    }
    let lines = r.text.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("/metrics parses");
    let mut values = HashMap::new();
    for s in &parsed.samples {
        let family = ["_total", "_bucket", "_sum", "_count", "_created"]
            .iter()
            .find_map(|suf| s.metric.strip_suffix(suf))
            .filter(|f| parsed.docs.contains_key(*f))
            .unwrap_or(&s.metric);
        assert!(
            parsed.docs.contains_key(family),
            "{} has no # HELP:\n{}",
            s.metric,
            r.text
        );
        let v = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => continue,
        };
        let labels: Vec<(&str, &str)> = s
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        values.insert(key(&s.metric, &labels), v);
    }
    Some(Scrape {
        values,
        text: r.text,
    })
}

async fn failover_fencing_and_unowned_work_metrics_move_when_nodes_pause_and_die(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let env = |id: &str| {
        vec![
            ("BATON_DATABASE__URL", db.url.clone()),
            ("BATON_NODE__ID", id.to_owned()),
            ("BATON_CLUSTER__ENABLED", "true".into()),
            ("BATON_CLUSTER__HEARTBEAT_INTERVAL_MS", "200".into()),
            ("BATON_CLUSTER__FAILOVER_HEARTBEATS", "5".into()),
        ]
    };
    let m1 = serve(&env("m1"));
    eventually("m1 is active", LONG, || async {
        Http::new(&m1.url).get("/api/healthstatus").await.status == 200
    })
    .await;
    let mut m2 = serve(&env("m2"));
    let http = Http::new(&m1.url);
    import_slow_steps(&http).await;
    for _ in 0..5 {
        start(&http, "slow-steps", json!({"ms": 800})).await;
    }
    // Items by type and the group commit count as the work goes on.
    eventually("items and checkpoint batches counted", LONG, || async {
        scrape(&m1.url).await.is_some_and(|s| {
            s.get(
                "baton_items_by_type_total",
                &[("node", "m1"), ("type", "action"), ("event", "completed")],
            )
            .is_some_and(|n| n >= 5.0)
                && s.get("baton_checkpoint_batches_total", &[("node", "m1")])
                    .is_some_and(|n| n >= 1.0)
        })
    })
    .await;
    // A healthy pair: heartbeats fresh, nothing unowned, nothing fenced.
    let s = scrape(&m1.url).await.expect("m1 scrapes");
    let age = s.get("baton_heartbeat_age_seconds", &[("node", "m1")]);
    assert!(
        age.is_some_and(|a| a < 1.0),
        "heartbeat age {age:?}\n{}",
        s.text
    );
    assert_eq!(
        s.get("baton_node_up", &[("node", "m1")]),
        Some(1.0),
        "{}",
        s.text
    );
    assert_eq!(
        s.get("baton_node_role", &[("node", "m1"), ("role", "active")]),
        Some(1.0),
        "{}",
        s.text
    );
    assert_eq!(
        s.get("baton_oldest_unowned_work_seconds", &[("node", "m1")]),
        Some(0.0),
        "{}",
        s.text
    );
    assert!(
        s.get(
            "baton_http_requests_total",
            &[
                ("node", "m1"),
                ("route", "/api/workflows"),
                ("method", "POST"),
                ("status", "201")
            ]
        ) == Some(1.0),
        "{}",
        s.text
    );
    // By route pattern, not path (`prometheus-parse` cannot read a label
    // value holding braces, so this one is read as text).
    assert!(
        s.text.contains(r#"baton_http_requests_total{node="m1",route="/api/workflows/{id}/executions",method="POST",status="202"} 5"#),
        "{}",
        s.text
    );
    // Latency as a histogram by route and method: the five starts fall in
    // its +Inf bucket and its count.
    assert!(
        s.text.contains(r#"baton_http_request_duration_seconds_count{node="m1",route="/api/workflows/{id}/executions",method="POST"} 5"#)
            && s.text.contains(r#"baton_http_request_duration_seconds_bucket{le="+Inf",node="m1",route="/api/workflows/{id}/executions",method="POST"} 5"#),
        "{}",
        s.text
    );
    assert!(s
        .get("process_resident_memory_bytes", &[("node", "m1")])
        .is_some_and(|b| b > 0.0));
    // The pool and the parked executions.
    assert!(
        s.get(
            "baton_db_pool_connections",
            &[("node", "m1"), ("state", "idle")]
        )
        .is_some(),
        "{}",
        s.text
    );
    for kind in ["timer", "signal", "interaction", "child"] {
        assert_eq!(
            s.get(
                "baton_executions_waiting",
                &[("node", "m1"), ("kind", kind)]
            ),
            Some(0.0),
            "{}",
            s.text
        );
    }

    // One parked on a signal is counted (the counts are refreshed in the
    // background, at most every 10 s).
    import(
        &http,
        &json!({"id": "waiter", "start": "w", "items": {
            "w": {"type": "signal", "name": "go", "next": "e"}, "e": {"type": "end"}}}),
    )
    .await;
    start(&http, "waiter", json!({})).await;
    eventually("the parked execution counted", LONG, || async {
        scrape(&m1.url).await.is_some_and(|s| {
            s.get(
                "baton_executions_waiting",
                &[("node", "m1"), ("kind", "signal")],
            ) == Some(1.0)
                && s.get(
                    "baton_executions_owned",
                    &[("node", "m1"), ("state", "waiting-signal")],
                ) == Some(1.0)
        })
    })
    .await;

    // m1 paused past the failover timeout: its work is unowned until m2
    // takes over, and m2 counts the takeover.
    m1.signal("STOP");
    let mut most_unowned: f64 = 0.0;
    let mut took_over = false;
    let began = std::time::Instant::now();
    while began.elapsed() < LONG && !took_over {
        if let Some(s) = scrape(&m2.url).await {
            most_unowned = most_unowned.max(
                s.get("baton_oldest_unowned_work_seconds", &[("node", "m2")])
                    .unwrap_or(0.0),
            );
            took_over =
                s.get("baton_takeovers_total", &[("node", "m2"), ("victim", "m1")]) == Some(1.0);
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(took_over, "m2 counts its takeover of m1");
    assert!(
        most_unowned >= 0.4,
        "while m1 was paused and not yet taken over, its work was unowned: at most {most_unowned} s seen"
    );
    eventually("the moved work is owned again", LONG, || async {
        scrape(&m2.url)
            .await
            .and_then(|s| s.get("baton_oldest_unowned_work_seconds", &[("node", "m2")]))
            == Some(0.0)
    })
    .await;
    // m1 woken: it fences itself, and counts why.
    m1.signal("CONT");
    eventually("m1 counts its fencing", LONG, || async {
        let Some(s) = scrape(&m1.url).await else {
            return false;
        };
        let fenced: f64 = ["heartbeat_deadline", "declared_dead"]
            .iter()
            .filter_map(|r| {
                s.get(
                    "baton_self_fencings_total",
                    &[("node", "m1"), ("reason", r)],
                )
            })
            .sum();
        fenced >= 1.0
    })
    .await;
    // m1 rejoins as a standby; m2 killed: m1 takes over.
    eventually("m1 is a standby again", LONG, || async {
        scrape(&m1.url).await.is_some_and(|s| {
            s.get("baton_node_state", &[("node", "m1"), ("state", "STANDBY")]) == Some(1.0)
        })
    })
    .await;
    m2.kill9();
    eventually("m1 counts its takeover of m2", LONG, || async {
        scrape(&m1.url).await.is_some_and(|s| {
            s.get("baton_takeovers_total", &[("node", "m1"), ("victim", "m2")]) == Some(1.0)
                && s.get("baton_node_up", &[("node", "m1")]) == Some(1.0)
        })
    })
    .await;
}

/// The pool's waits (issue 10): with one connection, calls made together
/// queue for it, and `/metrics` counts them beside all calls and their
/// time (wait included).
async fn database_calls_that_wait_for_a_connection_are_counted(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let node = start_node(&db, |c| c.database.max_connections = 1).await;
    let http = Http::new(&node.url());
    import(
        &http,
        &json!({"id": "three", "variables": {"n": 0}, "start": "a", "items": {
            "a": {"type": "task", "script": "n = n + 1;", "next": "b"},
            "b": {"type": "task", "script": "n = n + 1;", "next": "c"},
            "c": {"type": "task", "script": "n = n + 1;", "next": "e"},
            "e": {"type": "end"}}}),
    )
    .await;
    let before = scrape(&node.url()).await.expect("scrapes");
    let calls = |s: &Scrape| s.get("baton_db_calls_total", &[("node", node.node_id())]);
    let queued = |s: &Scrape| s.get("baton_db_calls_queued_total", &[("node", node.node_id())]);
    assert!(calls(&before).is_some_and(|n| n > 0.0), "{}", before.text);
    let clients: Vec<Http> = (0..32).map(|_| Http::new(&node.url())).collect();
    let ids = futures::future::join_all(clients.iter().map(|h| start(h, "three", json!({})))).await;
    for id in &ids {
        assert_eq!(wait_final(&http, id, LONG).await["state"], "completed");
    }
    let after = scrape(&node.url()).await.expect("scrapes");
    assert!(
        calls(&after).unwrap_or(0.0) >= calls(&before).unwrap_or(0.0) + 32.0,
        "{}",
        after.text
    );
    assert!(
        queued(&after).unwrap_or(0.0) > queued(&before).unwrap_or(0.0),
        "32 starts at once on one connection, none waited?\n{}",
        after.text
    );
    assert!(
        after
            .get("baton_db_call_seconds_count", &[("node", node.node_id())])
            .is_some_and(|n| n > 0.0),
        "{}",
        after.text
    );
    node.stop().await;
}
