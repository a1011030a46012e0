//! `ExecutionActor`: runs one execution, item by item, on the node that
//! owns it.
//!
//! Invariants it keeps (DESIGN.md), each with the test that proves it:
//! - 1, checkpoint before moving on: an item's start and attempt are in the
//!   store before it runs; its completion and the next item's start are one
//!   transaction (`durable`; `crash::*`, `engine::*::restart_resumes_only_the_interrupted_item`).
//! - 2, every write fenced: a refused write stops the run at once
//!   (`durable::Run::write`; `engine::*::fenced_write_refused_after_epoch_bump_stops_the_actor`,
//!   `cluster::*::a_paused_zombie_fences_itself_and_writes_nothing`).
//! - 7, at-least-once items, one completion record: an interrupted item
//!   runs again with attempt + 1 (`durable::Run::start_again`; `cluster::*::kill_dash_nine_*`).
//! - 10, one run at a time: a run starts by claiming the row (compare-and-set
//!   on run token, step and attempt) and every write is fenced by its token
//!   (`durable::Run::claim`; `claims::*`).
//! - 11, a drain is not a failure: an item aborted at the drain bound is
//!   recorded interrupted (`durable::Run::interrupted`;
//!   `cluster::*::sigterm_during_a_long_item_drains_without_a_failover`).
//! - 12, every end reaches the parent: completion, failure and cancel tell a
//!   waiting parent in the same transaction (`durable`; `nested::*`).
//!
//! It holds no state that the store does not have: on a crash, the next
//! owner rebuilds it from the execution row.
//!
//! # Layout
//! - this file: the actor shell (start, `Cancel`, `Stop`)
//! - `run`: the run's state and the drive loop, dispatching over item kinds
//! - `durable`: durable transitions (write with retry, complete, fail, cancel, retry)
//! - `scripts`: `task`, `decision` and `end` items
//! - `actions`: `action` items
//! - `children`: `workflow` and `foreach` items
//! - `waits`: `timer`, `signal` and `interaction` items

mod actions;
mod children;
mod durable;
mod run;
mod scripts;
mod waits;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, Recipient, ResponseFuture,
    WrapFuture,
};
use futures::channel::oneshot;
use futures::future::AbortHandle;
use tracing::Instrument as _;

use crate::actions::ActionRegistry;
use crate::messages::{Cancel, ExecutionEnded, RunOutcome, StartChild, Stop};
use crate::metrics::EngineMetrics;
use crate::store::entities::execution;
use crate::store::Store;
use crate::workflow::script::ScriptPool;
use crate::workflow::{Definition, DefinitionCache};

pub use crate::workflow::SUPPORTED_ITEM_TYPES;

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
    /// The node's definition cache (children's definitions load through it).
    pub definitions: DefinitionCache,
    /// The definition version the execution runs.
    pub definition: Arc<Definition>,
    /// The execution row as claimed or created.
    pub row: execution::Model,
    /// This node's id.
    pub node: String,
    /// This node's epoch: children are created only while the node's row
    /// is still running at it.
    pub node_epoch: i64,
    /// How this run starts.
    pub kind: StartKind,
    /// The run token this run already holds, when the statement that
    /// created or woke the row claimed it (the row's `run_token`); `None`:
    /// the run claims the token it read first (DESIGN.md invariant 10).
    pub claimed: Option<i64>,
    /// The execution's unconsumed signals, oldest first, as read by the
    /// wake that started this run (one read for the wake's whole batch);
    /// `None`: not read. The first signal or interaction item the run
    /// reaches takes its signal from them, and reads the store only when
    /// they hold none of its name (one may have arrived since).
    pub signals: Option<Vec<crate::store::entities::signal::Model>>,
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

/// What the actor shares with its run: cancel and stop requests, and the
/// abort handle of the item in flight.
#[derive(Default)]
struct Control {
    cancel: Cell<bool>,
    stop: Cell<bool>,
    /// The item in flight was aborted by a drain: record it as interrupted.
    record_interrupt: Cell<bool>,
    current: RefCell<Option<AbortHandle>>,
    waiters: RefCell<Vec<oneshot::Sender<()>>>,
    /// Stopped now (the node fenced itself or its drain lost its lease):
    /// a store write being retried gives up instead of trying again.
    halt: Rc<Cell<bool>>,
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
    /// This run's place under `engine.max_running`, given back when the
    /// actor is dropped (the run ended or parked).
    _slot: Option<crate::admission::Slot>,
}

impl ExecutionActor {
    /// Creates the actor; it starts running when started.
    pub fn new(setup: ExecutionSetup) -> ExecutionActor {
        ExecutionActor {
            id: setup.row.id.clone(),
            metrics: setup.metrics.clone(),
            setup: Some(setup),
            control: Rc::default(),
            _slot: None,
        }
    }

    /// Holds `slot` (see [`crate::admission`]) until the actor is dropped.
    pub fn holding(mut self, slot: crate::admission::Slot) -> ExecutionActor {
        self._slot = Some(slot);
        self
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
        // Every line of this run carries the execution, its workflow, the
        // node and the epoch it owns it under; item lines add the item and
        // attempt (`Run::drive`). A failover shows as the same execution
        // with another node and a higher epoch.
        let span = tracing::info_span!(
            "execution",
            execution = %id,
            workflow = %setup.definition.id,
            node = %setup.node,
            epoch = setup.row.owner_epoch,
        );
        let fut = async move {
            match run::Run::new(setup) {
                Ok(mut run) => {
                    run.halt = control.halt.clone();
                    run.drive(&control).await
                }
                Err(e) => RunOutcome::StoreFailed(e.to_string()),
            }
        }
        .instrument(span);
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
            // Fenced (nothing recorded): no store write is tried again. A
            // drain past its bound still records the item interrupted.
            self.control.halt.set(!msg.record);
            self.control.record_interrupt.set(msg.record);
            self.control.abort_current();
        }
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}
