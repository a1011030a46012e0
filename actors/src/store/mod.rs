//! The store: every query Baton makes, over sea-orm.
//!
//! Owns the SQL. Writes on an execution row go through
//! `fenced_update` only (through [`Store::checkpoint`]), which adds
//! `WHERE id = ? AND owner_node = ? AND owner_epoch = ?` and turns zero
//! rows updated into [`StoreError::OwnershipLost`] (DESIGN.md invariant 2).
//! Every timestamp is taken from the database server's clock
//! ([`Store::now_expr`]), never from this node's (invariant 3). A run's
//! writes are also fenced by the run token it claimed
//! ([`Store::claim_run`], invariant 10; `claims::*`). An interaction answer
//! is taken by a compare-and-set on the parked row
//! ([`Store::answer_interaction`], invariant 13;
//! `waits::*::a_double_click_answers_one_interaction_once`).
//!
//! # Layout
//! - `batch`: group commit of checkpoints from many executions
//! - `starts`: group commit of new executions
//! - `deliveries`: group commit of signals and interaction answers
//! - `cluster`: membership: join, heartbeat, promotion, takeover, adoption, leave
//! - `entities`: the sea-orm models of the tables
//! - `executions`: executions and the item log, with the fenced writes
//! - `signals`: signals and interaction answers, and waking parked executions
//! - `workflows`: definitions and their versions
//! - `nodes`: cluster members and cluster events
//! - `planner`: analyzing PostgreSQL tables that outgrow their statistics
//! - `retention`: deleting finished executions, one or in batches
//! - `search`: executions and item logs in pages, children counts
//! - `webhooks`: webhook deliveries of cluster events, and their claims

mod batch;
pub mod cluster;
mod deliveries;
mod direct;
pub(crate) use direct::OwnConn;
pub mod entities;
mod executions;
mod nodes;
pub mod planner;
mod retention;
mod search;
mod signals;
mod starts;
mod webhooks;
mod workflows;
mod writes;

pub use cluster::{fingerprint_difference, node_state, PeerView, Takeover};
pub use executions::{Checkpoint, Fence, LogEntry, NewExecution, StartOutcome, Wait};
pub use nodes::{NodeRegistration, OwnedCounts};
pub use planner::PlannerStats;
pub use retention::{Deletion, Purged};
pub use search::{search_sql, ChildCounts, ExecutionFilter, PageKey};
pub use signals::{ANSWER, CANCEL, CHILD_DONE, INTERACTION};
pub use webhooks::{delivery_state, DeliveryOutcome};
pub use workflows::WorkflowSummary;

use baton_migrations::{Migrator, MigratorTrait};
use sea_orm::sea_query::Expr;
use sea_orm::{ConnectionTrait, DbBackend, DbErr, SqlErr, Statement, TransactionTrait};

use crate::db::Db;
use crate::error::StoreError;

/// Begins a write transaction. On SQLite it is `BEGIN IMMEDIATE`, which
/// takes the file's write lock at once, waiting in the busy handler like
/// any writer: a deferred transaction that reads and then writes fails at
/// once with `SQLITE_BUSY` (no busy handler can help it) when another
/// connection to the file (another process, or another node's pool)
/// committed between its read and its write. Elsewhere a plain `BEGIN`.
pub(crate) async fn begin(
    c: &sea_orm::DatabaseConnection,
) -> Result<sea_orm::DatabaseTransaction, DbErr> {
    c.begin_with_options(sea_orm::TransactionOptions {
        sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
        ..Default::default()
    })
    .await
}

/// The state of an execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExecutionState {
    /// Running an item on its owner node.
    Running,
    /// Parked on a timer.
    Waiting,
    /// Parked on a signal or a user interaction.
    WaitingSignal,
    /// Finished successfully.
    Completed,
    /// Finished with an uncaught error; can be resumed.
    Failed,
    /// Canceled by a caller.
    Canceled,
}

impl ExecutionState {
    /// Every state, in the order above.
    pub const ALL: [ExecutionState; 6] = [
        ExecutionState::Running,
        ExecutionState::Waiting,
        ExecutionState::WaitingSignal,
        ExecutionState::Completed,
        ExecutionState::Failed,
        ExecutionState::Canceled,
    ];

    /// The state as stored and shown (`running`, `waiting-signal`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            ExecutionState::Running => "running",
            ExecutionState::Waiting => "waiting",
            ExecutionState::WaitingSignal => "waiting-signal",
            ExecutionState::Completed => "completed",
            ExecutionState::Failed => "failed",
            ExecutionState::Canceled => "canceled",
        }
    }

    /// The state named `s`, if it is one.
    pub fn parse(s: &str) -> Option<ExecutionState> {
        ExecutionState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// True for `completed`, `failed` and `canceled`.
    pub const fn is_finished(self) -> bool {
        matches!(
            self,
            ExecutionState::Completed | ExecutionState::Failed | ExecutionState::Canceled
        )
    }

    /// True while it waits (`waiting`, `waiting-signal`): no actor runs it.
    pub const fn is_parked(self) -> bool {
        matches!(
            self,
            ExecutionState::Waiting | ExecutionState::WaitingSignal
        )
    }
}

