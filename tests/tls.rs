//! TLS everywhere, with certificates made by the test (rcgen): the API
//! served over HTTPS only, the CLI trusting a private CA, the `http`
//! action calling an HTTPS server on loopback through one pooled client,
//! and PostgreSQL with `sslmode=require`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use serde_json::json;

use crate::util::*;

const LONG: Duration = Duration::from_secs(30);

/// A private CA and a certificate it signed for `localhost` and
/// `127.0.0.1`, as PEM files in a directory of their own.
pub(crate) struct Certs {
    pub(crate) dir: PathBuf,
    pub(crate) ca: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) fn certs() -> Certs {
    let dir = std::env::temp_dir().join(unique("baton-tls-"));
    std::fs::create_dir_all(&dir).expect("cert dir");
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Baton test CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let key = KeyPair::generate().expect("key");
    let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("params");
    let cert = params.signed_by(&key, &ca, &ca_key).expect("cert");
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write PEM");
        p
    };
    Certs {
        ca: write("ca.pem", ca.pem()),
        cert: write("cert.pem", cert.pem()),
        key: write("key.pem", key.serialize_pem()),
        dir,
    }
}

fn tls_on(c: &mut baton::Config, certs: &Certs) {
    c.http.tls_cert = Some(certs.cert.clone());
    c.http.tls_key = Some(certs.key.clone());
}

#[actix_rt::test]
async fn the_api_is_served_over_https_only() {
    let certs = certs();
    let db = TestDb::create(Backend::Sqlite).expect("sqlite");
    let node = start_node(&db, |c| tls_on(c, &certs)).await;
    let url = node.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let https = Http::with_ca(&url, &certs.ca);
    assert_eq!(https.get("/api/healthstatus").await.status, 200);
    // The cluster view advertises the https address.
    let c = https.get("/api/cluster").await.json;
    assert_eq!(c["nodes"][0]["address"], url.as_str(), "{c}");
    // Plain HTTP on the same port gets no answer.
    let plain = Http::new(&url.replace("https://", "http://"));
    assert!(plain.try_get("/api/healthstatus").await.is_err());
    // A client that does not trust the CA refuses the certificate.
    let untrusting = {
        let tls = baton_actors::tls::default_client_config();
        awc::Client::builder()
            .connector(awc::Connector::new().rustls_0_23(tls))
            .finish()
    };
    let err = untrusting
        .get(format!("{url}/api/healthstatus"))
        .send()
        .await
        .expect_err("an unknown issuer is refused");
    assert!(
        err.to_string().to_lowercase().contains("certificate")
            || err.to_string().contains("UnknownIssuer"),
        "{err}"
    );
    node.stop().await;
}

