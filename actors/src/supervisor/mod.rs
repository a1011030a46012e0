//! `NodeSupervisor`: the root of a node's actor tree.
//!
//! It registers the node (standalone) or joins the cluster, claims and
//! resumes the executions the node owns (crash recovery), starts one
//! `ExecutionActor` per running execution, routes commands to them, and
//! stops them on shutdown. The node's state for `/api/healthstatus` is
//! published through [`crate::status::StatusCell`].
//!
//! Message priority: a node-wide stop ([`Shutdown`]) is handled before
//! anything new is started (the state turns `STOPPING` first, and
//! `StartExecution` is refused from then on); fencing (`FenceSelf`) stops
//! every execution at once; an execution's `Cancel` is handled between its
//! items or by aborting the item in flight; ordinary messages follow in
//! mailbox order. The database, not any mailbox, is the truth: a message
//! lost with a failed actor is recovered by re-reading the store.
//!
//! Invariants it keeps (DESIGN.md), each with the test that proves it:
//! - 5, a node that cannot heartbeat fences itself first (`membership`;
//!   `cluster::*::a_node_cut_from_the_database_fences_itself_and_rejoins`).
//! - 8, waiting costs nothing: parked executions hold no actor; the wake
//!   scan starts one when due (`recovery`; `waits::*`).
//! - 10, one run per execution: an actor starts only on a running node, at
//!   most one per execution here, and each run claims its row (`spawn_execution`;
//!   `claims::*`, `driver::*::a_second_process_with_the_same_node_id_waits_for_the_first`).
//! - 11, a graceful stop is not a failure: the drain is bounded and ends in
//!   one hand-off transaction (`commands::Shutdown`;
//!   `cluster::*::sigterm_during_a_long_item_drains_without_a_failover`).
//! - 12, every end reaches the parent: a cancel with no actor notifies the
//!   waiting parent (`commands::CancelExecution`;
//!   `nested::*::a_canceled_parked_child_ends_its_waiting_parent`).
//!
//! # Layout
//! - this file: the actor, its configuration and spawning of execution actors
//! - `membership`: joining, promotion, fencing and rejoining (cluster mode)
//! - `recovery`: start-up recovery, rescans, the wake scan, retries after store failures
//! - `commands`: start, cancel, resume, child start and shutdown
//! - `retention`: purging finished executions and old cluster events
//! - `planner`: keeping PostgreSQL's statistics in step with growing tables

use crate::messages::NodeRole;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, AsyncContext, Context, Handler, Message};

use crate::actions::ActionRegistry;
use crate::admission::{Admission, Slot};
use crate::execution::StartKind;
use crate::execution::{ExecutionActor, ExecutionSetup};
use crate::failover::ClusterTiming;
use crate::failover::FailoverDetectorActor;
use crate::heartbeat::HeartbeatActor;
use crate::messages::{ExecutionEnded, NodeState, RunOutcome};
use crate::metrics::EngineMetrics;
use crate::status::{NodeStatus, StatusCell};
use crate::store::entities::execution;
use crate::store::Store;
use crate::workflow::script::ScriptPool;
use crate::workflow::{Definition, DefinitionCache};

/// What a supervisor is started with.
#[derive(Clone, Debug)]
pub struct SupervisorConfig {
    /// This node's id.
    pub node_id: String,
    /// This node's HTTP address, as other nodes and clients reach it.
    pub address: String,
    /// The store.
    pub store: Store,
    /// The script threads.
    pub scripts: ScriptPool,
    /// The actions this node knows.
    pub actions: ActionRegistry,
    /// A fingerprint of the cluster-wide settings.
    pub fingerprint: String,
    /// The node's definition cache, shared with the HTTP layer.
    pub definitions: DefinitionCache,
    /// Where the node's state is published.
    pub status: Arc<StatusCell>,
    /// The node's counters.
    pub metrics: Arc<EngineMetrics>,
    /// Cluster mode's timing; `None`: standalone.
    pub cluster: Option<ClusterTiming>,
    /// The poison-pill budget (`engine.max_item_starts`).
    pub max_item_starts: u32,
    /// How deep workflows may nest (`engine.max_depth`).
    pub max_depth: u32,
    /// Children a parallel `foreach` runs at once (`engine.foreach_parallelism`).
    pub fan_out: u32,
    /// What to purge (`[retention]`); `None`: keep everything.
    pub retention: Option<RetentionPolicy>,
    /// The slots every run holds (`engine.max_running`), shared with the
    /// callers that start executions ([`Starter`]).
    pub admission: Arc<Admission>,
}

