//! Group commit of signals and interaction answers (issue 14, item 3).
//! Signals and answers that arrive at the same moment share one
//! transaction: each answer's compare-and-set (DESIGN.md invariant 13,
//! unchanged: an answer moves its execution only if it still waits on that
//! interaction at that step, before its timeout), then one multi-row
//! `INSERT` of every signal and every answer taken, then one `UPDATE`
//! flagging the signaled executions for the wake scan, then one commit.
//! On SQLite the transaction runs on the writer's thread (`direct`).
//!
//! Order is kept: one writer takes the queue in arrival order, and the rows
//! of one `INSERT` get ascending ids in the order given, so two signals of
//! one name to one execution are consumed in the order they were sent, in
//! one batch or in two. Two answers to one interaction in one batch are
//! two compare-and-sets in one transaction: the first moves the execution
//! and the second finds it moved, as when they come one after the other.
//!
//! If the shared transaction fails before its commit, nothing was written:
//! when a statement failed (a deadlock with a checkpoint, which locks its
//! rows in another order), each delivery is tried alone, so one cannot hold
//! back the rest; when the database could not be reached, every caller is
//! told at once (alone, each would wait as long again). If the commit's
//! outcome is unknown, every caller whose delivery wrote something is told
//! so ([`StoreError::CommitUnknown`]): a signal is not idempotent, so it is
//! not sent again on the callers' behalf; an answer whose compare-and-set
//! moved nothing is refused as usual. A batch holds at most
//! [`MAX_BATCH`] deliveries and [`MAX_BATCH_BYTES`] of payload.

use std::sync::Arc;

use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{ColumnTrait, Condition, DatabaseConnection, DbBackend, EntityTrait, QueryFilter};
use sea_orm::{QueryTrait, Value};
use tokio::sync::{mpsc, oneshot};

use super::direct::{CommitFailed, Direct, OwnConn};
use super::entities::{execution, signal};
use super::signals::{mark_signaled, ANSWER, INTERACTION};
use super::writes::{unwound, Writes};
use super::{state, Store};
use crate::db::Db;
use crate::error::StoreError;

/// Most deliveries in one transaction (4 bound values per row inserted).
const MAX_BATCH: usize = 128;

/// Most payload bytes in one transaction: a batch of large payloads (a
/// request body may be 1 MiB) must stay well under MariaDB's 16 MiB
/// `max_allowed_packet`. A single larger delivery goes alone.
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// What to write.
#[derive(Debug)]
pub(super) enum Delivery {
    /// A signal: stored, and its execution flagged.
    Signal {
        execution_id: String,
        name: String,
        payload: String,
    },
    /// An answer to the interaction `execution_id` waits on at `step`:
    /// stored only if its compare-and-set moves the execution.
    Answer {
        execution_id: String,
        step: i64,
        answer: String,
    },
}

impl Delivery {
    /// The bytes it adds to a batch's `INSERT`.
    fn bytes(&self) -> usize {
        match self {
            Delivery::Signal { payload, .. } => payload.len(),
            Delivery::Answer { answer, .. } => answer.len(),
        }
    }
}

struct Pending {
    delivery: Delivery,
    /// A signal: `true`. An answer: whether it was taken.
    reply: oneshot::Sender<Result<bool, StoreError>>,
}

/// The queue in front of the delivery writer.
#[derive(Debug)]
pub(super) struct Deliverer {
    tx: mpsc::UnboundedSender<Pending>,
    /// What the group commit of deliveries did.
    pub(super) stats: Arc<crate::metrics::CheckpointStats>,
}

impl Deliverer {
    /// Starts the writer on the database runtime. One: it keeps arrival
    /// order, and a batch commits while the next one queues.
    pub(super) fn start(db: &Db) -> Deliverer {
        let (tx, rx) = mpsc::unbounded_channel();
        let backend = db.backend();
        let stats = Arc::new(crate::metrics::CheckpointStats::default());
        let s = stats.clone();
        let own = db.own_sqlite();
        db.spawn(move |conn, calls| writer(conn, own, calls, backend, rx, s));
        Deliverer { tx, stats }
    }

