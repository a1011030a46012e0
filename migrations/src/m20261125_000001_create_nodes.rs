//! The `nodes` table: one row per cluster member.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Nodes {
    Table,
    Id,
    Address,
    Role,
    State,
    Epoch,
    LastHeartbeat,
    Fingerprint,
    StartedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Nodes::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Nodes::Id)
                            .string_len(128)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Nodes::Address).string_len(256).not_null())
                    .col(ColumnDef::new(Nodes::Role).string_len(16).not_null())
                    .col(ColumnDef::new(Nodes::State).string_len(16).not_null())
                    .col(ColumnDef::new(Nodes::Epoch).big_integer().not_null())
                    .col(
                        ColumnDef::new(Nodes::LastHeartbeat)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Nodes::Fingerprint).text().not_null())
                    .col(ColumnDef::new(Nodes::StartedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await
    }
}
