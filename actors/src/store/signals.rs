//! Signals and interaction answers, and waking parked executions.
//!
//! Any node may deliver a signal: an insert into `signals` and, in the same
//! transaction, the execution's `signaled` flag set (its only write on the
//! execution row, which no fence reads). Only the owner consumes a signal,
//! in the transaction that completes the waiting item. Waking is the
//! owner's: `due_for_wake` finds its parked executions whose time has come
//! (an index range scan on the due time) or that were signaled (an index
//! lookup on the flag), so a scan costs what is due, not what is parked;
//! `wake` sets them running again, fenced by owner, and clears the flag. A
//! flag set for a signal nobody awaits costs one early wake at most: the
//! woken run finds no signal for its wait and parks again.

use sea_orm::sea_query::Expr;
use sea_orm::sea_query::ExprTrait;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    QueryTrait, Statement,
};
use serde_json::Value;

use super::deliveries::{signals_insert, Delivery};
use super::entities::{execution, signal};
use super::writes::Writes;
use super::{state, Store};
use crate::error::StoreError;
use std::collections::HashMap;

/// What an execution parked on a user interaction waits for
/// (`wait_signal`) until it is answered.
pub const INTERACTION: &str = "__interaction";

/// The signal name under which an accepted interaction answer is stored;
/// an answered execution waits for it (`wait_signal`), so the wake scan
/// finds it at once.
pub const ANSWER: &str = "__answer";

/// Flags executions as signaled (the wake scan looks for the flag), in
/// the transaction that stored their signals; in id order, so that two
/// transactions flagging the same rows lock them in the same order.
pub(super) async fn mark_signaled<W: Writes>(
    c: &W,
    mut ids: Vec<String>,
) -> Result<(), sea_orm::DbErr> {
    if ids.is_empty() {
        return Ok(());
    }
    ids.sort_unstable();
    ids.dedup();
    let stmt = execution::Entity::update_many()
        .col_expr(execution::Column::Signaled, Expr::value(1i16))
        .filter(execution::Column::Id.is_in(ids))
        .build(c.backend());
    c.exec(stmt).await?;
    Ok(())
}

/// Marks the signals `ids` consumed (those not consumed yet), in
/// statements of at most 500 ids.
pub(super) async fn consume_all<W: Writes>(
    txn: &W,
    backend: DbBackend,
    ids: &[i64],
) -> Result<(), sea_orm::DbErr> {
    for chunk in ids.chunks(500) {
        let stmt = signal::Entity::update_many()
            .col_expr(signal::Column::ConsumedAt, Store::now_expr(backend))
            .filter(signal::Column::Id.is_in(chunk.iter().copied()))
            .filter(signal::Column::ConsumedAt.is_null())
            .build(backend);
        txn.exec(stmt).await?;
    }
    Ok(())
}

/// The signal name of a cancel requested by a node that does not run the
/// execution; its owner's periodic scan carries it out.
pub const CANCEL: &str = "__cancel";

/// The signal name a finished child sends its parent.
pub const CHILD_DONE: &str = "__child";

/// Tells a parent that a child finished, inside the child's final
/// transaction.
pub(super) async fn notify_parent<W: Writes>(
    txn: &W,
    backend: DbBackend,
    parent: &str,
    child: &str,
) -> Result<(), sea_orm::DbErr> {
    let payload = serde_json::json!({ "child": child }).to_string();
    txn.exec_built(&signals_insert(backend, &[(parent, CHILD_DONE, &payload)]))
        .await?;
    Ok(())
}

impl Store {
    /// Takes an answer to the interaction `execution_id` waits on at
    /// `step`, once (DESIGN.md invariant 13): in one transaction, a
    /// compare-and-set moves the execution from waiting for an answer to
    /// answered, only if it is still parked on the interaction at that step
    /// and its timeout has not passed (database clock), and the answer is
    /// stored for that item. Returns `false`, storing nothing, otherwise: a
    /// second answer, an answer for an earlier interaction, or a late one.
    pub async fn answer_interaction(
        &self,
        execution_id: &str,
        step: i64,
        answer: &Value,
    ) -> Result<bool, StoreError> {
        self.deliverer()
            .submit(Delivery::Answer {
                execution_id: execution_id.to_owned(),
                step,
                answer: answer.to_string(),
            })
            .await
    }

