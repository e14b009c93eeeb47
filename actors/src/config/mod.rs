//! Configuration: one serde struct mirroring django-cqrs's `CQRS` settings, read from a TOML
//! file and `CQRS_*` environment variables, or built in code.
//!
//! ```toml
//! url = "amqp://guest:guest@127.0.0.1:5672/"
//! exchange = "cqrs"
//! queue = "billing"
//! codec = "json"              # or "msgpack"
//!
//! [master]
//! message_ttl = 86400         # seconds, or "never"
//!
//! [replica]
//! max_retries = 30            # or "forever"
//! retry_delay = 2.0           # seconds
//! backoff = "constant"        # or "exponential" (retry_delay doubling up to retry_delay_max)
//! dead_message_ttl = 864000   # seconds, or "never"
//! workers = 4
//!
//! [models.author]             # per-CQRS-id overrides
//! max_retries = 5
//! gap_repair = true           # ask the master for rows after a revision gap (off by default)
//!
//! [gap_repair]                # limits on those requests
//! request_window = 60.0       # seconds: one request per row in this window
//! ```
//!
//! Environment variables override the file: `CQRS_<KEY>` for top-level keys and
//! `CQRS_<SECTION>__<KEY>` below (double underscore), e.g. `CQRS_QUEUE=billing`,
//! `CQRS_REPLICA__MAX_RETRIES=5`, `CQRS_MODELS__AUTHOR__RETRY_DELAY=0.5`.

mod forms;
mod gap_repair;
mod sections;
mod sources;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::retry::{Backoff, RetryPolicy};
pub use crate::secret_url::SecretUrl;
pub use forms::{BackoffKind, CodecName, MaxRetries, Ttl};
pub use gap_repair::GapRepairConfig;
pub use sections::{MasterConfig, ModelConfig, ObservabilityConfig, ReplicaConfig};

/// The whole configuration, read from a TOML file and `CQRS_*` environment variables
/// ([`CqrsConfig::load`]) or built in code with the `with_*` setters:
///
/// ```toml
/// url = "amqp://guest:guest@127.0.0.1:5672/"   # picks the transport
/// exchange = "cqrs"
/// queue = "billing"
/// codec = "json"              # or "msgpack"
///
/// [master]
/// message_ttl = 86400         # seconds, or "never"
/// publish_window = 1000       # unconfirmed publishes, from each outbox to the confirm
///
/// [replica]
/// max_retries = 30            # or "forever"
/// retry_delay = 2.0           # seconds
///
/// [models.author]             # per-CQRS-id overrides
/// max_retries = 5
///
/// [observability]             # sampled gauges and health checks
/// sample_interval = 10.0      # seconds
/// relay_stuck_after = 60.0    # seconds an outbox relay may stand still
///
/// [rabbitmq]                  # read by the RabbitMQ transport
/// queue_type = "classic"
/// ```
///
/// Variables override the file: `CQRS_<KEY>`, and `CQRS_<SECTION>__<KEY>` below, e.g.
/// `CQRS_REPLICA__MAX_RETRIES=5` or `CQRS_RABBITMQ__CONSUMERS=2`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CqrsConfig {
    url: SecretUrl,
    exchange: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    queue: Option<String>,
    codec: CodecName,
    master: MasterConfig,
    replica: ReplicaConfig,
    models: BTreeMap<String, ModelConfig>,
    observability: ObservabilityConfig,
    gap_repair: GapRepairConfig,
    /// Options of the RabbitMQ transport, read by the transport (`[rabbitmq]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    rabbitmq: Option<toml::Table>,
    /// Options of the Redis transport, read by the transport (`[redis]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    redis: Option<toml::Table>,
}

impl Default for CqrsConfig {
    fn default() -> Self {
        Self {
            url: SecretUrl::new("memory://"),
            exchange: "cqrs".to_owned(),
            queue: None,
            codec: CodecName::Json,
            master: MasterConfig::default(),
            replica: ReplicaConfig::default(),
            models: BTreeMap::new(),
            observability: ObservabilityConfig::default(),
            gap_repair: GapRepairConfig::default(),
            rabbitmq: None,
            redis: None,
        }
    }
}

