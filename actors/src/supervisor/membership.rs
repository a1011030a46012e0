use crate::messages::NodeRole;
use actix::{ActorFutureExt, AsyncContext, Context, Handler, Message, WrapFuture};

use super::NodeSupervisor;
use crate::error::EngineError;
use crate::failover::{ClusterTiming, ScanPeers};
use crate::messages::{FenceSelf, NodeSeen, NodeState, Stop};
use crate::store::NodeRegistration;

/// Since when, and why, a node is fenced: on rejoining it records what
/// the database could not take while it was away.
#[derive(Debug)]
pub(super) struct FencedSince {
    at: std::time::Instant,
    kind: crate::messages::FenceKind,
    /// The `fence` event's message, and what became of recording it then
    /// (it fails when the database is what was lost): one of the
    /// `FENCE_EVENT_*` values.
    message: String,
    recorded: std::sync::Arc<std::sync::atomic::AtomicU8>,
}

const FENCE_EVENT_PENDING: u8 = 0;
const FENCE_EVENT_RECORDED: u8 = 1;
const FENCE_EVENT_FAILED: u8 = 2;

impl NodeSupervisor {
    /// Joins (or rejoins) the cluster as a standby; retries while the
    /// database is away.
    pub(super) fn join(&mut self, ctx: &mut Context<Self>, timing: ClusterTiming) {
        let store = self.cfg.store.clone();
        let reg = NodeRegistration {
            id: self.cfg.node_id.clone(),
            address: self.cfg.address.clone(),
            role: NodeRole::Standby.as_str().into(),
            state: NodeState::Standby.as_str().into(),
            fingerprint: self.cfg.fingerprint.clone(),
        };
        let timeout_ms = timing.timeout.as_millis() as i64;
        // This process's own last epoch: a live row at any other epoch is
        // another process with the same node id.
        let previous = Some(self.cfg.status.raw().epoch).filter(|e| *e > 0);
        // The lease counts from before the join was sent (invariant 5).
        let sent = std::time::Instant::now();
        let fut = async move { store.join_cluster(reg, timeout_ms, previous).await };
        ctx.wait(fut.into_actor(self).map(move |result, act, ctx| match result {
            Ok(epoch) => {
                tracing::info!(node = %act.cfg.node_id, epoch, "joined the cluster as standby");
                let lease = crate::status::lease_from(sent, timing.timeout, timing.interval);
                // The join stamped a heartbeat.
                act.cfg.metrics.heartbeat_committed(sent, sent.elapsed());
                act.cfg.status.update(|s| {
                    s.state = NodeState::Standby;
                    s.role = NodeRole::Standby;
                    s.epoch = epoch;
                    s.lease_until = Some(lease);
                });
                if let Some(d) = &act.detector {
                    d.do_send(ScanPeers);
                }
                if let Some(f) = act.fenced.take() {
                    act.record_regained(f, epoch);
                }
            }
            Err(e) => {
                tracing::warn!(node = %act.cfg.node_id, error = %e, "cannot join the cluster yet; retrying");
                // Settings that differ from the cluster's: a cluster event
                // (once per process), so the operator hears of it.
                let message = e.to_string();
                if message.contains(crate::store::cluster::SETTINGS_REFUSAL) && !act.refusal_recorded {
                    act.refusal_recorded = true;
                    let (store, node) = (act.cfg.store.clone(), act.cfg.node_id.clone());
                    actix::spawn(async move {
                        if let Err(e) = store.record_event("config-refused", &node, &message).await {
                            tracing::warn!(error = %e, "cannot record the config-refused event");
                        }
                    });
                }
                ctx.run_later(timing.interval, move |act, ctx| {
                    if matches!(act.state(), NodeState::Starting | NodeState::Fenced) {
                        act.join(ctx, timing);
                    }
                });
            }
        }));
    }

    /// After a rejoin: the `fence` event if the database could not take it
    /// then, and, when the fence was for heartbeats that could not be
    /// committed, a `database-regained` event saying for how long.
    fn record_regained(&self, f: FencedSince, epoch: i64) {
        let (store, node) = (self.cfg.store.clone(), self.cfg.node_id.clone());
        let away_ms = f.at.elapsed().as_millis();
        actix::spawn(async move {
            use std::sync::atomic::Ordering;
            // The first try may still be waiting for a connection: wait
            // for its outcome, so the event is recorded once.
            let began = std::time::Instant::now();
            while f.recorded.load(Ordering::SeqCst) == FENCE_EVENT_PENDING
                && began.elapsed() < std::time::Duration::from_secs(10)
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            if f.recorded.load(Ordering::SeqCst) == FENCE_EVENT_FAILED {
                let late = format!(
                    "{} (recorded on rejoining: the database was unreachable then)",
                    f.message
                );
                if let Err(e) = store.record_event("fence", &node, &late).await {
                    tracing::warn!(error = %e, "cannot record the fence event");
                }
            }
            if f.kind == crate::messages::FenceKind::HeartbeatDeadline {
                let message = format!(
                    "node {node} rejoined at epoch {epoch}, {away_ms} ms after it fenced itself because no heartbeat committed in time (the database was unreachable or stalled, or this process was)"
                );
                tracing::warn!(%node, away_ms, "reached the database again");
                if let Err(e) = store
                    .record_event("database-regained", &node, &message)
                    .await
                {
                    tracing::warn!(error = %e, "cannot record the database-regained event");
                }
            }
        });
    }

