//! The `cluster_lock` table: one row that every cluster-membership
//! transaction (join, promotion, takeover, leave) updates first, so that
//! these transactions run one at a time on every backend (a row lock on
//! PostgreSQL and MySQL/MariaDB, the write lock on SQLite) and each sees
//! the others' committed results.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum ClusterLock {
    Table,
    Id,
    Counter,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ClusterLock::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(ClusterLock::Id)
                            .integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(ClusterLock::Counter)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(ClusterLock::Table)
                    .columns([ClusterLock::Id, ClusterLock::Counter])
                    .values_panic([1.into(), 0i64.into()])
                    .to_owned(),
            )
            .await
    }
}
