//! The short form of `baton chaos` (issue 8): a cluster of three real
//! `baton serve` processes under a generated workload and a seeded fault
//! schedule, the history checked against the reference interpreter and the
//! cluster's promises. Fixed seeds, plus one drawn at random and printed so
//! a failure can be replayed with `baton chaos --seed N`.

use std::path::PathBuf;

use baton::chaos::dbserver::{self, ServerKind};
use baton::chaos::faults::FaultKind;
use baton::chaos::{run, ChaosOptions};

use crate::util::*;

fn opts(db: &TestDb, seed: u64, active_nodes: u32) -> ChaosOptions {
    ChaosOptions {
        database_url: Some(db.url.clone()),
        server: None,
        seed,
        faults: 6,
        mix: Vec::new(),
        skew_secs: Some(3600),
        workflows: 25,
        nodes: 3,
        active_nodes,
        interval_ms: 200,
        heartbeats: 5,
        exe: PathBuf::from(env!("CARGO_BIN_EXE_baton")),
        echo: false,
    }
}

async fn short_form(b: Backend, seed: u64, active_nodes: u32) {
    let Some(db) = TestDb::create(b) else { return };
    let report = run(&opts(&db, seed, active_nodes))
        .await
        .expect("chaos run");
    eprintln!("{}", report.table);
    assert!(
        report.violations.is_empty(),
        "replay with `baton chaos --seed {seed} --active-nodes {active_nodes}`:\n{}",
        report.table
    );
}

fn random_seed() -> u64 {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(3)
        % 100_000;
    eprintln!("chaos: random seed {seed}");
    seed
}

#[actix_rt::test]
async fn sqlite_fixed_seed_one_active_node() {
    short_form(Backend::Sqlite, 1, 1).await
}

#[actix_rt::test]
async fn sqlite_random_seed_two_active_nodes() {
    short_form(Backend::Sqlite, random_seed(), 2).await
}

#[actix_rt::test]
async fn postgres_fixed_seed_two_active_nodes() {
    short_form(Backend::Postgres, 2, 2).await
}

/// Seed 12 on MariaDB with two active nodes once reported three active
/// nodes at once: a killed node's row, still marked active until the
/// takeover, was counted although its lease had run out. The checker now
/// counts active nodes as the cluster does; the seed stays as a regression.
#[actix_rt::test]
async fn mysql_seed_12_two_active_nodes() {
    short_form(Backend::Mysql, 12, 2).await
}

/// Database server crash-restarts among the faults: a private PostgreSQL
/// or MariaDB server (its own directory and port, never the machine's
/// shared one), crashed with an immediate stop and started again, twice
/// within the failover timeout and twice past it, mixed with kills and cuts.
async fn with_server_restarts(kind: ServerKind, seed: u64) {
    let ci = match kind {
        ServerKind::Postgres => "BATON_TEST_POSTGRES_URL",
        ServerKind::Mariadb => "BATON_TEST_MYSQL_URL",
    };
    if let Err(why) = dbserver::available(kind) {
        // CI sets the URLs and must run this; elsewhere, say why it is skipped.
        assert!(std::env::var_os(ci).is_none(), "{ci} is set but {why}");
        eprintln!("skipped: {why}");
        return;
    }
    let opts = ChaosOptions {
        database_url: None,
        server: Some(kind),
        seed,
        faults: 0,
        mix: vec![
            (FaultKind::DbRestart, 4),
            (FaultKind::Kill, 2),
            (FaultKind::Cut, 1),
        ],
        skew_secs: None,
        workflows: 25,
        nodes: 3,
        active_nodes: 2,
        interval_ms: 200,
        heartbeats: 5,
        exe: PathBuf::from(env!("CARGO_BIN_EXE_baton")),
        echo: false,
    };
    let report = run(&opts).await.expect("chaos run");
    eprintln!("{}", report.table);
    assert!(
        report.table.contains("database restart 4"),
        "every restart applied:\n{}",
        report.table
    );
    assert!(
        report.violations.is_empty(),
        "replay with `baton chaos --server {} --seed {seed} --db-restarts 4 --kills 2 --cuts 1 --active-nodes 2 --workflows 25`:\n{}",
        format!("{kind:?}").to_lowercase(),
        report.table
    );
}

#[actix_rt::test]
async fn postgres_server_restarts() {
    with_server_restarts(ServerKind::Postgres, 21).await
}

#[actix_rt::test]
async fn mariadb_server_restarts() {
    with_server_restarts(ServerKind::Mariadb, 22).await
}
