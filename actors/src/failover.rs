//! `FailoverDetectorActor`: every interval, finds peers whose heartbeat is
//! older than the failover timeout by the database clock and takes each
//! over in one transaction (`Store::take_over`, DESIGN.md invariants 4 and
//! 6). Detectors on several nodes may race; the store makes exactly one
//! win.
//!
//! A heartbeat that is old by the database clock is not enough on its own:
//! the detector must also have *watched* it stay unchanged for a full
//! failover timeout, through scans that all succeeded and followed each
//! other without a gap ([`Watch`]). After a database outage (every node
//! fenced, every heartbeat old when the database answers again), after a
//! database failover whose new primary's clock is ahead, or after this
//! process was paused, every peer gets a full timeout to heartbeat again
//! before anyone declares it dead. This only ever delays a declaration;
//! the staleness that decides it is still judged in SQL, in the takeover's
//! own transaction. A standby also asks to be promoted when the cluster has fewer
//! active nodes than configured, and an active node adopts executions whose
//! owner is no longer an active node. After anything that may have given
//! this node executions, it tells the supervisor to rescan.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorFutureExt, AsyncContext, Context, Handler, Message, Recipient, ResponseActFuture,
    WrapFuture,
};

use crate::error::EngineError;
use crate::messages::{FenceSelf, NodeState, Rescan};
use crate::status::StatusCell;
use crate::store::node_state;
use crate::store::{PeerView, Store, Takeover};

/// Cluster timing and size.
#[derive(Clone, Copy, Debug)]
pub struct ClusterTiming {
    /// Heartbeat period.
    pub interval: Duration,
    /// interval x failover heartbeats.
    pub timeout: Duration,
    /// How many nodes may be active.
    pub active_nodes: u32,
}

/// What one scan did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Peers this node declared dead.
    pub taken_over: Vec<String>,
    /// Whether this node was promoted.
    pub promoted: bool,
    /// Executions adopted from non-active owners.
    pub adopted: u64,
}

/// What this detector has watched of its peers: each peer's heartbeat as
/// last seen and since when (monotonic) it has been seen unchanged, and
/// when the last scan that read them began. The watch is continuous only
/// while scans succeed at most [`Watch::MAX_GAP`] intervals apart under
/// one epoch of this node; any break starts every peer's count again.
#[derive(Clone, Debug, Default)]
pub struct Watch {
    seen: std::collections::HashMap<String, ((i64, i64), Instant)>,
    last_read: Option<Instant>,
    epoch: i64,
}

impl Watch {
    /// Scans further apart than this many intervals break the watch.
    pub const MAX_GAP: u32 = 3;

    /// Folds in one successful scan that began at `began` (this node at
    /// `epoch`), and returns the peers that may be declared dead: stale by
    /// the database clock and watched unchanged for at least `timeout`.
    pub fn observe(
        &mut self,
        peers: &[PeerView],
        began: Instant,
        epoch: i64,
        interval: Duration,
        timeout: Duration,
    ) -> Vec<(String, i64)> {
        let gap = self.last_read.map(|t| began.saturating_duration_since(t));
        let continuous = epoch == self.epoch && gap.is_some_and(|g| g <= interval * Self::MAX_GAP);
        if epoch == self.epoch && !continuous {
            if let Some(g) = gap {
                // Reads this far apart (a stalled database, a paused
                // process, scans slower than the interval) watch nothing.
                tracing::warn!(gap_ms = g.as_millis() as u64, "peer scans {} ms apart (more than {} intervals): watching every peer for a full failover timeout again", g.as_millis(), Self::MAX_GAP);
            }
        }
        if !continuous {
            self.seen.clear();
        }
        // A heartbeat first seen now was written after the previous scan
        // read (or, without one, at some unknown time): it counts from
        // that read, but never from more than one interval back, so that
        // a peer whose heartbeat was sent after that point keeps its whole
        // lease (timeout less one interval from the send, invariant 5).
        let from = match (continuous, self.last_read) {
            (true, Some(t)) => t.max(began.checked_sub(interval).unwrap_or(t)),
            _ => began,
        };
        let mut seen = std::collections::HashMap::with_capacity(peers.len());
        let mut dead = Vec::new();
        for p in peers {
            let value = (p.epoch, p.last_heartbeat);
            let since = match self.seen.get(&p.id) {
                Some((v, since)) if *v == value => *since,
                _ => from,
            };
            if p.stale && began.saturating_duration_since(since) >= timeout {
                dead.push((p.id.clone(), p.epoch));
            }
            seen.insert(p.id.clone(), (value, since));
        }
        self.seen = seen;
        self.last_read = Some(began);
        self.epoch = epoch;
        dead
    }

