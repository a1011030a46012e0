//! `baton bench compare`: the database's own limit, then Baton on the
//! same database, in one run and one table. The limit is the rate of
//! one-row `INSERT` commits (each its own transaction) from 1 and from 16
//! connections at once, over 3 s each, measured here in a tight loop on a
//! scratch table; Baton's figures are given as ratios to it.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend};

use super::waits::{WaitOptions, WaitReport};
use super::{BenchOptions, BenchReport};

/// What to run.
#[derive(Clone, Debug)]
pub struct CompareOptions {
    /// Database (a scratch one); default a fresh SQLite file.
    pub database_url: Option<String>,
    /// Workflows of 5 tasks per throughput run.
    pub workflows: u64,
    /// Executions parked on a signal (waits).
    pub parked: usize,
    /// Timers due together (waits).
    pub timers: usize,
}

const LOOP: Duration = Duration::from_secs(3);

/// One-row `INSERT` commits per second from `clients` connections at once.
async fn commit_rate(url: &str, clients: u32) -> anyhow::Result<f64> {
    let mut opts = ConnectOptions::new(url.to_owned());
    opts.max_connections(clients)
        .min_connections(clients)
        .sqlx_logging(false);
    if url.starts_with("sqlite:") {
        opts.map_sqlx_sqlite_opts(|o| {
            o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
        });
    }
    let db: DatabaseConnection = Database::connect(opts).await?;
    let insert = "INSERT INTO baton_bench_commits (v) VALUES ('x')";
    let until = Instant::now() + LOOP;
    let t0 = Instant::now();
    let loops = (0..clients).map(|_| {
        let db = db.clone();
        async move {
            let mut n = 0u64;
            while Instant::now() < until {
                db.execute_unprepared(insert).await?;
                n += 1;
            }
            Ok::<u64, sea_orm::DbErr>(n)
        }
    });
    let mut total = 0;
    for n in futures::future::join_all(loops).await {
        total += n?;
    }
    let rate = total as f64 / t0.elapsed().as_secs_f64();
    db.close().await?;
    Ok(rate)
}

async fn scratch_table(url: &str, create: bool) -> anyhow::Result<()> {
    let db = Database::connect(url).await?;
    let ddl = match (db.get_database_backend(), create) {
        (_, false) => "DROP TABLE IF EXISTS baton_bench_commits".to_owned(),
        (DbBackend::Postgres, true) => {
            "CREATE TABLE IF NOT EXISTS baton_bench_commits (id BIGSERIAL PRIMARY KEY, v TEXT)".into()
        }
        (DbBackend::MySql, true) => {
            "CREATE TABLE IF NOT EXISTS baton_bench_commits (id BIGINT AUTO_INCREMENT PRIMARY KEY, v TEXT)".into()
        }
        (_, true) => {
            "CREATE TABLE IF NOT EXISTS baton_bench_commits (id INTEGER PRIMARY KEY, v TEXT)".into()
        }
    };
    db.execute_unprepared(&ddl).await?;
    db.close().await?;
    Ok(())
}

fn ratio(x: f64, of: f64) -> String {
    if of > 0.0 {
        format!("{:.2}", x / of)
    } else {
        "-".into()
    }
}

/// Runs the database loop and Baton's benchmarks, and prints the table.
pub async fn run(opts: &CompareOptions) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("baton-bench-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let url = opts
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", dir.join("compare.db").display()));
    let backend = url.split(':').next().unwrap_or("?").to_owned();
    println!("bench compare on {backend}: the database's own commit rate first");
    scratch_table(&url, true)
        .await
        .context("creating the scratch table (use a scratch database)")?;
    // SQLite: one writer at a time whatever the connections; 16 shows it.
    let one = commit_rate(&url, 1).await?;
    let sixteen = commit_rate(&url, 16).await?;
    scratch_table(&url, false).await?;
    println!("  one-row INSERT commits/s: {one:.0} from 1 connection, {sixteen:.0} from 16");

    let throughput = |c: u64, http: bool| BenchOptions {
        database_url: url.clone(),
        workflows: opts.workflows,
        steps: 5,
        concurrency: c,
        http,
    };
    let mut runs: Vec<(String, BenchReport)> = Vec::new();
    for (label, c, http) in [
        ("bench -c 16", 16, false),
        ("bench -c 1", 1, false),
        ("bench -c 256", 256, false),
        ("bench --http -c 16 (16 HTTP clients)", 16, true),
    ] {
        let o = throughput(c, http);
        // -c 1 runs a tenth of the workflows: it is the latency figure.
        let o = BenchOptions {
            workflows: if c == 1 {
                (o.workflows / 10).max(100)
            } else {
                o.workflows
            },
            ..o
        };
        let r = super::run(&o).await?;
        println!(
            "  {label}: {:.0} items/s, item latency p50 {:.3} ms, p99 {:.2} ms",
            r.items_per_sec,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3
        );
        runs.push((label.to_owned(), r));
    }
    let waits: WaitReport = super::waits::run(&WaitOptions {
        database_url: Some(url.clone()),
        parked: opts.parked,
        timers: opts.timers,
        idle_parked: 0,
        max_running: None,
        signal_clients: 0,
    })
    .await?;

    println!();
    println!(
        "database limit (same run): one-row INSERT commits/s, {one:.0} from 1 connection, {sixteen:.0} from 16"
    );
    println!();
    println!("| measure | Baton | / 1-connection commits/s | / 16-connection commits/s |");
    println!("| --- | --- | --- | --- |");
    let row = |what: &str, figure: String, rate: f64| {
        println!(
            "| {what} | {figure} | {} | {} |",
            ratio(rate, one),
            ratio(rate, sixteen)
        );
    };
    for (label, r) in &runs {
        row(
            &format!("{label}: items/s"),
            format!("{:.0}", r.items_per_sec),
            r.items_per_sec,
        );
    }
    if let Some((_, r)) = runs.iter().find(|(l, _)| l == "bench -c 1") {
        let commit_ms = 1e3 / one;
        println!(
            "| bench -c 1: item latency p50 | {:.3} ms ({} one-connection commits of {commit_ms:.2} ms) | | |",
            r.p50.as_secs_f64() * 1e3,
            ratio(r.p50.as_secs_f64() * 1e3, commit_ms)
        );
    }
    if let Some(p) = waits.parked_per_sec {
        row(
            &format!("executions started and parked/s ({} parked)", opts.parked),
            format!("{p:.0}"),
            p,
        );
    }
    if let Some(s) = waits.signals_secs {
        let rate = opts.parked as f64 / s;
        row(
            &format!(
                "signals delivered and completed/s ({} at once)",
                opts.parked
            ),
            format!("{rate:.0} ({s:.1} s)"),
            rate,
        );
    }
    if let Some((p50, p99)) = waits.timers_ms {
        println!(
            "| {} timers due together: due to resumed | p50 {p50} ms, p99 {p99} ms | | |",
            opts.timers
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
