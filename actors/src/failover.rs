//! `FailoverDetectorActor`: every interval, finds peers whose heartbeat is
//! older than the failover timeout by the database clock and takes each
//! over in one transaction (`Store::take_over`, DESIGN.md invariants 4 and
//! 6). Detectors on several nodes may race; the store makes exactly one
//! win. A standby also asks to be promoted when the cluster has fewer
//! active nodes than configured, and an active node adopts executions whose
//! owner is no longer an active node. After anything that may have given
//! this node executions, it tells the supervisor to rescan.

use std::sync::Arc;
use std::time::Duration;

use actix::{
    Actor, ActorFutureExt, AsyncContext, Context, Handler, Message, Recipient, ResponseActFuture,
    WrapFuture,
};

use crate::error::EngineError;
use crate::messages::{FenceSelf, NodeState, Rescan};
use crate::status::StatusCell;
use crate::store::node_state;
use crate::store::{Store, Takeover};

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

/// Detects dead peers. See the module documentation.
pub struct FailoverDetectorActor {
    store: Store,
    node_id: String,
    timing: ClusterTiming,
    status: Arc<StatusCell>,
    rescan: Recipient<Rescan>,
    fence: Recipient<FenceSelf>,
    busy: bool,
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
        self.busy = true;
        let store = self.store.clone();
        let me = self.node_id.clone();
        let timing = self.timing;
        let status = self.status.clone();
        let metrics = self.metrics.clone();
        async move {
            // The lease-checked view: a node past its lease declares no one dead.
            let state = status.get().state;
            if !matches!(state, NodeState::Running | NodeState::Standby) {
                return Ok(ScanReport::default());
            }
            let timeout_ms = timing.timeout.as_millis() as i64;
            let mut report = ScanReport::default();
            for (victim, epoch) in store.stale_peers(&me, timeout_ms).await.map_err(|e| e.to_string())? {
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
                }
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
        .into_actor(self)
        .map(|result, act, _| {
            act.busy = false;
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
            }
            Ok(outcome)
        }))
    }
}
