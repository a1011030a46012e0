//! The dashboard at `/` in a real browser: Debian's `chromium`, headless,
//! driven over the Chrome DevTools protocol with awc's websocket client
//! (no WebDriver). One test watches a failover happen on a standby's page
//! without a reload; another answers an interaction from the page. Each
//! keeps screenshots under `target/tmp/browser/`.
//!
//! Without chromium the tests say SKIPPED, unless `BATON_REQUIRE_BROWSER`
//! is set (CI), where a missing browser fails them.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};

use crate::util::*;

const LONG: Duration = Duration::from_secs(60);

fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|_| PathBuf::from(b))
        });
    if found.is_none() {
        assert!(
            std::env::var_os("BATON_REQUIRE_BROWSER").is_none(),
            "chromium is not installed and BATON_REQUIRE_BROWSER is set"
        );
        println!("SKIPPED: chromium is not installed");
    }
    found
}

/// Where screenshots go.
fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

type Socket = actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>;

/// A headless chromium and its one page, over the DevTools protocol.
struct Browser {
    child: Child,
    page: Socket,
    next: u64,
    profile: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Browser {
    async fn launch(exe: &PathBuf) -> Browser {
        let profile = std::env::temp_dir().join(unique("baton-chromium"));
        let mut child = Command::new(exe)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=1400,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(url.trim().to_owned());
                    }
                }
            }
        });
        let browser_ws = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("chromium prints its DevTools address");
        // ws://127.0.0.1:PORT/devtools/browser/ID -> the page target.
        let http_base = browser_ws
            .replace("ws://", "http://")
            .split("/devtools")
            .next()
            .unwrap()
            .to_owned();
        let mut page_ws = None;
        for _ in 0..50 {
            let list = Http::new(&http_base).get("/json/list").await.json;
            page_ws = list.as_array().into_iter().flatten().find_map(|t| {
                (t["type"] == "page")
                    .then(|| t["webSocketDebuggerUrl"].as_str().map(str::to_owned))
                    .flatten()
            });
            if page_ws.is_some() {
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
        let (_, page) = awc::Client::new()
            .ws(page_ws.expect("a page target"))
            .max_frame_size(64 << 20)
            .connect()
            .await
            .expect("the page's DevTools socket");
        Browser {
            child,
            page,
            next: 0,
            profile,
        }
    }

    /// One DevTools command, its result.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.page
            .send(awc::ws::Message::Text(msg.into()))
            .await
            .expect("send");
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(30), self.page.next())
                .await
                .expect("DevTools answers")
                .expect("socket open")
                .expect("frame");
            // Chromium sends each message in one frame (the socket takes
            // frames up to 64 MiB).
            let awc::ws::Frame::Text(text) = frame else {
                continue;
            };
            let v: Value = serde_json::from_slice(&text).unwrap_or(Value::Null);
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    async fn navigate(&mut self, url: &str) {
        self.call("Page.enable", json!({})).await;
        self.call("Page.navigate", json!({"url": url})).await;
    }

    /// Evaluates `expr` in the page, its value.
    async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        r["result"]["value"].clone()
    }

    /// Waits until `expr` is true in the page.
    async fn until(&mut self, what: &str, expr: &str) {
        let began = std::time::Instant::now();
        loop {
            if self.eval(expr).await == json!(true) {
                return;
            }
            assert!(
                began.elapsed() < LONG,
                "the page never showed {what}; it shows:\n{}",
                self.eval("document.body.innerText").await
            );
            actix_rt::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn screenshot(&mut self, name: &str) -> PathBuf {
        let r = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64(r["data"].as_str().expect("png data"));
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let path = artifacts().join(name);
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
        path
    }
}

/// Standard base64, decoded.
fn base64(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

macro_rules! on_each_backend {
    ($($m:ident: $b:expr),*) => {$(
        mod $m {
            use super::*;
            #[actix_rt::test]
            async fn the_dashboard_shows_a_failover_as_it_happens() {
                super::failover($b).await
            }
            #[actix_rt::test]
            async fn an_interaction_is_answered_from_the_dashboard_and_a_viewer_gets_no_buttons() {
                super::interaction($b).await
            }
        }
    )*};
}
on_each_backend!(sqlite: Backend::Sqlite, postgres: Backend::Postgres, mysql: Backend::Mysql);

/// The page served by the standby shows both nodes; the active one is
/// killed; without a reload the page shows the standby promoted and the
/// failover event.
async fn failover(b: Backend) {
    let Some(exe) = chromium() else { return };
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
    let mut b1 = serve(&env("b1"));
    eventually("b1 is active", LONG, || async {
        Http::new(&b1.url).get("/api/healthstatus").await.status == 200
    })
    .await;
    let b2 = serve(&env("b2"));
    let http = Http::new(&b1.url);
    import_slow_steps(&http).await;
    for _ in 0..3 {
        start(&http, "slow-steps", json!({"ms": 500})).await;
    }
    let mut browser = Browser::launch(&exe).await;
    browser.navigate(&format!("{}/", b2.url)).await;
    browser
        .until(
            "both nodes, b1 active and b2 standby",
            r##"(() => {
                const r = (n) => document.querySelector(`#nodes tr[data-node="${n}"]`);
                return !!r("b1") && !!r("b2") && r("b1").dataset.role === "active"
                    && r("b2").dataset.role === "standby" && r("b2").dataset.state === "STANDBY";
            })()"##,
        )
        .await;
    browser
        .until(
            "the standby banner linking to the active node",
            r##"getComputedStyle(document.querySelector("#banner")).display !== "none"
               && !!document.querySelector("#active-link") && document.querySelector("#active-link").textContent === "b1""##,
        )
        .await;
    browser
        .screenshot(&format!("dashboard-standby-before-{b:?}.png"))
        .await;
    let marker = browser
        .eval("window.__loaded = Math.random(); window.__loaded")
        .await;

    b1.kill9();
    browser
        .until(
            "b2 promoted",
            r##"(() => {
                const r = document.querySelector('#nodes tr[data-node="b2"]');
                return !!r && r.dataset.role === "active" && r.dataset.state === "RUNNING";
            })()"##,
        )
        .await;
    browser
        .until(
            "the failover event for b1",
            r##"!!document.querySelector('#events li[data-kind="failover"][data-node="b1"]')"##,
        )
        .await;
    assert_eq!(
        browser.eval("window.__loaded").await,
        marker,
        "the page was not reloaded"
    );
    // Now active: the executions b1 held are listed here.
    browser
        .until(
            "the moved executions",
            r##"document.querySelectorAll('#executions tbody tr').length >= 3"##,
        )
        .await;
    browser
        .screenshot(&format!("dashboard-after-failover-{b:?}.png"))
        .await;
}

