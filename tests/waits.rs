//! Waits that hold nothing (DESIGN.md invariant 8): timers, signals and
//! user interactions park the execution in the database with no actor;
//! the owner's wake scan or an arriving signal wakes it. On SQLite,
//! PostgreSQL and MariaDB; crash and failover cases with real processes.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::on_all_backends;
use crate::util::*;

on_all_backends!(
    a_timer_parks_the_execution_and_fires_after_its_time,
    signals_wake_waiting_executions_and_are_kept_until_awaited,
    signals_of_one_name_are_taken_oldest_first_each_once,
    a_double_click_answers_one_interaction_once,
    a_late_answer_is_refused_not_kept,
    a_retried_wait_waits_again,
    a_timer_survives_kill_dash_nine_and_fires_once_after_its_time,
    a_signal_sent_while_the_owner_is_down_is_delivered_after_takeover,
    rescans_during_a_wake_leave_woken_executions_alone,
    an_upgrade_wakes_an_execution_whose_signal_came_before_it,
    a_signal_stored_without_its_flag_is_caught_up,
    a_burst_of_signals_and_answers_shares_commits_and_keeps_their_rules,
    a_burst_of_large_signals_is_stored_whole,
);

const LONG: Duration = Duration::from_secs(30);

async fn logs(http: &Http, id: &str) -> Vec<Value> {
    http.get(&format!("/api/executions/{id}/logs"))
        .await
        .json
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn get(http: &Http, id: &str) -> Value {
    http.get(&format!("/api/executions/{id}")).await.json
}

fn napper(ms: u64) -> Value {
    json!({"id": "napper", "variables": {"woke": false}, "outputs": {"woke": "boolean"}, "start": "nap", "items": {
        "nap": {"type": "timer", "for_ms": ms, "next": "up"},
        "up": {"type": "task", "script": "woke = true;", "next": "e"},
        "e": {"type": "end"}}})
}

fn approval() -> Value {
    json!({"id": "approval", "inputs": {"delay": "number"}, "variables": {"approval": null}, "outputs": {"approval": "any"},
        "start": "pause", "items": {
        "pause": {"type": "timer", "for_ms": 1, "next": "ask"},
        "ask": {"type": "signal", "name": "approve", "store": "approval", "next": "e"},
        "e": {"type": "end"}}})
}

async fn a_timer_parks_the_execution_and_fires_after_its_time(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let node = start_node(&db, |_| {}).await;
    let http = Http::new(&node.url());
    import(&http, &napper(800)).await;
    let t0 = Instant::now();
    let id = start(&http, "napper", json!({})).await;
    eventually("parked on the timer", LONG, || async {
        get(&http, &id).await["state"] == "waiting"
    })
    .await;
    let e = get(&http, &id).await;
    assert_eq!(e["waiting_for"]["kind"], "timer", "{e}");
    assert!(e["waiting_for"]["until"].is_string(), "{e}");
    let status = node
        .supervisor()
        .send(baton_actors::supervisor::QueryState)
        .await
        .expect("state");
    assert_eq!(status.running, 0, "no actor is held while it waits");
    let e = wait_final(&http, &id, LONG).await;
    assert!(
        t0.elapsed() >= Duration::from_millis(800),
        "not before its time"
    );
    assert_eq!(
        (e["state"].clone(), e["outputs"]["woke"].clone()),
        (json!("completed"), json!(true))
    );
    assert!(e["waiting_for"].is_null());
    let log = logs(&http, &id).await;
    let of = |event: &str| {
        log.iter()
            .filter(|l| l["item"] == "nap" && l["event"] == event)
            .count()
    };
    assert_eq!(
        (of("started"), of("completed")),
        (1, 1),
        "the timer fired once: {log:?}"
    );
    node.stop().await;
}

async fn signals_wake_waiting_executions_and_are_kept_until_awaited(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let node = start_node(&db, |_| {}).await;
    let http = Http::new(&node.url());
    import(&http, &approval()).await;
    // Waits first, then gets the signal.
    let late = start(&http, "approval", json!({"delay": 0})).await;
    eventually("waiting for the signal", LONG, || async {
        get(&http, &late).await["state"] == "waiting-signal"
    })
    .await;
    assert_eq!(
        get(&http, &late).await["waiting_for"],
        json!({"kind": "signal", "name": "approve", "until": null})
    );
    let r = http
        .post(
            &format!("/api/executions/{late}/signals/approve"),
            &json!({"payload": {"by": "ann"}}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json["waiting"], true);
    let e = wait_final(&http, &late, LONG).await;
    assert_eq!(e["outputs"]["approval"], json!({"by": "ann"}), "{e}");
    // Signaled before it waits: the signal is kept until awaited.
    import(&http, &json!({"id": "slow-approval", "variables": {"approval": null}, "outputs": {"approval": "any"},
        "start": "pause", "items": {
        "pause": {"type": "timer", "for_ms": 600, "next": "ask"},
        "ask": {"type": "signal", "name": "approve", "store": "approval", "next": "e"},
        "e": {"type": "end"}}}))
    .await;
    let early = start(&http, "slow-approval", json!({})).await;
    let r = http
        .post(
            &format!("/api/executions/{early}/signals/approve"),
            &json!({"payload": 42}),
        )
        .await;
    assert_eq!(
        (r.status, r.json["waiting"].clone()),
        (202, json!(false)),
        "{}",
        r.text
    );
    let e = wait_final(&http, &early, LONG).await;
    assert_eq!(e["outputs"]["approval"], 42, "{e}");
    // A finished execution takes no more signals.
    let r = http
        .post(
            &format!("/api/executions/{early}/signals/approve"),
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    node.stop().await;
}

/// A wake reads the signals of every execution it wakes at once, and the
/// first signal item takes its signal from what it read: two signals of
/// one name, sent while the execution waits, go one to each of its two
/// waits on that name, oldest first; a third, sent after the wake, to the
/// wait after them; one of another name wakes it without being taken.
async fn signals_of_one_name_are_taken_oldest_first_each_once(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let node = start_node(&db, |_| {}).await;
    let http = Http::new(&node.url());
    import(
        &http,
        &json!({"id": "three", "variables": {"x": null, "y": null, "z": null},
        "outputs": {"x": "any", "y": "any", "z": "any"}, "start": "a", "items": {
        "a": {"type": "signal", "name": "go", "store": "x", "next": "b"},
        "b": {"type": "signal", "name": "go", "store": "y", "next": "c"},
        "c": {"type": "signal", "name": "go", "store": "z", "next": "e"},
        "e": {"type": "end"}}}),
    )
    .await;
    let id = start(&http, "three", json!({})).await;
    let send = |name: &'static str, payload: i64| {
        let (http, id) = (http.clone(), id.clone());
        async move {
            let r = http
                .post(
                    &format!("/api/executions/{id}/signals/{name}"),
                    &json!({ "payload": payload }),
                )
                .await;
            assert_eq!(r.status, 202, "{}", r.text);
        }
    };
    let parked_at = |item: &'static str| {
        let http = http.clone();
        let id = id.clone();
        async move {
            eventually(&format!("parked at {item}"), LONG, || async {
                let e = get(&http, &id).await;
                e["state"] == "waiting-signal" && e["current_item"] == item
            })
            .await;
        }
    };
    parked_at("a").await;
    send("other", 0).await;
    send("go", 1).await;
    send("go", 2).await;
    parked_at("c").await;
    send("go", 3).await;
    let e = wait_final(&http, &id, LONG).await;
    assert_eq!(
        (e["state"].clone(), e["outputs"].clone()),
        (json!("completed"), json!({"x": 1, "y": 2, "z": 3})),
        "{e}"
    );
    let log = logs(&http, &id).await;
    let completed = log.iter().filter(|l| l["event"] == "completed").count();
    assert_eq!(completed, 4, "each wait and the end once: {log:?}");
    node.stop().await;
}

#[actix_rt::test]
async fn timeouts_are_errors_that_on_error_catches() {
    let db = TestDb::create(Backend::Sqlite).expect("sqlite");
    let node = start_node(&db, |_| {}).await;
    let http = Http::new(&node.url());
    import(&http, &json!({"id": "impatient", "variables": {"why": ""}, "outputs": {"why": "string"}, "start": "ask", "items": {
        "ask": {"type": "signal", "name": "go", "timeout_ms": 300, "next": "e", "on_error": "gave_up"},
        "gave_up": {"type": "task", "script": "why = error.message;", "next": "form"},
        "form": {"type": "interaction", "inputs": {"ok": "boolean"}, "timeout_ms": 300, "next": "e", "on_error": "gave_up2"},
        "gave_up2": {"type": "task", "script": "why = why + ' / ' + error.message;", "next": "e"},
        "e": {"type": "end"}}}))
    .await;
    let id = start(&http, "impatient", json!({})).await;
    let e = wait_final(&http, &id, LONG).await;
    assert_eq!(e["state"], "completed", "{e}");
    assert_eq!(
        e["outputs"]["why"],
        "signal `go` timed out after 300 ms / interaction timed out after 300 ms"
    );
    node.stop().await;
}

#[actix_rt::test]
async fn interaction_answers_are_checked() {
    let db = TestDb::create(Backend::Sqlite).expect("sqlite");
    let node = start_node(&db, |_| {}).await;
    let http = Http::new(&node.url());
    import(&http, &json!({"id": "form", "variables": {"amount": 0, "note": ""}, "outputs": {"amount": "number"}, "start": "ask", "items": {
        "ask": {"type": "interaction", "inputs": {"amount": "number", "note": "string"}, "next": "e"},
        "e": {"type": "end"}}}))
    .await;
    let id = start(&http, "form", json!({})).await;
    eventually("waiting for an answer", LONG, || async {
        get(&http, &id).await["waiting_for"]["kind"] == "interaction"
    })
    .await;
    let path = format!("/api/executions/{id}/interaction");
    let r = http.post(&path, &json!({"inputs": {"amount": 5}})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("inputs.note"), "{}", r.text);
    let r = http
        .post(&path, &json!({"inputs": {"amount": "five", "note": "x"}}))
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("inputs.amount"), "{}", r.text);
    let r = http.post(&path, &json!({"answer": {}})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = http
        .post(&path, &json!({"inputs": {"amount": 5, "note": "ok"}}))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let e = wait_final(&http, &id, LONG).await;
    assert_eq!(
        (
            e["outputs"]["amount"].clone(),
            e["variables"]["note"].clone()
        ),
        (json!(5), json!("ok")),
        "{e}"
    );
    let r = http
        .post(&path, &json!({"inputs": {"amount": 5, "note": "ok"}}))
        .await;
    assert_eq!(r.status, 409, "not waiting any more: {}", r.text);
    let r = http
        .post(
            &format!("/api/executions/{id}/signals/__interaction"),
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 400, "reserved signal names: {}", r.text);
    assert_eq!(
        http.post("/api/executions/nope/signals/x", &json!({}))
            .await
            .status,
        404
    );
    node.stop().await;
}

/// A parked timer survives kill -9 and fires once, at its original due
/// time, not restarted by the recovery: the node stays down past the due
/// time (2 s for a 1.5 s timer), so the timer must fire as soon as the
/// node is back (within a stated margin), where a timer restarted from
/// zero would fire 1.5 s later.
async fn a_timer_survives_kill_dash_nine_and_fires_once_after_its_time(b: Backend) {
    /// The wake scan (100 ms) and the recovery, with room for a busy machine.
    const MARGIN: Duration = Duration::from_millis(700);
    let Some(db) = TestDb::create(b) else { return };
    let env = [
        ("BATON_DATABASE__URL", db.url.clone()),
        ("BATON_NODE__ID", "sleeper".to_owned()),
    ];
    let mut first = serve(&env);
    let http = Http::new(&first.url);
    import(&http, &napper(1500)).await;
    let t0 = Instant::now();
    let id = start(&http, "napper", json!({})).await;
    eventually("parked", LONG, || async {
        get(&http, &id).await["state"] == "waiting"
    })
    .await;
    first.kill9();
    // Down past the timer's due time: a deliberate outage, not a wait.
    actix_rt::time::sleep(Duration::from_millis(2000)).await;
    let second = serve(&env);
    let back = t0.elapsed();
    let http = Http::new(&second.url);
    let e = wait_final(&http, &id, LONG).await;
    assert_eq!(e["state"], "completed", "{e}");
    let log = logs(&http, &id).await;
    let fired: Vec<&Value> = log
        .iter()
        .filter(|l| l["item"] == "nap" && l["event"] == "completed")
        .collect();
    assert_eq!(fired.len(), 1, "fired once: {log:?}");
    let at = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().expect("a time"))
            .expect("RFC 3339")
            .timestamp_millis()
    };
    // Both on the database clock: from the execution's creation.
    let fired_after = Duration::from_millis((at(&fired[0]["time"]) - at(&e["created_at"])) as u64);
    assert!(
        fired_after >= Duration::from_millis(1500),
        "not before its time: {fired_after:?}"
    );
    assert!(
        fired_after <= back + MARGIN,
        "fired {fired_after:?} after its start, the node was back at {back:?}: \
         a timer kept its due time fires within {MARGIN:?} of that"
    );
}

