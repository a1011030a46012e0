//! Waiting costs nothing while nothing is due (issue 14):
//! - `executions.signaled`: set, in the same transaction, by whoever
//!   stores a signal, an answer or a child's completion for the execution;
//!   cleared by the owner when it wakes the execution;
//! - `ix_executions_owner_wait` on `(owner_node, state, wait_until)`: a
//!   node's due timers and timeouts by a range scan on the due time;
//! - `ix_executions_owner_signaled` on `(owner_node, state, signaled)`: its
//!   signaled parked executions by a lookup;
//! - `ix_signals_name_pending` on `signals (name, consumed_at)`: the cancels
//!   other nodes asked for, without reading the consumed history;
//! - `ix_signals_execution_pending` on `signals (execution_id, name,
//!   consumed_at, id)` in place of `ix_signals_execution_name`: a run's
//!   lookup of its pending signal by execution, name and `consumed_at IS
//!   NULL` matches three columns here against two of the cancels' index;
//!   SQLite (no statistics) picked the cancels' index for it and read every
//!   pending signal of that name per lookup (100,000 bulk signals took 3x
//!   as long to deliver);
//! - `ix_signals_pending_created` on `signals (consumed_at, created_at)`:
//!   the catch-up over the last seconds' signals (a signal stored by a
//!   node of an older version carries no flag).
//!
//! So the wake scan reads what is due, never every parked execution. The
//! migration flags the executions already parked on a signal that arrived
//! before it ran, so none of them is left asleep.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Executions {
    Table,
    Id,
    OwnerNode,
    State,
    WaitUntil,
    Signaled,
}

#[derive(DeriveIden)]
enum Signals {
    Table,
    Id,
    ExecutionId,
    Name,
    ConsumedAt,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Executions::Table)
                    .add_column(
                        ColumnDef::new(Executions::Signaled)
                            .small_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, last) in [
            ("ix_executions_owner_wait", Executions::WaitUntil),
            ("ix_executions_owner_signaled", Executions::Signaled),
        ] {
            manager
                .create_index(
                    Index::create()
                        .if_not_exists()
                        .name(name)
                        .table(Executions::Table)
                        .col(Executions::OwnerNode)
                        .col(Executions::State)
                        .col(last)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .drop_index(
                Index::drop()
                    .name("ix_signals_execution_name")
                    .table(Signals::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("ix_signals_execution_pending")
                    .table(Signals::Table)
                    .col(Signals::ExecutionId)
                    .col(Signals::Name)
                    .col(Signals::ConsumedAt)
                    .col(Signals::Id)
                    .to_owned(),
            )
            .await?;
        for (name, first, second) in [
            (
                "ix_signals_name_pending",
                Signals::Name,
                Signals::ConsumedAt,
            ),
            (
                "ix_signals_pending_created",
                Signals::ConsumedAt,
                Signals::CreatedAt,
            ),
        ] {
            manager
                .create_index(
                    Index::create()
                        .if_not_exists()
                        .name(name)
                        .table(Signals::Table)
                        .col(first)
                        .col(second)
                        .to_owned(),
                )
                .await?;
        }
        // Parked on a signal that is already there: flagged, so the new
        // wake scan finds them.
        manager
            .exec_stmt(
                Query::update()
                    .table(Executions::Table)
                    .value(Executions::Signaled, 1)
                    .and_where(Expr::col(Executions::State).eq("waiting-signal"))
                    .and_where(Expr::exists(
                        Query::select()
                            .expr(Expr::val(1))
                            .from(Signals::Table)
                            .and_where(
                                Expr::col((Signals::Table, Signals::ExecutionId))
                                    .equals((Executions::Table, Executions::Id)),
                            )
                            .and_where(Expr::col((Signals::Table, Signals::ConsumedAt)).is_null())
                            .to_owned(),
                    ))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for name in [
            "ix_signals_pending_created",
            "ix_signals_name_pending",
            "ix_signals_execution_pending",
        ] {
            manager
                .drop_index(Index::drop().name(name).table(Signals::Table).to_owned())
                .await?;
        }
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
        for name in ["ix_executions_owner_signaled", "ix_executions_owner_wait"] {
            manager
                .drop_index(Index::drop().name(name).table(Executions::Table).to_owned())
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Executions::Table)
                    .drop_column(Executions::Signaled)
                    .to_owned(),
            )
            .await
    }
}
