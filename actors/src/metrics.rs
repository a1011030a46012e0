//! Engine counters and the item latency histogram (start of an item to its
//! checkpoint committed), shared by a node's actors and read by `/metrics`
//! and `baton bench`. Lock-free: atomics only.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const FIRST_BOUND_US: f64 = 10.0;
const FACTOR: f64 = 1.15;
const BUCKETS: usize = 120;

/// The `le` bounds of the Prometheus form, in seconds.
const PROMETHEUS_LE: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram of durations with exponential buckets (10 us to ~190 s, 15%
/// apart), so quantiles are exact to within 15%, and the Prometheus
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

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (le, c) in PROMETHEUS_LE.iter().zip(&self.le_counts) {
            let n = c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels},le=\"+Inf\"}} {}",
            self.count()
        );
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count());
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
    /// Start of an item to its checkpoint committed.
    pub item_latency: Histogram,
    /// Notified each time an execution of this node ends.
    pub ended: tokio::sync::Notify,
}

impl EngineMetrics {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends the metrics in Prometheus text format.
    pub fn render_prometheus(&self, out: &mut String, node: &str) {
        let labels = format!("node=\"{node}\"");
        let counters: [(&str, &AtomicU64); 12] = [
            ("baton_items_started_total", &self.items_started),
            ("baton_items_completed_total", &self.items_completed),
            ("baton_items_failed_total", &self.items_failed),
            (
                "baton_executions_completed_total",
                &self.executions_completed,
            ),
            ("baton_executions_failed_total", &self.executions_failed),
            ("baton_executions_canceled_total", &self.executions_canceled),
            ("baton_ownership_lost_total", &self.ownership_lost),
            ("baton_purged_executions_total", &self.purged_executions),
            (
                "baton_purged_cluster_events_total",
                &self.purged_cluster_events,
            ),
            ("baton_webhooks_delivered_total", &self.webhooks_delivered),
            (
                "baton_webhook_attempts_failed_total",
                &self.webhook_attempts_failed,
            ),
            ("baton_webhooks_failed_total", &self.webhooks_failed),
        ];
        for (name, c) in counters {
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name}{{{labels}}} {}", c.load(Ordering::Relaxed));
        }
        self.item_latency
            .render(out, "baton_item_latency_seconds", &labels);
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
        let mut out = String::new();
        h.render(&mut out, "t", "n=\"x\"");
        let bucket = |le: &str| {
            out.lines()
                .find(|l| l.starts_with(&format!("t_bucket{{n=\"x\",le=\"{le}\"}}")))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
        };
        assert_eq!(bucket("0.0005"), Some(1), "{out}");
        assert_eq!(
            bucket("0.005"),
            Some(3),
            "4.8 ms and 5 ms are at or below 5 ms: {out}"
        );
        assert_eq!(bucket("0.01"), Some(4), "{out}");
        assert_eq!(bucket("+Inf"), Some(4), "{out}");
    }

    #[test]
    fn quantiles_fall_in_the_right_bucket() {
        let h = Histogram::default();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.quantile(0.5).as_secs_f64() * 1000.0;
        let p99 = h.quantile(0.99).as_secs_f64() * 1000.0;
        assert!((50.0..=58.0).contains(&p50), "{p50}");
        assert!((99.0..=114.0).contains(&p99), "{p99}");
        h.reset();
        assert_eq!(h.count(), 0);
    }
}
