//! Signal indexes that cannot be mistaken for an execution's (PostgreSQL
//! and SQLite; issue 14). An awaiting run reads its pending signal by
//! `execution_id = ? AND name = ? AND consumed_at IS NULL`, which
//! `ix_signals_execution_pending` answers exactly. But `consumed_at` led
//! two other indexes, `ix_signals_pending_created (consumed_at,
//! created_at)` and `ix_signals_name_pending (name, consumed_at)`, and
//! whenever the statistics said few signals were pending (a table
//! analyzed when all its signals were consumed, or still empty),
//! PostgreSQL priced "every pending signal" the same as "this execution's
//! pending signal", took one of those and kept it in its cached plan: each
//! read then walked every pending signal (delivering 20,000 signals read
//! 310 million index entries). Those two become:
//! - `ix_signals_cancels` on `(execution_id) WHERE name = '__cancel' AND
//!   consumed_at IS NULL`: the cancels other nodes asked for (whose
//!   statement names `'__cancel'` in its text). A plan made for a bound
//!   name cannot use it, so a cached plan for any other name never does;
//! - `ix_signals_created` on `(created_at)`: the catch-up over the last
//!   seconds' signals reads that range, consumed ones included, and keeps
//!   the pending. No other read has a condition on `created_at`.
//!
//! `ix_signals_execution_pending` stays as it is: it also serves
//! retention, which deletes a purged execution's signals, consumed ones
//! included. A signal now writes three index entries instead of four.
//! MySQL/MariaDB have no partial indexes and keep the indexes of
//! `m20261126_000011_wake_indexes` (their optimizer estimates from the
//! index itself and keeps no plan across statements).
//!
//! Each step can run again, so a start-up that stopped halfway finishes
//! the job. On a large `signals` table, building `ix_signals_created`
//! holds the table's writes for as long as it takes.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

/// `(name, definition)`, as this migration leaves them.
const UP: &[(&str, &str)] = &[
    (
        "ix_signals_cancels",
        "(execution_id) WHERE name = '__cancel' AND consumed_at IS NULL",
    ),
    ("ix_signals_created", "(created_at)"),
];

/// The indexes `UP` replaces, as `m20261126_000011_wake_indexes` made them.
const DOWN: &[(&str, &str)] = &[
    ("ix_signals_name_pending", "(name, consumed_at)"),
    ("ix_signals_pending_created", "(consumed_at, created_at)"),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        replace(manager, DOWN, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        replace(manager, UP, DOWN).await
    }
}

/// Creates the indexes `new` (unless there), then drops those of `old`.
async fn replace(
    manager: &SchemaManager<'_>,
    old: &[(&str, &str)],
    new: &[(&str, &str)],
) -> Result<(), DbErr> {
    if manager.get_database_backend() == DbBackend::MySql {
        return Ok(());
    }
    let db = manager.get_connection();
    for (name, definition) in new {
        db.execute_unprepared(&format!(
            "CREATE INDEX IF NOT EXISTS {name} ON signals {definition}"
        ))
        .await?;
    }
    for (name, _) in old {
        db.execute_unprepared(&format!("DROP INDEX IF EXISTS {name}"))
            .await?;
    }
    Ok(())
}
