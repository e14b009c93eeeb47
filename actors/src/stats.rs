//! The figures of one [`CqrsSystem`](crate::CqrsSystem): counters, histograms and gauges per
//! CQRS id, kept in a concurrent map that the actors update without a round trip and that
//! [`Metrics::snapshot`] (and an exporter) reads without stopping them.
//!
//! Every figure is also reported through the [`metrics`] facade, so any recorder a service
//! installs sees them (`metrics-exporter-prometheus` with the `prometheus` feature of
//! `cqrs-sync`). The facade's handles are taken when a CQRS id is first seen, which is at
//! start for every registered id: install the recorder before starting the system. The names
//! follow Prometheus conventions; [`NAMES`] lists them.
//!
//! Only the CQRS ids this system registered get their own entry; events of any other id (a
//! message for a model this replica does not have, a body that is not even decodable) are
//! counted under [`OTHER_ID`], so hostile input cannot grow the map.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// The `cqrs_id` label of events whose CQRS id this system has no model for.
pub const OTHER_ID: &str = "_other";

/// Bounds of the replication lag and apply latency buckets, in seconds.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Bounds of the batch size buckets, in events.
pub const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];

/// Every metric name this crate reports, with its kind and meaning (the README's table).
pub const NAMES: &[(&str, &str, &str)] = &[
    (
        "cqrs_events_published_total",
        "counter",
        "events published and confirmed by the broker",
    ),
    (
        "cqrs_events_received_total",
        "counter",
        "deliveries received by the replica",
    ),
    (
        "cqrs_events_applied_total",
        "counter",
        "events that wrote a row (created, updated, deleted)",
    ),
    (
        "cqrs_events_ignored_stale_total",
        "counter",
        "SAVEs older than the stored revision, acknowledged without a write",
    ),
    (
        "cqrs_events_ignored_duplicate_total",
        "counter",
        "SAVEs with the stored revision, acknowledged without a write",
    ),
    (
        "cqrs_events_skipped_total",
        "counter",
        "other events acknowledged without a write (older than a delete, broadcast syncs a model refuses, deletes of missing rows)",
    ),
    (
        "cqrs_revision_gaps_total",
        "counter",
        "SAVEs applied after skipped revisions (events lost or filtered upstream)",
    ),
    (
        "cqrs_events_retried_total",
        "counter",
        "failed events parked for another attempt",
    ),
    (
        "cqrs_events_dead_lettered_total",
        "counter",
        "events moved to the dead-letter queue",
    ),
    (
        "cqrs_events_requeued_total",
        "counter",
        "deliveries handed back to the broker for redelivery",
    ),
    (
        "cqrs_replication_lag_seconds",
        "histogram",
        "replica commit time minus the master's cqrs_updated, per applied event",
    ),
    (
        "cqrs_apply_duration_seconds",
        "histogram",
        "time the replica handler took for one batch of one CQRS id",
    ),
    (
        "cqrs_apply_batch_size",
        "histogram",
        "events per batch given to the replica handler",
    ),
    (
        "cqrs_events_in_flight",
        "gauge",
        "deliveries received and not yet applied, skipped, parked, dead-lettered or handed back",
    ),
    (
        "cqrs_outbox_depth",
        "gauge",
        "events waiting in the master's outbox (sampled)",
    ),
    (
        "cqrs_queue_ready",
        "gauge",
        "messages ready in the replica queue (sampled; label queue)",
    ),
    (
        "cqrs_queue_parked",
        "gauge",
        "retry copies parked for the replica queue (sampled; label queue)",
    ),
    (
        "cqrs_queue_dead_letters",
        "gauge",
        "messages in the replica's dead-letter queue (sampled; label queue)",
    ),
    (
        "cqrs_worker_restarts_total",
        "counter",
        "replica workers restarted after a handler panicked",
    ),
];

/// Gives the installed recorder the description and unit of every name in [`NAMES`] (the
/// `# HELP` lines of Prometheus). Call it once the recorder is installed.
pub fn describe() {
    for (name, kind, help) in NAMES {
        let unit = if name.ends_with("_seconds") {
            metrics::Unit::Seconds
        } else {
            metrics::Unit::Count
        };
        match *kind {
            "counter" => metrics::describe_counter!(*name, unit, *help),
            "gauge" => metrics::describe_gauge!(*name, unit, *help),
            _ => metrics::describe_histogram!(*name, unit, *help),
        }
    }
}

/// A counter: our own figure and the facade's handle.
struct Counter {
    n: AtomicU64,
    facade: metrics::Counter,
}

