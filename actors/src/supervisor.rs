//! `NodeSupervisor`: the root of a node's actor tree.
//!
//! It registers the node, claims and resumes the executions the node owns
//! (crash recovery), starts one `ExecutionActor` per running execution,
//! routes cancel requests to them, and stops them on shutdown. The node's
//! state for `/api/healthstatus` is published through [`StatusCell`].
//!
//! Message priority: a node-wide stop ([`Shutdown`]) is handled before
//! anything new is started (the state turns `STOPPING` first, and
//! `StartExecution` is refused from then on); an execution's `Cancel` is
//! handled between its items or by aborting the item in flight; ordinary
//! messages follow in mailbox order. The database, not any mailbox, is the
//! truth: a message lost with a failed actor is recovered by re-reading
//! the store.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::{
    Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message, ResponseActFuture,
    WrapFuture,
};
use serde_json::Value;

use crate::actions::ActionRegistry;
use crate::error::{EngineError, StoreError};
use crate::execution::{ExecutionActor, ExecutionSetup, StartKind, SUPPORTED_ITEM_TYPES};
use crate::failover::{ClusterTiming, FailoverDetectorActor, ScanPeers};
use crate::heartbeat::HeartbeatActor;
use crate::messages::{
    Cancel, ExecutionEnded, FenceSelf, NodeSeen, NodeState, Rescan, RunOutcome, Stop,
};
use crate::metrics::EngineMetrics;
use crate::store::entities::execution;
use crate::store::{
    state, Checkpoint, Fence, LogEntry, NewExecution, NodeRegistration, StartOutcome, Store,
};
use crate::workflow::script::ScriptPool;
use crate::workflow::ParseOptions;
use crate::workflow::{check_inputs, parse_definition, Definition, Problem, SourceFormat};

/// The node's state as the HTTP layer reads it, without a message round trip.
#[derive(Debug)]
pub struct StatusCell(RwLock<NodeStatus>);

/// A snapshot of the node's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// Its state.
    pub state: NodeState,
    /// `active` or `standby`.
    pub role: &'static str,
    /// Its epoch, once registered.
    pub epoch: i64,
    /// Executions with a running actor on this node.
    pub running: usize,
    /// Cluster mode: until when the last committed heartbeat lets this
    /// node act (sent + failover timeout - one interval, monotonic clock).
    pub lease_until: Option<std::time::Instant>,
}

impl Default for StatusCell {
    fn default() -> Self {
        StatusCell(RwLock::new(NodeStatus {
            state: NodeState::Starting,
            role: "active",
            epoch: 0,
            running: 0,
            lease_until: None,
        }))
    }
}

impl StatusCell {
    /// The current snapshot. A node whose heartbeat lease has run out is
    /// reported `FENCED` at once, even before its heartbeat actor has had
    /// a chance to run (say, just after waking from a pause): it must not
    /// answer health checks or accept work as an active node.
    pub fn get(&self) -> NodeStatus {
        let mut s = self.raw();
        if let Some(until) = s.lease_until {
            if std::time::Instant::now() > until
                && matches!(s.state, NodeState::Running | NodeState::Standby)
            {
                s.state = NodeState::Fenced;
                s.role = "standby";
            }
        }
        s
    }

    /// The state as last set, without the lease check.
    pub fn raw(&self) -> NodeStatus {
        match self.0.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Extends the heartbeat lease (only ever forward).
    pub fn renew_lease(&self, until: std::time::Instant) {
        self.update(|s| s.lease_until = Some(s.lease_until.map_or(until, |u| u.max(until))));
    }

    fn update(&self, f: impl FnOnce(&mut NodeStatus)) {
        match self.0.write() {
            Ok(mut s) => f(&mut s),
            Err(p) => f(&mut p.into_inner()),
        }
    }
}

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
}

