//! The `signals` table: named events (and user-interaction answers)
//! delivered to an execution, kept until the execution consumes them, so a
//! signal sent before the execution waits, or while its node is down, is
//! not lost. Any node may insert one; only the owner consumes it, in the
//! same transaction as the item's completion.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Signals {
    Table,
    Id,
    ExecutionId,
    Name,
    Payload,
    CreatedAt,
    ConsumedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Signals::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Signals::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Signals::ExecutionId)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Signals::Name).string_len(128).not_null())
                    .col(ColumnDef::new(Signals::Payload).text().not_null())
                    .col(ColumnDef::new(Signals::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Signals::ConsumedAt).big_integer().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("ix_signals_execution_name")
                    .table(Signals::Table)
                    .col(Signals::ExecutionId)
                    .col(Signals::Name)
                    .col(Signals::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("ix_executions_state_wait")
                    .table(Alias::new("executions"))
                    .col(Alias::new("state"))
                    .col(Alias::new("wait_until"))
                    .to_owned(),
            )
            .await
    }
}