impl Counter {
    fn new(name: &'static str, labels: &[(&'static str, String)]) -> Self {
        Self {
            n: AtomicU64::new(0),
            facade: metrics::counter!(name, labels),
        }
    }

    fn add(&self, n: u64) {
        self.n.fetch_add(n, Ordering::Relaxed);
        self.facade.increment(n);
    }

    fn get(&self) -> u64 {
        self.n.load(Ordering::Relaxed)
    }
}

/// A gauge set by the sampler: our own figure and the facade's handle.
struct Gauge {
    n: AtomicU64,
    facade: metrics::Gauge,
}

impl Gauge {
    fn new(name: &'static str, labels: &[(&'static str, String)]) -> Self {
        Self {
            n: AtomicU64::new(0),
            facade: metrics::gauge!(name, labels),
        }
    }

    fn set(&self, n: u64) {
        self.n.store(n, Ordering::Relaxed);
        #[allow(clippy::cast_precision_loss)] // a count far below 2^52
        self.facade.set(n as f64);
    }

    fn get(&self) -> u64 {
        self.n.load(Ordering::Relaxed)
    }
}

/// A histogram with fixed buckets, readable as a [`HistogramSnapshot`].
struct Histogram {
    bounds: &'static [f64],
    /// One count per bound, and one for larger values.
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    /// Sum of the values in millionths.
    sum_micros: AtomicU64,
    facade: metrics::Histogram,
}

impl Histogram {
    fn new(name: &'static str, labels: &[(&'static str, String)], bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
            facade: metrics::histogram!(name, labels),
        }
    }

    fn record(&self, value: f64) {
        let value = if value.is_finite() {
            value.max(0.0)
        } else {
            0.0
        };
        let slot = self.bounds.partition_point(|b| *b < value);
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // clamped above
        self.sum_micros
            .fetch_add((value * 1e6).min(1e18) as u64, Ordering::Relaxed);
        self.facade.record(value);
    }

    fn snapshot(&self) -> HistogramSnapshot {
        #[allow(clippy::cast_precision_loss)] // a sum far below 2^52 millionths
        HistogramSnapshot {
            bounds: self.bounds.to_vec(),
            counts: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            count: self.count.load(Ordering::Relaxed),
            sum: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// A histogram at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// Upper bounds of the buckets (inclusive).
    pub bounds: Vec<f64>,
    /// Values per bucket (not cumulative); one more than `bounds`, the last for larger values.
    pub counts: Vec<u64>,
    /// Values recorded.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
}

impl HistogramSnapshot {
    /// The upper bound of the bucket the `q` quantile (0 to 1) falls in: a value no recorded
    /// value below that quantile exceeds. `None` when nothing was recorded; infinity when it
    /// is beyond the last bound.
    #[must_use]
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(self.bounds.get(i).copied().unwrap_or(f64::INFINITY));
            }
        }
        Some(f64::INFINITY)
    }
}

/// The figures of one CQRS id.
pub struct IdMetrics {
    cqrs_id: String,
    published: Counter,
    received: Counter,
    applied: Counter,
    ignored_stale: Counter,
    ignored_duplicate: Counter,
    skipped: Counter,
    gaps: Counter,
    retried: Counter,
    dead_lettered: Counter,
    requeued: Counter,
    lag: Histogram,
    apply_seconds: Histogram,
    batch_size: Histogram,
    in_flight: Gauge,
    outbox_depth: Gauge,
}

impl std::fmt::Debug for IdMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdMetrics")
            .field("snapshot", &self.snapshot())
            .finish()
    }
}

impl IdMetrics {
    fn new(cqrs_id: &str) -> Self {
        let labels = [("cqrs_id", cqrs_id.to_owned())];
        let counter = |name| Counter::new(name, &labels);
        Self {
            cqrs_id: cqrs_id.to_owned(),
            published: counter("cqrs_events_published_total"),
            received: counter("cqrs_events_received_total"),
            applied: counter("cqrs_events_applied_total"),
            ignored_stale: counter("cqrs_events_ignored_stale_total"),
            ignored_duplicate: counter("cqrs_events_ignored_duplicate_total"),
            skipped: counter("cqrs_events_skipped_total"),
            gaps: counter("cqrs_revision_gaps_total"),
            retried: counter("cqrs_events_retried_total"),
            dead_lettered: counter("cqrs_events_dead_lettered_total"),
            requeued: counter("cqrs_events_requeued_total"),
            lag: Histogram::new("cqrs_replication_lag_seconds", &labels, SECONDS_BUCKETS),
            apply_seconds: Histogram::new("cqrs_apply_duration_seconds", &labels, SECONDS_BUCKETS),
            batch_size: Histogram::new("cqrs_apply_batch_size", &labels, BATCH_BUCKETS),
            in_flight: Gauge::new("cqrs_events_in_flight", &labels),
            outbox_depth: Gauge::new("cqrs_outbox_depth", &labels),
        }
    }

