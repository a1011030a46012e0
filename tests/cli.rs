//! The command line: `serve`, `migrate`, the client verbs and config
//! errors, run as the real binary.

use std::process::Command;

use crate::util::*;

fn baton(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_baton"));
    cmd.args(args).env("BATON_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("baton runs")
}

#[actix_rt::test]
async fn client_verbs_import_run_and_show_the_cluster() {
    let db = TestDb::create(Backend::Sqlite).expect("sqlite");
    let node = serve(&[
        ("BATON_DATABASE__URL", db.url.clone()),
        ("BATON_NODE__ID", "cli-node".into()),
    ]);
    let server = node.url.clone();
    let file = format!(
        "{}/examples/workflows/order.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = baton(&["workflow", "import", &file, "--server", &server], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = baton(
        &[
            "workflow", "run", "order", "--input", "n=7", "--input", "who=ann", "--wait",
            "--server", &server,
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON out");
    assert_eq!(e["outputs"]["total"], 114);
    let out = baton(
        &[
            "workflow", "run", "order", "--input", "n=oops", "--server", &server,
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("inputs.n"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = baton(&["workflow", "import", &file, "--server", &server], &[]);
    assert!(
        !out.status.success(),
        "a second import of the same id is refused"
    );
    let out = baton(&["cluster", "status", "--server", &server], &[]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && table.contains("cli-node") && table.contains("standalone"),
        "{table}"
    );
    let row = table
        .lines()
        .find(|l| l.starts_with("cli-node"))
        .unwrap_or_default();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cols.get(1..4),
        Some(&["active", "RUNNING", "1"][..]),
        "role, state and epoch: {table}"
    );
    let out = baton(&["workflow", "list", "--server", &server], &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("order"));
}

#[actix_rt::test]
async fn bad_configuration_stops_start_up_naming_the_key() {
    let out = baton(&["serve"], &[("BATON_CLUSTER__HEARTBEAT_MS", "3")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cluster.heartbeat_ms") && err.contains("BATON_CLUSTER__HEARTBEAT_MS"),
        "{err}"
    );

    let out = baton(&["serve"], &[("BATON_SCRIPTS__TIMEOUT_MS", "soon")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("scripts.timeout_ms"),
        "{err}"
    );

    let dir = std::env::temp_dir().join(format!("baton-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[database]\nurl = \"oracle://x\"\n").expect("write");
    let out = baton(
        &["serve", "--config", file.to_str().unwrap_or_default()],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("database.url"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// At 2 missed heartbeats a node fences itself on timer jitter alone.
#[actix_rt::test]
async fn failover_heartbeats_below_three_is_refused_at_start() {
    let db = TestDb::create(Backend::Sqlite).expect("sqlite");
    let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
        .arg("serve")
        .env("BATON_LOG", "warn")
        .env("BATON_HTTP__LISTEN", "127.0.0.1:0")
        .env("BATON_DATABASE__URL", &db.url)
        .env("BATON_CLUSTER__ENABLED", "true")
        .env("BATON_CLUSTER__FAILOVER_HEARTBEATS", "2")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("baton runs");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("baton serve started with cluster.failover_heartbeats = 2");
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("cluster.failover_heartbeats")
            && err.contains("BATON_CLUSTER__FAILOVER_HEARTBEATS")
            && err.contains("at least 3"),
        "{err}"
    );
}

#[actix_rt::test]
async fn migrate_applies_the_schema_and_exits() {
    let db = TestDb::create(Backend::Sqlite).expect("sqlite");
    let out = baton(&["migrate", "--database-url", &db.url], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = store(&db).await;
    assert!(s.workflows().await.expect("schema exists").is_empty());
}
