//! Documents past 64 KB on MySQL/MariaDB: there `TEXT` holds at most
//! 65,535 bytes, so an execution's inputs or variables, a signal's payload
//! or a workflow definition past that was refused ("Data too long for
//! column", answered 500), while PostgreSQL and SQLite took it (their
//! `TEXT` has no such limit). Those columns become `LONGTEXT`. A no-op on
//! PostgreSQL and SQLite.
//!
//! On MySQL/MariaDB this rebuilds the tables it changes (`ALTER TABLE ...
//! MODIFY` copies a table whose column type changes), so an upgrade of a
//! large database takes a while at start-up.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

/// `(table, [(column, nullable)])` widened to `LONGTEXT`.
const COLUMNS: &[(&str, &[(&str, bool)])] = &[
    (
        "executions",
        &[
            ("inputs", false),
            ("variables", false),
            ("outputs", true),
            ("error", true),
        ],
    ),
    ("signals", &[("payload", false)]),
    ("item_log", &[("message", true)]),
    ("workflow_versions", &[("body", false)]),
    ("cluster_events", &[("message", false)]),
    ("webhook_deliveries", &[("last_error", true)]),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        widen(manager, "LONGTEXT").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        widen(manager, "TEXT").await
    }
}

async fn widen(manager: &SchemaManager<'_>, to: &str) -> Result<(), DbErr> {
    if manager.get_database_backend() != DbBackend::MySql {
        return Ok(());
    }
    let db = manager.get_connection();
    for (table, columns) in COLUMNS {
        let modify: Vec<String> = columns
            .iter()
            .map(|(c, nullable)| {
                let null = if *nullable { "NULL" } else { "NOT NULL" };
                format!("MODIFY `{c}` {to} {null}")
            })
            .collect();
        db.execute_unprepared(&format!("ALTER TABLE `{table}` {}", modify.join(", ")))
            .await?;
    }
    Ok(())
}
