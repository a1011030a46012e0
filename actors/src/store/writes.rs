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

/// Awaits `fut`, a group-commit writer's work on one batch, with a panic
/// in it (a bug) caught and returned as an error naming `what`. Uncaught,
/// it would end the writer's task: every later request on that queue
/// would fail while the node kept heartbeating, so its executions would
/// stay stuck with no failover to free them. The callers of the batch
/// hear that its outcome is unknown (a panic may come after the commit).
pub(super) async fn unwound<T>(
    what: &str,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, DbErr> {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(fut).catch_unwind().await {
        Ok(out) => Ok(out),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            tracing::error!(panic = %msg, "{what} panicked: its callers are told its outcome is unknown, and the writer goes on");
            Err(DbErr::Custom(format!("{what} panicked: {msg}")))
        }
    }
}

/// In tests, a batch holding this id (an execution's, a start's or a
/// signal's target) panics inside [`unwound`].
#[cfg(test)]
pub(super) const TEST_PANIC: &str = "baton-test-panic";

#[cfg(test)]
mod tests {
    use super::TEST_PANIC;
    use crate::error::StoreError;
    use crate::store::{Checkpoint, Fence, NewExecution, StartOutcome, Store};

    fn start(id: &str) -> NewExecution {
        NewExecution {
            id: id.into(),
            workflow_id: "w".into(),
            workflow_version: 1,
            parent_id: None,
            inputs: serde_json::json!({}),
            variables: serde_json::json!({}),
            start_item: "a".into(),
            owner_node: "n1".into(),
            node_epoch: None,
            expect_current: false,
        }
    }

    fn fence(id: &str) -> Fence {
        Fence {
            execution: id.into(),
            node: "n1".into(),
            epoch: 1,
            run: None,
            step: None,
        }
    }

    fn unknown<T>(r: &Result<T, StoreError>) -> bool {
        matches!(r, Err(StoreError::CommitUnknown(e)) if e.to_string().contains("panicked"))
    }

    /// A panic in a group-commit writer's batch (a bug) is answered to
    /// that batch's callers as an unknown outcome, and the writer goes on:
    /// the next start, checkpoint and signal are written. Uncaught, it
    /// ended the writer's task, and every later request on its queue
    /// failed ("the database runtime has stopped") while the node kept
    /// heartbeating.
    #[test]
    fn a_panic_in_a_batch_is_an_unknown_outcome_and_its_writer_goes_on() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let dir = std::env::temp_dir().join(format!("baton-unwound-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).expect("mkdir");
            let url = format!("sqlite://{}/d.db?mode=rwc", dir.display());
            let store = Store::connect(&url, 1).await.expect("connect");
            store.migrate().await.expect("migrate");

            let r = store.create_execution(start(TEST_PANIC)).await;
            assert!(unknown(&r), "{r:?}");
            let r = store.create_execution(start("e1")).await;
            assert!(matches!(r, Ok(StartOutcome::Created(_))), "{r:?}");

            let r = store
                .checkpoint(&fence(TEST_PANIC), Checkpoint::default())
                .await;
            assert!(unknown(&r), "{r:?}");
            let cp = Checkpoint {
                variables: Some(serde_json::json!({"n": 1})),
                ..Checkpoint::default()
            };
            let r = store.checkpoint(&fence("e1"), cp).await;
            assert!(r.is_ok(), "{r:?}");

            let go = serde_json::json!({});
            let r = store.insert_signal(TEST_PANIC, "go", &go).await;
            assert!(unknown(&r), "{r:?}");
            let r = store.insert_signal("e1", "go", &go).await;
            assert!(r.is_ok(), "{r:?}");

            let _ = std::fs::remove_dir_all(&dir);
        });
    }
}
