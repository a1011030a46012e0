//! Executions and the item log. Every write on an existing execution row is
//! a fenced update (`Store::checkpoint`); creation and claiming are the only
//! other writes, and claiming always moves the epoch forward.

use super::writes::Writes;
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, FromQueryResult, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait,
};
use serde_json::Value;

use super::entities::{execution, item_log, node, workflow};
use super::{is_unique_violation, state, ExecutionState, Store};
use crate::error::StoreError;

/// Who may write an execution row: its id, owner node and owner epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    /// The execution.
    pub execution: String,
    /// The owner node.
    pub node: String,
    /// The owner epoch.
    pub epoch: i64,
    /// The run token this run claimed (`Store::claim_run`); `None` for
    /// writes made without a run (a cancel of a parked execution).
    pub run: Option<i64>,
    /// The step the row must still be at: the run's last committed step.
    /// A row that went backwards (commits the database acknowledged and
    /// then lost: a failover with asynchronous replication, a restore)
    /// refuses the write like a lost ownership, the run stops, and the
    /// owner's rescan resumes the execution from the row as it now is,
    /// so no item is skipped. `None`: not checked.
    pub step: Option<i64>,
}

/// One record for the item log; the node is the writer's.
#[derive(Clone, Debug)]
pub struct LogEntry {
    /// The item's key in the definition.
    pub item: String,
    /// The execution's step number for this item run.
    pub step: i64,
    /// The attempt number.
    pub attempt: i32,
    /// `started`, `completed`, `failed`, `resumed` or `log`.
    pub event: &'static str,
    /// Free text.
    pub message: Option<String>,
}

/// A fenced write on an execution: the columns to set and the item-log
/// records to append, committed in one transaction.
#[derive(Clone, Debug, Default)]
pub struct Checkpoint {
    /// New variables.
    pub variables: Option<Value>,
    /// New outputs.
    pub outputs: Option<Value>,
    /// New current item (`Some(None)` clears it).
    pub current_item: Option<Option<String>>,
    /// New step number.
    pub step: Option<i64>,
    /// New attempt number.
    pub attempt: Option<i32>,
    /// New count of retries of the current item after failures.
    pub item_retries: Option<i32>,
    /// New state.
    pub state: Option<ExecutionState>,
    /// New error (`Some(None)` clears it).
    pub error: Option<Option<String>>,
    /// Stamp `ended_at` with the database clock.
    pub ended: bool,
    /// Item-log records to append.
    pub logs: Vec<LogEntry>,
    /// Park the execution on this wait (no actor is held while it waits).
    pub wait: Option<Wait>,
    /// Clear the wait columns: the item that waited is done.
    pub clear_wait: bool,
    /// Mark these signals consumed in the same transaction.
    pub consume_signals: Vec<i64>,
    /// This execution's parent, told (a `__child` signal, in the same
    /// transaction) that a child has finished.
    pub notify_parent: Option<String>,
    /// Write only while the execution is parked (`waiting` or
    /// `waiting-signal`): no actor runs it anywhere.
    pub only_if_parked: bool,
}

/// What a parked execution waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wait {
    /// `waiting` (a timer) or `waiting-signal` (a signal or an interaction).
    pub state: ExecutionState,
    /// When it is due (a timer) or times out, in ms on the database clock.
    pub until: Option<i64>,
    /// The awaited signal's name.
    pub signal: Option<String>,
}

