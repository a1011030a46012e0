//! The `workflows` table (the current version of each definition) and
//! `workflow_versions` (every version ever stored, so that a running
//! execution keeps the version it started with).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Workflows {
    Table,
    Id,
    Name,
    Version,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum WorkflowVersions {
    Table,
    WorkflowId,
    Version,
    Body,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Workflows::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Workflows::Id)
                            .string_len(128)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Workflows::Name).string_len(256).not_null())
                    .col(ColumnDef::new(Workflows::Version).big_integer().not_null())
                    .col(
                        ColumnDef::new(Workflows::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Workflows::UpdatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WorkflowVersions::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(WorkflowVersions::WorkflowId)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(WorkflowVersions::Version)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(WorkflowVersions::Body).text().not_null())
                    .col(
                        ColumnDef::new(WorkflowVersions::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(WorkflowVersions::WorkflowId)
                            .col(WorkflowVersions::Version),
                    )
                    .to_owned(),
            )
            .await
    }
}
