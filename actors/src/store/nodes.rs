//! Cluster members and cluster events.

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, QueryOrder, QuerySelect,
    Statement,
};

use super::entities::{cluster_event, node};
use super::Store;
use crate::error::StoreError;

/// What a node says of itself when it registers.
#[derive(Clone, Debug)]
pub struct NodeRegistration {
    /// Its id.
    pub id: String,
    /// Its HTTP address.
    pub address: String,
    /// `active` or `standby`.
    pub role: String,
    /// Its state (`RUNNING`, `STANDBY`, ...).
    pub state: String,
    /// A fingerprint of its cluster-wide settings.
    pub fingerprint: String,
}

impl Store {
    /// Registers (or re-registers) a node, moving its epoch forward, and
    /// returns the new epoch. The heartbeat is stamped with the database
    /// clock.
    pub async fn register_node(&self, reg: NodeRegistration) -> Result<i64, StoreError> {
        let backend = self.backend();
        self.db()
            .run(move |c| async move {
                let txn = crate::store::begin(&c).await?;
                let epoch = upsert_node(&txn, backend, &reg).await?;
                txn.commit().await?;
                Ok(epoch)
            })
            .await
    }

    /// Sets a node's state (and role) as it reports it.
    pub async fn set_node_state(
        &self,
        id: &str,
        role: &str,
        state: &str,
    ) -> Result<(), StoreError> {
        use sea_orm::{ColumnTrait, QueryFilter};
        let (id, role, state) = (id.to_owned(), role.to_owned(), state.to_owned());
        self.db()
            .run(move |c| async move {
                node::Entity::update_many()
                    .col_expr(node::Column::Role, Expr::value(role))
                    .col_expr(node::Column::State, Expr::value(state))
                    .filter(node::Column::Id.eq(id))
                    .exec(&c)
                    .await?;
                Ok(())
            })
            .await
    }

    /// Every node, with the database clock's current time.
    pub async fn nodes(&self) -> Result<(Vec<node::Model>, i64), StoreError> {
        let now = self.db_now_ms().await?;
        let rows = self
            .db()
            .run(move |c| async move {
                Ok(node::Entity::find()
                    .order_by_asc(node::Column::Id)
                    .all(&c)
                    .await?)
            })
            .await?;
        Ok((rows, now))
    }

    /// Records a cluster event.
    pub async fn record_event(
        &self,
        kind: &str,
        node_id: &str,
        message: &str,
    ) -> Result<(), StoreError> {
        let backend = self.backend();
        let (kind, node_id, message) = (kind.to_owned(), node_id.to_owned(), message.to_owned());
        self.db()
            .run(move |c| async move { Ok(insert_event(&c, backend, &kind, &node_id, &message).await?) })
            .await
    }

    /// Cluster events, newest first.
    pub async fn events(&self, limit: u64) -> Result<Vec<cluster_event::Model>, StoreError> {
        self.db()
            .run(move |c| async move {
                Ok(cluster_event::Entity::find()
                    .order_by_desc(cluster_event::Column::Id)
                    .limit(limit)
                    .all(&c)
                    .await?)
            })
            .await
    }

    /// How many unfinished executions each node owns.
    pub async fn unfinished_by_owner(
        &self,
    ) -> Result<std::collections::HashMap<String, i64>, StoreError> {
        use super::entities::execution;
        use sea_orm::{ColumnTrait, QueryFilter};
        self.db()
            .run(move |c| async move {
                let rows: Vec<(Option<String>, i64)> = execution::Entity::find()
                    .select_only()
                    .column(execution::Column::OwnerNode)
                    .column_as(Expr::col(execution::Column::Id).count(), "n")
                    .filter(execution::Column::State.is_in(super::state::UNFINISHED))
                    .group_by(execution::Column::OwnerNode)
                    .into_tuple()
                    .all(&c)
                    .await?;
                Ok(rows
                    .into_iter()
                    .filter_map(|(o, n)| o.map(|o| (o, n)))
                    .collect())
            })
            .await
    }
}