/// The root actor of a node. See the module documentation.
pub struct NodeSupervisor {
    cfg: SupervisorConfig,
    running: HashMap<String, Addr<ExecutionActor>>,

    /// Executions being created by `StartExecution`: a rescan must not
    /// start them as resumed.
    pending: HashSet<String>,
    heartbeat: Option<Addr<HeartbeatActor>>,
    detector: Option<Addr<FailoverDetectorActor>>,
    beats: u64,
    rescanning: bool,
    rescan_again: bool,
    waking: bool,
    /// When the last wake scan began (the scan skips ticks while many
    /// runs are in flight, but never for more than a second).
    last_wake: std::time::Instant,
    /// The executions the wake scan in flight is waking (see `wake_due`).
    waking_ids: std::rc::Rc<std::cell::RefCell<HashSet<String>>>,
    purging: bool,
    /// A look at the planner's statistics is under way (`planner`).
    planning: bool,
    /// Tables this role may not analyze, said once.
    not_analyzable: std::collections::HashSet<String>,
    /// Tables whose `ANALYZE` failed, said once.
    planner_failed: std::collections::HashSet<String>,
    /// No look at the planner's statistics before this (after a failure).
    planner_paused_until: Option<std::time::Instant>,
    /// A `config-refused` event was recorded for this process.
    refusal_recorded: bool,
    /// Since when, and why, this node is fenced (until it rejoins).
    fenced: Option<membership::FencedSince>,
}

impl NodeSupervisor {
    /// Creates a supervisor; it registers the node and recovers when started.
    pub fn new(cfg: SupervisorConfig) -> NodeSupervisor {
        NodeSupervisor {
            cfg,
            running: HashMap::new(),
            pending: HashSet::new(),
            heartbeat: None,
            detector: None,
            beats: 0,
            rescanning: false,
            rescan_again: false,
            waking: false,
            last_wake: std::time::Instant::now(),
            waking_ids: Default::default(),
            purging: false,
            planning: false,
            not_analyzable: Default::default(),
            planner_failed: Default::default(),
            planner_paused_until: None,
            refusal_recorded: false,
            fenced: None,
        }
    }

    /// The state as set by this actor (not the lease-checked view).
    pub(super) fn state(&self) -> NodeState {
        self.cfg.status.raw().state
    }

    pub(super) fn publish_running(&self) {
        let n = self.running.len();
        self.cfg.status.update(|s| s.running = n);
    }

    pub(super) fn spawn_execution(
        &mut self,
        ctx: &mut Context<Self>,
        def: Arc<Definition>,
        row: execution::Model,
        kind: StartKind,
    ) {
        self.spawn_run(ctx, def, row, kind, Prepared::default(), None);
    }

    /// [`Self::spawn_execution`] for a row whose run token
    /// (`prepared.claimed`) the statement that created or woke it already
    /// claimed for this run;
    /// only while nothing else on this node can start a run of it (the
    /// row is in `pending` or `waking_ids` until this call). The actor
    /// holds `slot` (a client start's admission) or else one taken now
    /// (forced over `engine.max_running` if none is free) until it stops.
    pub(super) fn spawn_run(
        &mut self,
        ctx: &mut Context<Self>,
        def: Arc<Definition>,
        row: execution::Model,
        kind: StartKind,
        prepared: Prepared,
        slot: Option<Slot>,
    ) {
        // A fenced, stopping, starting or standby node starts no actor
        // (the lease-checked state: a node past its lease is fenced).
        if self.running.contains_key(&row.id) || self.cfg.status.get().state != NodeState::Running {
            return;
        }
        let id = row.id.clone();
        let slot = slot.unwrap_or_else(|| self.cfg.admission.take());
        let actor = ExecutionActor::new(ExecutionSetup {
            store: self.cfg.store.clone(),
            scripts: self.cfg.scripts.clone(),
            actions: self.cfg.actions.clone(),
            definitions: self.cfg.definitions.clone(),
            definition: def,
            row,
            node: self.cfg.node_id.clone(),
            node_epoch: self.cfg.status.raw().epoch,
            kind,
            claimed: prepared.claimed,
            signals: prepared.signals,
            max_item_starts: self.cfg.max_item_starts,
            max_depth: self.cfg.max_depth,
            fan_out: self.cfg.fan_out,
            starter: ctx.address().recipient(),
            supervisor: ctx.address().recipient(),
            metrics: self.cfg.metrics.clone(),
        })
        .holding(slot);
        self.running.insert(id, actor.start());
        self.publish_running();
    }
}

