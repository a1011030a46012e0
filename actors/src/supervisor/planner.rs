//! Every second a PostgreSQL node analyzes the engine's tables that have
//! outgrown the planner's statistics (`Store::keep_planner_stats`, whose
//! documentation says why). One look at a time; a failed look is logged
//! and the next one tries again; after a failed `ANALYZE` they pause a
//! minute.

use actix::{ActorFutureExt, Context, WrapFuture};

use super::NodeSupervisor;
use crate::messages::NodeState;

/// How long the looks pause after an `ANALYZE` failed (other than a busy
/// table): a failure that repeats (a `statement_timeout` on a huge table)
/// must not run every second.
const AFTER_A_FAILURE: std::time::Duration = std::time::Duration::from_secs(60);

impl NodeSupervisor {
    pub(super) fn keep_planner_stats(&mut self, ctx: &mut Context<Self>) {
        use actix::AsyncContext;
        if self.planning || self.cfg.status.get().state != NodeState::Running {
            return;
        }
        if self
            .planner_paused_until
            .is_some_and(|t| std::time::Instant::now() < t)
        {
            return;
        }
        self.planning = true;
        let store = self.cfg.store.clone();
        let fut = async move { store.keep_planner_stats().await };
        ctx.spawn(fut.into_actor(self).map(|result, act, _| {
            act.planning = false;
            match result {
                Ok(stats) => {
                    for table in &stats.analyzed {
                        tracing::info!(node = %act.cfg.node_id, table, "analyzed a table that had outgrown the planner's statistics");
                    }
                    for table in stats.not_permitted {
                        if act.not_analyzable.insert(table.clone()) {
                            tracing::warn!(node = %act.cfg.node_id, table, "this database role may not ANALYZE the table (it needs its owner): until autovacuum does, PostgreSQL may plan the engine's statements for an empty table");
                        }
                    }
                    for (table, error) in &stats.failed {
                        if act.planner_failed.insert(table.clone()) {
                            tracing::warn!(node = %act.cfg.node_id, table, error, "ANALYZE of a table that had outgrown the planner's statistics failed; trying again in a minute (said once)");
                        } else {
                            tracing::debug!(node = %act.cfg.node_id, table, error, "ANALYZE failed again");
                        }
                    }
                    if !stats.failed.is_empty() {
                        act.planner_paused_until =
                            Some(std::time::Instant::now() + AFTER_A_FAILURE);
                    }
                    for table in &stats.busy {
                        tracing::debug!(node = %act.cfg.node_id, table, "another session is analyzing or vacuuming the table; looking again in a second");
                    }
                }
                Err(e) => {
                    tracing::debug!(node = %act.cfg.node_id, error = %e, "could not look at the planner's statistics; trying again in a second");
                }
            }
        }));
    }
}
