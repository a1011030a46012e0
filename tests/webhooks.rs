//! Webhooks on cluster events (`[[notify.webhooks]]`), against a receiver
//! of the test's own on loopback: each event of a three-node cluster
//! reaches it once, through failed attempts and the death of the node that
//! held the delivery; the signature checks out (by an HMAC written here,
//! not Baton's); a receiver that never takes one gets it marked failed
//! while the node's work goes on.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

use crate::util::*;

const SECRET: &str = "webhook s3cret";
const LONG: Duration = Duration::from_secs(60);

crate::on_all_backends!(every_event_reaches_the_receiver_once_through_retries_and_a_killed_sender);

/// HMAC-SHA256 (RFC 2104) over SHA-256, written out.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    format!("sha256={}", hex::encode(outer))
}

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Got {
    delivery: i64,
    node: String,
    attempt: String,
    status: u16,
    signed_ok: bool,
    body: Value,
}

#[derive(Default)]
struct Shared {
    got: Mutex<Vec<Got>>,
    /// Answer 500 to the first this-many requests of each delivery.
    fail_first: usize,
    /// Or never answer 2xx.
    always_fail: bool,
    /// Sleep this long before answering (a hung receiver).
    stall: Option<Duration>,
}

async fn receive(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let header = |k: &str| {
        req.headers()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    if let Some(d) = shared.stall {
        actix_rt::time::sleep(d).await;
    }
    let delivery: i64 = header("baton-delivery").parse().unwrap_or(-1);
    let mut got = shared.got.lock().unwrap();
    let before = got.iter().filter(|g| g.delivery == delivery).count();
    let status = if shared.always_fail || before < shared.fail_first {
        500
    } else {
        200
    };
    got.push(Got {
        delivery,
        node: header("baton-node"),
        attempt: header("baton-attempt"),
        status,
        signed_ok: header("baton-signature") == hmac_sha256(SECRET.as_bytes(), &body),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).finish()
}

struct Receiver {
    url: String,
    shared: web::Data<Shared>,
    handle: actix_web::dev::ServerHandle,
}

impl Receiver {
    fn start(shared: Shared) -> Receiver {
        let shared = web::Data::new(shared);
        let data = shared.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/hook", web::post().to(receive))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .expect("bind");
        let url = format!("http://{}/hook", server.addrs()[0]);
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        Receiver {
            url,
            shared,
            handle,
        }
    }

    fn got(&self) -> Vec<Got> {
        self.shared.got.lock().unwrap().clone()
    }
}

/// The cluster's events of the kinds the webhook wants, with their
/// deliveries, from any node that answers.
async fn events(urls: &[String]) -> Vec<Value> {
    for u in urls {
        let r = Http::new(u).get("/api/cluster/events?limit=1000").await;
        if r.status == 200 {
            return r.json.as_array().cloned().unwrap_or_default();
        }
    }
    Vec::new()
}

const WANTED: [&str; 5] = ["join", "promote", "failover", "fence", "leave"];

async fn every_event_reaches_the_receiver_once_through_retries_and_a_killed_sender(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let receiver = Receiver::start(Shared {
        fail_first: 2,
        ..Shared::default()
    });
    let dir = std::env::temp_dir().join(unique("baton-webhooks"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("baton.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[notify.webhooks]]
name = "pager"
url = "{}"
events = ["joined", "promoted", "failover", "fenced", "left"]
secret = "{SECRET}"
timeout_ms = 1000
backoff_ms = 2000
max_attempts = 10
"#,
            receiver.url
        ),
    )
    .unwrap();
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_baton"));
    let args = ["--config", config.to_str().unwrap()];
    let env = |id: &str| {
        vec![
            ("BATON_DATABASE__URL", db.url.clone()),
            ("BATON_NODE__ID", id.to_owned()),
            ("BATON_CLUSTER__ENABLED", "true".into()),
            ("BATON_CLUSTER__HEARTBEAT_INTERVAL_MS", "200".into()),
            ("BATON_CLUSTER__FAILOVER_HEARTBEATS", "5".into()),
        ]
    };
    let mut nodes: HashMap<String, Process> = HashMap::new();
    for id in ["w1", "w2", "w3"] {
        let p = Process::spawn_with(exe, &args, &env(id), true).expect("baton serve starts");
        nodes.insert(id.to_owned(), p);
    }
    let urls: Vec<String> = nodes.values().map(|p| p.url.clone()).collect();
    eventually("three nodes joined", LONG, || async {
        events(&urls)
            .await
            .iter()
            .filter(|e| e["kind"] == "join")
            .count()
            >= 3
    })
    .await;

    // Mid-retry: a delivery failed once and waits for its next attempt,
    // claimed by a node; kill that node.
    let store = store(&db).await;
    let victim: std::rc::Rc<std::cell::RefCell<String>> = Default::default();
    eventually(
        "a delivery has failed once and is held for its retry",
        LONG,
        || {
            let (store, victim) = (store.clone(), victim.clone());
            async move {
                let ids: Vec<i64> = (1..=50).collect();
                let ds = store.deliveries_of(ids).await.unwrap_or_default();
                match ds
                    .iter()
                    .find(|d| d.state == "pending" && d.attempts >= 1 && d.claimed_by.is_some())
                {
                    Some(d) => {
                        *victim.borrow_mut() = d.claimed_by.clone().unwrap();
                        true
                    }
                    None => false,
                }
            }
        },
    )
    .await;
    let victim = victim.borrow().clone();
    nodes
        .get_mut(&victim)
        .expect("the claimant is ours")
        .kill9();
    nodes.remove(&victim);
    let urls: Vec<String> = nodes.values().map(|p| p.url.clone()).collect();
    eprintln!("{b:?}: killed {victim} while it held a delivery between attempts");

    // Every wanted event, its death's failover included, is delivered.
    eventually(
        "every event is delivered",
        Duration::from_secs(90),
        || async {
            let evs = events(&urls).await;
            let wanted: Vec<&Value> = evs
                .iter()
                .filter(|e| WANTED.contains(&e["kind"].as_str().unwrap_or("")))
                .collect();
            wanted
                .iter()
                .any(|e| e["kind"] == "failover" && e["node_id"] == victim.as_str())
                && wanted.iter().all(|e| {
                    e["deliveries"]
                        .as_array()
                        .is_some_and(|d| d.len() == 1 && d[0]["state"] == "delivered")
                })
        },
    )
    .await;
    let evs = events(&urls).await;
    let got = receiver.got();
    let mut taken: HashMap<i64, Vec<&Got>> = HashMap::new();
    for g in got.iter().filter(|g| g.status == 200) {
        taken.entry(g.delivery).or_default().push(g);
    }
    let mut moved = 0;
    for e in evs
        .iter()
        .filter(|e| WANTED.contains(&e["kind"].as_str().unwrap_or("")))
    {
        let id = e["id"].as_i64().unwrap();
        let ok = taken.get(&id).map_or(0, Vec::len);
        assert_eq!(ok, 1, "event {id} taken {ok} times: {e}\n{got:#?}");
        let g = taken[&id][0];
        assert_eq!(g.body["kind"], e["kind"], "{g:?}");
        assert_eq!(g.body["id"], e["id"], "{g:?}");
        assert_eq!(g.body["webhook"], "pager", "{g:?}");
        let d = &e["deliveries"][0];
        assert_eq!(d["webhook"], "pager", "{e}");
        assert_eq!(d["last_status"], 200, "{e}");
        assert_eq!(d["delivered_by"], g.node.as_str(), "{e}");
        // One sender at a time: every attempt the receiver saw carries its
        // own number, the taken one numbered last. An attempt that failed
        // before the receiver read it (a pooled connection the receiver
        // was closing) is recorded but never seen; the killed node may
        // have sent one more whose outcome it never recorded (it died with
        // the request in flight), which its successor sends again under
        // the same number.
        let tried_by_victim = got.iter().any(|x| x.delivery == id && x.node == victim);
        let seen: Vec<&Got> = got.iter().filter(|x| x.delivery == id).collect();
        let attempts = d["attempts"].as_u64().unwrap() as usize;
        assert_eq!(g.attempt, attempts.to_string(), "{e}\n{g:?}");
        let mut numbers: Vec<&str> = seen.iter().map(|x| x.attempt.as_str()).collect();
        numbers.sort_unstable();
        numbers.dedup();
        let repeats = seen.len() - numbers.len();
        assert!(
            repeats == 0 || (tried_by_victim && repeats == 1),
            "event {id}: {} requests under {} attempt numbers: {e}\n{got:#?}",
            seen.len(),
            numbers.len()
        );
        assert!(
            seen.len() <= attempts + usize::from(tried_by_victim),
            "event {id}: {} requests, {attempts} attempts recorded: {e}\n{got:#?}",
            seen.len()
        );
        assert!(attempts >= 2, "two failures came first: {e}");
        if tried_by_victim {
            assert_ne!(g.node, victim, "the killed node delivered after its death");
            moved += 1;
        }
    }
    assert!(
        moved >= 1,
        "a delivery the killed node held was finished by another"
    );
    assert!(
        got.iter().all(|g| g.signed_ok),
        "every request carries a valid signature: {got:#?}"
    );
    // Events nobody asked for are not sent.
    let unwanted: Vec<&Got> = got
        .iter()
        .filter(|g| !WANTED.contains(&g.body["kind"].as_str().unwrap_or("")))
        .collect();
    assert!(unwanted.is_empty(), "{unwanted:#?}");
    receiver.handle.stop(true).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A receiver that never takes a delivery (500) and one that hangs past
/// the attempt's timeout: each delivery ends `failed` after its attempts,
/// and the node meanwhile runs its executions as usual.
#[actix_rt::test]
async fn a_failing_or_hung_receiver_ends_failed_and_never_holds_up_the_engine() {
    let db = TestDb::create(Backend::Sqlite).expect("sqlite");
    let failing = Receiver::start(Shared {
        always_fail: true,
        ..Shared::default()
    });
    let hung = Receiver::start(Shared {
        stall: Some(Duration::from_secs(30)),
        ..Shared::default()
    });
    let hook = |name: &str, url: &str, timeout_ms: u64| baton::config::WebhookConfig {
        url: url.to_owned(),
        name: Some(name.to_owned()),
        events: vec![],
        secret: None,
        timeout_ms,
        max_attempts: 2,
        backoff_ms: 50,
    };
    let (f, h) = (failing.url.clone(), hung.url.clone());
    let node = start_node(&db, move |c| {
        c.notify.webhooks = vec![hook("failing", &f, 1000), hook("hung", &h, 300)];
    })
    .await;
    let http = Http::new(&node.url());
    import(
        &http,
        &json!({"id": "quick", "start": "a", "items": {
            "a": {"type": "task", "script": "log('a');", "next": "b"},
            "b": {"type": "timer", "for_ms": 50, "next": "e"},
            "e": {"type": "end"}}}),
    )
    .await;
    let ids: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..20 {
            v.push(start(&http, "quick", json!({})).await);
        }
        v
    };
    for id in &ids {
        let e = wait_final(&http, id, Duration::from_secs(10)).await;
        assert_eq!(e["state"], "completed", "{e}");
    }
    eventually("both deliveries of the join end failed", LONG, || async {
        let evs = http.get("/api/cluster/events").await.json;
        evs.as_array().into_iter().flatten().any(|e| {
            e["kind"] == "join"
                && e["deliveries"].as_array().is_some_and(|d| {
                    d.len() == 2
                        && d.iter()
                            .all(|d| d["state"] == "failed" && d["attempts"] == 2)
                })
        })
    })
    .await;
    let evs = http.get("/api/cluster/events").await.json;
    let join = evs
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["kind"] == "join")
        .cloned()
        .unwrap();
    let by: HashMap<&str, &Value> = join["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["webhook"].as_str().unwrap(), d))
        .collect();
    assert_eq!(by["failing"]["last_status"], 500, "{join}");
    assert!(
        by["hung"]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains(&hung.url),
        "the error names the receiver: {join}"
    );
    assert_eq!(failing.got().len(), 2, "two attempts, no more");
    let metrics = http.get("/metrics").await.text;
    let failed = metric_value(&metrics, "baton_webhooks_failed_total{", &[]);
    assert_eq!(failed, Some(2.0), "{metrics}");
    node.stop().await;
    failing.handle.stop(false).await;
    hung.handle.stop(false).await;
}
