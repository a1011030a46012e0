//! `baton bench search`: the execution search on a large table. Writes N
//! finished executions (10 workflows, 3 final states, 2 owner nodes, one
//! in ten a child of one of 100 parents, creation times a millisecond
//! apart), then times `GET /api/executions` pages over HTTP for each
//! filter, the first page and a page 20 cursors deep, and prints p50, p99
//! and the worst. On PostgreSQL it prints each query's plan too: every
//! filter must be an index range scan with no sort.

use std::time::{Duration, Instant};

use anyhow::bail;
use baton_actors::store::entities::execution;
use baton_actors::store::{search_sql, ExecutionFilter, PageKey};
use sea_orm::{ActiveValue::Set, ConnectionTrait, DbBackend, Statement};

use crate::client::Client;
use crate::config::Config;
use crate::node::Node;

/// What to run.
#[derive(Clone, Debug)]
pub struct SearchOptions {
    /// Database (a scratch one); default a fresh SQLite file.
    pub database_url: Option<String>,
    /// Executions written before timing.
    pub executions: usize,
    /// Timed requests per filter and depth.
    pub requests: usize,
}

const WORKFLOWS: usize = 10;
const PARENTS: usize = 100;
const STATES: [&str; 3] = ["completed", "failed", "canceled"];
const NODES: [&str; 2] = ["bench-a", "bench-b"];

fn row(i: usize, base: i64) -> execution::ActiveModel {
    let at = base + i as i64;
    let parent = (i % 10 == 9).then(|| format!("bench-parent-{:03}", i % PARENTS));
    let id = if i < PARENTS {
        format!("bench-parent-{i:03}")
    } else {
        format!("bench-{i:08}")
    };
    execution::ActiveModel {
        id: Set(id),
        workflow_id: Set(format!("wf-{}", i % WORKFLOWS)),
        workflow_version: Set(1),
        parent_id: Set(parent),
        state: Set(STATES[i % STATES.len()].into()),
        inputs: Set("{}".into()),
        variables: Set("{}".into()),
        outputs: Set(Some("{}".into())),
        current_item: Set(Some("e".into())),
        step: Set(1),
        attempt: Set(1),
        owner_node: Set(Some(NODES[i % NODES.len()].into())),
        owner_epoch: Set(1),
        error: Set(None),
        wait_until: Set(None),
        wait_signal: Set(None),
        created_at: Set(at),
        started_at: Set(Some(at)),
        ended_at: Set(Some(at + 1)),
        updated_at: Set(at + 1),
        run_token: Set(1),
        item_retries: Set(0),
        signaled: Set(0),
    }
}

/// Writes `n` finished executions as described in the module
/// documentation, and has the database analyze the table; returns the
/// creation time of the first (ms since the epoch).
pub async fn seed(store: &baton_actors::Store, n: usize) -> anyhow::Result<i64> {
    let base = store.db_now_ms().await? - n as i64 - 60_000;
    super::write_executions(store, n, |i| row(i, base)).await?;
    Ok(base)
}

