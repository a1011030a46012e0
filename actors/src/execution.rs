//! `ExecutionActor`: runs one execution, item by item, on the node that
//! owns it.
//!
//! Invariants it keeps (DESIGN.md):
//! 1. An item's start and attempt number are in the store before the item
//!    runs; its completion (variables, outputs, next item, and the next
//!    item's start) is one transaction, committed before the next item runs.
//! 2. Every write is fenced by owner node and epoch. A refused write stops
//!    the actor at once: it writes nothing more.
//! 7. An item interrupted by a crash runs again with attempt + 1; its
//!    completion is recorded once (a unique index on the item log backs it).
//!
//! It holds no state that the store does not have: on a crash, the next
//! owner rebuilds it from the execution row.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, Recipient, ResponseFuture,
    WrapFuture,
};
use futures::channel::oneshot;
use futures::future::{abortable, AbortHandle};
use serde_json::{json, Map, Value};

use crate::actions::{ActionCall, ActionRegistry};
use crate::error::StoreError;
use crate::messages::{Cancel, ExecutionEnded, RunOutcome, StartChild, Stop};
use crate::metrics::EngineMetrics;
use crate::store::entities::execution;
use crate::store::{decode_json, state, Checkpoint, Fence, LogEntry, Store, Wait};
use crate::workflow::script::{Code, Evaluate, ScriptContext, ScriptPool};
use crate::workflow::{Definition, Item, ItemKind};

/// The item types this engine runs. The others parse but are refused at
/// import until the engine runs them.
pub const SUPPORTED_ITEM_TYPES: &[&str] = &[
    "task",
    "decision",
    "action",
    "workflow",
    "foreach",
    "timer",
    "signal",
    "interaction",
    "end",
];

/// How an execution actor's run begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartKind {
    /// A new execution; its first item's start is already recorded.
    New,
    /// Its current item was interrupted (crash, failover, store failure)
    /// and runs again with attempt + 1, within the poison-pill budget.
    Recovered,
    /// A failed execution resumed by a caller: its failed item runs again
    /// with attempt + 1, whatever the budget.
    Resumed,
    /// A parked execution whose wait is over (due, signaled, timed out):
    /// its waiting item continues with the same attempt.
    Woken,
}

/// Everything an execution actor needs to start.
pub struct ExecutionSetup {
    /// The store.
    pub store: Store,
    /// The script threads.
    pub scripts: ScriptPool,
    /// The node's actions.
    pub actions: ActionRegistry,
    /// The definition version the execution runs.
    pub definition: Arc<Definition>,
    /// The execution row as claimed or created.
    pub row: execution::Model,
    /// This node's id.
    pub node: String,
    /// How this run starts.
    pub kind: StartKind,
    /// Starts of one item without a completion after which the execution
    /// fails instead (the poison-pill budget; crashes and failovers count).
    pub max_item_starts: u32,
    /// How deep workflows may nest (`engine.max_depth`).
    pub max_depth: u32,
    /// Children a parallel `foreach` runs at once (`engine.foreach_parallelism`).
    pub fan_out: u32,
    /// Starts actors for children this execution creates.
    pub starter: Recipient<StartChild>,
    /// Told when the run ends.
    pub supervisor: Recipient<ExecutionEnded>,
    /// The node's counters.
    pub metrics: Arc<EngineMetrics>,
}

#[derive(Default)]
struct Control {
    cancel: Cell<bool>,
    stop: Cell<bool>,
    current: RefCell<Option<AbortHandle>>,
    waiters: RefCell<Vec<oneshot::Sender<()>>>,
}

impl Control {
    fn abort_current(&self) {
        if let Some(h) = self.current.borrow().as_ref() {
            h.abort();
        }
    }
}

/// Runs one execution. See the module documentation.
pub struct ExecutionActor {
    id: String,
    setup: Option<ExecutionSetup>,
    control: Rc<Control>,
    metrics: Arc<EngineMetrics>,
}

impl ExecutionActor {
    /// Creates the actor; it starts running when started.
    pub fn new(setup: ExecutionSetup) -> ExecutionActor {
        ExecutionActor {
            id: setup.row.id.clone(),
            metrics: setup.metrics.clone(),
            setup: Some(setup),
            control: Rc::default(),
        }
    }
}

impl Actor for ExecutionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(setup) = self.setup.take() else {
            return;
        };
        let supervisor = setup.supervisor.clone();
        let control = self.control.clone();
        let id = self.id.clone();
        let fut = async move {
            match Run::new(setup) {
                Ok(run) => run.drive(&control).await,
                Err(e) => RunOutcome::StoreFailed(e.to_string()),
            }
        };
        ctx.spawn(fut.into_actor(self).map(move |outcome, act, ctx| {
            for w in act.control.waiters.borrow_mut().drain(..) {
                let _ = w.send(());
            }
            act.metrics.ended.notify_one();
            supervisor.do_send(ExecutionEnded { id, outcome });
            ctx.stop();
        }));
    }
}

