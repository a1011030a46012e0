use crate::messages::NodeRole;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::{ActorFutureExt, AsyncContext, Context, Handler, Message, WrapFuture};

use super::NodeSupervisor;
use crate::error::EngineError;
use crate::execution::StartKind;
use crate::messages::{NodeState, Rescan};
use crate::store::entities::execution;
use crate::store::{state, NodeRegistration, ANSWER, CHILD_DONE, INTERACTION};
use crate::workflow::Definition;

impl NodeSupervisor {
    /// Registers the node, claims its unfinished executions and resumes them.
    pub(super) fn recover(&mut self, ctx: &mut Context<Self>) {
        let cfg = self.cfg.clone();
        let fut = async move {
            let epoch = cfg
                .store
                .register_node(NodeRegistration {
                    id: cfg.node_id.clone(),
                    address: cfg.address.clone(),
                    role: NodeRole::Active.as_str().into(),
                    state: NodeState::Running.as_str().into(),
                    fingerprint: cfg.fingerprint.clone(),
                })
                .await?;
            cfg.store
                .record_event(
                    "join",
                    &cfg.node_id,
                    &format!("node {} joined at epoch {epoch}", cfg.node_id),
                )
                .await?;
            // Standalone: this node is the only one, so every unfinished
            // execution is its own. Claiming moves each one's epoch forward,
            // fencing out any earlier process that might still be writing.
            let rows = cfg.store.claim_unfinished(&cfg.node_id, None).await?;
            let mut resumed = Vec::with_capacity(rows.len());
            let mut defs: HashMap<(String, i64), Arc<Definition>> = HashMap::new();
            for row in rows {
                let key = (row.workflow_id.clone(), row.workflow_version);
                let def = match defs.get(&key) {
                    Some(d) => d.clone(),
                    None => {
                        let d = cfg
                            .definitions
                            .get(&cfg.store, &row.workflow_id, row.workflow_version)
                            .await?;
                        defs.insert(key, d.clone());
                        d
                    }
                };
                resumed.push((def, row));
            }
            Ok::<_, EngineError>((epoch, resumed))
        };
        ctx.wait(fut.into_actor(self).map(|result, act, ctx| match result {
            Ok((epoch, resumed)) => {
                tracing::info!(node = %act.cfg.node_id, epoch, resumed = resumed.len(), "node running");
                act.cfg.status.update(|s| {
                    s.state = NodeState::Running;
                    s.epoch = epoch;
                });
                for (def, row) in resumed {
                    act.spawn_execution(ctx, def, row, StartKind::Recovered);
                }
            }
            Err(e) => {
                tracing::error!(node = %act.cfg.node_id, error = %e, "start-up recovery failed; retrying in 1 s");
                ctx.run_later(Duration::from_secs(1), |act, ctx| act.recover(ctx));
            }
        }));
    }
}
/// How often a running node looks for running executions it owns with no
/// actor, and for cancels other nodes asked for.
pub(super) const RESCAN_EVERY: Duration = Duration::from_secs(1);
/// How often a running node looks for parked executions that are due.
pub(super) const WAKE_SCAN_EVERY: Duration = Duration::from_millis(100);
/// Most executions woken by one scan.
const WAKE_BATCH: u32 = 500;
/// Runs in flight above which the wake scan waits for a later tick: a
/// burst of due executions (100,000 signals at once) is woken as the
/// node gets through them, not all at once (which held every one as an
/// actor and had the 1 s rescan read them all, each time). Never longer
/// than `WAKE_AT_LEAST_EVERY`, so that long-running items cannot starve
/// timers.
/// The same floor holds when no slot under `engine.max_running` is free:
/// the scan then wakes one batch over the limit (owed back before any
/// start is admitted), while less than a batch is owed.
const WAKE_WHILE_RUNNING_BELOW: usize = 4 * WAKE_BATCH as usize;
const WAKE_AT_LEAST_EVERY: Duration = Duration::from_secs(1);
/// How often a running node looks for signals stored without the wake
/// flag, and how far back (three periods: a slow commit is not missed).
pub(super) const SIGNAL_CATCH_UP_EVERY: Duration = Duration::from_secs(10);
const SIGNAL_CATCH_UP_WINDOW_MS: i64 = 30_000;