impl std::fmt::Display for ExecutionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Execution states as stored: the text of each [`ExecutionState`], for
/// queries.
pub mod state {
    use super::ExecutionState;

    /// Running an item on its owner node.
    pub const RUNNING: &str = ExecutionState::Running.as_str();
    /// Parked on a timer.
    pub const WAITING: &str = ExecutionState::Waiting.as_str();
    /// Parked on a signal or a user interaction.
    pub const WAITING_SIGNAL: &str = ExecutionState::WaitingSignal.as_str();
    /// Finished successfully.
    pub const COMPLETED: &str = ExecutionState::Completed.as_str();
    /// Finished with an uncaught error; can be resumed.
    pub const FAILED: &str = ExecutionState::Failed.as_str();
    /// Canceled by a caller.
    pub const CANCELED: &str = ExecutionState::Canceled.as_str();
    /// The states that are not final.
    pub const UNFINISHED: [&str; 3] = [RUNNING, WAITING, WAITING_SIGNAL];
}

/// The database layer. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
    batcher: std::sync::Arc<batch::Batcher>,
    starter: std::sync::Arc<starts::Starter>,
    deliverer: std::sync::Arc<deliveries::Deliverer>,
}

impl Store {
    /// What this store's group commit did: batches, their sizes and
    /// commit times.
    pub fn checkpoint_stats(&self) -> &crate::metrics::CheckpointStats {
        &self.batcher.stats
    }

    /// What the group commit of signals and answers did: batches, their
    /// sizes and commit times.
    pub fn delivery_stats(&self) -> &crate::metrics::CheckpointStats {
        &self.deliverer.stats
    }

    /// This process's database calls: counted, queued for a connection, timed.
    pub fn db_calls(&self) -> &crate::db::DbCalls {
        self.db.calls()
    }

    /// The connection pool's size and idle connections (`None` when the
    /// driver does not say).
    pub fn pool_stats(&self) -> Option<(u32, usize)> {
        self.db.pool_stats()
    }

    /// Wraps a connection and starts its checkpoint, start and delivery
    /// batchers.
    pub fn new(db: Db) -> Store {
        let batcher = std::sync::Arc::new(batch::Batcher::start(&db));
        let starter = std::sync::Arc::new(starts::Starter::start(&db));
        let deliverer = std::sync::Arc::new(deliveries::Deliverer::start(&db));
        Store {
            db,
            batcher,
            starter,
            deliverer,
        }
    }

    fn deliverer(&self) -> &deliveries::Deliverer {
        &self.deliverer
    }

    fn starter(&self) -> &starts::Starter {
        &self.starter
    }

    fn batcher(&self) -> &batch::Batcher {
        &self.batcher
    }

