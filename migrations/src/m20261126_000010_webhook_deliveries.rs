//! The `webhook_deliveries` table: one row per cluster event and configured
//! webhook (`[[notify.webhooks]]`), the delivery's state and its claim.
//!
//! The primary key `(event_id, webhook)` makes creating a delivery
//! idempotent: every node may discover the same event, one insert wins.
//! A node sends a delivery only while it holds the claim (`claimed_by`,
//! `claimed_until` by the database clock); a claim kept across retries
//! lapses when its node dies, and another node takes the delivery over.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum WebhookDeliveries {
    Table,
    EventId,
    Webhook,
    State,
    Attempts,
    NextAttemptAt,
    ClaimedBy,
    ClaimedUntil,
    LastStatus,
    LastError,
    DeliveredBy,
    DeliveredAt,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(WebhookDeliveries::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(WebhookDeliveries::EventId)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(WebhookDeliveries::Webhook)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(WebhookDeliveries::State)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(WebhookDeliveries::Attempts)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .col(
                        ColumnDef::new(WebhookDeliveries::NextAttemptAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(WebhookDeliveries::ClaimedBy).string_len(128))
                    .col(ColumnDef::new(WebhookDeliveries::ClaimedUntil).big_integer())
                    .col(ColumnDef::new(WebhookDeliveries::LastStatus).integer())
                    .col(ColumnDef::new(WebhookDeliveries::LastError).text())
                    .col(ColumnDef::new(WebhookDeliveries::DeliveredBy).string_len(128))
                    .col(ColumnDef::new(WebhookDeliveries::DeliveredAt).big_integer())
                    .col(
                        ColumnDef::new(WebhookDeliveries::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(WebhookDeliveries::EventId)
                            .col(WebhookDeliveries::Webhook),
                    )
                    .to_owned(),
            )
            .await?;
        // The due scan: pending deliveries by their next attempt.
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("webhook_deliveries_due")
                    .table(WebhookDeliveries::Table)
                    .col(WebhookDeliveries::State)
                    .col(WebhookDeliveries::NextAttemptAt)
                    .to_owned(),
            )
            .await?;
        // Retention purges by age.
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("webhook_deliveries_created")
                    .table(WebhookDeliveries::Table)
                    .col(WebhookDeliveries::CreatedAt)
                    .to_owned(),
            )
            .await
    }
}
