//! [`RabbitMqConfig`]: where the broker is and how the transport uses it, parsed from an
//! `amqp://` or `amqps://` URL.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use cqrs_actors::{Error, Result};
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};

use super::confirm::Limits;
use crate::tls::{TLS_OPTIONS, TlsFiles};
use crate::url::{OptionValue, UrlParts, decode, split_host_port};

/// The kind of queue the transport declares for replica, dead-letter and parking queues.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum QueueType {
    /// A classic durable queue with no arguments, exactly what django-cqrs declares, so a
    /// Rust replica can take over a queue a Python replica declared and the reverse.
    #[default]
    Classic,
    /// A replicated quorum queue (`x-queue-type = quorum`).
    Quorum,
}

/// How the RabbitMQ transport connects and behaves.
///
/// Built from a service's [`CqrsConfig`](cqrs_actors::CqrsConfig) with
/// [`RabbitMqConfig::from_cqrs_config`], so that the URL and the exchange exist once: the
/// `url` is `amqp[s]://user:password@host:port/vhost?heartbeat=30&connection_name=billing`
/// (the virtual host is the percent-decoded path, `/%2f` and an empty path both mean `/`;
/// `heartbeat` in seconds, `connection_timeout` in milliseconds and `connection_name` come from
/// the query; `amqps://` needs the `rabbitmq-tls` feature), the exchange is `exchange`, the
/// publish window `master.publish_window`, and the `[rabbitmq]` table (or
/// `CQRS_RABBITMQ__<KEY>` variables) sets the rest: `queue_type` (`"classic"` or `"quorum"`),
/// `consumers`, `publish_timeout` (seconds), `publish_attempts`, `bind_only` (CQRS ids),
/// `park_tiers` (seconds), `reconnect_min` and `reconnect_max` (seconds), and for `amqps://`
/// `tls_ca_file`, `tls_cert_file` and `tls_key_file` (see
/// [`with_tls_ca_file`](Self::with_tls_ca_file) and
/// [`with_tls_client_cert`](Self::with_tls_client_cert)).
///
/// ```
/// use cqrs_actors::CqrsConfig;
/// use cqrs_transports::rabbitmq::{QueueType, RabbitMqConfig};
/// let service = CqrsConfig::from_toml_str(
///     "url = \"amqp://svc:secret@127.0.0.1:5672/%2f?heartbeat=10\"\n\
///      [rabbitmq]\nqueue_type = \"quorum\"\nconsumers = 2",
/// )?;
/// let config = RabbitMqConfig::from_cqrs_config(&service)?;
/// assert_eq!(config.queue_type(), QueueType::Quorum);
/// assert!(!format!("{config:?}").contains("secret"));
/// # Ok::<(), cqrs_actors::Error>(())
/// ```
#[derive(Clone)]
pub struct RabbitMqConfig {
    tls: bool,
    tls_files: TlsFiles,
    user: String,
    password: String,
    host: String,
    port: u16,
    vhost: String,
    heartbeat: Option<u16>,
    connection_timeout: Option<Duration>,
    connection_name: Option<String>,
    exchange: String,
    queue_type: QueueType,
    publish_window: usize,
    publish_timeout: Duration,
    publish_attempts: u32,
    consumers: usize,
    bind_only: Option<Vec<String>>,
    park_tiers: Vec<Duration>,
    reconnect_min: Duration,
    reconnect_max: Duration,
}

impl fmt::Debug for RabbitMqConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitMqConfig")
            .field("url", &self.redacted_url())
            .field("tls_files", &self.tls_files)
            .field("connection_timeout", &self.connection_timeout)
            .field("connection_name", &self.connection_name)
            .field("exchange", &self.exchange)
            .field("queue_type", &self.queue_type)
            .field("publish_window", &self.publish_window)
            .field("publish_timeout", &self.publish_timeout)
            .field("publish_attempts", &self.publish_attempts)
            .field("consumers", &self.consumers)
            .field("bind_only", &self.bind_only)
            .field("park_tiers", &self.park_tiers)
            .finish_non_exhaustive()
    }
}