    /// Becomes an active node: runs the executions it owns.
    pub(super) fn become_active(&mut self, ctx: &mut Context<Self>) {
        tracing::info!(node = %self.cfg.node_id, "promoted to active");
        self.cfg.status.update(|s| {
            s.state = NodeState::Running;
            s.role = NodeRole::Active;
        });
        self.rescan(ctx);
    }

    /// Stops every execution at once; no further write is attempted.
    pub(super) fn stop_all_now(&mut self) {
        for addr in self.running.values() {
            addr.do_send(Stop {
                now: true,
                record: false,
            });
        }
    }
}

impl Handler<NodeSeen> for NodeSupervisor {
    type Result = ();

    fn handle(&mut self, msg: NodeSeen, ctx: &mut Context<Self>) {
        let state = self.state();
        let row = msg.row;
        if state == NodeState::Standby
            && row.role == NodeRole::Active.as_str()
            && row.state == crate::store::node_state::RUNNING
        {
            self.become_active(ctx);
            return;
        }
        if state == NodeState::Running && row.role != NodeRole::Active.as_str() {
            ctx.notify(FenceSelf {
                kind: crate::messages::FenceKind::Demoted,
                reason: format!("node {} is no longer active in the store", row.id),
            });
            return;
        }
        self.beats += 1;
        if state == NodeState::Running && self.beats.is_multiple_of(5) {
            // Executions moved here by another node's takeover.
            self.rescan(ctx);
        }
    }
}

impl Handler<FenceSelf> for NodeSupervisor {
    type Result = ();

    fn handle(&mut self, msg: FenceSelf, ctx: &mut Context<Self>) {
        let state = self.state();
        let Some(timing) = self.cfg.cluster else {
            return;
        };
        if state == NodeState::Stopping {
            // Draining and the lease is gone (or the node left): whatever
            // still runs stops at once and writes nothing more.
            self.stop_all_now();
            return;
        }
        if matches!(state, NodeState::Fenced | NodeState::Starting) {
            return;
        }
        tracing::error!(node = %self.cfg.node_id, reason = %msg.reason, "fencing this node: stopping every execution");
        self.cfg.metrics.fenced(msg.kind);
        let epoch = self.cfg.status.raw().epoch;
        self.cfg.status.update(|s| {
            s.state = NodeState::Fenced;
            s.role = NodeRole::Standby;
        });
        self.stop_all_now();
        let store = self.cfg.store.clone();
        let node = self.cfg.node_id.clone();
        let message = format!("node {node} fenced itself: {}", msg.reason);
        let recorded = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(FENCE_EVENT_PENDING));
        self.fenced = Some(FencedSince {
            at: std::time::Instant::now(),
            kind: msg.kind,
            message: message.clone(),
            recorded: recorded.clone(),
        });
        ctx.spawn(
            async move {
                let _ = store.mark_fenced(&node, epoch).await;
                let outcome = match store.record_event("fence", &node, &message).await {
                    Ok(()) => FENCE_EVENT_RECORDED,
                    Err(_) => FENCE_EVENT_FAILED,
                };
                recorded.store(outcome, std::sync::atomic::Ordering::SeqCst);
            }
            .into_actor(self),
        );
        ctx.run_later(timing.interval, move |act, ctx| act.try_rejoin(ctx, timing));
    }
}

impl NodeSupervisor {
    pub(super) fn try_rejoin(&mut self, ctx: &mut Context<Self>, timing: ClusterTiming) {
        if self.state() != NodeState::Fenced {
            return;
        }
        if !self.running.is_empty() {
            // Wait until every stopped execution actor has ended.
            ctx.run_later(timing.interval, move |act, ctx| act.try_rejoin(ctx, timing));
            return;
        }
        self.join(ctx, timing);
    }
}

/// Makes a fenced node rejoin the cluster now (as a standby).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), EngineError>")]
pub struct Rejoin;

impl Handler<Rejoin> for NodeSupervisor {
    type Result = Result<(), EngineError>;

    fn handle(&mut self, _: Rejoin, ctx: &mut Context<Self>) -> Self::Result {
        let Some(timing) = self.cfg.cluster else {
            return Err(EngineError::Conflict(
                "this node is standalone; there is no cluster to rejoin".into(),
            ));
        };
        match self.state() {
            NodeState::Fenced => {
                self.try_rejoin(ctx, timing);
                Ok(())
            }
            other => Err(EngineError::Conflict(format!(
                "node {} is {}, not fenced",
                self.cfg.node_id,
                other.as_str()
            ))),
        }
    }
}

/// Fences this node now, as if it had lost the database.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct FenceNow {
    /// Why.
    pub reason: String,
}

impl Handler<FenceNow> for NodeSupervisor {
    type Result = ();

    fn handle(&mut self, msg: FenceNow, ctx: &mut Context<Self>) {
        self.handle(
            FenceSelf {
                kind: crate::messages::FenceKind::Operator,
                reason: msg.reason,
            },
            ctx,
        );
    }
}
