//! The state of one run of an execution and its drive loop: claim, then
//! item after item until the execution ends, parks, or the run is stopped.
//! The loop dispatches over the definition's item kinds to the files of
//! their families and does nothing else per kind.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Recipient;
use futures::future::abortable;
use serde_json::{Map, Value};

use super::{Control, ExecutionSetup, StartKind};
use crate::actions::ActionRegistry;
use crate::error::StoreError;
use crate::messages::{RunOutcome, StartChild};
use crate::metrics::EngineMetrics;
use crate::store::{decode_json, Fence, LogEntry, Store, Wait};
use crate::workflow::script::{Code, Evaluate, ScriptContext, ScriptPool};
use crate::workflow::{Definition, DefinitionCache, Item, ItemKind};

/// What an item did.
pub(super) struct ItemDone {
    pub(super) next: Next,
    /// Signals this item consumes, in its completion transaction.
    pub(super) consume: Vec<i64>,
    pub(super) variables: Map<String, Value>,
    pub(super) outputs: Map<String, Value>,
    pub(super) logs: Vec<String>,
}

/// Where an item leads.
pub(super) enum Next {
    Item(String),
    Park(Wait),
    End { fail: Option<String> },
}

/// Why an item failed, with the log lines it wrote first.
pub(super) struct ItemFailure {
    pub(super) message: String,
    /// The JavaScript error's name (`Error`, `TypeError`, ...) when a
    /// script threw one.
    pub(super) name: Option<String>,
    pub(super) logs: Vec<String>,
    /// The store failed (connection, lock, outage), not the item: the
    /// item runs again after a pause instead of failing.
    pub(super) transient: bool,
}

impl ItemFailure {
    pub(super) fn new(message: impl Into<String>) -> ItemFailure {
        ItemFailure {
            message: message.into(),
            name: None,
            logs: Vec::new(),
            transient: false,
        }
    }

    /// A store error met while running an item: transient unless it is
    /// about the data (missing rows, conflicts, corruption).
    pub(super) fn store(context: &str, e: &StoreError) -> ItemFailure {
        let mut f = ItemFailure::new(if context.is_empty() {
            e.to_string()
        } else {
            format!("{context}: {e}")
        });
        f.transient = matches!(
            e,
            StoreError::Db(_) | StoreError::RuntimeGone | StoreError::CommitUnknown(_)
        );
        f
    }

    /// The same for an engine error (a definition load).
    pub(super) fn engine(e: &crate::error::EngineError) -> ItemFailure {
        match e {
            crate::error::EngineError::Store(s) => ItemFailure::store("", s),
            other => ItemFailure::new(other.to_string()),
        }
    }
}

