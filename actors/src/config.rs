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
//! ```
//!
//! Environment variables override the file: `CQRS_<KEY>` for top-level keys and
//! `CQRS_<SECTION>__<KEY>` below (double underscore), e.g. `CQRS_QUEUE=billing`,
//! `CQRS_REPLICA__MAX_RETRIES=5`, `CQRS_MODELS__AUTHOR__RETRY_DELAY=0.5`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::retry::{Backoff, RetryPolicy};
pub use crate::secret_url::SecretUrl;

/// A time to live: seconds, or `"never"` in files (`None` here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl(pub Option<Duration>);

impl Serialize for Ttl {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self.0 {
            Some(d) => s.serialize_u64(d.as_secs()),
            None => s.serialize_str("never"),
        }
    }
}

impl<'de> Deserialize<'de> for Ttl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Word(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(0) => Err(serde::de::Error::custom(
                "a TTL must be at least 1 second, or \"never\"",
            )),
            Raw::Secs(n) => Ok(Ttl(Some(Duration::from_secs(n)))),
            Raw::Word(w) if w.eq_ignore_ascii_case("never") || w.eq_ignore_ascii_case("none") => {
                Ok(Ttl(None))
            }
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "expected seconds or \"never\", got {w:?}"
            ))),
        }
    }
}

/// A retry limit: a count, or `"forever"` in files (`None` here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxRetries(pub Option<u32>);

impl Serialize for MaxRetries {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self.0 {
            Some(n) => s.serialize_u32(n),
            None => s.serialize_str("forever"),
        }
    }
}

impl<'de> Deserialize<'de> for MaxRetries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(u32),
            Word(String),
        }
        match Raw::deserialize(d)? {
            Raw::Count(n) => Ok(MaxRetries(Some(n))),
            Raw::Word(w) if w.eq_ignore_ascii_case("forever") || w.eq_ignore_ascii_case("none") => {
                Ok(MaxRetries(None))
            }
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "expected a count or \"forever\", got {w:?}"
            ))),
        }
    }
}

/// The body format masters publish with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CodecName {
    /// JSON, readable by django-cqrs.
    #[default]
    Json,
    /// MessagePack, for meshes without Python consumers.
    Msgpack,
}

impl From<CodecName> for Codec {
    fn from(c: CodecName) -> Self {
        match c {
            CodecName::Json => Codec::Json,
            CodecName::Msgpack => Codec::MessagePack,
        }
    }
}

/// How the retry delay grows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackoffKind {
    /// `retry_delay` every time.
    #[default]
    Constant,
    /// `retry_delay`, doubling, capped at `retry_delay_max`, with `jitter`.
    Exponential,
}

/// The `[master]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MasterConfig {
    message_ttl: Ttl,
    publish_window: u32,
    outbox_poll_interval: f64,
    outbox_lease_ttl: f64,
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

/// Retry settings, at the `[replica]` level or per model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_retries: Option<MaxRetries>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_delay: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backoff: Option<BackoffKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_delay_max: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jitter: Option<f64>,
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
}

/// The `[replica]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicaConfig {
    max_retries: MaxRetries,
    retry_delay: f64,
    backoff: BackoffKind,
    retry_delay_max: f64,
    jitter: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    dead_letter_queue: Option<String>,
    dead_message_ttl: Ttl,
    workers: usize,
    batch_size: usize,
    batch_linger_ms: u64,
    prefetch: u32,
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

/// The whole configuration. See the [module docs](self) for the file format.
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
            rabbitmq: None,
            redis: None,
        }
    }
}

impl CqrsConfig {
    /// Reads a TOML document (no environment), validated.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let config: Self =
            toml::from_str(text).map_err(|e| Error::config("config", e.message()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads the TOML file at `path` (if any), then the process's `CQRS_*` environment
    /// variables over it, and validates the result.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| Error::config("config file", format!("{}: {e}", p.display())))?,
            None => String::new(),
        };
        Self::from_sources(&text, std::env::vars())
    }

