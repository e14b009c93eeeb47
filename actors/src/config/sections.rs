//! The sections of the configuration below its top level: `[master]`, `[replica]` and
//! `[models.<id>]`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::forms::{BackoffKind, MaxRetries, Ttl};

/// The `[master]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MasterConfig {
    pub(super) message_ttl: Ttl,
    pub(super) publish_window: u32,
    pub(super) outbox_poll_interval: f64,
    pub(super) outbox_lease_ttl: f64,
}

impl Default for MasterConfig {
    fn default() -> Self {
        Self {
            message_ttl: Ttl(Some(Duration::from_secs(86_400))),
            publish_window: 1000,
            outbox_poll_interval: 0.5,
            outbox_lease_ttl: 10.0,
        }
    }
}

impl MasterConfig {
    /// `expires = now + message_ttl` on published messages (`None` = never); default 1 day.
    #[must_use]
    pub fn message_ttl(&self) -> Option<Duration> {
        self.message_ttl.0
    }

    /// How many publishes may wait for their confirm at once, from an outbox and from the
    /// publisher each; default 1000. The one window between the outbox and the broker.
    #[must_use]
    pub fn publish_window(&self) -> u32 {
        self.publish_window
    }

    /// How often an outbox is read when no writer in this process woke its relay (rows written
    /// by other processes); default 0.5 s.
    #[must_use]
    pub fn outbox_poll_interval(&self) -> Duration {
        Duration::from_secs_f64(self.outbox_poll_interval)
    }

    /// How long a relay holds an outbox's lease without renewing it: another process takes
    /// over this long after the holder died; default 10 s.
    #[must_use]
    pub fn outbox_lease_ttl(&self) -> Duration {
        Duration::from_secs_f64(self.outbox_lease_ttl)
    }
}

/// Per-model settings (`[models.<id>]`): retry overrides of the `[replica]` level, and
/// whether the replica model asks for rows after a revision gap.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) max_retries: Option<MaxRetries>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) retry_delay: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) backoff: Option<BackoffKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) retry_delay_max: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) jitter: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) gap_repair: Option<bool>,
}

impl ModelConfig {
    /// Overrides the retry limit (`None` = for ever).
    #[must_use]
    pub fn with_max_retries(mut self, max: Option<u32>) -> Self {
        self.max_retries = Some(MaxRetries(max));
        self
    }

    /// Overrides the (first) retry delay.
    #[must_use]
    pub fn with_retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = Some(delay.as_secs_f64());
        self
    }

    /// Overrides the backoff kind.
    #[must_use]
    pub fn with_backoff(mut self, backoff: BackoffKind) -> Self {
        self.backoff = Some(backoff);
        self
    }

    /// Turns gap repair on or off for this replica model (`gap_repair`; off by default): after
    /// a revision gap, or a SAVE ignored as older than a tombstone, the replica asks the
    /// master for the row's current state.
    #[must_use]
    pub fn with_gap_repair(mut self, on: bool) -> Self {
        self.gap_repair = Some(on);
        self
    }
}

/// The `[replica]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicaConfig {
    pub(super) max_retries: MaxRetries,
    pub(super) retry_delay: f64,
    pub(super) backoff: BackoffKind,
    pub(super) retry_delay_max: f64,
    pub(super) jitter: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) dead_letter_queue: Option<String>,
    pub(super) dead_message_ttl: Ttl,
    pub(super) workers: usize,
    pub(super) batch_size: usize,
    batch_linger_ms: u64,
    pub(super) prefetch: u32,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        Self {
            max_retries: MaxRetries(Some(30)),
            retry_delay: 2.0,
            backoff: BackoffKind::Constant,
            retry_delay_max: 300.0,
            jitter: 0.2,
            dead_letter_queue: None,
            dead_message_ttl: Ttl(Some(Duration::from_secs(864_000))),
            workers: 4,
            batch_size: 100,
            batch_linger_ms: 0,
            prefetch: 1000,
        }
    }
}

impl ReplicaConfig {
    /// How long dead letters are kept (`None` = for ever); default 10 days.
    #[must_use]
    pub fn dead_message_ttl(&self) -> Option<Duration> {
        self.dead_message_ttl.0
    }

    /// Number of ReplicaApply workers rows are sharded over; default 4.
    #[must_use]
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Most events one worker applies in one batch; default 100.
    #[must_use]
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// How long a worker waits for a batch to fill (0 = apply what is there); default 0.
    #[must_use]
    pub fn batch_linger(&self) -> Duration {
        Duration::from_millis(self.batch_linger_ms)
    }

    /// Most unacknowledged deliveries at once; default 1000.
    #[must_use]
    pub fn prefetch(&self) -> u32 {
        self.prefetch
    }
}

/// The `[observability]` section: how figures are sampled and health is judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObservabilityConfig {
    pub(super) sample_interval: f64,
    pub(super) probe_timeout: f64,
    pub(super) relay_stuck_after: f64,
    pub(super) crash_loop_restarts: u32,
}

impl Default for ObservabilityConfig {
    fn default() -> Self {
        Self {
            sample_interval: 10.0,
            probe_timeout: 2.0,
            relay_stuck_after: 60.0,
            crash_loop_restarts: 5,
        }
    }
}

impl ObservabilityConfig {
    /// How often the gauges read from the broker and the outbox are sampled (queue depth,
    /// parked retries, dead letters, outbox depth); default 10 s.
    #[must_use]
    pub fn sample_interval(&self) -> Duration {
        Duration::from_secs_f64(self.sample_interval)
    }

    /// How long a health check waits for the broker or a database; default 2 s.
    #[must_use]
    pub fn probe_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.probe_timeout)
    }

    /// How long an outbox relay may go without moving while events wait before the service is
    /// not ready; default 60 s.
    #[must_use]
    pub fn relay_stuck_after(&self) -> Duration {
        Duration::from_secs_f64(self.relay_stuck_after)
    }

    /// Worker restarts within a minute that make the service not live (crash loop); default 5.
    #[must_use]
    pub fn crash_loop_restarts(&self) -> u32 {
        self.crash_loop_restarts
    }
}