/// Inserts a node row, or re-registers an existing one with its epoch
/// moved forward; returns the epoch. The heartbeat is stamped with the
/// database clock.
pub(super) async fn upsert_node(
    txn: &DatabaseTransaction,
    backend: DbBackend,
    reg: &NodeRegistration,
) -> Result<i64, StoreError> {
    let now = Store::now_expr(backend);
    let mut insert = Query::insert()
        .into_table(node::Entity)
        .columns([
            node::Column::Id,
            node::Column::Address,
            node::Column::Role,
            node::Column::State,
            node::Column::Epoch,
            node::Column::LastHeartbeat,
            node::Column::Fingerprint,
            node::Column::StartedAt,
        ])
        .values_panic([
            Expr::value(reg.id.as_str()),
            Expr::value(reg.address.as_str()),
            Expr::value(reg.role.as_str()),
            Expr::value(reg.state.as_str()),
            Expr::value(1i64),
            now.clone(),
            Expr::value(reg.fingerprint.as_str()),
            now.clone(),
        ])
        .to_owned();
    insert.on_conflict(
        OnConflict::column(node::Column::Id)
            .value(node::Column::Address, Expr::value(reg.address.as_str()))
            .value(node::Column::Role, Expr::value(reg.role.as_str()))
            .value(node::Column::State, Expr::value(reg.state.as_str()))
            .value(
                node::Column::Epoch,
                Expr::col((node::Entity, node::Column::Epoch)).add(1),
            )
            .value(node::Column::LastHeartbeat, now.clone())
            .value(
                node::Column::Fingerprint,
                Expr::value(reg.fingerprint.as_str()),
            )
            .value(node::Column::StartedAt, now)
            .to_owned(),
    );
    txn.execute(&insert).await?;
    let row = node::Entity::find_by_id(reg.id.clone())
        .one(txn)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            kind: "node",
            id: reg.id.clone(),
        })?;
    Ok(row.epoch)
}

/// Records a cluster event, stamped with the database clock.
pub(super) async fn insert_event(
    conn: &impl ConnectionTrait,
    backend: DbBackend,
    kind: &str,
    node_id: &str,
    message: &str,
) -> Result<(), sea_orm::DbErr> {
    let insert = Query::insert()
        .into_table(cluster_event::Entity)
        .columns([
            cluster_event::Column::Time,
            cluster_event::Column::Kind,
            cluster_event::Column::NodeId,
            cluster_event::Column::Message,
        ])
        .values_panic([
            Store::now_expr(backend),
            Expr::value(kind),
            Expr::value(node_id),
            Expr::value(message),
        ])
        .to_owned();
    conn.execute(&insert).await?;
    Ok(())
}

/// This node's unfinished executions counted in the database, for
/// `/metrics`. One pass over the executions the node owns, so its cost
/// grows with them: `/metrics` refreshes it in the background at most
/// every few seconds instead of on every scrape.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OwnedCounts {
    /// This node's unfinished executions, by state.
    pub owned: Vec<(String, i64)>,
    /// This node's parked executions by what they wait for: `timer`,
    /// `signal`, `interaction` or `child`.
    pub waiting: Vec<(String, i64)>,
}

