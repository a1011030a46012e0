//! What the checkpoint batch needs of a connection: run a statement and
//! say how many rows it changed, or read back the ids it returned. A
//! sea-orm transaction or connection does it, and so does SQLite's
//! [`Direct`](super::direct::Direct) connection, which runs statements on
//! the calling thread.

use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr};
use sea_orm::{Statement, StatementBuilder};

/// A connection (or transaction) the batch's statements run on.
pub(super) trait Writes: Sync {
    /// The SQL dialect.
    fn backend(&self) -> DbBackend;

    /// Runs `stmt`; how many rows it changed.
    async fn exec(&self, stmt: Statement) -> Result<u64, DbErr>;

    /// Runs `stmt`, which returns rows with a text column `id`; those ids.
    async fn ids(&self, stmt: Statement) -> Result<Vec<String>, DbErr>;

    /// Runs `sql`, which binds nothing and returns nothing.
    async fn exec_unprepared(&self, sql: &str) -> Result<(), DbErr>;

    /// [`Writes::exec`] of a query builder's statement.
    async fn exec_built<S: StatementBuilder + Sync>(&self, q: &S) -> Result<u64, DbErr> {
        self.exec(self.backend().build(q)).await
    }
}

macro_rules! writes_through_sea_orm {
    ($t:ty) => {
        impl Writes for $t {
            fn backend(&self) -> DbBackend {
                self.get_database_backend()
            }

            async fn exec(&self, stmt: Statement) -> Result<u64, DbErr> {
                Ok(self.execute_raw(stmt).await?.rows_affected())
            }

            async fn ids(&self, stmt: Statement) -> Result<Vec<String>, DbErr> {
                self.query_all_raw(stmt)
                    .await?
                    .iter()
                    .map(|r| r.try_get::<String>("", "id"))
                    .collect()
            }

            async fn exec_unprepared(&self, sql: &str) -> Result<(), DbErr> {
                self.execute_unprepared(sql).await.map(drop)
            }
        }
    };
}

writes_through_sea_orm!(DatabaseTransaction);
writes_through_sea_orm!(DatabaseConnection);