    /// The CQRS id these figures are of ([`OTHER_ID`] for the shared entry).
    #[must_use]
    pub fn cqrs_id(&self) -> &str {
        &self.cqrs_id
    }

    /// Events waiting in the outbox, as last sampled.
    pub(crate) fn outbox_depth(&self) -> u64 {
        self.outbox_depth.get()
    }

    /// Records one batch its handler applied: its size and how long the handler took.
    pub(crate) fn record_batch(&self, events: usize, seconds: f64) {
        #[allow(clippy::cast_precision_loss)] // a batch is far below 2^52
        self.batch_size.record(events as f64);
        self.apply_seconds.record(seconds);
    }

    /// Records the replication lag of one applied event, in seconds.
    pub(crate) fn record_lag(&self, seconds: f64) {
        self.lag.record(seconds);
    }

    /// Counts `n` events with this outcome.
    pub(crate) fn count(&self, outcome: Outcome, n: u64) {
        let counter = match outcome {
            Outcome::Published => &self.published,
            Outcome::Received => &self.received,
            Outcome::Applied => &self.applied,
            Outcome::Stale => &self.ignored_stale,
            Outcome::Duplicate => &self.ignored_duplicate,
            Outcome::Skipped => &self.skipped,
            Outcome::Gap => &self.gaps,
            Outcome::Retried => &self.retried,
            Outcome::DeadLettered => &self.dead_lettered,
            Outcome::Requeued => &self.requeued,
        };
        counter.add(n);
    }

    fn settled(&self) -> u64 {
        [
            &self.applied,
            &self.ignored_stale,
            &self.ignored_duplicate,
            &self.skipped,
            &self.retried,
            &self.dead_lettered,
            &self.requeued,
        ]
        .iter()
        .map(|c| c.get())
        .sum()
    }

    /// Reads every figure.
    #[must_use]
    pub fn snapshot(&self) -> IdSnapshot {
        IdSnapshot {
            published: self.published.get(),
            received: self.received.get(),
            applied: self.applied.get(),
            ignored_stale: self.ignored_stale.get(),
            ignored_duplicate: self.ignored_duplicate.get(),
            skipped: self.skipped.get(),
            gaps: self.gaps.get(),
            retried: self.retried.get(),
            dead_lettered: self.dead_lettered.get(),
            requeued: self.requeued.get(),
            in_flight: self.received.get().saturating_sub(self.settled()),
            outbox_depth: self.outbox_depth.get(),
            lag: self.lag.snapshot(),
            apply_seconds: self.apply_seconds.snapshot(),
            batch_size: self.batch_size.snapshot(),
        }
    }
}

/// The figures of one CQRS id at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IdSnapshot {
    /// Events published and confirmed.
    pub published: u64,
    /// Deliveries received.
    pub received: u64,
    /// Events that wrote a row (created, updated, deleted).
    pub applied: u64,
    /// SAVEs older than the stored revision.
    pub ignored_stale: u64,
    /// SAVEs with the stored revision.
    pub ignored_duplicate: u64,
    /// Other events acknowledged without a write.
    pub skipped: u64,
    /// SAVEs applied after skipped revisions (also counted in `applied`).
    pub gaps: u64,
    /// Failures parked for another attempt.
    pub retried: u64,
    /// Events moved to the dead-letter queue.
    pub dead_lettered: u64,
    /// Deliveries handed back for redelivery.
    pub requeued: u64,
    /// Deliveries received and not yet settled one way or another.
    pub in_flight: u64,
    /// Events waiting in the outbox, as last sampled.
    pub outbox_depth: u64,
    /// Replication lag of applied events, in seconds.
    pub lag: HistogramSnapshot,
    /// Handler time per batch, in seconds.
    pub apply_seconds: HistogramSnapshot,
    /// Events per handler batch.
    pub batch_size: HistogramSnapshot,
}

/// The sampled counts of a replica queue.
struct QueueGauges {
    ready: Gauge,
    parked: Gauge,
    dead_letters: Gauge,
}

