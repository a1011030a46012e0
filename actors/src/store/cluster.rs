//! Cluster membership in the database: joining, heartbeats, promotion,
//! takeover of a dead node, orphan adoption and leaving.
//!
//! The database is the only channel between nodes. Every membership
//! transaction first updates the single `cluster_lock` row ([`lock_step`]),
//! so they run one at a time on every backend and each sees the others'
//! committed results; that is what keeps the number of active nodes at or
//! below `cluster.active_nodes` (DESIGN.md invariant 6) and lets exactly
//! one of several racing detectors win a takeover. Liveness is judged in
//! SQL against the database server's clock (invariant 3).

use crate::messages::NodeRole;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, Statement,
};

use super::entities::{execution, node};
use super::nodes::{insert_event, upsert_node};
use super::{state, NodeRegistration, Store};
use crate::error::StoreError;

/// Node states as stored.
pub mod node_state {
    /// An active node running workflows.
    pub const RUNNING: &str = "RUNNING";
    /// A live standby.
    pub const STANDBY: &str = "STANDBY";
    /// A node that fenced itself and has not rejoined.
    pub const FENCED: &str = "FENCED";
    /// Declared dead by a takeover.
    pub const FAILED: &str = "FAILED";
    /// Left the cluster gracefully.
    pub const STOPPED: &str = "STOPPED";
    /// States of nodes that are gone.
    pub const GONE: [&str; 2] = [FAILED, STOPPED];
}

/// The result of a takeover attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Takeover {
    /// This transaction declared the node dead.
    Won {
        /// Executions moved, by new owner.
        moved: Vec<(String, usize)>,
        /// Nodes promoted to active.
        promoted: Vec<String>,
    },
    /// Someone else did first, or the node is alive after all.
    Lost,
    /// Nothing was decided: another transaction held the cluster lock past
    /// this scan's wait (the store's `membership_lock_wait`). The next
    /// scan tries again; this one should take no further lock step.
    Busy,
}

/// Serializes membership transactions; must be the first statement.
async fn lock_step(txn: &DatabaseTransaction) -> Result<(), sea_orm::DbErr> {
    txn.execute_unprepared(LOCK_SQL).await?;
    Ok(())
}

const LOCK_SQL: &str = "UPDATE cluster_lock SET counter = counter + 1 WHERE id = 1";

