//! Webhook deliveries of cluster events (`[[notify.webhooks]]`).
//!
//! Every node with webhooks configured discovers new cluster events and
//! creates their delivery rows, an idempotent insert (the primary key is
//! `(event_id, webhook)`), so the event is delivered whichever node
//! recorded it and whether or not that node lives. A node sends a
//! delivery only while it holds its claim: claimed by a conditional
//! update, kept across retries (`claimed_until` past the next attempt),
//! lapsing when the node dies so another takes it over. Every time is the
//! database clock's.

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

use super::entities::{cluster_event, webhook_delivery as wd};
use super::Store;
use crate::error::StoreError;

/// A delivery's states.
pub mod delivery_state {
    /// Not delivered yet; retried until `max_attempts`.
    pub const PENDING: &str = "pending";
    /// The receiver answered 2xx.
    pub const DELIVERED: &str = "delivered";
    /// Every attempt failed.
    pub const FAILED: &str = "failed";
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The receiver answered 2xx.
    Delivered {
        /// Its status.
        status: i32,
    },
    /// Failed; try again after `after_ms`, keeping the claim `lease_ms`
    /// past that.
    Retry {
        /// The status, if the receiver answered.
        status: Option<i32>,
        /// What went wrong.
        error: String,
        /// The backoff.
        after_ms: i64,
        /// How long the claim outlives the next attempt's start.
        lease_ms: i64,
    },
    /// Failed for the last time.
    Failed {
        /// The status, if the receiver answered.
        status: Option<i32>,
        /// What went wrong.
        error: String,
    },
}

impl Store {
    /// The id of the newest cluster event (0 if there is none).
    pub async fn newest_event_id(&self) -> Result<i64, StoreError> {
        self.db()
            .run(move |c| async move {
                let id: Option<Option<i64>> = cluster_event::Entity::find()
                    .select_only()
                    .column_as(cluster_event::Column::Id.max(), "m")
                    .into_tuple()
                    .one(&c)
                    .await?;
                Ok(id.flatten().unwrap_or(0))
            })
            .await
    }

    /// The newest event `webhook` has a delivery for, if any: where a
    /// node that starts picks up (after a full-cluster restart too).
    pub async fn webhook_watermark(&self, webhook: &str) -> Result<Option<i64>, StoreError> {
        let webhook = webhook.to_owned();
        self.db()
            .run(move |c| async move {
                let id: Option<Option<i64>> = wd::Entity::find()
                    .select_only()
                    .column_as(wd::Column::EventId.max(), "m")
                    .filter(wd::Column::Webhook.eq(webhook))
                    .into_tuple()
                    .one(&c)
                    .await?;
                Ok(id.flatten())
            })
            .await
    }

    /// Creates `webhook`'s deliveries of the events of `kinds` newer than
    /// `after`, and of those of the last `recent_ms` (an event id committed
    /// after a higher one was seen). At most `limit` events; returns the
    /// highest event id looked at (`after` if none).
    pub async fn discover_deliveries(
        &self,
        webhook: &str,
        kinds: &[String],
        after: i64,
        recent_ms: i64,
        limit: u64,
    ) -> Result<i64, StoreError> {
        let backend = self.backend();
        let (webhook, kinds) = (webhook.to_owned(), kinds.to_vec());
        self.db()
            .run(move |c| async move {
                let since = Expr::cust(format!("{} - {recent_ms}", Store::now_sql(backend)));
                let ids: Vec<i64> = cluster_event::Entity::find()
                    .select_only()
                    .column(cluster_event::Column::Id)
                    .filter(cluster_event::Column::Kind.is_in(kinds))
                    .filter(
                        Condition::any()
                            .add(cluster_event::Column::Id.gt(after))
                            .add(Expr::col(cluster_event::Column::Time).gte(since)),
                    )
                    .order_by_asc(cluster_event::Column::Id)
                    .limit(limit)
                    .into_tuple()
                    .all(&c)
                    .await?;
                let Some(&newest) = ids.iter().max() else {
                    return Ok(after);
                };
                let mut insert = Query::insert();
                insert.into_table(wd::Entity).columns([
                    wd::Column::EventId,
                    wd::Column::Webhook,
                    wd::Column::State,
                    wd::Column::Attempts,
                    wd::Column::NextAttemptAt,
                    wd::Column::CreatedAt,
                ]);
                for id in &ids {
                    insert.values_panic([
                        Expr::value(*id),
                        Expr::value(webhook.as_str()),
                        Expr::value(delivery_state::PENDING),
                        Expr::value(0),
                        Store::now_expr(backend),
                        Store::now_expr(backend),
                    ]);
                }
                insert.on_conflict(
                    OnConflict::columns([wd::Column::EventId, wd::Column::Webhook])
                        .do_nothing_on([wd::Column::EventId])
                        .to_owned(),
                );
                c.execute(&insert).await?;
                Ok(std::cmp::max(newest, after))
            })
            .await
    }

