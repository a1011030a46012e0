//! `baton bench waits`: the cost of waiting. With `--idle-parked N`, first
//! writes N parked executions straight into the table and measures the
//! node's CPU and memory over 10 s in which nothing is due. Parks N executions on a
//! signal through the engine and reports the node's resident memory before
//! and after (waiting must hold no actor), then delivers every signal and
//! reports how long until all complete; then starts M executions whose
//! timers are all due at the same moment and reports the delay from that
//! moment to each timer's completion, p50 and p99 (database clock).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use baton_actors::store::entities::{execution, item_log};
use baton_actors::store::Store;
use baton_actors::supervisor::WakeDue;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QuerySelect,
    TransactionTrait,
};
use serde_json::json;

use crate::node::Node;

/// What to run.
#[derive(Clone, Debug)]
pub struct WaitOptions {
    /// Database (a scratch one); default a fresh SQLite file.
    pub database_url: Option<String>,
    /// Executions parked on a signal.
    pub parked: usize,
    /// Executions whose timers fall due together.
    pub timers: usize,
    /// Executions written parked, then the idle node measured; 0: skip.
    pub idle_parked: usize,
    /// `engine.max_running`; `None`: the default.
    pub max_running: Option<u32>,
    /// Deliver the signals over HTTP from this many clients; 0: in one
    /// statement.
    pub signal_clients: usize,
}

/// This process's CPU time (user + system), from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            let rest = stat.rsplit_once(')')?.1.to_owned();
            let f: Vec<&str> = rest.split_whitespace().collect();
            // Fields 14 and 15 (utime, stime) in clock ticks (100 a second).
            let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
            Some((t(11)? + t(12)?) / 100.0)
        })
        .unwrap_or(0.0)
}

/// One execution parked by `node` (as the engine leaves it), written
/// straight into the table: even ones on a signal, odd ones on a timer
/// due at `due`.
fn parked_row(i: usize, node: &str, workflow: &str, now: i64, due: i64) -> execution::ActiveModel {
    use sea_orm::Set;
    let on_signal = i.is_multiple_of(2);
    execution::ActiveModel {
        id: Set(format!("idle-{i:08}")),
        workflow_id: Set(workflow.to_owned()),
        workflow_version: Set(1),
        parent_id: Set(None),
        state: Set(if on_signal {
            baton_actors::store::state::WAITING_SIGNAL
        } else {
            baton_actors::store::state::WAITING
        }
        .into()),
        inputs: Set("{}".into()),
        variables: Set("{}".into()),
        outputs: Set(None),
        current_item: Set(Some("wait".into())),
        step: Set(1),
        attempt: Set(1),
        owner_node: Set(Some(node.to_owned())),
        owner_epoch: Set(1),
        error: Set(None),
        wait_until: Set((!on_signal).then_some(due)),
        wait_signal: Set(on_signal.then(|| "go".to_owned())),
        created_at: Set(now),
        started_at: Set(Some(now)),
        ended_at: Set(None),
        updated_at: Set(now),
        run_token: Set(1),
        item_retries: Set(0),
        signaled: Set(0),
    }
}

/// Writes `n` parked executions owned by the node, then measures its CPU
/// and resident memory over 10 s in which nothing is due.
async fn idle(
    node: &crate::NodeHandle,
    store: &Store,
    workflow: &str,
    n: usize,
) -> anyhow::Result<()> {
    let me = node.node_id().to_owned();
    let now = store.db_now_ms().await?;
    let due = now + 86_400_000;
    let t0 = Instant::now();
    super::write_executions(store, n, |i| parked_row(i, &me, workflow, now, due)).await?;
    let written = t0.elapsed();
    // Let the writes settle (WAL checkpoints, the allocator) first.
    actix_rt::time::sleep(Duration::from_secs(3)).await;
    let (cpu0, wall0) = (cpu_seconds(), Instant::now());
    actix_rt::time::sleep(Duration::from_secs(10)).await;
    let core = (cpu_seconds() - cpu0) / wall0.elapsed().as_secs_f64();
    let woken = count(store, workflow, baton_actors::store::state::RUNNING).await?;
    // What a Prometheus scrape costs with that many owned (its gauges count
    // this node's executions by state in the database).
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(60))
        .finish();
    let mut scrapes = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let mut r = client
            .get(format!("{}/metrics", node.url()))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("scraping /metrics: {e}"))?;
        r.body().limit(16 << 20).await?;
        scrapes.push(t.elapsed());
    }
    scrapes.sort();
    println!(
        "idle: {n} executions parked (half on a signal, half on a timer due in a day; written in {:.1} s); \
         over 10 s with nothing due the node used {:.2}% of a core (target < 2%), RSS {:.1} MB (target < 100 MB); woken by mistake: {woken}; \
         a /metrics scrape took {:.1} ms (median of 5, max {:.1} ms)",
        written.as_secs_f64(),
        core * 100.0,
        rss_mb(),
        scrapes[2].as_secs_f64() * 1e3,
        scrapes[4].as_secs_f64() * 1e3,
    );
    Ok(())
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Executions of `workflow` in `state`, read on the read-only
/// connections on SQLite: the bench's polling must not queue on the
/// connection the node writes through.
async fn count(store: &Store, workflow: &str, state: &str) -> anyhow::Result<u64> {
    let (w, s) = (workflow.to_owned(), state.to_owned());
    Ok(store
        .db()
        .run_read(move |c| async move {
            Ok(execution::Entity::find()
                .filter(execution::Column::WorkflowId.eq(w))
                .filter(execution::Column::State.eq(s))
                .count(&c)
                .await?)
        })
        .await?)
}

