//! Reading executions in pages: the search across workflows, the children
//! counts shown with each execution, and the item log in pages.
//!
//! Pages are keyset pages, newest first by `(created_at, id)`: a cursor is
//! the key of the last row of a page, and the next page starts strictly
//! below it, so rows created meanwhile never shift a page. Every filter
//! has an index on `(filter, created_at, id)` (migration 9), and the
//! keyset bound is written `created_at <= t AND (created_at < t OR id <
//! i)`, a range on the index on all three backends (MySQL does not use
//! row-value comparisons for ranges).

use std::collections::HashMap;

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, DbBackend, EntityTrait, FromQueryResult, QueryFilter, QueryOrder, QuerySelect,
    QueryTrait, Select,
};

use super::entities::{execution, item_log};
use super::{state, Store};
use crate::error::StoreError;

/// Where a page of executions starts: strictly below this key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageKey {
    /// The `created_at` of the last row of the previous page.
    pub created_at: i64,
    /// Its id.
    pub id: String,
}

/// Filters for listing executions; all given filters must hold.
#[derive(Clone, Debug, Default)]
pub struct ExecutionFilter {
    /// Only this workflow's executions.
    pub workflow_id: Option<String>,
    /// Only executions in this state.
    pub state: Option<String>,
    /// Only children of this execution.
    pub parent_id: Option<String>,
    /// Only executions owned by this node.
    pub owner_node: Option<String>,
    /// Only those created at or after this time (ms since the epoch).
    pub created_after: Option<i64>,
    /// Only those created before this time (ms since the epoch).
    pub created_before: Option<i64>,
    /// At most this many.
    pub limit: u64,
    /// Only those listed after this execution id (newest first); an
    /// unknown id is [`StoreError::NotFound`].
    pub after: Option<String>,
    /// Only those below this key (a cursor).
    pub below: Option<PageKey>,
}

/// How many children an execution has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ChildCounts {
    /// All of them.
    pub total: u64,
    /// Those not finished.
    pub unfinished: u64,
}

#[derive(Debug, FromQueryResult)]
struct ChildRow {
    parent_id: Option<String>,
    state: String,
    n: i64,
}

/// The query of a page: the filters, the keyset bound, the order and the
/// limit.
fn select(filter: &ExecutionFilter, below: Option<&PageKey>) -> Select<execution::Entity> {
    let mut q = execution::Entity::find();
    if let Some(w) = &filter.workflow_id {
        q = q.filter(execution::Column::WorkflowId.eq(w.as_str()));
    }
    if let Some(s) = &filter.state {
        q = q.filter(execution::Column::State.eq(s.as_str()));
    }
    if let Some(p) = &filter.parent_id {
        q = q.filter(execution::Column::ParentId.eq(p.as_str()));
    }
    if let Some(n) = &filter.owner_node {
        q = q.filter(execution::Column::OwnerNode.eq(n.as_str()));
    }
    if let Some(t) = filter.created_after {
        q = q.filter(execution::Column::CreatedAt.gte(t));
    }
    if let Some(t) = filter.created_before {
        q = q.filter(execution::Column::CreatedAt.lt(t));
    }
    if let Some(k) = below {
        q = q.filter(
            Expr::col(execution::Column::CreatedAt)
                .lte(k.created_at)
                .and(
                    Expr::col(execution::Column::CreatedAt)
                        .lt(k.created_at)
                        .or(Expr::col(execution::Column::Id).lt(k.id.as_str())),
                ),
        );
    }
    q.order_by_desc(execution::Column::CreatedAt)
        .order_by_desc(execution::Column::Id)
        .limit(filter.limit)
}

/// The SQL of a search page (values inline), for `EXPLAIN` in tests and
/// benchmarks. `filter.after` is not resolved here: give `below`.
pub fn search_sql(backend: DbBackend, filter: &ExecutionFilter) -> String {
    select(filter, filter.below.as_ref())
        .build(backend)
        .to_string()
}

impl Store {
    /// Executions, newest first (by creation time, then id).
    pub async fn executions(
        &self,
        filter: ExecutionFilter,
    ) -> Result<Vec<execution::Model>, StoreError> {
        let mut below = filter.below.clone();
        if let Some(after) = &filter.after {
            let a = self
                .execution(after)
                .await?
                .ok_or_else(|| StoreError::NotFound {
                    kind: "execution",
                    id: after.clone(),
                })?;
            below = Some(PageKey {
                created_at: a.created_at,
                id: a.id,
            });
        }
        self.db()
            .run_report(move |c| async move { Ok(select(&filter, below.as_ref()).all(&c).await?) })
            .await
    }

    /// The children counts of each of `parents` (absent: none), in one
    /// grouped query on the parent index.
    pub async fn child_counts(
        &self,
        parents: Vec<String>,
    ) -> Result<HashMap<String, ChildCounts>, StoreError> {
        if parents.is_empty() {
            return Ok(HashMap::new());
        }
        self.db()
            .run_report(move |c| async move {
                let rows = execution::Entity::find()
                    .select_only()
                    .column(execution::Column::ParentId)
                    .column(execution::Column::State)
                    .column_as(Expr::col(execution::Column::Id).count(), "n")
                    .filter(execution::Column::ParentId.is_in(parents))
                    .group_by(execution::Column::ParentId)
                    .group_by(execution::Column::State)
                    .into_model::<ChildRow>()
                    .all(&c)
                    .await?;
                let mut counts: HashMap<String, ChildCounts> = HashMap::new();
                for r in rows {
                    let Some(parent) = r.parent_id else { continue };
                    let entry = counts.entry(parent).or_default();
                    let n = u64::try_from(r.n).unwrap_or(0);
                    entry.total += n;
                    if state::UNFINISHED.contains(&r.state.as_str()) {
                        entry.unfinished += n;
                    }
                }
                Ok(counts)
            })
            .await
    }

    /// A page of the item log of one execution, oldest first: at most
    /// `limit` records after the record `after` (a record id; `None`: from
    /// the first).
    pub async fn item_log_page(
        &self,
        execution_id: &str,
        after: Option<i64>,
        limit: u64,
    ) -> Result<Vec<item_log::Model>, StoreError> {
        let id = execution_id.to_owned();
        self.db()
            .run_report(move |c| async move {
                let mut q = item_log::Entity::find().filter(item_log::Column::ExecutionId.eq(id));
                if let Some(a) = after {
                    q = q.filter(item_log::Column::Id.gt(a));
                }
                Ok(q.order_by_asc(item_log::Column::Id)
                    .limit(limit)
                    .all(&c)
                    .await?)
            })
            .await
    }
}
