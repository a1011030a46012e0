//! `/metrics`: the node's metrics in the OpenMetrics text format (which
//! Prometheus scrapes), encoded by `prometheus-client`. The engine counts
//! in lock-free atomics as it works; each scrape takes a snapshot of them,
//! of the node's status, of the database's view of the work (executions
//! this node owns by state, the oldest work nobody runs) and of the
//! process, and a [`Collector`] encodes it. Every metric has its `# HELP`;
//! every series carries `node`.

use std::fmt;

use actix_web::{get, web, HttpResponse};
use baton_actors::messages::{FenceKind, NodeRole, NodeState};
use baton_actors::metrics::HistogramValues;
use baton_actors::store::OwnedCounts;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::AppState;

/// A parked execution past its due time by more than this is overdue
/// (the wake scan runs every 100 ms).
const OVERDUE_MS: i64 = 2000;

/// Everything one scrape reports.
#[derive(Debug)]
struct Snapshot {
    node: String,
    state: NodeState,
    role: NodeRole,
    epoch: i64,
    running: usize,
    cluster: bool,
    heartbeat_age: Option<f64>,
    heartbeat_commit: Option<f64>,
    counters: Vec<(&'static str, &'static str, u64)>,
    fencings: Vec<(&'static str, u64)>,
    takeovers: Vec<(String, u64)>,
    http: Vec<(baton_actors::metrics::HttpSeries, u64)>,
    http_latency: Vec<((String, String), HistogramValues)>,
    latency: HistogramValues,
    items_by_type: Vec<((&'static str, &'static str), u64)>,
    checkpoints: (u64, u64, HistogramValues),
    scripts: (u64, u64),
    /// Evaluations on the calling thread, on a script thread.
    evaluations: (u64, u64),
    pool: Option<(u32, usize)>,
    /// Database calls, those that queued for a connection, and their time.
    db_calls: (u64, u64, HistogramValues),
    /// Admission: slots free, starts waiting for one, runs owed.
    admission: (usize, usize, usize),
    /// `None`: not counted yet, or the database did not answer.
    owned: Option<OwnedCounts>,
    /// `None`: the database did not answer this scrape.
    oldest_unowned_ms: Option<i64>,
    process: Option<Process>,
}

/// This process, from `/proc/self` (Linux).
#[derive(Debug, Default)]
struct Process {
    cpu_seconds: f64,
    resident_bytes: f64,
    open_fds: f64,
    start_seconds: f64,
}

impl Process {
    fn read() -> Option<Process> {
        // Linux's fixed units: 100 clock ticks a second, 4 KiB pages.
        const TICKS: f64 = 100.0;
        const PAGE: f64 = 4096.0;
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name, which may hold spaces.
        let rest = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
        // `rest` starts at field 3 (state): field n is f[n - 3].
        let (utime, stime, start, rss) = (num(11)?, num(12)?, num(19)?, num(21)?);
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())?;
        let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
        Some(Process {
            cpu_seconds: (utime + stime) / TICKS,
            resident_bytes: rss * PAGE,
            open_fds: fds as f64,
            start_seconds: boot + start / TICKS,
        })
    }
}

/// Encodes one metric with one series labeled `labels`.
fn one<M: EncodeMetric>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    labels: &[(&str, &str)],
    metric: M,
) -> fmt::Result {
    let mut d = enc.encode_descriptor(name, help, unit, metric.metric_type())?;
    metric.encode(d.encode_family(&labels)?)
}

/// Encodes one histogram (in seconds) with one series labeled `labels`.
fn histogram(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    labels: &[(&str, &str)],
    (sum, count, buckets): &HistogramValues,
) -> fmt::Result {
    let mut d = enc.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    d.encode_family(&labels)?
        .encode_histogram::<prometheus_client::encoding::NoLabelSet>(*sum, *count, buckets, None)
}

