//! The `executions` table: one row per workflow run. Every write on a row
//! is fenced by `owner_node` and `owner_epoch` (DESIGN.md invariant 2).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Executions {
    Table,
    Id,
    WorkflowId,
    WorkflowVersion,
    ParentId,
    State,
    Inputs,
    Variables,
    Outputs,
    CurrentItem,
    Step,
    Attempt,
    OwnerNode,
    OwnerEpoch,
    Error,
    WaitUntil,
    WaitSignal,
    CreatedAt,
    StartedAt,
    EndedAt,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Executions::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Executions::Id).string_len(64).not_null().primary_key())
                    .col(ColumnDef::new(Executions::WorkflowId).string_len(128).not_null())
                    .col(ColumnDef::new(Executions::WorkflowVersion).big_integer().not_null())
                    .col(ColumnDef::new(Executions::ParentId).string_len(64).null())
                    .col(ColumnDef::new(Executions::State).string_len(32).not_null())
                    .col(ColumnDef::new(Executions::Inputs).text().not_null())
                    .col(ColumnDef::new(Executions::Variables).text().not_null())
                    .col(ColumnDef::new(Executions::Outputs).text().null())
                    .col(ColumnDef::new(Executions::CurrentItem).string_len(128).null())
                    .col(ColumnDef::new(Executions::Step).big_integer().not_null())
                    .col(ColumnDef::new(Executions::Attempt).integer().not_null())
                    .col(ColumnDef::new(Executions::OwnerNode).string_len(128).null())
                    .col(ColumnDef::new(Executions::OwnerEpoch).big_integer().not_null())
                    .col(ColumnDef::new(Executions::Error).text().null())
                    .col(ColumnDef::new(Executions::WaitUntil).big_integer().null())
                    .col(ColumnDef::new(Executions::WaitSignal).string_len(128).null())
                    .col(ColumnDef::new(Executions::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Executions::StartedAt).big_integer().null())
                    .col(ColumnDef::new(Executions::EndedAt).big_integer().null())
                    .col(ColumnDef::new(Executions::UpdatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("ix_executions_owner_state")
                    .table(Executions::Table)
                    .col(Executions::OwnerNode)
                    .col(Executions::State)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("ix_executions_workflow_created")
                    .table(Executions::Table)
                    .col(Executions::WorkflowId)
                    .col(Executions::CreatedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("ix_executions_parent")
                    .table(Executions::Table)
                    .col(Executions::ParentId)
                    .to_owned(),
            )
            .await
    }
}
