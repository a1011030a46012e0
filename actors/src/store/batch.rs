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

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, Statement,
    TransactionTrait,
};
use tokio::sync::{mpsc, oneshot, Mutex};

use super::executions::{fenced_update, insert_log_rows};
use super::{Checkpoint, Fence, Store};
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
        for _ in 0..writers {
            let rx = rx.clone();
            db.spawn(move |conn| writer(conn, backend, rx));
        }
        Batcher { tx }
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
    backend: DbBackend,
    rx: Arc<Mutex<mpsc::UnboundedReceiver<Pending>>>,
) {
    loop {
        let batch = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else { return };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            batch
        };
        match apply(&conn, backend, &batch).await {
            Ok(results) => {
                for (p, r) in batch.into_iter().zip(results) {
                    let _ = p.reply.send(r);
                }
            }
            Err(e) if batch.len() == 1 => {
                for p in batch {
                    let _ = p.reply.send(Err(StoreError::Db(e.clone())));
                }
            }
            Err(_) => {
                for p in batch {
                    let r = match apply(&conn, backend, std::slice::from_ref(&p)).await {
                        Ok(mut r) => r.pop().unwrap_or(Err(StoreError::RuntimeGone)),
                        Err(e) => Err(StoreError::Db(e)),
                    };
                    let _ = p.reply.send(r);
                }
            }
        }
    }
}

/// True for the common checkpoint "item done, next item started": new
/// variables, outputs, current item, step and attempt, nothing else. These
/// are written with one bulk `UPDATE` per batch.
fn is_advance(cp: &Checkpoint) -> bool {
    cp.variables.is_some()
        && cp.outputs.is_some()
        && matches!(cp.current_item, Some(Some(_)))
        && cp.step.is_some()
        && cp.attempt.is_some()
        && cp.state.is_none()
        && cp.error.is_none()
        && !cp.ended
}

/// One fenced `UPDATE` for many "advance" checkpoints: a join of the table
/// with a list of `(id, owner_node, owner_epoch, new values)`, so a row is
/// written only where owner and epoch still match. Returns the ids
/// written, or `None` when the backend cannot say which (MySQL/MariaDB
/// without `RETURNING` and fewer rows than asked): the caller then falls
/// back to one `UPDATE` per checkpoint.
async fn bulk_advance(
    txn: &DatabaseTransaction,
    backend: DbBackend,
    batch: &[&Pending],
) -> Result<Option<HashSet<String>>, sea_orm::DbErr> {
    let now = Store::now_sql(backend);
    let mut values: Vec<sea_orm::Value> = Vec::with_capacity(batch.len() * 8);
    let mut rows = Vec::with_capacity(batch.len());
    for p in batch {
        let cp = &p.cp;
        let n = values.len();
        let ph = |i: usize| match backend {
            DbBackend::Postgres => format!("${}", n + i),
            _ => "?".to_owned(),
        };
        rows.push(match backend {
            DbBackend::Postgres => format!(
                "({}, {}, {}::bigint, {}, {}, {}, {}::bigint, {}::int)",
                ph(1), ph(2), ph(3), ph(4), ph(5), ph(6), ph(7), ph(8)
            ),
            DbBackend::MySql => "SELECT ? AS id, ? AS owner_node, ? AS owner_epoch, ? AS variables, ? AS outputs, ? AS current_item, ? AS step, ? AS attempt".to_owned(),
            _ => "(?, ?, ?, ?, ?, ?, ?, ?)".to_owned(),
        });
        values.push(p.fence.execution.clone().into());
        values.push(p.fence.node.clone().into());
        values.push(p.fence.epoch.into());
        values.push(
            cp.variables
                .as_ref()
                .map(|v| v.to_string())
                .unwrap_or_default()
                .into(),
        );
        values.push(
            cp.outputs
                .as_ref()
                .map(|v| v.to_string())
                .unwrap_or_default()
                .into(),
        );
        values.push(cp.current_item.clone().flatten().unwrap_or_default().into());
        values.push(cp.step.unwrap_or_default().into());
        values.push(cp.attempt.unwrap_or_default().into());
    }
    let set = "variables = v.variables, outputs = v.outputs, current_item = v.current_item, step = v.step, attempt = v.attempt";
    let cols = "id, owner_node, owner_epoch, variables, outputs, current_item, step, attempt";
    let sql = match backend {
        DbBackend::MySql => format!(
            "UPDATE executions e JOIN ({}) v ON e.id = v.id AND e.owner_node = v.owner_node AND e.owner_epoch = v.owner_epoch \
             AND e.state IN ('running', 'waiting', 'waiting-signal') \
             SET e.variables = v.variables, e.outputs = v.outputs, e.current_item = v.current_item, e.step = v.step, e.attempt = v.attempt, e.updated_at = {now}",
            rows.join(" UNION ALL ")
        ),
        _ => format!(
            "WITH v({cols}) AS (VALUES {}) UPDATE executions SET {set}, updated_at = {now} FROM v \
             WHERE executions.id = v.id AND executions.owner_node = v.owner_node AND executions.owner_epoch = v.owner_epoch \
             AND executions.state IN ('running', 'waiting', 'waiting-signal') \
             RETURNING executions.id AS id",
            rows.join(", ")
        ),
    };
    let stmt = Statement::from_sql_and_values(backend, sql, values);
    if backend == DbBackend::MySql {
        let done = txn.execute_raw(stmt).await?.rows_affected();
        return Ok((done == batch.len() as u64)
            .then(|| batch.iter().map(|p| p.fence.execution.clone()).collect()));
    }
    let rows = txn.query_all_raw(stmt).await?;
    let mut ids = HashSet::with_capacity(rows.len());
    for r in rows {
        ids.insert(r.try_get::<String>("", "id")?);
    }
    Ok(Some(ids))
}

/// Applies a batch in one transaction; answers each checkpoint.
async fn apply(
    conn: &DatabaseConnection,
    backend: DbBackend,
    batch: &[Pending],
) -> Result<Vec<Result<(), StoreError>>, sea_orm::DbErr> {
    let txn = conn.begin().await?;
    let advances: Vec<&Pending> = batch.iter().filter(|p| is_advance(&p.cp)).collect();
    let bulk = if advances.len() > 1 {
        bulk_advance(&txn, backend, &advances).await?
    } else {
        None
    };
    let mut results = Vec::with_capacity(batch.len());
    let mut rows = Vec::new();
    for p in batch {
        let written = match &bulk {
            Some(ids) if is_advance(&p.cp) => ids.contains(&p.fence.execution),
            _ => fenced_update(&txn, backend, &p.fence, &p.cp).await? > 0,
        };
        if written {
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
    insert_log_rows(&txn, backend, &rows).await?;
    txn.commit().await?;
    Ok(results)
}