/// Encodes one metric with a series per label set (its `# HELP` and
/// `# TYPE` even when it has none yet, so dashboards and alerts find it).
fn many<M: EncodeMetric>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    kind: MetricType,
    series: Vec<(Vec<(&str, &str)>, M)>,
) -> fmt::Result {
    let mut d = enc.encode_descriptor(name, help, unit, kind)?;
    for (labels, metric) in &series {
        metric.encode(d.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        let node = self.node.as_str();
        let n = [("node", node)];
        let gauge = |v: f64| ConstGauge::new(v);
        one(
            &mut enc,
            "baton_node_up",
            "1 when the node runs workflows (state RUNNING), else 0.",
            None,
            &n,
            ConstGauge::new(i64::from(self.state == NodeState::Running)),
        )?;
        many(
            &mut enc,
            "baton_node_state",
            "1 for the node's current state, 0 for the others (every state always present).",
            None,
            MetricType::Gauge,
            NodeState::ALL
                .iter()
                .map(|s| {
                    (
                        vec![("node", node), ("state", s.as_str())],
                        ConstGauge::new(i64::from(*s == self.state)),
                    )
                })
                .collect(),
        )?;
        many(
            &mut enc,
            "baton_node_role",
            "1 for the node's current role, 0 for the other.",
            None,
            MetricType::Gauge,
            [NodeRole::Active, NodeRole::Standby]
                .iter()
                .map(|r| {
                    (
                        vec![("node", node), ("role", r.as_str())],
                        ConstGauge::new(i64::from(*r == self.role)),
                    )
                })
                .collect(),
        )?;
        one(
            &mut enc,
            "baton_node_epoch",
            "The node's epoch (moves on at every join and every time it is declared dead).",
            None,
            &n,
            ConstGauge::new(self.epoch),
        )?;
        one(
            &mut enc,
            "baton_executions_running",
            "Executions with a running actor on this node.",
            None,
            &n,
            ConstGauge::new(self.running as i64),
        )?;
        if self.cluster {
            if let Some(age) = self.heartbeat_age {
                one(
                    &mut enc,
                    "baton_heartbeat_age",
                    "Time since this node's last committed heartbeat (its own clock); alert well before the failover timeout.",
                    Some(&Unit::Seconds),
                    &n,
                    gauge(age),
                )?;
            }
            if let Some(took) = self.heartbeat_commit {
                one(
                    &mut enc,
                    "baton_heartbeat_commit",
                    "How long this node's last committed heartbeat took to commit.",
                    Some(&Unit::Seconds),
                    &n,
                    gauge(took),
                )?;
            }
        }
        many(
            &mut enc,
            "baton_self_fencings",
            "Times this node fenced itself, by reason.",
            None,
            MetricType::Counter,
            self.fencings
                .iter()
                .map(|(r, v)| (vec![("node", node), ("reason", *r)], ConstCounter::new(*v)))
                .collect(),
        )?;
        many(
            &mut enc,
            "baton_takeovers",
            "Nodes this node declared dead and took over (failovers), by victim.",
            None,
            MetricType::Counter,
            self.takeovers
                .iter()
                .map(|(victim, v)| {
                    (
                        vec![("node", node), ("victim", victim.as_str())],
                        ConstCounter::new(*v),
                    )
                })
                .collect(),
        )?;
        for (name, help, v) in &self.counters {
            one(&mut enc, name, help, None, &n, ConstCounter::new(*v))?;
        }
        histogram(
            &mut enc,
            "baton_item_latency",
            "Start of an item to its checkpoint committed.",
            &n,
            &self.latency,
        )?;
        many(
            &mut enc,
            "baton_items_by_type",
            "Item attempts on this node by item type and event (started, completed, failed).",
            None,
            MetricType::Counter,
            self.items_by_type
                .iter()
                .map(|((kind, event), v)| {
                    (
                        vec![("node", node), ("type", *kind), ("event", *event)],
                        ConstCounter::new(*v),
                    )
                })
                .collect(),
        )?;
        {
            let (batches, checkpoints, commit) = &self.checkpoints;
            one(
                &mut enc,
                "baton_checkpoint_batches",
                "Checkpoint batches this node's group commit committed.",
                None,
                &n,
                ConstCounter::new(*batches),
            )?;
            one(
                &mut enc,
                "baton_checkpoints_batched",
                "Checkpoints in those batches (divide by baton_checkpoint_batches_total for the mean batch size).",
                None,
                &n,
                ConstCounter::new(*checkpoints),
            )?;
            histogram(
                &mut enc,
                "baton_checkpoint_commit",
                "How long each checkpoint batch took, from its first statement to its commit.",
                &n,
                commit,
            )?;
        }
        one(
            &mut enc,
            "baton_script_timeouts",
            "Script evaluations stopped at scripts.timeout_ms (this process).",
            None,
            &n,
            ConstCounter::new(self.scripts.0),
        )?;
        one(
            &mut enc,
            "baton_script_out_of_memory",
            "Script evaluations that ran out of scripts.memory_limit_mb (this process).",
            None,
            &n,
            ConstCounter::new(self.scripts.1),
        )?;
        many(
            &mut enc,
            "baton_script_evaluations",
            "Script evaluations by where they ran (this process): thread=\"caller\" for straight-line code run on the actors' thread (scripts.inline), \"script\" on a script thread.",
            None,
            MetricType::Counter,
            vec![
                (
                    vec![("node", node), ("thread", "caller")],
                    ConstCounter::new(self.evaluations.0),
                ),
                (
                    vec![("node", node), ("thread", "script")],
                    ConstCounter::new(self.evaluations.1),
                ),
            ],
        )?;
        if let Some((size, idle)) = self.pool {
            many(
                &mut enc,
                "baton_db_pool_connections",
                "The database pool's open connections, in use and idle.",
                None,
                MetricType::Gauge,
                vec![
                    (
                        vec![("node", node), ("state", "in_use")],
                        ConstGauge::new(i64::from(size).saturating_sub(idle as i64)),
                    ),
                    (
                        vec![("node", node), ("state", "idle")],
                        ConstGauge::new(idle as i64),
                    ),
                ],
            )?;
        }
        {
            let (free, waiting, owed) = self.admission;
            one(
                &mut enc,
                "baton_run_slots_free",
                "Slots under engine.max_running free now (0: starts wait for one).",
                None,
                &n,
                ConstGauge::new(free as i64),
            )?;
            one(
                &mut enc,
                "baton_starts_waiting",
                "Starts waiting for a slot under engine.max_running now.",
                None,
                &n,
                ConstGauge::new(waiting as i64),
            )?;
            one(
                &mut enc,
                "baton_run_slots_owed",
                "Runs the node started itself over engine.max_running (children, wakes, recoveries) not yet paid back; no start is admitted until they are.",
                None,
                &n,
                ConstGauge::new(owed as i64),
            )?;
        }
        {
            let (calls, queued, time) = &self.db_calls;
            one(
                &mut enc,
                "baton_db_calls",
                "Database calls this process made (a statement or a transaction each).",
                None,
                &n,
                ConstCounter::new(*calls),
            )?;
            one(
                &mut enc,
                "baton_db_calls_queued",
                "Database calls that began with every connection of their pool in use, so waited for one (a rising share of baton_db_calls_total: raise database.max_connections or look at the database).",
                None,
                &n,
                ConstCounter::new(*queued),
            )?;
            histogram(
                &mut enc,
                "baton_db_call",
                "Database calls, from the call to its result: the wait for a connection included.",
                &n,
                time,
            )?;
        }
        if let Some(work) = &self.owned {
            many(
                &mut enc,
                "baton_executions_waiting",
                "This node's parked executions by what they wait for (timer, signal, interaction, child); counted at most every 10 s.",
                None,
                MetricType::Gauge,
                ["timer", "signal", "interaction", "child"]
                    .iter()
                    .map(|k| {
                        let v = work.waiting.iter().find(|(w, _)| w == k).map_or(0, |(_, v)| *v);
                        (vec![("node", node), ("kind", *k)], ConstGauge::new(v))
                    })
                    .collect(),
            )?;
            many(
                &mut enc,
                "baton_executions_owned",
                "Unfinished executions this node owns, by state (waiting: a timer; waiting-signal: a signal or an interaction); counted at most every 10 s.",
                None,
                MetricType::Gauge,
                baton_actors::store::state::UNFINISHED
                    .iter()
                    .map(|s| {
                        let v = work.owned.iter().find(|(st, _)| st == s).map_or(0, |(_, v)| *v);
                        (vec![("node", node), ("state", *s)], ConstGauge::new(v))
                    })
                    .collect(),
            )?;
        }
        if let Some(oldest) = self.oldest_unowned_ms {
            one(
                &mut enc,
                "baton_oldest_unowned_work",
                "Age of the oldest unfinished execution nobody runs: its owner is not a live active node (counted from the owner's last heartbeat), it has no owner, or it is parked and overdue by more than 2 s (counted from its due time); 0 when there is none. Cluster-wide: the same on every node.",
                Some(&Unit::Seconds),
                &n,
                gauge(oldest as f64 / 1000.0),
            )?;
        }
        one(
            &mut enc,
            "baton_metrics_database_up",
            "1 when this scrape could read the database's gauges (executions owned, oldest unowned work), else 0.",
            None,
            &n,
            ConstGauge::new(i64::from(self.oldest_unowned_ms.is_some())),
        )?;
        many(
            &mut enc,
            "baton_http_requests",
            "HTTP requests this node answered, by route pattern, method and status.",
            None,
            MetricType::Counter,
            self.http
                .iter()
                .map(|(series, count)| (http_labels(node, series), ConstCounter::new(*count)))
                .collect(),
        )?;
        {
            let mut d = enc.encode_descriptor(
                "baton_http_request_duration",
                "HTTP request latency (request in to response out), by route pattern and method.",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for ((route, method), (sum, count, buckets)) in &self.http_latency {
                let labels = [
                    ("node", node),
                    ("route", route.as_str()),
                    ("method", method.as_str()),
                ];
                d.encode_family(&labels)?
                    .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                        *sum, *count, buckets, None,
                    )?;
            }
        }
        if let Some(p) = &self.process {
            one(
                &mut enc,
                "process_cpu",
                "User and system CPU time of the process.",
                Some(&Unit::Seconds),
                &n,
                ConstCounter::new(p.cpu_seconds),
            )?;
            one(
                &mut enc,
                "process_resident_memory",
                "Resident memory of the process.",
                Some(&Unit::Bytes),
                &n,
                gauge(p.resident_bytes),
            )?;
            one(
                &mut enc,
                "process_open_fds",
                "Open file descriptors of the process.",
                None,
                &n,
                gauge(p.open_fds),
            )?;
            one(
                &mut enc,
                "process_start_time",
                "When the process started, since the Unix epoch.",
                Some(&Unit::Seconds),
                &n,
                gauge(p.start_seconds),
            )?;
        }
        Ok(())
    }
}

/// The labels of one HTTP series.
fn http_labels<'a>(
    node: &'a str,
    (route, method, status): &'a baton_actors::metrics::HttpSeries,
) -> Vec<(&'static str, &'a str)> {
    vec![
        ("node", node),
        ("route", route.as_str()),
        ("method", method.as_str()),
        ("status", status_str(*status)),
    ]
}