#[actix_rt::test]
async fn the_cli_trusts_a_private_ca_with_ca_cert() {
    let certs = certs();
    let db = TestDb::create(Backend::Sqlite).expect("sqlite");
    let node = start_node(&db, |c| tls_on(c, &certs)).await;
    let url = node.url();
    let bin = env!("CARGO_BIN_EXE_baton");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin)
            .args(args)
            .output()
            .expect("baton runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let ca = certs.ca.to_string_lossy().into_owned();
    let (code, out, err) = run(&["cluster", "status", "--server", &url, "--ca-cert", &ca]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("RUNNING"), "{out}");
    let (code, _, err) = run(&["cluster", "status", "--server", &url]);
    assert_eq!(
        code,
        Some(3),
        "an untrusted certificate is a refused server: {err}"
    );
    assert!(err.contains("cannot reach"), "{err}");
    let (code, _, err) = run(&[
        "cluster",
        "status",
        "--server",
        &url,
        "--ca-cert",
        "/nonexistent.pem",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--ca-cert") && err.contains("/nonexistent.pem"),
        "{err}"
    );
    node.stop().await;
}

/// An HTTPS server on loopback answering `{"n": <calls so far>}` and
/// counting the connections it accepted.
struct EchoServer {
    url: String,
    connections: Arc<AtomicUsize>,
    handle: actix_web::dev::ServerHandle,
}

fn https_echo(certs: &Certs) -> EchoServer {
    use actix_web::{web, App, HttpResponse, HttpServer};
    let tls = baton_actors::tls::server_config(&certs.cert, &certs.key).expect("server TLS");
    let calls = Arc::new(AtomicUsize::new(0));
    let connections = Arc::new(AtomicUsize::new(0));
    let conns = connections.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = HttpServer::new(move || {
        let calls = calls.clone();
        App::new().route(
            "/echo",
            // The body is read: a handler that leaves it unread makes the
            // server close the connection after its answer.
            web::post().to(move |_body: web::Bytes| {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                async move { HttpResponse::Ok().json(json!({ "n": n })) }
            }),
        )
    })
    .workers(1)
    .on_connect(move |_, _| {
        conns.fetch_add(1, Ordering::SeqCst);
    })
    .listen_rustls_0_23(listener, tls)
    .expect("listen")
    .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    EchoServer {
        url: format!("https://127.0.0.1:{port}/echo"),
        connections,
        handle,
    }
}

#[actix_rt::test]
async fn the_http_action_calls_https_through_one_pooled_client() {
    baton_actors::tls::install_provider();
    let certs = certs();
    let echo = https_echo(&certs);
    let calls: serde_json::Map<String, serde_json::Value> = (0..5)
        .map(|i| {
            let next = if i == 4 {
                "e".to_owned()
            } else {
                format!("c{}", i + 1)
            };
            (
                format!("c{i}"),
                json!({"type": "action", "action": "http",
                       "inputs": {"url": "url", "method": "'POST'", "body": "{}"},
                       "outputs": {"last": "body"}, "next": next}),
            )
        })
        .chain([("e".to_owned(), json!({"type": "end"}))])
        .collect();
    let def = json!({"id": "calls", "inputs": {"url": "string"}, "outputs": {"last": "object"},
                     "variables": {"last": {}}, "start": "c0", "items": calls});
    // Trusting the private CA: five calls, one connection.
    let db = TestDb::create(Backend::Sqlite).expect("sqlite");
    let ca = certs.ca.clone();
    let node = start_node(&db, |c| c.actions.http_tls_ca = Some(ca)).await;
    let http = Http::new(&node.url());
    import(&http, &def).await;
    let id = start(&http, "calls", json!({"url": echo.url})).await;
    let e = wait_final(&http, &id, LONG).await;
    assert_eq!(e["state"], "completed", "{e}");
    assert_eq!(e["outputs"]["last"], json!({"n": 5}), "{e}");
    let id = start(&http, "calls", json!({"url": echo.url})).await;
    let e = wait_final(&http, &id, LONG).await;
    assert_eq!(e["outputs"]["last"], json!({"n": 10}), "{e}");
    assert_eq!(
        echo.connections.load(Ordering::SeqCst),
        1,
        "ten calls of two executions share one pooled connection"
    );
    node.stop().await;
    // The system's roots alone do not trust it: the item fails, naming why.
    let db = TestDb::create(Backend::Sqlite).expect("sqlite");
    let node = start_node(&db, |_| {}).await;
    let http = Http::new(&node.url());
    import(&http, &def).await;
    let id = start(&http, "calls", json!({"url": echo.url})).await;
    let e = wait_final(&http, &id, LONG).await;
    assert_eq!(e["state"], "failed", "{e}");
    let error = e["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("action `http` failed") && error.contains(&echo.url),
        "{e}"
    );
    node.stop().await;
    echo.handle.stop(false).await;
}

#[actix_rt::test]
async fn postgres_with_sslmode_require_runs_over_tls() {
    let Some(db) = TestDb::create(Backend::Postgres) else {
        return;
    };
    let sep = if db.url.contains('?') { '&' } else { '?' };
    let url = format!("{}{sep}sslmode=require", db.url);
    let node = start_node(&db, |c| c.database.url = url.clone()).await;
    let ssl: bool = node
        .store()
        .db()
        .run(|c| async move {
            use sea_orm::ConnectionTrait;
            let row = c
                .query_one_raw(sea_orm::Statement::from_string(
                    sea_orm::DbBackend::Postgres,
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                ))
                .await?
                .expect("a row");
            Ok(row.try_get::<bool>("", "ssl")?)
        })
        .await
        .expect("pg_stat_ssl");
    assert!(ssl, "the connection is TLS");
    let http = Http::new(&node.url());
    import(
        &http,
        &json!({"id": "one", "start": "e", "items": {"e": {"type": "end"}}}),
    )
    .await;
    let id = start(&http, "one", json!({})).await;
    assert_eq!(wait_final(&http, &id, LONG).await["state"], "completed");
    node.stop().await;
}

#[actix_rt::test]
async fn bad_tls_settings_stop_start_up_naming_the_key() {
    let certs = certs();
    let load = |pairs: &[(&str, &Path)]| {
        baton::Config::load(
            None,
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string_lossy().into_owned())),
            &[],
        )
        .expect_err("refused")
        .to_string()
    };
    let e = load(&[("BATON_HTTP__TLS_CERT", &certs.cert)]);
    assert!(
        e.contains("http.tls_key") && e.contains("must be set with http.tls_cert"),
        "{e}"
    );
    let e = load(&[
        ("BATON_HTTP__TLS_CERT", &certs.key),
        ("BATON_HTTP__TLS_KEY", &certs.key),
    ]);
    assert!(
        e.contains("http.tls_cert") && e.contains("no certificate"),
        "{e}"
    );
    let e = load(&[
        ("BATON_HTTP__TLS_CERT", &certs.cert),
        ("BATON_HTTP__TLS_KEY", &certs.cert),
    ]);
    assert!(
        e.contains("http.tls_key") && e.contains("private key"),
        "{e}"
    );
    let other = KeyPair::generate().expect("key").serialize_pem();
    let wrong = certs.dir.join("other-key.pem");
    std::fs::write(&wrong, other).expect("write");
    let e = load(&[
        ("BATON_HTTP__TLS_CERT", &certs.cert),
        ("BATON_HTTP__TLS_KEY", &wrong),
    ]);
    assert!(
        e.contains("http.tls_key") && e.contains("does not match"),
        "{e}"
    );
    let e = load(&[(
        "BATON_ACTIONS__HTTP_TLS_CA",
        Path::new("/nonexistent/ca.pem"),
    )]);
    assert!(
        e.contains("actions.http_tls_ca") && e.contains("/nonexistent/ca.pem"),
        "{e}"
    );
}

