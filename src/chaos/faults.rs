//! Faults on a seeded schedule, applied to real `baton serve` processes:
//! kill -9 (restarted later), SIGSTOP past the failover timeout then
//! SIGCONT, graceful SIGTERM (restarted), and connection cuts and stalls
//! through each node's TCP proxy to the database (not on SQLite), and
//! crash-restarts of the database server itself (a private one the run
//! started). Each applied fault is recorded with its node and its window,
//! for the checker.

use std::time::{Duration, Instant};

use super::workload::Rng;

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// kill -9, restarted after a while.
    Kill,
    /// SIGSTOP for longer than the failover timeout, then SIGCONT.
    Pause,
    /// SIGTERM (a drain), restarted after a while.
    Term,
    /// The node's database connections dropped and refused for a while.
    Cut,
    /// The node's database connections dropped and new ones left unanswered.
    Stall,
    /// The database server crashed (an immediate stop) and started again:
    /// every node loses its connections at once.
    DbRestart,
}

impl FaultKind {
    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill -9",
            FaultKind::Pause => "SIGSTOP/SIGCONT",
            FaultKind::Term => "SIGTERM (drain)",
            FaultKind::Cut => "connection cut",
            FaultKind::Stall => "connection stall",
            FaultKind::DbRestart => "database restart",
        }
    }

    /// Whether the node may lose ownership (and be failed over) by it.
    pub fn may_fail_over(self) -> bool {
        !matches!(self, FaultKind::Term)
    }
}

impl Fault {
    /// Whether it struck node `i` (a database restart strikes them all).
    pub fn strikes(&self, i: usize) -> bool {
        self.kind == FaultKind::DbRestart || self.node == i
    }
}

/// One fault as applied.
#[derive(Clone, Debug)]
pub struct Fault {
    /// What.
    pub kind: FaultKind,
    /// Which node (its index).
    pub node: usize,
    /// When it began.
    pub from: Instant,
    /// When the node was whole again (restarted, continued, restored).
    pub until: Instant,
}

/// Draws a fault at random: a kind (cuts only where there are proxies,
/// database restarts only on a private server) and a node.
pub fn draw(rng: &mut Rng, nodes: usize, proxies: bool, server: bool) -> (FaultKind, usize) {
    let kinds: &[FaultKind] = if server {
        &[
            FaultKind::Kill,
            FaultKind::Kill,
            FaultKind::Pause,
            FaultKind::Term,
            FaultKind::Cut,
            FaultKind::Stall,
            FaultKind::DbRestart,
        ]
    } else if proxies {
        &[
            FaultKind::Kill,
            FaultKind::Kill,
            FaultKind::Pause,
            FaultKind::Term,
            FaultKind::Cut,
            FaultKind::Stall,
        ]
    } else {
        &[
            FaultKind::Kill,
            FaultKind::Kill,
            FaultKind::Pause,
            FaultKind::Term,
        ]
    };
    let kind = kinds[rng.range(0, kinds.len() as u64 - 1) as usize];
    (kind, rng.range(0, nodes as u64 - 1) as usize)
}

/// How long a fault lasts: past the failover timeout for the ones that
/// should cause a failover, so the cluster has to act; a database restart
/// half the time within the timeout (the nodes should ride it out) and
/// half the time past it.
pub fn duration(kind: FaultKind, timeout: Duration, rng: &mut Rng) -> Duration {
    let extra = Duration::from_millis(rng.range(0, timeout.as_millis() as u64));
    match kind {
        FaultKind::Kill | FaultKind::Term => timeout * 2 + extra,
        FaultKind::Pause | FaultKind::Cut | FaultKind::Stall => timeout * 2 + extra,
        FaultKind::DbRestart if rng.chance(50) => timeout / 4 + extra / 4,
        FaultKind::DbRestart => timeout * 2 + extra,
    }
}
