//! Indexes of `executions` that hold only the rows their reads can match
//! (PostgreSQL and SQLite; issue 14). Every update that changes an indexed
//! column (a start, a park, a wake, a completion) writes a new entry into
//! every index of the table, and five of them only ever serve rows with a
//! value in one column:
//! - the wake scan's timers, `(owner_node, state, wait_until)`, and the
//!   overdue-timer gauge's `(state, wait_until)`: rows with a deadline;
//! - the wake scan's signaled rows, `(owner_node, state, signaled)`: rows
//!   flagged `signaled = 1`;
//! - retention's `(ended_at)`: finished rows;
//! - a parent's children, `(parent_id, created_at, id)`: child rows.
//!
//! Each becomes a partial index with the same columns (`WHERE wait_until
//! IS NOT NULL`, `WHERE signaled = 1`, `WHERE ended_at IS NOT NULL`,
//! `WHERE parent_id IS NOT NULL`). Every read they served compares that
//! column (`wait_until <= now`, `signaled = 1`, `ended_at < cutoff`,
//! `parent_id = ?` or `IN (...)`), which implies the predicate, so each
//! read keeps its index; a top-level execution running or done now writes
//! six entries per such update instead of eleven, and the indexes no
//! longer hold a hundred thousand identical keys of executions parked on
//! a signal (`(n1, waiting-signal, NULL)`), which PostgreSQL's bottom-up
//! deletion sorted through on every insert. `ix_executions_owner_state`
//! `(owner_node, state)` stays: the lookups of a node's unfinished
//! executions read it. MySQL/MariaDB have no partial indexes and keep
//! theirs.
//!
//! New names, so each step can run again after a start-up stopped
//! halfway: the partial index is built, then the full one dropped. On a
//! large table each build holds the table's writes while it runs.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

/// `(old name, new name, columns, predicate)`.
const INDEXES: &[(&str, &str, &str, &str)] = &[
    (
        "ix_executions_owner_wait",
        "ix_executions_due_by_owner",
        "owner_node, state, wait_until",
        "wait_until IS NOT NULL",
    ),
    (
        "ix_executions_state_wait",
        "ix_executions_due_by_state",
        "state, wait_until",
        "wait_until IS NOT NULL",
    ),
    (
        "ix_executions_owner_signaled",
        "ix_executions_signaled_by_owner",
        "owner_node, state, signaled",
        "signaled = 1",
    ),
    (
        "ix_executions_ended",
        "ix_executions_ended_at",
        "ended_at",
        "ended_at IS NOT NULL",
    ),
    (
        "ix_executions_parent_created",
        "ix_executions_children",
        "parent_id, created_at, id",
        "parent_id IS NOT NULL",
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::MySql {
            return Ok(());
        }
        let db = manager.get_connection();
        for (old, new, columns, predicate) in INDEXES {
            db.execute_unprepared(&format!(
                "CREATE INDEX IF NOT EXISTS {new} ON executions ({columns}) WHERE {predicate}"
            ))
            .await?;
            db.execute_unprepared(&format!("DROP INDEX IF EXISTS {old}"))
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::MySql {
            return Ok(());
        }
        let db = manager.get_connection();
        for (old, new, columns, _) in INDEXES {
            db.execute_unprepared(&format!(
                "CREATE INDEX IF NOT EXISTS {old} ON executions ({columns})"
            ))
            .await?;
            db.execute_unprepared(&format!("DROP INDEX IF EXISTS {new}"))
                .await?;
        }
        Ok(())
    }
}