    /// Writes `delivery` with whatever else is queued; see [`Pending::reply`].
    pub(super) async fn submit(&self, delivery: Delivery) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending { delivery, reply })
            .map_err(|_| StoreError::RuntimeGone)?;
        answer.await.map_err(|_| StoreError::RuntimeGone)?
    }
}

async fn writer(
    conn: DatabaseConnection,
    own: Option<Arc<OwnConn>>,
    calls: Arc<crate::db::DbCalls>,
    backend: DbBackend,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    stats: Arc<crate::metrics::CheckpointStats>,
) {
    let mut carried: Option<Pending> = None;
    while let Some(batch) = next_batch(&mut rx, &mut carried).await {
        let began = calls.began(&conn);
        let applied = unwound("a delivery batch", async {
            #[cfg(test)]
            if batch.iter().any(|p| match &p.delivery {
                Delivery::Signal { execution_id, .. } | Delivery::Answer { execution_id, .. } => {
                    execution_id == super::writes::TEST_PANIC
                }
            }) {
                panic!("a test's panic");
            }
            apply(&conn, own.as_deref(), backend, &batch).await
        })
        .await
        .unwrap_or_else(|e| Err(Failed::AtCommit(e, vec![true; batch.len()])));
        calls.ended(began);
        match applied {
            Ok(results) => {
                stats.record(batch.len(), began.elapsed());
                for (p, r) in batch.into_iter().zip(results) {
                    let _ = p.reply.send(Ok(r));
                }
            }
            Err(Failed::AtCommit(e, written)) => {
                // Written or not: not sent again (a signal would be stored
                // twice, and an answer taken already would then be
                // refused). An answer whose compare-and-set moved nothing
                // wrote nothing either way: refused.
                for (p, w) in batch.into_iter().zip(written) {
                    let r = if w {
                        Err(StoreError::CommitUnknown(e.clone()))
                    } else {
                        Ok(false)
                    };
                    let _ = p.reply.send(r);
                }
            }
            Err(Failed::Before(e)) if batch.len() == 1 || unreachable(&e) => {
                // Alone, each would wait as long again for the same
                // answer: every caller hears it now.
                for p in batch {
                    let _ = p.reply.send(Err(StoreError::Db(e.clone())));
                }
            }
            Err(Failed::Before(e)) => {
                tracing::debug!(error = %e, deliveries = batch.len(), "shared delivery transaction failed; each alone");
                for p in batch {
                    let alone = unwound(
                        "a delivery",
                        apply(&conn, own.as_deref(), backend, std::slice::from_ref(&p)),
                    )
                    .await
                    .unwrap_or_else(|e| Err(Failed::AtCommit(e, vec![true])));
                    let r = match alone {
                        Ok(mut r) => Ok(r.pop().unwrap_or(false)),
                        Err(Failed::Before(e)) => Err(StoreError::Db(e)),
                        Err(Failed::AtCommit(e, written)) => {
                            if written.first().copied().unwrap_or(true) {
                                Err(StoreError::CommitUnknown(e))
                            } else {
                                Ok(false)
                            }
                        }
                    };
                    let _ = p.reply.send(r);
                }
            }
        }
    }
}

/// Waits for the next delivery, then takes whatever else is queued
/// already, up to [`MAX_BATCH`] deliveries and [`MAX_BATCH_BYTES`] of
/// payload (the one that would pass it is carried to the next batch, first
/// in line); `None` once the queue is closed.
async fn next_batch(
    rx: &mut mpsc::UnboundedReceiver<Pending>,
    carried: &mut Option<Pending>,
) -> Option<Vec<Pending>> {
    let first = match carried.take() {
        Some(p) => p,
        None => rx.recv().await?,
    };
    let mut bytes = first.delivery.bytes();
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        let Ok(p) = rx.try_recv() else { break };
        bytes += p.delivery.bytes();
        if bytes > MAX_BATCH_BYTES {
            *carried = Some(p);
            break;
        }
        batch.push(p);
    }
    Some(batch)
}