/// The sampled counts of a replica queue at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueSnapshot {
    /// Messages ready for delivery.
    pub ready: u64,
    /// Retry copies parked, waiting for their delay (0 where the transport does not tell).
    pub parked: u64,
    /// Messages in the dead-letter queue (0 where the transport does not tell).
    pub dead_letters: u64,
}

/// One outcome of an event, for [`Metrics::count`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Published,
    Received,
    Applied,
    Stale,
    Duplicate,
    Skipped,
    Gap,
    Retried,
    DeadLettered,
    Requeued,
}

/// The figures of one [`CqrsSystem`](crate::CqrsSystem), readable at any time.
pub struct Metrics {
    ids: DashMap<String, Arc<IdMetrics>>,
    other: Arc<IdMetrics>,
    queues: DashMap<String, Arc<QueueGauges>>,
    restarts: Counter,
    /// When workers restarted lately (crash-loop detection).
    restarted_at: Mutex<VecDeque<Instant>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            ids: DashMap::new(),
            other: Arc::new(IdMetrics::new(OTHER_ID)),
            queues: DashMap::new(),
            restarts: Counter::new("cqrs_worker_restarts_total", &[]),
            restarted_at: Mutex::new(VecDeque::new()),
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("cqrs_ids", &self.ids.len())
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// Figures for these CQRS ids (the system's registered ones).
    #[must_use]
    pub fn for_ids<'a>(ids: impl IntoIterator<Item = &'a str>) -> Self {
        let metrics = Self::default();
        for id in ids {
            metrics.register(id);
        }
        metrics
    }

    /// Gives `cqrs_id` an entry of its own (registering the facade's handles) if it has none.
    pub fn register(&self, cqrs_id: &str) -> Arc<IdMetrics> {
        if let Some(m) = self.ids.get(cqrs_id) {
            return Arc::clone(&m);
        }
        Arc::clone(
            &self
                .ids
                .entry(cqrs_id.to_owned())
                .or_insert_with(|| Arc::new(IdMetrics::new(cqrs_id))),
        )
    }

    /// The entry of `cqrs_id`, or the one of [`OTHER_ID`] when it has none.
    #[must_use]
    pub fn id(&self, cqrs_id: &str) -> Arc<IdMetrics> {
        self.ids
            .get(cqrs_id)
            .map_or_else(|| Arc::clone(&self.other), |m| Arc::clone(&m))
    }

    /// Counts `n` events of `cqrs_id` with this outcome.
    pub(crate) fn count(&self, cqrs_id: &str, outcome: Outcome, n: u64) {
        if n == 0 {
            return;
        }
        self.id(cqrs_id).count(outcome, n);
    }

    /// Records the replication lag of applied events of `cqrs_id`, in seconds.
    #[cfg(test)]
    fn lags(&self, cqrs_id: &str, lags: impl IntoIterator<Item = f64>) {
        let m = self.id(cqrs_id);
        for lag in lags {
            m.record_lag(lag);
        }
    }

    pub(crate) fn add_restarts(&self, n: u64) {
        self.restarts.add(n);
        let mut at = self
            .restarted_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        at.push_back(Instant::now());
        while at.len() > 1000 {
            at.pop_front();
        }
    }

    /// Worker restarts within the last `window`.
    pub(crate) fn restarts_within(&self, window: Duration) -> usize {
        let at = self
            .restarted_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        at.iter()
            .rev()
            .take_while(|t| t.elapsed() <= window)
            .count()
    }

    /// Sets the sampled outbox depth of `cqrs_id`.
    pub(crate) fn set_outbox_depth(&self, cqrs_id: &str, depth: u64) {
        self.id(cqrs_id).outbox_depth.set(depth);
    }

    /// Sets the sampled counts of a replica queue.
    pub(crate) fn set_queue(&self, queue: &str, stats: QueueSnapshot) {
        let gauges = self
            .queues
            .entry(queue.to_owned())
            .or_insert_with(|| {
                let labels = [("queue", queue.to_owned())];
                Arc::new(QueueGauges {
                    ready: Gauge::new("cqrs_queue_ready", &labels),
                    parked: Gauge::new("cqrs_queue_parked", &labels),
                    dead_letters: Gauge::new("cqrs_queue_dead_letters", &labels),
                })
            })
            .clone();
        gauges.ready.set(stats.ready);
        gauges.parked.set(stats.parked);
        gauges.dead_letters.set(stats.dead_letters);
    }

    /// Publishes the in-flight gauge of every CQRS id to the facade.
    pub(crate) fn sample_in_flight(&self) {
        for m in self
            .ids
            .iter()
            .map(|e| Arc::clone(e.value()))
            .chain([Arc::clone(&self.other)])
        {
            m.in_flight
                .set(m.received.get().saturating_sub(m.settled()));
        }
    }

    /// Reads every figure: the totals, and each CQRS id's own.
    #[must_use]
    pub fn snapshot(&self) -> MetricsSnapshot {
        let mut by_id: BTreeMap<String, IdSnapshot> = self
            .ids
            .iter()
            .map(|e| (e.key().clone(), e.value().snapshot()))
            .collect();
        let other = self.other.snapshot();
        if other.received > 0 || other.dead_lettered > 0 || other.published > 0 {
            by_id.insert(OTHER_ID.to_owned(), other);
        }
        let sum = |f: fn(&IdSnapshot) -> u64| by_id.values().map(f).sum::<u64>();
        MetricsSnapshot {
            published: sum(|s| s.published),
            received: sum(|s| s.received),
            applied: sum(|s| s.applied),
            skipped: sum(|s| s.ignored_stale + s.ignored_duplicate + s.skipped),
            retried: sum(|s| s.retried),
            dead_lettered: sum(|s| s.dead_lettered),
            requeued: sum(|s| s.requeued),
            restarts: self.restarts.get(),
            queues: self
                .queues
                .iter()
                .map(|e| {
                    let g = e.value();
                    (
                        e.key().clone(),
                        QueueSnapshot {
                            ready: g.ready.get(),
                            parked: g.parked.get(),
                            dead_letters: g.dead_letters.get(),
                        },
                    )
                })
                .collect(),
            by_id,
        }
    }
}

