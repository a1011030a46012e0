//! Indexes for the execution search and for retention, and the retention
//! lock.
//!
//! The search (`GET /api/executions`) lists newest first, ordered by
//! `(created_at, id)`, with at most one equality filter served by an index:
//! each filter gets an index on `(filter, created_at, id)`, so that a page
//! is one index range scan whatever the table's size. `(workflow_id,
//! created_at)` and `(parent_id)` are replaced by their longer forms.
//!
//! Retention deletes finished executions by `ended_at`. Purges of the
//! cluster's nodes run one at a time: each purge transaction first updates
//! row 2 of `cluster_lock` (row 1 serializes membership; purges must not
//! wait on it).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Executions {
    Table,
    Id,
    WorkflowId,
    ParentId,
    State,
    OwnerNode,
    CreatedAt,
    EndedAt,
}

#[derive(DeriveIden)]
enum ClusterEvents {
    Table,
    Time,
}

#[derive(DeriveIden)]
enum ClusterLock {
    Table,
    Id,
    Counter,
}

/// The `cluster_lock` row that serializes retention purges.
pub const RETENTION_LOCK_ROW: i32 = 2;

fn by_created(name: &str, first: Option<Executions>) -> IndexCreateStatement {
    let mut index = Index::create();
    index.if_not_exists().name(name).table(Executions::Table);
    if let Some(col) = first {
        index.col(col);
    }
    index
        .col(Executions::CreatedAt)
        .col(Executions::Id)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for index in [
            by_created("ix_executions_created", None),
            by_created(
                "ix_executions_workflow_created_id",
                Some(Executions::WorkflowId),
            ),
            by_created("ix_executions_state_created", Some(Executions::State)),
            by_created("ix_executions_parent_created", Some(Executions::ParentId)),
            by_created("ix_executions_owner_created", Some(Executions::OwnerNode)),
            Index::create()
                .if_not_exists()
                .name("ix_executions_ended")
                .table(Executions::Table)
                .col(Executions::EndedAt)
                .to_owned(),
            Index::create()
                .if_not_exists()
                .name("ix_cluster_events_time")
                .table(ClusterEvents::Table)
                .col(ClusterEvents::Time)
                .to_owned(),
        ] {
            manager.create_index(index).await?;
        }
        for old in ["ix_executions_workflow_created", "ix_executions_parent"] {
            manager
                .drop_index(Index::drop().name(old).table(Executions::Table).to_owned())
                .await?;
        }
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(ClusterLock::Table)
                    .columns([ClusterLock::Id, ClusterLock::Counter])
                    .values_panic([RETENTION_LOCK_ROW.into(), 0i64.into()])
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .exec_stmt(
                Query::delete()
                    .from_table(ClusterLock::Table)
                    .and_where(Expr::col(ClusterLock::Id).eq(RETENTION_LOCK_ROW))
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
            .await?;
        for name in [
            "ix_executions_created",
            "ix_executions_workflow_created_id",
            "ix_executions_state_created",
            "ix_executions_parent_created",
            "ix_executions_owner_created",
            "ix_executions_ended",
        ] {
            manager
                .drop_index(Index::drop().name(name).table(Executions::Table).to_owned())
                .await?;
        }
        manager
            .drop_index(
                Index::drop()
                    .name("ix_cluster_events_time")
                    .table(ClusterEvents::Table)
                    .to_owned(),
            )
            .await
    }
}