impl CqrsConfig {
    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<()> {
        let scheme = self.url.scheme();
        if !["memory", "amqp", "amqps", "redis", "rediss"].contains(&scheme.as_str()) {
            return Err(Error::config(
                "url",
                format!("unsupported scheme {scheme:?} in {}", self.url),
            ));
        }
        if self.exchange.trim().is_empty() {
            return Err(Error::config("exchange", "must not be empty"));
        }
        if self
            .queue
            .as_deref()
            .is_some_and(|q| q.trim().is_empty() || q.contains(' '))
        {
            return Err(Error::config(
                "queue",
                "must be a non-empty name without spaces",
            ));
        }
        if self.master.publish_window == 0 {
            return Err(Error::config("master.publish_window", "must be at least 1"));
        }
        for (key, secs) in [
            (
                "master.outbox_poll_interval",
                self.master.outbox_poll_interval,
            ),
            ("master.outbox_lease_ttl", self.master.outbox_lease_ttl),
            (
                "observability.sample_interval",
                self.observability.sample_interval,
            ),
            (
                "observability.probe_timeout",
                self.observability.probe_timeout,
            ),
            (
                "observability.relay_stuck_after",
                self.observability.relay_stuck_after,
            ),
        ] {
            if !(secs.is_finite() && secs > 0.0 && secs < 1e9) {
                return Err(Error::config(key, "must be a positive number of seconds"));
            }
        }
        let r = &self.replica;
        if r.workers == 0 {
            return Err(Error::config("replica.workers", "must be at least 1"));
        }
        if r.batch_size == 0 {
            return Err(Error::config("replica.batch_size", "must be at least 1"));
        }
        check_retry_numbers(
            "replica",
            Some(r.retry_delay),
            Some(r.retry_delay_max),
            Some(r.jitter),
        )?;
        for (id, m) in &self.models {
            check_retry_numbers(
                &format!("models.{id}"),
                m.retry_delay,
                m.retry_delay_max,
                m.jitter,
            )?;
        }
        self.gap_repair.validate()?;
        Ok(())
    }

    /// The broker URL (password redacted when printed).
    #[must_use]
    pub fn url(&self) -> &SecretUrl {
        &self.url
    }

    /// The exchange name; default `cqrs`.
    #[must_use]
    pub fn exchange(&self) -> &str {
        &self.exchange
    }

    /// This replica service's queue, if it has one.
    #[must_use]
    pub fn queue(&self) -> Option<&str> {
        self.queue.as_deref()
    }

    /// The dead-letter queue: `replica.dead_letter_queue`, default `dead_letter_<queue>`.
    #[must_use]
    pub fn dead_letter_queue(&self) -> Option<String> {
        self.replica
            .dead_letter_queue
            .clone()
            .or_else(|| self.queue.as_ref().map(|q| format!("dead_letter_{q}")))
    }

    /// The codec masters publish with.
    #[must_use]
    pub fn codec(&self) -> Codec {
        self.codec.into()
    }

    /// The `[master]` section.
    #[must_use]
    pub fn master(&self) -> &MasterConfig {
        &self.master
    }

    /// The `[replica]` section.
    #[must_use]
    pub fn replica(&self) -> &ReplicaConfig {
        &self.replica
    }

    /// The `[observability]` section.
    #[must_use]
    pub fn observability(&self) -> &ObservabilityConfig {
        &self.observability
    }

    /// The options table of a transport (`"rabbitmq"` or `"redis"`), if the configuration has
    /// one: `[rabbitmq]` in the file, `CQRS_RABBITMQ__<KEY>` in the environment.
    #[must_use]
    pub fn transport_options(&self, transport: &str) -> Option<&toml::Table> {
        match transport {
            "rabbitmq" => self.rabbitmq.as_ref(),
            "redis" => self.redis.as_ref(),
            _ => None,
        }
    }