    /// The read of the peers failed, or this node was not in a state to
    /// scan: the next read starts every count again.
    pub fn break_off(&mut self) {
        self.last_read = None;
    }
}

/// Detects dead peers. See the module documentation.
pub struct FailoverDetectorActor {
    store: Store,
    node_id: String,
    timing: ClusterTiming,
    status: Arc<StatusCell>,
    rescan: Recipient<Rescan>,
    fence: Recipient<FenceSelf>,
    busy: bool,
    watch: Watch,
    metrics: Option<Arc<crate::metrics::EngineMetrics>>,
}

impl FailoverDetectorActor {
    /// A detector for `node_id`.
    pub fn new(
        store: Store,
        node_id: String,
        timing: ClusterTiming,
        status: Arc<StatusCell>,
        rescan: Recipient<Rescan>,
        fence: Recipient<FenceSelf>,
    ) -> Self {
        FailoverDetectorActor {
            store,
            node_id,
            timing,
            status,
            rescan,
            fence,
            busy: false,
            watch: Watch::default(),
            metrics: None,
        }
    }

    /// Counts each takeover won, by victim, in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::EngineMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// After a takeover this node won: run what it now owns, or, if it
    /// evicted itself, fence.
    fn after_takeover(&self, victim: &str, promoted: &[String]) {
        if victim == self.node_id {
            self.fence.do_send(FenceSelf {
                kind: crate::messages::FenceKind::Operator,
                reason: "evicted by an operator".into(),
            });
        } else {
            self.rescan.do_send(Rescan {
                promoted: promoted.contains(&self.node_id),
            });
        }
    }

    fn scan(
        &mut self,
    ) -> impl actix::ActorFuture<Self, Output = Result<ScanReport, String>> + use<> {
        // A scan asked for (`ScanPeers`) while the interval's scan runs
        // neither clears `busy` nor stores its copy of the watch over the
        // newer one.
        let owner = !self.busy;
        self.busy = true;
        let store = self.store.clone();
        let me = self.node_id.clone();
        let timing = self.timing;
        let status = self.status.clone();
        let metrics = self.metrics.clone();
        let mut watch = self.watch.clone();
        async move {
            // The lease-checked view: a node past its lease declares no one dead.
            let state = status.get().state;
            if !matches!(state, NodeState::Running | NodeState::Standby) {
                watch.break_off();
                return (watch, Ok(ScanReport::default()));
            }
            let result = async {
                let timeout_ms = timing.timeout.as_millis() as i64;
                let began = Instant::now();
                let peers = match store.peers(&me, timeout_ms).await {
                    Ok(p) => p,
                    Err(e) => {
                        watch.break_off();
                        return Err(e.to_string());
                    }
                };
                let epoch = status.raw().epoch;
                let dead = watch.observe(&peers, began, epoch, timing.interval, timing.timeout);
                for p in peers.iter().filter(|p| p.stale && !dead.iter().any(|(d, _)| *d == p.id)) {
                    tracing::debug!(node = %me, peer = %p.id, "the peer's heartbeat is old, but not yet watched for a full failover timeout");
                }
                let mut report = ScanReport::default();
                // One wait for the cluster lock per scan: a scan that found
                // it held past the wait takes no further lock step, so that
                // scans stay less than `Watch::MAX_GAP` intervals apart
                // while a frozen node holds it.
                let mut busy = false;
                for (victim, epoch) in dead {
                    match store
                        .take_over(&me, &victim, epoch, timeout_ms, timing.active_nodes, false)
                        .await
                        .map_err(|e| e.to_string())?
                    {
                        Takeover::Won { moved, promoted } => {
                            tracing::warn!(node = %me, %victim, ?moved, ?promoted, "took over a dead node");
                            if let Some(m) = &metrics {
                                m.took_over(&victim);
                            }
                            report.promoted |= promoted.contains(&me);
                            report.taken_over.push(victim);
                        }
                        Takeover::Lost => {}
                        Takeover::Busy => {
                            busy = true;
                            break;
                        }
                    }
                }
            if busy {
                return Ok(report);
            }
            if status.get().state == NodeState::Standby && !report.promoted {
                report.promoted = store
                    .promote_if_needed(&me, timeout_ms, timing.active_nodes)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            if status.get().state == NodeState::Running {
                report.adopted = store.adopt_orphans(&me).await.map_err(|e| e.to_string())?;
            }
            Ok(report)
            }
            .await;
            // A later step that failed (a takeover lost at COMMIT, say)
            // leaves the watch as read.
            (watch, result)
        }
        .into_actor(self)
        .map(move |(watch, result), act, _| {
            if owner {
                act.busy = false;
                act.watch = watch;
            }
            match &result {
                Ok(r) if !r.taken_over.is_empty() || r.promoted || r.adopted > 0 => {
                    act.rescan.do_send(Rescan { promoted: r.promoted });
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(node = %act.node_id, error = %e, "peer scan failed"),
            }
            result
        })
    }
}

impl Actor for FailoverDetectorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.timing.interval, |act, ctx| {
            if !act.busy {
                ctx.spawn(act.scan().map(|_, _, _| ()));
            }
        });
    }
}

