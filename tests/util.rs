//! Test helpers: fresh databases per test on each backend, in-process
//! nodes, the real `baton` binary as a child process, an HTTP client, and
//! `eventually`.

use std::future::Future;
use std::time::{Duration, Instant};

use baton::{Config, Node, NodeHandle};
use serde_json::Value;

/// The three supported databases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    Mysql,
}

/// A database of its own for one test; dropped with it.
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    admin_url: Option<String>,
    name: String,
    dir: Option<std::path::PathBuf>,
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
        .chars()
        .take(40)
        .collect()
}

/// Runs `work` on one admin connection, on a thread and runtime of its own
/// (it is called from `Drop`, inside or outside a runtime).
fn with_admin<F, Fut>(admin_url: &str, work: F) -> Result<(), String>
where
    F: FnOnce(sea_orm::DatabaseConnection) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), sea_orm::DbErr>>,
{
    let url = admin_url.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async move {
            let mut opts = sea_orm::ConnectOptions::new(url);
            opts.max_connections(1)
                .sqlx_logging(false)
                .connect_timeout(Duration::from_secs(5));
            let db = sea_orm::Database::connect(opts)
                .await
                .map_err(|e| e.to_string())?;
            work(db.clone()).await.map_err(|e| e.to_string())?;
            db.close().await.map_err(|e| e.to_string())
        })
    })
    .join()
    .map_err(|_| "admin thread panicked".to_owned())?
}

/// Ends every MariaDB session connected to database `name`.
fn kill_mysql_sessions(admin_url: &str, name: &str) -> Result<(), String> {
    let name = name.to_owned();
    with_admin(admin_url, |db| async move {
        use sea_orm::ConnectionTrait;
        let rows = db
            .query_all_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::MySql,
                format!(
                    "SELECT CAST(ID AS SIGNED) AS id FROM information_schema.PROCESSLIST \
                     WHERE DB = '{name}' AND ID <> CONNECTION_ID()"
                ),
            ))
            .await?;
        for r in rows {
            if let Ok(id) = r.try_get::<i64>("", "id") {
                let _ = db.execute_unprepared(&format!("KILL {id}")).await;
            }
        }
        Ok(())
    })
}

fn run_admin(admin_url: &str, sql: &str) -> Result<(), String> {
    let sql = sql.to_owned();
    with_admin(admin_url, |db| async move {
        use sea_orm::ConnectionTrait;
        db.execute_unprepared(&sql).await.map(|_| ())
    })
}

impl TestDb {
    /// Runs `sql` on the server's admin connection, with `{db}` replaced by
    /// this test database's name (PostgreSQL and MariaDB only).
    pub fn admin_sql(&self, sql: &str) {
        let admin = self.admin_url.as_deref().expect("a server database");
        run_admin(admin, &sql.replace("{db}", &self.name)).expect("admin statement");
    }