/// The parking tiers used when none are configured: each is one queue with that TTL.
const DEFAULT_TIERS_MS: [u64; 10] = [
    100, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 300_000, 1_800_000,
];

impl RabbitMqConfig {
    /// Parses an `amqp://` or `amqps://` URL. Missing parts default to `guest:guest`,
    /// `localhost`, port 5672 (5671 for `amqps`) and the virtual host `/`.
    ///
    /// lapin's own `AMQPUri` parser is not used: its errors quote the whole URL (`Invalid URL:
    /// '...'`) and its `Debug` prints the password, while these errors name the part and quote
    /// no user or password.
    pub(crate) fn from_url(url: &str) -> Result<Self> {
        let parts = UrlParts::split(url, "amqp://... or amqps://...")?;
        let tls = parts.tls(
            "amqp",
            "amqps",
            cfg!(feature = "rabbitmq-tls"),
            "rabbitmq-tls",
        )?;
        let (user, password) = parts
            .userinfo
            .clone()
            .unwrap_or_else(|| ("guest".to_owned(), "guest".to_owned()));
        let default_port = if tls { 5671 } else { 5672 };
        let (host, port) = split_host_port(parts.hostport, default_port)?;
        let vhost = match decode(parts.path, "url virtual host")? {
            v if v.is_empty() => "/".to_owned(),
            v => v,
        };
        let mut config = Self {
            tls,
            user,
            password,
            host,
            port,
            vhost,
            ..Self::default()
        };
        for pair in parts.query_pairs() {
            let (key, value) = pair?;
            match key {
                "heartbeat" => {
                    config.heartbeat = Some(value.parse().map_err(|e| {
                        Error::config("url heartbeat", format!("{value:?} is not seconds: {e}"))
                    })?);
                }
                "connection_timeout" => {
                    let ms: u64 = value.parse().map_err(|e| {
                        Error::config(
                            "url connection_timeout",
                            format!("{value:?} is not milliseconds: {e}"),
                        )
                    })?;
                    config.connection_timeout = Some(Duration::from_millis(ms));
                }
                "connection_name" => config.connection_name = Some(value),
                other => {
                    return Err(Error::config(
                        "url",
                        format!(
                            "unknown query parameter {other:?} (known: heartbeat, connection_timeout, connection_name)"
                        ),
                    ));
                }
            }
        }
        Ok(config)
    }

    /// The transport a service's [`CqrsConfig`](cqrs_actors::CqrsConfig) describes: its `url`
    /// (`amqp://` or `amqps://`), `exchange`, `master.publish_window` and `[rabbitmq]` options.
    /// An unknown option or a value of the wrong type is an error naming `rabbitmq.<key>`.
    pub fn from_cqrs_config(config: &cqrs_actors::CqrsConfig) -> Result<Self> {
        let mut out = Self::from_url(config.url().expose())?;
        out.exchange = config.exchange().to_owned();
        out.publish_window = (config.master().publish_window() as usize).max(1);
        if let Some(options) = config.transport_options("rabbitmq") {
            out = out.with_options(options)?;
        }
        out.tls_files.check("rabbitmq", out.tls, "amqps")?;
        Ok(out)
    }

    fn with_options(mut self, options: &toml::Table) -> Result<Self> {
        for (key, value) in options {
            let v = OptionValue::new("rabbitmq", key, value);
            if self.tls_files.set_option(key, &v)? {
                continue;
            }
            self = match key.as_str() {
                "queue_type" => match value.as_str() {
                    Some("classic") => self.with_queue_type(QueueType::Classic),
                    Some("quorum") => self.with_queue_type(QueueType::Quorum),
                    _ => return Err(v.wrong("\"classic\" or \"quorum\"")),
                },
                "consumers" => self.with_consumers(v.count()? as usize),
                "publish_timeout" => self.with_publish_timeout(v.seconds()?),
                "publish_attempts" => self.with_publish_attempts(v.count()?),
                "bind_only" => self.with_bind_only(v.strings()?),
                "park_tiers" => {
                    let tiers = value
                        .as_array()
                        .ok_or_else(|| v.wrong("a list of seconds"))?
                        .iter()
                        .map(|t| v.seconds_of(t))
                        .collect::<Result<Vec<_>>>()?;
                    self.with_park_tiers(tiers)
                }
                "reconnect_min" => {
                    let max = self.reconnect_max;
                    self.with_reconnect_backoff(v.seconds()?, max)
                }
                "reconnect_max" => {
                    let min = self.reconnect_min;
                    self.with_reconnect_backoff(min, v.seconds()?)
                }
                _ => {
                    return Err(Error::config(
                        &v.name,
                        format!(
                            "unknown option; known: queue_type, consumers, publish_timeout, \
                             publish_attempts, bind_only, park_tiers, reconnect_min, \
                             reconnect_max, {TLS_OPTIONS}"
                        ),
                    ));
                }
            };
        }
        Ok(self)
    }

