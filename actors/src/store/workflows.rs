//! Workflow definitions and their versions. A definition's body is stored
//! as the validated JSON text; each replace stores a new version row so
//! that running executions keep the version they started with.

use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::entities::{execution, workflow, workflow_version};
use super::{is_unique_violation, state, Store};
use crate::error::StoreError;

/// A definition's identity, for listings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkflowSummary {
    /// Its id.
    pub id: String,
    /// Its display name.
    pub name: String,
    /// Its current version.
    pub version: i64,
}

impl Store {
    /// Every definition, by id.
    pub async fn workflows(&self) -> Result<Vec<WorkflowSummary>, StoreError> {
        self.db()
            .run(move |c| async move {
                let rows = workflow::Entity::find()
                    .order_by_asc(workflow::Column::Id)
                    .all(&c)
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|r| WorkflowSummary {
                        id: r.id,
                        name: r.name,
                        version: r.version,
                    })
                    .collect())
            })
            .await
    }

    /// The current version of a definition, without its body (on a reader
    /// connection on SQLite: every start reads it).
    pub async fn workflow_summary(&self, id: &str) -> Result<Option<WorkflowSummary>, StoreError> {
        let id = id.to_owned();
        self.db()
            .run_read(move |c| async move {
                Ok(workflow::Entity::find_by_id(id)
                    .one(&c)
                    .await?
                    .map(|w| WorkflowSummary {
                        id: w.id,
                        name: w.name,
                        version: w.version,
                    }))
            })
            .await
    }

    /// The current version of a definition and its body.
    pub async fn workflow(
        &self,
        id: &str,
    ) -> Result<Option<(WorkflowSummary, String)>, StoreError> {
        let id = id.to_owned();
        self.db()
            .run(move |c| async move {
                let Some(w) = workflow::Entity::find_by_id(id.clone()).one(&c).await? else {
                    return Ok(None);
                };
                let body = workflow_version::Entity::find_by_id((id.clone(), w.version))
                    .one(&c)
                    .await?
                    .ok_or_else(|| StoreError::Corrupt {
                        what: format!("workflow {id}"),
                        reason: format!("version {} has no body", w.version),
                    })?;
                Ok(Some((
                    WorkflowSummary {
                        id: w.id,
                        name: w.name,
                        version: w.version,
                    },
                    body.body,
                )))
            })
            .await
    }

    /// The body of one version of a definition.
    pub async fn workflow_version(
        &self,
        id: &str,
        version: i64,
    ) -> Result<Option<String>, StoreError> {
        let id = id.to_owned();
        self.db()
            .run(move |c| async move {
                Ok(workflow_version::Entity::find_by_id((id, version))
                    .one(&c)
                    .await?
                    .map(|v| v.body))
            })
            .await
    }

    /// Stores a new definition. Its version continues after any earlier
    /// definition of the same id that was deleted, so a version number
    /// never names two bodies.
    pub async fn insert_workflow(
        &self,
        id: &str,
        name: &str,
        body: String,
    ) -> Result<i64, StoreError> {
        let backend = self.backend();
        let (id, name) = (id.to_owned(), name.to_owned());
        self.db()
            .run(move |c| async move {
                let now = Store::now_expr(backend);
                let txn = crate::store::begin(&c).await?;
                let previous = workflow_version::Entity::find()
                    .select_only()
                    .column_as(workflow_version::Column::Version.max(), "v")
                    .filter(workflow_version::Column::WorkflowId.eq(id.as_str()))
                    .into_tuple::<Option<i64>>()
                    .one(&txn)
                    .await?
                    .flatten()
                    .unwrap_or(0);
                let version = previous + 1;
                let insert = Query::insert()
                    .into_table(workflow::Entity)
                    .columns([
                        workflow::Column::Id,
                        workflow::Column::Name,
                        workflow::Column::Version,
                        workflow::Column::CreatedAt,
                        workflow::Column::UpdatedAt,
                    ])
                    .values_panic([
                        Expr::value(id.as_str()),
                        Expr::value(name.as_str()),
                        Expr::value(version),
                        now.clone(),
                        now.clone(),
                    ])
                    .to_owned();
                match txn.execute(&insert).await {
                    Ok(_) => {}
                    Err(e) if is_unique_violation(&e) => {
                        txn.rollback().await?;
                        return Err(StoreError::AlreadyExists {
                            kind: "workflow",
                            id,
                        });
                    }
                    Err(e) => return Err(e.into()),
                }
                insert_version(&txn, backend, &id, version, body).await?;
                txn.commit().await?;
                Ok(version)
            })
            .await
    }

    /// Replaces a definition if its current version is `expected`; returns
    /// the new version.
    pub async fn replace_workflow(
        &self,
        id: &str,
        expected: i64,
        name: &str,
        body: String,
    ) -> Result<i64, StoreError> {
        let backend = self.backend();
        let (id, name) = (id.to_owned(), name.to_owned());
        self.db()
            .run(move |c| async move {
                let now = Store::now_expr(backend);
                let txn = crate::store::begin(&c).await?;
                let updated = workflow::Entity::update_many()
                    .col_expr(
                        workflow::Column::Version,
                        Expr::col(workflow::Column::Version).add(1),
                    )
                    .col_expr(workflow::Column::Name, Expr::value(name.as_str()))
                    .col_expr(workflow::Column::UpdatedAt, now)
                    .filter(workflow::Column::Id.eq(id.as_str()))
                    .filter(workflow::Column::Version.eq(expected))
                    .exec(&txn)
                    .await?;
                if updated.rows_affected == 0 {
                    let current = workflow::Entity::find_by_id(id.clone()).one(&txn).await?;
                    txn.rollback().await?;
                    return Err(match current {
                        None => StoreError::NotFound {
                            kind: "workflow",
                            id,
                        },
                        Some(w) => StoreError::VersionMismatch {
                            expected,
                            current: w.version,
                        },
                    });
                }
                insert_version(&txn, backend, &id, expected + 1, body).await?;
                txn.commit().await?;
                Ok(expected + 1)
            })
            .await
    }

    /// Deletes a definition unless executions of it are unfinished. Its
    /// stored versions stay, for the history of finished executions.
    pub async fn delete_workflow(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.db()
            .run(move |c| async move {
                let unfinished = Query::select()
                    .expr(Expr::val(1))
                    .from(execution::Entity)
                    .and_where(Expr::col((execution::Entity, execution::Column::WorkflowId)).eq(id.as_str()))
                    .and_where(
                        Expr::col((execution::Entity, execution::Column::State))
                            .is_in(state::UNFINISHED),
                    )
                    .to_owned();
                let deleted = workflow::Entity::delete_many()
                    .filter(workflow::Column::Id.eq(id.as_str()))
                    .filter(Expr::exists(unfinished).not())
                    .exec(&c)
                    .await?;
                if deleted.rows_affected == 1 {
                    return Ok(());
                }
                match workflow::Entity::find_by_id(id.clone()).one(&c).await? {
                    None => Err(StoreError::NotFound { kind: "workflow", id }),
                    Some(_) => Err(StoreError::Conflict(format!(
                        "workflow {id} has unfinished executions; cancel them or wait for them first"
                    ))),
                }
            })
            .await
    }
}

async fn insert_version(
    txn: &sea_orm::DatabaseTransaction,
    backend: sea_orm::DbBackend,
    id: &str,
    version: i64,
    body: String,
) -> Result<(), StoreError> {
    let insert = Query::insert()
        .into_table(workflow_version::Entity)
        .columns([
            workflow_version::Column::WorkflowId,
            workflow_version::Column::Version,
            workflow_version::Column::Body,
            workflow_version::Column::CreatedAt,
        ])
        .values_panic([
            Expr::value(id),
            Expr::value(version),
            Expr::value(body),
            Store::now_expr(backend),
        ])
        .to_owned();
    txn.execute(&insert).await?;
    Ok(())
}