    /// Asks the owner of a running execution to cancel it (from a node
    /// that does not run it): a `__cancel` signal, once.
    pub async fn request_cancel(&self, execution_id: &str) -> Result<(), StoreError> {
        if !self
            .pending_signal_ids(execution_id, CANCEL)
            .await?
            .is_empty()
        {
            return Ok(());
        }
        self.insert_signal(execution_id, CANCEL, &Value::Null).await
    }

    /// `node`'s unfinished executions with a cancel requested.
    pub async fn cancel_requested(&self, node: &str) -> Result<Vec<String>, StoreError> {
        let node = node.to_owned();
        self.db()
            .run(move |c| async move {
                // The name in the statement's text, not bound: only then
                // may the database read the cancels' partial index.
                let ids: Vec<String> = signal::Entity::find()
                    .filter(Expr::cust(format!("name = '{CANCEL}'")))
                    .filter(signal::Column::ConsumedAt.is_null())
                    .all(&c)
                    .await?
                    .into_iter()
                    .map(|s| s.execution_id)
                    .collect();
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                Ok(execution::Entity::find()
                    .filter(execution::Column::Id.is_in(ids))
                    .filter(execution::Column::OwnerNode.eq(node))
                    .filter(execution::Column::State.is_in(state::UNFINISHED))
                    .all(&c)
                    .await?
                    .into_iter()
                    .map(|e| e.id)
                    .collect())
            })
            .await
    }

    /// Ids of every unconsumed signal of this name for an execution.
    pub async fn pending_signal_ids(
        &self,
        execution_id: &str,
        name: &str,
    ) -> Result<Vec<i64>, StoreError> {
        let (execution_id, name) = (execution_id.to_owned(), name.to_owned());
        self.db()
            .run(move |c| async move {
                Ok(signal::Entity::find()
                    .filter(signal::Column::ExecutionId.eq(execution_id))
                    .filter(signal::Column::Name.eq(name))
                    .filter(signal::Column::ConsumedAt.is_null())
                    .all(&c)
                    .await?
                    .into_iter()
                    .map(|s| s.id)
                    .collect())
            })
            .await
    }

    /// Executions by id (those that exist).
    pub async fn executions_by_id(
        &self,
        ids: Vec<String>,
    ) -> Result<Vec<execution::Model>, StoreError> {
        self.db()
            .run(move |c| async move {
                let mut out = Vec::with_capacity(ids.len());
                for chunk in ids.chunks(500) {
                    out.extend(
                        execution::Entity::find()
                            .filter(execution::Column::Id.is_in(chunk.to_vec()))
                            .all(&c)
                            .await?,
                    );
                }
                Ok(out)
            })
            .await
    }

    /// Unfinished children of an execution.
    pub async fn unfinished_children(
        &self,
        parent: &str,
    ) -> Result<Vec<execution::Model>, StoreError> {
        let parent = parent.to_owned();
        self.db()
            .run(move |c| async move {
                Ok(execution::Entity::find()
                    .filter(execution::Column::ParentId.eq(parent))
                    .filter(execution::Column::State.is_in(state::UNFINISHED))
                    .all(&c)
                    .await?)
            })
            .await
    }

    /// Stores a signal for an execution and flags it for the wake scan,
    /// in the group commit of deliveries (`deliveries`).
    pub async fn insert_signal(
        &self,
        execution_id: &str,
        name: &str,
        payload: &Value,
    ) -> Result<(), StoreError> {
        self.deliverer()
            .submit(Delivery::Signal {
                execution_id: execution_id.to_owned(),
                name: name.to_owned(),
                payload: payload.to_string(),
            })
            .await
            .map(drop)
    }

