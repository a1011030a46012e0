//! `deploy/`: the systemd unit, the example node configurations and the
//! HAProxy configuration are checked by the tools that will read them
//! (`systemd-analyze verify`, `haproxy -c`) and by Baton's own loader. In
//! CI (`BATON_REQUIRE_DEPLOY_TOOLS`) a missing tool fails; elsewhere those
//! two tests say SKIPPED.

use std::path::{Path, PathBuf};
use std::process::Command;

use baton::Config;

fn deploy(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(name)
}

/// Whether `tool` runs; a missing tool fails in CI.
fn have(tool: &str) -> bool {
    let found = Command::new(tool).arg("--version").output().is_ok();
    if !found {
        assert!(
            std::env::var_os("BATON_REQUIRE_DEPLOY_TOOLS").is_none(),
            "{tool} is not installed and BATON_REQUIRE_DEPLOY_TOOLS is set"
        );
        println!("SKIPPED: {tool} is not installed");
    }
    found
}

#[test]
fn the_example_node_configs_load_and_agree_on_the_cluster() {
    let mut ids = Vec::new();
    let mut fingerprints = Vec::new();
    // The files name /etc/baton/tls/...; the test's own certificates
    // stand in for them (a flag overrides a file's key).
    let certs = crate::tls::certs();
    let tls = [
        ("http.tls_cert".to_owned(), format!("{:?}", certs.cert)),
        ("http.tls_key".to_owned(), format!("{:?}", certs.key)),
    ];
    for n in ["a", "b", "c"] {
        let path = deploy(&format!("node-{n}.toml"));
        let c = Config::load(Some(&path), Vec::new(), &tls)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(c.http.tls(), "HTTPS");
        assert!(c.database.url.contains("sslmode=verify-full"));
        let advertised = c.node.advertise_url.as_deref().unwrap_or_default();
        assert!(advertised.starts_with("https://"), "{advertised}");
        assert!(c.cluster.enabled);
        assert!(c.node.advertise_url.is_some(), "a wildcard listen needs it");
        ids.push(c.node.id.clone());
        fingerprints.push(c.fingerprint());
    }
    ids.dedup();
    assert_eq!(ids.len(), 3, "three distinct node ids");
    assert!(
        fingerprints.windows(2).all(|w| w[0] == w[1]),
        "the same [cluster] and [scripts] on every node"
    );
}

#[test]
fn haproxy_accepts_the_example() {
    if !have("haproxy") {
        return;
    }
    let out = Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(deploy("haproxy.cfg"))
        .output()
        .expect("haproxy runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn systemd_accepts_the_unit() {
    if !have("systemd-analyze") {
        return;
    }
    // The unit names the installed binary; verify a copy that names this
    // build's (systemd-analyze checks that the command exists).
    let text = std::fs::read_to_string(deploy("baton.service")).expect("unit");
    assert!(text.contains("ExecStart=/usr/local/bin/baton serve"));
    let dir = std::env::temp_dir().join(format!("baton-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let unit = dir.join("baton.service");
    std::fs::write(
        &unit,
        text.replace("/usr/local/bin/baton", env!("CARGO_BIN_EXE_baton")),
    )
    .expect("write");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze runs");
    let err = String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("Unknown"), "unknown settings: {err}");
}

/// The metric names a PromQL expression uses (`baton_*`, `process_*`).
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("baton_") || t.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

/// The Prometheus alert rules and the Grafana dashboard in `deploy/` use
/// only metrics a running cluster node exposes (by their `# HELP` lines),
/// and every alert says what it is about.
#[actix_rt::test]
async fn the_alert_rules_and_the_dashboard_name_only_metrics_a_node_exposes() {
    let db = crate::util::TestDb::create(crate::util::Backend::Sqlite).expect("sqlite");
    let node = crate::util::start_node(&db, |c| {
        c.cluster.enabled = true;
        c.cluster.heartbeat_interval_ms = 200;
    })
    .await;
    let http = crate::util::Http::new(&node.url());
    let seen: std::rc::Rc<std::cell::RefCell<std::collections::HashSet<String>>> =
        Default::default();
    crate::util::eventually(
        "the heartbeat gauges appear",
        std::time::Duration::from_secs(30),
        || {
            let (http, seen) = (http.clone(), seen.clone());
            async move {
                let text = http.get("/metrics").await.text;
                *seen.borrow_mut() = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("# HELP "))
                    .filter_map(|l| l.split(' ').next())
                    .map(str::to_owned)
                    .collect();
                let found = seen.borrow().contains("baton_heartbeat_age_seconds");
                found
            }
        },
    )
    .await;
    let families = seen.borrow().clone();
    let exposed = |name: &str| {
        families.contains(name)
            || ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .any(|s| name.strip_suffix(s).is_some_and(|f| families.contains(f)))
    };

    let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(deploy("prometheus/baton-alerts.yml")).unwrap(),
    )
    .expect("the alert rules are YAML");
    let mut alerts = 0;
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().expect("every rule is an alert");
            let expr = rule["expr"].as_str().expect("every alert has an expr");
            assert!(
                rule["annotations"]["summary"]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
                "{name} has a summary"
            );
            let used = metric_names(expr);
            assert!(!used.is_empty(), "{name}: {expr}");
            for m in used {
                assert!(
                    exposed(&m),
                    "alert {name} uses {m}, which /metrics does not have"
                );
            }
            alerts += 1;
        }
    }
    assert!(
        alerts >= 4,
        "no active node, heartbeat age, unowned work, fencing"
    );

    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(deploy("grafana/baton-cluster.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let mut exprs = 0;
    for panel in dash["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            for m in metric_names(expr) {
                assert!(
                    exposed(&m),
                    "panel {} uses {m}, which /metrics does not have",
                    panel["title"]
                );
            }
            exprs += 1;
        }
    }
    assert!(exprs >= 10, "{exprs}");
    node.stop().await;
}