/// The root actor of a node. See the module documentation.
pub struct NodeSupervisor {
    cfg: SupervisorConfig,
    running: HashMap<String, Addr<ExecutionActor>>,
    definitions: DefinitionCache,
    /// Executions being created by `StartExecution`: a rescan must not
    /// start them as resumed.
    pending: HashSet<String>,
    heartbeat: Option<Addr<HeartbeatActor>>,
    detector: Option<Addr<FailoverDetectorActor>>,
    beats: u64,
    rescanning: bool,
    rescan_again: bool,
    waking: bool,
}

/// Parsed definitions by (id, version). A version never changes, so an
/// entry never goes stale; the cache only saves parsing and a read.
type DefinitionCache = Arc<std::sync::Mutex<HashMap<(String, i64), Arc<Definition>>>>;

impl NodeSupervisor {
    /// Creates a supervisor; it registers the node and recovers when started.
    pub fn new(cfg: SupervisorConfig) -> NodeSupervisor {
        NodeSupervisor {
            cfg,
            running: HashMap::new(),
            definitions: DefinitionCache::default(),
            pending: HashSet::new(),
            heartbeat: None,
            detector: None,
            beats: 0,
            rescanning: false,
            rescan_again: false,
            waking: false,
        }
    }

    /// The state as set by this actor (not the lease-checked view).
    fn state(&self) -> NodeState {
        self.cfg.status.raw().state
    }

    fn publish_running(&self) {
        let n = self.running.len();
        self.cfg.status.update(|s| s.running = n);
    }

    fn spawn_execution(
        &mut self,
        ctx: &mut Context<Self>,
        def: Arc<Definition>,
        row: execution::Model,
        kind: StartKind,
    ) {
        if self.running.contains_key(&row.id) {
            return;
        }
        let id = row.id.clone();
        let actor = ExecutionActor::new(ExecutionSetup {
            store: self.cfg.store.clone(),
            scripts: self.cfg.scripts.clone(),
            actions: self.cfg.actions.clone(),
            definition: def,
            row,
            node: self.cfg.node_id.clone(),
            kind,
            max_item_starts: self.cfg.max_item_starts,
            max_depth: self.cfg.max_depth,
            fan_out: self.cfg.fan_out,
            starter: ctx.address().recipient(),
            supervisor: ctx.address().recipient(),
            metrics: self.cfg.metrics.clone(),
        });
        self.running.insert(id, actor.start());
        self.publish_running();
    }

    fn cache(&mut self, def: &Arc<Definition>, version: i64) {
        if let Ok(mut cache) = self.definitions.lock() {
            if cache.len() > 1024 {
                cache.clear();
            }
            cache.insert((def.id.clone(), version), def.clone());
        }
    }

    /// Registers the node, claims its unfinished executions and resumes them.
    fn recover(&mut self, ctx: &mut Context<Self>) {
        let cfg = self.cfg.clone();
        let fut = async move {
            let epoch = cfg
                .store
                .register_node(NodeRegistration {
                    id: cfg.node_id.clone(),
                    address: cfg.address.clone(),
                    role: "active".into(),
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
                        let d = load_definition(&cfg.store, &row.workflow_id, row.workflow_version)
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
                for (def, row) in resumed {
                    act.cache(&def, row.workflow_version);
                    act.spawn_execution(ctx, def, row, StartKind::Recovered);
                }
                act.cfg.status.update(|s| {
                    s.state = NodeState::Running;
                    s.epoch = epoch;
                });
            }
            Err(e) => {
                tracing::error!(node = %act.cfg.node_id, error = %e, "start-up recovery failed; retrying in 1 s");
                ctx.run_later(Duration::from_secs(1), |act, ctx| act.recover(ctx));
            }
        }));
    }
}

/// How often a running node looks for parked executions that are due.
const WAKE_SCAN_EVERY: Duration = Duration::from_millis(100);
/// Most executions woken by one scan.
const WAKE_BATCH: u32 = 500;

