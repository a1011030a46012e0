//! Group commit of checkpoints. Executions that checkpoint at the same
//! moment share one transaction: one fenced `UPDATE` each, one multi-row
//! item-log `INSERT`, one commit. Fencing stays per execution: an `UPDATE`
//! that touches zero rows answers that execution `OwnershipLost` and its
//! records are left out; the others commit. If the shared transaction
//! fails, each checkpoint is retried alone, so one bad checkpoint cannot
//! hold back the rest.

use std::sync::Arc;

use sea_orm::{DatabaseConnection, DbBackend, TransactionTrait};
use tokio::sync::{mpsc, oneshot, Mutex};

use super::executions::{fenced_update, insert_log_rows};
use super::{Checkpoint, Fence};
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
        f.debug_struct("Pending").field("fence", &self.fence).finish()
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

async fn writer(conn: DatabaseConnection, backend: DbBackend, rx: Arc<Mutex<mpsc::UnboundedReceiver<Pending>>>) {
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

async fn apply(conn: &DatabaseConnection, backend: DbBackend, batch: &[Pending]) -> Result<Vec<Result<(), StoreError>>, sea_orm::DbErr> {
    let txn = conn.begin().await?;
    let mut results = Vec::with_capacity(batch.len());
    let mut rows = Vec::new();
    for p in batch {
        if fenced_update(&txn, backend, &p.fence, &p.cp).await? == 0 {
            results.push(Err(StoreError::OwnershipLost {
                execution: p.fence.execution.clone(),
                node: p.fence.node.clone(),
                epoch: p.fence.epoch,
            }));
        } else {
            results.push(Ok(()));
            rows.extend(p.cp.logs.iter().map(|l| (p.fence.execution.as_str(), p.fence.node.as_str(), l)));
        }
    }
    insert_log_rows(&txn, backend, &rows).await?;
    txn.commit().await?;
    Ok(results)
}