/// The filters the benchmark times: a name, the query string, the filter.
pub fn filters() -> Vec<(&'static str, &'static str, ExecutionFilter)> {
    let f = ExecutionFilter::default;
    vec![
        ("none", "", f()),
        (
            "workflow",
            "workflow=wf-3",
            ExecutionFilter {
                workflow_id: Some("wf-3".into()),
                ..f()
            },
        ),
        (
            "state",
            "state=failed",
            ExecutionFilter {
                state: Some("failed".into()),
                ..f()
            },
        ),
        (
            "parent",
            "parent=bench-parent-019",
            ExecutionFilter {
                parent_id: Some("bench-parent-019".into()),
                ..f()
            },
        ),
        (
            "node",
            "node=bench-b",
            ExecutionFilter {
                owner_node: Some("bench-b".into()),
                ..f()
            },
        ),
        (
            "created range",
            "created_after=1970-01-01T00:00:00Z&created_before=2999-01-01T00:00:00Z",
            ExecutionFilter {
                created_after: Some(0),
                created_before: Some(32_472_144_000_000),
                ..f()
            },
        ),
        (
            "workflow+state",
            "workflow=wf-3&state=completed",
            ExecutionFilter {
                workflow_id: Some("wf-3".into()),
                state: Some("completed".into()),
                ..f()
            },
        ),
    ]
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Runs the benchmark. Must run inside an actix system.
pub async fn run(opts: &SearchOptions) -> anyhow::Result<()> {
    let scratch =
        std::env::temp_dir().join(format!("baton-bench-search-{}.db", std::process::id()));
    let url = match &opts.database_url {
        Some(u) => u.clone(),
        None => {
            let _ = std::fs::remove_file(&scratch);
            format!("sqlite://{}?mode=rwc", scratch.display())
        }
    };
    let mut config = Config::default();
    config.database.url = url.clone();
    config.http.listen = "127.0.0.1:0".into();
    config.node.id = Some(format!("bench-search-{}", std::process::id()));
    config.retention.enabled = false;
    let node = Node::builder().config(config).start().await?;
    let store = node.store().clone();
    let backend = store.backend();
    let started = Instant::now();
    let base = seed(&store, opts.executions).await?;
    println!(
        "bench search {}: {} executions written in {:.1} s",
        url.split(':').next().unwrap_or("?"),
        opts.executions,
        started.elapsed().as_secs_f64()
    );
    let client = Client::new(&node.url(), None);
    println!("| filter | page | rows | p50 ms | p99 ms | max ms |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut plans = Vec::new();
    for (name, query, filter) in filters() {
        // The cursor up to 20 pages deep.
        // (A full last page names a cursor whose page is empty: not kept.)
        let mut deep: Option<String> = None;
        let mut depth_reached = 0;
        let mut next: Option<String> = None;
        for depth in 0..=20 {
            let path = match &next {
                Some(c) => format!("/api/executions?{query}&limit=100&cursor={c}"),
                None => format!("/api/executions?{query}&limit=100"),
            };
            let page = client.get(&path).await?;
            if page["executions"].as_array().is_none_or(Vec::is_empty) {
                break;
            }
            if depth > 0 {
                deep = next.clone();
                depth_reached = depth;
            }
            match page["next_cursor"].as_str() {
                Some(c) => next = Some(c.to_owned()),
                None => break,
            }
        }
        let deep_label = format!("{depth_reached} deep");
        let mut pages = vec![("first", None)];
        if deep.is_some() {
            pages.push((deep_label.as_str(), deep.clone()));
        }
        for (depth, cursor) in pages {
            let path = match &cursor {
                Some(c) => format!("/api/executions?{query}&limit=100&cursor={c}"),
                None => format!("/api/executions?{query}&limit=100"),
            };
            let mut times = Vec::with_capacity(opts.requests);
            let mut rows = 0;
            for _ in 0..opts.requests {
                let t = Instant::now();
                let page = client.get(&path).await?;
                times.push(t.elapsed());
                rows = page["executions"].as_array().map_or(0, Vec::len);
            }
            if rows == 0 {
                bail!(
                    "filter {name} ({depth}) found nothing: the bench database is not as written"
                );
            }
            times.sort();
            println!(
                "| {name} | {depth} | {rows} | {:.2} | {:.2} | {:.2} |",
                quantile(&times, 0.5).as_secs_f64() * 1e3,
                quantile(&times, 0.99).as_secs_f64() * 1e3,
                times.last().copied().unwrap_or_default().as_secs_f64() * 1e3
            );
        }
        if backend == DbBackend::Postgres {
            let mut f = filter;
            f.limit = 100;
            f.below = Some(PageKey {
                created_at: base + opts.executions as i64 / 2,
                id: "bench-5".into(),
            });
            plans.push((name, explain(&store, &f).await?));
        }
    }
    for (name, plan) in plans {
        println!("\nplan, {name} (below a cursor):\n{plan}");
    }
    node.stop().await;
    if opts.database_url.is_none() {
        let _ = std::fs::remove_file(&scratch);
    }
    Ok(())
}

/// PostgreSQL's plan of a search page.
pub async fn explain(
    store: &baton_actors::Store,
    filter: &ExecutionFilter,
) -> anyhow::Result<String> {
    let sql = format!("EXPLAIN {}", search_sql(DbBackend::Postgres, filter));
    let lines = store
        .db()
        .run(move |c| async move {
            let rows = c
                .query_all_raw(Statement::from_string(DbBackend::Postgres, sql))
                .await?;
            rows.iter()
                .map(|r| r.try_get::<String>("", "QUERY PLAN"))
                .collect::<Result<Vec<_>, _>>()
                .map_err(Into::into)
        })
        .await?;
    Ok(lines.join("\n"))
}
