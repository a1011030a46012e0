//! Deleting finished executions: one at a time (`DELETE
//! /api/executions/{eid}`) or in bounded batches (retention).
//!
//! What may be deleted: a finished execution (`completed`, `failed`,
//! `canceled`) none of whose children is unfinished and whose parent, if
//! it still exists, is `completed` or `canceled`. A waiting parent reads
//! its children's rows, and a parent that finds a child missing starts it
//! again: deleting the child of a running parent would run that child
//! twice. A `failed` parent counts as running here: a resume runs its
//! failed `workflow` or `foreach` item again, which reads the same
//! children.
//!
//! Signals whose execution is gone (sent in the moment before a deletion,
//! or by a child to a deleted parent) are purged too.
//!
//! Every deletion, and every reopening of a failed execution
//! ([`Store::reopen_failed`]), first updates the retention row of
//! `cluster_lock`. So they run one at a time across the cluster: no two
//! nodes purge the same rows, and no execution is resumed between the
//! check that it is finished and its deletion.

use baton_migrations::RETENTION_LOCK_ROW;
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Statement,
};

use super::entities::{cluster_event, execution, item_log, signal, webhook_delivery};
use super::{state, Store};
use crate::error::StoreError;

/// What [`Store::delete_execution`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deletion {
    /// The execution, its item log and its signals are gone.
    Deleted,
    /// No such execution.
    NotFound,
    /// It is not finished (its state).
    Unfinished(String),
    /// Its parent (this id) is unfinished or failed (a resume runs it
    /// again) and may still read it.
    ParentUnfinished(String),
    /// This many of its children are not finished.
    ChildrenUnfinished(u64),
}

/// What one purge deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    /// Executions.
    pub executions: u64,
    /// Their item log records.
    pub log_records: u64,
    /// Their signals.
    pub signals: u64,
    /// Cluster events.
    pub cluster_events: u64,
}

const FINISHED: [&str; 3] = [state::COMPLETED, state::FAILED, state::CANCELED];

/// The states of a parent that may still read its children.
const PARENT_READS: [&str; 4] = [
    state::RUNNING,
    state::WAITING,
    state::WAITING_SIGNAL,
    state::FAILED,
];

/// Takes the retention lock; must be the first statement of the
/// transaction. A missing lock row (a schema not made by the migrations)
/// is an error, not a lock silently not taken.
pub(super) async fn retention_lock(txn: &DatabaseTransaction) -> Result<(), sea_orm::DbErr> {
    let locked = txn
        .execute_unprepared(&format!(
            "UPDATE cluster_lock SET counter = counter + 1 WHERE id = {RETENTION_LOCK_ROW}"
        ))
        .await?;
    if locked.rows_affected() != 1 {
        return Err(sea_orm::DbErr::Custom(format!(
            "row {RETENTION_LOCK_ROW} of cluster_lock is missing; run `baton migrate`"
        )));
    }
    Ok(())
}

