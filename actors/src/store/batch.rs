//! Group commit of checkpoints. Executions that checkpoint at the same
//! moment share one transaction: one fenced bulk `UPDATE` for the common
//! "item done, next started" checkpoints (a fenced `UPDATE` each for the
//! others), one multi-row item-log `INSERT`, one commit. Fencing stays per execution: an `UPDATE`
//! that touches zero rows answers that execution `OwnershipLost` and its
//! records are left out; the others commit. If the shared transaction
//! fails, each checkpoint is retried alone, so one bad checkpoint cannot
//! hold back the rest.

use std::sync::Arc;

use std::collections::HashSet;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use tokio::sync::{mpsc, oneshot, Mutex};

use super::direct::{CommitFailed, Direct, OwnConn};
use super::executions::{fenced_update, insert_log_rows};
use super::writes::{unwound, Writes};
use super::{state, Checkpoint, ExecutionState, Fence, Store};
use crate::db::Db;
use crate::error::StoreError;

/// Most checkpoints in one transaction.
const MAX_BATCH: usize = 128;

struct Pending {
    fence: Fence,
    cp: Checkpoint,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// The queue in front of the batch writers.
#[derive(Debug)]
pub(super) struct Batcher {
    tx: mpsc::UnboundedSender<Pending>,
    /// What the group commit did (`/metrics`).
    pub(super) stats: Arc<crate::metrics::CheckpointStats>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("fence", &self.fence)
            .finish()
    }
}

impl Batcher {
    /// Starts the writers on the database runtime: one on SQLite (a single
    /// writer anyway), two elsewhere so that one batch is built while the
    /// other commits.
    pub(super) fn start(db: &Db) -> Batcher {
        let (tx, rx) = mpsc::unbounded_channel();
        let rx = Arc::new(Mutex::new(rx));
        let backend = db.backend();
        let writers = if backend == DbBackend::Sqlite { 1 } else { 2 };
        let stats = Arc::new(crate::metrics::CheckpointStats::default());
        for _ in 0..writers {
            let (rx, stats) = (rx.clone(), stats.clone());
            let own = db.own_sqlite();
            db.spawn(move |conn, calls| writer(conn, own, calls, backend, rx, stats));
        }
        Batcher { tx, stats }
    }

    pub(super) async fn submit(&self, fence: Fence, cp: Checkpoint) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending { fence, cp, reply })
            .map_err(|_| StoreError::RuntimeGone)?;
        answer.await.map_err(|_| StoreError::RuntimeGone)?
    }
}

async fn writer(
    conn: DatabaseConnection,
    own: Option<Arc<OwnConn>>,
    calls: Arc<crate::db::DbCalls>,
    backend: DbBackend,
    rx: Arc<Mutex<mpsc::UnboundedReceiver<Pending>>>,
    stats: Arc<crate::metrics::CheckpointStats>,
) {
    while let Some(batch) = next_batch(&rx, MAX_BATCH).await {
        let began = calls.began(&conn);
        let applied = unwound("a checkpoint batch", async {
            #[cfg(test)]
            if batch
                .iter()
                .any(|p| p.fence.execution == super::writes::TEST_PANIC)
            {
                panic!("a test's panic");
            }
            apply(&conn, own.as_deref(), backend, &batch).await
        })
        .await
        .unwrap_or_else(|e| Err(Failed::AtCommit(e)));
        calls.ended(began);
        match applied {
            Ok(results) => {
                stats.record(batch.len(), began.elapsed());
                for (p, r) in batch.into_iter().zip(results) {
                    let _ = p.reply.send(r);
                }
            }
            Err(e) if batch.len() == 1 => {
                for p in batch {
                    let _ = p.reply.send(Err(e.clone().into_store_error()));
                }
            }
            Err(first) => {
                // Each alone, answered as `alone_answer` says.
                for p in batch {
                    let alone = unwound(
                        "a checkpoint",
                        apply(&conn, own.as_deref(), backend, std::slice::from_ref(&p)),
                    )
                    .await
                    .unwrap_or_else(|e| Err(Failed::AtCommit(e)));
                    let _ = p.reply.send(alone_answer(&first, alone));
                }
            }
        }
    }
}

