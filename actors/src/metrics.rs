//! Engine counters and the item latency histogram (start of an item to its
//! checkpoint committed), shared by a node's actors and read by `/metrics`
//! and `baton bench`. Lock-free on the execution path (atomics only); the
//! two families whose labels are open-ended (takeovers by victim, HTTP
//! requests by route, method and status) sit behind a mutex.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::messages::FenceKind;
use crate::workflow::ItemKind;

const FIRST_BOUND_US: f64 = 10.0;
const FACTOR: f64 = 1.03;
const BUCKETS: usize = 570;

/// The `le` bounds of the Prometheus form, in seconds.
const PROMETHEUS_LE: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram of durations with exponential buckets (10 us to ~200 s, 3%
/// apart), so quantiles are exact to within 3% (a bench's p50 of 0.15 ms
/// is told from 0.16 ms), and the Prometheus
/// buckets counted exactly on their own (the exponential bounds fall
/// between them: summing those undercounted `le="0.005"` by everything
/// from 4.69 ms to 5 ms).
#[derive(Debug)]
pub struct Histogram {
    bounds_us: Vec<f64>,
    counts: Vec<AtomicU64>,
    /// Per `PROMETHEUS_LE` bound: durations at or below it.
    le_counts: [AtomicU64; PROMETHEUS_LE.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        let bounds_us = (0..BUCKETS)
            .map(|i| FIRST_BOUND_US * FACTOR.powi(i as i32))
            .collect();
        Histogram {
            bounds_us,
            counts: (0..=BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            le_counts: Default::default(),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Records one duration.
    pub fn record(&self, d: Duration) {
        let us = d.as_secs_f64() * 1e6;
        let i = self.bounds_us.partition_point(|b| *b < us);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let secs = d.as_secs_f64();
        for (le, c) in PROMETHEUS_LE.iter().zip(&self.le_counts) {
            if secs <= *le {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us as u64, Ordering::Relaxed);
    }

    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The upper bound of the bucket holding quantile `q` (0 to 1).
    pub fn quantile(&self, q: f64) -> Duration {
        let total = self.count();
        if total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c.load(Ordering::Relaxed);
            if seen >= rank {
                let us = self.bounds_us.get(i).copied().unwrap_or(f64::MAX / 2.0);
                return Duration::from_secs_f64(us / 1e6);
            }
        }
        Duration::MAX
    }

    /// Forgets everything recorded.
    pub fn reset(&self) {
        for c in self.counts.iter().chain(&self.le_counts) {
            c.store(0, Ordering::Relaxed);
        }
        self.count.store(0, Ordering::Relaxed);
        self.sum_us.store(0, Ordering::Relaxed);
    }
}

impl Histogram {
    /// The Prometheus buckets, each counted on its own (not cumulative),
    /// the last one `(f64::MAX, n)` for +Inf: the form
    /// `prometheus-client` encodes.
    pub fn prometheus_buckets(&self) -> Vec<(f64, u64)> {
        let mut out = Vec::with_capacity(PROMETHEUS_LE.len() + 1);
        let mut below = 0;
        for (le, c) in PROMETHEUS_LE.iter().zip(&self.le_counts) {
            let upto = c.load(Ordering::Relaxed);
            out.push((*le, upto.saturating_sub(below)));
            below = upto;
        }
        out.push((f64::MAX, self.count().saturating_sub(below)));
        out
    }

    /// The sum of the durations, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// Sum, count and buckets, for `prometheus-client`.
    pub fn values(&self) -> HistogramValues {
        (self.sum_seconds(), self.count(), self.prometheus_buckets())
    }
}

/// Counters of one node's engine.
#[derive(Debug, Default)]
pub struct EngineMetrics {
    /// Item attempts begun on this node.
    pub items_started: AtomicU64,
    /// Items whose completion was checkpointed.
    pub items_completed: AtomicU64,
    /// Item attempts that failed.
    pub items_failed: AtomicU64,
    /// Executions that ended completed.
    pub executions_completed: AtomicU64,
    /// Executions that ended failed.
    pub executions_failed: AtomicU64,
    /// Executions canceled.
    pub executions_canceled: AtomicU64,
    /// Fenced writes refused (ownership lost).
    pub ownership_lost: AtomicU64,
    /// Finished executions this node purged (retention).
    pub purged_executions: AtomicU64,
    /// Cluster events this node purged (retention).
    pub purged_cluster_events: AtomicU64,
    /// Webhook deliveries this node sent and the receiver took (2xx).
    pub webhooks_delivered: AtomicU64,
    /// Webhook attempts of this node that failed (each retried or given up).
    pub webhook_attempts_failed: AtomicU64,
    /// Webhook deliveries this node gave up on (`max_attempts` spent).
    pub webhooks_failed: AtomicU64,
    /// Starts refused because `engine.max_running` runs were held for
    /// all of `engine.start_wait_ms`.
    pub starts_refused_overloaded: AtomicU64,
    /// Self-fencings, by [`FenceKind`] (in `FenceKind::ALL` order).
    pub fencings: [AtomicU64; 4],
    /// Takeovers this node won, by the node it declared dead.
    pub takeovers: Mutex<BTreeMap<String, u64>>,
    /// When this node's last committed heartbeat was sent (µs since `born`), 0: never.
    pub heartbeat_ok_us: AtomicU64,
    /// How long that heartbeat took to commit, in µs.
    pub heartbeat_commit_us: AtomicU64,
    /// HTTP requests: counts by route pattern, method and status, and
    /// latency histograms by route pattern and method.
    pub http: Mutex<HttpStats>,
    /// Item attempts by item type ([`ItemKind::TYPE_NAMES`]) and event
    /// ([`ITEM_EVENTS`]).
    pub items_by_type: [[AtomicU64; ITEM_EVENTS.len()]; ItemKind::TYPE_NAMES.len()],
    /// When these metrics were created (the heartbeat age's origin).
    pub born: Born,
    /// Start of an item to its checkpoint committed.
    pub item_latency: Histogram,
    /// Notified each time an execution of this node ends.
    pub ended: tokio::sync::Notify,
}

/// The events counted per item type.
pub const ITEM_EVENTS: [&str; 3] = ["started", "completed", "failed"];

/// A histogram as Prometheus encodes it: sum of seconds, count, and the
/// buckets each counted on its own.
pub type HistogramValues = (f64, u64, Vec<(f64, u64)>);

/// HTTP requests answered by a node.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Requests by route pattern, method and status.
    pub counts: BTreeMap<HttpSeries, u64>,
    /// Latency (request in to response out) by route pattern and method.
    pub latency: BTreeMap<(String, String), Histogram>,
}

/// The group commit of a store: batches committed, the checkpoints in
/// them (the mean batch size is their ratio) and each batch's commit time.
#[derive(Debug, Default)]
pub struct CheckpointStats {
    /// Batches committed.
    pub batches: AtomicU64,
    /// Checkpoints in them.
    pub checkpoints: AtomicU64,
    /// How long each batch took, from its first statement to its commit.
    pub commit: Histogram,
}

impl CheckpointStats {
    /// Records a committed batch of `size` checkpoints.
    pub fn record(&self, size: usize, took: Duration) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.checkpoints.fetch_add(size as u64, Ordering::Relaxed);
        self.commit.record(took);
    }
}

/// One HTTP series: route pattern, method, status.
pub type HttpSeries = (String, String, u16);

/// An `Instant` that defaults to now.
#[derive(Clone, Copy, Debug)]
pub struct Born(pub Instant);

impl Default for Born {
    fn default() -> Self {
        Born(Instant::now())
    }
}

impl EngineMetrics {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an item event (one of [`ITEM_EVENTS`]) of an item type.
    pub fn item_event(&self, kind: &str, event: &str) {
        let t = ItemKind::TYPE_NAMES.iter().position(|k| *k == kind);
        let e = ITEM_EVENTS.iter().position(|k| *k == event);
        if let (Some(t), Some(e)) = (t, e) {
            Self::inc(&self.items_by_type[t][e]);
        }
    }

    /// The item events counted so far, by type and event (zeros left out).
    pub fn items_by_type(&self) -> Vec<((&'static str, &'static str), u64)> {
        let mut out = Vec::new();
        for (kind, row) in ItemKind::TYPE_NAMES.iter().zip(&self.items_by_type) {
            for (event, c) in ITEM_EVENTS.iter().zip(row) {
                match c.load(Ordering::Relaxed) {
                    0 => {}
                    n => out.push(((*kind, *event), n)),
                }
            }
        }
        out
    }

    /// Counts a self-fencing.
    pub fn fenced(&self, kind: FenceKind) {
        if let Some(i) = FenceKind::ALL.iter().position(|k| *k == kind) {
            Self::inc(&self.fencings[i]);
        }
    }

    /// Counts a takeover of `victim`.
    pub fn took_over(&self, victim: &str) {
        if let Ok(mut t) = self.takeovers.lock() {
            *t.entry(victim.to_owned()).or_default() += 1;
        }
    }

    /// Records a heartbeat (or a join, which stamps one) sent at `sent`
    /// and committed `took` later. The age counts from when it was sent,
    /// as the node's lease does.
    pub fn heartbeat_committed(&self, sent: Instant, took: Duration) {
        let at = sent
            .saturating_duration_since(self.born.0)
            .as_micros()
            .max(1) as u64;
        self.heartbeat_ok_us.store(at, Ordering::Relaxed);
        self.heartbeat_commit_us
            .store(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// Seconds since this node's last committed heartbeat (`None`: none yet).
    pub fn heartbeat_age(&self) -> Option<f64> {
        match self.heartbeat_ok_us.load(Ordering::Relaxed) {
            0 => None,
            at => Some((self.born.0.elapsed().as_micros() as u64).saturating_sub(at) as f64 / 1e6),
        }
    }

    /// Counts an HTTP request and records its latency.
    pub fn http_request(&self, route: &str, method: &str, status: u16, took: Duration) {
        if let Ok(mut h) = self.http.lock() {
            *h.counts
                .entry((route.to_owned(), method.to_owned(), status))
                .or_default() += 1;
            h.latency
                .entry((route.to_owned(), method.to_owned()))
                .or_default()
                .record(took);
        }
    }

    /// The counters, as `(name without _total, help, value)`.
    pub fn counters(&self) -> Vec<(&'static str, &'static str, u64)> {
        let c = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            (
                "baton_items_started",
                "Item attempts begun on this node.",
                c(&self.items_started),
            ),
            (
                "baton_items_completed",
                "Items whose completion this node checkpointed.",
                c(&self.items_completed),
            ),
            (
                "baton_items_failed",
                "Item attempts that failed on this node.",
                c(&self.items_failed),
            ),
            (
                "baton_executions_completed",
                "Executions that ended completed on this node.",
                c(&self.executions_completed),
            ),
            (
                "baton_executions_failed",
                "Executions that ended failed on this node.",
                c(&self.executions_failed),
            ),
            (
                "baton_executions_canceled",
                "Executions canceled on this node.",
                c(&self.executions_canceled),
            ),
            (
                "baton_ownership_lost",
                "Fenced writes refused because this node no longer owned the execution.",
                c(&self.ownership_lost),
            ),
            (
                "baton_purged_executions",
                "Finished executions this node purged (retention).",
                c(&self.purged_executions),
            ),
            (
                "baton_purged_cluster_events",
                "Cluster events this node purged (retention).",
                c(&self.purged_cluster_events),
            ),
            (
                "baton_webhooks_delivered",
                "Webhook deliveries this node sent and the receiver took (2xx).",
                c(&self.webhooks_delivered),
            ),
            (
                "baton_webhook_attempts_failed",
                "Webhook attempts of this node that failed (retried or given up).",
                c(&self.webhook_attempts_failed),
            ),
            (
                "baton_webhooks_failed",
                "Webhook deliveries this node gave up on (max_attempts spent).",
                c(&self.webhooks_failed),
            ),
            (
                "baton_starts_refused_overloaded",
                "Starts refused with 503 overloaded: engine.max_running runs held for all of engine.start_wait_ms.",
                c(&self.starts_refused_overloaded),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_buckets_count_exactly_to_their_bound() {
        let h = Histogram::default();
        for ms in [4.8, 5.0, 5.01, 0.4] {
            h.record(Duration::from_secs_f64(ms / 1000.0));
        }
        // Cumulative, as Prometheus reads them.
        let mut upto = 0;
        let cumulative: Vec<(f64, u64)> = h
            .prometheus_buckets()
            .into_iter()
            .map(|(le, n)| {
                upto += n;
                (le, upto)
            })
            .collect();
        let bucket = |le: f64| cumulative.iter().find(|(b, _)| *b == le).map(|(_, n)| *n);
        assert_eq!(bucket(0.0005), Some(1), "{cumulative:?}");
        assert_eq!(
            bucket(0.005),
            Some(3),
            "4.8 ms and 5 ms are at or below 5 ms: {cumulative:?}"
        );
        assert_eq!(bucket(0.01), Some(4), "{cumulative:?}");
        assert_eq!(bucket(f64::MAX), Some(4), "{cumulative:?}");
        assert!(
            (h.sum_seconds() - 0.01521).abs() < 1e-6,
            "{}",
            h.sum_seconds()
        );
    }

    #[test]
    fn quantiles_fall_in_the_right_bucket() {
        let h = Histogram::default();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.quantile(0.5).as_secs_f64() * 1000.0;
        let p99 = h.quantile(0.99).as_secs_f64() * 1000.0;
        assert!((50.0..=51.5).contains(&p50), "{p50}");
        assert!((99.0..=102.0).contains(&p99), "{p99}");
        h.reset();
        assert_eq!(h.count(), 0);
    }
}
