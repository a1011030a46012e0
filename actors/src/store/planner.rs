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
//! `ANALYZE` runs in a transaction that waits at most 200 ms for the
//! table (`lock_timeout`: if another node or autovacuum is at it, this
//! pass skips it) and runs at most 5 s (`statement_timeout`). Heartbeats
//! share the pool, so a pass runs only when a connection is idle and the
//! pool has more than one. Who may analyze: the table's owner, the
//! database's owner or a superuser (since PostgreSQL 17, the `MAINTAIN`
//! privilege); the tables a role may not analyze are left out, and said
//! once. The tables are the ones the engine's statements find on the
//! search path. MySQL and MariaDB recompute their statistics themselves
//! as a table changes by a tenth, and SQLite keeps none unless asked:
//! there this does nothing.

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
    /// Tables whose `ANALYZE` failed, with the error.
    pub failed: Vec<(String, String)>,
}

impl Store {
    /// Analyzes the engine's tables that have grown past their statistics
    /// (see the module documentation); PostgreSQL only, a no-op elsewhere.
    /// Each table on its own: one that fails is reported in
    /// [`PlannerStats::failed`] and the others are still looked at.
    pub async fn keep_planner_stats(&self) -> Result<PlannerStats, StoreError> {
        if self.backend() != DbBackend::Postgres {
            return Ok(PlannerStats::default());
        }
        // Heartbeats share this pool: with no connection idle, or a pool
        // of one, this pass waits for the next second rather than take it.
        match self.db().pool_stats() {
            Some((_, idle)) if idle > 0 && self.db().max_connections() > 1 => {}
            _ => return Ok(PlannerStats::default()),
        }
        self.db()
            .run(|c| async move {
                let names = TABLES.map(|t| format!("('{t}')")).join(", ");
                // The tables as the engine's unqualified statements find
                // them (`to_regclass` follows the search path).
                // `n_live_tup` counts what the sessions reported (within a
                // second or so); `reltuples` is what the planner believes,
                // -1 before the first analysis. Who may analyze: since
                // PostgreSQL 17 the MAINTAIN privilege; before, the table's
                // owner (with its rights inherited), the database's owner
                // or a superuser.
                let rows = c
                    .query_all_raw(Statement::from_string(
                        DbBackend::Postgres,
                        format!(
                            "SELECT t.name, format('%I.%I', n.nspname, c.relname) AS qualified, \
                             s.n_live_tup AS live, c.reltuples::float8 AS planned, \
                             CASE WHEN current_setting('server_version_num')::int >= 170000 \
                                  THEN has_table_privilege(c.oid, 'MAINTAIN') \
                                  ELSE pg_has_role(current_user, c.relowner, 'USAGE') \
                                    OR pg_has_role(current_user, (SELECT datdba FROM pg_database WHERE datname = current_database()), 'USAGE') \
                                    OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) \
                             END AS permitted \
                             FROM (VALUES {names}) AS t(name) \
                             JOIN pg_class c ON c.oid = to_regclass(t.name) \
                             JOIN pg_namespace n ON n.oid = c.relnamespace \
                             JOIN pg_stat_user_tables s ON s.relid = c.oid \
                             ORDER BY t.name"
                        ),
                    ))
                    .await?;
                let mut out = PlannerStats::default();
                for r in rows {
                    let name: String = r.try_get("", "name")?;
                    let qualified: String = r.try_get("", "qualified")?;
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
                    match analyze(&c, &qualified).await {
                        Ok(()) => out.analyzed.push(name),
                        Err(e) if super::is_lock_wait_timeout(&e) => out.busy.push(name),
                        Err(e) => out.failed.push((name, e.to_string())),
                    }
                }
                Ok(out)
            })
            .await
    }
}

/// `ANALYZE` of one table (`qualified`, quoted by the server), waiting at
/// most [`LOCK_WAIT`] for it and running at most [`ANALYZE_LIMIT`].
async fn analyze(c: &sea_orm::DatabaseConnection, qualified: &str) -> Result<(), sea_orm::DbErr> {
    let txn = c.begin().await?;
    let result = async {
        txn.execute_unprepared(&format!(
            "SET LOCAL lock_timeout = '{}ms'; SET LOCAL statement_timeout = '{}ms'",
            LOCK_WAIT.as_millis(),
            ANALYZE_LIMIT.as_millis()
        ))
        .await?;
        txn.execute_unprepared(&format!("ANALYZE {qualified}"))
            .await
            .map(drop)
    }
    .await;
    match result {
        Ok(()) => txn.commit().await,
        Err(e) => {
            let _ = txn.rollback().await;
            Err(e)
        }
    }
}

/// How long `ANALYZE` waits for a table another session holds.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// How long one `ANALYZE` may run (a sample of 30,000 rows takes well
/// under a second; it holds one of the pool's connections meanwhile).
const ANALYZE_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether a table with `live` rows has outgrown the planner's belief of
/// `planned` rows (negative: never analyzed).
fn outgrown(live: i64, planned: f64) -> bool {
    live >= MIN_ROWS && live as f64 >= 2.0 * planned.max(0.0)
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
