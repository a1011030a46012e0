//! Retention: an active node purges finished executions older than
//! `retention.finished_after_ms`, and cluster events older than their own
//! age, in bounded batches (`Store::purge`). Every active node runs the
//! scan; the store's retention lock makes purges take turns, so two nodes
//! never delete the same rows and each batch holds its locks briefly.

use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::{ActorFutureExt, AsyncContext, Context, WrapFuture};

use super::NodeSupervisor;
use crate::messages::NodeState;

/// What to purge and how often.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Finished executions are purged this long after they ended.
    pub finished_after: Duration,
    /// Cluster events are purged this long after they happened.
    pub events_after: Duration,
    /// At most this many executions (and events) per transaction.
    pub batch: u64,
    /// How often an active node looks for work to purge.
    pub every: Duration,
}

/// Between two full batches the purge waits at least as long as the last
/// batch took (it holds the tables at most half the time), and at least
/// this long.
const BETWEEN_BATCHES: Duration = Duration::from_millis(20);

/// On SQLite a batch holds the whole file, and a writer that found it
/// locked retries only after its busy handler's sleep (up to 100 ms): the
/// pause must outlast that, or back-to-back batches starve the other
/// nodes' heartbeats until they fence themselves.
const BETWEEN_BATCHES_SQLITE: Duration = Duration::from_millis(250);

impl NodeSupervisor {
    /// Purges until a batch comes back short (or the node stops running).
    pub(super) fn purge(&mut self, ctx: &mut Context<Self>) {
        let Some(policy) = self.cfg.retention else {
            return;
        };
        if self.purging || self.cfg.status.get().state != NodeState::Running {
            return;
        }
        self.purging = true;
        let store = self.cfg.store.clone();
        let status = self.cfg.status.clone();
        let metrics = self.cfg.metrics.clone();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let least = if store.backend() == sea_orm::DbBackend::Sqlite {
            BETWEEN_BATCHES_SQLITE
        } else {
            BETWEEN_BATCHES
        };
        let fut = async move {
            loop {
                let began = std::time::Instant::now();
                let p = store
                    .purge(
                        ms(policy.finished_after),
                        ms(policy.events_after),
                        policy.batch,
                    )
                    .await?;
                metrics
                    .purged_executions
                    .fetch_add(p.executions, Ordering::Relaxed);
                metrics
                    .purged_cluster_events
                    .fetch_add(p.cluster_events, Ordering::Relaxed);
                if p.executions > 0 || p.cluster_events > 0 {
                    tracing::info!(
                        executions = p.executions,
                        log_records = p.log_records,
                        signals = p.signals,
                        cluster_events = p.cluster_events,
                        "retention purged"
                    );
                }
                let full = p.executions >= policy.batch || p.cluster_events >= policy.batch;
                if !full || status.get().state != NodeState::Running {
                    return Ok::<_, crate::error::StoreError>(());
                }
                tokio::time::sleep(began.elapsed().max(least)).await;
            }
        };
        ctx.spawn(fut.into_actor(self).map(|result, act, _| {
            act.purging = false;
            if let Err(e) = result {
                tracing::warn!(node = %act.cfg.node_id, error = %e, "retention purge failed; trying again at the next interval");
            }
        }));
    }
}