    /// Claims `webhook`'s next due delivery for `node`, for `lease_ms`: one
    /// that is pending and unclaimed, whose claim lapsed, or that `node`
    /// holds already (its own retry). Returns it with its event.
    pub async fn claim_delivery(
        &self,
        webhook: &str,
        node: &str,
        lease_ms: i64,
    ) -> Result<Option<(wd::Model, cluster_event::Model)>, StoreError> {
        let backend = self.backend();
        let (webhook, node) = (webhook.to_owned(), node.to_owned());
        self.db()
            .run(move |c| async move {
                let now = || Store::now_expr(backend);
                let claimable = || {
                    Condition::any()
                        .add(wd::Column::ClaimedUntil.is_null())
                        .add(Expr::col(wd::Column::ClaimedUntil).lt(now()))
                        .add(wd::Column::ClaimedBy.eq(node.as_str()))
                };
                let due: Vec<wd::Model> = wd::Entity::find()
                    .filter(wd::Column::Webhook.eq(webhook.as_str()))
                    .filter(wd::Column::State.eq(delivery_state::PENDING))
                    .filter(Expr::col(wd::Column::NextAttemptAt).lte(now()))
                    .filter(claimable())
                    .order_by_asc(wd::Column::EventId)
                    .limit(8)
                    .all(&c)
                    .await?;
                for d in due {
                    let claimed = wd::Entity::update_many()
                        .col_expr(wd::Column::ClaimedBy, Expr::value(node.as_str()))
                        .col_expr(
                            wd::Column::ClaimedUntil,
                            Expr::cust(format!("{} + {lease_ms}", Store::now_sql(backend))),
                        )
                        .filter(wd::Column::EventId.eq(d.event_id))
                        .filter(wd::Column::Webhook.eq(webhook.as_str()))
                        .filter(wd::Column::State.eq(delivery_state::PENDING))
                        .filter(Expr::col(wd::Column::NextAttemptAt).lte(now()))
                        .filter(claimable())
                        .exec(&c)
                        .await?;
                    if claimed.rows_affected != 1 {
                        continue; // another node won it
                    }
                    let Some(event) = cluster_event::Entity::find_by_id(d.event_id)
                        .one(&c)
                        .await?
                    else {
                        // Purged since: nothing to send.
                        wd::Entity::delete_many()
                            .filter(wd::Column::EventId.eq(d.event_id))
                            .filter(wd::Column::Webhook.eq(webhook.as_str()))
                            .exec(&c)
                            .await?;
                        continue;
                    };
                    let row = wd::Entity::find_by_id((d.event_id, webhook.clone()))
                        .one(&c)
                        .await?
                        .unwrap_or(d);
                    return Ok(Some((row, event)));
                }
                Ok(None)
            })
            .await
    }

    /// Records an attempt's outcome, if `node` still holds the claim
    /// (false: it lapsed and another node took the delivery over).
    pub async fn finish_delivery(
        &self,
        event_id: i64,
        webhook: &str,
        node: &str,
        outcome: DeliveryOutcome,
    ) -> Result<bool, StoreError> {
        let backend = self.backend();
        let (webhook, node) = (webhook.to_owned(), node.to_owned());
        self.db()
            .run(move |c| async move {
                let now = || Store::now_expr(backend);
                let after = |ms: i64| Expr::cust(format!("{} + {ms}", Store::now_sql(backend)));
                let mut update = wd::Entity::update_many()
                    .col_expr(wd::Column::Attempts, Expr::col(wd::Column::Attempts).add(1));
                update = match outcome {
                    DeliveryOutcome::Delivered { status } => update
                        .col_expr(wd::Column::State, Expr::value(delivery_state::DELIVERED))
                        .col_expr(wd::Column::LastStatus, Expr::value(status))
                        .col_expr(wd::Column::LastError, Expr::value(Option::<String>::None))
                        .col_expr(wd::Column::DeliveredBy, Expr::value(node.as_str()))
                        .col_expr(wd::Column::DeliveredAt, now())
                        .col_expr(wd::Column::ClaimedBy, Expr::value(Option::<String>::None))
                        .col_expr(wd::Column::ClaimedUntil, Expr::value(Option::<i64>::None)),
                    DeliveryOutcome::Retry {
                        status,
                        error,
                        after_ms,
                        lease_ms,
                    } => update
                        .col_expr(wd::Column::LastStatus, Expr::value(status))
                        .col_expr(wd::Column::LastError, Expr::value(error))
                        .col_expr(wd::Column::NextAttemptAt, after(after_ms))
                        .col_expr(wd::Column::ClaimedUntil, after(after_ms + lease_ms)),
                    DeliveryOutcome::Failed { status, error } => update
                        .col_expr(wd::Column::State, Expr::value(delivery_state::FAILED))
                        .col_expr(wd::Column::LastStatus, Expr::value(status))
                        .col_expr(wd::Column::LastError, Expr::value(error))
                        .col_expr(wd::Column::ClaimedBy, Expr::value(Option::<String>::None))
                        .col_expr(wd::Column::ClaimedUntil, Expr::value(Option::<i64>::None)),
                };
                let done = update
                    .filter(wd::Column::EventId.eq(event_id))
                    .filter(wd::Column::Webhook.eq(webhook))
                    .filter(wd::Column::State.eq(delivery_state::PENDING))
                    .filter(wd::Column::ClaimedBy.eq(node))
                    .exec(&c)
                    .await?;
                Ok(done.rows_affected == 1)
            })
            .await
    }

    /// The deliveries of these events, by event then webhook.
    pub async fn deliveries_of(&self, event_ids: Vec<i64>) -> Result<Vec<wd::Model>, StoreError> {
        if event_ids.is_empty() {
            return Ok(Vec::new());
        }
        self.db()
            .run(move |c| async move {
                Ok(wd::Entity::find()
                    .filter(wd::Column::EventId.is_in(event_ids))
                    .order_by_asc(wd::Column::EventId)
                    .order_by_asc(wd::Column::Webhook)
                    .all(&c)
                    .await?)
            })
            .await
    }
}