/// An execution waiting for an interaction is answered from the page; a
/// viewer token first sees it without the buttons it may not use.
async fn interaction(b: Backend) {
    let Some(exe) = chromium() else { return };
    let Some(db) = TestDb::create(b) else { return };
    let node = start_node(&db, |c| c.auth.tokens = operator_and_viewer_tokens()).await;
    let http = Http::new(&node.url()).with_token("op-secret");
    import(
        &http,
        &json!({"id": "ask", "outputs": {"amount": "number"}, "variables": {"amount": 0}, "start": "q",
            "items": {
              "q": {"type": "interaction", "inputs": {"amount": "number"}, "next": "e"},
              "e": {"type": "end"}}}),
    )
    .await;
    let id = start(&http, "ask", json!({})).await;
    eventually("it waits for its answer", LONG, || async {
        http.get(&format!("/api/executions/{id}")).await.json["state"] == "waiting-signal"
    })
    .await;
    let mut browser = Browser::launch(&exe).await;
    browser.navigate(&format!("{}/", node.url())).await;
    let use_token = |t: &str| {
        format!(
            r##"(() => {{ const b = document.querySelector("#token"); b.value = "{t}";
                b.dispatchEvent(new Event("change")); return true; }})()"##
        )
    };
    // The page's script first reads the token it kept (none): type one
    // only after that, as a user would.
    browser
        .until(
            "the page's script running",
            r##"document.readyState === "complete" && typeof refreshAll === "function""##,
        )
        .await;
    let open_execution =
        format!(r##"document.querySelector('a.exec[data-id="{id}"]').click(); true"##);
    browser.eval(&use_token("view-secret")).await;
    browser
        .until(
            "the execution in the list",
            &format!(r##"!!document.querySelector('a.exec[data-id="{id}"]')"##),
        )
        .await;
    browser.eval(&open_execution).await;
    browser
        .until(
            "a viewer sees the execution, no buttons and why",
            &format!(
                r##"document.querySelector("#detail").dataset.id === "{id}"
                   && document.body.dataset.role === "viewer"
                   && document.querySelector("#actions").hidden
                   && document.querySelector("#answer-box").hidden
                   && !document.querySelector("#read-only").hidden"##
            ),
        )
        .await;
    browser
        .screenshot(&format!("dashboard-viewer-{b:?}.png"))
        .await;
    browser.eval(&use_token("op-secret")).await;
    browser.eval(&open_execution).await;
    browser
        .until(
            "the answer form",
            r##"!document.querySelector("#answer-box").hidden && document.querySelector("#answer-wants").textContent.includes("amount")"##,
        )
        .await;
    browser
        .screenshot(&format!("dashboard-interaction-{b:?}.png"))
        .await;
    browser
        .eval(
            r##"document.querySelector("#answer-inputs").value = '{"amount": 42}';
               document.querySelector("#b-answer").click(); true"##,
        )
        .await;
    let e = wait_final(&http, &id, LONG).await;
    assert_eq!(e["state"], "completed", "{e}");
    assert_eq!(e["outputs"]["amount"], 42, "{e}");
    browser
        .until(
            "the answer accepted and the execution completed",
            r##"document.querySelector("#result").dataset.status === "202"
               && document.querySelector("#detail").dataset.state === "completed""##,
        )
        .await;
    node.stop().await;
}