    /// Classic (default, as django-cqrs) or quorum queues.
    #[must_use]
    pub fn with_queue_type(mut self, queue_type: QueueType) -> Self {
        self.queue_type = queue_type;
        self
    }

    /// How long a publish keeps trying across reconnects before it fails (default 60 s).
    #[must_use]
    pub fn with_publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// How many lost connections a publish may be the oldest unconfirmed message of before it
    /// fails to its caller (default 3). RabbitMQ answers some publishes by closing the channel
    /// or connection; without this bound such a message would be written again after every
    /// reconnect and hold up everything behind it. A broker restart counts once.
    #[must_use]
    pub fn with_publish_attempts(mut self, attempts: u32) -> Self {
        self.publish_attempts = attempts.max(1);
        self
    }

    /// Consumers (each on its own channel) per subscription, like `cqrs_consume -w N`
    /// (default 1). More than one gives up the broker's order within the queue; the revision
    /// rules of the replica keep the result right.
    #[must_use]
    pub fn with_consumers(mut self, consumers: usize) -> Self {
        self.consumers = consumers.max(1);
        self
    }

    /// Binds only these CQRS ids when a replica declares its queue (`cqrs_consume --cqrs-id`);
    /// by default every registered replica model is bound.
    #[must_use]
    pub fn with_bind_only(mut self, cqrs_ids: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.bind_only = Some(cqrs_ids.into_iter().map(Into::into).collect());
        self
    }

    /// The parking tiers: one queue per duration, each with that message TTL. A retry delay
    /// is rounded up to the next tier; a longer one is parked again at the top tier until due.
    #[must_use]
    pub fn with_park_tiers(mut self, tiers: impl IntoIterator<Item = Duration>) -> Self {
        let mut tiers: Vec<Duration> = tiers.into_iter().filter(|d| d.as_millis() > 0).collect();
        tiers.sort_unstable();
        tiers.dedup();
        if !tiers.is_empty() {
            self.park_tiers = tiers;
        }
        self
    }