    /// A fresh database, or `None` (with the reason printed) when the
    /// backend's server is not configured on this machine.
    pub fn create(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(unique("baton-test-"));
                std::fs::create_dir_all(&dir).expect("temp dir");
                Some(TestDb {
                    url: format!("sqlite://{}?mode=rwc", dir.join("baton.db").display()),
                    backend,
                    admin_url: None,
                    name: String::new(),
                    dir: Some(dir),
                })
            }
            Backend::Postgres | Backend::Mysql => {
                let var = if backend == Backend::Postgres {
                    "BATON_TEST_POSTGRES_URL"
                } else {
                    "BATON_TEST_MYSQL_URL"
                };
                let Ok(admin) = std::env::var(var) else {
                    eprintln!(
                        "SKIPPED: {var} is not set, so this {backend:?} test does not run here"
                    );
                    return None;
                };
                let name = unique("baton_t_");
                run_admin(&admin, &format!("CREATE DATABASE {name}"))
                    .unwrap_or_else(|e| panic!("creating database {name} via {var}: {e}"));
                let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
                Some(TestDb {
                    url: format!("{base}/{name}"),
                    backend,
                    admin_url: Some(admin),
                    name,
                    dir: None,
                })
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(admin) = &self.admin_url {
            let sql = match self.backend {
                Backend::Postgres => format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
                _ => format!("DROP DATABASE IF EXISTS {}", self.name),
            };
            // MariaDB has no WITH (FORCE): a connection a failed test left
            // in a transaction would hold the drop forever. End them first.
            if self.backend == Backend::Mysql {
                if let Err(e) = kill_mysql_sessions(admin, &self.name) {
                    eprintln!("warning: could not end the sessions of {}: {e}", self.name);
                }
            }
            if let Err(e) = run_admin(admin, &sql) {
                eprintln!("warning: could not drop test database {}: {e}", self.name);
            }
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A node on `db`, listening on a free loopback port.
/// Waits until `node` has begun `n` items. An item's start is recorded
/// (`started` in its log) before it begins: with the execution's creation,
/// or with the previous item's completion. A stop in between hands the item
/// off untouched, so a test that means to interrupt a running item waits
/// for this, not for the log record.
pub async fn items_begun(node: &NodeHandle, n: u64) {
    let metrics = node.metrics();
    eventually(
        &format!("{n} items begun"),
        Duration::from_secs(30),
        || async {
            metrics
                .items_started
                .load(std::sync::atomic::Ordering::Relaxed)
                >= n
        },
    )
    .await;
}

pub async fn start_node(db: &TestDb, tweak: impl FnOnce(&mut Config)) -> NodeHandle {
    let mut config = Config::default();
    config.database.url = db.url.clone();
    config.database.max_connections = 8;
    config.http.listen = "127.0.0.1:0".into();
    config.http.workers = 1;
    config.node.id = Some(unique("node-"));
    tweak(&mut config);
    Node::builder()
        .config(config)
        .start()
        .await
        .expect("node starts")
}

/// A new execution `id` of workflow `w` owned by `owner`, accepted under
/// `epoch` (`None`: not checked), starting at item `a`.
pub fn new_start(id: &str, owner: &str, epoch: Option<i64>) -> baton_actors::store::NewExecution {
    baton_actors::store::NewExecution {
        id: id.into(),
        workflow_id: "w".into(),
        workflow_version: 1,
        parent_id: None,
        inputs: serde_json::json!({}),
        variables: serde_json::json!({}),
        start_item: "a".into(),
        owner_node: owner.into(),
        node_epoch: epoch,
        expect_current: false,
    }
}

/// A store on `db`, for looking behind the API.
pub async fn store(db: &TestDb) -> baton_actors::Store {
    baton_actors::Store::connect(&db.url, 2)
        .await
        .expect("store connects")
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: awc::http::header::HeaderMap,
    pub json: Value,
    pub text: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

/// A small HTTP client for tests.
#[derive(Clone)]
pub struct Http {
    base: String,
    client: awc::Client,
}

impl Http {
    pub fn new(base: &str) -> Http {
        Http {
            base: base.to_owned(),
            client: awc::Client::builder()
                .timeout(Duration::from_secs(30))
                .finish(),
        }
    }

    /// This client presenting `token` as `Authorization: Bearer` on
    /// every request.
    pub fn with_token(self, token: &str) -> Http {
        Http {
            base: self.base,
            client: awc::Client::builder()
                .bearer_auth(token)
                .timeout(Duration::from_secs(30))
                .finish(),
        }
    }

    /// A client of an `https://` node whose certificate `ca` (a PEM file)
    /// signed.
    pub fn with_ca(base: &str, ca: &std::path::Path) -> Http {
        let tls = baton_actors::tls::client_config("test CA", Some(ca)).expect("test CA");
        Http {
            base: base.to_owned(),
            client: awc::Client::builder()
                .connector(awc::Connector::new().rustls_0_23(tls))
                .timeout(Duration::from_secs(30))
                .finish(),
        }
    }

    /// The request as sent, or why it could not be (TLS, connection).
    pub async fn try_get(&self, path: &str) -> Result<u16, String> {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| e.to_string())
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Resp {
        let method = awc::http::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        let mut has_ct = false;
        for (k, v) in headers {
            has_ct |= k.eq_ignore_ascii_case("content-type");
            req = req.insert_header((*k, *v));
        }
        if !has_ct && body.is_some() {
            req = req.insert_header(("Content-Type", "application/json"));
        }
        let mut resp = match body {
            Some(b) => req.send_body(b).await,
            None => req.send().await,
        }
        .expect("request sent");
        let bytes = resp.body().limit(64 << 20).await.expect("body read");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Resp {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            text,
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.request("GET", path, &[], None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.request("POST", path, &[], Some(body.to_string().into_bytes()))
            .await
    }
}

/// Waits until `cond` holds, checking every 20 ms; panics after `deadline`.
pub async fn eventually<F, Fut>(what: &str, deadline: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if cond().await {
            return;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A definition from `examples/workflows/`.
pub fn example(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/examples/workflows/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("example workflow")
}

/// Imports `examples/workflows/slow-steps.yaml`, asserting 201.
pub async fn import_slow_steps(http: &Http) {
    let r = http
        .request(
            "POST",
            "/api/workflows",
            &[("Content-Type", "application/yaml")],
            Some(example("slow-steps.yaml")),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

/// Imports a definition, asserting 201.
pub async fn import(http: &Http, body: &Value) {
    let r = http.post("/api/workflows", body).await;
    assert_eq!(r.status, 201, "import failed: {}", r.text);
}

/// Starts an execution, asserting 202; returns its id.
pub async fn start(http: &Http, workflow: &str, inputs: Value) -> String {
    let r = http
        .post(
            &format!("/api/workflows/{workflow}/executions"),
            &serde_json::json!({ "inputs": inputs }),
        )
        .await;
    assert_eq!(r.status, 202, "start failed: {}", r.text);
    r.json["id"].as_str().expect("execution id").to_owned()
}

/// Waits until an execution reaches a final state; returns it.
pub async fn wait_final(http: &Http, id: &str, deadline: Duration) -> Value {
    let start = Instant::now();
    loop {
        let r = http.get(&format!("/api/executions/{id}")).await;
        let last = r.json.clone();
        if matches!(
            last["state"].as_str(),
            Some("completed" | "failed" | "canceled")
        ) {
            return last;
        }
        if start.elapsed() > deadline {
            panic!("execution {id} did not finish in {deadline:?}: {last}");
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The real `baton` binary running `serve`, killed when dropped.
pub type Process = baton::process::NodeProcess;

/// Starts `baton serve` with `env` and waits until it listens.
pub fn serve(env: &[(&str, String)]) -> Process {
    Process::spawn(std::path::Path::new(env!("CARGO_BIN_EXE_baton")), env, true)
        .expect("baton serve starts")
}

/// Generates one test per backend from `async fn name(b: Backend)`.
#[macro_export]
macro_rules! on_all_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[actix_rt::test] async fn $name() { super::$name($crate::util::Backend::Sqlite).await } )*
        }
        mod postgres {
            $( #[actix_rt::test] async fn $name() { super::$name($crate::util::Backend::Postgres).await } )*
        }
        mod mysql {
            $( #[actix_rt::test] async fn $name() { super::$name($crate::util::Backend::Mysql).await } )*
        }
    };
}

/// The database proxy of the chaos checker, for the tests' cuts.
pub use baton::chaos::TcpProxy;

/// Watches a test database's sessions for an `UPDATE` of one table that
/// waits on a row lock another transaction holds. PostgreSQL: a session of
/// this database waiting on a lock. MariaDB: an `UPDATE` of the table in
/// progress for at least `min_secs` in this database (`INNODB_TRX` is
/// server-wide, so other tests' waits would count, and it leaves out
/// autocommit statements). Not for SQLite: it has no row locks.
pub struct LockWatcher {
    conn: sea_orm::DatabaseConnection,
    backend: sea_orm::DbBackend,
    sql: String,
}

impl LockWatcher {
    pub async fn new(db: &TestDb, b: Backend, table: &str, min_secs: u32) -> LockWatcher {
        let (backend, sql) = match b {
            Backend::Postgres => (
                sea_orm::DbBackend::Postgres,
                "SELECT COUNT(*)::BIGINT AS n FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    .to_owned(),
            ),
            Backend::Mysql => (
                sea_orm::DbBackend::MySql,
                format!(
                    "SELECT CAST(COUNT(*) AS SIGNED) AS n FROM information_schema.PROCESSLIST \
                     WHERE DB = DATABASE() AND COMMAND <> 'Sleep' AND TIME >= {min_secs} \
                     AND INFO LIKE 'UPDATE `{table}`%'"
                ),
            ),
            Backend::Sqlite => unreachable!("no row locks on SQLite"),
        };
        let conn = sea_orm::Database::connect(&db.url).await.expect("connect");
        LockWatcher { conn, backend, sql }
    }

    /// The dialect, for the test's own statements.
    pub fn backend(&self) -> sea_orm::DbBackend {
        self.backend
    }

    /// Whether such an `UPDATE` waits now.
    pub async fn waiting(&self) -> bool {
        use sea_orm::ConnectionTrait;
        self.conn
            .query_one_raw(sea_orm::Statement::from_string(
                self.backend,
                self.sql.clone(),
            ))
            .await
            .ok()
            .flatten()
            .and_then(|r| r.try_get::<i64>("", "n").ok())
            .is_some_and(|n| n >= 1)
    }
}

/// Checks an execution's item log: every step `1..=steps` is present with
/// exactly one `completed` record, and at most `max_reruns` steps were
/// started more than once (a `resumed` record or a second `started`).
/// Returns how many were. A kill may re-run only the item that was
/// running (1 per execution); a graceful stop none at all.
pub fn assert_runs(id: &str, log: &[Value], steps: i64, max_reruns: usize) -> usize {
    let mut by_step: std::collections::HashMap<i64, (usize, usize, usize)> =
        std::collections::HashMap::new();
    for l in log {
        let e = by_step.entry(l["step"].as_i64().unwrap_or(-1)).or_default();
        match l["event"].as_str() {
            Some("started") => e.0 += 1,
            Some("completed") => e.1 += 1,
            Some("resumed") => e.2 += 1,
            _ => {}
        }
    }
    for step in 1..=steps {
        let (_, completed, _) = by_step.get(&step).copied().unwrap_or_default();
        assert_eq!(
            completed, 1,
            "{id} step {step}: exactly one completion record: {log:?}"
        );
    }
    let mut steps_seen: Vec<i64> = by_step.keys().copied().collect();
    steps_seen.sort_unstable();
    assert_eq!(
        steps_seen,
        (1..=steps).collect::<Vec<_>>(),
        "{id}: every step and no other: {log:?}"
    );
    let reran = by_step
        .values()
        .filter(|(started, _, resumed)| *started > 1 || *resumed > 0)
        .count();
    assert!(
        reran <= max_reruns,
        "{id}: {reran} item(s) ran again, at most {max_reruns} may: {log:?}"
    );
    reran
}

/// Steps of `slow-steps` (three sleeps, three counters, the end).
pub const SLOW_STEPS: i64 = 7;

/// Two `[auth]` tokens: `op-secret` (operator) and `view-secret` (viewer).
pub fn operator_and_viewer_tokens() -> Vec<baton::config::TokenConfig> {
    use sha2::Digest;
    let digest = |t: &str| hex::encode(sha2::Sha256::digest(t.as_bytes()));
    vec![
        baton::config::TokenConfig {
            sha256: digest("op-secret"),
            role: baton::config::Role::Operator,
        },
        baton::config::TokenConfig {
            sha256: digest("view-secret"),
            role: baton::config::Role::Viewer,
        },
    ]
}

/// A node's registration as a standby, for store-level cluster tests.
pub fn standby_registration(id: &str) -> baton_actors::store::NodeRegistration {
    baton_actors::store::NodeRegistration {
        id: id.into(),
        address: format!("http://{id}"),
        role: "standby".into(),
        state: "STANDBY".into(),
        fingerprint: "{}".into(),
    }
}

/// The ids of the nodes active and running in the store, sorted.
pub async fn active_nodes(store: &baton_actors::Store) -> Vec<String> {
    let (nodes, _) = store.nodes().await.expect("nodes");
    let mut ids: Vec<String> = nodes
        .into_iter()
        .filter(|n| n.role == "active" && n.state == "RUNNING")
        .map(|n| n.id)
        .collect();
    ids.sort();
    ids
}

/// The value of the first sample in a `/metrics` text whose line starts
/// with `series` (a name, or a name and the start of its labels) and
/// contains every one of `labels`.
pub fn metric_value(metrics: &str, series: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.trim().parse().ok())
}