/// Waits for the next request on a writer's queue, then takes whatever
/// else is queued already, up to `max`; `None` once the queue is closed.
/// Shared by the checkpoint and the start writers.
pub(super) async fn next_batch<T>(
    rx: &Mutex<mpsc::UnboundedReceiver<T>>,
    max: usize,
) -> Option<Vec<T>> {
    let mut rx = rx.lock().await;
    let first = rx.recv().await?;
    let mut batch = vec![first];
    while batch.len() < max {
        match rx.try_recv() {
            Ok(p) => batch.push(p),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// The checkpoints written with one bulk `UPDATE` per batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// "Item done, next item started": new variables, outputs, current
    /// item, step and attempt, nothing else. The common case.
    Advance,
    /// "Interrupted item runs again": a new attempt, nothing else. A node
    /// that adopts thousands of executions writes thousands of these.
    Resume,
    /// "Execution completed": its last variables, outputs, step and
    /// attempt (those of its `end`), no current item and no wait,
    /// `completed`, ended now. Every execution that ends well writes one.
    Complete,
    /// "Parked": the waiting state, its deadline and the awaited signal,
    /// nothing else. Every timer, signal and interaction writes one.
    Park,
}

impl Shape {
    fn of(cp: &Checkpoint) -> Option<Shape> {
        // Signals consumed and parents told are written after the bulk
        // `UPDATE`, for the rows it wrote.
        if cp.error.is_some() || cp.only_if_parked {
            return None;
        }
        if cp.wait.is_some() {
            let parks_only = cp.state.is_none()
                && !cp.ended
                && cp.variables.is_none()
                && cp.outputs.is_none()
                && cp.current_item.is_none()
                && cp.step.is_none()
                && cp.attempt.is_none()
                && cp.item_retries.is_none()
                && cp.notify_parent.is_none();
            return parks_only.then_some(Shape::Park);
        }
        if cp.state == Some(ExecutionState::Completed) {
            // The shape always clears the wait and the retries.
            let completes = cp.ended
                && cp.variables.is_some()
                && cp.outputs.is_some()
                && cp.current_item == Some(None)
                && cp.step.is_some()
                && cp.attempt.is_some()
                && cp.item_retries == Some(0)
                && cp.clear_wait;
            return completes.then_some(Shape::Complete);
        }
        let rest_untouched =
            cp.state.is_none() && !cp.ended && cp.attempt.is_some() && cp.notify_parent.is_none();
        if !rest_untouched {
            return None;
        }
        let moves = (
            cp.variables.is_some(),
            cp.outputs.is_some(),
            &cp.current_item,
            cp.step.is_some(),
        );
        match moves {
            // Moving to the next item always ends any wait.
            (true, true, Some(Some(_)), true) if cp.item_retries == Some(0) => Some(Shape::Advance),
            (false, false, None, false) if !cp.clear_wait && cp.item_retries.is_none() => {
                Some(Shape::Resume)
            }
            _ => None,
        }
    }

    /// The value columns after `id, owner_node, owner_epoch, run_token, fence_step`, with their
    /// PostgreSQL casts.
    fn columns(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Shape::Advance => &[
                ("variables", ""),
                ("outputs", ""),
                ("current_item", ""),
                ("step", "::bigint"),
                ("attempt", "::int"),
                ("item_retries", "::int"),
            ],
            Shape::Resume => &[("attempt", "::int")],
            Shape::Complete => &[
                ("variables", ""),
                ("outputs", ""),
                ("step", "::bigint"),
                ("attempt", "::int"),
            ],
            Shape::Park => &[
                ("state", ""),
                ("wait_until", "::bigint"),
                ("wait_signal", ""),
            ],
        }
    }

    /// What the shape sets to the same value in every row.
    fn constants(self, now: &str) -> Vec<String> {
        match self {
            // Moving to the next item always ends any wait.
            Shape::Advance => vec!["wait_until = NULL".into(), "wait_signal = NULL".into()],
            Shape::Resume | Shape::Park => Vec::new(),
            Shape::Complete => vec![
                "current_item = NULL".into(),
                "item_retries = 0".into(),
                "wait_until = NULL".into(),
                "wait_signal = NULL".into(),
                format!("state = '{}'", state::COMPLETED),
                format!("ended_at = {now}"),
            ],
        }
    }

    fn values(self, cp: &Checkpoint) -> Vec<sea_orm::Value> {
        let attempt = cp.attempt.unwrap_or_default().into();
        let text = |v: &Option<serde_json::Value>| -> sea_orm::Value {
            v.as_ref().map(|v| v.to_string()).unwrap_or_default().into()
        };
        match self {
            Shape::Advance => vec![
                text(&cp.variables),
                text(&cp.outputs),
                cp.current_item.clone().flatten().unwrap_or_default().into(),
                cp.step.unwrap_or_default().into(),
                attempt,
                cp.item_retries.unwrap_or_default().into(),
            ],
            Shape::Resume => vec![attempt],
            Shape::Park => {
                let wait = cp.wait.as_ref();
                vec![
                    wait.map(|w| w.state.as_str().to_owned())
                        .unwrap_or_default()
                        .into(),
                    wait.and_then(|w| w.until).into(),
                    wait.and_then(|w| w.signal.clone()).into(),
                ]
            }
            Shape::Complete => vec![
                text(&cp.variables),
                text(&cp.outputs),
                cp.step.unwrap_or_default().into(),
                attempt,
            ],
        }
    }
}

/// One fenced `UPDATE` for many checkpoints of one shape: a join of the
/// table with a list of `(id, owner_node, owner_epoch, new values)`, so a
/// row is written only where owner and epoch still match and the execution
/// is unfinished. Returns the ids written, or `None` when the backend
/// cannot say which (MySQL/MariaDB without `RETURNING`, fewer rows than
/// asked): the caller then falls back to one `UPDATE` per checkpoint.
async fn bulk_update<W: Writes>(
    txn: &W,
    backend: DbBackend,
    shape: Shape,
    batch: &[&Pending],
) -> Result<Option<HashSet<String>>, sea_orm::DbErr> {
    let now = Store::now_sql(backend);
    let mut values: Vec<sea_orm::Value> =
        Vec::with_capacity(batch.len() * (5 + shape.columns().len()));
    let rows = value_rows(backend, shape, batch, &mut values);
    let sql = match backend {
        DbBackend::MySql => {
            let names = shape.columns().iter().map(|(c, _)| *c);
            let mut set: Vec<String> = names.map(|c| format!("e.{c} = v.{c}")).collect();
            set.extend(shape.constants(now).into_iter().map(|c| format!("e.{c}")));
            format!(
                "UPDATE executions e JOIN ({}) v ON e.id = v.id AND e.owner_node = v.owner_node AND e.owner_epoch = v.owner_epoch AND e.run_token = v.run_token \
                 AND (v.fence_step < 0 OR e.step = v.fence_step) AND e.state IN ('running', 'waiting', 'waiting-signal') SET {}, e.updated_at = {now}",
                rows.join(" UNION ALL "),
                set.join(", ")
            )
        }
        _ => format!(
            "WITH {} {}",
            values_cte("v", shape, &rows),
            fenced_bulk_update("v", shape, now, UNFINISHED)
        ),
    };
    let stmt = Statement::from_sql_and_values(backend, sql, values);
    if backend == DbBackend::MySql {
        // MySQL says only how many rows it changed, not which: when some
        // were fenced out, undo the whole statement and let each be
        // written alone (a fenced write is not idempotent: the step moves).
        txn.exec_unprepared("SAVEPOINT baton_bulk").await?;
        let done = txn.exec(stmt).await?;
        if done != batch.len() as u64 {
            txn.exec_unprepared("ROLLBACK TO SAVEPOINT baton_bulk")
                .await?;
            return Ok(None);
        }
        return Ok(Some(
            batch.iter().map(|p| p.fence.execution.clone()).collect(),
        ));
    }
    Ok(Some(txn.ids(stmt).await?.into_iter().collect()))
}

/// An execution a bulk `UPDATE` may write: an unfinished one.
const UNFINISHED: &str = "executions.state IN ('running', 'waiting', 'waiting-signal')";

/// The rows `(id, owner_node, owner_epoch, run_token, fence_step, the
/// shape's columns...)` of a bulk `UPDATE`, as placeholders numbered on
/// from what `values` holds (which they are appended to).
fn value_rows(
    backend: DbBackend,
    shape: Shape,
    batch: &[&Pending],
    values: &mut Vec<sea_orm::Value>,
) -> Vec<String> {
    let cols = shape.columns();
    let mut rows = Vec::with_capacity(batch.len());
    for p in batch {
        let n = values.len();
        let row = match backend {
            DbBackend::Postgres => {
                let mut ph = vec![
                    format!("${}", n + 1),
                    format!("${}", n + 2),
                    format!("${}::bigint", n + 3),
                    format!("${}::bigint", n + 4),
                    format!("${}::bigint", n + 5),
                ];
                ph.extend(
                    cols.iter()
                        .enumerate()
                        .map(|(i, (_, cast))| format!("${}{cast}", n + 6 + i)),
                );
                format!("({})", ph.join(", "))
            }
            DbBackend::MySql => {
                let mut sel = vec![
                    "? AS id".to_owned(),
                    "? AS owner_node".to_owned(),
                    "? AS owner_epoch".to_owned(),
                    "? AS run_token".to_owned(),
                    "? AS fence_step".to_owned(),
                ];
                sel.extend(cols.iter().map(|(c, _)| format!("? AS {c}")));
                format!("SELECT {}", sel.join(", "))
            }
            _ => format!("({})", vec!["?"; 5 + cols.len()].join(", ")),
        };
        rows.push(row);
        values.push(p.fence.execution.clone().into());
        values.push(p.fence.node.clone().into());
        values.push(p.fence.epoch.into());
        values.push(p.fence.run.unwrap_or_default().into());
        // The step the row must still be at (`Fence::step`); -1: any.
        values.push(p.fence.step.unwrap_or(-1).into());
        values.extend(shape.values(&p.cp));
    }
    rows
}

/// `name(id, owner_node, ...) AS (VALUES rows)` (PostgreSQL, SQLite).
fn values_cte(name: &str, shape: Shape, rows: &[String]) -> String {
    let names: Vec<&str> = shape.columns().iter().map(|(c, _)| *c).collect();
    format!(
        "{name}(id, owner_node, owner_epoch, run_token, fence_step, {}) AS (VALUES {})",
        names.join(", "),
        rows.join(", ")
    )
}

/// The fenced `UPDATE` of the executions listed in the common table `v`
/// (PostgreSQL, SQLite): a row is written only where owner, epoch, run
/// token and step still match and it is unfinished; returns their ids.
fn fenced_bulk_update(v: &str, shape: Shape, now: &str, unfinished: &str) -> String {
    let mut set: Vec<String> = shape
        .columns()
        .iter()
        .map(|(c, _)| format!("{c} = {v}.{c}"))
        .collect();
    set.extend(shape.constants(now));
    format!(
        "UPDATE executions SET {}, updated_at = {now} FROM {v} \
         WHERE executions.id = {v}.id AND executions.owner_node = {v}.owner_node AND executions.owner_epoch = {v}.owner_epoch AND executions.run_token = {v}.run_token \
         AND ({v}.fence_step < 0 OR executions.step = {v}.fence_step) AND {unfinished} RETURNING executions.id AS id",
        set.join(", ")
    )
}

/// Whether a batch can be written by [`one_statement`]: PostgreSQL, and
/// every checkpoint of a bulk shape, of a claimed run, telling no parent.
fn fits_one_statement(backend: DbBackend, batch: &[Pending]) -> bool {
    backend == DbBackend::Postgres
        && batch.iter().all(|p| {
            p.fence.run.is_some() && p.cp.notify_parent.is_none() && Shape::of(&p.cp).is_some()
        })
}

/// A whole batch in one statement, in autocommit (PostgreSQL): a
/// data-modifying `WITH` does each shape's fenced bulk `UPDATE`, inserts
/// the item-log records of the executions written and marks the signals
/// they consumed, all or nothing, in one round trip instead of four
/// (`BEGIN`, `UPDATE`, `INSERT`, `COMMIT`). The rows travel as JSON
/// parameters (`json_to_recordset`), so the statement's text depends on
/// which shapes the batch holds (and whether it consumes signals), not on
/// its size: at most 30 texts, each prepared once per connection and
/// planned once. An error from the server wrote nothing; a broken
/// connection leaves the outcome unknown.
async fn one_statement(
    conn: &DatabaseConnection,
    batch: &[Pending],
) -> Result<Vec<Result<(), StoreError>>, Failed> {
    let backend = DbBackend::Postgres;
    let now = Store::now_sql(backend);
    let shapes = [Shape::Advance, Shape::Resume, Shape::Complete, Shape::Park];
    let mut ctes = Vec::new();
    let mut values: Vec<sea_orm::Value> = Vec::new();
    // Only the shapes this batch holds: each `UPDATE` in the statement
    // costs the server its executor start-up (opening the table's dozen
    // indexes) whether it writes a row or not. So the text varies with
    // the shapes present (at most 15 texts, each prepared once).
    let mut written = Vec::new();
    for (i, shape) in shapes.into_iter().enumerate() {
        let rows: Vec<serde_json::Value> = batch
            .iter()
            .filter(|p| Shape::of(&p.cp) == Some(shape))
            .map(|p| {
                let mut row = serde_json::Map::new();
                row.insert("id".into(), p.fence.execution.clone().into());
                row.insert("owner_node".into(), p.fence.node.clone().into());
                row.insert("owner_epoch".into(), p.fence.epoch.into());
                row.insert("run_token".into(), p.fence.run.unwrap_or_default().into());
                row.insert("fence_step".into(), p.fence.step.unwrap_or(-1).into());
                for ((c, _), v) in shape.columns().iter().zip(shape.values(&p.cp)) {
                    row.insert((*c).into(), json_of(v));
                }
                serde_json::Value::Object(row)
            })
            .collect();
        if rows.is_empty() {
            continue;
        }
        values.push(serde_json::Value::Array(rows).to_string().into());
        let param = values.len();
        let types: Vec<String> = shape
            .columns()
            .iter()
            .map(|(c, cast)| {
                let ty = match cast.trim_start_matches("::") {
                    "" => "text",
                    t => t,
                };
                format!("{c} {ty}")
            })
            .collect();
        ctes.push(format!(
            "v{i} AS (SELECT * FROM json_to_recordset(${param}::json) AS t(id text, owner_node text, owner_epoch bigint, run_token bigint, fence_step bigint, {}))",
            types.join(", ")
        ));
        // The planner cannot see how many rows a JSON parameter holds (it
        // guesses 100): it would hash-join every unfinished execution,
        // read through the state index. The ids as an array make it an
        // index scan of the primary key, and the state a filter.
        let unfinished = format!(
            "executions.id = ANY(ARRAY(SELECT id FROM v{i})) AND executions.state NOT IN ('{}', '{}', '{}')",
            state::COMPLETED,
            state::FAILED,
            state::CANCELED
        );
        ctes.push(format!(
            "u{i} AS ({})",
            fenced_bulk_update(&format!("v{i}"), shape, now, &unfinished)
        ));
        written.push(format!("SELECT id FROM u{i}"));
    }
    ctes.push(format!("w AS ({})", written.join(" UNION ALL ")));
    let logs: Vec<serde_json::Value> = batch
        .iter()
        .flat_map(|p| {
            p.cp.logs.iter().map(|l| {
                serde_json::json!({
                    "execution_id": p.fence.execution,
                    "item": l.item,
                    "step": l.step,
                    "attempt": l.attempt,
                    "event": l.event,
                    "node": p.fence.node,
                    "message": l.message,
                    "completed_step": (l.event == "completed").then_some(l.step),
                })
            })
        })
        .collect();
    values.push(serde_json::Value::Array(logs).to_string().into());
    let log_param = values.len();
    ctes.push(format!(
        "l AS (INSERT INTO item_log (execution_id, item, step, attempt, event, node, time, message, completed_step) \
         SELECT x.execution_id, x.item, x.step, x.attempt, x.event, x.node, {now}, x.message, x.completed_step \
         FROM json_to_recordset(${log_param}::json) AS x(execution_id text, item text, step bigint, attempt int, event text, node text, message text, completed_step bigint) \
         WHERE x.execution_id IN (SELECT id FROM w))"
    ));
    let consumed: Vec<i64> = batch
        .iter()
        .flat_map(|p| p.cp.consume_signals.iter().copied())
        .collect();
    if !consumed.is_empty() {
        values.push(serde_json::Value::from(consumed).to_string().into());
        let signal_param = values.len();
        // Only the signals of executions written: the others keep theirs.
        ctes.push(format!(
            "s AS (UPDATE signals SET consumed_at = {now} \
             WHERE id = ANY(ARRAY(SELECT value::bigint FROM json_array_elements_text(${signal_param}::json))) \
             AND consumed_at IS NULL AND execution_id IN (SELECT id FROM w))"
        ));
    }
    let sql = format!("WITH {} SELECT id FROM w", ctes.join(", "));
    let rows = conn
        .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
        .await
        .map_err(|e| {
            if super::wrote_nothing(&e) {
                Failed::Before(e)
            } else {
                Failed::AtCommit(e)
            }
        })?;
    let mut ids = HashSet::with_capacity(rows.len());
    for r in rows {
        ids.insert(r.try_get::<String>("", "id").map_err(Failed::AtCommit)?);
    }
    Ok(batch
        .iter()
        .map(|p| {
            if ids.contains(&p.fence.execution) {
                Ok(())
            } else {
                Err(StoreError::OwnershipLost {
                    execution: p.fence.execution.clone(),
                    node: p.fence.node.clone(),
                    epoch: p.fence.epoch,
                })
            }
        })
        .collect())
}

/// A bound value as JSON (the scalar kinds the bulk shapes bind).
fn json_of(v: sea_orm::Value) -> serde_json::Value {
    use sea_orm::Value as V;
    match v {
        V::String(Some(s)) => serde_json::Value::String(s),
        V::BigInt(Some(n)) => n.into(),
        V::Int(Some(n)) => n.into(),
        _ => serde_json::Value::Null,
    }
}

/// The answer to a checkpoint tried alone after its batch failed with
/// `first`. If the batch's commit had an unknown outcome and did commit,
/// the checkpoint is written already: its completion record's unique
/// violation means "written", and a fence that no longer matches (the row
/// moved on, by this very write perhaps) is an unknown outcome too, for
/// the run to check (`Run::landed`), not a lost ownership.
fn alone_answer(
    first: &Failed,
    alone: Result<Vec<Result<(), StoreError>>, Failed>,
) -> Result<(), StoreError> {
    let Failed::AtCommit(unknown) = first else {
        return match alone {
            Ok(mut r) => r.pop().unwrap_or(Err(StoreError::RuntimeGone)),
            Err(e) => Err(e.into_store_error()),
        };
    };
    match alone {
        Ok(mut r) => match r.pop().unwrap_or(Err(StoreError::RuntimeGone)) {
            Err(e) if e.is_ownership_lost() => Err(StoreError::CommitUnknown(unknown.clone())),
            other => other,
        },
        Err(Failed::Before(e)) if super::is_unique_violation(&e) => Ok(()),
        Err(e) => Err(e.into_store_error()),
    }
}

/// Why a batch's transaction failed.
#[derive(Clone, Debug)]
enum Failed {
    /// Before the commit: nothing was written.
    Before(sea_orm::DbErr),
    /// At the commit: it may or may not have been written.
    AtCommit(sea_orm::DbErr),
}

impl Failed {
    fn into_store_error(self) -> StoreError {
        match self {
            Failed::Before(e) => StoreError::Db(e),
            Failed::AtCommit(e) => StoreError::CommitUnknown(e),
        }
    }
}

impl From<sea_orm::DbErr> for Failed {
    fn from(e: sea_orm::DbErr) -> Failed {
        Failed::Before(e)
    }
}

/// Applies a batch in one transaction; answers each checkpoint.
async fn apply(
    conn: &DatabaseConnection,
    own: Option<&OwnConn>,
    backend: DbBackend,
    batch: &[Pending],
) -> Result<Vec<Result<(), StoreError>>, Failed> {
    if fits_one_statement(backend, batch) {
        return one_statement(conn, batch).await;
    }
    if backend == DbBackend::Sqlite {
        return apply_direct(conn, own, batch).await;
    }
    let txn = crate::store::begin(conn).await?;
    let results = write_batch(&txn, backend, batch).await?;
    txn.commit().await.map_err(Failed::AtCommit)?;
    Ok(results)
}

/// [`apply`] on SQLite: the whole transaction on this thread, on the
/// pool's connection borrowed from sqlx's worker thread ([`Direct`]), so
/// its statements cross no thread.
async fn apply_direct(
    conn: &DatabaseConnection,
    own: Option<&OwnConn>,
    batch: &[Pending],
) -> Result<Vec<Result<(), StoreError>>, Failed> {
    Direct::transaction(conn, own, |d| {
        let results = Direct::now(write_batch(d, DbBackend::Sqlite, batch))?;
        d.commit().map_err(|e| match e {
            CommitFailed::NotWritten(e) => Failed::Before(e),
            CommitFailed::Unknown(e) => Failed::AtCommit(e),
        })?;
        Ok(results)
    })
    .await?
}

/// The statements of a batch inside the transaction `txn`, which the
/// caller commits; answers each checkpoint.
async fn write_batch<W: Writes>(
    txn: &W,
    backend: DbBackend,
    batch: &[Pending],
) -> Result<Vec<Result<(), StoreError>>, sea_orm::DbErr> {
    let mut bulk: Vec<(Shape, HashSet<String>)> = Vec::new();
    for shape in [Shape::Advance, Shape::Resume, Shape::Complete, Shape::Park] {
        let group: Vec<&Pending> = batch
            .iter()
            .filter(|p| p.fence.run.is_some() && Shape::of(&p.cp) == Some(shape))
            .collect();
        if group.len() > 1 {
            if let Some(ids) = bulk_update(txn, backend, shape, &group).await? {
                bulk.push((shape, ids));
            }
        }
    }
    let mut results = Vec::with_capacity(batch.len());
    let mut rows = Vec::new();
    let mut parents = Vec::new();
    let mut consumed = Vec::new();
    for p in batch {
        let done_in_bulk = Shape::of(&p.cp)
            .filter(|_| p.fence.run.is_some())
            .and_then(|s| bulk.iter().find(|(b, _)| *b == s));
        let written = match done_in_bulk {
            Some((_, ids)) => ids.contains(&p.fence.execution),
            None => fenced_update(txn, backend, &p.fence, &p.cp).await? > 0,
        };
        if written {
            consumed.extend_from_slice(&p.cp.consume_signals);
            if let Some(parent) = &p.cp.notify_parent {
                super::signals::notify_parent(txn, backend, parent, &p.fence.execution).await?;
                parents.push(parent.clone());
            }
            results.push(Ok(()));
            rows.extend(
                p.cp.logs
                    .iter()
                    .map(|l| (p.fence.execution.as_str(), p.fence.node.as_str(), l)),
            );
        } else {
            results.push(Err(StoreError::OwnershipLost {
                execution: p.fence.execution.clone(),
                node: p.fence.node.clone(),
                epoch: p.fence.epoch,
            }));
        }
    }
    super::signals::consume_all(txn, backend, &consumed).await?;
    insert_log_rows(txn, backend, &rows).await?;
    // Last, in id order: the only rows of other executions this
    // transaction locks.
    super::signals::mark_signaled(txn, parents).await?;
    Ok(results)
}

#[cfg(test)]
mod alone_tests {
    use super::*;
    use sea_orm::DbErr;

    fn lost() -> StoreError {
        StoreError::OwnershipLost {
            execution: "e".into(),
            node: "n".into(),
            epoch: 1,
        }
    }

    /// A batch whose commit had an unknown outcome may have written the
    /// checkpoint: the row then no longer matches its fence, which is no
    /// proof that ownership was lost. The run is told "unknown" and checks
    /// (`Run::landed`); after a batch that surely wrote nothing, the fence
    /// is believed.
    #[test]
    fn a_fence_missed_after_an_unknown_commit_is_unknown_not_lost() {
        let unknown = Failed::AtCommit(DbErr::Custom("connection reset at COMMIT".into()));
        let before = Failed::Before(DbErr::Custom("deadlock".into()));
        assert!(matches!(
            alone_answer(&unknown, Ok(vec![Err(lost())])),
            Err(StoreError::CommitUnknown(_))
        ));
        assert!(alone_answer(&before, Ok(vec![Err(lost())])).is_err_and(|e| e.is_ownership_lost()));
        assert!(alone_answer(&unknown, Ok(vec![Ok(())])).is_ok());
        assert!(matches!(
            alone_answer(&before, Err(Failed::AtCommit(DbErr::Custom("x".into())))),
            Err(StoreError::CommitUnknown(_))
        ));
    }
}