impl Store {
    /// Counts this node's unfinished executions by state, and its parked
    /// ones by what they wait for, in one pass (on SQLite, on a read-only
    /// connection: it never holds up this node's writes or heartbeats).
    pub async fn owned_counts(&self, node: &str) -> Result<OwnedCounts, StoreError> {
        let backend = self.backend();
        let node = node.to_owned();
        self.db()
            .run_report(move |c| async move {
                let unfinished = super::state::UNFINISHED
                    .iter()
                    .map(|s| format!("'{s}'"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!(
                    "SELECT state, CASE WHEN state = '{waiting}' THEN 'timer' \
                       WHEN state <> '{waiting_signal}' THEN '' \
                       WHEN wait_signal IN ('{interaction}', '{answer}') THEN 'interaction' \
                       WHEN wait_signal = '{child}' THEN 'child' ELSE 'signal' END AS kind, \
                     COUNT(*) AS n FROM executions \
                     WHERE owner_node = {p} AND state IN ({unfinished}) GROUP BY 1, 2",
                    waiting = super::state::WAITING,
                    waiting_signal = super::state::WAITING_SIGNAL,
                    interaction = super::INTERACTION,
                    answer = super::ANSWER,
                    child = super::CHILD_DONE,
                    p = if backend == DbBackend::Postgres {
                        "$1"
                    } else {
                        "?"
                    },
                );
                let rows = c
                    .query_all_raw(Statement::from_sql_and_values(backend, sql, [node.into()]))
                    .await?;
                let mut out = OwnedCounts::default();
                for r in rows {
                    let (state, kind, n) = (
                        r.try_get::<String>("", "state")?,
                        r.try_get::<String>("", "kind")?,
                        r.try_get::<i64>("", "n")?,
                    );
                    match out.owned.iter_mut().find(|(s, _)| *s == state) {
                        Some((_, v)) => *v += n,
                        None => out.owned.push((state, n)),
                    }
                    if !kind.is_empty() {
                        match out.waiting.iter_mut().find(|(k, _)| *k == kind) {
                            Some((_, v)) => *v += n,
                            None => out.waiting.push((kind, n)),
                        }
                    }
                }
                Ok(out)
            })
            .await
    }

    /// How long the oldest unfinished execution that nobody runs has
    /// waited for a runner, in ms (0: none): one whose owner is not a live
    /// active node (in cluster mode: not `RUNNING` and active, or its
    /// heartbeat older than `stale_ms`; `None` in standalone mode, where
    /// nodes do not heartbeat), counted from its owner's last heartbeat,
    /// or one with no owner, counted from its last update; or a parked one
    /// overdue by more than `overdue_ms`, counted from its due time.
    /// Cluster-wide, and cheap whatever the number of executions: it reads
    /// the nodes, then probes the executions by index (one probe per node
    /// that is not live, one range for the unowned, one for the overdue).
    pub async fn oldest_unowned_ms(
        &self,
        stale_ms: Option<i64>,
        overdue_ms: i64,
    ) -> Result<i64, StoreError> {
        let backend = self.backend();
        self.db()
            .run_report(move |c| async move {
                let now = Store::now_sql_for_index(backend);
                let unfinished = super::state::UNFINISHED
                    .iter()
                    .map(|s| format!("'{s}'"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let dead = match stale_ms {
                    Some(ms) => format!(
                        "n.state <> '{}' OR n.role <> 'active' OR n.last_heartbeat < {now} - {ms}",
                        super::node_state::RUNNING
                    ),
                    None => format!("n.state <> '{}'", super::node_state::RUNNING),
                };
                let sql = format!(
                    "SELECT \
                       (SELECT {now} - MIN(n.last_heartbeat) FROM nodes n WHERE ({dead}) \
                         AND EXISTS (SELECT 1 FROM executions e WHERE e.owner_node = n.id AND e.state IN ({unfinished}))) AS dead_owner, \
                       (SELECT {now} - MIN(o.updated_at) FROM executions o \
                         WHERE o.owner_node IS NULL AND o.state IN ({unfinished})) AS no_owner, \
                       (SELECT {now} - MIN(w.wait_until) FROM executions w \
                         WHERE w.state IN ('{}', '{}') AND w.wait_until < {now} - {overdue_ms}) AS overdue",
                    super::state::WAITING,
                    super::state::WAITING_SIGNAL,
                );
                let row = c
                    .query_one_raw(Statement::from_string(backend, sql))
                    .await?;
                let mut oldest = 0;
                if let Some(r) = row {
                    for col in ["dead_owner", "no_owner", "overdue"] {
                        oldest = Ord::max(oldest, r.try_get::<Option<i64>>("", col)?.unwrap_or(0));
                    }
                }
                Ok(oldest)
            })
            .await
    }
}
