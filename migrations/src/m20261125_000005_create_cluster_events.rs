//! The `cluster_events` table: joins, leaves, fencings and failovers.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum ClusterEvents {
    Table,
    Id,
    Time,
    Kind,
    NodeId,
    Message,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ClusterEvents::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(ClusterEvents::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(ClusterEvents::Time).big_integer().not_null())
                    .col(
                        ColumnDef::new(ClusterEvents::Kind)
                            .string_len(32)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ClusterEvents::NodeId)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(ColumnDef::new(ClusterEvents::Message).text().not_null())
                    .to_owned(),
            )
            .await
    }
}
