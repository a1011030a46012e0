//! The command line: `serve`, `migrate`, the client verbs and config
//! errors, run as the real binary.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

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

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Issue 11 items 6, 8, 10 and 15: help lists what a verb takes; errors
/// name the missing directory, the config file and line, and each cause
/// once.
#[actix_rt::test]
async fn help_and_errors_say_what_a_newcomer_needs() {
    let help = text(&baton(&["migrate", "--help"], &[]).stdout);
    assert!(help.contains("--database-url"), "{help}");
    assert!(
        !help.contains("--listen") && !help.contains("--node-id"),
        "{help}"
    );
    let help = text(&baton(&["workflow", "import", "--help"], &[]).stdout);
    assert!(
        help.contains("The definition file") && help.contains("--replace"),
        "{help}"
    );
    let help = text(&baton(&["workflow", "run", "--help"], &[]).stdout);
    assert!(
        help.contains("The workflow's id") && help.contains("--input-str"),
        "{help}"
    );

    // A SQLite file in a directory that does not exist: the directory, once.
    let missing = format!("/tmp/baton-missing-{}/sub", uuid::Uuid::new_v4().simple());
    let out = baton(
        &[
            "migrate",
            "--database-url",
            &format!("sqlite://{missing}/c.db?mode=rwc"),
        ],
        &[],
    );
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&format!("the directory {missing} ")), "{err}");
    assert!(!err.contains("unable to open database file"), "{err}");

    // An address in use: the OS error once, not twice.
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = held.local_addr().expect("addr").to_string();
    let db = TestDb::create(Backend::Sqlite).expect("sqlite");
    let out = baton(
        &["serve", "--listen", &addr, "--database-url", &db.url],
        &[],
    );
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.matches("Address already in use").count(), 1, "{err}");

    // A misspelled section in a file: the section, the file and its line.
    let dir = std::env::temp_dir().join(format!("baton-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("c.toml");
    std::fs::write(
        &file,
        "[cluster]\nenabled = false\n\n[clustr]\nenabled = true\n",
    )
    .expect("write");
    let out = baton(
        &["migrate", "--config", file.to_str().unwrap_or_default()],
        &[],
    );
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "config key `clustr` (file {} line 4)",
            file.display()
        )) && err.contains("unknown section `clustr`"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 11 items 11 and 15: a closed pipe ends a client verb quietly; a
/// value `--input` read as a number where text is declared gets a hint.
#[actix_rt::test]
async fn client_output_can_be_piped_and_input_types_are_explained() {
    let db = TestDb::create(Backend::Sqlite).expect("sqlite");
    let node = serve(&[("BATON_DATABASE__URL", db.url.clone())]);
    let http = Http::new(&node.url);
    import(
        &http,
        &serde_json::json!({"id": "big", "outputs": {"s": "string"}, "variables": {"s": ""},
            "start": "t", "items": {
            "t": {"type": "task", "script": "s = 'x'.repeat(400000);", "next": "e"},
            "e": {"type": "end"}}}),
    )
    .await;
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; {} workflow run big --wait --server {} | head -c 10 >/dev/null",
            env!("CARGO_BIN_EXE_baton"),
            node.url
        ))
        .output()
        .expect("bash");
    let err = text(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {err}", out.status.code());
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );

    let file = format!(
        "{}/examples/workflows/greet.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = baton(&["workflow", "import", &file, "--server", &node.url], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = baton(
        &[
            "workflow", "run", "greet", "--input", "who=42", "--server", &node.url,
        ],
        &[],
    );
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("inputs.who") && err.contains("--input-str"),
        "{err}"
    );
    let out = baton(
        &[
            "workflow",
            "run",
            "greet",
            "--input-str",
            "who=42",
            "--wait",
            "--server",
            &node.url,
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(e["outputs"]["message"], "Hello, 42!");

    // --replace: a new version through the ETag, where a plain import is a 409.
    let out = baton(&["workflow", "import", &file, "--server", &node.url], &[]);
    assert!(!out.status.success() && text(&out.stderr).contains("409"));
    let out = baton(
        &[
            "workflow",
            "import",
            &file,
            "--replace",
            "--server",
            &node.url,
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = text(&baton(&["workflow", "list", "--server", &node.url], &[]).stdout);
    assert!(
        list.lines()
            .any(|l| l.starts_with("greet") && l.contains("v2")),
        "{list}"
    );
}

/// Issue 9 item 6: log lines carry no colour codes when stderr is not a
/// terminal, `BATON_LOG_FORMAT=json` gives one JSON object per line, and
/// a bad format is refused naming the variable.
#[actix_rt::test]
async fn logs_are_plain_or_json_off_a_terminal() {
    use std::io::{BufRead, BufReader};
    let db = TestDb::create(Backend::Sqlite).expect("sqlite");
    let lines_of = |format: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--database-url",
                &db.url,
            ])
            .env("BATON_LOG", "info")
            .env("BATON_LOG_FORMAT", format)
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let done = line.starts_with("baton: node ");
            lines.push(line);
            if done || lines.len() > 200 {
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        lines
    };
    let text = lines_of("text");
    assert!(text.iter().any(|l| l.contains("node started")), "{text:?}");
    assert!(
        text.iter().all(|l| !l.contains('\u{1b}')),
        "no colour codes: {text:?}"
    );
    let json = lines_of("json");
    let objects: Vec<serde_json::Value> = json
        .iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert!(
        objects
            .iter()
            .any(|o| o["level"] == "INFO" && o["fields"]["message"] == "node started"),
        "{json:?}"
    );
    let out = baton(
        &["migrate", "--database-url", &db.url],
        &[("BATON_LOG_FORMAT", "yaml")],
    );
    let err = text_of(&out.stderr);
    assert!(
        !out.status.success() && err.contains("BATON_LOG_FORMAT `yaml`"),
        "{err}"
    );
}

fn text_of(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The operator's verbs against a real node, with the exit codes scripts
/// rely on: 0 done, 1 the execution waited for did not complete, 2 a usage
/// error, 3 the server unreachable or refusing.
#[actix_rt::test]
async fn operator_verbs_drive_executions_and_exit_codes_tell_outcomes_apart() {
    let db = TestDb::create(Backend::Sqlite).expect("sqlite");
    let node = serve(&[
        ("BATON_DATABASE__URL", db.url.clone()),
        ("BATON_NODE__ID", "ops-node".into()),
    ]);
    let server = node.url.clone();
    let run = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--server", server.as_str()]);
        let out = baton(&all, &[]);
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let ok = |args: &[&str]| {
        let (code, out, err) = run(args);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        out
    };
    for f in ["approval.yaml", "restock.json", "slow-steps.yaml"] {
        let file = format!("{}/examples/workflows/{f}", env!("CARGO_MANIFEST_DIR"));
        ok(&["workflow", "import", &file]);
    }

    // Signal, answer, get, logs, list.
    ok(&["workflow", "run", "approval", "--execution-id", "ap-1"]);
    ok(&[
        "execution",
        "signal",
        "ap-1",
        "approve",
        "--payload",
        r#"{"by": "ann"}"#,
    ]);
    eventually("ap-1 asks", Duration::from_secs(30), || async {
        let v: serde_json::Value =
            serde_json::from_str(&ok(&["execution", "get", "ap-1", "-o", "json"]))
                .unwrap_or_default();
        v["waiting_for"]["kind"] == "interaction"
    })
    .await;
    let (code, _, err) = run(&["execution", "answer", "ap-1", "--input", "amount=five"]);
    assert_eq!(code, Some(3), "a refused answer: {err}");
    assert!(err.contains("inputs.amount"), "{err}");
    ok(&["execution", "answer", "ap-1", "--input", "amount=5"]);
    eventually("ap-1 completes", Duration::from_secs(30), || async {
        ok(&["execution", "get", "ap-1"]).contains("completed")
    })
    .await;
    let shown = ok(&["execution", "get", "ap-1"]);
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("state") && l.ends_with("completed")),
        "{shown}"
    );
    let logs = ok(&["execution", "logs", "ap-1"]);
    assert!(
        logs.starts_with("TIME") && logs.contains("ask-amount"),
        "{logs}"
    );
    let records: serde_json::Value =
        serde_json::from_str(&ok(&["execution", "logs", "ap-1", "-o", "json"])).expect("JSON");
    assert!(
        records.as_array().is_some_and(|r| r.len() >= 8),
        "{records}"
    );
    let listed: serde_json::Value = serde_json::from_str(&ok(&[
        "execution",
        "list",
        "--workflow",
        "approval",
        "--state",
        "completed",
        "-o",
        "json",
    ]))
    .expect("JSON");
    assert_eq!(listed[0]["id"], "ap-1", "{listed}");
    let table = ok(&["execution", "list"]);
    assert!(table.starts_with("ID") && table.contains("ap-1"), "{table}");

    // A failed run exits 1; a resume with a variable completes it.
    let (code, out, err) = run(&[
        "workflow",
        "run",
        "restock",
        "--input",
        "sku=A-1",
        "--execution-id",
        "rs-1",
        "--wait",
    ]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("ended failed"), "{err}");
    let out = ok(&[
        "execution",
        "resume",
        "rs-1",
        "--variable",
        "in_stock=true",
        "--wait",
    ]);
    assert!(out.contains("\"completed\""), "{out}");

    // A wait that times out exits 1 and says so, with plain progress lines
    // off a terminal; cancel, delete, and then the execution is gone (3).
    let (code, _, err) = run(&[
        "workflow",
        "run",
        "slow-steps",
        "--input",
        "ms=60000",
        "--execution-id",
        "sl-1",
        "--wait",
        "--timeout",
        "0.5",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("sl-1: running s1") && err.contains("still running"),
        "{err}"
    );
    assert!(!err.contains('\r'), "no live line off a terminal: {err:?}");
    ok(&["execution", "cancel", "sl-1", "--wait", "--timeout", "10"]);
    ok(&["execution", "delete", "sl-1"]);
    let (code, _, err) = run(&["execution", "get", "sl-1"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("404"), "{err}");

    // Cluster events and completions.
    let events: serde_json::Value =
        serde_json::from_str(&ok(&["cluster", "events", "-o", "json"])).expect("JSON");
    assert!(events.is_array(), "{events}");
    let status: serde_json::Value =
        serde_json::from_str(&ok(&["cluster", "status", "-o", "json"])).expect("JSON");
    assert_eq!(status["mode"], "standalone");
    for shell in ["bash", "zsh", "fish"] {
        let out = baton(&["completions", shell], &[]);
        assert!(out.status.success(), "{shell}");
        assert!(text(&out.stdout).contains("execution"), "{shell}");
    }

    // Usage errors exit 2; an unreachable server exits 3.
    for args in [
        &["execution", "frobnicate"][..],
        &["execution", "answer", "ap-1", "--input", "amount"],
        &["execution", "signal", "ap-1", "go", "--payload", "not json"],
        &["workflow", "run", "approval", "--timeout", "3"],
        &["execution", "list", "-o", "yaml"],
    ] {
        let (code, _, err) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
    }
    let out = baton(
        &["execution", "list", "--server", "http://127.0.0.1:1"],
        &[],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("cannot reach"));
}

/// One execution's log lines carry its spans (execution, workflow, node,
/// epoch; item, step, attempt) on every node that runs it, so it can be
/// followed across a kill -9 and its recovery on another node; each HTTP
/// request gets an access line at debug (`baton::access`).
#[actix_rt::test]
async fn one_executions_lines_follow_it_across_nodes() {
    let db = TestDb::create(Backend::Sqlite).expect("sqlite");
    let dir = std::env::temp_dir().join(unique("baton-spans-"));
    std::fs::create_dir_all(&dir).expect("dir");
    let spawn = |id: &str| {
        let log = dir.join(format!("{id}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_baton"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--database-url",
                &db.url,
                "--node-id",
                id,
            ])
            .env("BATON_LOG", "info,baton::access=debug")
            .env("BATON_LOG_FORMAT", "json")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn");
        (child, log)
    };
    let lines = |log: &std::path::Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let url_of = |log: std::path::PathBuf| async move {
        let listening = |log: &std::path::Path| {
            std::fs::read_to_string(log).ok().and_then(|text| {
                text.lines()
                    .find_map(|l| l.split("listening on ").nth(1))
                    .map(|u| u.trim().to_owned())
            })
        };
        eventually("the node listens", Duration::from_secs(30), || async {
            listening(&log).is_some()
        })
        .await;
        listening(&log).unwrap_or_default()
    };
    let (mut a, log_a) = spawn("span-a");
    let http = Http::new(&url_of(log_a.clone()).await);
    import(
        &http,
        &json!({"id": "follow", "start": "say1", "items": {
            "say1": {"type": "action", "action": "log", "inputs": {"message": "'first'"}, "next": "nap"},
            "nap": {"type": "action", "action": "sleep", "inputs": {"ms": "1500"}, "next": "say2"},
            "say2": {"type": "action", "action": "log", "inputs": {"message": "'second'"}, "next": "e"},
            "e": {"type": "end"}}}),
    )
    .await;
    let id = start(&http, "follow", json!({})).await;
    eventually("the nap runs", Duration::from_secs(30), || async {
        http.get(&format!("/api/executions/{id}")).await.json["current_item"] == "nap"
    })
    .await;
    let _ = a.kill();
    let _ = a.wait();
    let (mut b, log_b) = spawn("span-b");
    let http = Http::new(&url_of(log_b.clone()).await);
    let e = wait_final(&http, &id, Duration::from_secs(30)).await;
    assert_eq!(e["state"], "completed", "{e}");
    let _ = b.kill();
    let _ = b.wait();

    // The line of `message` on a node, with its execution and item spans.
    let line = |lines: &[serde_json::Value], message: &str| {
        lines
            .iter()
            .find(|l| l["fields"]["message"] == message)
            .cloned()
            .unwrap_or_else(|| panic!("no `{message}` line in {lines:?}"))
    };
    let span = |l: &serde_json::Value, name: &str| {
        l["spans"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no {name} span in {l}"))
    };
    let first = line(&lines(&log_a), "first");
    let second = line(&lines(&log_b), "second");
    for (l, node) in [(&first, "span-a"), (&second, "span-b")] {
        let ex = span(l, "execution");
        assert_eq!(
            (&ex["execution"], &ex["workflow"], &ex["node"]),
            (&json!(id), &json!("follow"), &json!(node)),
            "{l}"
        );
    }
    let epoch = |l: &serde_json::Value| span(l, "execution")["epoch"].as_i64().unwrap_or(0);
    assert!(
        epoch(&second) > epoch(&first),
        "the new owner's epoch: {first} {second}"
    );
    assert_eq!(span(&first, "item")["item"], "say1");
    assert_eq!(span(&second, "item")["item"], "say2");
    assert_eq!(span(&second, "item")["attempt"], 1);
    // Access lines, at debug.
    let access = lines(&log_b)
        .into_iter()
        .find(|l| {
            l["target"] == "baton::access" && l["fields"]["path"] == format!("/api/executions/{id}")
        })
        .expect("an access line for the execution's GET");
    assert_eq!(access["fields"]["status"], 200, "{access}");
    assert_eq!(access["fields"]["method"], "GET", "{access}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `baton bench nodes` (the two-active-node figures in docs/scaling.md):
/// a cluster of two real `baton serve` processes with `active_nodes = 2`
/// on one SQLite file finishes every workflow started over HTTP, and each
/// node completes the half its clients sent it; a node count of 0 is
/// refused naming the option.
#[actix_rt::test]
async fn bench_nodes_spreads_the_starts_over_two_active_nodes() {
    let opts = baton::bench::nodes::NodesOptions {
        database_url: None,
        nodes: vec![2],
        workflows: 40,
        steps: 2,
        clients: 4,
        exe: std::path::PathBuf::from(env!("CARGO_BIN_EXE_baton")),
    };
    let r = baton::bench::nodes::run_one(&opts, 2, 0)
        .await
        .expect("the bench runs");
    assert_eq!(r.nodes, 2);
    let counts: Vec<i64> = r.shares.iter().map(|(_, n)| *n).collect();
    assert_eq!(counts, vec![20, 20], "each node completes its half: {r:?}");
    assert!(r.items_per_sec > 0.0);
    let err = baton::bench::nodes::run_one(&opts, 0, 1)
        .await
        .expect_err("no nodes");
    assert!(err.to_string().contains("--nodes"), "{err}");
}