impl NodeSupervisor {
    /// Wakes this node's parked executions that are due (timer or timeout
    /// passed, or a signal arrived), in bounded batches, one scan at a time.
    pub(super) fn wake_due(&mut self, ctx: &mut Context<Self>) {
        let free = self.cfg.admission.free();
        let floor = self.last_wake.elapsed() >= WAKE_AT_LEAST_EVERY;
        let busy = (self.running.len() >= WAKE_WHILE_RUNNING_BELOW || free == 0) && !floor;
        let over_owed = free == 0 && self.cfg.admission.owed() >= WAKE_BATCH as usize;
        if self.waking || busy || over_owed || self.cfg.status.get().state != NodeState::Running {
            return;
        }
        // As many as there are free slots; at the floor, a batch regardless.
        let batch = match free {
            0 => WAKE_BATCH,
            n => WAKE_BATCH.min(u32::try_from(n).unwrap_or(u32::MAX)),
        };
        self.waking = true;
        self.last_wake = std::time::Instant::now();
        let store = self.cfg.store.clone();
        let node = self.cfg.node_id.clone();
        let cache = self.cfg.definitions.clone();
        let waking = self.waking_ids.clone();
        let fut = async move {
            let ids = store.due_for_wake(&node, batch).await?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            // From here until their actors start, a rescan that reads these
            // rows `running` with no actor must leave them to this wake
            // (it would start them as recovered: attempt + 1, `resumed`).
            waking.borrow_mut().extend(ids.iter().cloned());
            let woken = store.wake(&node, ids).await?;
            // The signals their signal and interaction items take, in one
            // read rather than one per run. A failed read costs only that:
            // each run reads its own (the rows are already woken).
            let wanted: Vec<(String, String)> = woken
                .iter()
                .filter_map(|(row, _)| Some((row.id.clone(), awaited(row)?.to_owned())))
                .collect();
            let mut signals = match store.pending_signals_of(wanted).await {
                Ok(signals) => Some(signals),
                Err(e) => {
                    tracing::debug!(error = %e, "reading the woken executions' signals failed; each run reads its own");
                    None
                }
            };
            let mut out = Vec::new();
            for (row, claimed) in woken {
                let def = cache
                    .get(&store, &row.workflow_id, row.workflow_version)
                    .await?;
                let prepared = super::Prepared {
                    claimed: claimed.then_some(row.run_token),
                    signals: match (awaited(&row), signals.as_mut()) {
                        (Some(_), Some(all)) => Some(all.remove(&row.id).unwrap_or_default()),
                        _ => None,
                    },
                };
                out.push((def, row, prepared));
            }
            Ok::<_, EngineError>(out)
        };
        ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
            act.waking = false;
            act.waking_ids.borrow_mut().clear();
            match result {
                Ok(rows) => {
                    let full = rows.len() as u32 >= batch && act.cfg.admission.free() > 0;
                    for (def, row, prepared) in rows {
                        act.spawn_run(ctx, def, row, StartKind::Woken, prepared, None);
                    }
                    if full {
                        ctx.notify(WakeDue);
                    }
                }
                Err(e) => tracing::warn!(node = %act.cfg.node_id, error = %e, "wake scan failed"),
            }
        }));
    }
}

impl NodeSupervisor {
    /// Flags this node's executions parked on a signal stored in the last
    /// seconds without their flag, then wakes them. Every sender of this
    /// version sets the flag itself; this catches a node of an older
    /// version during a rolling upgrade, at the cost of reading one
    /// window of signals.
    pub(super) fn catch_up_signals(&mut self, ctx: &mut Context<Self>) {
        if self.cfg.status.get().state != NodeState::Running {
            return;
        }
        let store = self.cfg.store.clone();
        let node = self.cfg.node_id.clone();
        let fut = async move {
            store
                .flag_recent_signals(&node, SIGNAL_CATCH_UP_WINDOW_MS)
                .await
        };
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| match result {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(node = %act.cfg.node_id, flagged = n,
                    "signals stored without their wake flag (a node of an older version?); waking their executions");
                act.wake_due(ctx);
            }
            Err(e) => tracing::warn!(node = %act.cfg.node_id, error = %e, "signal catch-up failed"),
        }));
    }
}

/// The signal a woken row's item will take: its own name for a `signal`
/// item, the answer for an `interaction`; `None` for a parent parked on
/// its children (its item reads and consumes their notices itself) or a
/// row parked on no signal.
fn awaited(row: &execution::Model) -> Option<&str> {
    match row.wait_signal.as_deref()? {
        CHILD_DONE => None,
        INTERACTION => Some(ANSWER),
        name => Some(name),
    }
}

/// Wakes due parked executions now (a signal arrived for one of them).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct WakeDue;

impl Handler<WakeDue> for NodeSupervisor {
    type Result = ();

    fn handle(&mut self, _: WakeDue, ctx: &mut Context<Self>) {
        self.wake_due(ctx);
    }
}