    /// Reads a TOML document and `CQRS_*` variables from `env` over it, validated.
    pub fn from_sources(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| Error::config("config", e.message()))?;
        for (name, raw) in env {
            let Some(rest) = name.strip_prefix("CQRS_") else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            if path.iter().any(String::is_empty) {
                return Err(Error::config(&name, "empty key segment"));
            }
            insert_path(&mut table, &path, parse_env_value(&raw))
                .map_err(|m| Error::config(&name, m))?;
        }
        let merged = toml::to_string(&table).map_err(|e| Error::config("config", e))?;
        let config: Self = toml::from_str(&merged).map_err(|e| {
            let key = e
                .span()
                .map_or_else(|| "config".to_owned(), |span| key_at(&merged, span.start));
            Error::config(&key, e.message())
        })?;
        config.validate()?;
        Ok(config)
    }

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

    /// Whether `[models.<cqrs_id>]` sets anything for this id.
    #[must_use]
    pub fn has_model_settings(&self, cqrs_id: &str) -> bool {
        self.models
            .get(cqrs_id)
            .is_some_and(|m| *m != ModelConfig::default())
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

/// The dotted key (`section.key`) of the TOML line that holds byte `offset`.
fn key_at(doc: &str, offset: usize) -> String {
    let mut section = String::new();
    let mut consumed = 0;
    for line in doc.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            section = name.trim().to_owned();
        }
        let end = consumed + line.len();
        if offset <= end {
            if let Some((key, _)) = trimmed.split_once('=') {
                let key = key.trim().trim_matches('"');
                return if section.is_empty() {
                    key.to_owned()
                } else {
                    format!("{section}.{key}")
                };
            }
            return if section.is_empty() {
                "config".to_owned()
            } else {
                section
            };
        }
        consumed = end + 1;
    }
    "config".to_owned()
}

fn parse_env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn insert_path(
    table: &mut toml::Table,
    path: &[String],
    value: toml::Value,
) -> std::result::Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty key")?;
    let mut current = table;
    for key in parents {
        let entry = current
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| format!("{key} is not a section"))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

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
    fn file_then_environment() {
        let file = r#"
            url = "amqp://guest:guest@127.0.0.1:5672/%2f"
            queue = "billing"
            [master]
            message_ttl = "never"
            [replica]
            max_retries = 3
            retry_delay = 0.5
            [models.author]
            max_retries = "forever"
            backoff = "exponential"
        "#;
        let c = CqrsConfig::from_sources(
            file,
            env(&[
                ("CQRS_QUEUE", "orders"),
                ("CQRS_REPLICA__WORKERS", "8"),
                ("HOME", "/root"),
                ("CQRS_MODELS__BOOK__RETRY_DELAY", "1.5"),
            ]),
        )
        .unwrap();
        assert_eq!(c.queue(), Some("orders"));
        assert_eq!(c.replica().workers(), 8);
        assert_eq!(c.master().message_ttl(), None);
        assert_eq!(
            c.retry_policy("other"),
            RetryPolicy::constant(3, Duration::from_millis(500))
        );
        assert_eq!(c.retry_policy("author").max_retries(), None);
        assert!(matches!(
            c.retry_policy("author").backoff(),
            Backoff::Exponential { .. }
        ));
        assert_eq!(
            c.retry_policy("book"),
            RetryPolicy::constant(3, Duration::from_millis(1500))
        );
    }

    #[test]
    fn errors_name_the_key() {
        let err = CqrsConfig::from_sources("", env(&[("CQRS_REPLICA__WORKRES", "2")])).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("workres"), "{err}");
        let err = CqrsConfig::from_toml_str("[replica]\nworkers = 0").unwrap_err();
        assert!(err.to_string().contains("replica.workers"), "{err}");
        let err = CqrsConfig::from_toml_str("[replica]\nmax_retries = \"often\"").unwrap_err();
        assert!(
            err.to_string().contains("max_retries") || err.to_string().contains("often"),
            "{err}"
        );
        let err = CqrsConfig::from_toml_str("url = \"http://x\"").unwrap_err();
        assert!(err.to_string().starts_with("config: url"), "{err}");
        let err = CqrsConfig::from_toml_str("[models.a]\njitter = 2.0").unwrap_err();
        assert!(err.to_string().contains("models.a.jitter"), "{err}");
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