/// What a new execution starts with.
#[derive(Clone, Debug)]
pub struct NewExecution {
    /// Its id.
    pub id: String,
    /// The definition it runs.
    pub workflow_id: String,
    /// The definition's version.
    pub workflow_version: i64,
    /// The execution that started it, if any.
    pub parent_id: Option<String>,
    /// Its inputs.
    pub inputs: Value,
    /// Its variables at the start.
    pub variables: Value,
    /// The first item.
    pub start_item: String,
    /// The node that accepted it and owns it.
    pub owner_node: String,
    /// The owner node's epoch when it accepted it: the node's row must
    /// still be `RUNNING` at that epoch when the execution is created (a
    /// node declared dead or restarted since creates nothing). `None`:
    /// unchecked (tools and tests).
    pub node_epoch: Option<i64>,
    /// Write it only if `workflow_version` is still the workflow's current
    /// version when the start commits ([`StoreError::NotCurrent`]
    /// otherwise, nothing written): a start that took the version from
    /// its node's memory instead of reading it (`DefinitionCache::current`)
    /// starts no stale version after another node replaced the workflow.
    /// `false`: unchecked (the caller read the version itself).
    pub expect_current: bool,
}

/// The result of [`Store::create_execution`].
#[derive(Clone, Debug)]
pub enum StartOutcome {
    /// A new row was written.
    Created(execution::Model),
    /// An execution with that id already existed; nothing was written.
    Existing(execution::Model),
}

fn to_text(v: &Value) -> String {
    v.to_string()
}

impl Store {
    /// Inserts a new execution, owned by `new.owner_node` at epoch 1, with
    /// its first item recorded as started (attempt 1) in the same
    /// transaction, if the owner node is still running at `new.node_epoch`
    /// ([`StoreError::Conflict`] otherwise). An existing id returns the
    /// stored execution unchanged. Starts made at the same moment share
    /// one transaction (group commit, see `starts`).
    pub async fn create_execution(&self, new: NewExecution) -> Result<StartOutcome, StoreError> {
        self.starter().submit(new).await
    }

    /// Applies `cp` to the execution if, and only if, `fence` still owns it.
    ///
    /// The fenced `UPDATE` and the item-log records commit in one
    /// transaction, shared with other executions' checkpoints queued at the
    /// same moment (group commit, see `batch`). Zero rows updated means
    /// ownership was lost: nothing of this checkpoint is written and
    /// [`StoreError::OwnershipLost`] is returned.
    pub async fn checkpoint(&self, fence: &Fence, cp: Checkpoint) -> Result<(), StoreError> {
        self.batcher().submit(fence.clone(), cp).await
    }

    /// Hands an item that has not begun back to the next owner, as a
    /// graceful stop does between items: the row's attempt goes back one
    /// (the next owner's run is this attempt again, not a retry) and this
    /// node's `started`/`resumed` records of it become `handed-off`, in one
    /// transaction fenced like any write of the run. `false`: the fence no
    /// longer holds and nothing was written.
    pub async fn hand_off(
        &self,
        fence: &Fence,
        step: i64,
        attempt: i32,
        message: String,
    ) -> Result<bool, StoreError> {
        let fence = fence.clone();
        self.db()
            .run(move |c| async move {
                let txn = crate::store::begin(&c).await?;
                let moved = execution::Entity::update_many()
                    .col_expr(execution::Column::Attempt, Expr::value(attempt - 1))
                    .col_expr(
                        execution::Column::UpdatedAt,
                        Store::now_expr(txn.get_database_backend()),
                    )
                    .filter(execution::Column::Id.eq(fence.execution.as_str()))
                    .filter(execution::Column::OwnerNode.eq(fence.node.as_str()))
                    .filter(execution::Column::OwnerEpoch.eq(fence.epoch))
                    .apply_if(fence.run, |q, run| {
                        q.filter(execution::Column::RunToken.eq(run))
                    })
                    .filter(execution::Column::State.eq(state::RUNNING))
                    .filter(execution::Column::Step.eq(step))
                    .filter(execution::Column::Attempt.eq(attempt))
                    .exec(&txn)
                    .await?;
                if moved.rows_affected != 1 {
                    txn.rollback().await?;
                    return Ok(false);
                }
                item_log::Entity::update_many()
                    .col_expr(item_log::Column::Event, Expr::value("handed-off"))
                    .col_expr(item_log::Column::Message, Expr::value(message))
                    .filter(item_log::Column::ExecutionId.eq(fence.execution.as_str()))
                    .filter(item_log::Column::Step.eq(step))
                    .filter(item_log::Column::Attempt.eq(attempt))
                    .filter(item_log::Column::Event.is_in(["started", "resumed"]))
                    .exec(&txn)
                    .await?;
                txn.commit().await?;
                Ok(true)
            })
            .await
    }