impl NodeSupervisor {
    /// Starts an actor for every running execution this node owns that
    /// has none: adopted, taken over, or left by a stopped actor.
    pub(super) fn rescan(&mut self, ctx: &mut Context<Self>) {
        if self.state() != NodeState::Running {
            return;
        }
        if self.rescanning {
            // One at a time; ask for another pass when this one ends.
            self.rescan_again = true;
            return;
        }
        self.rescanning = true;
        let store = self.cfg.store.clone();
        let node = self.cfg.node_id.clone();
        let cache = self.cfg.definitions.clone();
        let known: HashSet<String> = self
            .running
            .keys()
            .chain(self.pending.iter())
            .cloned()
            .collect();
        let standalone_epoch = self
            .cfg
            .cluster
            .is_none()
            .then(|| self.cfg.status.raw().epoch);
        let fut = async move {
            // Standalone: another process that registered with this node id
            // moved the node's epoch on; this one must stop writing.
            if let Some(mine) = standalone_epoch {
                if let Some(row) = store.node(&node).await? {
                    if row.epoch != mine {
                        return Err(EngineError::Conflict(format!(
                            "another process registered as node {node} (epoch {} after this one's {mine})",
                            row.epoch
                        )));
                    }
                }
            }
            // Cancels asked for by other nodes first: those are canceled,
            // not started.
            let cancels: HashSet<String> =
                store.cancel_requested(&node).await?.into_iter().collect();
            let rows = store.owned_running(&node).await?;
            let mut out = Vec::new();
            for row in rows
                .into_iter()
                .filter(|r| !known.contains(&r.id) && !cancels.contains(&r.id))
            {
                let def = cache
                    .get(&store, &row.workflow_id, row.workflow_version)
                    .await?;
                out.push((def, row));
            }
            Ok::<_, EngineError>((out, cancels))
        };
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| {
            act.rescanning = false;
            if std::mem::take(&mut act.rescan_again) {
                ctx.notify(Rescan { promoted: false });
            }
            let result = result.map(|(rows, cancels)| {
                for id in cancels {
                    ctx.notify(super::CancelExecution { id });
                }
                rows
            });
            act.rescanned(ctx, result)
        }));
    }

    fn rescanned(
        &mut self,
        ctx: &mut Context<Self>,
        result: Result<Vec<(Arc<Definition>, execution::Model)>, EngineError>,
    ) {
        let act = self;
        match result {
            Ok(rows) => {
                if act.state() != NodeState::Running {
                    return;
                }
                if !rows.is_empty() {
                    tracing::info!(node = %act.cfg.node_id, count = rows.len(), "resuming executions this node now owns");
                }
                for (def, row) in rows {
                    // Being created, or being woken by the wake scan in
                    // flight: not stranded.
                    if act.pending.contains(&row.id) || act.waking_ids.borrow().contains(&row.id) {
                        continue;
                    }
                    act.spawn_execution(ctx, def, row, StartKind::Recovered);
                }
            }
            Err(EngineError::Conflict(reason)) if act.cfg.cluster.is_none() => {
                tracing::error!(node = %act.cfg.node_id, %reason, "fencing this node: stopping every execution");
                act.cfg.status.update(|s| {
                    s.state = NodeState::Fenced;
                    s.role = NodeRole::Standby;
                });
                act.stop_all_now();
            }
            Err(e) => tracing::warn!(node = %act.cfg.node_id, error = %e, "rescan failed"),
        }
    }
}

impl Handler<Rescan> for NodeSupervisor {
    type Result = ();

    fn handle(&mut self, msg: Rescan, ctx: &mut Context<Self>) {
        if msg.promoted && self.state() == NodeState::Standby {
            self.become_active(ctx);
        } else {
            self.rescan(ctx);
        }
    }
}

impl NodeSupervisor {
    /// Re-reads an execution this node owns and runs it again if it is
    /// still running (after a store failure stopped its actor).
    pub(super) fn retry_execution(&mut self, ctx: &mut Context<Self>, id: String) {
        if self.state() != NodeState::Running || self.running.contains_key(&id) {
            return;
        }
        let store = self.cfg.store.clone();
        let node = self.cfg.node_id.clone();
        let cfg_defs = self.cfg.definitions.clone();
        let fut = async move {
            let Some(row) = store.execution(&id).await? else {
                return Ok(None);
            };
            if row.state != state::RUNNING || row.owner_node.as_deref() != Some(node.as_str()) {
                return Ok(None);
            }
            let def = cfg_defs
                .get(&store, &row.workflow_id, row.workflow_version)
                .await?;
            Ok::<_, EngineError>(Some((def, row)))
        };
        ctx.spawn(
            fut.into_actor(self)
                .map(move |result, act, ctx| match result {
                    Ok(Some((def, row))) => {
                        act.spawn_execution(ctx, def, row, StartKind::Recovered)
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot resume execution yet"),
                }),
        );
    }
}