/// A signal sent while the execution's node is down (to another active
/// node) is delivered once that node's executions are taken over.
async fn a_signal_sent_while_the_owner_is_down_is_delivered_after_takeover(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let env = |id: &str| {
        vec![
            ("BATON_DATABASE__URL", db.url.clone()),
            ("BATON_NODE__ID", id.to_owned()),
            ("BATON_CLUSTER__ENABLED", "true".to_owned()),
            ("BATON_CLUSTER__ACTIVE_NODES", "2".to_owned()),
            ("BATON_CLUSTER__HEARTBEAT_INTERVAL_MS", "200".to_owned()),
        ]
    };
    let mut n1 = serve(&env("w1"));
    eventually("w1 active", LONG, || async {
        Http::new(&n1.url).get("/api/healthstatus").await.status == 200
    })
    .await;
    let n2 = serve(&env("w2"));
    eventually("w2 active", LONG, || async {
        Http::new(&n2.url).get("/api/healthstatus").await.status == 200
    })
    .await;
    let h1 = Http::new(&n1.url);
    import(&h1, &approval()).await;
    let id = start(&h1, "approval", json!({"delay": 0})).await;
    eventually("parked on w1", LONG, || async {
        get(&h1, &id).await["state"] == "waiting-signal"
    })
    .await;
    n1.kill9();
    let h2 = Http::new(&n2.url);
    let r = h2
        .post(
            &format!("/api/executions/{id}/signals/approve"),
            &json!({"payload": "late"}),
        )
        .await;
    assert_eq!(r.status, 202, "kept while the owner is down: {}", r.text);
    let e = wait_final(&h2, &id, LONG).await;
    assert_eq!(
        (
            e["state"].clone(),
            e["outputs"]["approval"].clone(),
            e["owner_node"].clone()
        ),
        (json!("completed"), json!("late"), json!("w2")),
        "{e}"
    );
}

