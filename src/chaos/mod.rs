//! `baton chaos`: a randomized fault-and-workload checker, the way Jepsen
//! checks a database. It starts a cluster of real `baton serve` processes
//! on one database, runs generated workflows from the whole language
//! against it while a seeded schedule kills, pauses, drains and cuts nodes,
//! records every side effect in a ledger outside Baton's database, and
//! checks the history against a reference interpreter and the cluster's
//! promises (DESIGN.md). A seed reproduces a run.
//!
//! # Layout
//! - `workload`: the generator, the seeded random source and the reference interpreter
//! - `faults`: the fault kinds and their schedule
//! - `ledger`: the side-effect recorder on loopback
//! - `proxy`: the TCP proxy between a node and its database
//! - `dbserver`: a private PostgreSQL or MariaDB server the schedule can crash and restart
//! - `check`: the rules and the checker

pub mod check;
pub mod dbserver;
pub mod faults;
pub mod ha;
pub mod ledger;
pub mod proxy;
pub mod workload;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use baton_actors::Store;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{json, Value};

use crate::process::NodeProcess;
use check::{Driven, Event, History, LogRow, Stored, Violation};
use dbserver::{DbServer, ServerKind};
use faults::{Fault, FaultKind};
use ledger::Ledger;
pub use proxy::TcpProxy;
use workload::{Plan, Rng, Step, ASK_TIMEOUT_MS};

/// What a chaos run does.
#[derive(Clone, Debug)]
pub struct ChaosOptions {
    /// The database (a scratch one: its tables are used as they are);
    /// `None`: a fresh SQLite file shared by the processes, unless
    /// `server` is set.
    pub database_url: Option<String>,
    /// Run a private database server of this kind (in a temporary
    /// directory, on its own port) instead of `database_url`, so database
    /// restarts can be among the faults.
    pub server: Option<ServerKind>,
    /// Reproduces the workload and the fault schedule.
    pub seed: u64,
    /// How many faults to apply (drawn at random), unless `mix` is set.
    pub faults: usize,
    /// Exactly these faults, in a seeded random order (overrides `faults`).
    pub mix: Vec<(FaultKind, usize)>,
    /// Run the last node with its wall clock this many seconds off
    /// (libfaketime), if the library is installed.
    pub skew_secs: Option<i64>,
    /// How many workflows to run.
    pub workflows: usize,
    /// How many nodes.
    pub nodes: usize,
    /// `cluster.active_nodes`.
    pub active_nodes: u32,
    /// `cluster.heartbeat_interval_ms`.
    pub interval_ms: u64,
    /// `cluster.failover_heartbeats`.
    pub heartbeats: u32,
    /// The `baton` executable to run as nodes.
    pub exe: PathBuf,
    /// Echo the nodes' log lines.
    pub echo: bool,
}

/// What a run found.
#[derive(Debug)]
pub struct ChaosReport {
    /// The rules broken, with the execution ids and nodes.
    pub violations: Vec<Violation>,
    /// The table printed for the run.
    pub table: String,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The nodes and the way to reach them.
struct Cluster {
    exe: PathBuf,
    envs: Vec<Vec<(&'static str, String)>>,
    procs: Vec<Option<NodeProcess>>,
    echo: bool,
}

impl Cluster {
    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let p = NodeProcess::spawn(&self.exe, &self.envs[i], self.echo)
            .with_context(|| format!("starting node {i}"))?;
        self.procs[i] = Some(p);
        Ok(())
    }

