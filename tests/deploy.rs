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