    /// Claims a run of a `running` execution (DESIGN.md invariant 10): a
    /// compare-and-set that moves the row's run token forward only if the
    /// row still has the owner, epoch, token, step and attempt that were
    /// read. A row read before someone else's claim, wake or progress
    /// fails it. Returns the token the run now holds (every write of the
    /// run is fenced by it), or `None` when the claim lost.
    pub async fn claim_run(
        &self,
        fence: &Fence,
        read_token: i64,
        step: i64,
        attempt: i32,
    ) -> Result<Option<i64>, StoreError> {
        let backend = self.backend();
        let fence = fence.clone();
        self.db()
            .run(move |c| async move {
                let r = execution::Entity::update_many()
                    .col_expr(
                        execution::Column::RunToken,
                        Expr::col(execution::Column::RunToken).add(1),
                    )
                    .col_expr(execution::Column::UpdatedAt, Store::now_expr(backend))
                    .filter(execution::Column::Id.eq(fence.execution.as_str()))
                    .filter(execution::Column::OwnerNode.eq(fence.node.as_str()))
                    .filter(execution::Column::OwnerEpoch.eq(fence.epoch))
                    .filter(execution::Column::State.eq(state::RUNNING))
                    .filter(execution::Column::RunToken.eq(read_token))
                    .filter(execution::Column::Step.eq(step))
                    .filter(execution::Column::Attempt.eq(attempt))
                    .exec(&c)
                    .await?;
                Ok((r.rows_affected == 1).then_some(read_token + 1))
            })
            .await
    }

    /// Cancels a failed execution (which no actor runs), fenced like every
    /// write: refused if `fence` no longer owns it or it is not `failed`.
    pub async fn cancel_failed(&self, fence: &Fence, log: LogEntry) -> Result<(), StoreError> {
        let backend = self.backend();
        let fence = fence.clone();
        self.db()
            .run(move |c| async move {
                let now = Store::now_expr(backend);
                let txn = crate::store::begin(&c).await?;
                let r = execution::Entity::update_many()
                    .col_expr(execution::Column::State, Expr::value(state::CANCELED))
                    .col_expr(execution::Column::UpdatedAt, now.clone())
                    .col_expr(execution::Column::EndedAt, now)
                    .filter(execution::Column::Id.eq(fence.execution.as_str()))
                    .filter(execution::Column::OwnerNode.eq(fence.node.as_str()))
                    .filter(execution::Column::OwnerEpoch.eq(fence.epoch))
                    .filter(execution::Column::State.eq(state::FAILED))
                    .exec(&txn)
                    .await?;
                if r.rows_affected == 0 {
                    txn.rollback().await?;
                    return Err(StoreError::OwnershipLost {
                        execution: fence.execution.clone(),
                        node: fence.node.clone(),
                        epoch: fence.epoch,
                    });
                }
                insert_logs(&txn, backend, &fence.execution, &fence.node, &[log]).await?;
                txn.commit().await?;
                Ok(())
            })
            .await
    }

