//! `baton bench`: the benchmarks.
//!
//! - this module (`baton bench`): W workflows of S no-op `task` items, C at
//!   a time, on an in-process node against a given database; prints
//!   checkpointed items per second and the item latency (start of an item
//!   to its checkpoint committed) at p50 and p99.
//! - [`failover`] (`baton bench failover`): a local cluster of real
//!   processes, killed again and again.
//! - [`waits`] (`baton bench waits`): parked executions' memory, signal
//!   delivery, timer accuracy.
//! - [`search`] (`baton bench search`): search pages on a large table.
//! - [`compare`] (`baton bench compare`): the database's own commit rate,
//!   then the benchmarks above on the same database, as one table.

pub mod compare;
pub mod failover;
pub mod nodes;
pub mod search;
pub mod waits;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use serde_json::json;

use crate::config::Config;
use crate::node::Node;

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Database URL.
    pub database_url: String,
    /// Workflows to run.
    pub workflows: u64,
    /// `task` items per workflow.
    pub steps: u64,
    /// Executions in flight at once; with `http`, the HTTP clients.
    pub concurrency: u64,
    /// Start the executions over HTTP: `concurrency` clients each POST
    /// their share of the starts one after the other, as fast as the node
    /// answers, and the run ends when every execution has finished (the
    /// node holds as many in flight as have been started).
    pub http: bool,
}

/// What was measured.
#[derive(Clone, Debug)]
pub struct BenchReport {
    /// Wall time from the first start to the last completion.
    pub elapsed: Duration,
    /// Item checkpoints committed (S tasks plus the end item, per workflow).
    pub items: u64,
    /// Items per second.
    pub items_per_sec: f64,
    /// Item latency, median.
    pub p50: Duration,
    /// Item latency, 99th percentile.
    pub p99: Duration,
    /// Group-commit transactions of checkpoints.
    pub batches: u64,
    /// Checkpoints per transaction, on average.
    pub batch_mean: f64,
    /// A transaction's time from its first statement to its commit, median.
    pub commit_p50: Duration,
    /// The same, 99th percentile.
    pub commit_p99: Duration,
}

/// The bench node's configuration before the bench's own settings: the
/// defaults, then the `BATON_<SECTION>__<KEY>` variables, so that one bench
/// can compare settings (`BATON_SCRIPTS__INLINE=false`).
pub(crate) fn base_config() -> anyhow::Result<Config> {
    Ok(Config::load(None, std::env::vars(), &[])?)
}

