//! Baton's database schema as sea-orm migrations, one per file.
//!
//! Owns the table layout of every Baton table. Migrations name tables and
//! columns with `Iden` enums and never import the entities of
//! `baton-actors`, so a landed migration never changes when a model does.
//! A migration that has landed is frozen: a schema change is a new file.
//!
//! Every timestamp is a `BIGINT` of milliseconds since the Unix epoch,
//! stamped by the database server's own clock (DESIGN.md invariant 3), so
//! the three supported engines compare times the same way.
//!
//! # Layout
//! - `m20261125_000001_create_nodes`: cluster members and their heartbeats
//! - `m20261125_000002_create_workflows`: definitions and their versions
//! - `m20261125_000003_create_executions`: one row per workflow run, fenced by owner and epoch
//! - `m20261125_000004_create_item_log`: what happened to each item, attempt by attempt
//! - `m20261125_000005_create_cluster_events`: joins, leaves, fencings and failovers
//! - `m20261125_000006_create_cluster_lock`: serializes cluster-membership transactions
//! - `m20261125_000007_create_signals`: signals and interaction answers awaiting consumption
//! - `m20261126_000008_add_run_token`: the run claim token and the retry count of the current item
//! - `m20261126_000009_search_and_retention`: search indexes and the retention lock
//! - `m20261126_000010_webhook_deliveries`: webhook deliveries of cluster events, and their claims
//! - `m20261126_000011_wake_indexes`: the signaled flag and the indexes that let the wake scan read only what is due
//! - `m20261128_000012_long_text_on_mysql`: documents past 64 KB on MySQL/MariaDB (`LONGTEXT`)
//! - `m20261129_000013_partial_indexes`: signal and execution indexes that hold only the rows their reads can match
// `#[async_trait]` needs `&SchemaManager` with its lifetime elided.
#![allow(elided_lifetimes_in_paths)]

pub use sea_orm_migration::prelude::*;

mod m20261125_000001_create_nodes;
mod m20261125_000002_create_workflows;
mod m20261125_000003_create_executions;
mod m20261125_000004_create_item_log;
mod m20261125_000005_create_cluster_events;
mod m20261125_000006_create_cluster_lock;
mod m20261125_000007_create_signals;
mod m20261126_000008_add_run_token;
mod m20261126_000009_search_and_retention;
mod m20261126_000010_webhook_deliveries;
mod m20261126_000011_wake_indexes;
mod m20261128_000012_long_text_on_mysql;
mod m20261129_000013_partial_indexes;

pub use m20261126_000009_search_and_retention::RETENTION_LOCK_ROW;

/// The ordered list of Baton's migrations.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_create_nodes::Migration),
            Box::new(m20261125_000002_create_workflows::Migration),
            Box::new(m20261125_000003_create_executions::Migration),
            Box::new(m20261125_000004_create_item_log::Migration),
            Box::new(m20261125_000005_create_cluster_events::Migration),
            Box::new(m20261125_000006_create_cluster_lock::Migration),
            Box::new(m20261125_000007_create_signals::Migration),
            Box::new(m20261126_000008_add_run_token::Migration),
            Box::new(m20261126_000009_search_and_retention::Migration),
            Box::new(m20261126_000010_webhook_deliveries::Migration),
            Box::new(m20261126_000011_wake_indexes::Migration),
            Box::new(m20261128_000012_long_text_on_mysql::Migration),
            Box::new(m20261129_000013_partial_indexes::Migration),
        ]
    }
}
