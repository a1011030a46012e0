use crate::messages::NodeRole;
use std::time::Duration;

use actix::{
    ActorFutureExt, AsyncContext, Context, Handler, Message, ResponseActFuture, WrapFuture,
};
use serde_json::Value;

use super::NodeSupervisor;
use crate::admission::{Admission, Admitted};
use crate::error::EngineError;
use crate::execution::StartKind;
use crate::messages::{Cancel, NodeState, Stop};
use crate::store::entities::execution;
use crate::store::Store;
use crate::store::{
    state, Checkpoint, ExecutionState, Fence, LogEntry, NewExecution, StartOutcome,
};
use crate::workflow::{check_inputs, Problem};
use crate::workflow::{Current, DefinitionCache};
use std::sync::Arc;

impl Handler<crate::messages::StartChild> for NodeSupervisor {
    type Result = ();

    fn handle(&mut self, msg: crate::messages::StartChild, ctx: &mut Context<Self>) {
        let store = self.cfg.store.clone();
        let cache = self.cfg.definitions.clone();
        let row = msg.row;
        let fut = async move {
            let def = cache
                .get(&store, &row.workflow_id, row.workflow_version)
                .await?;
            Ok::<_, EngineError>((def, row))
        };
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| match result {
            Ok((def, row)) if act.state() == NodeState::Running => {
                act.spawn_execution(ctx, def, row, StartKind::New);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot start a child execution (it will be resumed later)"),
        }));
    }
}
/// A new execution id: a UUIDv7, whose text sorts by creation time, so
/// that new rows go to the end of the primary key index (compact B-trees
/// on InnoDB and PostgreSQL) and ids of one moment sit together.
pub(crate) fn new_execution_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Starts a new execution of a workflow's current version.
///
/// Admission (`engine.max_running`): a message that brings no slot takes a
/// free one or, when none is free, is refused as `overloaded` at once (a
/// repeat of an existing `execution_id` needs none). A caller that may wait
/// for a slot goes through [`Starter`], which waits in its own task.
#[derive(Debug, Message)]
#[rtype(result = "Result<(execution::Model, bool), EngineError>")]
pub struct StartExecution {
    /// The workflow.
    pub workflow_id: String,
    /// Its inputs.
    pub inputs: Value,
    /// A caller-chosen id: repeating it starts nothing new.
    pub execution_id: Option<String>,
    /// What the caller was admitted with; `None`: a free slot now or refused.
    pub admitted: Option<Admitted>,
}

/// The workflow a start names, at its current version (as last read, or
/// read now when `reread`), with the inputs checked against it: 404 and
/// 400 come before any wait for a slot. Inputs refused by a version not
/// read just now are checked again on a fresh read (another node may have
/// replaced the workflow with one that takes them).
async fn resolve(
    store: &Store,
    cache: &DefinitionCache,
    workflow_id: &str,
    inputs: &Value,
    reread: bool,
) -> Result<Current, EngineError> {
    let mut current = cache.current(store, workflow_id, reread).await?;
    loop {
        let problems: Vec<Problem> = check_inputs(&current.def, inputs);
        if problems.is_empty() {
            return Ok(current);
        }
        if current.fresh {
            return Err(EngineError::InvalidInputs(problems));
        }
        current = cache.current(store, workflow_id, true).await?;
    }
}

/// Starts executions as a client does (the HTTP API, an embedding
/// program): when no slot under `engine.max_running` is free, the request
/// is checked, then waits for one here, in the caller's task, for up to
/// `engine.start_wait_ms` (waiting in the supervisor's context would be
/// polled on every one of its messages), and is refused as `overloaded`
/// if none comes.
#[derive(Clone)]
pub struct Starter {
    /// The node's supervisor.
    pub supervisor: actix::Addr<NodeSupervisor>,
    /// Its slots.
    pub admission: Arc<Admission>,
    /// The store (a waiting repeat is answered from it).
    pub store: Store,
    /// The definitions (a waiting start is checked first).
    pub definitions: DefinitionCache,
}

impl Starter {
    /// Starts an execution; see [`StartExecution`]. True when it was created.
    pub async fn start(
        &self,
        workflow_id: String,
        inputs: Value,
        execution_id: Option<String>,
    ) -> Result<(execution::Model, bool), EngineError> {
        let admitted = match self.admission.try_slot() {
            Some(slot) => Admitted::Slot(slot),
            None => {
                // Read now, not remembered: a deleted workflow or inputs
                // its current version refuses answer 404 or 400 before
                // the wait, not `overloaded` after it.
                resolve(&self.store, &self.definitions, &workflow_id, &inputs, true).await?;
                self.admission
                    .admit(&self.store, execution_id.as_deref())
                    .await?
            }
        };
        self.supervisor
            .send(StartExecution {
                workflow_id,
                inputs,
                execution_id,
                admitted: Some(admitted),
            })
            .await?
    }
}

impl Handler<StartExecution> for NodeSupervisor {
    type Result = ResponseActFuture<Self, Result<(execution::Model, bool), EngineError>>;