    /// Whether `[models.<cqrs_id>]` sets any retry setting for this id (`gap_repair` is not
    /// one: a model's retry policy in code does not override it).
    #[must_use]
    pub fn has_model_settings(&self, cqrs_id: &str) -> bool {
        self.models.get(cqrs_id).is_some_and(|m| {
            let retry_only = ModelConfig {
                gap_repair: None,
                ..m.clone()
            };
            retry_only != ModelConfig::default()
        })
    }

    /// Whether `[models.<cqrs_id>]` turns gap repair on (`gap_repair = true`); off by default.
    /// A replica model's own [`with_gap_repair`](crate::ReplicaModel::with_gap_repair) wins.
    #[must_use]
    pub fn gap_repair_enabled(&self, cqrs_id: &str) -> bool {
        self.models
            .get(cqrs_id)
            .and_then(|m| m.gap_repair)
            .unwrap_or(false)
    }

    /// The `[gap_repair]` section: the limits on a replica's sync requests.
    #[must_use]
    pub fn gap_repair(&self) -> &GapRepairConfig {
        &self.gap_repair
    }

    /// Sets the `[gap_repair]` section.
    #[must_use]
    pub fn with_gap_repair(mut self, settings: GapRepairConfig) -> Self {
        self.gap_repair = settings;
        self
    }

    /// The retry policy of `cqrs_id`: the `[replica]` settings with the model's overrides.
    #[must_use]
    pub fn retry_policy(&self, cqrs_id: &str) -> RetryPolicy {
        let r = &self.replica;
        let m = self.models.get(cqrs_id).cloned().unwrap_or_default();
        let max = m.max_retries.unwrap_or(r.max_retries).0;
        let delay = Duration::from_secs_f64(m.retry_delay.unwrap_or(r.retry_delay));
        let backoff = match m.backoff.unwrap_or(r.backoff) {
            BackoffKind::Constant => Backoff::Constant(delay),
            BackoffKind::Exponential => Backoff::Exponential {
                initial: delay,
                factor: 2.0,
                max: Duration::from_secs_f64(m.retry_delay_max.unwrap_or(r.retry_delay_max)),
                jitter: m.jitter.unwrap_or(r.jitter),
            },
        };
        RetryPolicy::default()
            .with_max_retries(max)
            .with_backoff(backoff)
    }

    /// Sets the `[rabbitmq]` options table.
    #[must_use]
    pub fn with_rabbitmq_options(mut self, options: toml::Table) -> Self {
        self.rabbitmq = Some(options);
        self
    }

    /// Sets the `[redis]` options table.
    #[must_use]
    pub fn with_redis_options(mut self, options: toml::Table) -> Self {
        self.redis = Some(options);
        self
    }

    /// Sets `master.publish_window`.
    #[must_use]
    pub fn with_publish_window(mut self, window: u32) -> Self {
        self.master.publish_window = window;
        self
    }

    /// Sets `master.outbox_poll_interval`.
    #[must_use]
    pub fn with_outbox_poll_interval(mut self, interval: Duration) -> Self {
        self.master.outbox_poll_interval = interval.as_secs_f64();
        self
    }

    /// Sets `master.outbox_lease_ttl`.
    #[must_use]
    pub fn with_outbox_lease_ttl(mut self, ttl: Duration) -> Self {
        self.master.outbox_lease_ttl = ttl.as_secs_f64();
        self
    }