/// The ids of every execution of `workflow`.
async fn execution_ids(store: &Store, workflow: &str) -> anyhow::Result<Vec<String>> {
    let wf = workflow.to_owned();
    Ok(store
        .db()
        .run_read(move |c| async move {
            Ok(execution::Entity::find()
                .select_only()
                .column(execution::Column::Id)
                .filter(execution::Column::WorkflowId.eq(wf))
                .into_tuple()
                .all(&c)
                .await?)
        })
        .await?)
}

async fn start_many(
    node: &crate::NodeHandle,
    workflow: &str,
    n: usize,
    inputs: serde_json::Value,
) -> anyhow::Result<()> {
    let mut started = 0;
    while started < n {
        let batch: Vec<_> = (started..(started + 64).min(n))
            .map(|_| {
                node.starter()
                    .start(workflow.to_owned(), inputs.clone(), None)
            })
            .collect();
        for r in futures::future::join_all(batch).await {
            r?;
        }
        started = (started + 64).min(n);
    }
    Ok(())
}

async fn wait_until(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    loop {
        if check().await? {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > limit {
            bail!("{what}: not done within {limit:?}");
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `n` executions of `workflow` are stored in `state`. The
/// node's own counter (`progress`, free to read) is watched until it says
/// they should be, and only then the database is counted: counting a
/// hundred thousand rows every 50 ms from the start took a good part of a
/// core from the database the bench measures.
async fn wait_stored(
    what: &str,
    store: &Store,
    workflow: &str,
    state: &str,
    n: u64,
    progress: impl Fn() -> u64,
) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let limit = Duration::from_secs(1800);
    wait_until(what, limit, async || Ok(progress() >= n)).await?;
    wait_until(what, limit, async || {
        Ok(count(store, workflow, state).await? >= n)
    })
    .await?;
    Ok(t0.elapsed())
}

/// Every signal at once, as a sender would store each: the signal and the
/// wake flag in one transaction.
async fn deliver_in_one_statement(store: &Store, workflow: &str) -> anyhow::Result<()> {
    let wf = workflow.to_owned();
    store
        .db()
        .run(move |c| async move {
            let backend = c.get_database_backend();
            let now = Store::now_sql(backend);
            let sql = format!(
                "INSERT INTO signals (execution_id, name, payload, created_at) \
                 SELECT id, 'go', 'null', {now} FROM executions WHERE workflow_id = '{wf}' AND state = 'waiting-signal'"
            );
            let txn = c.begin().await?;
            txn.execute_unprepared(&sql).await?;
            txn.execute_unprepared(&format!(
                "UPDATE executions SET signaled = 1 WHERE workflow_id = '{wf}' AND state = 'waiting-signal'"
            ))
            .await?;
            if backend == sea_orm::DbBackend::Postgres {
                // A sender's connection that keeps writing reports its
                // rows to the statistics within a second; this one goes
                // idle after one statement and would report them up to
                // 10 s later, leaving the node's planner statistics
                // (`store::planner`) that much behind. PostgreSQL 15+.
                txn.execute_unprepared(
                    "DO $$ BEGIN IF current_setting('server_version_num')::int >= 150000 \
                     THEN PERFORM pg_stat_force_next_flush(); END IF; END $$",
                )
                .await?;
            }
            txn.commit().await?;
            Ok(())
        })
        .await
        .context("delivering the signals")
}

/// Every signal over HTTP (`POST /api/executions/{id}/signals/go`), from
/// `clients` clients each sending its share one after the other, as users
/// do; prints the rate and what the group commit of deliveries did.
async fn deliver_over_http(
    node: &crate::NodeHandle,
    store: &Store,
    workflow: &str,
    clients: usize,
) -> anyhow::Result<()> {
    use std::sync::atomic::Ordering;
    let ids = execution_ids(store, workflow).await?;
    let stats = store.delivery_stats();
    stats.commit.reset();
    let (batches0, delivered0) = (
        stats.batches.load(Ordering::Relaxed),
        stats.checkpoints.load(Ordering::Relaxed),
    );
    let t0 = Instant::now();
    let shares: Vec<Vec<String>> = (0..clients)
        .map(|c| ids.iter().skip(c).step_by(clients).cloned().collect())
        .collect();
    let sends = shares.into_iter().map(|share| {
        let client = crate::client::Client::new(&node.url(), None);
        async move {
            for id in share {
                client
                    .send_json(
                        awc::http::Method::POST,
                        &format!("/api/executions/{id}/signals/go"),
                        None,
                    )
                    .await
                    .with_context(|| format!("signaling {id}"))?;
            }
            Ok::<_, anyhow::Error>(())
        }
    });
    for r in futures::future::join_all(sends).await {
        r?;
    }
    let took = t0.elapsed().as_secs_f64();
    let batches = stats.batches.load(Ordering::Relaxed) - batches0;
    let delivered = stats.checkpoints.load(Ordering::Relaxed) - delivered0;
    println!(
        "delivered: {} signals over HTTP from {clients} clients in {took:.1} s, {:.0} a second; \
         {batches} transactions, {:.1} signals each, commit p50 {:.2} ms, p99 {:.2} ms",
        ids.len(),
        ids.len() as f64 / took,
        delivered as f64 / batches.max(1) as f64,
        stats.commit.quantile(0.5).as_secs_f64() * 1e3,
        stats.commit.quantile(0.99).as_secs_f64() * 1e3,
    );
    Ok(())
}

/// What `run` measured (`None`: not run).
#[derive(Clone, Debug, Default)]
pub struct WaitReport {
    /// Executions started and parked on a signal per second.
    pub parked_per_sec: Option<f64>,
    /// Seconds from delivering every signal to all completed.
    pub signals_secs: Option<f64>,
    /// Due-to-resumed delay of the timers, median and 99th percentile (ms).
    pub timers_ms: Option<(i64, i64)>,
}

/// Runs the measurements and prints them.
pub async fn run(opts: &WaitOptions) -> anyhow::Result<WaitReport> {
    let mut report = WaitReport::default();
    let dir = std::env::temp_dir().join(format!("baton-bench-waits-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let url = opts
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", dir.join("waits.db").display()));
    let mut config = super::base_config()?;
    config.database.url = url.clone();
    config.http.listen = "127.0.0.1:0".into();
    config.node.id = Some(format!("bench-waits-{}", std::process::id()));
    if let Some(n) = opts.max_running {
        config.engine.max_running = n;
    }
    let node_max_running = config.engine.max_running;
    let node = Node::builder().config(config).start().await?;
    let store = node.store().clone();
    let tag = std::process::id();
    let parked_wf = format!("bench-park-{tag}");
    let timer_wf = format!("bench-timer-{tag}");
    let park_def = json!({"id": parked_wf, "start": "wait", "items": {
        "wait": {"type": "signal", "name": "go", "next": "done"}, "done": {"type": "end"}}});
    let timer_def = json!({"id": timer_wf, "inputs": {"at": "string"}, "start": "nap", "items": {
        "nap": {"type": "timer", "until": "at", "next": "done"}, "done": {"type": "end"}}});
    store
        .insert_workflow(&parked_wf, &parked_wf, park_def.to_string())
        .await?;
    store
        .insert_workflow(&timer_wf, &timer_wf, timer_def.to_string())
        .await?;

    let backend = url.split(':').next().unwrap_or("?");
    println!("waits bench on {backend}");
    if opts.idle_parked > 0 {
        // A workflow of their own, so the measurements below do not count them.
        let idle_wf = format!("bench-idle-{tag}");
        let def = json!({"id": idle_wf, "start": "wait", "items": {
            "wait": {"type": "signal", "name": "go", "next": "done"}, "done": {"type": "end"}}});
        store
            .insert_workflow(&idle_wf, &idle_wf, def.to_string())
            .await?;
        idle(&node, &store, &idle_wf, opts.idle_parked).await?;
    }
    if opts.parked > 0 {
        let before = rss_mb();
        let t0 = Instant::now();
        let metrics = node.metrics();
        let started0 = metrics.items_started.load(Ordering::Relaxed);
        start_many(&node, &parked_wf, opts.parked, json!({})).await?;
        let n = opts.parked as u64;
        // Each parked execution begins its one `wait` item once.
        wait_stored(
            "parking",
            &store,
            &parked_wf,
            baton_actors::store::state::WAITING_SIGNAL,
            n,
            || metrics.items_started.load(Ordering::Relaxed) - started0,
        )
        .await?;
        let parked_in = t0.elapsed();
        report.parked_per_sec = Some(n as f64 / parked_in.as_secs_f64());
        // Let allocators settle before reading memory.
        actix_rt::time::sleep(Duration::from_secs(2)).await;
        let after = rss_mb();
        let running = node
            .supervisor()
            .send(baton_actors::supervisor::QueryState)
            .await?
            .running;
        println!(
            "parked: {n} executions on a signal in {:.1} s (engine.max_running = {}); RSS {before:.1} MB before, {after:.1} MB parked (+{:.1} MB, target < 50 MB); actors held: {running}",
            parked_in.as_secs_f64(),
            node_max_running,
            after - before
        );
        let completed0 = metrics.executions_completed.load(Ordering::Relaxed);
        let calls0 = store
            .db_calls()
            .calls
            .load(std::sync::atomic::Ordering::Relaxed);
        let t1 = Instant::now();
        if opts.signal_clients > 0 {
            deliver_over_http(&node, &store, &parked_wf, opts.signal_clients).await?;
        } else {
            deliver_in_one_statement(&store, &parked_wf).await?;
        }
        // A table that grew from nothing in seconds (a hundred thousand
        // signals in one statement) is analyzed by the node itself on
        // PostgreSQL (`store::planner`), as in service; not here. MySQL
        // and SQLite keep their figures comparable with earlier runs.
        if store.backend() != sea_orm::DbBackend::Postgres {
            super::analyze(&store).await?;
        }
        node.supervisor().do_send(WakeDue);
        wait_stored(
            "completing",
            &store,
            &parked_wf,
            baton_actors::store::state::COMPLETED,
            n,
            || metrics.executions_completed.load(Ordering::Relaxed) - completed0,
        )
        .await?;
        report.signals_secs = Some(t1.elapsed().as_secs_f64());
        println!(
            "signaled: all {n} complete {:.1} s after the first signal was sent; {:.2} database calls per signal (through sqlx or a writer)",
            t1.elapsed().as_secs_f64(),
            (store.db_calls().calls.load(std::sync::atomic::Ordering::Relaxed) - calls0) as f64 / n as f64
        );
    }
    if opts.timers > 0 {
        let now = store.db_now_ms().await?;
        let lead = 5_000 + opts.timers as i64 * 3;
        let due = now + lead;
        let at = chrono::DateTime::from_timestamp_millis(due)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default();
        let metrics = node.metrics();
        let completed0 = metrics.executions_completed.load(Ordering::Relaxed);
        start_many(&node, &timer_wf, opts.timers, json!({ "at": at })).await?;
        if store.backend() != sea_orm::DbBackend::Postgres {
            super::analyze(&store).await?;
        }
        let n = opts.timers as u64;
        let created = store.db_now_ms().await?;
        if created >= due {
            bail!("starting {n} timers took longer than the {lead} ms lead; use fewer");
        }
        wait_stored(
            "timers",
            &store,
            &timer_wf,
            baton_actors::store::state::COMPLETED,
            n,
            || metrics.executions_completed.load(Ordering::Relaxed) - completed0,
        )
        .await?;
        let ids = execution_ids(&store, &timer_wf).await?;
        let mut delays: Vec<i64> = store
            .db()
            .run(move |c| async move {
                let mut out = Vec::with_capacity(ids.len());
                for chunk in ids.chunks(500) {
                    out.extend(
                        item_log::Entity::find()
                            .filter(item_log::Column::ExecutionId.is_in(chunk.to_vec()))
                            .filter(item_log::Column::Item.eq("nap"))
                            .filter(item_log::Column::Event.eq("completed"))
                            .all(&c)
                            .await?
                            .into_iter()
                            .map(|l| l.time - due),
                    );
                }
                Ok(out)
            })
            .await?;
        delays.sort_unstable();
        let pct =
            |q: f64| delays[((q * delays.len() as f64).ceil() as usize).clamp(1, delays.len()) - 1];
        report.timers_ms = Some((pct(0.5), pct(0.99)));
        println!(
            "timers: {n} due at the same moment; due to resumed: p50 {} ms, p99 {} ms, max {} ms; none early: {}",
            pct(0.5),
            pct(0.99),
            delays.last().copied().unwrap_or(0),
            delays.first().is_some_and(|d| *d >= 0)
        );
    }
    node.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(report)
}