    fn handle(&mut self, msg: StartExecution, _: &mut Context<Self>) -> Self::Result {
        let id = msg.execution_id.clone().unwrap_or_else(new_execution_id);
        let fresh = self.pending.insert(id.clone());
        // The lease-checked view: a node past its heartbeat lease takes no work.
        let node_epoch = self.cfg.status.raw().epoch;
        let state = self.cfg.status.get().state;
        let store = self.cfg.store.clone();
        let node = self.cfg.node_id.clone();
        let cache = self.cfg.definitions.clone();
        let pending_id = id.clone();
        let admission = self.cfg.admission.clone();
        let fut = async move {
            if state != NodeState::Running {
                return Err(EngineError::NotAccepting(format!(
                    "node is {}",
                    state.as_str()
                )));
            }
            let mut current = resolve(&store, &cache, &msg.workflow_id, &msg.inputs, false).await?;
            let admitted = match msg.admitted {
                Some(admitted) => admitted,
                None => {
                    admission
                        .admit_within(&store, msg.execution_id.as_deref(), Duration::ZERO)
                        .await?
                }
            };
            let slot = match admitted {
                Admitted::Slot(slot) => Some(slot),
                Admitted::Repeat => None,
            };
            let outcome = loop {
                let def = &current.def;
                let created = store
                    .create_execution(NewExecution {
                        id: id.clone(),
                        workflow_id: def.id.clone(),
                        workflow_version: current.version,
                        parent_id: None,
                        inputs: msg.inputs.clone(),
                        variables: Value::Object(def.variables.clone()),
                        start_item: def.start.clone(),
                        owner_node: node.clone(),
                        node_epoch: Some(node_epoch),
                        expect_current: !current.fresh,
                    })
                    .await;
                match created {
                    // The version this node remembered was replaced (or
                    // the workflow deleted) by another node since: start
                    // again on what is stored now, checked again.
                    Err(crate::error::StoreError::NotCurrent { .. }) if !current.fresh => {
                        cache.forget_current(&msg.workflow_id);
                        current =
                            resolve(&store, &cache, &msg.workflow_id, &msg.inputs, true).await?;
                    }
                    // The node was declared dead or restarted since: it is
                    // not accepting work, whatever its status cell says.
                    Err(crate::error::StoreError::Conflict(m)) => {
                        return Err(EngineError::NotAccepting(m))
                    }
                    Err(other) => return Err(other.into()),
                    Ok(outcome) => break outcome,
                }
            };
            let def = current.def;
            Ok((def, outcome, slot))
        };
        Box::pin(fut.into_actor(self).map(move |result, act, ctx| {
            if fresh {
                act.pending.remove(&pending_id);
            }
            let (def, outcome, slot) = result?;
            match outcome {
                StartOutcome::Created(row) => {
                    // The insert claimed its first run: nothing could read
                    // the row before it existed, and `pending` kept the
                    // rescan off it until now (only this request's own
                    // entry: a repeat of the id that raced it claims).
                    let token = fresh.then_some(row.run_token);
                    let prepared = super::Prepared {
                        claimed: token,
                        signals: None,
                    };
                    act.spawn_run(ctx, def, row.clone(), StartKind::New, prepared, slot);
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
            let parked = row.state == state::WAITING || row.state == state::WAITING_SIGNAL;
            let mine = row.owner_node.as_deref() == Some(node.as_str());
            if !mine && !parked && row.state != state::FAILED {
                // Running on another node: ask its owner, whose periodic
                // rescan cancels it (accepted; the row says when it is done).
                store.request_cancel(&row.id).await?;
                return Ok(row);
            }
            // No actor runs it (parked and failed executions hold none on
            // any node): a write fenced by the owner and epoch just read,
            // refused if either moved since; a parked execution of another
            // node only while it is still parked.
            let fence = Fence {
                execution: row.id.clone(),
                node: row.owner_node.clone().unwrap_or_default(),
                epoch: row.owner_epoch,
                run: None,
                step: None,
            };
            let log = LogEntry {
                item: row.current_item.clone().unwrap_or_default(),
                step: row.step,
                attempt: row.attempt,
                event: "log",
                message: Some(format!("execution canceled (by node {node})")),
            };
            if row.state == state::FAILED {
                store.cancel_failed(&fence, log).await?;
            } else {
                // A waiting parent hears of it in the same transaction
                // (invariant 12), as when its actor cancels it.
                store
                    .checkpoint(
                        &fence,
                        Checkpoint {
                            state: Some(ExecutionState::Canceled),
                            ended: true,
                            logs: vec![log],
                            notify_parent: row.parent_id.clone(),
                            only_if_parked: !mine,
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
        let cfg_defs = self.cfg.definitions.clone();
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
            let def = cfg_defs
                .get(&store, &row.workflow_id, row.workflow_version)
                .await?;
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
            act.spawn_execution(ctx, def, row.clone(), StartKind::Resumed);
            Ok(row)
        }))
    }
}

/// Stops the node's executions gracefully (a drain, DESIGN.md invariant
/// 11): each stops after its current item; items still running after
/// `grace` are aborted and recorded as interrupted (they run again,
/// attempt + 1, on the next owner). In cluster mode the node keeps
/// heartbeating throughout, then hands its executions off in one
/// transaction (`leave_cluster`), so a drain never becomes a failover.
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
            let graceful = futures::future::join_all(actors.iter().map(|a| {
                a.send(Stop {
                    now: false,
                    record: false,
                })
            }));
            if tokio::time::timeout(msg.grace, graceful).await.is_err() {
                let now = futures::future::join_all(actors.iter().map(|a| {
                    a.send(Stop {
                        now: true,
                        record: true,
                    })
                }));
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
                    let _ = store
                        .set_node_state(
                            &node,
                            NodeRole::Active.as_str(),
                            crate::store::node_state::STOPPED,
                        )
                        .await;
                    let _ = store
                        .record_event("leave", &node, &format!("node {node} left"))
                        .await;
                }
            }
        };
        Box::pin(fut.into_actor(self))
    }
}

/// An operator evicts a node: handed to this node's failover detector, so
/// an eviction and a detected failure share one takeover path.
#[derive(Debug, Message)]
#[rtype(result = "Result<crate::store::Takeover, EngineError>")]
pub struct EvictNode {
    /// The node to evict.
    pub id: String,
}

impl Handler<EvictNode> for NodeSupervisor {
    type Result = ResponseActFuture<Self, Result<crate::store::Takeover, EngineError>>;