impl Handler<Cancel> for ExecutionActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Cancel, _: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.control.waiters.borrow_mut().push(tx);
        self.control.cancel.set(true);
        self.control.abort_current();
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

impl Handler<Stop> for ExecutionActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Stop, _: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.control.waiters.borrow_mut().push(tx);
        self.control.stop.set(true);
        if msg.now {
            self.control.abort_current();
        }
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

/// What an item did.
struct ItemDone {
    next: Next,
    /// Signals this item consumes, in its completion transaction.
    consume: Vec<i64>,
    variables: Map<String, Value>,
    outputs: Map<String, Value>,
    logs: Vec<String>,
}

enum Next {
    Item(String),
    Park(Wait),
    End { fail: Option<String> },
}

struct ItemFailure {
    message: String,
    logs: Vec<String>,
}

impl ItemFailure {
    fn new(message: impl Into<String>) -> ItemFailure {
        ItemFailure {
            message: message.into(),
            logs: Vec::new(),
        }
    }
}

struct Run {
    store: Store,
    scripts: ScriptPool,
    actions: ActionRegistry,
    def: Arc<Definition>,
    fence: Fence,
    kind: StartKind,
    max_item_starts: u32,
    max_depth: u32,
    fan_out: u32,
    starter: Recipient<StartChild>,
    parent: Option<String>,
    inputs: Map<String, Value>,
    variables: Map<String, Value>,
    outputs: Map<String, Value>,
    item: String,
    step: i64,
    attempt: i32,
    wait_until: Option<i64>,
    metrics: Arc<EngineMetrics>,
    item_started: Instant,
}

fn object(what: &str, text: &str) -> Result<Map<String, Value>, StoreError> {
    match decode_json(what, text)? {
        Value::Object(m) => Ok(m),
        Value::Null => Ok(Map::new()),
        other => Err(StoreError::Corrupt {
            what: what.to_owned(),
            reason: format!("expected an object, found {other}"),
        }),
    }
}

impl Run {
    fn new(s: ExecutionSetup) -> Result<Run, StoreError> {
        let row = s.row;
        let mut outputs = match &row.outputs {
            Some(text) => object("outputs", text)?,
            None => Map::new(),
        };
        for name in s.definition.outputs.keys() {
            outputs.entry(name.clone()).or_insert(Value::Null);
        }
        Ok(Run {
            fence: Fence {
                execution: row.id.clone(),
                node: s.node,
                epoch: row.owner_epoch,
            },
            inputs: object("inputs", &row.inputs)?,
            variables: object("variables", &row.variables)?,
            outputs,
            item: row
                .current_item
                .clone()
                .unwrap_or_else(|| s.definition.start.clone()),
            step: row.step,
            attempt: row.attempt,
            wait_until: row.wait_until,
            store: s.store,
            scripts: s.scripts,
            actions: s.actions,
            def: s.definition,
            kind: s.kind,
            max_item_starts: s.max_item_starts,
            max_depth: s.max_depth,
            fan_out: s.fan_out,
            starter: s.starter,
            parent: row.parent_id.clone(),
            metrics: s.metrics,
            item_started: Instant::now(),
        })
    }

    fn completed_item(&self) {
        EngineMetrics::inc(&self.metrics.items_completed);
        self.metrics
            .item_latency
            .record(self.item_started.elapsed());
    }

    fn log(
        &self,
        item: &str,
        step: i64,
        attempt: i32,
        event: &'static str,
        message: Option<String>,
    ) -> LogEntry {
        LogEntry {
            item: item.to_owned(),
            step,
            attempt,
            event,
            message,
        }
    }

    fn script_logs(&self, lines: Vec<String>) -> Vec<LogEntry> {
        lines
            .into_iter()
            .map(|l| self.log(&self.item, self.step, self.attempt, "log", Some(l)))
            .collect()
    }