/// A status code as a label value, without allocating per series.
fn status_str(status: u16) -> &'static str {
    // The codes Baton answers; anything else is grouped by class.
    match status {
        200 => "200",
        201 => "201",
        202 => "202",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        406 => "406",
        409 => "409",
        413 => "413",
        415 => "415",
        500 => "500",
        503 => "503",
        s if s < 200 => "1xx",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}

/// How long the owned counts are served before a scrape refreshes them.
const OWNED_REFRESH: std::time::Duration = std::time::Duration::from_secs(10);

/// The owned counts of the last refresh (a pass over every execution the
/// node owns: too dear for every scrape of a node that owns a million).
#[derive(Debug, Default)]
pub(crate) struct OwnedCache {
    value: Option<(std::time::Instant, OwnedCounts)>,
    refreshing: bool,
}

/// The owned counts: the cached ones, refreshed in the background once
/// they are older than [`OWNED_REFRESH`]; the first scrape waits for them.
async fn owned_counts(state: &AppState) -> Option<OwnedCounts> {
    let (cached, refresh) = {
        let mut c = state.owned_cache.lock().ok()?;
        let fresh = c
            .value
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < OWNED_REFRESH);
        let refresh = !fresh && !c.refreshing;
        c.refreshing |= refresh;
        (c.value.as_ref().map(|(_, v)| v.clone()), refresh)
    };
    if !refresh {
        return cached;
    }
    let (store, node, cache) = (
        state.store.clone(),
        state.node_id.clone(),
        state.owned_cache.clone(),
    );
    let job = async move {
        let counted = store.owned_counts(&node).await;
        let mut c = cache.lock().ok()?;
        c.refreshing = false;
        match counted {
            Ok(v) => {
                c.value = Some((std::time::Instant::now(), v.clone()));
                Some(v)
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics: cannot count the owned executions");
                None
            }
        }
    };
    match cached {
        None => job.await,
        Some(v) => {
            actix_web::rt::spawn(job);
            Some(v)
        }
    }
}