/// What the statement that created or woke a row already did for its
/// run: the run token it claimed, and the signals it read.
#[derive(Debug, Default)]
pub(super) struct Prepared {
    /// The run token claimed (see `ExecutionSetup::claimed`).
    pub(super) claimed: Option<i64>,
    /// The execution's unconsumed signals (see `ExecutionSetup::signals`).
    pub(super) signals: Option<Vec<crate::store::entities::signal::Model>>,
}

/// Registers the node, claims its unfinished executions and resumes them.
impl Actor for NodeSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(4096);
        // Parked executions hold no actor and no timer task: one scan per
        // node wakes those that are due (invariant 8).
        ctx.run_interval(recovery::WAKE_SCAN_EVERY, |act, ctx| act.wake_due(ctx));
        // Rows left `running` with no actor (a store outage longer than the
        // checkpoint retries, a failed wake or child start) and cancels
        // asked for by other nodes are picked up by a periodic rescan, in
        // standalone and cluster mode alike.
        ctx.run_interval(recovery::RESCAN_EVERY, |act, ctx| act.rescan(ctx));
        ctx.run_interval(recovery::SIGNAL_CATCH_UP_EVERY, |act, ctx| {
            act.catch_up_signals(ctx)
        });
        if let Some(policy) = self.cfg.retention {
            ctx.run_interval(policy.every, |act, ctx| act.purge(ctx));
        }
        if self.cfg.store.backend() == sea_orm::DbBackend::Postgres {
            ctx.run_interval(crate::store::planner::EVERY, |act, ctx| {
                act.keep_planner_stats(ctx)
            });
        }
        match self.cfg.cluster {
            None => self.recover(ctx),
            Some(timing) => {
                self.cfg.status.update(|s| s.role = NodeRole::Standby);
                let status = self.cfg.status.clone();
                let fence_after = crate::status::lease_length(timing.timeout, timing.interval);
                self.heartbeat = Some(
                    HeartbeatActor::new(
                        self.cfg.store.clone(),
                        self.cfg.node_id.clone(),
                        timing.interval,
                        fence_after,
                        status.clone(),
                        ctx.address().recipient(),
                        ctx.address().recipient(),
                    )
                    .with_metrics(self.cfg.metrics.clone())
                    .start(),
                );
                self.detector = Some(
                    FailoverDetectorActor::new(
                        self.cfg.store.clone(),
                        self.cfg.node_id.clone(),
                        timing,
                        status,
                        ctx.address().recipient(),
                        ctx.address().recipient(),
                    )
                    .with_metrics(self.cfg.metrics.clone())
                    .start(),
                );
                self.join(ctx, timing);
            }
        }
    }
}
/// Asks for the node's state.
#[derive(Debug, Message)]
#[rtype(result = "NodeStatus")]
pub struct QueryState;

impl Handler<QueryState> for NodeSupervisor {
    type Result = actix::MessageResult<QueryState>;

    fn handle(&mut self, _: QueryState, _: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(self.cfg.status.get())
    }
}

/// Asks for the addresses of the heartbeat and failover detector actors.
#[derive(Debug, Message)]
#[rtype(result = "Children")]
pub struct GetChildren;

/// The supervisor's long-lived children (cluster mode).
#[derive(Clone, Debug, Default)]
pub struct Children {
    /// The heartbeat actor.
    pub heartbeat: Option<Addr<HeartbeatActor>>,
    /// The failover detector.
    pub detector: Option<Addr<FailoverDetectorActor>>,
}

impl Handler<GetChildren> for NodeSupervisor {
    type Result = actix::MessageResult<GetChildren>;

    fn handle(&mut self, _: GetChildren, _: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(Children {
            heartbeat: self.heartbeat.clone(),
            detector: self.detector.clone(),
        })
    }
}

impl Handler<ExecutionEnded> for NodeSupervisor {
    type Result = ();

    fn handle(&mut self, msg: ExecutionEnded, ctx: &mut Context<Self>) {
        self.running.remove(&msg.id);
        self.publish_running();
        if let RunOutcome::StoreFailed(reason) = &msg.outcome {
            tracing::warn!(execution = %msg.id, %reason, "execution paused on a store failure; resuming in 1 s");
            let id = msg.id.clone();
            ctx.run_later(Duration::from_secs(1), move |act, ctx| {
                act.retry_execution(ctx, id)
            });
        }
    }
}

mod commands;
mod membership;
mod planner;
mod recovery;
mod retention;

pub use commands::{
    AnswerInteraction, CancelExecution, DeliverSignal, EvictNode, ResumeFailed, Shutdown,
    StartExecution, Starter,
};
pub use membership::{FenceNow, Rejoin};
pub use recovery::WakeDue;
pub use retention::RetentionPolicy;