    fn handle(&mut self, msg: EvictNode, _: &mut Context<Self>) -> Self::Result {
        let detector = self.detector.clone();
        Box::pin(
            async move {
                let Some(detector) = detector else {
                    return Err(EngineError::Conflict(
                        "this node is standalone: there is no cluster to evict a node from".into(),
                    ));
                };
                detector
                    .send(crate::failover::Evict { node: msg.id })
                    .await?
            }
            .into_actor(self),
        )
    }
}

/// Delivers a named signal to an execution (kept until awaited) and wakes
/// it at once if this node owns it and it waits for that signal.
/// Resolves to whether the execution was waiting for it.
#[derive(Debug, Message)]
#[rtype(result = "Result<bool, EngineError>")]
pub struct DeliverSignal {
    /// The execution.
    pub id: String,
    /// The signal's name.
    pub name: String,
    /// Its payload.
    pub payload: Value,
}

impl Handler<DeliverSignal> for NodeSupervisor {
    type Result = ResponseActFuture<Self, Result<bool, EngineError>>;

    fn handle(&mut self, msg: DeliverSignal, _: &mut Context<Self>) -> Self::Result {
        let store = self.cfg.store.clone();
        let node = self.cfg.node_id.clone();
        let fut = async move {
            let row = store
                .execution(&msg.id)
                .await?
                .ok_or_else(|| EngineError::ExecutionNotFound(msg.id.clone()))?;
            if !state::UNFINISHED.contains(&row.state.as_str()) {
                return Err(EngineError::Conflict(format!(
                    "execution {} is {}; it takes no more signals",
                    row.id, row.state
                )));
            }
            store
                .insert_signal(&msg.id, &msg.name, &msg.payload)
                .await?;
            let waiting = row.state == state::WAITING_SIGNAL
                && row.wait_signal.as_deref() == Some(msg.name.as_str());
            Ok((
                waiting,
                waiting && row.owner_node.as_deref() == Some(node.as_str()),
            ))
        };
        Box::pin(fut.into_actor(self).map(|result, act, ctx| {
            let (waiting, wake_here) = result?;
            if wake_here {
                act.wake_due(ctx);
            }
            Ok(waiting)
        }))
    }
}

/// Takes an answer to the interaction an execution waits on at `step`,
/// once (DESIGN.md invariant 13), and wakes it if this node owns it.
/// Resolves to whether the answer was taken.
#[derive(Debug, Message)]
#[rtype(result = "Result<bool, EngineError>")]
pub struct AnswerInteraction {
    /// The execution.
    pub id: String,
    /// The step of the interaction item the answer was validated for.
    pub step: i64,
    /// The answer.
    pub answer: Value,
}

impl Handler<AnswerInteraction> for NodeSupervisor {
    type Result = ResponseActFuture<Self, Result<bool, EngineError>>;

    fn handle(&mut self, msg: AnswerInteraction, _: &mut Context<Self>) -> Self::Result {
        let store = self.cfg.store.clone();
        let node = self.cfg.node_id.clone();
        let fut = async move {
            let taken = store
                .answer_interaction(&msg.id, msg.step, &msg.answer)
                .await?;
            let mine = taken
                && store
                    .execution(&msg.id)
                    .await?
                    .is_some_and(|r| r.owner_node.as_deref() == Some(node.as_str()));
            Ok::<_, EngineError>((taken, mine))
        };
        Box::pin(fut.into_actor(self).map(|result, act, ctx| {
            let (taken, mine) = result?;
            if mine {
                act.wake_due(ctx);
            }
            Ok(taken)
        }))
    }
}
