//! `baton bench failover`: a local cluster of real `baton serve` processes
//! on one database, measured three ways, all on the database clock:
//!
//! - **kills**: kill -9 the active node N times under load; the time from
//!   the kill to the first item resumed on the new owner (p50, p99, max).
//! - **burst**: 200 workflows of 5 items of 50 ms; kill -9 the active node
//!   at 40 % done; the time from the kill until all have completed, and how
//!   many items ran twice against how many were running at the kill.
//! - **rehydrate**: 10,000 executions owned by a dead node; the time from
//!   the takeover until every one of them is running again on the new owner.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use baton_actors::store::entities::{cluster_event, execution, item_log};
use baton_actors::store::{NewExecution, NodeRegistration, Store};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait,
};
use serde_json::json;

use crate::client::Client;
use crate::process::NodeProcess;

/// What to run.
#[derive(Clone, Debug)]
pub struct FailoverOptions {
    /// The database (a scratch one: the benchmark writes to it); default a
    /// fresh SQLite file.
    pub database_url: Option<String>,
    /// Heartbeat interval.
    pub interval_ms: u64,
    /// Missed heartbeats before failover.
    pub heartbeats: u32,
    /// Kills for the `kills` measurement.
    pub kills: usize,
    /// Executions for the `rehydrate` measurement.
    pub rehydrate: usize,
    /// The `baton` executable to run as nodes.
    pub exe: PathBuf,
}

pub(super) struct Cluster {
    pub(super) url: String,
    nodes: Vec<(String, Option<NodeProcess>)>,
    opts: FailoverOptions,
    active_nodes: u32,
    _dir: Option<TempDir>,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn percentile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

impl Cluster {
    pub(super) fn new(opts: &FailoverOptions, tag: &str) -> anyhow::Result<Cluster> {
        let (url, dir) = match &opts.database_url {
            Some(u) => (u.clone(), None),
            None => {
                let d =
                    std::env::temp_dir().join(format!("baton-bench-{tag}-{}", std::process::id()));
                std::fs::create_dir_all(&d)?;
                (
                    format!("sqlite://{}?mode=rwc", d.join("cluster.db").display()),
                    Some(TempDir(d)),
                )
            }
        };
        Ok(Cluster {
            url,
            nodes: Vec::new(),
            opts: opts.clone(),
            active_nodes: 1,
            _dir: dir,
        })
    }

    /// `cluster.active_nodes` for the nodes started from now on.
    pub(super) fn with_active_nodes(mut self, n: u32) -> Cluster {
        self.active_nodes = n;
        self
    }

    fn env(&self, id: &str) -> Vec<(&'static str, String)> {
        vec![
            ("BATON_DATABASE__URL", self.url.clone()),
            ("BATON_NODE__ID", id.to_owned()),
            ("BATON_CLUSTER__ENABLED", "true".into()),
            (
                "BATON_CLUSTER__HEARTBEAT_INTERVAL_MS",
                self.opts.interval_ms.to_string(),
            ),
            (
                "BATON_CLUSTER__FAILOVER_HEARTBEATS",
                self.opts.heartbeats.to_string(),
            ),
            ("BATON_SCRIPTS__THREADS", "1".into()),
            ("BATON_CLUSTER__ACTIVE_NODES", self.active_nodes.to_string()),
        ]
    }

    pub(super) fn start(&mut self, id: &str) -> anyhow::Result<()> {
        let echo = std::env::var_os("BATON_BENCH_ECHO").is_some();
        let mut env = self.env(id);
        if echo {
            env.push(("BATON_LOG", "info,sqlx=warn".into()));
        }
        let p = NodeProcess::spawn(&self.opts.exe, &env, echo)
            .with_context(|| format!("starting node {id}"))?;
        match self.nodes.iter_mut().find(|(n, _)| n == id) {
            Some(slot) => slot.1 = Some(p),
            None => self.nodes.push((id.to_owned(), Some(p))),
        }
        Ok(())
    }

    async fn health(url: &str) -> Option<String> {
        let c = Client::new(url, None);
        match c.get("/api/healthstatus").await {
            Ok(v) => v["state"].as_str().map(str::to_owned),
            Err(e) => e
                .to_string()
                .split("\"state\":\"")
                .nth(1)
                .map(|s| s.chars().take_while(|c| *c != '"').collect()),
        }
    }