/// A cluster of HTTPS nodes: each advertises its `https://` address, and
/// a standby sends clients to the active node's.
#[actix_rt::test]
async fn a_cluster_of_https_nodes_points_clients_at_https_addresses() {
    let certs = certs();
    let db = TestDb::create(Backend::Sqlite).expect("sqlite");
    let cluster = |id: &'static str| {
        let certs = &certs;
        move |c: &mut baton::Config| {
            tls_on(c, certs);
            c.node.id = Some(id.into());
            c.cluster.enabled = true;
            c.cluster.heartbeat_interval_ms = 100;
        }
    };
    let a = start_node(&db, cluster("tls-a")).await;
    let ha = Http::with_ca(&a.url(), &certs.ca);
    eventually("a is active", LONG, || async {
        ha.get("/api/healthstatus").await.status == 200
    })
    .await;
    let b = start_node(&db, cluster("tls-b")).await;
    let hb = Http::with_ca(&b.url(), &certs.ca);
    eventually("b is a standby", LONG, || async {
        hb.get("/api/healthstatus").await.json["state"] == "STANDBY"
    })
    .await;
    let r = hb.get("/api/workflows").await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(
        r.text.contains(&a.url()) && a.url().starts_with("https://"),
        "the standby names the active node's https address: {}",
        r.text
    );
    let view = ha.get("/api/cluster").await.json;
    for n in view["nodes"].as_array().cloned().unwrap_or_default() {
        assert!(
            n["address"].as_str().unwrap_or("").starts_with("https://"),
            "{view}"
        );
    }
    b.stop().await;
    a.stop().await;
}