/// Issue 7: two answers to the first of two interactions, posted at the
/// same moment (a double click): exactly one is taken, the other is refused
/// with 409 and never fed to the second interaction (DESIGN.md invariant
/// 13). Five rounds, as the user tried it.
async fn a_double_click_answers_one_interaction_once(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let node = start_node(&db, |_| {}).await;
    let http = Http::new(&node.url());
    import(&http, &json!({"id": "two-asks", "variables": {"a": 0, "b": 0}, "outputs": {"a": "number", "b": "number"},
        "start": "ask1", "items": {
        "ask1": {"type": "interaction", "inputs": {"a": "number"}, "next": "ask2"},
        "ask2": {"type": "interaction", "inputs": {"b": "number"}, "next": "e"},
        "e": {"type": "end"}}}))
    .await;
    for round in 0..5 {
        let id = start(&http, "two-asks", json!({})).await;
        eventually("waiting for the first answer", LONG, || async {
            get(&http, &id).await["waiting_for"]["kind"] == "interaction"
        })
        .await;
        let path = format!("/api/executions/{id}/interaction");
        let (one, two) = (json!({"inputs": {"a": 1}}), json!({"inputs": {"a": 2}}));
        let (r1, r2) = futures::join!(http.post(&path, &one), http.post(&path, &two));
        let mut statuses = [r1.status, r2.status];
        statuses.sort();
        assert_eq!(
            statuses,
            [202, 409],
            "round {round}: {} / {}",
            r1.text,
            r2.text
        );
        let taken = if r1.status == 202 { 1 } else { 2 };
        eventually("waiting for the second answer", LONG, || async {
            let e = get(&http, &id).await;
            e["current_item"] == "ask2" && e["waiting_for"]["kind"] == "interaction"
        })
        .await;
        let r = http.post(&path, &json!({"inputs": {"b": 7}})).await;
        assert_eq!(r.status, 202, "{}", r.text);
        let e = wait_final(&http, &id, LONG).await;
        assert_eq!(e["state"], "completed", "round {round}: {e}");
        assert_eq!(
            (e["outputs"]["a"].clone(), e["outputs"]["b"].clone()),
            (json!(taken), json!(7)),
            "{e}"
        );
    }
    node.stop().await;
}