    /// Reopens a failed execution for `node` to run again from its failed
    /// item: state `running`, error cleared, `variables` replaced when
    /// given, and ownership taken under a new epoch (no actor runs a failed
    /// execution anywhere, so taking it fences nothing that runs). Returns
    /// the row, or `None` if it was not failed any more.
    pub async fn reopen_failed(
        &self,
        id: &str,
        node: &str,
        variables: Option<Value>,
    ) -> Result<Option<execution::Model>, StoreError> {
        let backend = self.backend();
        let key = id.to_owned();
        let (id, node) = (id.to_owned(), node.to_owned());
        let updated = self
            .db()
            .run(move |c| async move {
                let mut update = execution::Entity::update_many()
                    .col_expr(execution::Column::State, Expr::value(state::RUNNING))
                    .col_expr(
                        execution::Column::Error,
                        Expr::value(Option::<String>::None),
                    )
                    .col_expr(execution::Column::EndedAt, Expr::value(Option::<i64>::None))
                    .col_expr(execution::Column::OwnerNode, Expr::value(node.as_str()))
                    .col_expr(
                        execution::Column::OwnerEpoch,
                        Expr::col(execution::Column::OwnerEpoch).add(1),
                    )
                    .col_expr(
                        execution::Column::RunToken,
                        Expr::col(execution::Column::RunToken).add(1),
                    )
                    .col_expr(execution::Column::UpdatedAt, Store::now_expr(backend));
                if let Some(v) = &variables {
                    update = update.col_expr(execution::Column::Variables, Expr::value(to_text(v)));
                }
                // Under the retention lock: a purge that found it failed
                // cannot delete it once it runs again.
                let txn = crate::store::begin(&c).await?;
                super::retention::retention_lock(&txn).await?;
                let r = update
                    .filter(execution::Column::Id.eq(id.as_str()))
                    .filter(execution::Column::State.eq(state::FAILED))
                    .exec(&txn)
                    .await?;
                txn.commit().await?;
                Ok(r.rows_affected == 1)
            })
            .await?;
        if !updated {
            return Ok(None);
        }
        self.execution(&key).await
    }

    /// Takes ownership of unfinished executions for `node`, moving each
    /// one's epoch forward so that any previous owner's writes are refused
    /// from now on. With `from_node`, only that node's executions are taken;
    /// without, every unfinished execution (standalone mode: this node is
    /// the only one). Returns the executions `node` now owns in state
    /// `running`.
    pub async fn claim_unfinished(
        &self,
        node: &str,
        from_node: Option<&str>,
    ) -> Result<Vec<execution::Model>, StoreError> {
        let backend = self.backend();
        let node = node.to_owned();
        let from = from_node.map(str::to_owned);
        self.db()
            .run(move |c| async move {
                let now = Store::now_expr(backend);
                let mut update = execution::Entity::update_many()
                    .col_expr(execution::Column::OwnerNode, Expr::value(node.clone()))
                    .col_expr(
                        execution::Column::OwnerEpoch,
                        Expr::col(execution::Column::OwnerEpoch).add(1),
                    )
                    .col_expr(execution::Column::UpdatedAt, now)
                    .filter(execution::Column::State.is_in(state::UNFINISHED));
                if let Some(from) = &from {
                    update = update.filter(execution::Column::OwnerNode.eq(from.as_str()));
                }
                update.exec(&c).await?;
                let rows = execution::Entity::find()
                    .filter(execution::Column::OwnerNode.eq(node.as_str()))
                    .filter(execution::Column::State.eq(state::RUNNING))
                    .order_by_asc(execution::Column::CreatedAt)
                    .all(&c)
                    .await?;
                Ok(rows)
            })
            .await
    }

    /// One execution.
    pub async fn execution(&self, id: &str) -> Result<Option<execution::Model>, StoreError> {
        let id = id.to_owned();
        self.db()
            .run(move |c| async move { Ok(execution::Entity::find_by_id(id).one(&c).await?) })
            .await
    }

    /// The item log of one execution, oldest first.
    pub async fn item_log(&self, execution_id: &str) -> Result<Vec<item_log::Model>, StoreError> {
        let id = execution_id.to_owned();
        self.db()
            .run(move |c| async move {
                Ok(item_log::Entity::find()
                    .filter(item_log::Column::ExecutionId.eq(id))
                    .order_by_asc(item_log::Column::Id)
                    .all(&c)
                    .await?)
            })
            .await
    }
}