/// Runs the benchmark. Must run inside an actix system.
pub async fn run(opts: &BenchOptions) -> anyhow::Result<BenchReport> {
    let mut config = base_config()?;
    config.database.url = opts.database_url.clone();
    config.database.max_connections = (opts.concurrency as u32 + 4).clamp(4, 64);
    config.http.listen = "127.0.0.1:0".into();
    config.node.id = Some(format!("bench-{}", std::process::id()));
    let node = Node::builder().config(config).start().await?;

    let id = format!("bench-s{}", opts.steps);
    let def = task_chain(&id, opts.steps);
    let client = crate::client::Client::new(&node.url(), None);
    if client.get(&format!("/api/workflows/{id}")).await.is_err() {
        let path = std::env::temp_dir().join(format!("{id}-{}.json", std::process::id()));
        std::fs::write(&path, def.to_string())?;
        client
            .import(&path)
            .await
            .context("importing the bench workflow")?;
        let _ = std::fs::remove_file(&path);
    }

    let metrics = node.metrics();
    metrics.item_latency.reset();
    let group = node.store().checkpoint_stats();
    group.commit.reset();
    let (batches0, checkpoints0) = (
        group.batches.load(Ordering::Relaxed),
        group.checkpoints.load(Ordering::Relaxed),
    );
    let done0 = metrics.executions_completed.load(Ordering::Relaxed)
        + metrics.executions_failed.load(Ordering::Relaxed);
    let items0 = metrics.items_completed.load(Ordering::Relaxed);
    let finished = || {
        metrics.executions_completed.load(Ordering::Relaxed)
            + metrics.executions_failed.load(Ordering::Relaxed)
            - done0
    };
    let starter = node.starter().clone();
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let started_at = Instant::now();
    let mut started = 0u64;
    if opts.http {
        // Every start is sent from here on; `started` is what the loop
        // below must not add to.
        started = opts.workflows;
        let clients = opts.concurrency.max(1);
        for c in 0..clients {
            let share = opts.workflows / clients + u64::from(c < opts.workflows % clients);
            let client = crate::client::Client::new(&node.url(), None);
            let (errors, path) = (errors.clone(), format!("/api/workflows/{id}/executions"));
            actix_rt::spawn(async move {
                let body = json!({"inputs": {}});
                for _ in 0..share {
                    let r = client
                        .send_json(awc::http::Method::POST, &path, Some(&body))
                        .await;
                    if let Err(e) = r {
                        if let Ok(mut l) = errors.lock() {
                            l.push(e.to_string());
                        }
                        return;
                    }
                }
            });
        }
    }
    while finished() < opts.workflows {
        while started < opts.workflows && started - finished() < opts.concurrency {
            started += 1;
            let starter = starter.clone();
            let errors = errors.clone();
            let id = id.clone();
            actix_rt::spawn(async move {
                let r = starter.start(id, json!({}), None).await;
                if let Err(e) = r.map_err(|e| e.to_string()) {
                    if let Ok(mut l) = errors.lock() {
                        l.push(e);
                    }
                }
            });
        }
        if let Some(e) = errors.lock().ok().and_then(|l| l.first().cloned()) {
            return Err(anyhow!("starting an execution failed: {e}"));
        }
        if started_at.elapsed() > Duration::from_secs(600) {
            return Err(anyhow!(
                "bench did not finish in 10 minutes ({} of {} done)",
                finished(),
                opts.workflows
            ));
        }
        let _ = actix_rt::time::timeout(Duration::from_millis(50), metrics.ended.notified()).await;
    }
    let elapsed = started_at.elapsed();
    let items = metrics.items_completed.load(Ordering::Relaxed) - items0;
    let report = BenchReport {
        elapsed,
        items,
        items_per_sec: items as f64 / elapsed.as_secs_f64(),
        p50: metrics.item_latency.quantile(0.50),
        p99: metrics.item_latency.quantile(0.99),
        batches: group.batches.load(Ordering::Relaxed) - batches0,
        batch_mean: (group.checkpoints.load(Ordering::Relaxed) - checkpoints0) as f64
            / (group.batches.load(Ordering::Relaxed) - batches0).max(1) as f64,
        commit_p50: group.commit.quantile(0.50),
        commit_p99: group.commit.quantile(0.99),
    };
    node.stop().await;
    Ok(report)
}

/// The benchmark's workflow: `steps` no-op `task` items (`n = n + 1;`),
/// then its `end`.
pub(crate) fn task_chain(id: &str, steps: u64) -> serde_json::Value {
    let mut items = serde_json::Map::new();
    for i in 0..steps {
        let next = if i + 1 == steps {
            "done".to_owned()
        } else {
            format!("t{}", i + 1)
        };
        items.insert(
            format!("t{i}"),
            json!({"type": "task", "script": "n = n + 1;", "next": next}),
        );
    }
    items.insert("done".into(), json!({"type": "end"}));
    json!({"id": id, "variables": {"n": 0}, "start": "t0", "items": items})
}

/// Writes `n` execution rows made by `row` straight into the table, a
/// thousand per statement (under SQLite's limit on bound values), then
/// has the database analyze it so that its planner sees the table as it
/// is. For the benchmarks that need a large table: a scratch database.
pub async fn write_executions(
    store: &baton_actors::Store,
    n: usize,
    row: impl Fn(usize) -> baton_actors::store::entities::execution::ActiveModel,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use sea_orm::EntityTrait;
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let rows: Vec<_> = chunk.iter().map(|&i| row(i)).collect();
        store
            .db()
            .run(move |c| async move {
                baton_actors::store::entities::execution::Entity::insert_many(rows)
                    .exec(&c)
                    .await?;
                Ok(())
            })
            .await
            .context("writing the executions (use a scratch database)")?;
    }
    analyze(store).await
}

/// Has the database analyze the tables the engine writes, so that its
/// planner sees them as they are (a scratch database filled in seconds).
pub async fn analyze(store: &baton_actors::Store) -> anyhow::Result<()> {
    use sea_orm::{ConnectionTrait, DbBackend};
    let analyze = match store.backend() {
        DbBackend::Postgres => "ANALYZE executions, signals, item_log",
        DbBackend::MySql => "ANALYZE TABLE executions, signals, item_log",
        _ => "ANALYZE",
    };
    store
        .db()
        .run(move |c| async move {
            c.execute_unprepared(analyze).await?;
            Ok(())
        })
        .await?;
    Ok(())
}