    /// Connects to `url` and returns the store.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        Ok(Store::new(Db::connect(url, max_connections).await?))
    }

    /// [`Store::connect`] with `limits` on every database session (a
    /// cluster node's: [`crate::db::SessionLimits::for_cluster`]).
    pub async fn connect_with(
        url: &str,
        max_connections: u32,
        limits: crate::db::SessionLimits,
    ) -> Result<Store, StoreError> {
        Ok(Store::new(
            Db::connect_with(url, max_connections, limits).await?,
        ))
    }

    /// The underlying connection.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Which SQL dialect the database speaks.
    pub fn backend(&self) -> DbBackend {
        self.db.backend()
    }

    /// The database server's clock in milliseconds since the Unix epoch, as
    /// a SQL expression. SQLite's `CURRENT_TIMESTAMP` and MySQL's `NOW()`
    /// have whole-second resolution, so each backend gets its
    /// millisecond-precise form.
    pub fn now_expr(backend: DbBackend) -> Expr {
        Expr::cust(Self::now_sql(backend))
    }

    /// The database clock for a read that compares an indexed column with
    /// it: on PostgreSQL the statement's start (`statement_timestamp()`,
    /// stable, so the planner can bound an index range with it; the
    /// volatile `clock_timestamp()` made the wake scan a sequential scan of
    /// every execution, 0.4 s with a million rows, every 100 ms); elsewhere
    /// [`Store::now_sql`], which MySQL/MariaDB and SQLite already hold
    /// constant within a statement.
    pub fn now_sql_for_index(backend: DbBackend) -> &'static str {
        match backend {
            DbBackend::Postgres => {
                "CAST(EXTRACT(EPOCH FROM statement_timestamp()) * 1000 AS BIGINT)"
            }
            _ => Self::now_sql(backend),
        }
    }

    /// The SQL text of [`Store::now_expr`].
    pub fn now_sql(backend: DbBackend) -> &'static str {
        match backend {
            DbBackend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
            DbBackend::MySql => "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)",
            _ => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
        }
    }

    /// Reads the database server's clock.
    pub async fn db_now_ms(&self) -> Result<i64, StoreError> {
        let backend = self.backend();
        self.db
            .run(move |c| async move {
                let sql = format!("SELECT {} AS now_ms", Self::now_sql(backend));
                let row = c
                    .query_one_raw(Statement::from_string(backend, sql))
                    .await?
                    .ok_or_else(|| DbErr::Custom("clock query returned no row".into()))?;
                Ok(row.try_get::<i64>("", "now_ms")?)
            })
            .await
    }

    /// Applies every pending migration while holding a database-wide lock,
    /// so that nodes starting together do not race: an advisory lock on
    /// PostgreSQL, `GET_LOCK` on MySQL/MariaDB, `BEGIN IMMEDIATE` on SQLite.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let backend = self.backend();
        self.db
            .run(move |c| async move {
                match backend {
                    DbBackend::Postgres => {
                        let txn = crate::store::begin(&c).await?;
                        txn.execute_unprepared("SELECT pg_advisory_xact_lock(4242001)")
                            .await?;
                        Migrator::up(&txn, None).await?;
                        txn.commit().await?;
                    }
                    DbBackend::MySql => {
                        // GET_LOCK is per session: a transaction pins one connection.
                        let txn = crate::store::begin(&c).await?;
                        let got = txn
                            .query_one_raw(Statement::from_string(
                                backend,
                                "SELECT GET_LOCK('baton_migrate', 120) AS got",
                            ))
                            .await?
                            .map(|r| r.try_get::<i64>("", "got"))
                            .transpose()?;
                        if got != Some(1) {
                            return Err(DbErr::Custom(
                                "timed out waiting for the migration lock".into(),
                            )
                            .into());
                        }
                        let result = Migrator::up(&txn, None).await;
                        txn.execute_unprepared("DO RELEASE_LOCK('baton_migrate')")
                            .await?;
                        txn.commit().await?;
                        result?;
                    }
                    _ => {
                        // One pooled connection: these statements share it.
                        c.execute_unprepared("BEGIN IMMEDIATE").await?;
                        match Migrator::up(&c, None).await {
                            Ok(()) => {
                                c.execute_unprepared("COMMIT").await?;
                            }
                            Err(e) => {
                                let _ = c.execute_unprepared("ROLLBACK").await;
                                return Err(e.into());
                            }
                        }
                    }
                }
                Ok(())
            })
            .await
    }
}

/// True when `err` says the statement wrote nothing: the server answered
/// it with an error (an autocommit statement that fails is rolled back
/// whole), or no connection was had to send it on. Other failures (the
/// connection broke while the statement was in flight) leave its outcome
/// unknown.
pub(crate) fn wrote_nothing(err: &DbErr) -> bool {
    use sea_orm::sqlx::Error as Sqlx;
    use sea_orm::RuntimeErr;
    match err {
        DbErr::ConnectionAcquire(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e))
        | DbErr::Conn(RuntimeErr::SqlxError(e)) => {
            matches!(
                **e,
                Sqlx::Database(_) | Sqlx::PoolTimedOut | Sqlx::PoolClosed
            )
        }
        _ => false,
    }
}

/// True when `err` is the server giving up a lock wait that had a limit
/// (PostgreSQL's `lock_timeout`, SQLSTATE 55P03; MariaDB's
/// `innodb_lock_wait_timeout`, error 1205).
pub(crate) fn is_lock_wait_timeout(err: &DbErr) -> bool {
    use sea_orm::sqlx::Error as Sqlx;
    use sea_orm::RuntimeErr;
    match err {
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            match &**e {
                Sqlx::Database(d) => {
                    d.code().as_deref() == Some("55P03")
                        || d.try_downcast_ref::<sea_orm::sqlx::mysql::MySqlDatabaseError>()
                            .is_some_and(|m| m.number() == 1205)
                }
                _ => false,
            }
        }
        _ => false,
    }
}

/// True when `err` is a unique-constraint violation.
pub(crate) fn is_unique_violation(err: &DbErr) -> bool {
    use sea_orm::sqlx::Error as Sqlx;
    use sea_orm::RuntimeErr;
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
        // The checkpoint writer's direct SQLite connection (`direct`).
        || matches!(
            err,
            DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e))
                if matches!(&**e, Sqlx::Database(d) if d.is_unique_violation())
        )
}

pub(crate) fn decode_json(what: &str, text: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        what: what.to_owned(),
        reason: e.to_string(),
    })
}
