//! The `item_log` table: what happened to each item of each execution.
//!
//! `completed_step` is set only on `completed` records, to the execution's
//! step number; its unique index makes a second completion record for the
//! same step impossible (DESIGN.md invariant 7), whatever the engine does.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum ItemLog {
    Table,
    Id,
    ExecutionId,
    Item,
    Step,
    Attempt,
    Event,
    Node,
    Time,
    Message,
    CompletedStep,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ItemLog::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(ItemLog::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(ItemLog::ExecutionId)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(ColumnDef::new(ItemLog::Item).string_len(128).not_null())
                    .col(ColumnDef::new(ItemLog::Step).big_integer().not_null())
                    .col(ColumnDef::new(ItemLog::Attempt).integer().not_null())
                    .col(ColumnDef::new(ItemLog::Event).string_len(16).not_null())
                    .col(ColumnDef::new(ItemLog::Node).string_len(128).not_null())
                    .col(ColumnDef::new(ItemLog::Time).big_integer().not_null())
                    .col(ColumnDef::new(ItemLog::Message).text().null())
                    .col(ColumnDef::new(ItemLog::CompletedStep).big_integer().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("ix_item_log_execution")
                    .table(ItemLog::Table)
                    .col(ItemLog::ExecutionId)
                    .col(ItemLog::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .unique()
                    .name("ux_item_log_completion")
                    .table(ItemLog::Table)
                    .col(ItemLog::ExecutionId)
                    .col(ItemLog::CompletedStep)
                    .to_owned(),
            )
            .await
    }
}