/// The figures at one instant: totals over every CQRS id, and each id's own.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// Messages published and confirmed.
    pub published: u64,
    /// Deliveries received.
    pub received: u64,
    /// Events that wrote (created, updated, deleted).
    pub applied: u64,
    /// Events acknowledged without a write (stale, duplicate, ignored syncs, ...).
    pub skipped: u64,
    /// Retry copies parked.
    pub retried: u64,
    /// Dead letters published.
    pub dead_lettered: u64,
    /// Deliveries handed back for redelivery.
    pub requeued: u64,
    /// ReplicaApply worker restarts (after a panic).
    pub restarts: u64,
    /// Each CQRS id's figures; [`OTHER_ID`] holds the events of ids without a model here.
    pub by_id: BTreeMap<String, IdSnapshot>,
    /// The replica queue's sampled counts, by queue name.
    pub queues: BTreeMap<String, QueueSnapshot>,
}

impl MetricsSnapshot {
    /// The figures of `cqrs_id` (all zero when it has none).
    #[must_use]
    pub fn id(&self, cqrs_id: &str) -> IdSnapshot {
        self.by_id.get(cqrs_id).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_go_to_their_id_and_unknown_ids_share_one_entry() {
        let m = Metrics::for_ids(["author", "book"]);
        m.count("author", Outcome::Received, 3);
        m.count("author", Outcome::Applied, 2);
        m.count("author", Outcome::Stale, 1);
        m.count("book", Outcome::Received, 1);
        for i in 0..1000 {
            m.count(&format!("hostile{i}"), Outcome::DeadLettered, 1);
        }
        let s = m.snapshot();
        assert_eq!(s.by_id.len(), 3, "author, book and {OTHER_ID}");
        assert_eq!(s.id("author").in_flight, 0);
        assert_eq!(s.id("book").in_flight, 1);
        assert_eq!(s.id(OTHER_ID).dead_lettered, 1000);
        assert_eq!((s.received, s.applied, s.skipped), (4, 2, 1));
    }

    #[test]
    fn a_histogram_answers_quantiles_by_bucket() {
        let m = Metrics::for_ids(["a"]);
        m.lags("a", (0..100).map(|i| if i < 99 { 0.004 } else { 0.2 }));
        let lag = m.snapshot().id("a").lag;
        assert_eq!(lag.count, 100);
        assert_eq!(lag.quantile(0.5), Some(0.005));
        assert_eq!(lag.quantile(0.99), Some(0.005));
        assert_eq!(lag.quantile(1.0), Some(0.25));
        assert!((lag.sum - (99.0 * 0.004 + 0.2)).abs() < 1e-6);
        m.lags("a", [f64::NAN, -1.0, 1e300]);
        let lag = m.snapshot().id("a").lag;
        assert_eq!(lag.count, 103);
        assert_eq!(lag.quantile(1.0), Some(f64::INFINITY));
        assert_eq!(HistogramSnapshot::default().quantile(0.5), None);
    }
}