/// The node's metrics.
#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, content_type = "application/openmetrics-text")))]
#[get("/metrics")]
pub(crate) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let status = state.status.get();
    let m = &state.metrics;
    let cluster = &state.config.cluster;
    // Heartbeats older than two intervals mean an owner that is not
    // running its work (standalone nodes do not heartbeat).
    let stale = cluster
        .enabled
        .then(|| 2 * cluster.heartbeat_interval_ms as i64);
    let oldest_unowned_ms = match state.store.oldest_unowned_ms(stale, OVERDUE_MS).await {
        Ok(ms) => Some(ms),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot read the oldest unowned work");
            None
        }
    };
    let owned = owned_counts(&state).await;
    let snapshot = Snapshot {
        node: state.node_id.clone(),
        state: status.state,
        role: status.role,
        epoch: status.epoch,
        running: status.running,
        cluster: cluster.enabled,
        heartbeat_age: m.heartbeat_age(),
        heartbeat_commit: (m.heartbeat_age().is_some()).then(|| {
            m.heartbeat_commit_us
                .load(std::sync::atomic::Ordering::Relaxed) as f64
                / 1e6
        }),
        counters: m.counters(),
        fencings: FenceKind::ALL
            .iter()
            .zip(&m.fencings)
            .map(|(k, c)| (k.as_str(), c.load(std::sync::atomic::Ordering::Relaxed)))
            .collect(),
        takeovers: m
            .takeovers
            .lock()
            .map(|t| t.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default(),
        http: m
            .http
            .lock()
            .map(|h| h.counts.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default(),
        http_latency: m
            .http
            .lock()
            .map(|h| {
                h.latency
                    .iter()
                    .map(|(k, v)| (k.clone(), v.values()))
                    .collect()
            })
            .unwrap_or_default(),
        latency: m.item_latency.values(),
        items_by_type: m.items_by_type(),
        checkpoints: {
            let c = state.store.checkpoint_stats();
            (
                c.batches.load(std::sync::atomic::Ordering::Relaxed),
                c.checkpoints.load(std::sync::atomic::Ordering::Relaxed),
                c.commit.values(),
            )
        },
        scripts: (
            baton_actors::workflow::script::TIMEOUTS.load(std::sync::atomic::Ordering::Relaxed),
            baton_actors::workflow::script::OUT_OF_MEMORY
                .load(std::sync::atomic::Ordering::Relaxed),
        ),
        evaluations: (
            baton_actors::workflow::script::INLINE.load(std::sync::atomic::Ordering::Relaxed),
            baton_actors::workflow::script::POOLED.load(std::sync::atomic::Ordering::Relaxed),
        ),
        pool: state.store.pool_stats(),
        admission: {
            let a = &state.starter.admission;
            (a.free(), a.waiting(), a.owed())
        },
        db_calls: {
            let c = state.store.db_calls();
            (
                c.calls.load(std::sync::atomic::Ordering::Relaxed),
                c.queued.load(std::sync::atomic::Ordering::Relaxed),
                c.time.values(),
            )
        },
        owned,
        oldest_unowned_ms,
        process: Process::read(),
    };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::error!(error = %e, "metrics: cannot encode");
        return HttpResponse::InternalServerError().finish();
    }
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(out)
}