/// One run of an execution: the row's state as this run knows it.
pub(super) struct Run {
    pub(super) store: Store,
    pub(super) scripts: ScriptPool,
    pub(super) actions: ActionRegistry,
    pub(super) def: Arc<Definition>,
    pub(super) definitions: DefinitionCache,
    pub(super) fence: Fence,
    pub(super) node_epoch: i64,
    pub(super) kind: StartKind,
    pub(super) max_item_starts: u32,
    pub(super) max_depth: u32,
    pub(super) fan_out: u32,
    pub(super) starter: Recipient<StartChild>,
    pub(super) parent: Option<String>,
    pub(super) inputs: Map<String, Value>,
    pub(super) variables: Map<String, Value>,
    pub(super) outputs: Map<String, Value>,
    pub(super) item: String,
    pub(super) step: i64,
    pub(super) attempt: i32,
    /// Retries of the current item after failures (not crashes).
    pub(super) item_retries: i32,
    /// The row's run token as read; the claim moves it forward.
    pub(super) read_token: i64,
    pub(super) wait_until: Option<i64>,
    /// The signals the wake read for this run, until its first signal or
    /// interaction item takes them (see `ExecutionSetup::signals`).
    pub(super) woken_with: std::cell::RefCell<Option<Vec<crate::store::entities::signal::Model>>>,
    pub(super) metrics: Arc<EngineMetrics>,
    pub(super) item_started: Instant,
    /// The type of the item running (`task`, `timer`, ...), for the metrics.
    pub(super) item_type: &'static str,
    /// The current item's start is recorded but it has not begun here: a
    /// graceful stop now hands it off (`Run::hand_off`) instead of leaving
    /// it to look interrupted.
    pub(super) not_begun: bool,
    /// Set when the node stops this run now: retries of a failed store
    /// write end (see `Run::backoff`).
    pub(super) halt: std::rc::Rc<std::cell::Cell<bool>>,
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
    pub(super) fn new(s: ExecutionSetup) -> Result<Run, StoreError> {
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
                run: s.claimed,
                step: None,
            },
            node_epoch: s.node_epoch,
            item_retries: row.item_retries,
            read_token: row.run_token,
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
            woken_with: std::cell::RefCell::new(s.signals),
            store: s.store,
            scripts: s.scripts,
            actions: s.actions,
            def: s.definition,
            definitions: s.definitions,
            kind: s.kind,
            max_item_starts: s.max_item_starts,
            max_depth: s.max_depth,
            fan_out: s.fan_out,
            starter: s.starter,
            parent: row.parent_id.clone(),
            metrics: s.metrics,
            item_started: Instant::now(),
            item_type: "",
            // A woken run's item (a wait) began before it parked.
            not_begun: s.kind != StartKind::Woken,
            halt: Default::default(),
        })
    }

    pub(super) async fn drive(mut self, control: &Control) -> RunOutcome {
        match self.drive_inner(control).await {
            Ok(outcome) | Err(outcome) => outcome,
        }
    }

    async fn drive_inner(&mut self, control: &Control) -> Result<RunOutcome, RunOutcome> {
        // Claimed already when the statement that created or woke the row
        // moved its token (`ExecutionSetup::claimed`).
        if self.fence.run.is_none() && !self.claim().await? {
            return Ok(RunOutcome::Superseded);
        }
        if !matches!(self.kind, StartKind::New | StartKind::Woken) {
            if let Some(outcome) = self.start_again().await? {
                return Ok(outcome);
            }
        }
        // Store failures inside items (a lock, an outage) pause and run the
        // item again; only a long outage stops the run (the node retries
        // the execution later).
        let mut store_failures = 0u32;
        loop {
            if control.cancel.get() {
                return self.cancel().await;
            }
            if control.stop.get() {
                return Ok(self.hand_off().await);
            }
            let Some(item) = self.def.items.get(&self.item).cloned() else {
                let msg = format!(
                    "item `{}` is not in workflow {} version",
                    self.item, self.def.id
                );
                return self.fail(msg, Vec::new()).await;
            };
            self.item_started = Instant::now();
            self.not_begun = false;
            EngineMetrics::inc(&self.metrics.items_started);
            self.item_type = item.kind.type_name();
            self.metrics.item_event(self.item_type, "started");
            let span = tracing::info_span!(
                "item",
                item = %self.item,
                step = self.step,
                attempt = self.attempt,
            );
            tracing::debug!(parent: &span, kind = item.kind.type_name(), "item begins");
            let (fut, handle) =
                abortable(tracing::Instrument::instrument(self.run_item(&item), span));
            *control.current.borrow_mut() = Some(handle);
            let result = fut.await;
            *control.current.borrow_mut() = None;
            let result = match result {
                Ok(r) => r,
                Err(_aborted) if control.stop.get() && control.record_interrupt.get() => {
                    return self.interrupted().await;
                }
                Err(_aborted) => continue,
            };
            let next = match result {
                Err(failure) if failure.transient => {
                    store_failures += 1;
                    if store_failures >= 8 {
                        return Err(RunOutcome::StoreFailed(failure.message));
                    }
                    tracing::warn!(execution = %self.fence.execution, item = %self.item, error = %failure.message, "store failure inside an item; running it again");
                    let mut pause = Duration::from_millis(50u64 << store_failures.min(5));
                    self.backoff(&mut pause).await?;
                    continue;
                }
                Ok(done) => {
                    store_failures = 0;
                    // A cancel or stop that came while the item ran is
                    // seen before the next item, even a plain `end`.
                    let settled = !control.cancel.get() && !control.stop.get();
                    self.complete(done, settled).await?
                }
                Err(failure) => self.item_failed(&item, failure, control).await?,
            };
            if let Some(outcome) = next {
                return Ok(outcome);
            }
        }
    }

    /// Runs one item: the dispatcher over item kinds, nothing else.
    async fn run_item(&self, item: &Item) -> Result<ItemDone, ItemFailure> {
        match &item.kind {
            ItemKind::Task { script, next } => self.task(script, next).await,
            ItemKind::Decision {
                condition,
                then,
                otherwise,
            } => self.decision(condition, then, otherwise).await,
            ItemKind::End { fail } => self.end(fail.as_deref()).await,
            ItemKind::Action {
                action,
                inputs,
                outputs,
                next,
            } => self.action(action, inputs, outputs, next).await,
            ItemKind::Workflow {
                workflow,
                inputs,
                outputs,
                is_async,
                next,
            } => {
                self.child_workflow(workflow, inputs, outputs, *is_async, next)
                    .await
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
                let each = super::children::Foreach {
                    over,
                    element,
                    workflow,
                    inputs,
                    collect,
                    parallel: *parallel,
                    next,
                };
                self.foreach(each).await
            }
            ItemKind::Timer {
                for_ms,
                until,
                next,
            } => self.timer(*for_ms, until.as_deref(), next).await,
            ItemKind::Signal {
                name,
                store,
                timeout_ms,
                next,
            } => self.signal(name, store.as_deref(), *timeout_ms, next).await,
            ItemKind::Interaction {
                timeout_ms, next, ..
            } => self.interaction(*timeout_ms, next).await,
        }
    }

    pub(super) fn completed_item(&self) {
        EngineMetrics::inc(&self.metrics.items_completed);
        self.metrics.item_event(self.item_type, "completed");
        self.metrics
            .item_latency
            .record(self.item_started.elapsed());
    }

    /// An item-log record of this execution.
    pub(super) fn log(
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

    pub(super) fn script_logs(&self, lines: Vec<String>) -> Vec<LogEntry> {
        lines
            .into_iter()
            .map(|l| self.log(&self.item, self.step, self.attempt, "log", Some(l)))
            .collect()
    }

    pub(super) fn script_context(&self) -> ScriptContext {
        ScriptContext {
            execution_id: self.fence.execution.clone(),
            item: self.item.clone(),
            attempt: self.attempt,
            idempotency_key: format!("{}/{}", self.fence.execution, self.item),
            node: self.fence.node.clone(),
        }
    }

    /// Globals for a script: inputs, then outputs, then variables.
    pub(super) fn globals(&self) -> Vec<(String, Value)> {
        let mut g: Vec<(String, Value)> =
            Vec::with_capacity(self.inputs.len() + self.outputs.len() + self.variables.len());
        g.extend(self.inputs.iter().map(|(k, v)| (k.clone(), v.clone())));
        g.extend(self.outputs.iter().map(|(k, v)| (k.clone(), v.clone())));
        g.extend(self.variables.iter().map(|(k, v)| (k.clone(), v.clone())));
        g
    }

    /// Runs script code with this execution's globals (and `extra` ones);
    /// returns the read-back globals, the expression results and the log.
    pub(super) async fn eval(
        &self,
        code: Code,
        read_back: bool,
        extra: Option<(&str, &Value)>,
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
        let mut globals = self.globals();
        if let Some((name, v)) = extra {
            globals.push((name.to_owned(), v.clone()));
        }
        let out = self
            .scripts
            .evaluate(Evaluate {
                globals,
                code,
                read_back,
                context: self.script_context(),
            })
            .await
            .map_err(ItemFailure::from)?;
        Ok((out.values, out.results, out.logs))
    }

    /// Evaluates `(key, expression)` pairs; returns the results by key.
    pub(super) async fn expressions<'a>(
        &self,
        exprs: impl IntoIterator<Item = (&'a String, &'a String)>,
        extra: Option<(&str, &Value)>,
    ) -> Result<(Map<String, Value>, Vec<String>), ItemFailure> {
        let exprs: Vec<(String, String)> = exprs
            .into_iter()
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        if exprs.is_empty() {
            return Ok((Map::new(), Vec::new()));
        }
        let (_, results, logs) = self.eval(Code::Expressions(exprs), false, extra).await?;
        Ok((results, logs))
    }

    /// Assigns `(name, value)` pairs, the one rule for every result that
    /// lands in the execution: a name declared as an output sets the output
    /// (and the variable of the same name, if there is one); any other name
    /// sets a variable.
    pub(super) fn assign(
        &self,
        pairs: impl IntoIterator<Item = (String, Value)>,
    ) -> (Map<String, Value>, Map<String, Value>) {
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

    /// Done: go to `next` with these assignments.
    pub(super) fn advance(
        &self,
        next: &str,
        pairs: impl IntoIterator<Item = (String, Value)>,
        logs: Vec<String>,
    ) -> ItemDone {
        let (variables, outputs) = self.assign(pairs);
        ItemDone {
            consume: Vec::new(),
            next: Next::Item(next.to_owned()),
            variables,
            outputs,
            logs,
        }
    }

    pub(super) async fn db_now(&self) -> Result<i64, ItemFailure> {
        self.store
            .db_now_ms()
            .await
            .map_err(|e| ItemFailure::store("cannot read the database clock", &e))
    }

    /// Done, with nothing assigned.
    pub(super) fn unchanged(&self, next: Next) -> ItemDone {
        ItemDone {
            consume: Vec::new(),
            next,
            variables: self.variables.clone(),
            outputs: self.outputs.clone(),
            logs: Vec::new(),
        }
    }
}

pub(super) use crate::workflow::json_type as type_of;

impl From<crate::workflow::script::ScriptError> for ItemFailure {
    fn from(e: crate::workflow::script::ScriptError) -> ItemFailure {
        use crate::workflow::script::ScriptError;
        match e {
            ScriptError::Thrown { name, message } => ItemFailure {
                message,
                name: Some(name),
                logs: Vec::new(),
                transient: false,
            },
            other => ItemFailure::new(other.to_string()),
        }
    }
}