/// [`lock_step`] for the membership steps of a peer scan (a takeover, a
/// promotion, an adoption), which the next scan repeats: it waits for the
/// lock at most `wait` (the store's `membership_lock_wait`) and returns
/// false, with the transaction rolled back, when the wait ran out. A
/// frozen holder then costs the scans one step each, not the watch that
/// must see the holder's heartbeat age (DESIGN.md invariant 4).
async fn lock_step_within(
    txn: DatabaseTransaction,
    backend: DbBackend,
    wait: Option<std::time::Duration>,
) -> Result<Option<DatabaseTransaction>, sea_orm::DbErr> {
    let sql = match (wait, backend) {
        (Some(w), DbBackend::Postgres) => format!(
            "SET LOCAL lock_timeout = '{}ms'; {LOCK_SQL}; SET LOCAL lock_timeout = DEFAULT",
            w.as_millis().max(1)
        ),
        // MariaDB runs what is inside `/*M! */`; MySQL reads a comment.
        (Some(w), DbBackend::MySql) => format!(
            "/*M! SET STATEMENT innodb_lock_wait_timeout = {} FOR */ {LOCK_SQL}",
            w.as_secs()
        ),
        _ => LOCK_SQL.to_owned(),
    };
    match txn.execute_unprepared(&sql).await {
        Ok(_) => Ok(Some(txn)),
        Err(e) if super::is_lock_wait_timeout(&e) => {
            tracing::debug!("the cluster lock is held by another transaction past the wait; this step is left to the next scan");
            txn.rollback().await?;
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn stale_sql(backend: DbBackend, timeout_ms: i64) -> Expr {
    Expr::cust(format!("{} - {timeout_ms}", Store::now_sql(backend)))
}

/// Live nodes (not gone, heartbeat within the timeout by the database clock).
async fn live_nodes(
    txn: &DatabaseTransaction,
    backend: DbBackend,
    timeout_ms: i64,
) -> Result<Vec<node::Model>, sea_orm::DbErr> {
    node::Entity::find()
        .filter(node::Column::State.is_not_in(node_state::GONE))
        .filter(Expr::col(node::Column::LastHeartbeat).gte(stale_sql(backend, timeout_ms)))
        .order_by_asc(node::Column::Id)
        .all(txn)
        .await
}

fn is_active(n: &node::Model) -> bool {
    n.role == NodeRole::Active.as_str() && n.state == node_state::RUNNING
}

/// Promotes live standbys while fewer than `active_nodes` are active:
/// `first` (the detector that won a takeover: certainly alive), then the
/// one up longest (its `started_at`, then its id), one whose heartbeat
/// lags the newest by half a timeout after every fresher one. Inside a
/// locked transaction.
///
/// Not "whoever asks first": a node that fenced itself and rejoined a
/// moment later (its slot freed by its own fence) then took the slot back
/// on its first scan, ahead of the standby that had waited all along, a
/// race the waiting standby lost often enough on SQLite to stay standby
/// for good (`claims::*::a_rejoined_node_does_not_jump_the_standby_queue`).
///
/// Every `active`/`RUNNING` row counts, live or not: an active node whose
/// heartbeat went stale keeps its slot until a takeover marks it failed,
/// and the takeover promotes in the same transaction. Counting only live
/// rows let a standby promote itself in the moment between a paused
/// node's heartbeat going stale and its takeover, so that two rows were
/// active at once with `active_nodes = 1` (invariant 6 holds for rows,
/// not only for live rows; `cluster::*::a_paused_zombie_fences_itself_and_writes_nothing`
/// caught it in CI).
async fn promote(
    txn: &DatabaseTransaction,
    backend: DbBackend,
    timeout_ms: i64,
    active_nodes: u32,
    first: Option<&str>,
) -> Result<Vec<String>, sea_orm::DbErr> {
    let live = live_nodes(txn, backend, timeout_ms).await?;
    let active = node::Entity::find()
        .filter(node::Column::Role.eq(NodeRole::Active.as_str()))
        .filter(node::Column::State.eq(node_state::RUNNING))
        .count(txn)
        .await? as usize;
    let mut candidates: Vec<&node::Model> = live
        .iter()
        .filter(|n| n.state == node_state::STANDBY)
        .collect();
    // A standby whose heartbeat is half a timeout behind the newest may be
    // dying: any fresher one goes first.
    let newest = live.iter().map(|n| n.last_heartbeat).max().unwrap_or(0);
    let doubtful = |n: &node::Model| n.last_heartbeat < newest - timeout_ms / 2;
    let key = |n: &node::Model| (Some(n.id.as_str()) != first, doubtful(n), n.started_at);
    candidates.sort_by(|a, b| (key(a), &a.id).cmp(&(key(b), &b.id)));
    let open = (active_nodes as usize).saturating_sub(active);
    let mut promoted = Vec::new();
    for c in candidates.into_iter().take(open) {
        // Still a live standby at the epoch read: a node that fenced itself
        // meanwhile (its fence is serialized by the same lock) is skipped.
        let r = node::Entity::update_many()
            .col_expr(node::Column::Role, Expr::value(NodeRole::Active.as_str()))
            .col_expr(node::Column::State, Expr::value(node_state::RUNNING))
            .filter(node::Column::Id.eq(c.id.as_str()))
            .filter(node::Column::Epoch.eq(c.epoch))
            .filter(node::Column::State.eq(node_state::STANDBY))
            .filter(Expr::col(node::Column::LastHeartbeat).gte(stale_sql(backend, timeout_ms)))
            .exec(txn)
            .await?;
        if r.rows_affected == 1 {
            promoted.push(c.id.clone());
        }
    }
    Ok(promoted)
}

/// Moves `from`'s unfinished executions to the live active nodes,
/// round-robin, each under a new epoch. Inside a locked transaction.
async fn move_executions(
    txn: &DatabaseTransaction,
    backend: DbBackend,
    from: &str,
    timeout_ms: i64,
) -> Result<Vec<(String, usize)>, sea_orm::DbErr> {
    let targets: Vec<String> = live_nodes(txn, backend, timeout_ms)
        .await?
        .into_iter()
        .filter(|n| is_active(n) && n.id != from)
        .map(|n| n.id)
        .collect();
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = execution::Entity::find()
        .filter(execution::Column::OwnerNode.eq(from))
        .filter(execution::Column::State.is_in(state::UNFINISHED))
        .order_by_asc(execution::Column::CreatedAt)
        .all(txn)
        .await?
        .into_iter()
        .map(|e| e.id)
        .collect();
    let mut moved = Vec::new();
    for (i, target) in targets.iter().enumerate() {
        let mine: Vec<&String> = ids.iter().skip(i).step_by(targets.len()).collect();
        for chunk in mine.chunks(500) {
            execution::Entity::update_many()
                .col_expr(execution::Column::OwnerNode, Expr::value(target.as_str()))
                .col_expr(
                    execution::Column::OwnerEpoch,
                    Expr::col(execution::Column::OwnerEpoch).add(1),
                )
                .col_expr(execution::Column::UpdatedAt, Store::now_expr(backend))
                .filter(execution::Column::Id.is_in(chunk.iter().map(|s| s.as_str())))
                .filter(execution::Column::OwnerNode.eq(from))
                .exec(txn)
                .await?;
        }
        if !mine.is_empty() {
            moved.push((target.clone(), mine.len()));
        }
    }
    Ok(moved)
}

/// A peer as one scan saw it ([`Store::peers`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerView {
    /// Its node id.
    pub id: String,
    /// Its epoch.
    pub epoch: i64,
    /// Its last heartbeat, as the database stamped it.
    pub last_heartbeat: i64,
    /// Whether that heartbeat is older than the failover timeout by the
    /// database clock.
    pub stale: bool,
}

/// How a refusal to join for settings that differ from a live peer's
/// begins (the supervisor records it as a `config-refused` event).
pub const SETTINGS_REFUSAL: &str = "refusing to join (settings differ): ";

/// The first key at which two settings fingerprints (JSON) differ.
pub fn fingerprint_difference(ours: &str, theirs: &str) -> Option<(String, String, String)> {
    fn walk(
        path: &str,
        a: &serde_json::Value,
        b: &serde_json::Value,
    ) -> Option<(String, String, String)> {
        match (a, b) {
            (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    let (va, vb) = (
                        x.get(k).unwrap_or(&serde_json::Value::Null),
                        y.get(k).unwrap_or(&serde_json::Value::Null),
                    );
                    if let Some(d) = walk(&p, va, vb) {
                        return Some(d);
                    }
                }
                None
            }
            _ if a == b => None,
            _ => Some((path.to_owned(), a.to_string(), b.to_string())),
        }
    }
    let a: serde_json::Value = serde_json::from_str(ours).unwrap_or_default();
    let b: serde_json::Value = serde_json::from_str(theirs).unwrap_or_default();
    walk("", &a, &b)
}

impl Store {
    /// Joins (or rejoins) the cluster as a standby and returns the node's
    /// new epoch. Refused, naming the key, when a live node's cluster-wide
    /// settings differ. The node's unfinished executions get a new epoch,
    /// fencing out any earlier incarnation of this node still running
    /// somewhere; as a standby it owns them only until an active node
    /// adopts them (or it is promoted and runs them itself).
    ///
    /// A live row of the same id whose epoch is not `previous_epoch` (this
    /// process's own last epoch) belongs to another process still holding
    /// a valid lease (a restarted pod while the old one runs): the join is
    /// refused until that lease runs out, so two processes never write as
    /// one node.
    pub async fn join_cluster(
        &self,
        reg: NodeRegistration,
        timeout_ms: i64,
        previous_epoch: Option<i64>,
    ) -> Result<i64, StoreError> {
        let backend = self.backend();
        self.db()
            .run(move |c| async move {
                let txn = crate::store::begin(&c).await?;
                lock_step(&txn).await?;
                for peer in live_nodes(&txn, backend, timeout_ms).await? {
                    if peer.id == reg.id {
                        let ours = previous_epoch == Some(peer.epoch);
                        let holding = matches!(peer.state.as_str(), node_state::RUNNING | node_state::STANDBY);
                        if holding && !ours {
                            txn.rollback().await?;
                            return Err(StoreError::Conflict(format!(
                                "refusing to join: node id {} is in use by another live process (epoch {}, its lease may still be valid); waiting for it to stop or time out",
                                reg.id, peer.epoch
                            )));
                        }
                        continue;
                    }
                    if let Some((key, ours, theirs)) = fingerprint_difference(&reg.fingerprint, &peer.fingerprint) {
                        txn.rollback().await?;
                        return Err(StoreError::Conflict(format!(
                            "{SETTINGS_REFUSAL}`{key}` is {ours} on this node but {theirs} on node {} (every node of a cluster needs the same [cluster] and [scripts] settings)",
                            peer.id
                        )));
                    }
                }
                let reg = NodeRegistration {
                    role: NodeRole::Standby.as_str().into(),
                    state: node_state::STANDBY.into(),
                    ..reg
                };
                let epoch = upsert_node(&txn, backend, &reg).await?;
                // Fence out any earlier incarnation of this node.
                execution::Entity::update_many()
                    .col_expr(execution::Column::OwnerEpoch, Expr::col(execution::Column::OwnerEpoch).add(1))
                    .filter(execution::Column::OwnerNode.eq(reg.id.as_str()))
                    .filter(execution::Column::State.is_in(state::UNFINISHED))
                    .exec(&txn)
                    .await?;
                insert_event(&txn, backend, "join", &reg.id, &format!("node {} joined as standby at epoch {epoch}", reg.id)).await?;
                txn.commit().await?;
                Ok(epoch)
            })
            .await
    }

    /// Writes this node's heartbeat, stamped with the database clock, if
    /// its row still has `epoch` and is not declared gone. Returns the row
    /// as it is now, or `None` when the write was refused: the node has
    /// been declared dead or its epoch moved, and must fence itself.
    pub async fn heartbeat(&self, id: &str, epoch: i64) -> Result<Option<node::Model>, StoreError> {
        let backend = self.backend();
        let id = id.to_owned();
        self.db()
            .run(move |c| async move {
                let r = node::Entity::update_many()
                    .col_expr(node::Column::LastHeartbeat, Store::now_expr(backend))
                    .filter(node::Column::Id.eq(id.as_str()))
                    .filter(node::Column::Epoch.eq(epoch))
                    .filter(node::Column::State.is_not_in(node_state::GONE))
                    .exec(&c)
                    .await?;
                if r.rows_affected == 0 {
                    return Ok(None);
                }
                Ok(node::Entity::find_by_id(id).one(&c).await?)
            })
            .await
    }

    /// Every node other than `me` that is not gone: its epoch, its last
    /// heartbeat as stamped, and whether that heartbeat is older than the
    /// failover timeout by the database clock (judged in SQL, invariant 3).
    pub async fn peers(&self, me: &str, timeout_ms: i64) -> Result<Vec<PeerView>, StoreError> {
        let backend = self.backend();
        let me = me.to_owned();
        self.db()
            .run(move |c| async move {
                let all = node::Entity::find()
                    .filter(node::Column::Id.ne(me.as_str()))
                    .filter(node::Column::State.is_not_in(node_state::GONE))
                    .all(&c)
                    .await?;
                let stale: Vec<String> = node::Entity::find()
                    .filter(node::Column::Id.ne(me.as_str()))
                    .filter(node::Column::State.is_not_in(node_state::GONE))
                    .filter(
                        Expr::col(node::Column::LastHeartbeat).lt(stale_sql(backend, timeout_ms)),
                    )
                    .all(&c)
                    .await?
                    .into_iter()
                    .map(|n| n.id)
                    .collect();
                Ok(all
                    .into_iter()
                    .map(|n| PeerView {
                        stale: stale.contains(&n.id),
                        id: n.id,
                        epoch: n.epoch,
                        last_heartbeat: n.last_heartbeat,
                    })
                    .collect())
            })
            .await
    }

    /// Declares `victim` dead and moves its work, in one transaction
    /// (DESIGN.md invariant 6): re-checks that it is still stale (unless
    /// `forced`, an operator's eviction) at the epoch seen, bumps its epoch
    /// and marks it failed, promotes standbys while fewer than
    /// `active_nodes` are active, moves its unfinished executions to the
    /// live active nodes under new epochs, and records the event. Exactly
    /// one of several racing callers wins.
    pub async fn take_over(
        &self,
        me: &str,
        victim: &str,
        seen_epoch: i64,
        timeout_ms: i64,
        active_nodes: u32,
        forced: bool,
    ) -> Result<Takeover, StoreError> {
        let backend = self.backend();
        let (me, victim) = (me.to_owned(), victim.to_owned());
        let wait = self.db().limits().membership_lock_wait;
        self.db()
            .run(move |c| async move {
                let txn = crate::store::begin(&c).await?;
                // An operator's eviction waits its turn; a scan's takeover
                // leaves a held lock to its next scan.
                let wait = if forced { None } else { wait };
                let Some(txn) = lock_step_within(txn, backend, wait).await? else {
                    return Ok(Takeover::Busy);
                };
                let mut q = node::Entity::find()
                    .filter(node::Column::Id.eq(victim.as_str()))
                    .filter(node::Column::Epoch.eq(seen_epoch))
                    .filter(node::Column::State.is_not_in(node_state::GONE));
                if !forced {
                    q = q.filter(Expr::col(node::Column::LastHeartbeat).lt(stale_sql(backend, timeout_ms)));
                }
                if q.one(&txn).await?.is_none() {
                    txn.rollback().await?;
                    return Ok(Takeover::Lost);
                }
                // The staleness condition again in the UPDATE, and its row
                // count checked: a heartbeat committed since the read wins.
                let mut declare = node::Entity::update_many()
                    .col_expr(node::Column::State, Expr::value(node_state::FAILED))
                    .col_expr(node::Column::Role, Expr::value(NodeRole::Standby.as_str()))
                    .col_expr(node::Column::Epoch, Expr::col(node::Column::Epoch).add(1))
                    .filter(node::Column::Id.eq(victim.as_str()))
                    .filter(node::Column::Epoch.eq(seen_epoch))
                    .filter(node::Column::State.is_not_in(node_state::GONE));
                if !forced {
                    declare = declare.filter(Expr::col(node::Column::LastHeartbeat).lt(stale_sql(backend, timeout_ms)));
                }
                if declare.exec(&txn).await?.rows_affected != 1 {
                    txn.rollback().await?;
                    return Ok(Takeover::Lost);
                }
                let promoted = promote(&txn, backend, timeout_ms, active_nodes, Some(&me)).await?;
                let moved = move_executions(&txn, backend, &victim, timeout_ms).await?;
                let what = if forced { "evicted by an operator" } else { "missed its heartbeats" };
                let moved_text: Vec<String> = moved.iter().map(|(n, k)| format!("{k} to {n}")).collect();
                insert_event(
                    &txn,
                    backend,
                    "failover",
                    &victim,
                    &format!(
                        "node {victim} {what}; node {me} took over: executions moved: [{}]; promoted: [{}]",
                        moved_text.join(", "),
                        promoted.join(", ")
                    ),
                )
                .await?;
                txn.commit().await?;
                Ok(Takeover::Won { moved, promoted })
            })
            .await
    }

    /// Promotes live standbys (the one up longest first, see `promote`)
    /// if fewer than `active_nodes` are active; true when `me` is one of
    /// them (another promoted node learns it from its next heartbeat).
    pub async fn promote_if_needed(
        &self,
        me: &str,
        timeout_ms: i64,
        active_nodes: u32,
    ) -> Result<bool, StoreError> {
        let backend = self.backend();
        let me = me.to_owned();
        let wait = self.db().limits().membership_lock_wait;
        self.db()
            .run(move |c| async move {
                let txn = crate::store::begin(&c).await?;
                let Some(txn) = lock_step_within(txn, backend, wait).await? else {
                    return Ok(false);
                };
                let promoted = promote(&txn, backend, timeout_ms, active_nodes, None).await?;
                let mine = promoted.contains(&me);
                if !promoted.is_empty() {
                    insert_event(
                        &txn,
                        backend,
                        "promote",
                        &me,
                        &format!("promoted to active: [{}]", promoted.join(", ")),
                    )
                    .await?;
                }
                txn.commit().await?;
                Ok(mine)
            })
            .await
    }

    /// Adopts unfinished executions whose owner is not a running active
    /// node (gone, standby, fenced, or unknown), under new epochs; returns
    /// how many. Only an active node adopts.
    pub async fn adopt_orphans(&self, me: &str) -> Result<u64, StoreError> {
        let backend = self.backend();
        let me = me.to_owned();
        let wait = self.db().limits().membership_lock_wait;
        self.db()
            .run(move |c| async move {
                let probe = Statement::from_sql_and_values(
                    backend,
                    orphan_sql("SELECT COUNT(*) AS n FROM executions e"),
                    [],
                );
                let n: i64 = match c.query_one_raw(probe).await? {
                    Some(r) => r.try_get::<i64>("", "n")?,
                    None => 0,
                };
                if n == 0 {
                    return Ok(0);
                }
                let txn = crate::store::begin(&c).await?;
                let Some(txn) = lock_step_within(txn, backend, wait).await? else {
                    return Ok(0);
                };
                let me_active = node::Entity::find_by_id(me.clone()).one(&txn).await?.is_some_and(|n| is_active(&n));
                if !me_active {
                    txn.rollback().await?;
                    return Ok(0);
                }
                let now = Store::now_sql(backend);
                let sql = match backend {
                    DbBackend::MySql => format!(
                        "UPDATE executions e LEFT JOIN nodes n ON n.id = e.owner_node \
                         SET e.owner_node = ?, e.owner_epoch = e.owner_epoch + 1, e.updated_at = {now} \
                         WHERE e.state IN ('running', 'waiting', 'waiting-signal') \
                         AND (n.id IS NULL OR n.role <> 'active' OR n.state <> 'RUNNING')"
                    ),
                    _ => {
                        let me_param = if backend == DbBackend::Postgres { "$1" } else { "?" };
                        format!(
                            "UPDATE executions SET owner_node = {me_param}, owner_epoch = owner_epoch + 1, updated_at = {now} \
                             WHERE state IN ('running', 'waiting', 'waiting-signal') AND NOT EXISTS \
                             (SELECT 1 FROM nodes n WHERE n.id = executions.owner_node AND n.role = 'active' AND n.state = 'RUNNING')"
                        )
                    }
                };
                let r = txn.execute_raw(Statement::from_sql_and_values(backend, sql, [me.clone().into()])).await?;
                let adopted = r.rows_affected();
                if adopted > 0 {
                    insert_event(&txn, backend, "adopt", &me, &format!("node {me} adopted {adopted} execution(s) whose owner is not active")).await?;
                }
                txn.commit().await?;
                Ok(adopted)
            })
            .await
    }

    /// Leaves the cluster gracefully: marks the node stopped, promotes a
    /// standby if the active count fell, and hands the node's unfinished
    /// executions to the live active nodes (they stay for the next active
    /// node to adopt when there is none). Returns how many moved.
    pub async fn leave_cluster(
        &self,
        me: &str,
        epoch: i64,
        timeout_ms: i64,
        active_nodes: u32,
    ) -> Result<usize, StoreError> {
        let backend = self.backend();
        let me = me.to_owned();
        self.db()
            .run(move |c| async move {
                let txn = crate::store::begin(&c).await?;
                lock_step(&txn).await?;
                let r = node::Entity::update_many()
                    .col_expr(node::Column::State, Expr::value(node_state::STOPPED))
                    .col_expr(node::Column::Role, Expr::value(NodeRole::Standby.as_str()))
                    .col_expr(node::Column::Epoch, Expr::col(node::Column::Epoch).add(1))
                    .filter(node::Column::Id.eq(me.as_str()))
                    .filter(node::Column::Epoch.eq(epoch))
                    .exec(&txn)
                    .await?;
                if r.rows_affected == 0 {
                    txn.rollback().await?;
                    return Ok(0);
                }
                let promoted = promote(&txn, backend, timeout_ms, active_nodes, None).await?;
                let moved = move_executions(&txn, backend, &me, timeout_ms).await?;
                let total: usize = moved.iter().map(|(_, k)| k).sum();
                let moved_text: Vec<String> =
                    moved.iter().map(|(n, k)| format!("{k} to {n}")).collect();
                insert_event(
                    &txn,
                    backend,
                    "leave",
                    &me,
                    &format!(
                        "node {me} left; executions moved: [{}]; promoted: [{}]",
                        moved_text.join(", "),
                        promoted.join(", ")
                    ),
                )
                .await?;
                txn.commit().await?;
                Ok(total)
            })
            .await
    }

    /// Marks this node fenced (best effort: the database may be away),
    /// serialized with promotions and takeovers by the cluster lock, so a
    /// promotion never acts on a row that is being fenced.
    pub async fn mark_fenced(&self, me: &str, epoch: i64) -> Result<(), StoreError> {
        let me = me.to_owned();
        self.db()
            .run(move |c| async move {
                let txn = crate::store::begin(&c).await?;
                lock_step(&txn).await?;
                node::Entity::update_many()
                    .col_expr(node::Column::State, Expr::value(node_state::FENCED))
                    .col_expr(node::Column::Role, Expr::value(NodeRole::Standby.as_str()))
                    .filter(node::Column::Id.eq(me))
                    .filter(node::Column::Epoch.eq(epoch))
                    .filter(node::Column::State.is_not_in(node_state::GONE))
                    .exec(&txn)
                    .await?;
                txn.commit().await?;
                Ok(())
            })
            .await
    }

    /// The unfinished `running` executions `me` owns.
    pub async fn owned_running(&self, me: &str) -> Result<Vec<execution::Model>, StoreError> {
        let me = me.to_owned();
        self.db()
            .run(move |c| async move {
                Ok(execution::Entity::find()
                    .filter(execution::Column::OwnerNode.eq(me))
                    .filter(execution::Column::State.eq(state::RUNNING))
                    .order_by_asc(execution::Column::CreatedAt)
                    .all(&c)
                    .await?)
            })
            .await
    }

    /// One node's row.
    pub async fn node(&self, id: &str) -> Result<Option<node::Model>, StoreError> {
        let id = id.to_owned();
        self.db()
            .run(move |c| async move { Ok(node::Entity::find_by_id(id).one(&c).await?) })
            .await
    }
}

fn orphan_sql(head: &str) -> String {
    format!(
        "{head} WHERE e.state IN ('running', 'waiting', 'waiting-signal') AND NOT EXISTS \
         (SELECT 1 FROM nodes n WHERE n.id = e.owner_node AND n.role = 'active' AND n.state = 'RUNNING')"
    )
}

/// An ISO 8601 duration as Galera writes its timeouts (`PT5S`, `PT1.5S`,
/// `PT1M30S`, `P1D`), in milliseconds.
pub fn iso8601_ms(text: &str) -> Option<u64> {
    let rest = text.trim().strip_prefix('P')?;
    let (days, time) = match rest.split_once('T') {
        Some((d, t)) => (d, t),
        None => (rest, ""),
    };
    let mut ms = 0f64;
    let mut add = |part: &str, units: &[(char, f64)]| -> Option<()> {
        let mut number = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                number.push(c);
            } else {
                let unit = units.iter().find(|(u, _)| *u == c)?.1;
                ms += number.parse::<f64>().ok()? * unit;
                number.clear();
            }
        }
        number.is_empty().then_some(())
    };
    add(days, &[('D', 86_400_000.0), ('W', 604_800_000.0)])?;
    add(time, &[('H', 3_600_000.0), ('M', 60_000.0), ('S', 1000.0)])?;
    Some(ms.round() as u64)
}

