//! The store: every query Baton makes, over sea-orm.
//!
//! Owns the SQL. Writes on an execution row go through
//! [`Store::fenced_update`] only, which adds
//! `WHERE id = ? AND owner_node = ? AND owner_epoch = ?` and turns zero
//! rows updated into [`StoreError::OwnershipLost`] (DESIGN.md invariant 2).
//! Every timestamp is taken from the database server's clock
//! ([`Store::now_expr`]), never from this node's (invariant 3).
//!
//! # Layout
//! - `batch`: group commit of checkpoints from many executions
//! - `cluster`: membership: join, heartbeat, promotion, takeover, adoption, leave
//! - `entities`: the sea-orm models of the tables
//! - `executions`: executions and the item log, with the fenced writes
//! - `signals`: signals and interaction answers, and waking parked executions
//! - `workflows`: definitions and their versions
//! - `nodes`: cluster members and cluster events

mod batch;
pub mod cluster;
pub mod entities;
mod executions;
mod nodes;
mod signals;
mod workflows;

pub use cluster::{fingerprint_difference, node_state, Takeover};
pub use executions::{
    Checkpoint, ExecutionFilter, Fence, LogEntry, NewExecution, StartOutcome, Wait,
};
pub use nodes::NodeRegistration;
pub use signals::{ANSWER, CANCEL, CHILD_DONE, INTERACTION};
pub use workflows::WorkflowSummary;

use baton_migrations::{Migrator, MigratorTrait};
use sea_orm::sea_query::Expr;
use sea_orm::{ConnectionTrait, DbBackend, DbErr, SqlErr, Statement, TransactionTrait};

use crate::db::Db;
use crate::error::StoreError;

/// Execution states as stored.
pub mod state {
    /// Running an item on its owner node.
    pub const RUNNING: &str = "running";
    /// Parked on a timer.
    pub const WAITING: &str = "waiting";
    /// Parked on a signal or a user interaction.
    pub const WAITING_SIGNAL: &str = "waiting-signal";
    /// Finished successfully.
    pub const COMPLETED: &str = "completed";
    /// Finished with an uncaught error; can be resumed.
    pub const FAILED: &str = "failed";
    /// Canceled by a caller.
    pub const CANCELED: &str = "canceled";
    /// The states that are not final.
    pub const UNFINISHED: [&str; 3] = [RUNNING, WAITING, WAITING_SIGNAL];
}

/// The database layer. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
    batcher: std::sync::Arc<batch::Batcher>,
}

impl Store {
    /// Wraps a connection and starts its checkpoint batcher.
    pub fn new(db: Db) -> Store {
        let batcher = std::sync::Arc::new(batch::Batcher::start(&db));
        Store { db, batcher }
    }

    fn batcher(&self) -> &batch::Batcher {
        &self.batcher
    }

    /// Connects to `url` and returns the store.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        Ok(Store::new(Db::connect(url, max_connections).await?))
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
                        let txn = c.begin().await?;
                        txn.execute_unprepared("SELECT pg_advisory_xact_lock(4242001)")
                            .await?;
                        Migrator::up(&txn, None).await?;
                        txn.commit().await?;
                    }
                    DbBackend::MySql => {
                        // GET_LOCK is per session: a transaction pins one connection.
                        let txn = c.begin().await?;
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

/// True when `err` is a unique-constraint violation.
pub(crate) fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

pub(crate) fn decode_json(what: &str, text: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        what: what.to_owned(),
        reason: e.to_string(),
    })
}