    /// The first and the largest pause between reconnect attempts (default 100 ms and 10 s).
    #[must_use]
    pub fn with_reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min = min;
        self.reconnect_max = max.max(min);
        self
    }

    /// Trusts only the CA certificates of this PEM bundle for `amqps://` (option
    /// `tls_ca_file`): the broker's certificate must chain to one of them, and the system's
    /// roots are not consulted. Without it the system's roots are used. The name checked is
    /// the URL's host.
    ///
    /// ```
    /// use cqrs_actors::CqrsConfig;
    /// use cqrs_transports::rabbitmq::RabbitMqConfig;
    /// # fn config() -> cqrs_actors::Result<RabbitMqConfig> {
    /// let service = CqrsConfig::default().with_url("amqps://svc:secret@broker.internal/billing");
    /// let config = RabbitMqConfig::from_cqrs_config(&service)?
    ///     .with_tls_ca_file("/etc/cqrs/ca.pem")
    ///     .with_tls_client_cert("/etc/cqrs/client.pem", "/etc/cqrs/client.key");
    /// # Ok(config)
    /// # }
    /// ```
    ///
    /// The files are read at each connection; a file that is missing, unreadable or not PEM
    /// fails [`RabbitMqTransport::connect`](super::RabbitMqTransport::connect) with
    /// [`ErrorKind::Config`](cqrs_actors::ErrorKind::Config) naming the setting and the path.
    #[must_use]
    pub fn with_tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_files.ca_file = Some(path.into());
        self
    }

    /// Presents this client certificate (a PEM chain, the client's certificate first) and
    /// its private key (PEM: PKCS#8, PKCS#1 or SEC1) over `amqps://` (options `tls_cert_file`
    /// and `tls_key_file`), for brokers that verify clients (`ssl_options.verify =
    /// verify_peer`). Logging in stays SASL PLAIN with the URL's user and password.
    #[must_use]
    pub fn with_tls_client_cert(
        mut self,
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
    ) -> Self {
        self.tls_files.cert_file = Some(cert_file.into());
        self.tls_files.key_file = Some(key_file.into());
        self
    }

    /// The exchange name.
    #[must_use]
    pub fn exchange(&self) -> &str {
        &self.exchange
    }

    /// The queue type.
    #[must_use]
    pub fn queue_type(&self) -> QueueType {
        self.queue_type
    }

    /// The virtual host.
    #[must_use]
    pub fn vhost(&self) -> &str {
        &self.vhost
    }

    /// The URL with the password replaced by `****`.
    #[must_use]
    pub fn redacted_url(&self) -> String {
        let scheme = if self.tls { "amqps" } else { "amqp" };
        let mut url = format!(
            "{scheme}://{}:****@{}:{}/{}",
            self.user,
            self.host,
            self.port,
            encode_vhost(&self.vhost)
        );
        if let Some(h) = self.heartbeat {
            url.push_str(&format!("?heartbeat={h}"));
        }
        url
    }

    pub(crate) fn publish_limits(&self) -> Limits {
        Limits {
            window: self.publish_window,
            timeout: self.publish_timeout,
            attempts: self.publish_attempts,
        }
    }

    pub(crate) fn publish_timeout(&self) -> Duration {
        self.publish_timeout
    }

    pub(crate) fn consumers(&self) -> usize {
        self.consumers
    }

    pub(crate) fn bind_only(&self) -> Option<&[String]> {
        self.bind_only.as_deref()
    }

    pub(crate) fn park_tiers(&self) -> &[Duration] {
        &self.park_tiers
    }

    pub(crate) fn reconnect_backoff(&self) -> (Duration, Duration) {
        (self.reconnect_min, self.reconnect_max)
    }

    pub(crate) fn connection_name(&self) -> Option<&str> {
        self.connection_name.as_deref()
    }

    /// The TLS connector of an `amqps://` URL (`None` for `amqp://`), from the files read
    /// now: the given CA only, else the system's roots, and the client certificate if set.
    #[cfg(feature = "rabbitmq-tls")]
    pub(crate) fn tls_connector(&self) -> Result<Option<lapin::tcp::RustlsConnector>> {
        use lapin::tcp::RustlsConnectorConfig;
        self.tls_files.check("rabbitmq", self.tls, "amqps")?;
        if !self.tls {
            return Ok(None);
        }
        let material = self.tls_files.load("rabbitmq")?;
        let roots = match material.roots {
            Some((_, certs)) => RustlsConnectorConfig::default().with_parsable_certificates(certs),
            None => RustlsConnectorConfig::new_with_native_certs().map_err(|e| {
                Error::with_source(
                    cqrs_actors::ErrorKind::Config,
                    "rabbitmq.tls_ca_file: not set, and the system's CA certificates cannot be read",
                    e,
                )
            })?,
        };
        let connector = match material.identity {
            Some(id) => roots.connector_with_single_cert(id.chain, id.key),
            None => roots.connector_with_no_client_auth(),
        };
        connector.map(Some).map_err(|e| {
            Error::with_source(
                cqrs_actors::ErrorKind::Config,
                "rabbitmq: no TLS client from the tls_* files",
                e,
            )
        })
    }

    /// The user and password, for SASL PLAIN.
    pub(crate) fn credentials(&self) -> (&str, &str) {
        (&self.user, &self.password)
    }

    /// The URI lapin connects to, without the password: lapin's TCP layer traces the URI it
    /// is given, so the password travels only through the SASL provider (see `link.rs`).
    pub(crate) fn amqp_uri(&self) -> AMQPUri {
        AMQPUri {
            scheme: if self.tls {
                AMQPScheme::AMQPS
            } else {
                AMQPScheme::AMQP
            },
            authority: AMQPAuthority {
                userinfo: AMQPUserInfo {
                    username: self.user.clone(),
                    password: String::new(),
                },
                host: self.host.clone(),
                port: self.port,
            },
            vhost: self.vhost.clone(),
            query: AMQPQueryString {
                heartbeat: self.heartbeat,
                connection_timeout: self
                    .connection_timeout
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                ..AMQPQueryString::default()
            },
        }
    }
}