/// The fenced `UPDATE` of one checkpoint; returns the rows it touched
/// (0: ownership lost).
pub(super) async fn fenced_update<W: Writes>(
    txn: &W,
    backend: sea_orm::DbBackend,
    fence: &Fence,
    cp: &Checkpoint,
) -> Result<u64, sea_orm::DbErr> {
    let now = Store::now_expr(backend);
    let mut update =
        execution::Entity::update_many().col_expr(execution::Column::UpdatedAt, now.clone());
    if let Some(v) = &cp.variables {
        update = update.col_expr(execution::Column::Variables, Expr::value(to_text(v)));
    }
    if let Some(v) = &cp.outputs {
        update = update.col_expr(execution::Column::Outputs, Expr::value(to_text(v)));
    }
    if let Some(v) = &cp.current_item {
        update = update.col_expr(execution::Column::CurrentItem, Expr::value(v.clone()));
    }
    if let Some(v) = cp.step {
        update = update.col_expr(execution::Column::Step, Expr::value(v));
    }
    if let Some(v) = cp.attempt {
        update = update.col_expr(execution::Column::Attempt, Expr::value(v));
    }
    if let Some(v) = cp.item_retries {
        update = update.col_expr(execution::Column::ItemRetries, Expr::value(v));
    }
    if let Some(v) = cp.state {
        update = update.col_expr(execution::Column::State, Expr::value(v.as_str()));
    }
    if let Some(v) = &cp.error {
        update = update.col_expr(execution::Column::Error, Expr::value(v.clone()));
    }
    if cp.ended {
        update = update.col_expr(execution::Column::EndedAt, now);
    }
    if let Some(w) = &cp.wait {
        update = update
            .col_expr(execution::Column::State, Expr::value(w.state.as_str()))
            .col_expr(execution::Column::WaitUntil, Expr::value(w.until))
            .col_expr(execution::Column::WaitSignal, Expr::value(w.signal.clone()));
    } else if cp.clear_wait {
        update = update
            .col_expr(
                execution::Column::WaitUntil,
                Expr::value(Option::<i64>::None),
            )
            .col_expr(
                execution::Column::WaitSignal,
                Expr::value(Option::<String>::None),
            );
    }
    // A finished execution is never written again by its actor: a stale
    // actor (or adoption scan) cannot reopen it.
    let states: &[&str] = if cp.only_if_parked {
        &[state::WAITING, state::WAITING_SIGNAL]
    } else {
        &state::UNFINISHED
    };
    let stmt = update
        .filter(execution::Column::Id.eq(fence.execution.as_str()))
        .filter(execution::Column::OwnerNode.eq(fence.node.as_str()))
        .filter(execution::Column::OwnerEpoch.eq(fence.epoch))
        .apply_if(fence.run, |q, run| {
            q.filter(execution::Column::RunToken.eq(run))
        })
        .apply_if(fence.step, |q, step| {
            q.filter(execution::Column::Step.eq(step))
        })
        .filter(execution::Column::State.is_in(states.iter().copied()))
        .build(backend);
    txn.exec(stmt).await
}

/// Appends item-log records of one execution inside `txn`.
async fn insert_logs(
    txn: &DatabaseTransaction,
    backend: sea_orm::DbBackend,
    execution_id: &str,
    node: &str,
    logs: &[LogEntry],
) -> Result<(), StoreError> {
    let rows: Vec<(&str, &str, &LogEntry)> = logs.iter().map(|l| (execution_id, node, l)).collect();
    insert_log_rows(txn, backend, &rows).await?;
    Ok(())
}