/// Whether `e` says the database could not be reached at all (no
/// connection, or a broken one), rather than that a statement failed.
fn unreachable(e: &sea_orm::DbErr) -> bool {
    matches!(
        e,
        sea_orm::DbErr::ConnectionAcquire(_) | sea_orm::DbErr::Conn(_)
    )
}

/// Why a batch's transaction failed.
enum Failed {
    /// Before the commit: nothing was written.
    Before(sea_orm::DbErr),
    /// At the commit: it may or may not have been written; per delivery,
    /// whether it wrote anything in the transaction (a refused answer did
    /// not).
    AtCommit(sea_orm::DbErr, Vec<bool>),
}

impl From<sea_orm::DbErr> for Failed {
    fn from(e: sea_orm::DbErr) -> Failed {
        Failed::Before(e)
    }
}

/// Writes a batch in one transaction; per delivery, [`Pending::reply`]'s
/// answer.
async fn apply(
    conn: &DatabaseConnection,
    own: Option<&OwnConn>,
    backend: DbBackend,
    batch: &[Pending],
) -> Result<Vec<bool>, Failed> {
    let deliveries: Vec<&Delivery> = batch.iter().map(|p| &p.delivery).collect();
    if backend == DbBackend::Sqlite {
        return Direct::transaction(conn, own, |d| {
            let out = Direct::now(write(d, backend, &deliveries))?;
            d.commit().map_err(|e| match e {
                CommitFailed::NotWritten(e) => Failed::Before(e),
                CommitFailed::Unknown(e) => Failed::AtCommit(e, out.clone()),
            })?;
            Ok(out)
        })
        .await?;
    }
    let txn = super::begin(conn).await?;
    let out = write(&txn, backend, &deliveries).await?;
    txn.commit()
        .await
        .map_err(|e| Failed::AtCommit(e, out.clone()))?;
    Ok(out)
}

/// The writes of a batch inside a transaction: the answers'
/// compare-and-sets in arrival order, one `INSERT` of every signal and
/// every answer taken, the signaled executions flagged (in id order).
async fn write<W: Writes>(
    w: &W,
    backend: DbBackend,
    batch: &[&Delivery],
) -> Result<Vec<bool>, sea_orm::DbErr> {
    let mut out = Vec::with_capacity(batch.len());
    let mut rows: Vec<(&str, &str, &str)> = Vec::with_capacity(batch.len());
    let mut flag = Vec::new();
    for d in batch {
        match d {
            Delivery::Signal {
                execution_id,
                name,
                payload,
            } => {
                rows.push((execution_id, name, payload));
                flag.push(execution_id.clone());
                out.push(true);
            }
            Delivery::Answer {
                execution_id,
                step,
                answer,
            } => {
                // The compare-and-set sets the flag itself.
                let taken = w.exec(answer_cas(backend, execution_id, *step)).await? == 1;
                if taken {
                    rows.push((execution_id, ANSWER, answer));
                }
                out.push(taken);
            }
        }
    }
    if !rows.is_empty() {
        w.exec_built(&signals_insert(backend, &rows)).await?;
    }
    mark_signaled(w, flag).await?;
    Ok(out)
}

/// The compare-and-set of an answer: from waiting on the interaction at
/// `step`, before its timeout (database clock), to answered.
fn answer_cas(backend: DbBackend, execution_id: &str, step: i64) -> sea_orm::Statement {
    let now = Store::now_expr(backend);
    execution::Entity::update_many()
        .col_expr(execution::Column::WaitSignal, Expr::value(ANSWER))
        .col_expr(execution::Column::Signaled, Expr::value(1i16))
        .col_expr(execution::Column::UpdatedAt, now.clone())
        .filter(execution::Column::Id.eq(execution_id))
        .filter(execution::Column::State.eq(state::WAITING_SIGNAL))
        .filter(execution::Column::WaitSignal.eq(INTERACTION))
        .filter(execution::Column::Step.eq(step))
        .filter(
            Condition::any()
                .add(execution::Column::WaitUntil.is_null())
                .add(Expr::col(execution::Column::WaitUntil).gt(now)),
        )
        .build(backend)
}