impl Default for RabbitMqConfig {
    /// `amqp://guest:guest@localhost:5672/%2f`, exchange `cqrs`, classic queues.
    fn default() -> Self {
        Self {
            tls: false,
            tls_files: TlsFiles::default(),
            user: "guest".to_owned(),
            password: "guest".to_owned(),
            host: "localhost".to_owned(),
            port: 5672,
            vhost: "/".to_owned(),
            heartbeat: None,
            connection_timeout: None,
            connection_name: None,
            exchange: "cqrs".to_owned(),
            queue_type: QueueType::Classic,
            publish_window: 1000,
            publish_timeout: Duration::from_secs(60),
            publish_attempts: 3,
            consumers: 1,
            bind_only: None,
            park_tiers: DEFAULT_TIERS_MS
                .iter()
                .map(|ms| Duration::from_millis(*ms))
                .collect(),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(10),
        }
    }
}

fn encode_vhost(vhost: &str) -> String {
    vhost.replace('%', "%25").replace('/', "%2f")
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_actors::ErrorKind;

    #[test]
    fn every_part_of_the_url_is_read() {
        let c = RabbitMqConfig::from_url(
            "amqp://svc:p%40ss@broker.local:5673/billing%2Fprod?heartbeat=15&connection_name=svc-1&connection_timeout=2500",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let uri = c.amqp_uri();
        assert_eq!(uri.authority.userinfo.username, "svc");
        assert_eq!(c.credentials(), ("svc", "p@ss"));
        assert_eq!(
            uri.authority.userinfo.password, "",
            "the password stays out of the URI"
        );
        assert_eq!(uri.authority.host, "broker.local");
        assert_eq!(uri.authority.port, 5673);
        assert_eq!(uri.vhost, "billing/prod");
        assert_eq!(uri.query.heartbeat, Some(15));
        assert_eq!(uri.query.connection_timeout, Some(2500));
        assert_eq!(c.connection_name(), Some("svc-1"));
        assert_eq!(uri.scheme, AMQPScheme::AMQP);
    }

    #[test]
    fn defaults_follow_the_amqp_conventions() {
        for url in [
            "amqp://localhost",
            "amqp://localhost/",
            "amqp://localhost/%2f",
        ] {
            let c = RabbitMqConfig::from_url(url).unwrap_or_else(|e| panic!("{e}"));
            let uri = c.amqp_uri();
            assert_eq!(uri.vhost, "/", "{url}");
            assert_eq!(uri.authority.port, 5672);
            assert_eq!(uri.authority.userinfo.username, "guest");
        }
        let c =
            RabbitMqConfig::from_url("amqp://u:p@[::1]:5000/vh").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.amqp_uri().authority.host, "::1");
        assert_eq!(c.amqp_uri().authority.port, 5000);
    }

    #[test]
    fn the_password_never_shows() {
        let c = RabbitMqConfig::from_url("amqp://svc:hunter2@h/vh?heartbeat=5")
            .unwrap_or_else(|e| panic!("{e}"));
        let debug = format!("{c:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(
            debug.contains("amqp://svc:****@h:5672/vh?heartbeat=5"),
            "{debug}"
        );
    }

    #[test]
    fn bad_urls_are_config_errors() {
        for url in [
            "http://h/",
            "amqp://h/?heartbeat=abc",
            "amqp://h:notaport/",
            "amqp://h/?unknown=1",
            "amqp://h/%zz",
            "no scheme",
            "amqp://svc:S3cret/Pw@host/vh",
            "amqp://svc:a#b@host/vh",
            "amqp://svc:a?b@host/vh",
        ] {
            let err = RabbitMqConfig::from_url(url).expect_err(url);
            assert_eq!(err.kind(), ErrorKind::Config, "{url}");
        }
    }

    #[test]
    fn amqps_needs_the_tls_feature() {
        let result = RabbitMqConfig::from_url("amqps://u:p@h/");
        if cfg!(feature = "rabbitmq-tls") {
            let c = result.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(c.amqp_uri().scheme, AMQPScheme::AMQPS);
            assert_eq!(c.amqp_uri().authority.port, 5671);
        } else {
            assert_eq!(
                result.map(|_| ()).map_err(|e| e.kind()),
                Err(ErrorKind::Config)
            );
        }
    }

    #[test]
    fn a_service_configuration_gives_url_and_exchange() {
        let service = cqrs_actors::CqrsConfig::default()
            .with_url("amqp://svc:pw@broker/billing")
            .with_exchange("events");
        let c = RabbitMqConfig::from_cqrs_config(&service).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((c.exchange(), c.vhost()), ("events", "billing"));
        let memory = cqrs_actors::CqrsConfig::default();
        assert_eq!(
            RabbitMqConfig::from_cqrs_config(&memory)
                .map(|_| ())
                .map_err(|e| e.kind()),
            Err(ErrorKind::Config)
        );
    }

    #[test]
    fn tls_files_come_from_the_options_table_and_show_in_debug() {
        let service = cqrs_actors::CqrsConfig::from_toml_str(
            "url = \"amqps://svc:hunter2@broker/vh\"\n[rabbitmq]\n\
             tls_ca_file = \"/etc/cqrs/ca.pem\"\ntls_cert_file = \"/etc/cqrs/c.pem\"\n\
             tls_key_file = \"/etc/cqrs/c.key\"",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let result = RabbitMqConfig::from_cqrs_config(&service);
        if !cfg!(feature = "rabbitmq-tls") {
            let err = result.map(|_| ()).expect_err("amqps without the feature");
            assert_eq!(err.kind(), ErrorKind::Config);
            assert!(err.to_string().contains("rabbitmq-tls"), "{err}");
            return;
        }
        let c = result.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.tls_files.ca_file.as_deref(),
            Some(std::path::Path::new("/etc/cqrs/ca.pem"))
        );
        let built = RabbitMqConfig::from_url("amqps://svc:hunter2@broker/vh")
            .unwrap_or_else(|e| panic!("{e}"))
            .with_tls_ca_file("/etc/cqrs/ca.pem")
            .with_tls_client_cert("/etc/cqrs/c.pem", "/etc/cqrs/c.key");
        assert_eq!(c.tls_files, built.tls_files);
        let debug = format!("{c:?}");
        assert!(
            debug.contains("/etc/cqrs/c.key") && !debug.contains("hunter2"),
            "{debug}"
        );
        let plain = cqrs_actors::CqrsConfig::from_toml_str(
            "url = \"amqp://broker/vh\"\n[rabbitmq]\ntls_ca_file = \"/etc/cqrs/ca.pem\"",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let err = RabbitMqConfig::from_cqrs_config(&plain).expect_err("TLS files on amqp://");
        assert!(err.to_string().contains("rabbitmq.tls_ca_file"), "{err}");
    }

    #[test]
    fn tiers_are_sorted_and_deduplicated() {
        let c = RabbitMqConfig::default().with_park_tiers([
            Duration::from_secs(5),
            Duration::from_secs(1),
            Duration::from_secs(5),
            Duration::ZERO,
        ]);
        assert_eq!(
            c.park_tiers(),
            [Duration::from_secs(1), Duration::from_secs(5)]
        );
    }
}