    /// Writes `cp`, retrying transient store failures. A refused (fenced)
    /// write is returned at once and never retried.
    async fn write(&self, cp: Checkpoint) -> Result<(), RunOutcome> {
        let mut delay = Duration::from_millis(50);
        let mut tries = 0;
        loop {
            match self.store.checkpoint(&self.fence, cp.clone()).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_ownership_lost() => {
                    EngineMetrics::inc(&self.metrics.ownership_lost);
                    tracing::warn!(execution = %self.fence.execution, node = %self.fence.node, epoch = self.fence.epoch, "ownership lost; stopping");
                    return Err(RunOutcome::OwnershipLost);
                }
                Err(StoreError::Db(e)) if crate::store::is_unique_violation(&e) && tries > 0 => {
                    // An earlier try committed and only its answer was lost:
                    // the completion record of this step is already there.
                    return Ok(());
                }
                Err(e) => {
                    tries += 1;
                    if tries >= 8 {
                        tracing::error!(execution = %self.fence.execution, error = %e, "checkpoint failed; giving up for now");
                        return Err(RunOutcome::StoreFailed(e.to_string()));
                    }
                    tracing::warn!(execution = %self.fence.execution, error = %e, "checkpoint failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    async fn drive(mut self, control: &Control) -> RunOutcome {
        match self.drive_inner(control).await {
            Ok(outcome) | Err(outcome) => outcome,
        }
    }

    async fn drive_inner(&mut self, control: &Control) -> Result<RunOutcome, RunOutcome> {
        if !matches!(self.kind, StartKind::New | StartKind::Woken) {
            self.attempt += 1;
            if self.kind == StartKind::Recovered && self.attempt > self.max_item_starts as i32 {
                let message = format!(
                    "item `{}` was started {} times without completing (engine.max_item_starts = {}); \
                     failing the execution instead of running it again",
                    self.item,
                    self.attempt - 1,
                    self.max_item_starts
                );
                return self.fail(message, Vec::new()).await;
            }
            let msg = match self.kind {
                StartKind::Resumed => format!(
                    "resumed by request on node {} (epoch {})",
                    self.fence.node, self.fence.epoch
                ),
                _ => format!(
                    "resumed on node {} (epoch {})",
                    self.fence.node, self.fence.epoch
                ),
            };
            let logs = vec![
                self.log(&self.item, self.step, self.attempt, "resumed", Some(msg)),
                self.log(&self.item, self.step, self.attempt, "started", None),
            ];
            self.write(Checkpoint {
                attempt: Some(self.attempt),
                logs,
                ..Default::default()
            })
            .await?;
        }
        loop {
            if control.cancel.get() {
                return self.cancel().await;
            }
            if control.stop.get() {
                return Ok(RunOutcome::Stopped);
            }
            let Some(item) = self.def.items.get(&self.item).cloned() else {
                let msg = format!(
                    "item `{}` is not in workflow {} version",
                    self.item, self.def.id
                );
                return self.fail(msg, Vec::new()).await;
            };
            self.item_started = Instant::now();
            let (fut, handle) = abortable(self.run_item(&item));
            *control.current.borrow_mut() = Some(handle);
            let result = fut.await;
            *control.current.borrow_mut() = None;
            let result = match result {
                Ok(r) => r,
                Err(_aborted) => continue,
            };
            match result {
                Ok(done) => {
                    if let Some(outcome) = self.complete(&item, done).await? {
                        return Ok(outcome);
                    }
                }
                Err(failure) => {
                    if let Some(outcome) = self.item_failed(&item, failure, control).await? {
                        return Ok(outcome);
                    }
                }
            }
        }
    }

    async fn cancel(&self) -> Result<RunOutcome, RunOutcome> {
        self.write(Checkpoint {
            state: Some(state::CANCELED),
            ended: true,
            notify_parent: self.parent.clone(),
            logs: vec![self.log(
                &self.item,
                self.step,
                self.attempt,
                "log",
                Some("execution canceled".into()),
            )],
            ..Default::default()
        })
        .await?;
        EngineMetrics::inc(&self.metrics.executions_canceled);
        Ok(RunOutcome::Canceled)
    }

    async fn fail(
        &self,
        message: String,
        mut logs: Vec<LogEntry>,
    ) -> Result<RunOutcome, RunOutcome> {
        logs.push(self.log(
            &self.item,
            self.step,
            self.attempt,
            "failed",
            Some(message.clone()),
        ));
        self.write(Checkpoint {
            state: Some(state::FAILED),
            error: Some(Some(message)),
            ended: true,
            logs,
            clear_wait: true,
            notify_parent: self.parent.clone(),
            ..Default::default()
        })
        .await?;
        EngineMetrics::inc(&self.metrics.executions_failed);
        Ok(RunOutcome::Finished(state::FAILED))
    }

    /// Records an item's completion and the next item's start in one
    /// transaction; at an `end` item, finishes the execution.
    async fn complete(
        &mut self,
        item: &Item,
        done: ItemDone,
    ) -> Result<Option<RunOutcome>, RunOutcome> {
        let mut logs = self.script_logs(done.logs);
        match done.next {
            Next::Item(next) => {
                let next_step = self.step + 1;
                logs.push(self.log(&self.item, self.step, self.attempt, "completed", None));
                logs.push(self.log(&next, next_step, 1, "started", None));
                self.write(Checkpoint {
                    variables: Some(Value::Object(done.variables.clone())),
                    outputs: Some(Value::Object(done.outputs.clone())),
                    current_item: Some(Some(next.clone())),
                    step: Some(next_step),
                    attempt: Some(1),
                    logs,
                    clear_wait: true,
                    consume_signals: done.consume,
                    ..Default::default()
                })
                .await?;
                self.completed_item();
                self.wait_until = None;
                self.variables = done.variables;
                self.outputs = done.outputs;
                self.item = next;
                self.step = next_step;
                self.attempt = 1;
                Ok(None)
            }
            Next::Park(wait) => {
                // Park: the row says what it waits for; no actor is held.
                self.write(Checkpoint {
                    wait: Some(wait),
                    logs,
                    ..Default::default()
                })
                .await?;
                Ok(Some(RunOutcome::Parked))
            }
            Next::End {
                fail: Some(message),
            } => {
                let _ = item;
                self.fail(message, logs).await.map(Some)
            }
            Next::End { fail: None } => {
                let mut problems = Vec::new();
                for (name, ty) in &self.def.outputs {
                    let v = done.outputs.get(name).unwrap_or(&Value::Null);
                    if !ty.accepts(v) {
                        problems.push(format!(
                            "output `{name}` must be {}, got {}",
                            ty.name(),
                            type_of(v)
                        ));
                    }
                }
                if !problems.is_empty() {
                    return self.fail(problems.join("; "), logs).await.map(Some);
                }
                logs.push(self.log(&self.item, self.step, self.attempt, "completed", None));
                self.write(Checkpoint {
                    variables: Some(Value::Object(done.variables)),
                    outputs: Some(Value::Object(done.outputs)),
                    current_item: Some(None),
                    state: Some(state::COMPLETED),
                    ended: true,
                    notify_parent: self.parent.clone(),
                    logs,
                    ..Default::default()
                })
                .await?;
                self.completed_item();
                EngineMetrics::inc(&self.metrics.executions_completed);
                Ok(Some(RunOutcome::Finished(state::COMPLETED)))
            }
        }
    }

    /// Retries the item, hands the error to an `on_error` item, or fails
    /// the execution.
    async fn item_failed(
        &mut self,
        item: &Item,
        failure: ItemFailure,
        control: &Control,
    ) -> Result<Option<RunOutcome>, RunOutcome> {
        EngineMetrics::inc(&self.metrics.items_failed);
        let mut logs = self.script_logs(failure.logs);
        let message = failure.message;
        if let Some(retry) = item
            .retry
            .as_ref()
            .filter(|r| self.attempt < r.max_attempts as i32)
        {
            let next_attempt = self.attempt + 1;
            let exp = (next_attempt - 2).clamp(0, 20) as u32;
            let backoff = retry.backoff_ms.saturating_mul(1u64 << exp);
            logs.push(self.log(&self.item, self.step, self.attempt, "failed", Some(message)));
            logs.push(self.log(&self.item, self.step, next_attempt, "started", None));
            // The backoff parks the execution like a timer (no actor held),
            // except on wait items, whose own deadline uses the same column.
            let parkable = !matches!(
                item.kind,
                ItemKind::Timer { .. } | ItemKind::Signal { .. } | ItemKind::Interaction { .. }
            );
            let due = match (parkable && backoff > 0, self.store.db_now_ms().await) {
                (true, Ok(now)) => {
                    Some(now.saturating_add(i64::try_from(backoff).unwrap_or(i64::MAX)))
                }
                _ => None,
            };
            self.write(Checkpoint {
                attempt: Some(next_attempt),
                logs,
                wait: due.map(|until| Wait {
                    state: state::WAITING,
                    until: Some(until),
                    signal: None,
                }),
                ..Default::default()
            })
            .await?;
            self.attempt = next_attempt;
            if due.is_some() {
                return Ok(Some(RunOutcome::Parked));
            }
            let (sleep, handle) = abortable(tokio::time::sleep(Duration::from_millis(backoff)));
            *control.current.borrow_mut() = Some(handle);
            let _ = sleep.await;
            *control.current.borrow_mut() = None;
            return Ok(None);
        }
        let handler = item
            .on_error
            .clone()
            .or_else(|| self.def.on_error.clone().filter(|h| *h != self.item));
        if let Some(handler) = handler {
            let next_step = self.step + 1;
            let mut variables = self.variables.clone();
            variables.insert(
                "error".into(),
                json!({ "message": message, "item": self.item, "attempt": self.attempt }),
            );
            logs.push(self.log(&self.item, self.step, self.attempt, "failed", Some(message)));
            logs.push(self.log(&handler, next_step, 1, "started", None));
            self.write(Checkpoint {
                variables: Some(Value::Object(variables.clone())),
                current_item: Some(Some(handler.clone())),
                step: Some(next_step),
                attempt: Some(1),
                logs,
                clear_wait: true,
                ..Default::default()
            })
            .await?;
            self.wait_until = None;
            self.variables = variables;
            self.item = handler;
            self.step = next_step;
            self.attempt = 1;
            return Ok(None);
        }
        self.fail(message, logs).await.map(Some)
    }

    fn script_context(&self) -> ScriptContext {
        ScriptContext {
            execution_id: self.fence.execution.clone(),
            item: self.item.clone(),
            attempt: self.attempt,
            idempotency_key: format!("{}/{}", self.fence.execution, self.item),
        }
    }

    /// Globals for a script: inputs, then outputs, then variables.
    fn globals(&self) -> Vec<(String, Value)> {
        let mut g: Vec<(String, Value)> =
            Vec::with_capacity(self.inputs.len() + self.outputs.len() + self.variables.len());
        g.extend(self.inputs.iter().map(|(k, v)| (k.clone(), v.clone())));
        g.extend(self.outputs.iter().map(|(k, v)| (k.clone(), v.clone())));
        g.extend(self.variables.iter().map(|(k, v)| (k.clone(), v.clone())));
        g
    }

    async fn eval(
        &self,
        code: Code,
        read_back: bool,
    ) -> Result<(Map<String, Value>, Map<String, Value>, Vec<String>), ItemFailure> {
        let read_back = if read_back {
            self.variables
                .keys()
                .chain(self.outputs.keys())
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        let out = self
            .scripts
            .evaluate(Evaluate {
                globals: self.globals(),
                code,
                read_back,
                context: self.script_context(),
            })
            .await
            .map_err(|e| ItemFailure::new(e.to_string()))?;
        Ok((out.values, out.results, out.logs))
    }

    /// A child's id: the same for every run of the same item step, so a
    /// re-run after a crash finds the child instead of starting another.
    fn child_id(&self, index: usize) -> String {
        use sha2::{Digest, Sha256};
        let digest =
            Sha256::digest(format!("{}/{}/{index}", self.fence.execution, self.step).as_bytes());
        let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        format!("c{hex}")
    }

    /// How deep this execution is nested (1: no parent).
    async fn depth(&self) -> Result<u32, ItemFailure> {
        let mut depth = 1;
        let mut parent = self.parent.clone();
        while let Some(id) = parent {
            depth += 1;
            if depth > self.max_depth {
                break;
            }
            parent = self
                .store
                .execution(&id)
                .await
                .map_err(|e| ItemFailure::new(format!("cannot read execution {id}: {e}")))?
                .and_then(|r| r.parent_id);
        }
        Ok(depth)
    }

    /// Evaluates a child's `inputs` mapping; `element` binds a foreach
    /// element under its `as` name.
    async fn child_inputs(
        &self,
        inputs: &std::collections::BTreeMap<String, String>,
        element: Option<(&str, &Value)>,
    ) -> Result<Map<String, Value>, ItemFailure> {
        if inputs.is_empty() {
            return Ok(Map::new());
        }
        let mut globals = self.globals();
        if let Some((name, v)) = element {
            globals.push((name.to_owned(), v.clone()));
        }
        let out = self
            .scripts
            .evaluate(Evaluate {
                globals,
                code: Code::Expressions(
                    inputs.iter().map(|(k, e)| (k.clone(), e.clone())).collect(),
                ),
                read_back: Vec::new(),
                context: self.script_context(),
            })
            .await
            .map_err(|e| ItemFailure::new(e.to_string()))?;
        Ok(out.results)
    }

    /// Creates a child execution (nothing if it exists) and has this node
    /// run it.
    async fn create_child(
        &self,
        id: String,
        workflow: &str,
        inputs: Map<String, Value>,
    ) -> Result<(), ItemFailure> {
        let fail = |m: String| ItemFailure::new(m);
        if self.depth().await? >= self.max_depth {
            return Err(fail(format!(
                "workflows nest deeper than {} levels (engine.max_depth); not starting {workflow}",
                self.max_depth
            )));
        }
        let summary = self
            .store
            .workflow_summary(workflow)
            .await
            .map_err(|e| fail(e.to_string()))?
            .ok_or_else(|| fail(format!("no workflow `{workflow}`")))?;
        let def = crate::supervisor::load_definition(&self.store, &summary.id, summary.version)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let inputs = Value::Object(inputs);
        let problems = crate::workflow::check_inputs(&def, &inputs);
        if !problems.is_empty() {
            let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
            return Err(fail(format!(
                "inputs of workflow {workflow}: {}",
                text.join("; ")
            )));
        }
        let outcome = self
            .store
            .create_execution(crate::store::NewExecution {
                id,
                workflow_id: summary.id,
                workflow_version: summary.version,
                parent_id: Some(self.fence.execution.clone()),
                inputs,
                variables: Value::Object(def.variables.clone()),
                start_item: def.start.clone(),
                owner_node: self.fence.node.clone(),
            })
            .await
            .map_err(|e| fail(e.to_string()))?;
        if let crate::store::StartOutcome::Created(row) = outcome {
            self.starter.do_send(StartChild { row });
        }
        Ok(())
    }

    /// Assigns `(variable, value)` pairs: to outputs when declared there
    /// (and to the variable of the same name if there is one), otherwise
    /// to variables.
    fn assign(&self, pairs: Vec<(String, Value)>) -> (Map<String, Value>, Map<String, Value>) {
        let (mut variables, mut outputs) = (self.variables.clone(), self.outputs.clone());
        for (var, v) in pairs {
            if outputs.contains_key(&var) {
                outputs.insert(var.clone(), v.clone());
                if variables.contains_key(&var) {
                    variables.insert(var, v);
                }
            } else {
                variables.insert(var, v);
            }
        }
        (variables, outputs)
    }

    fn parked_on_children(&self, consume: Vec<i64>) -> ItemDone {
        let mut done = self.unchanged(Next::Park(Wait {
            state: state::WAITING_SIGNAL,
            until: None,
            signal: Some(crate::store::CHILD_DONE.to_owned()),
        }));
        done.consume = consume;
        done
    }

    async fn db_now(&self) -> Result<i64, ItemFailure> {
        self.store
            .db_now_ms()
            .await
            .map_err(|e| ItemFailure::new(format!("cannot read the database clock: {e}")))
    }

    fn unchanged(&self, next: Next) -> ItemDone {
        ItemDone {
            consume: Vec::new(),
            next,
            variables: self.variables.clone(),
            outputs: self.outputs.clone(),
            logs: Vec::new(),
        }
    }

    /// A signal or interaction item: completes with the oldest pending
    /// signal of `name` (consumed in the completion transaction), fails
    /// when its timeout has passed, and parks otherwise.
    async fn await_signal(
        &self,
        name: &str,
        timeout_ms: Option<u64>,
        next: &str,
        apply: impl FnOnce(&Run, Value) -> (Map<String, Value>, Map<String, Value>),
    ) -> Result<ItemDone, ItemFailure> {
        let pending = self
            .store
            .pending_signal(&self.fence.execution, name)
            .await
            .map_err(|e| ItemFailure::new(format!("cannot read signals: {e}")))?;
        if let Some(sig) = pending {
            let payload: Value = serde_json::from_str(&sig.payload).unwrap_or(Value::Null);
            let (variables, outputs) = apply(self, payload);
            return Ok(ItemDone {
                consume: vec![sig.id],
                next: Next::Item(next.to_owned()),
                variables,
                outputs,
                logs: Vec::new(),
            });
        }
        let now = self.db_now().await?;
        let until = self.wait_until.or_else(|| {
            timeout_ms.map(|t| now.saturating_add(i64::try_from(t).unwrap_or(i64::MAX)))
        });
        if let Some(due) = until {
            if due <= now {
                let what = if name == crate::store::INTERACTION {
                    "interaction".to_owned()
                } else {
                    format!("signal `{name}`")
                };
                return Err(ItemFailure::new(format!(
                    "{what} timed out after {} ms",
                    timeout_ms.unwrap_or_default()
                )));
            }
        }
        Ok(self.unchanged(Next::Park(Wait {
            state: state::WAITING_SIGNAL,
            until,
            signal: Some(name.to_owned()),
        })))
    }

    async fn run_item(&self, item: &Item) -> Result<ItemDone, ItemFailure> {
        match &item.kind {
            ItemKind::Task { script, next } => {
                let (values, _, logs) = self.eval(Code::Statements(script.clone()), true).await?;
                let (mut variables, mut outputs) = (self.variables.clone(), self.outputs.clone());
                for (k, v) in values {
                    if let Some(slot) = variables.get_mut(&k) {
                        *slot = v.clone();
                    }
                    if let Some(slot) = outputs.get_mut(&k) {
                        *slot = v;
                    }
                }
                Ok(ItemDone {
                    consume: Vec::new(),
                    next: Next::Item(next.clone()),
                    variables,
                    outputs,
                    logs,
                })
            }
            ItemKind::Decision {
                condition,
                then,
                otherwise,
            } => {
                let expr = vec![("c".to_owned(), format!("!!({condition}\n)"))];
                let (_, results, logs) = self.eval(Code::Expressions(expr), false).await?;
                let truthy = results.get("c").and_then(Value::as_bool).unwrap_or(false);
                Ok(ItemDone {
                    consume: Vec::new(),
                    next: Next::Item(if truthy {
                        then.clone()
                    } else {
                        otherwise.clone()
                    }),
                    variables: self.variables.clone(),
                    outputs: self.outputs.clone(),
                    logs,
                })
            }
            ItemKind::Action {
                action,
                inputs,
                outputs: mapping,
                next,
            } => {
                let mut logs = Vec::new();
                let params = if inputs.is_empty() {
                    Map::new()
                } else {
                    let exprs = inputs.iter().map(|(k, e)| (k.clone(), e.clone())).collect();
                    let (_, results, l) = self.eval(Code::Expressions(exprs), false).await?;
                    logs = l;
                    results
                };
                let call = ActionCall::new(&self.fence.execution, &self.item, self.attempt, params);
                let result = if action == crate::http_action::NAME {
                    crate::http_action::call(&call).await
                } else {
                    self.actions.call(action, call.clone()).await
                };
                logs.extend(call.take_logs());
                let result = result.map_err(|message| ItemFailure {
                    message: format!("action `{action}` failed: {message}"),
                    logs: logs.clone(),
                })?;
                let (mut variables, mut outputs) = (self.variables.clone(), self.outputs.clone());
                for (var, field) in mapping {
                    let v = match field.as_str() {
                        "" | "." => result.clone(),
                        f => result.get(f).cloned().unwrap_or(Value::Null),
                    };
                    if outputs.contains_key(var) {
                        outputs.insert(var.clone(), v.clone());
                        if variables.contains_key(var) {
                            variables.insert(var.clone(), v);
                        }
                    } else {
                        variables.insert(var.clone(), v);
                    }
                }
                Ok(ItemDone {
                    consume: Vec::new(),
                    next: Next::Item(next.clone()),
                    variables,
                    outputs,
                    logs,
                })
            }
            ItemKind::End { fail } => {
                let (fail, logs) = match fail {
                    Some(expr) => {
                        let (_, results, logs) = self
                            .eval(Code::Expressions(vec![("m".into(), expr.clone())]), false)
                            .await?;
                        let message = match results.get("m") {
                            Some(Value::String(s)) => s.clone(),
                            Some(Value::Null) | None => "workflow failed".to_owned(),
                            Some(other) => other.to_string(),
                        };
                        (Some(message), logs)
                    }
                    None => (None, Vec::new()),
                };
                Ok(ItemDone {
                    consume: Vec::new(),
                    next: Next::End { fail },
                    variables: self.variables.clone(),
                    outputs: self.outputs.clone(),
                    logs,
                })
            }
            ItemKind::Workflow {
                workflow,
                inputs,
                outputs: mapping,
                is_async,
                next,
            } => {
                let store_err = |e: crate::error::StoreError| ItemFailure::new(e.to_string());
                // Pokes first: one that arrives after this read stays pending
                // and wakes the parent again.
                let pokes = self
                    .store
                    .pending_signal_ids(&self.fence.execution, crate::store::CHILD_DONE)
                    .await
                    .map_err(store_err)?;
                let cid = self.child_id(0);
                let child = self.store.execution(&cid).await.map_err(store_err)?;
                if child.is_none() {
                    let ins = self.child_inputs(inputs, None).await?;
                    self.create_child(cid.clone(), workflow, ins).await?;
                }
                let pick = |outputs: &Value| -> Vec<(String, Value)> {
                    mapping
                        .iter()
                        .map(|(var, field)| {
                            let v = if field == "execution_id" {
                                Value::String(cid.clone())
                            } else {
                                outputs.get(field).cloned().unwrap_or(Value::Null)
                            };
                            (var.clone(), v)
                        })
                        .collect()
                };
                if *is_async {
                    let (variables, outputs) = self.assign(pick(&Value::Null));
                    return Ok(ItemDone {
                        consume: pokes,
                        next: Next::Item(next.clone()),
                        variables,
                        outputs,
                        logs: Vec::new(),
                    });
                }
                match child.as_ref().map(|c| c.state.as_str()) {
                    Some(state::COMPLETED) => {
                        let c = child
                            .as_ref()
                            .and_then(|c| c.outputs.clone())
                            .unwrap_or_default();
                        let outs: Value = serde_json::from_str(&c).unwrap_or(Value::Null);
                        let (variables, outputs) = self.assign(pick(&outs));
                        Ok(ItemDone {
                            consume: pokes,
                            next: Next::Item(next.clone()),
                            variables,
                            outputs,
                            logs: Vec::new(),
                        })
                    }
                    Some(s @ (state::FAILED | state::CANCELED)) => Err(ItemFailure::new(format!(
                        "child workflow {workflow} ({cid}) {s}: {}",
                        child
                            .as_ref()
                            .and_then(|c| c.error.clone())
                            .unwrap_or_default()
                    ))),
                    _ => Ok(self.parked_on_children(pokes)),
                }
            }
            ItemKind::Foreach {
                over,
                element,
                workflow,
                inputs,
                collect,
                parallel,
                next,
            } => {
                let store_err = |e: crate::error::StoreError| ItemFailure::new(e.to_string());
                let list = match self.variables.get(over).or_else(|| self.inputs.get(over)) {
                    Some(Value::Array(a)) => a.clone(),
                    other => {
                        return Err(ItemFailure::new(format!(
                            "foreach over `{over}`: expected an array, found {}",
                            type_of(other.unwrap_or(&Value::Null))
                        )))
                    }
                };
                let pokes = self
                    .store
                    .pending_signal_ids(&self.fence.execution, crate::store::CHILD_DONE)
                    .await
                    .map_err(store_err)?;
                let ids: Vec<String> = (0..list.len()).map(|i| self.child_id(i)).collect();
                let rows: std::collections::HashMap<
                    String,
                    crate::store::entities::execution::Model,
                > = self
                    .store
                    .executions_by_id(ids.clone())
                    .await
                    .map_err(store_err)?
                    .into_iter()
                    .map(|r| (r.id.clone(), r))
                    .collect();
                for (i, id) in ids.iter().enumerate() {
                    if let Some(r) = rows
                        .get(id)
                        .filter(|r| r.state == state::FAILED || r.state == state::CANCELED)
                    {
                        return Err(ItemFailure::new(format!(
                            "foreach element {i}: child workflow {workflow} ({id}) {}: {}",
                            r.state,
                            r.error.clone().unwrap_or_default()
                        )));
                    }
                }
                let completed = ids
                    .iter()
                    .filter(|id| rows.get(*id).is_some_and(|r| r.state == state::COMPLETED))
                    .count();
                if completed == ids.len() {
                    let outs: Vec<Value> = ids
                        .iter()
                        .map(|id| {
                            let text = rows
                                .get(id)
                                .and_then(|r| r.outputs.clone())
                                .unwrap_or_default();
                            serde_json::from_str(&text).unwrap_or(Value::Null)
                        })
                        .collect();
                    let pairs = collect
                        .iter()
                        .map(|(var, field)| {
                            (
                                var.clone(),
                                Value::Array(
                                    outs.iter()
                                        .map(|o| o.get(field).cloned().unwrap_or(Value::Null))
                                        .collect(),
                                ),
                            )
                        })
                        .collect();
                    let (variables, outputs) = self.assign(pairs);
                    return Ok(ItemDone {
                        consume: pokes,
                        next: Next::Item(next.clone()),
                        variables,
                        outputs,
                        logs: Vec::new(),
                    });
                }
                let in_flight = ids
                    .iter()
                    .filter(|id| rows.get(*id).is_some_and(|r| r.state != state::COMPLETED))
                    .count();
                let limit = if *parallel {
                    self.fan_out.max(1) as usize
                } else {
                    1
                };
                let mut free = limit.saturating_sub(in_flight);
                for (i, id) in ids.iter().enumerate() {
                    if free == 0 {
                        break;
                    }
                    if !rows.contains_key(id) {
                        let ins = self
                            .child_inputs(inputs, Some((element.as_str(), &list[i])))
                            .await?;
                        self.create_child(id.clone(), workflow, ins).await?;
                        free -= 1;
                    }
                }
                Ok(self.parked_on_children(pokes))
            }
            ItemKind::Timer {
                for_ms,
                until,
                next,
            } => {
                let now = self.db_now().await?;
                let due = match (self.wait_until, for_ms, until) {
                    (Some(due), _, _) => due,
                    (None, Some(ms), _) => {
                        now.saturating_add(i64::try_from(*ms).unwrap_or(i64::MAX))
                    }
                    (None, None, Some(expr)) => {
                        let (_, results, _) = self
                            .eval(Code::Expressions(vec![("t".into(), expr.clone())]), false)
                            .await?;
                        let text = results
                            .get("t")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned();
                        chrono::DateTime::parse_from_rfc3339(&text)
                            .map_err(|e| {
                                ItemFailure::new(format!(
                                    "timer: `until` gave `{text}`, not an ISO 8601 time: {e}"
                                ))
                            })?
                            .timestamp_millis()
                    }
                    (None, None, None) => {
                        return Err(ItemFailure::new("timer needs `for_ms` or `until`"))
                    }
                };
                let next = if due <= now {
                    Next::Item(next.clone())
                } else {
                    Next::Park(Wait {
                        state: state::WAITING,
                        until: Some(due),
                        signal: None,
                    })
                };
                Ok(self.unchanged(next))
            }
            ItemKind::Signal {
                name,
                store: var,
                timeout_ms,
                next,
            } => {
                self.await_signal(name, *timeout_ms, next, |run, payload| {
                    let mut variables = run.variables.clone();
                    let mut outputs = run.outputs.clone();
                    if let Some(var) = var {
                        if outputs.contains_key(var) {
                            outputs.insert(var.clone(), payload.clone());
                        }
                        if !outputs.contains_key(var) || variables.contains_key(var) {
                            variables.insert(var.clone(), payload);
                        }
                    }
                    (variables, outputs)
                })
                .await
            }
            ItemKind::Interaction {
                timeout_ms, next, ..
            } => {
                self.await_signal(
                    crate::store::INTERACTION,
                    *timeout_ms,
                    next,
                    |run, payload| {
                        let mut variables = run.variables.clone();
                        let mut outputs = run.outputs.clone();
                        if let Value::Object(answer) = payload {
                            for (k, v) in answer {
                                if outputs.contains_key(&k) {
                                    outputs.insert(k.clone(), v.clone());
                                }
                                if !outputs.contains_key(&k) || variables.contains_key(&k) {
                                    variables.insert(k, v);
                                }
                            }
                        }
                        (variables, outputs)
                    },
                )
                .await
            }
        }
    }
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
