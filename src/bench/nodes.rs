//! `baton bench nodes`: what a second (or third) active node adds on one
//! database. For each node count N asked for, a local cluster of N real
//! `baton serve` processes with `cluster.active_nodes = N` on the same
//! database runs W workflows of S no-op `task` items, started over HTTP by
//! C clients spread evenly over the nodes (each client POSTs its share one
//! after the other), and the run ends when all W have completed (read from
//! the database). Prints checkpointed items per second and each node's
//! share, so that N = 1 and N = 2 compare on the same machine and
//! database in one run.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use baton_actors::store::Store;
use sea_orm::{ConnectionTrait as _, Statement};
use serde_json::json;

use super::failover::{import, Cluster, FailoverOptions};
use crate::client::Client;

/// What to run.
#[derive(Clone, Debug)]
pub struct NodesOptions {
    /// The database (a scratch one); default a fresh SQLite file per run.
    pub database_url: Option<String>,
    /// The node counts to run, one cluster each, in this order.
    pub nodes: Vec<u32>,
    /// Workflows (W) per run.
    pub workflows: u64,
    /// No-op task items per workflow (S).
    pub steps: u64,
    /// HTTP clients in all (C), spread over the nodes.
    pub clients: usize,
    /// The `baton` executable to run as nodes.
    pub exe: std::path::PathBuf,
}

/// One run's figures.
#[derive(Debug)]
pub struct NodesReport {
    /// Active nodes.
    pub nodes: u32,
    /// From the first start sent until all W completed.
    pub elapsed: Duration,
    /// Checkpointed items (S tasks and the `end` per workflow) per second.
    pub items_per_sec: f64,
    /// Completed executions per node that ran them last, by node id.
    pub shares: Vec<(String, i64)>,
}

/// Completed and failed executions of `workflow`, and the completed ones
/// by owner node.
async fn counts(store: &Store, workflow: &str) -> anyhow::Result<(i64, i64, Vec<(String, i64)>)> {
    let backend = store.backend();
    let p = if backend == sea_orm::DbBackend::Postgres {
        "$1"
    } else {
        "?"
    };
    let sql = format!(
        "SELECT state, coalesce(owner_node, ''), count(*) FROM executions \
         WHERE workflow_id = {p} AND state IN ('completed', 'failed') GROUP BY state, owner_node"
    );
    let workflow = workflow.to_owned();
    let rows = store
        .db()
        .run(move |c| async move {
            Ok(c.query_all_raw(Statement::from_sql_and_values(
                backend,
                sql,
                [workflow.into()],
            ))
            .await?)
        })
        .await?;
    let (mut completed, mut failed, mut shares) = (0, 0, Vec::new());
    for r in rows {
        let state: String = r.try_get_by_index(0)?;
        let node: String = r.try_get_by_index(1)?;
        let n: i64 = r.try_get_by_index(2)?;
        if state == "completed" {
            completed += n;
            shares.push((node, n));
        } else {
            failed += n;
        }
    }
    shares.sort();
    Ok((completed, failed, shares))
}

/// One cluster of `n` active nodes, timed.
/// `run` numbers the runs of one invocation (each has a workflow and
/// node ids of its own, so that runs on one database do not mix).
pub async fn run_one(opts: &NodesOptions, n: u32, run: usize) -> anyhow::Result<NodesReport> {
    if n == 0 {
        bail!("--nodes: a node count must be at least 1");
    }
    let fo = FailoverOptions {
        database_url: opts.database_url.clone(),
        interval_ms: 200,
        heartbeats: 5,
        kills: 0,
        rehydrate: 0,
        exe: opts.exe.clone(),
    };
    let tag = format!("r{run}n{n}");
    let mut cluster = Cluster::new(&fo, &tag)?.with_active_nodes(n);
    let ids: Vec<String> = (0..n).map(|i| format!("{tag}-{i}")).collect();
    for id in &ids {
        cluster.start(id)?;
        cluster
            .wait_state(id, "RUNNING", Duration::from_secs(60))
            .await?;
    }
    let urls: Vec<String> = ids
        .iter()
        .map(|id| cluster.url_of(id))
        .collect::<anyhow::Result<_>>()?;
    let workflow = format!("bench-{tag}-s{}-{}", opts.steps, std::process::id());
    import(&urls[0], &super::task_chain(&workflow, opts.steps)).await?;
    let store = Store::connect(&cluster.url, 2).await?;

    let errors = std::rc::Rc::new(std::cell::RefCell::new(Vec::<String>::new()));
    let clients = opts.clients.max(1);
    let began = Instant::now();
    for c in 0..clients {
        let share = opts.workflows / clients as u64
            + u64::from((c as u64) < opts.workflows % clients as u64);
        let client = Client::new(&urls[c % urls.len()], None);
        let (errors, path) = (
            errors.clone(),
            format!("/api/workflows/{workflow}/executions"),
        );
        actix_rt::spawn(async move {
            let body = json!({"inputs": {}});
            for _ in 0..share {
                if let Err(e) = client
                    .send_json(awc::http::Method::POST, &path, Some(&body))
                    .await
                {
                    errors.borrow_mut().push(e.to_string());
                    return;
                }
            }
        });
    }
    let shares = loop {
        if let Some(e) = errors.borrow().first() {
            return Err(anyhow!("starting an execution failed: {e}"));
        }
        let (completed, failed, shares) = counts(&store, &workflow).await?;
        if failed > 0 {
            bail!("{failed} bench executions failed");
        }
        if completed as u64 >= opts.workflows {
            break shares;
        }
        if began.elapsed() > Duration::from_secs(600) {
            bail!(
                "not done in 10 minutes ({completed} of {} completed)",
                opts.workflows
            );
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    };
    let elapsed = began.elapsed();
    cluster.stop_all();
    let items = opts.workflows * (opts.steps + 1);
    Ok(NodesReport {
        nodes: n,
        elapsed,
        items_per_sec: items as f64 / elapsed.as_secs_f64(),
        shares,
    })
}

/// Runs every node count asked for and prints one line each.
pub async fn run(opts: &NodesOptions) -> anyhow::Result<()> {
    println!(
        "nodes bench: W={} S={} over HTTP from {} clients, on {}",
        opts.workflows,
        opts.steps,
        opts.clients,
        opts.database_url
            .as_deref()
            .map_or("a fresh SQLite file per run", |u| u
                .split(':')
                .next()
                .unwrap_or(u))
    );
    // Each run with more nodes is compared with the last one-node run.
    let mut one: Option<f64> = None;
    for (run, &n) in opts.nodes.iter().enumerate() {
        let r = run_one(opts, n, run).await?;
        let ratio = match one {
            Some(f) if n > 1 => format!(" ({:.2} x one node's)", r.items_per_sec / f),
            _ => String::new(),
        };
        if n == 1 {
            one = Some(r.items_per_sec);
        }
        let shares: Vec<String> = r
            .shares
            .iter()
            .map(|(node, k)| format!("{node} {k}"))
            .collect();
        println!(
            "{} active node(s): {:.0} items/s{ratio}, {:.1} s; executions completed by: {}",
            r.nodes,
            r.items_per_sec,
            r.elapsed.as_secs_f64(),
            shares.join(", ")
        );
    }
    Ok(())
}
