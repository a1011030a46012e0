//! The embedding API: a program's own async actions, called by `action`
//! items with the stable idempotency key and attempt number.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton::{Config, Node};
use serde_json::json;

use crate::util::*;

#[actix_rt::test]
async fn embedded_node_runs_the_programs_own_actions() {
    let db = TestDb::create(Backend::Sqlite).expect("sqlite");
    let calls: Arc<Mutex<Vec<(String, i32)>>> = Arc::default();
    let seen = calls.clone();
    let mut config = Config::default();
    config.database.url = db.url.clone();
    config.http.listen = "127.0.0.1:0".into();
    let node = Node::builder()
        .config(config)
        .action("charge_card", move |call| {
            let seen = seen.clone();
            async move {
                let amount = call
                    .input("amount")
                    .and_then(|v| v.as_f64())
                    .ok_or("amount missing")?;
                if let Ok(mut s) = seen.lock() {
                    s.push((call.idempotency_key.clone(), call.attempt));
                }
                call.log(format!("charged {amount}"));
                Ok(json!({ "receipt": format!("R-{amount}") }))
            }
        })
        .start()
        .await
        .expect("starts");
    let http = Http::new(&node.url());
    import(&http, &json!({"id": "pay", "inputs": {"amount": "number"}, "outputs": {"receipt": "string"},
        "variables": {"receipt": ""}, "start": "charge", "items": {
        "charge": {"type": "action", "action": "charge_card", "inputs": {"amount": "amount * 2"}, "outputs": {"receipt": "receipt"}, "next": "done"},
        "done": {"type": "end"}}}))
    .await;
    let id = start(&http, "pay", json!({"amount": 21})).await;
    let e = wait_final(&http, &id, Duration::from_secs(30)).await;
    assert_eq!(e["outputs"]["receipt"], "R-42", "{e}");
    assert_eq!(
        calls.lock().map(|c| c.clone()).unwrap_or_default(),
        vec![(format!("{id}/charge"), 1)]
    );
    let log = http.get(&format!("/api/executions/{id}/logs")).await.json;
    assert!(
        log.as_array()
            .into_iter()
            .flatten()
            .any(|l| l["message"] == "charged 42"),
        "{log}"
    );
    // An unknown action is refused at import.
    let r = http
        .post("/api/workflows", &json!({"id": "x", "start": "a", "items": {"a": {"type": "action", "action": "nope", "next": "b"}, "b": {"type": "end"}}}))
        .await;
    assert_eq!(r.status, 400);
    assert!(r.text.contains("items.a.action"), "{}", r.text);
    node.stop().await;
}

/// Issue 9 item 7 (in part): an embedding program starts an execution in
/// process and awaits its result: the outputs, or how it ended otherwise
/// (a failure with its error, a cancel); bad inputs are refused at once.
#[actix_rt::test]
async fn an_embedded_program_starts_executions_and_awaits_their_results() {
    use baton::ExecutionError;
    let db = TestDb::create(Backend::Sqlite).expect("sqlite");
    let node = start_node(&db, |_| {}).await;
    let http = Http::new(&node.url());
    import(
        &http,
        &json!({"id": "half", "inputs": {"n": "number"}, "outputs": {"h": "number"},
            "variables": {"h": 0}, "start": "a", "items": {
            "a": {"type": "task", "script": "if (n % 2) throw new Error('odd: ' + n); h = n / 2;", "next": "e"},
            "e": {"type": "end"}}}),
    )
    .await;
    let done = node
        .start_execution("half", json!({"n": 42}), Some("half-42".into()))
        .await
        .expect("started");
    assert_eq!(done.id(), "half-42");
    assert_eq!(done.result().await.expect("completed"), json!({"h": 21}));
    // The same id again: the same execution, the same result.
    let again = node
        .start_execution("half", json!({"n": 42}), Some("half-42".into()))
        .await
        .expect("idempotent");
    assert_eq!(again.result().await.expect("completed"), json!({"h": 21}));
    let odd = node
        .start_execution("half", json!({"n": 7}), None)
        .await
        .expect("started");
    match odd.result().await {
        Err(ExecutionError::Failed(e)) => assert!(e.contains("odd: 7"), "{e}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    let bad = node
        .start_execution("half", json!({"n": "seven"}), None)
        .await;
    assert!(
        bad.as_ref()
            .is_err_and(|e| e.to_string().contains("invalid inputs")),
        "{bad:?}"
    );
    let missing = node.start_execution("nope", json!({}), None).await;
    assert!(missing.is_err(), "{missing:?}");
    // A cancel (here through the supervisor) ends the awaited result too.
    import(
        &http,
        &json!({"id": "long", "start": "s", "items": {
            "s": {"type": "action", "action": "sleep", "inputs": {"ms": "30000"}, "next": "e"},
            "e": {"type": "end"}}}),
    )
    .await;
    let long = node
        .start_execution("long", json!({}), None)
        .await
        .expect("started");
    let waiting = long.clone();
    let result = actix_rt::spawn(async move { waiting.result().await });
    node.supervisor()
        .send(baton_actors::supervisor::CancelExecution {
            id: long.id().to_owned(),
        })
        .await
        .expect("mailbox")
        .expect("canceled");
    let ended = result.await.expect("joined");
    assert!(matches!(ended, Err(ExecutionError::Canceled)), "{ended:?}");
    node.stop().await;
}

/// Issue 9 item 7: a worker with no HTTP API (`http.listen = ""`): the
/// program imports and starts in process and awaits the result; nothing
/// listens.
#[actix_rt::test]
async fn a_node_without_an_http_api_runs_workflows_in_process() {
    let db = TestDb::create(Backend::Sqlite).expect("sqlite");
    let node = start_node(&db, |c| {
        c.http.listen = String::new();
        c.node.id = Some("worker-1".into());
    })
    .await;
    assert_eq!(node.http_addr(), None);
    assert_eq!(node.url(), "");
    let v = node
        .import_definition(
            b"id: twice\ninputs: {n: number}\noutputs: {m: number}\nvariables: {m: 0}\nstart: a\nitems:\n  a: {type: task, script: 'm = n * 2;', next: e}\n  e: {type: end}\n",
            true,
        )
        .await
        .expect("imported");
    assert_eq!(v, 1);
    let again = node.import_definition(br#"{"id": "twice"}"#, false).await;
    assert!(again.is_err(), "every problem, or the id taken: {again:?}");
    let bad = node
        .import_definition(
            br#"{"id": "b", "start": "a", "items": {"a": {"type": "task", "nxt": "e"}}}"#,
            false,
        )
        .await
        .expect_err("invalid");
    assert!(bad.to_string().contains("problem"), "{bad}");
    let e = node
        .start_execution("twice", json!({"n": 21}), None)
        .await
        .expect("started");
    assert_eq!(e.result().await.expect("completed"), json!({"m": 42}));
    node.stop().await;
}

/// A node without an HTTP API needs its id set (the default uses the port).
#[test]
fn an_empty_listen_address_needs_a_node_id() {
    let e = Config::load(
        None,
        vec![("BATON_HTTP__LISTEN".into(), "\"\"".into())],
        &[],
    )
    .expect_err("refused")
    .to_string();
    assert!(
        e.contains("node.id") && e.contains("http.listen is empty"),
        "{e}"
    );
    let c = Config::load(
        None,
        vec![
            ("BATON_HTTP__LISTEN".into(), "\"\"".into()),
            ("BATON_NODE__ID".into(), "w1".into()),
        ],
        &[],
    )
    .expect("a worker");
    assert_eq!(c.listen_addr().expect("ok"), None);
}
