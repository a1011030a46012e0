//! Indexes that hold only the rows their reads can match, and that no
//! other read can mistake for its own (PostgreSQL and SQLite; issue 14).
//!
//! `signals`: an awaiting run reads its pending signal by `execution_id =
//! ? AND name = ? AND consumed_at IS NULL`, which
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
//!
//! `executions`: every update that changes an indexed column (a start, a
//! park, a wake, a completion) writes a new entry into every index of the
//! table, and five of them only ever serve rows with a value in one
//! column: the wake scan's timers `(owner_node, state, wait_until)` and
//! the overdue gauge's `(state, wait_until)` (rows with a deadline), the
//! wake scan's signaled rows `(owner_node, state, signaled)` (rows flagged
//! `signaled = 1`), retention's `(ended_at)` (finished rows), a parent's
//! children `(parent_id, created_at, id)` (child rows). Each becomes a
//! partial index with the same columns. Every read they served compares
//! that column (`wait_until <= now`, `signaled = 1` in the statement's
//! text, `ended_at < cutoff`, `parent_id = ?` or `IN (...)`), which
//! implies the predicate, so each read keeps its index. A top-level
//! execution running or done now writes six entries per such update
//! instead of eleven, and the indexes no longer hold a hundred thousand
//! identical keys of executions parked on a signal, which PostgreSQL's
//! bottom-up deletion sorted through on every insert. It also ends a
//! trap like the signals': on a table not yet analyzed, PostgreSQL read
//! the wake scan through `ix_executions_owner_state (owner_node, state)`,
//! which stays (the lookups of a node's unfinished executions read it),
//! and walked every parked execution.
//!
//! MySQL/MariaDB have no partial indexes and keep theirs (their optimizer
//! estimates from the index itself and keeps no plan across statements).
//!
//! Every new index is built first, then every old one dropped: the
//! builds hold the tables' writes while they run (a large table takes a
//! while), and the drops, which take the tables exclusively until the
//! migrations commit (they run in one transaction), come last.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

/// `(table, old name, old definition, new name, new definition)`.
const INDEXES: &[(&str, &str, &str, &str, &str)] = &[
    (
        "signals",
        "ix_signals_name_pending",
        "(name, consumed_at)",
        "ix_signals_cancels",
        "(execution_id) WHERE name = '__cancel' AND consumed_at IS NULL",
    ),
    (
        "signals",
        "ix_signals_pending_created",
        "(consumed_at, created_at)",
        "ix_signals_created",
        "(created_at)",
    ),
    (
        "executions",
        "ix_executions_owner_wait",
        "(owner_node, state, wait_until)",
        "ix_executions_due_by_owner",
        "(owner_node, state, wait_until) WHERE wait_until IS NOT NULL",
    ),
    (
        "executions",
        "ix_executions_state_wait",
        "(state, wait_until)",
        "ix_executions_due_by_state",
        "(state, wait_until) WHERE wait_until IS NOT NULL",
    ),
    (
        "executions",
        "ix_executions_owner_signaled",
        "(owner_node, state, signaled)",
        "ix_executions_signaled_by_owner",
        "(owner_node, state, signaled) WHERE signaled = 1",
    ),
    (
        "executions",
        "ix_executions_ended",
        "(ended_at)",
        "ix_executions_ended_at",
        "(ended_at) WHERE ended_at IS NOT NULL",
    ),
    (
        "executions",
        "ix_executions_parent_created",
        "(parent_id, created_at, id)",
        "ix_executions_children",
        "(parent_id, created_at, id) WHERE parent_id IS NOT NULL",
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let indexes: Vec<_> = INDEXES
            .iter()
            .map(|(t, old, _, new, definition)| (*t, *new, *definition, *old))
            .collect();
        replace(manager, &indexes).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let indexes: Vec<_> = INDEXES
            .iter()
            .map(|(t, old, definition, new, _)| (*t, *old, *definition, *new))
            .collect();
        replace(manager, &indexes).await
    }
}

/// Builds each `(table, name, definition, _)`, then drops each
/// `(_, _, _, replaced)`.
async fn replace(
    manager: &SchemaManager<'_>,
    indexes: &[(&str, &str, &str, &str)],
) -> Result<(), DbErr> {
    if manager.get_database_backend() == DbBackend::MySql {
        return Ok(());
    }
    let db = manager.get_connection();
    for (table, name, definition, _) in indexes {
        db.execute_unprepared(&format!(
            "CREATE INDEX IF NOT EXISTS {name} ON {table} {definition}"
        ))
        .await?;
    }
    for (_, _, _, replaced) in indexes {
        db.execute_unprepared(&format!("DROP INDEX IF EXISTS {replaced}"))
            .await?;
    }
    Ok(())
}