    /// The oldest unconsumed signal of this name for an execution. On a
    /// reader connection (SQLite): it sees every signal committed before
    /// it, as the write connection would, and its consumption is fenced in
    /// the checkpoint that takes it.
    pub async fn pending_signal(
        &self,
        execution_id: &str,
        name: &str,
    ) -> Result<Option<signal::Model>, StoreError> {
        let (execution_id, name) = (execution_id.to_owned(), name.to_owned());
        self.db()
            .run_read(move |c| async move {
                Ok(signal::Entity::find()
                    .filter(signal::Column::ExecutionId.eq(execution_id))
                    .filter(signal::Column::Name.eq(name))
                    .filter(signal::Column::ConsumedAt.is_null())
                    .order_by_asc(signal::Column::Id)
                    .one(&c)
                    .await?)
            })
            .await
    }

    /// For each (execution, signal name) of `awaited`, that execution's
    /// unconsumed signals of that name, oldest first, in one read per 500
    /// executions (on a reader connection, as [`Store::pending_signal`]).
    pub async fn pending_signals_of(
        &self,
        awaited: Vec<(String, String)>,
    ) -> Result<HashMap<String, Vec<signal::Model>>, StoreError> {
        if awaited.is_empty() {
            return Ok(HashMap::new());
        }
        self.db()
            .run_read(move |c| async move {
                let mut out: HashMap<String, Vec<signal::Model>> = HashMap::new();
                for chunk in awaited.chunks(500) {
                    let name_of: HashMap<&str, &str> = chunk
                        .iter()
                        .map(|(id, name)| (id.as_str(), name.as_str()))
                        .collect();
                    let mut names: Vec<&str> = name_of.values().copied().collect();
                    names.sort_unstable();
                    names.dedup();
                    let rows = signal::Entity::find()
                        .filter(signal::Column::ExecutionId.is_in(name_of.keys().copied()))
                        .filter(signal::Column::Name.is_in(names))
                        .filter(signal::Column::ConsumedAt.is_null())
                        .order_by_asc(signal::Column::Id)
                        .all(&c)
                        .await?;
                    for s in rows {
                        if name_of.get(s.execution_id.as_str()) == Some(&s.name.as_str()) {
                            out.entry(s.execution_id.clone()).or_default().push(s);
                        }
                    }
                }
                Ok(out)
            })
            .await
    }

    /// Ids of `node`'s parked executions that are due: a timer or timeout
    /// has passed (database clock), or a signal has arrived. Two index
    /// scans, each reading only what is due: parked executions by their
    /// due time, and signaled ones by their flag.
    pub async fn due_for_wake(&self, node: &str, limit: u32) -> Result<Vec<String>, StoreError> {
        let backend = self.backend();
        let node = node.to_owned();
        self.db()
            .run(move |c| async move {
                let (p1, p2) = if backend == DbBackend::Postgres { ("$1", "$2") } else { ("?", "?") };
                let parked = format!("owner_node = {p1} AND state IN ('{}', '{}')", state::WAITING, state::WAITING_SIGNAL);
                let timers = format!(
                    "SELECT id FROM executions WHERE {parked} AND wait_until <= {now} LIMIT {p2}",
                    now = Store::now_sql_for_index(backend)
                );
                // Only those parked on a signal: an execution parked on a
                // timer that was signaled meanwhile keeps its flag until
                // its timer wakes it.
                let signaled = format!(
                    "SELECT id FROM executions WHERE owner_node = {p1} AND state = '{}' AND signaled = 1 LIMIT {p2}",
                    state::WAITING_SIGNAL
                );
                let mut ids = Vec::new();
                let mut seen = std::collections::HashSet::new();
                for sql in [timers, signaled] {
                    let rows = c
                        .query_all_raw(Statement::from_sql_and_values(
                            backend,
                            sql,
                            [node.clone().into(), i64::from(limit).into()],
                        ))
                        .await?;
                    for r in rows {
                        let id = r.try_get::<String>("", "id")?;
                        if seen.insert(id.clone()) {
                            ids.push(id);
                        }
                    }
                }
                ids.truncate(limit as usize);
                Ok(ids)
            })
            .await
    }

