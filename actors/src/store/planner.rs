//! Keeping PostgreSQL's planner statistics in step with tables that grow
//! faster than autovacuum looks at them.
//!
//! The group commit's statements are prepared once per connection, and
//! after five runs PostgreSQL keeps a generic plan for them, made from
//! the table statistics of that moment. On a new database those say the
//! tables are empty (never analyzed: "10 pages"), so the fenced bulk
//! `UPDATE` of the checkpoints is planned as a sequential scan of
//! `executions`, and the consumed-signal `UPDATE` as a walk of every
//! pending signal. The plan is kept until the table is analyzed, and
//! autovacuum's first look comes up to a minute later
//! (`autovacuum_naptime`). A node that starts 100,000 executions in that
//! minute has each batch read the whole table: measured with `baton bench
//! waits --parked 100000` on PostgreSQL 15, 2,223 sequential scans read
//! 53 million rows, and parking took 104 s instead of 47 s.
//!
//! So a node looks every second at the tables it grows (`executions`,
//! `signals`, `item_log`) and analyzes one that has at least
//! [`MIN_ROWS`] live rows and has doubled since it was last analyzed.
//! Analyzing invalidates the cached plans of every session, which are
//! planned again on the new statistics. A table that grows steadily is
//! analyzed by autovacuum first (at a tenth of its size, by default), so
//! in service this does nothing; while a table grows from nothing it
//! analyzes it about log2(rows / 1,000) times.
//!
//! `ANALYZE` runs in a transaction with a short `lock_timeout`: if another
//! node or autovacuum is already at that table, this pass skips it. It
//! needs the table's owner (or a superuser); the tables a role cannot
//! analyze are left out, and said once. MySQL and MariaDB recompute
//! their statistics themselves as a table changes by a tenth, and SQLite
//! keeps none unless asked: there this does nothing.

use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};

use super::Store;
use crate::error::StoreError;

/// A table is analyzed once it holds this many live rows and has doubled
/// since its last analysis: smaller ones are cheap to scan whatever the
/// plan.
pub const MIN_ROWS: i64 = 1_000;

/// How often a node looks (`NodeSupervisor`).
pub const EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The tables whose growth the engine drives.
const TABLES: [&str; 3] = ["executions", "signals", "item_log"];

/// What one look found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlannerStats {
    /// Tables analyzed by this pass.
    pub analyzed: Vec<String>,
    /// Tables that had grown but this role may not analyze.
    pub not_permitted: Vec<String>,
    /// Tables that had grown but another session held them (autovacuum,
    /// another node): the next pass looks again.
    pub busy: Vec<String>,
}

impl Store {
    /// Analyzes the engine's tables that have grown past their statistics
    /// (see the module documentation); PostgreSQL only, a no-op elsewhere.
    pub async fn keep_planner_stats(&self) -> Result<PlannerStats, StoreError> {
        if self.backend() != DbBackend::Postgres {
            return Ok(PlannerStats::default());
        }
        self.db()
            .run(|c| async move {
                let names = TABLES.map(|t| format!("'{t}'")).join(", ");
                // `n_live_tup` counts what the sessions reported (within a
                // second or so); `reltuples` is what the planner believes,
                // -1 before the first analysis.
                let rows = c
                    .query_all_raw(Statement::from_string(
                        DbBackend::Postgres,
                        format!(
                            "SELECT s.relname::text AS name, s.n_live_tup AS live, c.reltuples::float8 AS planned, \
                             (pg_has_role(current_user, c.relowner, 'MEMBER') \
                              OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)) AS permitted \
                             FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid \
                             WHERE s.schemaname = current_schema() AND s.relname IN ({names}) \
                             ORDER BY s.relname"
                        ),
                    ))
                    .await?;
                let mut out = PlannerStats::default();
                for r in rows {
                    let name: String = r.try_get("", "name")?;
                    let live: i64 = r.try_get("", "live")?;
                    let planned: f64 = r.try_get("", "planned")?;
                    let permitted: bool = r.try_get("", "permitted")?;
                    if !outgrown(live, planned) {
                        continue;
                    }
                    if !permitted {
                        out.not_permitted.push(name);
                        continue;
                    }
                    // The name is one of `TABLES`, not input.
                    let txn = c.begin().await?;
                    txn.execute_unprepared("SET LOCAL lock_timeout = '200ms'")
                        .await?;
                    match txn.execute_unprepared(&format!("ANALYZE {name}")).await {
                        Ok(_) => {
                            txn.commit().await?;
                            out.analyzed.push(name);
                        }
                        Err(e) if is_lock_timeout(&e) => {
                            let _ = txn.rollback().await;
                            out.busy.push(name);
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(out)
            })
            .await
    }
}

/// Whether a table with `live` rows has outgrown the planner's belief of
/// `planned` rows (negative: never analyzed).
fn outgrown(live: i64, planned: f64) -> bool {
    live >= MIN_ROWS && live as f64 >= 2.0 * planned.max(0.0)
}

/// PostgreSQL's `lock_not_available` (55P03), which `lock_timeout` raises.
fn is_lock_timeout(e: &sea_orm::DbErr) -> bool {
    use sea_orm::{sqlx, RuntimeErr};
    let sqlx_err = match e {
        sea_orm::DbErr::Exec(RuntimeErr::SqlxError(e))
        | sea_orm::DbErr::Query(RuntimeErr::SqlxError(e)) => e,
        _ => return false,
    };
    match &**sqlx_err {
        sqlx::Error::Database(d) => d.code().as_deref() == Some("55P03"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::outgrown;

    #[test]
    fn a_table_is_analyzed_from_a_thousand_rows_each_time_it_doubles() {
        assert!(!outgrown(999, -1.0), "small tables are left alone");
        assert!(outgrown(1_000, -1.0), "never analyzed");
        assert!(outgrown(1_000, 0.0), "analyzed while empty");
        assert!(!outgrown(1_999, 1_000.0));
        assert!(outgrown(2_000, 1_000.0));
        assert!(!outgrown(1_000_000, 900_000.0), "autovacuum's business");
    }
}