impl Store {
    /// On a MariaDB Galera member: Galera's `evs.suspect_timeout` (from
    /// `wsrep_provider_options`), in milliseconds: how long the whole
    /// cluster may stall every write when a member is lost, before it
    /// evicts it. `None` elsewhere (not MySQL, or `wsrep_on` is off).
    pub async fn galera_suspect_timeout_ms(&self) -> Result<Option<u64>, StoreError> {
        if self.backend() != DbBackend::MySql {
            return Ok(None);
        }
        self.db()
            .run(|c| async move {
                let var = |name: &'static str| {
                    let c = c.clone();
                    async move {
                        let row = c
                            .query_one_raw(Statement::from_string(
                                DbBackend::MySql,
                                format!("SHOW VARIABLES LIKE '{name}'"),
                            ))
                            .await?;
                        Ok::<_, sea_orm::DbErr>(
                            row.and_then(|r| r.try_get_by_index::<String>(1).ok()),
                        )
                    }
                };
                if !var("wsrep_on")
                    .await?
                    .is_some_and(|v| v.eq_ignore_ascii_case("ON"))
                {
                    return Ok(None);
                }
                let options = var("wsrep_provider_options").await?.unwrap_or_default();
                // Galera's default when the option is not listed.
                let suspect = options
                    .split(';')
                    .filter_map(|kv| kv.split_once('='))
                    .find(|(k, _)| k.trim() == "evs.suspect_timeout")
                    .and_then(|(_, v)| iso8601_ms(v))
                    .unwrap_or(5000);
                Ok(Some(suspect))
            })
            .await
    }
}

#[cfg(test)]
mod galera_tests {
    use super::iso8601_ms;

    #[test]
    fn galera_durations_read_as_milliseconds() {
        assert_eq!(iso8601_ms("PT5S"), Some(5000));
        assert_eq!(iso8601_ms(" PT1.5S"), Some(1500));
        assert_eq!(iso8601_ms("PT1M30S"), Some(90_000));
        assert_eq!(iso8601_ms("P1D"), Some(86_400_000));
        assert_eq!(iso8601_ms("PT0.5S"), Some(500));
        assert_eq!(iso8601_ms("5S"), None);
        assert_eq!(iso8601_ms("PT5X"), None);
        assert_eq!(iso8601_ms("PT5"), None);
    }
}