    /// The catch-up behind the flag: flags `node`'s executions parked on a
    /// signal that arrived in the last `window_ms` (database clock) without
    /// setting their flag (a node of an older version stored it). Reads only
    /// that window's signals (`ix_signals_created`) and keeps the
    /// unconsumed, then reads the executions they name by id; returns how
    /// many it flagged.
    pub async fn flag_recent_signals(&self, node: &str, window_ms: i64) -> Result<u64, StoreError> {
        let backend = self.backend();
        let node = node.to_owned();
        self.db()
            .run(move |c| async move {
                let recent: Vec<(String, String)> = signal::Entity::find()
                    .select_only()
                    .column(signal::Column::ExecutionId)
                    .column(signal::Column::Name)
                    .filter(signal::Column::ConsumedAt.is_null())
                    .filter(Expr::col(signal::Column::CreatedAt).gt(Expr::cust(format!(
                        "{} - {window_ms}",
                        Store::now_sql_for_index(backend)
                    ))))
                    .into_tuple()
                    .all(&c)
                    .await?;
                let mut names: std::collections::HashMap<String, Vec<String>> = Default::default();
                for (execution_id, name) in recent {
                    names.entry(execution_id).or_default().push(name);
                }
                let ids: Vec<String> = names.keys().cloned().collect();
                let mut flag = Vec::new();
                for chunk in ids.chunks(500) {
                    let parked: Vec<(String, Option<String>)> = execution::Entity::find()
                        .select_only()
                        .column(execution::Column::Id)
                        .column(execution::Column::WaitSignal)
                        .filter(execution::Column::Id.is_in(chunk.to_vec()))
                        .filter(execution::Column::OwnerNode.eq(node.as_str()))
                        .filter(execution::Column::State.eq(state::WAITING_SIGNAL))
                        .filter(execution::Column::Signaled.eq(0i16))
                        .into_tuple()
                        .all(&c)
                        .await?;
                    flag.extend(parked.into_iter().filter_map(|(id, wait)| {
                        let awaited =
                            wait.is_some_and(|w| names.get(&id).is_some_and(|n| n.contains(&w)));
                        awaited.then_some(id)
                    }));
                }
                let flagged = flag.len() as u64;
                for chunk in flag.chunks(500) {
                    mark_signaled(&c, chunk.to_vec()).await?;
                }
                Ok(flagged)
            })
            .await
    }

    /// Sets `node`'s parked executions `ids` running again (fenced by
    /// owner and by their waiting state) and returns those it woke, each
    /// with whether this very statement claimed its run: on PostgreSQL and
    /// SQLite the `UPDATE` returns exactly the rows it moved, run token
    /// included, so the wake is the run's compare-and-set (DESIGN.md
    /// invariant 10); on MySQL/MariaDB (no `UPDATE ... RETURNING`) the rows
    /// are read back and each run claims its token as any other does.
    pub async fn wake(
        &self,
        node: &str,
        ids: Vec<String>,
    ) -> Result<Vec<(execution::Model, bool)>, StoreError> {
        let backend = self.backend();
        let node = node.to_owned();
        self.db()
            .run(move |c| async move {
                let update = execution::Entity::update_many()
                    .col_expr(execution::Column::State, Expr::value(state::RUNNING))
                    .col_expr(execution::Column::Signaled, Expr::value(0i16))
                    .col_expr(
                        execution::Column::RunToken,
                        Expr::col(execution::Column::RunToken).add(1),
                    )
                    .col_expr(execution::Column::UpdatedAt, Store::now_expr(backend))
                    .filter(execution::Column::Id.is_in(ids.clone()))
                    .filter(execution::Column::OwnerNode.eq(node.as_str()))
                    .filter(
                        execution::Column::State.is_in([state::WAITING, state::WAITING_SIGNAL]),
                    );
                if backend != DbBackend::MySql {
                    let woken = update.exec_with_returning(&c).await?;
                    return Ok(woken.into_iter().map(|r| (r, true)).collect());
                }
                update.exec(&c).await?;
                Ok(execution::Entity::find()
                    .filter(execution::Column::Id.is_in(ids))
                    .filter(execution::Column::OwnerNode.eq(node.as_str()))
                    .filter(execution::Column::State.eq(state::RUNNING))
                    .all(&c)
                    .await?
                    .into_iter()
                    .map(|r| (r, false))
                    .collect())
            })
            .await
    }
}