/// Appends item-log records (execution, node, record) inside `txn`, in one
/// statement, stamped with the database clock. A `completed` record
/// carries its step in `completed_step`, whose unique index refuses a
/// second completion of the same step.
pub(super) async fn insert_log_rows<W: Writes>(
    txn: &W,
    backend: sea_orm::DbBackend,
    rows: &[(&str, &str, &LogEntry)],
) -> Result<(), sea_orm::DbErr> {
    if rows.is_empty() {
        return Ok(());
    }
    let now = Store::now_expr(backend);
    let mut insert = Query::insert()
        .into_table(item_log::Entity)
        .columns([
            item_log::Column::ExecutionId,
            item_log::Column::Item,
            item_log::Column::Step,
            item_log::Column::Attempt,
            item_log::Column::Event,
            item_log::Column::Node,
            item_log::Column::Time,
            item_log::Column::Message,
            item_log::Column::CompletedStep,
        ])
        .to_owned();
    for (execution_id, node, log) in rows {
        let completed = (log.event == "completed").then_some(log.step);
        insert.values_panic([
            Expr::value(*execution_id),
            Expr::value(log.item.as_str()),
            Expr::value(log.step),
            Expr::value(log.attempt),
            Expr::value(log.event),
            Expr::value(*node),
            now.clone(),
            Expr::value(log.message.clone()),
            Expr::value(completed),
        ]);
    }
    txn.exec_built(&insert).await?;
    Ok(())
}

/// The `INSERT` of new executions (`starts` and [`create_one`]), stamped
/// with the database clock: owned by their node at epoch 1, at step 1,
/// attempt 1 of their first item.
pub(super) fn new_execution_insert(
    backend: sea_orm::DbBackend,
    rows: &[&NewExecution],
) -> sea_orm::sea_query::InsertStatement {
    let now = Store::now_expr(backend);
    let mut insert = Query::insert()
        .into_table(execution::Entity)
        .columns([
            execution::Column::Id,
            execution::Column::WorkflowId,
            execution::Column::WorkflowVersion,
            execution::Column::ParentId,
            execution::Column::State,
            execution::Column::Inputs,
            execution::Column::Variables,
            execution::Column::CurrentItem,
            execution::Column::Step,
            execution::Column::Attempt,
            execution::Column::OwnerNode,
            execution::Column::OwnerEpoch,
            execution::Column::CreatedAt,
            execution::Column::StartedAt,
            execution::Column::UpdatedAt,
        ])
        .to_owned();
    for new in rows {
        insert.values_panic([
            Expr::value(new.id.clone()),
            Expr::value(new.workflow_id.clone()),
            Expr::value(new.workflow_version),
            Expr::value(new.parent_id.clone()),
            Expr::value(state::RUNNING),
            Expr::value(to_text(&new.inputs)),
            Expr::value(to_text(&new.variables)),
            Expr::value(new.start_item.clone()),
            Expr::value(1i64),
            Expr::value(1i32),
            Expr::value(new.owner_node.clone()),
            Expr::value(1i64),
            now.clone(),
            now.clone(),
            now.clone(),
        ]);
    }
    insert
}