/// Scans the peers now (for tests and drivers) and reports what it did.
#[derive(Debug, Message)]
#[rtype(result = "Result<ScanReport, String>")]
pub struct ScanPeers;

impl Handler<ScanPeers> for FailoverDetectorActor {
    type Result = ResponseActFuture<Self, Result<ScanReport, String>>;

    fn handle(&mut self, _: ScanPeers, _: &mut Context<Self>) -> Self::Result {
        Box::pin(self.scan())
    }
}

/// An operator evicts a node (`POST /api/cluster/nodes/{id}/fence`): the
/// same one-transaction takeover a detector makes of a dead node, without
/// the staleness check (DESIGN.md invariant 6).
#[derive(Debug, Message)]
#[rtype(result = "Result<Takeover, EngineError>")]
pub struct Evict {
    /// The node to evict.
    pub node: String,
}

impl Handler<Evict> for FailoverDetectorActor {
    type Result = ResponseActFuture<Self, Result<Takeover, EngineError>>;

    fn handle(&mut self, msg: Evict, _: &mut Context<Self>) -> Self::Result {
        let store = self.store.clone();
        let me = self.node_id.clone();
        let timing = self.timing;
        let victim = msg.node;
        let fut = async move {
            let row = store
                .node(&victim)
                .await?
                .ok_or_else(|| EngineError::NodeNotFound(victim.clone()))?;
            if node_state::GONE.contains(&row.state.as_str()) {
                return Err(EngineError::Conflict(format!(
                    "node {victim} is already {}",
                    row.state
                )));
            }
            let timeout_ms = timing.timeout.as_millis() as i64;
            let outcome = store
                .take_over(
                    &me,
                    &victim,
                    row.epoch,
                    timeout_ms,
                    timing.active_nodes,
                    true,
                )
                .await?;
            Ok((victim, outcome))
        };
        Box::pin(fut.into_actor(self).map(|result, act, _| {
            let (victim, outcome) = result?;
            match &outcome {
                Takeover::Won { promoted, .. } => {
                    if let Some(m) = &act.metrics {
                        m.took_over(&victim);
                    }
                    act.after_takeover(&victim, promoted)
                }
                Takeover::Lost => {
                    return Err(EngineError::Conflict(format!(
                        "node {victim} changed while being evicted; look again"
                    )))
                }
                // An eviction waits for the lock: not expected, but said.
                Takeover::Busy => {
                    return Err(EngineError::Conflict(format!(
                        "the cluster lock was busy while evicting node {victim}; try again"
                    )))
                }
            }
            Ok(outcome)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const I: Duration = Duration::from_millis(200);
    const T: Duration = Duration::from_millis(1000);

    fn peer(id: &str, epoch: i64, hb: i64, stale: bool) -> PeerView {
        PeerView {
            id: id.into(),
            epoch,
            last_heartbeat: hb,
            stale,
        }
    }

    /// Scans every interval from `t0`, `n` of them, the peer always at
    /// heartbeat `hb` and `stale`; returns the first scan (index) that
    /// declares it dead.
    fn first_declared(w: &mut Watch, t0: Instant, from: u32, n: u32, hb: i64) -> Option<u32> {
        (from..from + n).find(|k| {
            !w.observe(&[peer("p", 1, hb, true)], t0 + I * *k, 7, I, T)
                .is_empty()
        })
    }

    #[test]
    fn a_peer_watched_unchanged_for_the_timeout_is_declared_from_the_read_before_its_heartbeat() {
        let t0 = Instant::now();
        let mut w = Watch::default();
        // Watched from scan 0 while heartbeating (not stale), last new value at scan 3.
        for k in 0..=3 {
            let d = w.observe(&[peer("p", 1, k, false)], t0 + I * k as u32, 7, I, T);
            assert!(d.is_empty());
        }
        // From then on unchanged: it counts from scan 2's read (before the
        // heartbeat seen at scan 3), so it is declared at scan 2 + 5.
        assert_eq!(first_declared(&mut w, t0, 4, 20, 3), Some(7));
    }

    #[test]
    fn a_stale_heartbeat_first_seen_waits_a_full_timeout() {
        let t0 = Instant::now();
        let mut w = Watch::default();
        // A detector just started (or back from an outage): the database
        // says stale at once, but it watches five intervals first.
        assert_eq!(first_declared(&mut w, t0, 0, 20, 42), Some(5));
    }

    #[test]
    fn a_failed_scan_a_gap_or_a_new_epoch_start_the_count_again() {
        let t0 = Instant::now();
        let mut w = Watch::default();
        assert_eq!(first_declared(&mut w, t0, 0, 4, 42), None);
        w.break_off();
        // Scan 4 is the first after the break: five more from there.
        assert_eq!(first_declared(&mut w, t0, 4, 20, 42), Some(9));

        let mut w = Watch::default();
        assert_eq!(first_declared(&mut w, t0, 0, 4, 42), None);
        // Four intervals without a scan (a paused process): a break.
        assert_eq!(first_declared(&mut w, t0, 7, 20, 42), Some(12));

        let mut w = Watch::default();
        assert_eq!(first_declared(&mut w, t0, 0, 4, 42), None);
        let d = w.observe(&[peer("p", 1, 42, true)], t0 + I * 4, 8, I, T);
        assert!(d.is_empty(), "this node rejoined: the watch starts again");
        assert_eq!(first_declared_at_epoch(&mut w, t0, 5, 20, 42, 8), Some(9));
    }

    fn first_declared_at_epoch(
        w: &mut Watch,
        t0: Instant,
        from: u32,
        n: u32,
        hb: i64,
        epoch: i64,
    ) -> Option<u32> {
        (from..from + n).find(|k| {
            !w.observe(&[peer("p", 1, hb, true)], t0 + I * *k, epoch, I, T)
                .is_empty()
        })
    }

    #[test]
    fn a_heartbeat_first_seen_after_a_slow_scan_counts_from_one_interval_back() {
        let t0 = Instant::now();
        let mut w = Watch::default();
        assert!(w.observe(&[peer("p", 1, 1, false)], t0, 7, I, T).is_empty());
        // The next read comes three intervals later (still continuous) and
        // sees a new heartbeat, now stale by a clock that jumped ahead: it
        // counts from one interval back, not from the read three back, so
        // a peer that sent it just now keeps its lease.
        let first = I * 3;
        let declared = (0..20u32).map(|k| first + I * k).find(|at| {
            !w.observe(&[peer("p", 1, 2, true)], t0 + *at, 7, I, T)
                .is_empty()
        });
        assert_eq!(declared, Some(first - I + T));
    }

    #[test]
    fn a_peer_that_heartbeats_or_rejoins_is_never_declared() {
        let t0 = Instant::now();
        let mut w = Watch::default();
        // Stale by the database clock throughout (its clock jumped ahead)
        // but its heartbeat keeps changing: never declared.
        for k in 0..50u32 {
            let d = w.observe(&[peer("p", 1, k as i64, true)], t0 + I * k, 7, I, T);
            assert!(d.is_empty(), "scan {k}");
        }
        // A new epoch with the same heartbeat value is a change too.
        for k in 50..60u32 {
            let d = w.observe(&[peer("p", 2 + k as i64, 0, true)], t0 + I * k, 7, I, T);
            assert!(d.is_empty(), "scan {k}");
        }
    }
}
