//! Two columns on `executions`:
//! - `run_token`: a per-row counter that every claim of a run, every wake
//!   and every reopen moves forward. A run starts only by a compare-and-set
//!   on the token (with step and attempt) it read, and every write of the
//!   run is fenced by the token it claimed (DESIGN.md invariant 10).
//! - `item_retries`: how many times the current item was retried after a
//!   failure (not after a crash); a retried `workflow` or `foreach` item
//!   starts new children under ids that include it.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Executions {
    Table,
    RunToken,
    ItemRetries,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(Executions::Table)
                    .add_column(
                        ColumnDef::new(Executions::RunToken)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Executions::Table)
                    .add_column(
                        ColumnDef::new(Executions::ItemRetries)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Executions::Table)
                    .drop_column(Executions::ItemRetries)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Executions::Table)
                    .drop_column(Executions::RunToken)
                    .to_owned(),
            )
            .await
    }
}