/// One start in its own transaction (a start alone in its batch, or one
/// tried alone after its batch failed): see [`Store::create_execution`].
pub(super) async fn create_one(
    c: &sea_orm::DatabaseConnection,
    backend: sea_orm::DbBackend,
    new: NewExecution,
) -> Result<StartOutcome, StoreError> {
    let id = new.id.clone();
    let (created, row) = {
        let txn = crate::store::begin(c).await?;
        let insert = new_execution_insert(backend, &[&new]);
        // RETURNING saves a read where the database has it.
        let returned = if backend == sea_orm::DbBackend::MySql {
            txn.execute(&insert).await.map(|_| None)
        } else {
            let mut insert = insert;
            insert.returning_all();
            txn.query_one(&insert).await
        };
        match returned {
            Err(e) if is_unique_violation(&e) => {
                txn.rollback().await?;
                (false, None)
            }
            Err(e) => return Err(e.into()),
            Ok(returned) => {
                // After the write, not before: on SQLite a transaction that
                // reads first and then writes can fail at once
                // (SQLITE_BUSY_SNAPSHOT) when another process writes in
                // between; one that writes first waits for the lock.
                if let Some(epoch) = new.node_epoch {
                    let live = lock_owner_rows(
                        node::Entity::find()
                            .filter(node::Column::Id.eq(new.owner_node.as_str()))
                            .filter(node::Column::Epoch.eq(epoch))
                            .filter(node::Column::State.eq(super::node_state::RUNNING)),
                        backend,
                    )
                    .one(&txn)
                    .await?;
                    if live.is_none() {
                        txn.rollback().await?;
                        return Err(StoreError::Conflict(format!(
                            "node {} is no longer running at epoch {epoch}; it starts nothing",
                            new.owner_node
                        )));
                    }
                }
                if let Some((workflow, version)) =
                    not_current(&txn, [&new]).await?.into_iter().next()
                {
                    txn.rollback().await?;
                    return Err(StoreError::NotCurrent { workflow, version });
                }
                let row = match returned {
                    Some(r) => Some(execution::Model::from_query_result(&r, "")?),
                    None => None,
                };
                let started = LogEntry {
                    item: new.start_item.clone(),
                    step: 1,
                    attempt: 1,
                    event: "started",
                    message: None,
                };
                insert_logs(&txn, backend, &new.id, &new.owner_node, &[started]).await?;
                txn.commit().await.map_err(StoreError::CommitUnknown)?;
                (true, row)
            }
        }
    };
    let row = match row {
        Some(row) => row,
        None => execution::Entity::find_by_id(id.clone())
            .one(c)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                kind: "execution",
                id: id.clone(),
            })?,
    };
    Ok(if created {
        StartOutcome::Created(row)
    } else {
        StartOutcome::Existing(row)
    })
}

/// The workflows and versions of `news` started with
/// [`NewExecution::expect_current`] that are not their workflow's current
/// version (replaced or deleted since), read inside the start's
/// transaction (a plain read: the start is then ordered after every
/// replace committed before it began, as when it read the version itself
/// before starting).
pub(super) async fn not_current<'a, W: Writes>(
    w: &W,
    news: impl IntoIterator<Item = &'a NewExecution>,
) -> Result<std::collections::HashSet<(String, i64)>, sea_orm::DbErr> {
    let mut checked: Vec<(&str, i64)> = news
        .into_iter()
        .filter(|n| n.expect_current)
        .map(|n| (n.workflow_id.as_str(), n.workflow_version))
        .collect();
    checked.sort_unstable();
    checked.dedup();
    let mut stale = std::collections::HashSet::new();
    for (id, version) in checked {
        let current = workflow::Entity::find()
            .select_only()
            .column(workflow::Column::Id)
            .filter(workflow::Column::Id.eq(id))
            .filter(workflow::Column::Version.eq(version))
            .build(w.backend());
        if w.ids(current).await?.is_empty() {
            stale.insert((id.to_owned(), version));
        }
    }
    Ok(stale)
}

/// The read of the owner node's row that a start checks its epoch against,
/// as a locking read (`FOR SHARE`) on PostgreSQL and MySQL/MariaDB: it
/// sees the row as last committed (a plain read on MySQL sees the
/// transaction's snapshot, which an earlier read may have fixed before a
/// takeover committed), and a takeover's `UPDATE` of that row waits for
/// the start to commit, so that it then moves the new executions too
/// instead of leaving them to a node it declared dead. SQLite writes one
/// transaction at a time: no lock is needed.
pub(super) fn lock_owner_rows<E: sea_orm::EntityTrait>(
    q: sea_orm::Select<E>,
    backend: sea_orm::DbBackend,
) -> sea_orm::Select<E> {
    use sea_orm::QuerySelect;
    if backend == sea_orm::DbBackend::Sqlite {
        q
    } else {
        q.lock_shared()
    }
}