    fn urls(&self) -> Vec<String> {
        self.procs.iter().flatten().map(|p| p.url.clone()).collect()
    }
}

/// An HTTP answer: status and JSON body (`Null` if none).
type Answer = (u16, Value);

/// Sends a request to any node that answers (not 503, not down), trying
/// each in turn until `deadline`.
async fn any_node(
    cluster: &Rc<RefCell<Cluster>>,
    method: &str,
    path: &str,
    body: Option<&Value>,
    deadline: Duration,
) -> Option<Answer> {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(5))
        .finish();
    let start = Instant::now();
    loop {
        let urls = cluster.borrow().urls();
        for url in urls {
            let req = match method {
                "POST" => client.post(format!("{url}{path}")),
                _ => client.get(format!("{url}{path}")),
            };
            let sent = match body {
                Some(b) => req.send_json(b).await,
                None => req.send().await,
            };
            let Ok(mut resp) = sent else { continue };
            let status = resp.status().as_u16();
            if status == 503 {
                continue;
            }
            let json = resp
                .body()
                .limit(16 << 20)
                .await
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(Value::Null);
            return Some((status, json));
        }
        if start.elapsed() > deadline {
            return None;
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Drives one execution as a user would: starts it, sends its signals
/// (some before it waits), answers its interactions (sometimes twice at
/// once, with different values), cancels some, and waits for its end.
async fn drive(
    cluster: Rc<RefCell<Cluster>>,
    plan: Plan,
    id: String,
    mut rng: Rng,
    deadline: Duration,
) -> Driven {
    let signals: Vec<String> = plan.signals();
    let asks: Vec<String> = plan.asks();
    let signals_sent: Vec<i64> = (0..signals.len())
        .map(|i| 100 * (i as i64 + 1) + rng.range(0, 99) as i64)
        .collect();
    let mut d = Driven {
        id: id.clone(),
        plan: plan.clone(),
        signals_sent,
        answers_sent: vec![Vec::new(); asks.len()],
        answers_accepted: vec![Vec::new(); asks.len()],
        resumes: 0,
        cancel_requested: false,
    };
    // Which interactions with a timeout the client answers late, and when
    // it first saw each waiting.
    let late: Vec<bool> = (0..asks.len()).map(|_| rng.chance(40)).collect();
    let mut first_seen: Vec<Option<Instant>> = vec![None; asks.len()];
    let start_body = json!({"inputs": {}, "execution_id": id});
    let path = format!("/api/workflows/{}/executions", plan.id);
    if any_node(&cluster, "POST", &path, Some(&start_body), deadline)
        .await
        .is_none()
    {
        return d;
    }
    let early = rng.chance(30);
    let mut sent = vec![false; signals.len()];
    if early {
        for (i, name) in signals.iter().enumerate() {
            let body = json!({"payload": d.signals_sent[i]});
            let p = format!("/api/executions/{id}/signals/{name}");
            sent[i] = matches!(
                any_node(&cluster, "POST", &p, Some(&body), deadline).await,
                Some((202, _))
            );
        }
    }
    let cancel_at = rng
        .chance(8)
        .then(|| Instant::now() + Duration::from_millis(rng.range(100, 3000)));
    let began = Instant::now();
    while began.elapsed() < deadline {
        if let Some(at) = cancel_at {
            if !d.cancel_requested && Instant::now() >= at {
                let p = format!("/api/executions/{id}/cancel");
                if any_node(&cluster, "POST", &p, Some(&json!({})), deadline)
                    .await
                    .is_some()
                {
                    d.cancel_requested = true;
                }
            }
        }
        let Some((200, e)) = any_node(
            &cluster,
            "GET",
            &format!("/api/executions/{id}"),
            None,
            deadline,
        )
        .await
        else {
            actix_rt::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let state = e["state"].as_str().unwrap_or("");
        if state == "failed" && d.resumes < 5 {
            // A `Fix` step failed it: resume it with the fix, as an
            // operator would. Any other failure is left for the checker.
            let item = e["current_item"].as_str().unwrap_or("");
            let step: Option<usize> = item.strip_prefix('i').and_then(|n| n.parse().ok());
            let fixable = matches!(step.and_then(|n| plan.steps.get(n)), Some(Step::Fix(_)))
                && e["error"].as_str().unwrap_or("").contains("needs a fix");
            if let (true, Some(n)) = (fixable, step) {
                let body = json!({"variables": {format!("fix{n}"): true}});
                let p = format!("/api/executions/{id}/resume");
                if let Some((202, _)) = any_node(&cluster, "POST", &p, Some(&body), deadline).await
                {
                    d.resumes += 1;
                }
                actix_rt::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        }
        if matches!(state, "completed" | "failed" | "canceled") {
            return d;
        }
        let waiting = &e["waiting_for"];
        match waiting["kind"].as_str() {
            Some("signal") => {
                let name = waiting["name"].as_str().unwrap_or("");
                if let Some(i) = signals.iter().position(|s| s == name) {
                    if !sent[i] {
                        let body = json!({"payload": d.signals_sent[i]});
                        let p = format!("/api/executions/{id}/signals/{name}");
                        sent[i] = any_node(&cluster, "POST", &p, Some(&body), deadline)
                            .await
                            .is_some();
                    }
                }
            }
            Some("interaction") if waiting["answered"] != json!(true) => {
                // Which interaction: the current item is `i{n}`, step n.
                let item = e["current_item"].as_str().unwrap_or("");
                let step: Option<usize> = item.strip_prefix('i').and_then(|n| n.parse().ok());
                let ask = step.and_then(|n| match plan.steps.get(n) {
                    Some(Step::Ask(a)) => Some((*a, false)),
                    Some(Step::AskLate(a)) => Some((*a, true)),
                    _ => None,
                });
                if let Some((a, timeout)) = ask {
                    // A late answer: after the interaction's timeout (from
                    // when the client first saw it waiting).
                    let seen = *first_seen[a - 1].get_or_insert_with(Instant::now);
                    if timeout
                        && late[a - 1]
                        && seen.elapsed() < Duration::from_millis(ASK_TIMEOUT_MS + 600)
                    {
                        actix_rt::time::sleep(Duration::from_millis(150)).await;
                        continue;
                    }
                    let var = format!("ans{a}");
                    let p = format!("/api/executions/{id}/interaction");
                    let base = 1000 * a as i64;
                    let v1 = base + rng.range(0, 499) as i64;
                    let b1 = json!({"inputs": {var.clone(): v1}});
                    if rng.chance(30) {
                        // A double click: two different answers at once.
                        let v2 = base + 500 + rng.range(0, 499) as i64;
                        let b2 = json!({"inputs": {var.clone(): v2}});
                        d.answers_sent[a - 1].extend([v1, v2]);
                        let (r1, r2) = futures::join!(
                            any_node(&cluster, "POST", &p, Some(&b1), deadline),
                            any_node(&cluster, "POST", &p, Some(&b2), deadline)
                        );
                        for (v, r) in [(v1, r1), (v2, r2)] {
                            if let Some((202, _)) = r {
                                d.answers_accepted[a - 1].push(v);
                            }
                        }
                    } else {
                        d.answers_sent[a - 1].push(v1);
                        if let Some((202, _)) =
                            any_node(&cluster, "POST", &p, Some(&b1), deadline).await
                        {
                            d.answers_accepted[a - 1].push(v1);
                        }
                    }
                }
            }
            _ => {}
        }
        actix_rt::time::sleep(Duration::from_millis(150)).await;
    }
    d
}

/// Applies one fault and waits it out; returns it as applied.
async fn apply(
    cluster: &Rc<RefCell<Cluster>>,
    proxies: &[TcpProxy],
    server: &RefCell<Option<DbServer>>,
    kind: FaultKind,
    node: usize,
    lasts: Duration,
) -> anyhow::Result<Option<Fault>> {
    let up = cluster.borrow().procs[node].is_some();
    if !up {
        return Ok(None);
    }
    let mut from = Instant::now();
    let mut until = None;
    match kind {
        FaultKind::Kill => {
            if let Some(p) = cluster.borrow_mut().procs[node].as_mut() {
                p.kill9();
            }
            cluster.borrow_mut().procs[node] = None;
            actix_rt::time::sleep(lasts).await;
            cluster.borrow_mut().spawn(node)?;
        }
        FaultKind::Term => {
            if let Some(p) = cluster.borrow().procs[node].as_ref() {
                p.signal("TERM");
            }
            // Wait for the drain and the exit without blocking the runtime.
            let exited = Instant::now();
            loop {
                let done = cluster.borrow_mut().procs[node]
                    .as_mut()
                    .is_none_or(|p| p.child.try_wait().ok().flatten().is_some());
                if done || exited.elapsed() > Duration::from_secs(30) {
                    break;
                }
                actix_rt::time::sleep(Duration::from_millis(20)).await;
            }
            if let Some(p) = cluster.borrow_mut().procs[node].as_mut() {
                p.kill9();
            }
            cluster.borrow_mut().procs[node] = None;
            actix_rt::time::sleep(lasts).await;
            cluster.borrow_mut().spawn(node)?;
        }
        FaultKind::Pause => {
            if let Some(p) = cluster.borrow().procs[node].as_ref() {
                p.signal("STOP");
            }
            // The node is stopped for certain only once `kill` returned:
            // starting it can take long on a busy machine (once 1.85 s, on
            // a cold exec: the node was stopped for 0.8 s of a recorded
            // 2.67 s, and the checker asked for a failover it was not owed).
            // The pause counts from then to the moment SIGCONT is sent.
            from = Instant::now();
            actix_rt::time::sleep(lasts).await;
            until = Some(Instant::now());
            if let Some(p) = cluster.borrow().procs[node].as_ref() {
                p.signal("CONT");
            }
        }
        FaultKind::Cut | FaultKind::Stall => {
            let Some(proxy) = proxies.get(node) else {
                return Ok(None);
            };
            if kind == FaultKind::Cut {
                proxy.cut();
            } else {
                proxy.stall();
            }
            actix_rt::time::sleep(lasts).await;
            proxy.restore();
        }
        FaultKind::DbRestart => {
            let Some(mut db) = server.borrow_mut().take() else {
                return Ok(None);
            };
            db.crash()?;
            actix_rt::time::sleep(lasts).await;
            let started = db.start_again().await;
            *server.borrow_mut() = Some(db);
            started?;
        }
    }
    Ok(Some(Fault {
        kind,
        node,
        from,
        until: until.unwrap_or_else(Instant::now),
    }))
}

/// Runs the cluster, the workload and the faults; checks the history.
pub async fn run(opts: &ChaosOptions) -> anyhow::Result<ChaosReport> {
    let mut rng = Rng::new(opts.seed);
    let server = match opts.server {
        Some(kind) => Some(
            DbServer::start(kind)
                .await
                .with_context(|| format!("starting a private {kind:?} server"))?,
        ),
        None => None,
    };
    let (url, _tmp) = match (&server, &opts.database_url) {
        (Some(s), _) => (s.url.clone(), None),
        (None, Some(u)) => (u.clone(), None),
        (None, None) => {
            let d = std::env::temp_dir().join(format!(
                "baton-chaos-{}-{}",
                opts.seed,
                std::process::id()
            ));
            std::fs::create_dir_all(&d)?;
            (
                format!("sqlite://{}?mode=rwc", d.join("chaos.db").display()),
                Some(TempDir(d)),
            )
        }
    };
    let sqlite = url.starts_with("sqlite:");
    let store = Store::connect(&url, 4).await.context("connecting")?;
    store.migrate().await.context("migrating")?;
    let ledger = Ledger::start()?;
    let mut proxies = Vec::new();
    if !sqlite {
        for _ in 0..opts.nodes {
            proxies.push(TcpProxy::start(&url).await?);
        }
    }
    let names: Vec<String> = (0..opts.nodes).map(|i| format!("chaos{i}")).collect();
    // On SQLite the "database clock" is each process's own (DESIGN.md):
    // a skewed node there is a misconfiguration, not a fault to survive.
    let faketime = crate::process::faketime_lib();
    let skew = opts.skew_secs.filter(|_| !sqlite && faketime.is_some());
    if opts.skew_secs.is_some() && skew.is_none() {
        eprintln!(
            "chaos: no clock skew (SQLite shares the host clock, or libfaketime is not installed)"
        );
    }
    let envs = (0..opts.nodes)
        .map(|i| {
            let mut env = vec![
                (
                    "BATON_DATABASE__URL",
                    proxies.get(i).map_or(url.clone(), |p| p.url.clone()),
                ),
                ("BATON_NODE__ID", names[i].clone()),
                ("BATON_CLUSTER__ENABLED", "true".into()),
                ("BATON_CLUSTER__ACTIVE_NODES", opts.active_nodes.to_string()),
                (
                    "BATON_CLUSTER__HEARTBEAT_INTERVAL_MS",
                    opts.interval_ms.to_string(),
                ),
                (
                    "BATON_CLUSTER__FAILOVER_HEARTBEATS",
                    opts.heartbeats.to_string(),
                ),
            ];
            if let (Some(secs), Some(lib)) = (skew.filter(|_| i + 1 == opts.nodes), &faketime) {
                env.push(("LD_PRELOAD", lib.display().to_string()));
                env.push(("FAKETIME", format!("{secs:+}")));
                env.push(("DONT_FAKE_MONOTONIC", "1".into()));
            }
            env
        })
        .collect();
    let cluster = Rc::new(RefCell::new(Cluster {
        exe: opts.exe.clone(),
        envs,
        procs: (0..opts.nodes).map(|_| None).collect(),
        echo: opts.echo,
    }));
    for i in 0..opts.nodes {
        cluster.borrow_mut().spawn(i)?;
    }
    let timeout = Duration::from_millis(opts.interval_ms * u64::from(opts.heartbeats));
    let long = Duration::from_secs(60);

    // Definitions: the children, then one generated workflow per kind of run.
    let plans: Vec<Plan> = (0..opts.workflows)
        .map(|i| Plan::generate(format!("chaos-{}-{i}", opts.seed), &mut rng))
        .collect();
    let base_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    for def in workload::children(&ledger.url)
        .into_iter()
        .chain(plans.iter().map(|p| p.definition(&ledger.url, base_ms)))
    {
        match any_node(&cluster, "POST", "/api/workflows", Some(&def), long).await {
            Some((201 | 409, _)) => {}
            other => anyhow::bail!("importing {}: {other:?}", def["id"]),
        }
    }

    // The sampler: the most nodes active at once. A node is active while
    // its row says active and RUNNING and its heartbeat is within the
    // failover timeout: past that it has fenced itself (its lease ends one
    // interval earlier) and is dead to the cluster, even before a takeover
    // marks its row.
    let max_active = Rc::new(RefCell::new(0usize));
    let active_seen: Rc<RefCell<Vec<String>>> = Rc::default();
    let liveness: Rc<RefCell<Vec<(Instant, String, bool)>>> = Rc::default();
    let sampling = Rc::new(RefCell::new(true));
    {
        let (store, max_active, sampling, seen, liveness) = (
            store.clone(),
            max_active.clone(),
            sampling.clone(),
            active_seen.clone(),
            liveness.clone(),
        );
        let timeout_ms = (opts.interval_ms * u64::from(opts.heartbeats)) as i64;
        actix_rt::spawn(async move {
            while *sampling.borrow() {
                if let Ok((nodes, now)) = store.nodes().await {
                    let at = Instant::now();
                    liveness.borrow_mut().extend(nodes.iter().map(|n| {
                        let live = matches!(n.state.as_str(), "RUNNING" | "STANDBY")
                            && now - n.last_heartbeat < timeout_ms;
                        (at, n.id.clone(), live)
                    }));
                    let active: Vec<String> = nodes
                        .iter()
                        .filter(|n| {
                            n.role == "active"
                                && n.state == "RUNNING"
                                && now - n.last_heartbeat < timeout_ms
                        })
                        .map(|n| format!("{} (heartbeat {} ms ago)", n.id, now - n.last_heartbeat))
                        .collect();
                    let mut m = max_active.borrow_mut();
                    if active.len() > *m {
                        *m = active.len();
                        *seen.borrow_mut() = active;
                    }
                }
                actix_rt::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }

    // The faults, on their own schedule: drawn at random, or exactly the
    // mix asked for in a seeded order.
    let applied: Rc<RefCell<Vec<Fault>>> = Rc::default();
    let mut frng = Rng::new(opts.seed.wrapping_mul(31).wrapping_add(7));
    let with_proxies = !proxies.is_empty();
    let schedule: Vec<FaultKind> = if opts.mix.is_empty() {
        (0..opts.faults)
            .map(|_| faults::draw(&mut frng, opts.nodes, with_proxies, server.is_some()).0)
            .collect()
    } else {
        let mut all: Vec<FaultKind> = opts
            .mix
            .iter()
            .filter(|(k, _)| with_proxies || !matches!(k, FaultKind::Cut | FaultKind::Stall))
            .filter(|(k, _)| server.is_some() || *k != FaultKind::DbRestart)
            .flat_map(|(k, n)| std::iter::repeat_n(*k, *n))
            .collect();
        for i in (1..all.len()).rev() {
            all.swap(i, frng.range(0, i as u64) as usize);
        }
        all
    };
    let fault_count = schedule.len();
    let server = Rc::new(RefCell::new(server));
    let fault_task = {
        let (cluster, applied, server) = (cluster.clone(), applied.clone(), server.clone());
        let nodes = opts.nodes;
        let echo = opts.echo;
        let proxies = Rc::new(proxies);
        actix_rt::spawn(async move {
            for kind in schedule {
                let gap = Duration::from_millis(frng.range(500, 2500));
                actix_rt::time::sleep(gap).await;
                let node = frng.range(0, nodes as u64 - 1) as usize;
                let lasts = faults::duration(kind, timeout, &mut frng);
                match apply(&cluster, &proxies, &server, kind, node, lasts).await {
                    Ok(Some(f)) => {
                        if echo {
                            // On the nodes' clock (UTC, as their logs), so
                            // that a violation's fault can be found in them.
                            let ago = |t: std::time::Instant| {
                                chrono::Utc::now()
                                    - chrono::Duration::from_std(t.elapsed()).unwrap_or_default()
                            };
                            eprintln!(
                                "[chaos] {} {} on chaos{} for {:?} (until {})",
                                ago(f.from).format("%H:%M:%S%.3f"),
                                f.kind.name(),
                                f.node,
                                f.until.saturating_duration_since(f.from),
                                ago(f.until).format("%H:%M:%S%.3f"),
                            );
                        }
                        applied.borrow_mut().push(f)
                    }
                    Ok(None) => {}
                    Err(e) => eprintln!("chaos: fault {kind:?} on node {node}: {e:#}"),
                }
            }
        })
    };

    // The workload: executions started at a steady rate spread over the
    // fault schedule (about 3 failover timeouts and 1.5 s a fault), each
    // driven by its own client.
    let span = timeout * 3 + Duration::from_millis(1500);
    let pace = (span * fault_count as u32 / opts.workflows.max(1) as u32)
        .clamp(Duration::from_millis(20), Duration::from_millis(1000));
    let deadline = Duration::from_secs(120) + timeout * 4;
    let mut drivers = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        let id = format!("x{}-{i}", opts.seed);
        let r = Rng::new(opts.seed ^ (i as u64).wrapping_mul(0x9E37));
        drivers.push(actix_rt::spawn(drive(
            cluster.clone(),
            plan.clone(),
            id,
            r,
            deadline,
        )));
        let jitter = Duration::from_millis(rng.range(0, 40));
        actix_rt::time::sleep(pace + jitter).await;
    }
    let _ = fault_task.await;
    let mut driven = Vec::new();
    for d in drivers {
        if let Ok(d) = d.await {
            driven.push(d);
        }
    }
    // Async children may still run after their parents ended: give them
    // time to end (the checker calls one still running stuck).
    let settled = Instant::now();
    while settled.elapsed() < deadline {
        match unfinished(&store).await {
            Ok(0) => break,
            _ => actix_rt::time::sleep(Duration::from_millis(200)).await,
        }
    }
    *sampling.borrow_mut() = false;

    // Collect the history from the database and the ledger.
    let (stored, log, events) = history_from(&store).await?;
    let faults_applied = applied.borrow().clone();
    let h = History {
        nodes: names.clone(),
        timeout,
        active_nodes: opts.active_nodes,
        max_active: *max_active.borrow(),
        driven,
        stored,
        log,
        events,
        ledger: ledger.entries(),
        faults: faults_applied,
        liveness: liveness.borrow().clone(),
    };
    let (mut violations, reruns) = check::check(&h);
    for v in violations
        .iter_mut()
        .filter(|v| v.rule == "never more active nodes than configured")
    {
        v.detail
            .push_str(&format!(": {}", active_seen.borrow().join(", ")));
    }
    let table = table(opts, &url, &h, &violations, &reruns);

    for p in cluster.borrow_mut().procs.iter_mut().flatten() {
        p.signal("TERM");
    }
    for p in cluster.borrow_mut().procs.iter_mut().flatten() {
        let _ = p.child.wait();
    }
    ledger.stop().await;
    store.db().close().await;
    drop(server);
    Ok(ChaosReport { violations, table })
}

/// How many executions are not finished.
async fn unfinished(store: &Store) -> anyhow::Result<i64> {
    let backend = store.backend();
    let n = store
        .db()
        .run(move |c| async move {
            let row = c
                .query_one_raw(Statement::from_string(
                    backend,
                    "SELECT COUNT(*) AS n FROM executions WHERE state NOT IN ('completed', 'failed', 'canceled')",
                ))
                .await?;
            Ok(row.map(|r| r.try_get::<i64>("", "n")).transpose()?.unwrap_or(0))
        })
        .await?;
    Ok(n)
}

/// Reads executions, the item log and cluster events, with their database
/// times mapped onto this process's monotonic clock.
async fn history_from(
    store: &Store,
) -> anyhow::Result<(HashMap<String, Stored>, Vec<LogRow>, Vec<Event>)> {
    let now_db = store.db_now_ms().await?;
    let now = Instant::now();
    let at = move |ms: i64| -> Instant {
        let ago = Duration::from_millis((now_db - ms).max(0) as u64);
        now.checked_sub(ago).unwrap_or(now)
    };
    let backend = store.backend();
    let rows = store
        .db()
        .run(move |c| async move {
            let q = |sql: &str| Statement::from_string(backend, sql.to_owned());
            let ex = c
                .query_all_raw(q("SELECT id, workflow_id, parent_id, state, inputs, variables, outputs, error FROM executions"))
                .await?;
            let log = c
                .query_all_raw(q("SELECT execution_id, step, event, node, time FROM item_log"))
                .await?;
            let ev = c
                .query_all_raw(q("SELECT kind, node_id, time, message FROM cluster_events"))
                .await?;
            Ok((ex, log, ev))
        })
        .await?;
    let (ex, log, ev) = rows;
    let parse = |t: Option<String>| -> Value {
        t.and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null)
    };
    let mut stored = HashMap::new();
    for r in ex {
        let id: String = r.try_get("", "id")?;
        stored.insert(
            id.clone(),
            Stored {
                id,
                workflow: r.try_get("", "workflow_id")?,
                parent: r.try_get("", "parent_id")?,
                state: r.try_get("", "state")?,
                inputs: parse(r.try_get("", "inputs")?),
                variables: parse(r.try_get("", "variables")?),
                outputs: parse(r.try_get("", "outputs")?),
                error: r.try_get("", "error")?,
            },
        );
    }
    let mut rows = Vec::new();
    for r in log {
        rows.push(LogRow {
            execution: r.try_get("", "execution_id")?,
            step: r.try_get("", "step")?,
            event: r.try_get("", "event")?,
            node: r.try_get("", "node")?,
            at: at(r.try_get("", "time")?),
        });
    }
    let mut events = Vec::new();
    for r in ev {
        events.push(Event {
            kind: r.try_get("", "kind")?,
            node: r.try_get("", "node_id")?,
            at: at(r.try_get("", "time")?),
            message: r.try_get("", "message")?,
        });
    }
    Ok((stored, rows, events))
}

fn table(
    opts: &ChaosOptions,
    url: &str,
    h: &History,
    violations: &[Violation],
    reruns: &check::Reruns,
) -> String {
    let backend = url.split(':').next().unwrap_or("?");
    let mut out = format!(
        "chaos: seed {}, {backend}, {} nodes (active_nodes {}), heartbeat {} ms x {}{}\n",
        opts.seed,
        opts.nodes,
        opts.active_nodes,
        opts.interval_ms,
        opts.heartbeats,
        match opts.skew_secs.filter(|_| !url.starts_with("sqlite:")) {
            Some(s) => format!(", last node's clock {s:+} s"),
            None => String::new(),
        }
    );
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &h.faults {
        *by_kind.entry(f.kind.name()).or_default() += 1;
    }
    out.push_str(&format!("faults: {}", h.faults.len()));
    for (k, n) in &by_kind {
        out.push_str(&format!(", {k} {n}"));
    }
    let failovers = h.events.iter().filter(|e| e.kind == "failover").count();
    out.push_str(&format!(
        "; failover events {failovers} (not owed, no other node live to act: {})\n",
        check::failovers_not_owed(h)
    ));
    let mut states: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &h.driven {
        let s = h.stored.get(&d.id).map_or("missing", |s| s.state.as_str());
        *states.entry(s).or_default() += 1;
    }
    out.push_str(&format!("workflows: {}", h.driven.len()));
    for (s, n) in &states {
        out.push_str(&format!(", {s} {n}"));
    }
    out.push_str(&format!(
        "; executions stored (children included) {}\n",
        h.stored.len()
    ));
    let sent: usize = h
        .driven
        .iter()
        .flat_map(|d| &d.answers_sent)
        .map(Vec::len)
        .sum();
    let accepted: usize = h
        .driven
        .iter()
        .flat_map(|d| &d.answers_accepted)
        .map(Vec::len)
        .sum();
    let timed_out = h
        .driven
        .iter()
        .filter_map(|d| h.stored.get(&d.id))
        .flat_map(|s| s.variables.as_object().into_iter().flatten())
        .filter(|(k, v)| k.starts_with("ans") && v.as_i64() == Some(workload::TIMED_OUT))
        .count();
    out.push_str(&format!(
        "client: answers {accepted} accepted of {sent} sent, interactions timed out {timed_out}, resumed {}, cancels asked {}, signals {}\n",
        h.driven.iter().map(|d| d.resumes).sum::<usize>(),
        h.driven.iter().filter(|d| d.cancel_requested).count(),
        h.driven.iter().map(|d| d.signals_sent.len()).sum::<usize>(),
    ));
    let completed = h.log.iter().filter(|l| l.event == "completed").count();
    let rerun: usize = reruns.values().sum();
    out.push_str(&format!(
        "items: {completed} completed, {} side effects in the ledger, {rerun} re-run",
        h.ledger.len()
    ));
    for (why, n) in reruns {
        out.push_str(&format!(", {n} after {why}"));
    }
    out.push_str(&format!("\nmost active nodes at once: {}\n", h.max_active));
    out.push_str(&format!("violations: {}\n", violations.len()));
    for v in violations {
        out.push_str(&format!(
            "  [seed {}] {}: {}\n",
            opts.seed, v.rule, v.detail
        ));
    }
    out
}