impl NodeSupervisor {
    /// Wakes this node's parked executions that are due (timer or timeout
    /// passed, or a signal arrived), in bounded batches, one scan at a time.
    fn wake_due(&mut self, ctx: &mut Context<Self>) {
        if self.waking || self.cfg.status.get().state != NodeState::Running {
            return;
        }
        self.waking = true;
        let store = self.cfg.store.clone();
        let node = self.cfg.node_id.clone();
        let cache = self.definitions.clone();
        let fut = async move {
            let ids = store.due_for_wake(&node, WAKE_BATCH).await?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let mut out = Vec::new();
            for row in store.wake(&node, ids).await? {
                let def = cached_definition(&store, &cache, &row.workflow_id, row.workflow_version)
                    .await?;
                out.push((def, row));
            }
            Ok::<_, EngineError>(out)
        };
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| {
            act.waking = false;
            match result {
                Ok(rows) => {
                    let full = rows.len() as u32 >= WAKE_BATCH;
                    for (def, row) in rows {
                        act.spawn_execution(ctx, def, row, StartKind::Woken);
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

impl Handler<crate::messages::StartChild> for NodeSupervisor {
    type Result = ();

    fn handle(&mut self, msg: crate::messages::StartChild, ctx: &mut Context<Self>) {
        let store = self.cfg.store.clone();
        let cache = self.definitions.clone();
        let row = msg.row;
        let fut = async move {
            let def =
                cached_definition(&store, &cache, &row.workflow_id, row.workflow_version).await?;
            Ok::<_, EngineError>((def, row))
        };
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| match result {
            Ok((def, row)) if act.state() == NodeState::Running => {
                act.cache(&def, row.workflow_version);
                act.spawn_execution(ctx, def, row, StartKind::New);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot start a child execution (it will be resumed later)"),
        }));
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

/// A definition version from the cache, or read, parsed and cached.
async fn cached_definition(
    store: &Store,
    cache: &DefinitionCache,
    id: &str,
    version: i64,
) -> Result<Arc<Definition>, EngineError> {
    let key = (id.to_owned(), version);
    if let Some(d) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return Ok(d);
    }
    let d = load_definition(store, id, version).await?;
    if let Ok(mut c) = cache.lock() {
        if c.len() > 1024 {
            c.clear();
        }
        c.insert(key, d.clone());
    }
    Ok(d)
}

/// Reads and parses one stored version of a definition.
pub async fn load_definition(
    store: &Store,
    id: &str,
    version: i64,
) -> Result<Arc<Definition>, EngineError> {
    let body = store
        .workflow_version(id, version)
        .await?
        .ok_or_else(|| EngineError::WorkflowNotFound(format!("{id} version {version}")))?;
    parse_stored(id, &body).map(Arc::new)
}

fn parse_stored(id: &str, body: &str) -> Result<Definition, EngineError> {
    // Stored bodies were validated on import; accept any action name (an
    // action unregistered since fails its item, not the load).
    let opts = ParseOptions {
        known_action: &|_| true,
        supported_types: SUPPORTED_ITEM_TYPES,
    };
    let parsed = parse_definition(body.as_bytes(), SourceFormat::Json, &opts);
    parsed.definition.ok_or_else(|| {
        EngineError::Store(StoreError::Corrupt {
            what: format!("workflow {id}"),
            reason: parsed
                .problems
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        })
    })
}

impl Actor for NodeSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(4096);
        // Parked executions hold no actor and no timer task: one scan per
        // node wakes those that are due (invariant 8).
        ctx.run_interval(WAKE_SCAN_EVERY, |act, ctx| act.wake_due(ctx));
        match self.cfg.cluster {
            None => self.recover(ctx),
            Some(timing) => {
                self.cfg.status.update(|s| s.role = "standby");
                let status = self.cfg.status.clone();
                let fence_after = timing.timeout.saturating_sub(timing.interval);
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
                    .start(),
                );
                self.detector = Some(
                    FailoverDetectorActor::new(
                        self.cfg.store.clone(),
                        self.cfg.node_id.clone(),
                        timing,
                        status,
                        ctx.address().recipient(),
                    )
                    .start(),
                );
                self.join(ctx, timing);
            }
        }
    }
}

impl NodeSupervisor {
    /// Joins (or rejoins) the cluster as a standby; retries while the
    /// database is away.
    fn join(&mut self, ctx: &mut Context<Self>, timing: ClusterTiming) {
        let store = self.cfg.store.clone();
        let reg = NodeRegistration {
            id: self.cfg.node_id.clone(),
            address: self.cfg.address.clone(),
            role: "standby".into(),
            state: NodeState::Standby.as_str().into(),
            fingerprint: self.cfg.fingerprint.clone(),
        };
        let timeout_ms = timing.timeout.as_millis() as i64;
        let fut = async move { store.join_cluster(reg, timeout_ms).await };
        ctx.wait(fut.into_actor(self).map(move |result, act, ctx| match result {
            Ok(epoch) => {
                tracing::info!(node = %act.cfg.node_id, epoch, "joined the cluster as standby");
                let lease = std::time::Instant::now() + timing.timeout.saturating_sub(timing.interval);
                act.cfg.status.update(|s| {
                    s.state = NodeState::Standby;
                    s.role = "standby";
                    s.epoch = epoch;
                    s.lease_until = Some(lease);
                });
                if let Some(d) = &act.detector {
                    d.do_send(ScanPeers);
                }
            }
            Err(e) => {
                tracing::warn!(node = %act.cfg.node_id, error = %e, "cannot join the cluster yet; retrying");
                ctx.run_later(timing.interval, move |act, ctx| {
                    if matches!(act.state(), NodeState::Starting | NodeState::Fenced) {
                        act.join(ctx, timing);
                    }
                });
            }
        }));
    }

    /// Becomes an active node: runs the executions it owns.
    fn become_active(&mut self, ctx: &mut Context<Self>) {
        tracing::info!(node = %self.cfg.node_id, "promoted to active");
        self.cfg.status.update(|s| {
            s.state = NodeState::Running;
            s.role = "active";
        });
        self.rescan(ctx);
    }

    /// Starts an actor for every running execution this node owns that
    /// has none: adopted, taken over, or left by a stopped actor.
    fn rescan(&mut self, ctx: &mut Context<Self>) {
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
        let cache = self.definitions.clone();
        let known: HashSet<String> = self
            .running
            .keys()
            .chain(self.pending.iter())
            .cloned()
            .collect();
        let fut = async move {
            let rows = store.owned_running(&node).await?;
            let mut out = Vec::new();
            for row in rows.into_iter().filter(|r| !known.contains(&r.id)) {
                let def = cached_definition(&store, &cache, &row.workflow_id, row.workflow_version)
                    .await?;
                out.push((def, row));
            }
            Ok::<_, EngineError>(out)
        };
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| {
            act.rescanning = false;
            if std::mem::take(&mut act.rescan_again) {
                ctx.notify(Rescan { promoted: false });
            }
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
                    if act.pending.contains(&row.id) {
                        continue;
                    }
                    act.cache(&def, row.workflow_version);
                    act.spawn_execution(ctx, def, row, StartKind::Recovered);
                }
            }
            Err(e) => tracing::warn!(node = %act.cfg.node_id, error = %e, "rescan failed"),
        }
    }

    /// Stops every execution at once; no further write is attempted.
    fn stop_all_now(&mut self) {
        for addr in self.running.values() {
            addr.do_send(Stop { now: true });
        }
    }
}

impl Handler<NodeSeen> for NodeSupervisor {
    type Result = ();