/// One `INSERT` of signals `(execution, name, payload)`, stamped with the
/// database clock, ids ascending in the order given.
pub(super) fn signals_insert(
    backend: DbBackend,
    rows: &[(&str, &str, &str)],
) -> sea_orm::sea_query::InsertStatement {
    let mut insert = Query::insert();
    insert.into_table(signal::Entity).columns([
        signal::Column::ExecutionId,
        signal::Column::Name,
        signal::Column::Payload,
        signal::Column::CreatedAt,
    ]);
    for (execution_id, name, payload) in rows {
        insert.values_panic([
            Expr::value(Value::from(*execution_id)),
            Expr::value(Value::from(*name)),
            Expr::value(Value::from(*payload)),
            Store::now_expr(backend),
        ]);
    }
    insert
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal(i: usize, bytes: usize) -> (Pending, oneshot::Receiver<Result<bool, StoreError>>) {
        let (reply, rx) = oneshot::channel();
        let delivery = Delivery::Signal {
            execution_id: format!("e{i}"),
            name: "go".into(),
            payload: "x".repeat(bytes),
        };
        (Pending { delivery, reply }, rx)
    }

    fn ids(batch: &[Pending]) -> Vec<String> {
        batch
            .iter()
            .map(|p| match &p.delivery {
                Delivery::Signal { execution_id, .. } | Delivery::Answer { execution_id, .. } => {
                    execution_id.clone()
                }
            })
            .collect()
    }

    /// A batch stops at the byte budget; the delivery that would pass it
    /// opens the next batch, so arrival order is kept; one delivery larger
    /// than the budget goes alone.
    #[tokio::test]
    async fn batches_stop_at_the_byte_budget_and_keep_arrival_order() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut replies = Vec::new();
        let mb = 1024 * 1024;
        for (i, size) in [mb, mb, mb, mb, mb, 5 * mb, 10].into_iter().enumerate() {
            let (p, r) = signal(i, size);
            replies.push(r);
            tx.send(p).map_err(drop).expect("queued");
        }
        drop(tx);
        let mut carried = None;
        let mut seen = Vec::new();
        while let Some(batch) = next_batch(&mut rx, &mut carried).await {
            let bytes: usize = batch.iter().map(|p| p.delivery.bytes()).sum();
            assert!(
                bytes <= MAX_BATCH_BYTES || batch.len() == 1,
                "{bytes} bytes in a batch of {}",
                batch.len()
            );
            seen.push(ids(&batch));
        }
        let want: Vec<Vec<String>> = [&["e0", "e1", "e2", "e3"][..], &["e4"], &["e5"], &["e6"]]
            .iter()
            .map(|b| b.iter().map(|s| s.to_string()).collect())
            .collect();
        assert_eq!(seen, want);
    }

    /// Past [`MAX_BATCH`] deliveries the next batch takes the rest.
    #[tokio::test]
    async fn batches_stop_at_the_count() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut replies = Vec::new();
        for i in 0..MAX_BATCH + 3 {
            let (p, r) = signal(i, 1);
            replies.push(r);
            tx.send(p).map_err(drop).expect("queued");
        }
        drop(tx);
        let mut carried = None;
        let first = next_batch(&mut rx, &mut carried).await.expect("one");
        let second = next_batch(&mut rx, &mut carried).await.expect("two");
        assert_eq!((first.len(), second.len()), (MAX_BATCH, 3));
        assert_eq!(
            ids(&second),
            vec![
                format!("e{MAX_BATCH}"),
                format!("e{}", MAX_BATCH + 1),
                format!("e{}", MAX_BATCH + 2)
            ]
        );
        assert!(next_batch(&mut rx, &mut carried).await.is_none());
    }
}