    /// Sets the broker URL.
    #[must_use]
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.url = SecretUrl::new(url);
        self
    }

    /// Sets the exchange.
    #[must_use]
    pub fn with_exchange(mut self, exchange: impl Into<String>) -> Self {
        self.exchange = exchange.into();
        self
    }

    /// Sets this replica's queue.
    #[must_use]
    pub fn with_queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Sets the dead-letter queue name.
    #[must_use]
    pub fn with_dead_letter_queue(mut self, queue: impl Into<String>) -> Self {
        self.replica.dead_letter_queue = Some(queue.into());
        self
    }

    /// Sets the codec masters publish with.
    #[must_use]
    pub fn with_codec(mut self, codec: CodecName) -> Self {
        self.codec = codec;
        self
    }

    /// Sets the master message TTL (`None` = never expires).
    #[must_use]
    pub fn with_message_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.master.message_ttl = Ttl(ttl);
        self
    }

    /// Sets the replica retry limit (`None` = for ever).
    #[must_use]
    pub fn with_max_retries(mut self, max: Option<u32>) -> Self {
        self.replica.max_retries = MaxRetries(max);
        self
    }

    /// Sets the replica retry delay.
    #[must_use]
    pub fn with_retry_delay(mut self, delay: Duration) -> Self {
        self.replica.retry_delay = delay.as_secs_f64();
        self
    }

    /// Sets the dead-message TTL (`None` = keep for ever).
    #[must_use]
    pub fn with_dead_message_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.replica.dead_message_ttl = Ttl(ttl);
        self
    }

    /// Sets the number of ReplicaApply workers.
    #[must_use]
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.replica.workers = workers;
        self
    }

    /// Sets the batch size of a worker.
    #[must_use]
    pub fn with_batch_size(mut self, size: usize) -> Self {
        self.replica.batch_size = size;
        self
    }

    /// Sets the consumer prefetch.
    #[must_use]
    pub fn with_prefetch(mut self, prefetch: u32) -> Self {
        self.replica.prefetch = prefetch;
        self
    }

    /// Sets per-CQRS-id overrides.
    #[must_use]
    pub fn with_model(mut self, cqrs_id: impl Into<String>, model: ModelConfig) -> Self {
        self.models.insert(cqrs_id.into(), model);
        self
    }
}

/// Checks the retry numbers of `section` (`replica` or `models.<id>`); the error names the key.
fn check_retry_numbers(
    section: &str,
    delay: Option<f64>,
    max: Option<f64>,
    jitter: Option<f64>,
) -> Result<()> {
    let finite_non_negative = |v: f64| v.is_finite() && v >= 0.0;
    if delay.is_some_and(|d| !finite_non_negative(d) || d > 1e9) {
        return Err(Error::config(
            &format!("{section}.retry_delay"),
            "must be a number of seconds ≥ 0",
        ));
    }
    if max.is_some_and(|d| !finite_non_negative(d) || d > 1e9) {
        return Err(Error::config(
            &format!("{section}.retry_delay_max"),
            "must be a number of seconds ≥ 0",
        ));
    }
    if jitter.is_some_and(|j| !(0.0..=1.0).contains(&j)) {
        return Err(Error::config(
            &format!("{section}.jitter"),
            "must be between 0.0 and 1.0",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_django_cqrs_defaults() {
        let c = CqrsConfig::default();
        assert_eq!(c.exchange(), "cqrs");
        assert_eq!(c.master().message_ttl(), Some(Duration::from_secs(86_400)));
        assert_eq!(
            c.replica().dead_message_ttl(),
            Some(Duration::from_secs(864_000))
        );
        assert_eq!(c.retry_policy("x"), RetryPolicy::default());
        assert_eq!(
            c.clone().with_queue("q").dead_letter_queue().as_deref(),
            Some("dead_letter_q")
        );
    }

    #[test]
    fn passwords_never_print() {
        let c = CqrsConfig::default().with_url("amqps://svc:s3cr3t@broker:5671/vh?heartbeat=10");
        let shown = format!("{c:?} {}", c.url());
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(
            shown.contains("amqps://svc:****@broker:5671/vh?heartbeat=10"),
            "{shown}"
        );
        assert_eq!(
            c.url().expose(),
            "amqps://svc:s3cr3t@broker:5671/vh?heartbeat=10"
        );
        assert_eq!(
            SecretUrl::new("redis://127.0.0.1:6379/0").redacted(),
            "redis://127.0.0.1:6379/0"
        );
    }
}