    fn handle(&mut self, msg: NodeSeen, ctx: &mut Context<Self>) {
        let state = self.state();
        let row = msg.row;
        if state == NodeState::Standby
            && row.role == "active"
            && row.state == crate::store::node_state::RUNNING
        {
            self.become_active(ctx);
            return;
        }
        if state == NodeState::Running && row.role != "active" {
            ctx.notify(FenceSelf {
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

impl Handler<FenceSelf> for NodeSupervisor {
    type Result = ();

    fn handle(&mut self, msg: FenceSelf, ctx: &mut Context<Self>) {
        let state = self.state();
        let Some(timing) = self.cfg.cluster else {
            return;
        };
        if matches!(
            state,
            NodeState::Fenced | NodeState::Stopping | NodeState::Starting
        ) {
            return;
        }
        tracing::error!(node = %self.cfg.node_id, reason = %msg.reason, "fencing this node: stopping every execution");
        let epoch = self.cfg.status.raw().epoch;
        self.cfg.status.update(|s| {
            s.state = NodeState::Fenced;
            s.role = "standby";
        });
        self.stop_all_now();
        let store = self.cfg.store.clone();
        let node = self.cfg.node_id.clone();
        let reason = msg.reason.clone();
        ctx.spawn(
            async move {
                let _ = store.mark_fenced(&node, epoch).await;
                let _ = store
                    .record_event(
                        "fence",
                        &node,
                        &format!("node {node} fenced itself: {reason}"),
                    )
                    .await;
            }
            .into_actor(self),
        );
        ctx.run_later(timing.interval, move |act, ctx| act.try_rejoin(ctx, timing));
    }
}

impl NodeSupervisor {
    fn try_rejoin(&mut self, ctx: &mut Context<Self>, timing: ClusterTiming) {
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
        self.handle(FenceSelf { reason: msg.reason }, ctx);
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

/// Starts a new execution of a workflow's current version.
#[derive(Debug, Message)]
#[rtype(result = "Result<(execution::Model, bool), EngineError>")]
pub struct StartExecution {
    /// The workflow.
    pub workflow_id: String,
    /// Its inputs.
    pub inputs: Value,
    /// A caller-chosen id: repeating it starts nothing new.
    pub execution_id: Option<String>,
}

impl Handler<StartExecution> for NodeSupervisor {
    type Result = ResponseActFuture<Self, Result<(execution::Model, bool), EngineError>>;

    fn handle(&mut self, msg: StartExecution, _: &mut Context<Self>) -> Self::Result {
        let id = msg
            .execution_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let fresh = self.pending.insert(id.clone());
        // The lease-checked view: a node past its heartbeat lease takes no work.
        let state = self.cfg.status.get().state;
        let store = self.cfg.store.clone();
        let node = self.cfg.node_id.clone();
        let cache = self.definitions.clone();
        let pending_id = id.clone();
        let fut = async move {
            if state != NodeState::Running {
                return Err(EngineError::NotAccepting(format!(
                    "node is {}",
                    state.as_str()
                )));
            }
            let summary = store
                .workflow_summary(&msg.workflow_id)
                .await?
                .ok_or_else(|| EngineError::WorkflowNotFound(msg.workflow_id.clone()))?;
            let def = cached_definition(&store, &cache, &summary.id, summary.version).await?;
            let problems: Vec<Problem> = check_inputs(&def, &msg.inputs);
            if !problems.is_empty() {
                return Err(EngineError::InvalidInputs(problems));
            }
            let outcome = store
                .create_execution(NewExecution {
                    id,
                    workflow_id: summary.id.clone(),
                    workflow_version: summary.version,
                    parent_id: None,
                    inputs: msg.inputs,
                    variables: Value::Object(def.variables.clone()),
                    start_item: def.start.clone(),
                    owner_node: node,
                })
                .await?;
            Ok((def, summary.version, outcome))
        };
        Box::pin(fut.into_actor(self).map(move |result, act, ctx| {
            if fresh {
                act.pending.remove(&pending_id);
            }
            let (def, version, outcome) = result?;
            act.cache(&def, version);
            match outcome {
                StartOutcome::Created(row) => {
                    act.spawn_execution(ctx, def, row.clone(), StartKind::New);
                    Ok((row, true))
                }
                StartOutcome::Existing(row) => {
                    if row.workflow_id != def.id {
                        return Err(EngineError::Conflict(format!(
                            "execution id {} is already used by an execution of workflow {}",
                            row.id, row.workflow_id
                        )));
                    }
                    Ok((row, false))
                }
            }
        }))
    }
}

/// Cancels an execution (idempotent). Resolves to the execution as stored
/// afterwards.
#[derive(Debug, Message)]
#[rtype(result = "Result<execution::Model, EngineError>")]
pub struct CancelExecution {
    /// The execution.
    pub id: String,
}

impl Handler<CancelExecution> for NodeSupervisor {
    type Result = ResponseActFuture<Self, Result<execution::Model, EngineError>>;

    fn handle(&mut self, msg: CancelExecution, _ctx: &mut Context<Self>) -> Self::Result {
        let actor = self.running.get(&msg.id).cloned();
        let store = self.cfg.store.clone();
        let node = self.cfg.node_id.clone();
        let fut = async move {
            if let Some(actor) = actor {
                actor.send(Cancel).await?;
            }
            let row = store
                .execution(&msg.id)
                .await?
                .ok_or_else(|| EngineError::ExecutionNotFound(msg.id.clone()))?;
            if row.state == state::COMPLETED || row.state == state::CANCELED {
                return Ok(row);
            }
            if row.owner_node.as_deref() != Some(node.as_str()) {
                return Err(EngineError::Conflict(format!(
                    "execution {} is owned by node {}; cancel it there",
                    row.id,
                    row.owner_node.as_deref().unwrap_or("(none)")
                )));
            }
            // No actor runs it: a fenced write under the epoch just read,
            // refused if ownership moved since.
            let fence = Fence {
                execution: row.id.clone(),
                node: node.clone(),
                epoch: row.owner_epoch,
            };
            let log = LogEntry {
                item: row.current_item.clone().unwrap_or_default(),
                step: row.step,
                attempt: row.attempt,
                event: "log",
                message: Some("execution canceled".into()),
            };
            if row.state == state::FAILED {
                store.cancel_failed(&fence, log).await?;
            } else {
                store
                    .checkpoint(
                        &fence,
                        Checkpoint {
                            state: Some(state::CANCELED),
                            ended: true,
                            logs: vec![log],
                            ..Default::default()
                        },
                    )
                    .await?;
            }
            store
                .execution(&msg.id)
                .await?
                .ok_or_else(|| EngineError::ExecutionNotFound(msg.id.clone()))
        };
        // Cancelling a parent cancels its unfinished children.
        let children_store = self.cfg.store.clone();
        Box::pin(fut.into_actor(self).map(move |result, _act, ctx| {
            if let Ok(row) = &result {
                if row.state == state::CANCELED {
                    let me = ctx.address();
                    let parent = row.id.clone();
                    actix::spawn(async move {
                        if let Ok(children) = children_store.unfinished_children(&parent).await {
                            for c in children {
                                me.do_send(CancelExecution { id: c.id });
                            }
                        }
                    });
                }
            }
            result
        }))
    }
}

/// Runs a failed execution again from its failed item, with its
/// variables as they were or as given. Resolves to the execution reopened.
#[derive(Debug, Message)]
#[rtype(result = "Result<execution::Model, EngineError>")]
pub struct ResumeFailed {
    /// The execution.
    pub id: String,
    /// Variables to set before running (only the definition's variables).
    pub variables: Option<serde_json::Map<String, Value>>,
}

impl Handler<ResumeFailed> for NodeSupervisor {
    type Result = ResponseActFuture<Self, Result<execution::Model, EngineError>>;

    fn handle(&mut self, msg: ResumeFailed, _: &mut Context<Self>) -> Self::Result {
        let state = self.cfg.status.get().state;
        let store = self.cfg.store.clone();
        let node = self.cfg.node_id.clone();
        let fut = async move {
            if state != NodeState::Running {
                return Err(EngineError::NotAccepting(format!(
                    "node is {}",
                    state.as_str()
                )));
            }
            let row = store
                .execution(&msg.id)
                .await?
                .ok_or_else(|| EngineError::ExecutionNotFound(msg.id.clone()))?;
            if row.state != state::FAILED {
                return Err(EngineError::Conflict(format!(
                    "execution {} is {}; only a failed execution can be resumed",
                    row.id, row.state
                )));
            }
            let def = load_definition(&store, &row.workflow_id, row.workflow_version).await?;
            let variables = match msg.variables {
                None => None,
                Some(given) => {
                    let problems: Vec<Problem> = given
                        .keys()
                        .filter(|k| !def.variables.contains_key(*k))
                        .map(|k| {
                            Problem::new(
                                format!("variables.{k}"),
                                format!("not a variable of workflow {}", def.id),
                            )
                        })
                        .collect();
                    if !problems.is_empty() {
                        return Err(EngineError::InvalidInputs(problems));
                    }
                    let mut current: serde_json::Map<String, Value> =
                        serde_json::from_str(&row.variables).unwrap_or_default();
                    current.extend(given);
                    Some(Value::Object(current))
                }
            };
            let reopened = store
                .reopen_failed(&row.id, &node, variables)
                .await?
                .ok_or_else(|| {
                    EngineError::Conflict(format!(
                        "execution {} changed while being resumed",
                        row.id
                    ))
                })?;
            Ok((def, reopened))
        };
        Box::pin(fut.into_actor(self).map(|result, act, ctx| {
            let (def, row) = result?;
            act.cache(&def, row.workflow_version);
            act.spawn_execution(ctx, def, row.clone(), StartKind::Resumed);
            Ok(row)
        }))
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

impl NodeSupervisor {
    /// Re-reads an execution this node owns and runs it again if it is
    /// still running (after a store failure stopped its actor).
    fn retry_execution(&mut self, ctx: &mut Context<Self>, id: String) {
        if self.state() != NodeState::Running || self.running.contains_key(&id) {
            return;
        }
        let store = self.cfg.store.clone();
        let node = self.cfg.node_id.clone();
        let fut = async move {
            let Some(row) = store.execution(&id).await? else {
                return Ok(None);
            };
            if row.state != state::RUNNING || row.owner_node.as_deref() != Some(node.as_str()) {
                return Ok(None);
            }
            let def = load_definition(&store, &row.workflow_id, row.workflow_version).await?;
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

/// Stops the node's executions gracefully: each stops after its current
/// item; items still running after `grace` are abandoned (they run again,
/// attempt + 1, when the execution is next claimed).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Shutdown {
    /// How long running items may take to finish.
    pub grace: Duration,
}

impl Handler<Shutdown> for NodeSupervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: Shutdown, _: &mut Context<Self>) -> Self::Result {
        let was = self.cfg.status.raw();
        self.cfg.status.update(|s| s.state = NodeState::Stopping);
        let actors: Vec<_> = self.running.values().cloned().collect();
        let store = self.cfg.store.clone();
        let node = self.cfg.node_id.clone();
        let cluster = self.cfg.cluster;
        let fut = async move {
            let graceful =
                futures::future::join_all(actors.iter().map(|a| a.send(Stop { now: false })));
            if tokio::time::timeout(msg.grace, graceful).await.is_err() {
                let now =
                    futures::future::join_all(actors.iter().map(|a| a.send(Stop { now: true })));
                let _ = tokio::time::timeout(Duration::from_secs(2), now).await;
            }
            match cluster {
                // Hand the executions to a live active node (promoting a
                // standby if this was the active one), so a planned stop
                // costs no failover timeout.
                Some(t) if was.state != NodeState::Fenced && was.epoch > 0 => {
                    match store
                        .leave_cluster(
                            &node,
                            was.epoch,
                            t.timeout.as_millis() as i64,
                            t.active_nodes,
                        )
                        .await
                    {
                        Ok(moved) => tracing::info!(node = %node, moved, "left the cluster"),
                        Err(e) => {
                            tracing::warn!(node = %node, error = %e, "could not leave the cluster cleanly")
                        }
                    }
                }
                Some(_) => {}
                None => {
                    let _ = store.set_node_state(&node, "active", "STOPPED").await;
                    let _ = store
                        .record_event("leave", &node, &format!("node {node} left"))
                        .await;
                }
            }
        };
        Box::pin(fut.into_actor(self))
    }
}