/// An answer after the interaction's timeout is refused (409), not kept
/// for the item to take when it wakes.
async fn a_late_answer_is_refused_not_kept(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let node = start_node(&db, |_| {}).await;
    let http = Http::new(&node.url());
    // A wait whose timeout has passed but that no scan has woken yet
    // refuses the answer (the database clock decides).
    import(&http, &json!({"id": "late2", "variables": {"a": 0},
        "start": "ask", "items": {
        "ask": {"type": "interaction", "inputs": {"a": "number"}, "timeout_ms": 200, "next": "e", "on_error": "e"},
        "e": {"type": "end"}}}))
    .await;
    let id = start(&http, "late2", json!({})).await;
    eventually("waiting for an answer", LONG, || async {
        get(&http, &id).await["waiting_for"]["kind"] == "interaction"
    })
    .await;
    // Hold the wake scan off by pushing the deadline into the past directly.
    node.store()
        .db()
        .run({
            let id = id.clone();
            move |c| async move {
                use sea_orm::ConnectionTrait;
                c.execute_unprepared(&format!(
                    "UPDATE executions SET wait_until = 1 WHERE id = '{id}'"
                ))
                .await?;
                Ok(())
            }
        })
        .await
        .expect("update");
    let r = http
        .post(
            &format!("/api/executions/{id}/interaction"),
            &json!({"inputs": {"a": 3}}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    let e = wait_final(&http, &id, LONG).await;
    assert_eq!(
        (e["state"].clone(), e["variables"]["a"].clone()),
        (json!("completed"), json!(0)),
        "the late answer was not kept: {e}"
    );
    node.stop().await;
}

/// Issue 7 item 12: a retried wait waits again, its deadline starting
/// over; before, the retry kept the first attempt's deadline and timed out
/// at once.
async fn a_retried_wait_waits_again(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let node = start_node(&db, |_| {}).await;
    let http = Http::new(&node.url());
    import(&http, &json!({"id": "patient", "start": "w", "items": {
        "w": {"type": "signal", "name": "never", "timeout_ms": 400, "retry": {"max_attempts": 2, "backoff_ms": 0}, "next": "e"},
        "e": {"type": "end"}}}))
    .await;
    let id = start(&http, "patient", json!({})).await;
    let e = wait_final(&http, &id, LONG).await;
    assert_eq!(e["state"], "failed", "{e}");
    let log = node.store().item_log(&id).await.expect("log");
    let failures: Vec<i64> = log
        .iter()
        .filter(|l| l.event == "failed")
        .map(|l| l.time)
        .collect();
    let first_start = log.iter().find(|l| l.event == "started").map(|l| l.time);
    assert_eq!(failures.len(), 2, "{log:?}");
    let first_start = first_start.expect("started");
    assert!(
        failures[0] - first_start >= 350,
        "the first attempt waited its timeout: {log:?}"
    );
    assert!(
        failures[1] - failures[0] >= 350,
        "the retry waited a whole timeout again, not none: {log:?}"
    );
    node.stop().await;
}

/// A rescan (which starts `running` rows that have no actor, as after a
/// crash) must not take the rows a wake scan is waking: it started them
/// as recovered, with attempt 2 and a `resumed` record, as if the node had
/// crashed. Many timers fall due together while rescans are asked for
/// every few milliseconds; no execution may show `resumed`.
async fn rescans_during_a_wake_leave_woken_executions_alone(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let node = start_node(&db, |_| {}).await;
    let http = Http::new(&node.url());
    import(&http, &napper(1500)).await;
    let mut ids = Vec::new();
    for _ in 0..150 {
        ids.push(start(&http, "napper", json!({})).await);
    }
    let supervisor = node.supervisor().clone();
    let hammer = actix_rt::spawn(async move {
        for _ in 0..800 {
            supervisor.do_send(baton_actors::messages::Rescan { promoted: false });
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
    });
    for id in &ids {
        let e = wait_final(&http, id, LONG).await;
        assert_eq!(e["state"], "completed", "{e}");
    }
    hammer.abort();
    let mut resumed = Vec::new();
    for id in &ids {
        let log = logs(&http, id).await;
        if log.iter().any(|l| l["event"] == "resumed") {
            resumed.push(log);
        }
    }
    assert!(
        resumed.is_empty(),
        "woken executions started as recovered: {resumed:?}"
    );
    node.stop().await;
}

/// The wake scan finds signaled executions by a flag that migration 11
/// added (waiting costs nothing while nothing is due). An execution
/// parked on a signal that arrived before that migration ran has no flag
/// set by a sender: the migration sets it, and the upgraded node wakes it.
async fn an_upgrade_wakes_an_execution_whose_signal_came_before_it(b: Backend) {
    use baton_migrations::{Migrator, MigratorTrait};
    use sea_orm::ConnectionTrait;
    let Some(db) = TestDb::create(b) else { return };
    let id_of_node = unique("up-");
    let node = start_node(&db, |c| c.node.id = Some(id_of_node.clone())).await;
    let http = Http::new(&node.url());
    import(&http, &approval()).await;
    let id = start(&http, "approval", json!({"delay": 0})).await;
    eventually("waiting for the signal", LONG, || async {
        get(&http, &id).await["state"] == "waiting-signal"
    })
    .await;
    node.stop().await;
    // Back to the schema before the flag, and a signal stored as the
    // nodes of that version stored them: a row in `signals`, nothing more.
    let s = store(&db).await;
    let sql = format!(
        "INSERT INTO signals (execution_id, name, payload, created_at) VALUES ('{id}', 'approve', '\"yes\"', 0)"
    );
    // The flag's migration and every one after it.
    let names: Vec<String> = Migrator::migrations()
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    let flag = names
        .iter()
        .position(|n| n == "m20261126_000011_wake_indexes")
        .expect("the flag's migration");
    let back = (names.len() - flag) as u32;
    s.db()
        .run(move |c| async move {
            Migrator::down(&c, Some(back)).await?;
            c.execute_unprepared(&sql).await?;
            Ok(())
        })
        .await
        .expect("downgrade and signal");
    let node = start_node(&db, |c| c.node.id = Some(id_of_node.clone())).await;
    let http = Http::new(&node.url());
    let e = wait_final(&http, &id, LONG).await;
    assert_eq!(
        (e["state"].as_str(), &e["outputs"]["approval"]),
        (Some("completed"), &json!("yes")),
        "{e}"
    );
    node.stop().await;
}

/// A node of the version before the flag, still running during a rolling
/// upgrade, stores a signal as a bare row. The owner's catch-up (every
/// 10 s, over the last 30 s of signals) flags and wakes the execution.
async fn a_signal_stored_without_its_flag_is_caught_up(b: Backend) {
    use sea_orm::ConnectionTrait;
    let Some(db) = TestDb::create(b) else { return };
    let node = start_node(&db, |_| {}).await;
    let http = Http::new(&node.url());
    import(&http, &approval()).await;
    let id = start(&http, "approval", json!({"delay": 0})).await;
    eventually("waiting for the signal", LONG, || async {
        get(&http, &id).await["state"] == "waiting-signal"
    })
    .await;
    let s = store(&db).await;
    let now = s.db_now_ms().await.expect("clock");
    let sql = format!(
        "INSERT INTO signals (execution_id, name, payload, created_at) VALUES ('{id}', 'approve', '1', {now})"
    );
    s.db()
        .run(move |c| async move {
            c.execute_unprepared(&sql).await?;
            Ok(())
        })
        .await
        .expect("a bare signal row");
    let e = wait_final(&http, &id, LONG).await;
    assert_eq!(
        (e["state"].as_str(), &e["outputs"]["approval"]),
        (Some("completed"), &json!(1)),
        "{e}"
    );
    node.stop().await;
}

/// Issue 14 item 3: signals and answers that arrive together share one
/// transaction (the group commit of deliveries), and still keep their
/// rules: the signals of one name to one execution are taken in the order
/// they were sent, three answers to one interaction sent at once are taken
/// once (DESIGN.md invariant 13) and the one taken is the one the execution
/// sees, and every signal of the burst wakes its execution.
async fn a_burst_of_signals_and_answers_shares_commits_and_keeps_their_rules(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let node = start_node(&db, |_| {}).await;
    let http = Http::new(&node.url());
    import(
        &http,
        &json!({"id": "ticks", "variables": {"a": 0, "b": 0, "c": 0},
        "outputs": {"a": "number", "b": "number", "c": "number"}, "start": "w1", "items": {
        "w1": {"type": "signal", "name": "tick", "store": "a", "next": "w2"},
        "w2": {"type": "signal", "name": "tick", "store": "b", "next": "w3"},
        "w3": {"type": "signal", "name": "tick", "store": "c", "next": "e"},
        "e": {"type": "end"}}}),
    )
    .await;
    import(&http, &json!({"id": "two-asks", "variables": {"a": 0, "b": 0}, "outputs": {"a": "number", "b": "number"},
        "start": "ask1", "items": {
        "ask1": {"type": "interaction", "inputs": {"a": "number"}, "next": "ask2"},
        "ask2": {"type": "interaction", "inputs": {"b": "number"}, "next": "e"},
        "e": {"type": "end"}}}))
    .await;
    let mut ticks = Vec::new();
    let mut asks = Vec::new();
    for _ in 0..12 {
        ticks.push(start(&http, "ticks", json!({})).await);
        asks.push(start(&http, "two-asks", json!({})).await);
    }
    let store = node.store().clone();
    for id in ticks.iter().chain(&asks) {
        eventually("parked", LONG, || async {
            get(&http, id).await["state"] == "waiting-signal"
        })
        .await;
    }
    let mut steps = Vec::new();
    for id in &asks {
        let row = store.execution(id).await.expect("read").expect("row");
        steps.push(row.step);
    }
    let stats = store.delivery_stats();
    let batches0 = stats.batches.load(std::sync::atomic::Ordering::Relaxed);
    // All at once, interleaved: three ticks to each execution (payloads 1,
    // 2, 3, in that order) and three answers to each first interaction.
    let mut sends = Vec::new();
    let mut answers = Vec::new();
    for round in 1..=3 {
        for id in &ticks {
            let store = store.clone();
            let id = id.clone();
            sends.push(Box::pin(async move {
                store
                    .insert_signal(&id, "tick", &json!(round))
                    .await
                    .map(|()| true)
            })
                as std::pin::Pin<Box<dyn std::future::Future<Output = _>>>);
        }
        for (id, step) in asks.iter().zip(&steps) {
            let store = store.clone();
            let (id, step) = (id.clone(), *step);
            answers.push((id.clone(), round));
            sends.push(Box::pin(async move {
                store
                    .answer_interaction(&id, step, &json!({"a": round}))
                    .await
            }));
        }
    }
    let results: Vec<bool> = futures::future::join_all(sends)
        .await
        .into_iter()
        .map(|r| r.expect("delivered"))
        .collect();
    let batches = stats.batches.load(std::sync::atomic::Ordering::Relaxed) - batches0;
    assert!(
        batches * 2 <= results.len() as u64,
        "{} deliveries sent at once took {batches} transactions: hardly any shared",
        results.len()
    );
    // Every signaled execution was flagged for the wake scan in the same
    // transaction (or has been woken already): none sits parked on its
    // first wait unflagged, which only the 10 s catch-up would find.
    for id in &ticks {
        let row = store.execution(id).await.expect("read").expect("row");
        assert!(
            !(row.state == "waiting-signal"
                && row.current_item.as_deref() == Some("w1")
                && row.signaled == 0),
            "{id} was signaled but not flagged: {row:?}"
        );
    }
    // Every tick was stored, and taken in the order sent.
    for id in &ticks {
        let e = wait_final(&http, id, LONG).await;
        assert_eq!(e["state"], "completed", "{e}");
        assert_eq!(
            (
                e["outputs"]["a"].clone(),
                e["outputs"]["b"].clone(),
                e["outputs"]["c"].clone()
            ),
            (json!(1), json!(2), json!(3)),
            "the signals of one name were taken out of order: {e}"
        );
    }
    // One answer of three taken per interaction, and that one is what the
    // execution took.
    let taken: Vec<(String, i64)> = results
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 24 >= 12)
        .zip(&answers)
        .filter(|((_, t), _)| **t)
        .map(|(_, (id, round))| (id.clone(), *round))
        .collect();
    for id in &asks {
        let mine: Vec<i64> = taken
            .iter()
            .filter(|(t, _)| t == id)
            .map(|(_, r)| *r)
            .collect();
        // One writer, in arrival order: the first answer sent is the one
        // taken.
        assert_eq!(mine, vec![1], "answers taken for {id}");
        eventually("waiting for the second answer", LONG, || async {
            let e = get(&http, id).await;
            e["current_item"] == "ask2" && e["waiting_for"]["kind"] == "interaction"
        })
        .await;
        let r = http
            .post(
                &format!("/api/executions/{id}/interaction"),
                &json!({"inputs": {"b": 7}}),
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.text);
        let e = wait_final(&http, id, LONG).await;
        assert_eq!(
            (
                e["state"].clone(),
                e["outputs"]["a"].clone(),
                e["outputs"]["b"].clone()
            ),
            (json!("completed"), json!(mine[0]), json!(7)),
            "{e}"
        );
    }
    node.stop().await;
}

/// A burst of large signals (40 of 600 KB, 24 MB in all, above MariaDB's
/// default 16 MB `max_allowed_packet`): every one is stored, each in a
/// shared transaction that committed. (Before migration 12 MariaDB refused
/// any payload past 64 KB. Whether a batch would pass the server's packet
/// limit without the byte budget depends on how many queue at once, so the
/// budget itself is checked by `deliveries::tests`.)
async fn a_burst_of_large_signals_is_stored_whole(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let node = start_node(&db, |_| {}).await;
    let http = Http::new(&node.url());
    import(&http, &approval()).await;
    let id = start(&http, "approval", json!({"delay": 0})).await;
    let store = node.store().clone();
    let big = "x".repeat(600 * 1024);
    let stats = store.delivery_stats();
    let delivered0 = stats.checkpoints.load(std::sync::atomic::Ordering::Relaxed);
    let sends = (0..40).map(|i| {
        let (store, id, payload) = (store.clone(), id.clone(), json!({"i": i, "blob": big}));
        async move { store.insert_signal(&id, "bulky", &payload).await }
    });
    for r in futures::future::join_all(sends).await {
        r.expect("a large signal was refused");
    }
    let pending = store.pending_signal_ids(&id, "bulky").await.expect("read");
    assert_eq!(pending.len(), 40);
    // Each in a shared transaction that committed: none was refused by the
    // server and tried again alone.
    assert_eq!(
        stats.checkpoints.load(std::sync::atomic::Ordering::Relaxed) - delivered0,
        40
    );
    node.stop().await;
}