    pub(super) async fn wait_state(
        &self,
        id: &str,
        want: &str,
        limit: Duration,
    ) -> anyhow::Result<()> {
        let url = self.url_of(id)?;
        let start = Instant::now();
        while start.elapsed() < limit {
            if Cluster::health(&url).await.as_deref() == Some(want) {
                return Ok(());
            }
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("node {id} did not become {want} within {limit:?}")
    }

    pub(super) fn url_of(&self, id: &str) -> anyhow::Result<String> {
        self.nodes
            .iter()
            .find(|(n, _)| n == id)
            .and_then(|(_, p)| p.as_ref().map(|p| p.url.clone()))
            .ok_or_else(|| anyhow!("node {id} is not running"))
    }

    async fn active(&self, limit: Duration) -> anyhow::Result<String> {
        let start = Instant::now();
        while start.elapsed() < limit {
            for (id, p) in &self.nodes {
                if let Some(p) = p {
                    if Cluster::health(&p.url).await.as_deref() == Some("RUNNING") {
                        return Ok(id.clone());
                    }
                }
            }
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        bail!("no active node within {limit:?}")
    }

    /// Stops every node gracefully (SIGTERM: each drains and leaves), so
    /// that the next cluster on the same database finds no dead member.
    pub(super) fn stop_all(&mut self) {
        for (_, slot) in &mut self.nodes {
            if let Some(mut p) = slot.take() {
                let _ = p.terminate();
            }
        }
    }

    fn kill(&mut self, id: &str) {
        if let Some((_, slot)) = self.nodes.iter_mut().find(|(n, _)| n == id) {
            if let Some(mut p) = slot.take() {
                p.kill9();
            }
        }
    }
}

fn sleeper(id: &str, items: usize, ms: u64) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for i in 0..items {
        let next = if i + 1 == items {
            "done".to_owned()
        } else {
            format!("s{}", i + 1)
        };
        map.insert(format!("s{i}"), json!({"type": "action", "action": "sleep", "inputs": {"ms": ms.to_string()}, "next": next}));
    }
    map.insert("done".into(), json!({"type": "end"}));
    json!({"id": id, "start": "s0", "items": map})
}

pub(super) async fn import(url: &str, def: &serde_json::Value) -> anyhow::Result<()> {
    let path = std::env::temp_dir().join(format!(
        "baton-bench-def-{}-{}.json",
        std::process::id(),
        def["id"].as_str().unwrap_or("x")
    ));
    std::fs::write(&path, def.to_string())?;
    let r = Client::new(url, None).import(&path).await;
    let _ = std::fs::remove_file(&path);
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().starts_with("409") => Ok(()),
        Err(e) => Err(e),
    }
}

/// The first `resumed` record at or after `since` (database clock).
async fn first_resumed_after(store: &Store, since: i64) -> anyhow::Result<Option<i64>> {
    Ok(store
        .db()
        .run(move |c| async move {
            Ok(item_log::Entity::find()
                .filter(item_log::Column::Event.eq("resumed"))
                .filter(item_log::Column::Time.gte(since))
                .order_by_asc(item_log::Column::Time)
                .one(&c)
                .await?
                .map(|l| l.time))
        })
        .await?)
}

/// Kills the active node `kills` times under load; returns the kill to
/// first-resumed-item times in ms.
pub async fn kills(opts: &FailoverOptions) -> anyhow::Result<Vec<i64>> {
    let mut cluster = Cluster::new(opts, "kills")?;
    let store = Store::connect(&cluster.url, 4).await?;
    store.migrate().await?;
    for id in ["k1", "k2", "k3"] {
        cluster.start(id)?;
    }
    let timeout = Duration::from_millis(opts.interval_ms * u64::from(opts.heartbeats));
    let mut active = cluster.active(timeout * 10).await?;
    import(&cluster.url_of(&active)?, &sleeper("bench-load", 300, 100)).await?;
    let mut out = Vec::new();
    for k in 0..opts.kills {
        // Keep at least 16 executions running.
        let client = Client::new(&cluster.url_of(&active)?, None);
        let running = store
            .db()
            .run(|c| async move {
                Ok(execution::Entity::find()
                    .filter(execution::Column::State.eq(baton_actors::store::state::RUNNING))
                    .count(&c)
                    .await?)
            })
            .await?;
        for _ in running..16 {
            client.run("bench-load", json!({}), None, false).await?;
        }
        actix_rt::time::sleep(Duration::from_millis(250)).await;
        let t0 = store.db_now_ms().await?;
        cluster.kill(&active);
        let victim = active.clone();
        let started = Instant::now();
        let resumed = loop {
            if let Some(t) = first_resumed_after(&store, t0).await? {
                break t;
            }
            if started.elapsed() > timeout * 20 {
                let (nodes, _) = store.nodes().await?;
                let owners = store.unfinished_by_owner().await?;
                let nodes: Vec<String> = nodes
                    .iter()
                    .map(|n| format!("{} {} {} e{}", n.id, n.role, n.state, n.epoch))
                    .collect();
                bail!(
                    "no item resumed within {:?} of kill {} ({victim}); nodes: {nodes:?}; unfinished by owner: {owners:?}",
                    timeout * 20,
                    k + 1
                );
            }
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        };
        out.push(resumed - t0);
        eprintln!(
            "kill {:>2}: {victim} killed, first item resumed {} ms later",
            k + 1,
            resumed - t0
        );
        active = cluster.active(timeout * 10).await?;
        cluster.start(&victim)?;
        cluster.wait_state(&victim, "STANDBY", timeout * 10).await?;
    }
    Ok(out)
}

/// What the burst measurement found.
#[derive(Clone, Debug)]
pub struct Burst {
    /// From the kill until the last execution completed.
    pub all_done_ms: i64,
    /// Items that ran a second time.
    pub reran: u64,
    /// Executions running (an item in flight) at the kill.
    pub running_at_kill: u64,
}

/// 200 workflows of 5 items of 50 ms; kill -9 of the active node at 40 %.
pub async fn burst(opts: &FailoverOptions) -> anyhow::Result<Burst> {
    let mut cluster = Cluster::new(opts, "burst")?;
    let store = Store::connect(&cluster.url, 4).await?;
    store.migrate().await?;
    for id in ["b1", "b2", "b3"] {
        cluster.start(id)?;
    }
    let timeout = Duration::from_millis(opts.interval_ms * u64::from(opts.heartbeats));
    let active = cluster.active(timeout * 10).await?;
    let wf = format!("bench-burst-{}", std::process::id());
    import(&cluster.url_of(&active)?, &sleeper(&wf, 5, 50)).await?;
    let client = Client::new(&cluster.url_of(&active)?, None);
    let starts = (0..200).map(|_| client.run(&wf, json!({}), None, false));
    for r in futures::future::join_all(starts).await {
        r?;
    }
    let wf2 = wf.clone();
    let count_completed_items = |store: Store, wf: String| async move {
        store
            .db()
            .run(move |c| async move {
                let ids = execution::Entity::find()
                    .select_only()
                    .column(execution::Column::Id)
                    .filter(execution::Column::WorkflowId.eq(wf))
                    .into_query();
                Ok(item_log::Entity::find()
                    .filter(item_log::Column::Event.eq("completed"))
                    .filter(item_log::Column::Item.ne("done"))
                    .filter(Expr::col(item_log::Column::ExecutionId).in_subquery(ids))
                    .count(&c)
                    .await?)
            })
            .await
    };
    let started = Instant::now();
    while count_completed_items(store.clone(), wf2.clone()).await? < 400 {
        if started.elapsed() > Duration::from_secs(120) {
            bail!("the burst did not reach 40 % in 120 s");
        }
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    let t0 = store.db_now_ms().await?;
    cluster.kill(&active);
    let wf3 = wf.clone();
    let running_at_kill = store
        .db()
        .run(move |c| async move {
            Ok(execution::Entity::find()
                .filter(execution::Column::WorkflowId.eq(wf3))
                .filter(execution::Column::State.eq(baton_actors::store::state::RUNNING))
                .count(&c)
                .await?)
        })
        .await?;
    let waited = Instant::now();
    loop {
        let wf4 = wf.clone();
        let (done, last) = store
            .db()
            .run(move |c| async move {
                let rows = execution::Entity::find()
                    .filter(execution::Column::WorkflowId.eq(wf4))
                    .filter(execution::Column::State.eq("completed"))
                    .all(&c)
                    .await?;
                Ok((
                    rows.len(),
                    rows.iter().filter_map(|r| r.ended_at).max().unwrap_or(0),
                ))
            })
            .await?;
        if done == 200 {
            let wf5 = wf.clone();
            let reran = store
                .db()
                .run(move |c| async move {
                    let ids = execution::Entity::find()
                        .select_only()
                        .column(execution::Column::Id)
                        .filter(execution::Column::WorkflowId.eq(wf5))
                        .into_query();
                    Ok(item_log::Entity::find()
                        .filter(item_log::Column::Event.eq("resumed"))
                        .filter(Expr::col(item_log::Column::ExecutionId).in_subquery(ids))
                        .count(&c)
                        .await?)
                })
                .await?;
            return Ok(Burst {
                all_done_ms: last - t0,
                reran,
                running_at_kill,
            });
        }
        if waited.elapsed() > timeout * 30 {
            bail!(
                "only {done} of 200 completed within {:?} of the kill",
                timeout * 30
            );
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `n` executions owned by a dead node; returns (takeover to all running
/// again in ms, how many resumed).
pub async fn rehydrate(opts: &FailoverOptions) -> anyhow::Result<(i64, u64)> {
    let mut cluster = Cluster::new(opts, "rehydrate")?;
    let store = Store::connect(&cluster.url, 8).await?;
    store.migrate().await?;
    let wf = format!("bench-rehydrate-{}", std::process::id());
    let def = sleeper(&wf, 1, 30_000);
    store.insert_workflow(&wf, &wf, def.to_string()).await?;
    let ghost = format!("ghost-{}", std::process::id());
    let fingerprint = {
        let mut c = crate::Config::default();
        c.cluster.enabled = true;
        c.cluster.heartbeat_interval_ms = opts.interval_ms;
        c.cluster.failover_heartbeats = opts.heartbeats;
        c.fingerprint()
    };
    store
        .join_cluster(
            NodeRegistration {
                id: ghost.clone(),
                address: "http://ghost".into(),
                role: "standby".into(),
                state: "STANDBY".into(),
                fingerprint,
            },
            60_000,
            None,
        )
        .await?;
    eprintln!("creating {} executions owned by {ghost}", opts.rehydrate);
    let mut created = 0;
    while created < opts.rehydrate {
        let batch = (created..(created + 50).min(opts.rehydrate)).map(|i| {
            store.create_execution(NewExecution {
                id: format!("{ghost}-{i}"),
                workflow_id: wf.clone(),
                workflow_version: 1,
                parent_id: None,
                inputs: json!({}),
                variables: json!({}),
                start_item: "s0".into(),
                owner_node: ghost.clone(),
                node_epoch: None,
                expect_current: false,
            })
        });
        for r in futures::future::join_all(batch).await {
            r?;
        }
        created = (created + 50).min(opts.rehydrate);
    }
    let g = ghost.clone();
    store
        .db()
        .run(move |c| async move {
            use baton_actors::store::entities::node;
            node::Entity::update_many()
                .col_expr(node::Column::Role, Expr::value("active"))
                .col_expr(node::Column::State, Expr::value("RUNNING"))
                .col_expr(node::Column::LastHeartbeat, Expr::value(0i64))
                .filter(node::Column::Id.eq(g))
                .exec(&c)
                .await?;
            Ok(())
        })
        .await?;
    let timeout = Duration::from_millis(opts.interval_ms * u64::from(opts.heartbeats));
    cluster.start("r1")?;
    let started = Instant::now();
    let g = ghost.clone();
    let takeover = loop {
        let g2 = g.clone();
        let t = store
            .db()
            .run(move |c| async move {
                Ok(cluster_event::Entity::find()
                    .filter(cluster_event::Column::Kind.eq("failover"))
                    .filter(cluster_event::Column::NodeId.eq(g2))
                    .one(&c)
                    .await?
                    .map(|e| e.time))
            })
            .await?;
        if let Some(t) = t {
            break t;
        }
        if started.elapsed() > timeout * 20 {
            bail!("no takeover of {g}");
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    };
    let n = opts.rehydrate as u64;
    loop {
        let prefix = format!("{ghost}-");
        let (count, last) = store
            .db()
            .run(move |c| async move {
                let count = item_log::Entity::find()
                    .filter(item_log::Column::Event.eq("resumed"))
                    .filter(item_log::Column::ExecutionId.starts_with(prefix.as_str()))
                    .count(&c)
                    .await?;
                let last = item_log::Entity::find()
                    .filter(item_log::Column::Event.eq("resumed"))
                    .filter(item_log::Column::ExecutionId.starts_with(prefix.as_str()))
                    .order_by_desc(item_log::Column::Time)
                    .one(&c)
                    .await?
                    .map(|l| l.time)
                    .unwrap_or(0);
                Ok((count, last))
            })
            .await?;
        if count >= n {
            cluster.kill("r1");
            return Ok((last - takeover, count));
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("only {count} of {n} resumed in 300 s");
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs all three and prints the figures.
pub async fn run(opts: &FailoverOptions) -> anyhow::Result<()> {
    let timeout = opts.interval_ms * u64::from(opts.heartbeats);
    let target = timeout + opts.interval_ms;
    let backend = opts
        .database_url
        .as_deref()
        .map(|u| u.split(':').next().unwrap_or("?"))
        .unwrap_or("sqlite");
    println!(
        "failover bench on {backend}: heartbeat {} ms x {} = timeout {timeout} ms",
        opts.interval_ms, opts.heartbeats
    );
    let mut times = kills(opts).await?;
    times.sort_unstable();
    println!(
        "kills: {} kill -9 of the active node; kill to first resumed item: p50 {} ms, p99 {} ms, max {} ms (target p99 <= {target} ms)",
        times.len(),
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.last().copied().unwrap_or(0)
    );
    let b = burst(opts).await?;
    println!(
        "burst: 200 workflows x 5 items of 50 ms, kill -9 at 40 %: all complete {} ms after the kill; {} item(s) ran twice, {} execution(s) were running at the kill",
        b.all_done_ms, b.reran, b.running_at_kill
    );
    if opts.rehydrate > 0 {
        let (ms, n) = rehydrate(opts).await?;
        println!("rehydrate: {n} interrupted executions all running again {ms} ms after the takeover (target <= 2000 ms)");
    }
    Ok(())
}
