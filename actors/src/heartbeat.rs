//! `HeartbeatActor`: writes this node's heartbeat every interval and fences
//! the node when it cannot.
//!
//! The heartbeat is stamped by the database (`Store::heartbeat`), never by
//! this node's clock (DESIGN.md invariant 3). This actor measures, on the
//! monotonic clock, the time since the last heartbeat that committed,
//! counted from when that write was *sent*; past (failover timeout - one
//! interval) it tells the supervisor to fence the node (invariant 5), before
//! any peer can declare it dead. A refused write (row marked failed, epoch
//! moved) fences at once. It never waits on a hung write: one write is in
//! flight at a time and the deadline is checked on every tick regardless.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorFutureExt, AsyncContext, Context, Handler, Message, Recipient, ResponseActFuture,
    WrapFuture,
};

use crate::messages::{FenceSelf, NodeSeen, NodeState};
use crate::status::StatusCell;
use crate::store::Store;

/// Writes heartbeats. See the module documentation.
pub struct HeartbeatActor {
    store: Store,
    node_id: String,
    interval: Duration,
    fence_after: Duration,
    status: Arc<StatusCell>,
    supervisor_seen: Recipient<NodeSeen>,
    supervisor_fence: Recipient<FenceSelf>,
    last_ok_sent: Instant,
    epoch_seen: i64,
    in_flight: bool,
    last_tick: Option<Instant>,
    metrics: Option<Arc<crate::metrics::EngineMetrics>>,
}

impl HeartbeatActor {
    /// A heartbeat actor for `node_id`; `fence_after` is the failover
    /// timeout minus one interval.
    pub fn new(
        store: Store,
        node_id: String,
        interval: Duration,
        fence_after: Duration,
        status: Arc<StatusCell>,
        supervisor_seen: Recipient<NodeSeen>,
        supervisor_fence: Recipient<FenceSelf>,
    ) -> HeartbeatActor {
        HeartbeatActor {
            store,
            node_id,
            interval,
            fence_after,
            status,
            supervisor_seen,
            supervisor_fence,
            last_ok_sent: Instant::now(),
            epoch_seen: 0,
            in_flight: false,
            last_tick: None,
            metrics: None,
        }
    }

    /// Records each committed heartbeat (age, commit latency) in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::EngineMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Checks the deadline, then sends one heartbeat unless one is in flight.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        // A late tick means this actor's thread was busy or the process
        // was paused: say so, since it eats into the fencing margin.
        let now = Instant::now();
        if let Some(gap) = self.last_tick.map(|t| now - t) {
            if gap > self.interval * 2 {
                tracing::warn!(node = %self.node_id, late_ms = (gap - self.interval).as_millis() as u64,
                    "heartbeat tick late (the node's thread was busy or the process was paused)");
            }
        }
        self.last_tick = Some(now);
        let status = self.status.raw();
        if status.epoch != self.epoch_seen {
            // (Re)joined under a new epoch: the clock starts again, from
            // when the join was sent (the lease it set), not from now.
            self.epoch_seen = status.epoch;
            self.last_ok_sent = status
                .lease_until
                .and_then(|u| u.checked_sub(self.fence_after))
                .unwrap_or_else(Instant::now);
            // The join stamped a heartbeat.
            if let (Some(m), Some(_)) = (&self.metrics, status.lease_until) {
                m.heartbeat_committed(self.last_ok_sent, Duration::ZERO);
            }
        }
        // A stopping node heartbeats on until it has handed its executions
        // off (DESIGN.md invariant 11): a drain is not a failure.
        if matches!(status.state, NodeState::Fenced | NodeState::Starting) || status.epoch == 0 {
            return;
        }
        let silent = self.last_ok_sent.elapsed();
        if silent > self.fence_after {
            self.supervisor_fence.do_send(FenceSelf {
                kind: crate::messages::FenceKind::HeartbeatDeadline,
                reason: format!("no heartbeat committed for {} ms", silent.as_millis()),
            });
            return;
        }
        if self.in_flight {
            return;
        }
        ctx.spawn(self.beat().map(|_, _, _| ()));
    }

    fn beat(&mut self) -> impl actix::ActorFuture<Self, Output = Result<bool, String>> + use<> {
        self.in_flight = true;
        let sent = Instant::now();
        let epoch = self.epoch_seen;
        let store = self.store.clone();
        let id = self.node_id.clone();
        let limit = self.fence_after.max(self.interval);
        async move { tokio::time::timeout(limit, store.heartbeat(&id, epoch)).await }
            .into_actor(self)
            .map(move |result, act, _| {
                act.in_flight = false;
                match result {
                    Ok(Ok(Some(row))) => {
                        let took = sent.elapsed();
                        if took > act.interval {
                            tracing::warn!(node = %act.node_id, ms = took.as_millis() as u64,
                                "slow heartbeat: the write took longer than one interval");
                        }
                        if epoch == act.epoch_seen {
                            act.last_ok_sent = act.last_ok_sent.max(sent);
                            if let Some(m) = &act.metrics {
                                m.heartbeat_committed(sent, sent.elapsed());
                            }
                            act.status.renew_lease(sent + act.fence_after);
                        }
                        act.supervisor_seen.do_send(NodeSeen { row });
                        Ok(true)
                    }
                    Ok(Ok(None)) => {
                        if epoch == act.epoch_seen && act.status.raw().state != NodeState::Fenced {
                            act.supervisor_fence.do_send(FenceSelf {
                                kind: crate::messages::FenceKind::DeclaredDead,
                                reason: format!("heartbeat refused: node {} was declared dead or its epoch {epoch} moved on", act.node_id),
                            });
                        }
                        Ok(false)
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(node = %act.node_id, error = %e, "heartbeat failed");
                        Err(e.to_string())
                    }
                    Err(_) => {
                        tracing::warn!(node = %act.node_id, "heartbeat timed out");
                        Err("heartbeat timed out".into())
                    }
                }
            })
    }
}

impl Actor for HeartbeatActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.last_ok_sent = Instant::now();
        ctx.run_interval(self.interval, |act, ctx| act.tick(ctx));
    }
}

/// Writes a heartbeat now (for tests and drivers); answers whether it
/// committed (`Ok(false)`: refused, the node is being fenced).
#[derive(Debug, Message)]
#[rtype(result = "Result<bool, String>")]
pub struct Beat;

impl Handler<Beat> for HeartbeatActor {
    type Result = ResponseActFuture<Self, Result<bool, String>>;

    fn handle(&mut self, _: Beat, _: &mut Context<Self>) -> Self::Result {
        let status = self.status.raw();
        if status.epoch != self.epoch_seen {
            self.epoch_seen = status.epoch;
            self.last_ok_sent = Instant::now();
        }
        Box::pin(self.beat())
    }
}
