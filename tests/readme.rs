//! The README's curl and CLI sessions, run as written against a real
//! `baton serve --demo` (issue 11): every command must succeed and every
//! `#>` line under it must match its answer, so the README cannot drift
//! from the product.
//!
//! A command whose comment says `exits N` must exit with N (0 otherwise).
//! A `#>` line that is JSON matches when the answer contains it (objects:
//! every key shown, recursively; arrays: every element shown matches some
//! element); any other `#>` line matches a line of the answer that
//! contains it, whitespace collapsed. A command that only reads (no `-X`,
//! no `-d`, not `workflow run` or `import`) is repeated until its answer
//! matches, since executions run on their own.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

/// One command of a session and what its answer must show.
#[derive(Debug)]
struct Step {
    command: String,
    expect: Vec<String>,
}

/// The ```sh blocks after `heading`, `count` of them, as steps.
fn session(readme: &str, heading: &str, count: usize) -> Vec<Step> {
    let start = readme
        .find(heading)
        .unwrap_or_else(|| panic!("README has no `{heading}`"));
    let mut steps: Vec<Step> = Vec::new();
    let mut rest = &readme[start..];
    for _ in 0..count {
        let open = rest.find("```sh\n").expect("a sh block") + "```sh\n".len();
        let close = open + rest[open..].find("```").expect("the block ends");
        let mut pending = String::new();
        for line in rest[open..close].lines() {
            if let Some(want) = line.strip_prefix("#>") {
                steps
                    .last_mut()
                    .expect("a #> line follows a command")
                    .expect
                    .push(want.trim().to_owned());
                continue;
            }
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            if let Some(cont) = t.strip_suffix('\\') {
                pending.push_str(cont);
                continue;
            }
            pending.push_str(t);
            steps.push(Step {
                command: std::mem::take(&mut pending),
                expect: Vec::new(),
            });
        }
        rest = &rest[close + 3..];
    }
    steps
}

/// Whether `actual` shows everything `want` does.
fn contains(actual: &Value, want: &Value) -> bool {
    match (actual, want) {
        (Value::Object(a), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| a.get(k).is_some_and(|av| contains(av, wv))),
        (Value::Array(a), Value::Array(w)) => {
            w.iter().all(|wv| a.iter().any(|av| contains(av, wv)))
        }
        (a, w) => a == w,
    }
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Why `out` does not match `expect`, or `None`.
fn mismatch(out: &str, expect: &[String]) -> Option<String> {
    for want in expect {
        let ok = match serde_json::from_str::<Value>(want) {
            Ok(w) if want.starts_with('{') || want.starts_with('[') => {
                serde_json::from_str::<Value>(out).is_ok_and(|a| contains(&a, &w))
            }
            _ => {
                let w = collapse(want);
                out.lines().any(|l| collapse(l).contains(&w))
            }
        };
        if !ok {
            return Some(format!("`{want}` not in the answer:\n{out}"));
        }
    }
    None
}

fn read_only(command: &str) -> bool {
    !(command.contains(" -X")
        || command.contains(" -d ")
        || command.contains("workflow run")
        || command.contains("workflow import"))
}

#[actix_rt::test]
async fn the_readme_sessions_run_as_written() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README");
    let mut steps = session(&readme, "## A curl session", 2);
    assert!(steps.len() > 30, "the sessions were found: {steps:?}");
    assert_eq!(
        steps.first().map(|s| s.command.as_str()),
        Some("S=http://127.0.0.1:8280")
    );
    steps.remove(0);

    let db = TestDb::create(Backend::Sqlite).expect("sqlite");
    let node = Process::spawn_with(
        std::path::Path::new(env!("CARGO_BIN_EXE_baton")),
        &["--demo"],
        &[("BATON_DATABASE__URL", db.url.clone())],
        false,
    )
    .expect("baton serve --demo starts");
    let http = Http::new(&node.url);
    eventually(
        "the demo imported every example",
        Duration::from_secs(30),
        || async {
            http.get("/api/workflows")
                .await
                .json
                .as_array()
                .is_some_and(|a| a.len() == baton::demo::EXAMPLES.len())
        },
    )
    .await;

    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_baton"))
        .parent()
        .expect("bin dir")
        .to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for step in &steps {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = Command::new("bash")
                .arg("-c")
                .arg(format!("set -o pipefail; {}", step.command))
                .current_dir(root)
                .env("S", &node.url)
                .env("BATON_SERVER", &node.url)
                .env("BATON_LOG", "warn")
                .env("PATH", &path)
                .output()
                .expect("bash runs");
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            // A command whose comment says `exits N` must exit N.
            let code = step
                .command
                .split_once("# exits ")
                .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse::<i32>().ok())
                .unwrap_or(0);
            let problem = if out.status.code() != Some(code) {
                Some(format!(
                    "exit {:?}: {}{}",
                    out.status.code(),
                    stdout,
                    String::from_utf8_lossy(&out.stderr)
                ))
            } else {
                mismatch(&stdout, &step.expect)
            };
            match problem {
                None => break,
                Some(p) if !read_only(&step.command) || Instant::now() > deadline => {
                    panic!("README command `{}`: {p}", step.command)
                }
                Some(_) => actix_rt::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
    drop(node);
}

/// Every file of `examples/workflows/` is built into `serve --demo` and
/// named in the README.
#[test]
fn every_example_is_in_the_demo_and_the_readme() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut files: Vec<String> = std::fs::read_dir(format!("{root}/examples/workflows"))
        .expect("examples")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    files.sort();
    let demo: Vec<String> = baton::demo::EXAMPLES
        .iter()
        .map(|(n, _)| (*n).to_owned())
        .collect();
    assert_eq!(
        files, demo,
        "src/demo.rs EXAMPLES lists examples/workflows/"
    );
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README");
    for f in &files {
        assert!(readme.contains(&format!("`{f}`")), "the README names {f}");
    }
}

#[test]
fn the_matcher_matches_what_it_should_and_nothing_else() {
    let a: Value = serde_json::json!({"x": 1, "y": {"z": [1, {"k": "v", "o": 2}]}});
    assert!(contains(&a, &serde_json::json!({"y": {"z": [{"k": "v"}]}})));
    assert!(!contains(
        &a,
        &serde_json::json!({"y": {"z": [{"k": "w"}]}})
    ));
    assert!(!contains(&a, &serde_json::json!({"q": 1})));
    assert!(mismatch("a   b\nc", &["a b".into()]).is_none());
    assert!(mismatch("a b", &["{\"x\":1}".into()]).is_some());
}
