//! Tracing: one span per envelope with the fields of STYLE.md, lifecycle events named after
//! django-cqrs's log lines, and the counters a service can read.

use std::sync::atomic::{AtomicU64, Ordering};

use tracing::Span;

use crate::envelope::Envelope;
use crate::values;

/// The span every log line about one message is recorded in. Its text fields (`cqrs_id`, `pk`,
/// `correlation_id`) are excerpts of at most [`values::EXCERPT_MAX`] bytes, whatever the
/// message carried.
#[must_use]
pub fn envelope_span(envelope: &Envelope) -> Span {
    tracing::info_span!(
        "cqrs.envelope",
        cqrs_id = %values::excerpt(&envelope.cqrs_id),
        pk = %values::excerpt(&envelope.pk_text()),
        signal = %envelope.signal_type,
        revision = envelope.revision(),
        retries = envelope.retries,
        correlation_id = envelope
            .correlation_id
            .as_deref()
            .map(|c| tracing::field::display(values::excerpt(c))),
    )
}

/// Counters of one [`CqrsSystem`](crate::CqrsSystem), readable at any time.
#[derive(Debug, Default)]
pub struct Metrics {
    published: AtomicU64,
    received: AtomicU64,
    applied: AtomicU64,
    skipped: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    requeued: AtomicU64,
    restarts: AtomicU64,
}

/// A copy of the counters at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
}

macro_rules! counters {
    ($($name:ident => $inc:ident),* $(,)?) => {
        impl Metrics {
            $(
                pub(crate) fn $inc(&self, n: u64) {
                    self.$name.fetch_add(n, Ordering::Relaxed);
                }
            )*

            /// Reads every counter.
            #[must_use]
            pub fn snapshot(&self) -> MetricsSnapshot {
                MetricsSnapshot { $($name: self.$name.load(Ordering::Relaxed)),* }
            }
        }
    };
}

counters! {
    published => add_published,
    received => add_received,
    applied => add_applied,
    skipped => add_skipped,
    retried => add_retried,
    dead_lettered => add_dead_lettered,
    requeued => add_requeued,
    restarts => add_restarts,
}