fn quoted(states: &[&str]) -> String {
    states
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Deletes `ids` (already checked deletable under the lock) with their
/// item log and signals; the logs and signals only of rows that are gone.
async fn delete_rows(
    txn: &DatabaseTransaction,
    ids: Vec<String>,
) -> Result<Purged, sea_orm::DbErr> {
    let deleted = execution::Entity::delete_many()
        .filter(execution::Column::Id.is_in(ids.clone()))
        .filter(execution::Column::State.is_in(FINISHED))
        .exec(txn)
        .await?
        .rows_affected;
    let still_there = Query::select()
        .column(execution::Column::Id)
        .from(execution::Entity)
        .and_where(Expr::col(execution::Column::Id).is_in(ids.clone()))
        .to_owned();
    let log_records = item_log::Entity::delete_many()
        .filter(item_log::Column::ExecutionId.is_in(ids.clone()))
        .filter(item_log::Column::ExecutionId.not_in_subquery(still_there.clone()))
        .exec(txn)
        .await?
        .rows_affected;
    let signals = signal::Entity::delete_many()
        .filter(signal::Column::ExecutionId.is_in(ids))
        .filter(signal::Column::ExecutionId.not_in_subquery(still_there))
        .exec(txn)
        .await?
        .rows_affected;
    Ok(Purged {
        executions: deleted,
        log_records,
        signals,
        cluster_events: 0,
    })
}

impl Store {
    /// Deletes one finished execution with its item log and signals, if
    /// it may be deleted (see the module documentation); its children, if
    /// any, stay.
    pub async fn delete_execution(&self, id: &str) -> Result<Deletion, StoreError> {
        let id = id.to_owned();
        self.db()
            .run(move |c| async move {
                let txn = crate::store::begin(&c).await?;
                retention_lock(&txn).await?;
                let Some(row) = execution::Entity::find_by_id(id.as_str()).one(&txn).await? else {
                    txn.rollback().await?;
                    return Ok(Deletion::NotFound);
                };
                if state::UNFINISHED.contains(&row.state.as_str()) {
                    txn.rollback().await?;
                    return Ok(Deletion::Unfinished(row.state));
                }
                if let Some(parent) = &row.parent_id {
                    let p = execution::Entity::find_by_id(parent.as_str())
                        .one(&txn)
                        .await?;
                    if p.is_some_and(|p| PARENT_READS.contains(&p.state.as_str())) {
                        txn.rollback().await?;
                        return Ok(Deletion::ParentUnfinished(parent.clone()));
                    }
                }
                let children = execution::Entity::find()
                    .filter(execution::Column::ParentId.eq(id.as_str()))
                    .filter(execution::Column::State.is_in(state::UNFINISHED))
                    .count(&txn)
                    .await?;
                if children > 0 {
                    txn.rollback().await?;
                    return Ok(Deletion::ChildrenUnfinished(children));
                }
                delete_rows(&txn, vec![id]).await?;
                txn.commit().await?;
                Ok(Deletion::Deleted)
            })
            .await
    }

    /// One retention batch: deletes at most `batch` executions that ended
    /// more than `finished_after_ms` ago (database clock) and may be
    /// deleted, oldest first, with their logs and signals; and at most
    /// `batch` cluster events older than `events_after_ms`.
    pub async fn purge(
        &self,
        finished_after_ms: u64,
        events_after_ms: u64,
        batch: u64,
    ) -> Result<Purged, StoreError> {
        let backend = self.backend();
        self.db()
            .run(move |c| async move {
                let txn = crate::store::begin(&c).await?;
                retention_lock(&txn).await?;
                let now: i64 = txn
                    .query_one_raw(Statement::from_string(
                        backend,
                        format!("SELECT {} AS now_ms", Store::now_sql(backend)),
                    ))
                    .await?
                    .ok_or_else(|| sea_orm::DbErr::Custom("no clock row".into()))?
                    .try_get("", "now_ms")?;
                let age = |ms: u64| now.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX));
                let sql = format!(
                    "SELECT e.id FROM executions e \
                     WHERE e.ended_at < {cutoff} AND e.state IN ({finished}) \
                     AND NOT EXISTS (SELECT 1 FROM executions c \
                         WHERE c.parent_id = e.id AND c.state IN ({unfinished})) \
                     AND NOT EXISTS (SELECT 1 FROM executions p \
                         WHERE p.id = e.parent_id AND p.state IN ({parent_reads})) \
                     ORDER BY e.ended_at LIMIT {batch}",
                    cutoff = age(finished_after_ms),
                    finished = quoted(&FINISHED),
                    unfinished = quoted(&state::UNFINISHED),
                    parent_reads = quoted(&PARENT_READS),
                );
                let ids: Vec<String> = txn
                    .query_all_raw(Statement::from_string(backend, sql))
                    .await?
                    .iter()
                    .map(|r| r.try_get::<String>("", "id"))
                    .collect::<Result<_, _>>()?;
                let mut purged = if ids.is_empty() {
                    Purged::default()
                } else {
                    delete_rows(&txn, ids).await?
                };
                let events: Vec<i64> = cluster_event::Entity::find()
                    .select_only()
                    .column(cluster_event::Column::Id)
                    .filter(cluster_event::Column::Time.lt(age(events_after_ms)))
                    .order_by_asc(cluster_event::Column::Id)
                    .limit(batch)
                    .into_tuple()
                    .all(&txn)
                    .await?;
                if !events.is_empty() {
                    // Their webhook deliveries go with them.
                    webhook_delivery::Entity::delete_many()
                        .filter(webhook_delivery::Column::EventId.is_in(events.clone()))
                        .exec(&txn)
                        .await?;
                    purged.cluster_events = cluster_event::Entity::delete_many()
                        .filter(cluster_event::Column::Id.is_in(events))
                        .exec(&txn)
                        .await?
                        .rows_affected;
                }
                let orphans: Vec<i64> = txn
                    .query_all_raw(Statement::from_string(
                        backend,
                        format!(
                            "SELECT s.id FROM signals s WHERE NOT EXISTS \
                             (SELECT 1 FROM executions e WHERE e.id = s.execution_id) \
                             ORDER BY s.id LIMIT {batch}"
                        ),
                    ))
                    .await?
                    .iter()
                    .map(|r| r.try_get::<i64>("", "id"))
                    .collect::<Result<_, _>>()?;
                if !orphans.is_empty() {
                    purged.signals += signal::Entity::delete_many()
                        .filter(signal::Column::Id.is_in(orphans))
                        .exec(&txn)
                        .await?
                        .rows_affected;
                }
                txn.commit().await?;
                Ok(purged)
            })
            .await
    }
}
