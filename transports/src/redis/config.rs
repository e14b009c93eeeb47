//! [`RedisConfig`]: where the server is and how the transport uses it, parsed from a
//! `redis://` or `rediss://` URL and the `[redis]` options.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use ::redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};
use cqrs_actors::{Error, Result};

use crate::tls::{TLS_OPTIONS, TlsFiles};
use crate::url::{OptionValue, UrlParts, decode, split_host_port};

/// Where a new consumer group of a CQRS id's stream starts reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GroupStart {
    /// At the end (`$`): the replica receives what is published from now on, like a new
    /// RabbitMQ queue.
    #[default]
    Latest,
    /// At the start (`0`): the replica also receives what the stream still retains, so a new
    /// replica can catch up (see `keep_acknowledged`).
    Earliest,
}

/// How the Redis Streams transport connects and behaves.
///
/// Built from a service's [`CqrsConfig`](cqrs_actors::CqrsConfig) with
/// [`RedisConfig::from_cqrs_config`]: the `url` is
/// `redis[s]://[user][:password@]host[:port][/db][?connection_timeout=ms]`
/// (`rediss://` needs the `redis-tls` feature), the exchange is `exchange` (it names the key
/// space), the publish window `master.publish_window`, the dead-letter TTL
/// `replica.dead_message_ttl`, and the `[redis]` table (or `CQRS_REDIS__<KEY>` variables) sets
/// the rest; see the README's Redis section for each option. For `rediss://`, `tls_ca_file`,
/// `tls_cert_file` and `tls_key_file` (see [`with_tls_ca_file`](Self::with_tls_ca_file) and
/// [`with_tls_client_cert`](Self::with_tls_client_cert)).
///
/// ```
/// use cqrs_actors::CqrsConfig;
/// use cqrs_transports::redis::RedisConfig;
/// let service = CqrsConfig::from_toml_str(
///     "url = \"redis://svc:secret@127.0.0.1:6379/2\"\n\
///      [redis]\nconsumers = 2\nclaim_idle = 10",
/// )?;
/// let config = RedisConfig::from_cqrs_config(&service)?;
/// assert_eq!(config.db(), 2);
/// assert!(!format!("{config:?}").contains("secret"));
/// # Ok::<(), cqrs_actors::Error>(())
/// ```
#[derive(Clone)]
pub struct RedisConfig {
    tls: bool,
    tls_files: TlsFiles,
    user: Option<String>,
    password: Option<String>,
    host: String,
    port: u16,
    db: i64,
    connection_timeout: Duration,
    pub(crate) exchange: String,
    pub(crate) key_prefix: String,
    pub(crate) publish_window: usize,
    pub(crate) publish_timeout: Duration,
    pub(crate) consumers: usize,
    pub(crate) consumer_name: String,
    pub(crate) block: Duration,
    pub(crate) claim_idle: Duration,
    pub(crate) max_deliveries: u32,
    pub(crate) group_start: GroupStart,
    pub(crate) bind_only: Option<Vec<String>>,
    pub(crate) route_cache: Duration,
    pub(crate) trim_interval: Duration,
    pub(crate) keep_acknowledged: bool,
    pub(crate) max_len: Option<u64>,
    pub(crate) max_age: Option<Duration>,
    pub(crate) trim_undelivered: bool,
    pub(crate) mover_interval: Duration,
    pub(crate) consumer_gc_idle: Duration,
    pub(crate) dead_message_ttl: Option<Duration>,
    pub(crate) wait_replicas: u32,
    pub(crate) wait_timeout: Duration,
    pub(crate) require_aof: bool,
    pub(crate) reconnect_min: Duration,
    pub(crate) reconnect_max: Duration,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.redacted_url())
            .field("tls_files", &self.tls_files)
            .field("exchange", &self.exchange)
            .field("key_prefix", &self.key_prefix)
            .field("publish_window", &self.publish_window)
            .field("consumers", &self.consumers)
            .field("consumer_name", &self.consumer_name)
            .field("claim_idle", &self.claim_idle)
            .field("max_deliveries", &self.max_deliveries)
            .field("group_start", &self.group_start)
            .field("keep_acknowledged", &self.keep_acknowledged)
            .field("max_len", &self.max_len)
            .field("max_age", &self.max_age)
            .field("trim_undelivered", &self.trim_undelivered)
            .field("wait_replicas", &self.wait_replicas)
            .finish_non_exhaustive()
    }
}

impl Default for RedisConfig {
    /// `redis://127.0.0.1:6379/0`, exchange `cqrs`, the defaults of every option.
    fn default() -> Self {
        Self {
            tls: false,
            tls_files: TlsFiles::default(),
            user: None,
            password: None,
            host: "127.0.0.1".to_owned(),
            port: 6379,
            db: 0,
            connection_timeout: Duration::from_secs(5),
            exchange: "cqrs".to_owned(),
            key_prefix: "cqrs".to_owned(),
            publish_window: 1000,
            publish_timeout: Duration::from_secs(60),
            consumers: 1,
            consumer_name: default_consumer_name(),
            block: Duration::from_secs(2),
            claim_idle: Duration::from_secs(30),
            max_deliveries: 10,
            group_start: GroupStart::Latest,
            bind_only: None,
            route_cache: Duration::from_secs(5),
            trim_interval: Duration::from_secs(5),
            keep_acknowledged: false,
            max_len: None,
            max_age: None,
            trim_undelivered: false,
            mover_interval: Duration::from_secs(1),
            consumer_gc_idle: Duration::from_secs(3600),
            dead_message_ttl: Some(Duration::from_secs(864_000)),
            wait_replicas: 0,
            wait_timeout: Duration::from_secs(1),
            require_aof: false,
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(10),
        }
    }
}

/// `<host>-<pid>`: stable across restarts of a container (same pod name, pid 1), distinct
/// between processes of one host.
fn default_consumer_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    format!("{host}-{}", std::process::id())
}

const KNOWN_OPTIONS: &str = "key_prefix, consumers, consumer_name, block, claim_idle, \
     max_deliveries, group_start, bind_only, route_cache, trim_interval, keep_acknowledged, \
     max_len, max_age, trim_undelivered, mover_interval, consumer_gc_idle, publish_timeout, \
     wait_replicas, wait_timeout, require_aof, reconnect_min, reconnect_max";

impl RedisConfig {
    /// Parses a `redis://` or `rediss://` URL. Missing parts default to no user, no password,
    /// `localhost`, port 6379 and database 0.
    pub(crate) fn from_url(url: &str) -> Result<Self> {
        let parts = UrlParts::split(url, "redis://... or rediss://...")?;
        let tls = parts.tls("redis", "rediss", cfg!(feature = "redis-tls"), "redis-tls")?;
        let (user, password) = match parts.userinfo.clone() {
            Some((u, p)) => (
                Some(u).filter(|u| !u.is_empty()),
                Some(p).filter(|p| !p.is_empty()),
            ),
            None => (None, None),
        };
        let (host, port) = split_host_port(parts.hostport, 6379)?;
        let db = match decode(parts.path, "url database")?.as_str() {
            "" => 0,
            d => d.parse::<i64>().ok().filter(|d| *d >= 0).ok_or_else(|| {
                Error::config("url database", "expected a database number from 0")
            })?,
        };
        let mut config = Self {
            tls,
            user,
            password,
            host,
            port,
            db,
            ..Self::default()
        };
        for pair in parts.query_pairs() {
            let (key, value) = pair?;
            match key {
                "connection_timeout" => {
                    let ms: u64 = value.parse().map_err(|e| {
                        Error::config(
                            "url connection_timeout",
                            format!("{value:?} is not milliseconds: {e}"),
                        )
                    })?;
                    config.connection_timeout = Duration::from_millis(ms.max(1));
                }
                other => {
                    return Err(Error::config(
                        "url",
                        format!("unknown query parameter {other:?} (known: connection_timeout)"),
                    ));
                }
            }
        }
        Ok(config)
    }

    /// The transport a service's [`CqrsConfig`](cqrs_actors::CqrsConfig) describes: its `url`
    /// (`redis://` or `rediss://`), `exchange`, `master.publish_window`,
    /// `replica.dead_message_ttl` and `[redis]` options. An unknown option or a value of the
    /// wrong type is an error naming `redis.<key>`.
    pub fn from_cqrs_config(config: &cqrs_actors::CqrsConfig) -> Result<Self> {
        let mut out = Self::from_url(config.url().expose())?;
        if config.exchange().is_empty() {
            return Err(Error::config(
                "exchange",
                "the Redis transport needs a non-empty exchange: it names the key space",
            ));
        }
        out.exchange = config.exchange().to_owned();
        out.publish_window = (config.master().publish_window() as usize).max(1);
        out.dead_message_ttl = config.replica().dead_message_ttl();
        if let Some(options) = config.transport_options("redis") {
            out = out.with_options(options)?;
        }
        out.tls_files.check("redis", out.tls, "rediss")?;
        Ok(out)
    }

    fn with_options(mut self, options: &toml::Table) -> Result<Self> {
        for (key, value) in options {
            let v = OptionValue::new("redis", key, value);
            if self.tls_files.set_option(key, &v)? {
                continue;
            }
            match key.as_str() {
                "key_prefix" => {
                    let prefix = v.string()?;
                    if prefix.is_empty() || prefix.contains(['{', '}']) {
                        return Err(v.wrong("a non-empty prefix without braces"));
                    }
                    self.key_prefix = prefix.to_owned();
                }
                "consumers" => self.consumers = v.count()? as usize,
                "consumer_name" => {
                    let name = v.string()?;
                    if name.is_empty() {
                        return Err(v.wrong("a non-empty name"));
                    }
                    self.consumer_name = name.to_owned();
                }
                "block" => self.block = v.seconds()?.max(Duration::from_millis(10)),
                "claim_idle" => self.claim_idle = v.seconds()?.max(Duration::from_millis(10)),
                "max_deliveries" => self.max_deliveries = v.count()?,
                "group_start" => {
                    self.group_start = match v.string()? {
                        "latest" => GroupStart::Latest,
                        "earliest" => GroupStart::Earliest,
                        _ => return Err(v.wrong("\"latest\" or \"earliest\"")),
                    }
                }
                "bind_only" => self.bind_only = Some(v.strings()?),
                "route_cache" => self.route_cache = v.seconds()?,
                "trim_interval" => {
                    self.trim_interval = v.seconds()?.max(Duration::from_millis(10));
                }
                "keep_acknowledged" => self.keep_acknowledged = v.boolean()?,
                "max_len" => self.max_len = Some(u64::from(v.count()?)),
                "max_age" => self.max_age = Some(v.seconds()?),
                "trim_undelivered" => self.trim_undelivered = v.boolean()?,
                "mover_interval" => {
                    self.mover_interval = v.seconds()?.max(Duration::from_millis(10));
                }
                "consumer_gc_idle" => self.consumer_gc_idle = v.seconds()?,
                "publish_timeout" => self.publish_timeout = v.seconds()?,
                "wait_replicas" => {
                    self.wait_replicas = value
                        .as_integer()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| v.wrong("a number of replicas from 0"))?;
                }
                "wait_timeout" => self.wait_timeout = v.seconds()?,
                "require_aof" => self.require_aof = v.boolean()?,
                "reconnect_min" => self.reconnect_min = v.seconds()?,
                "reconnect_max" => self.reconnect_max = v.seconds()?,
                _ => {
                    return Err(Error::config(
                        &v.name,
                        format!("unknown option; known: {KNOWN_OPTIONS}, {TLS_OPTIONS}"),
                    ));
                }
            }
        }
        self.reconnect_max = self.reconnect_max.max(self.reconnect_min);
        Ok(self)
    }

    /// Consumers (each with its own connection and consumer name) per subscription, like
    /// `cqrs_consume -w N` (default 1).
    #[must_use]
    pub fn with_consumers(mut self, consumers: usize) -> Self {
        self.consumers = consumers.max(1);
        self
    }

    /// The base of the consumer names (default `<host>-<pid>`); consumer `n` of a queue is
    /// `<name>-<n>`. A process that comes back under the same name takes its pending entries
    /// up again at once.
    #[must_use]
    pub fn with_consumer_name(mut self, name: impl Into<String>) -> Self {
        self.consumer_name = name.into();
        self
    }

    /// How long an entry may stay pending with a consumer before another takes it over
    /// (default 30 s).
    #[must_use]
    pub fn with_claim_idle(mut self, idle: Duration) -> Self {
        self.claim_idle = idle.max(Duration::from_millis(10));
        self
    }

    /// Deliveries after which an entry that is never settled goes to the dead-letter stream
    /// with reason `poison` (default 10).
    #[must_use]
    pub fn with_max_deliveries(mut self, max: u32) -> Self {
        self.max_deliveries = max.max(1);
        self
    }

    /// Where new consumer groups on CQRS id streams start (default [`GroupStart::Latest`]).
    #[must_use]
    pub fn with_group_start(mut self, start: GroupStart) -> Self {
        self.group_start = start;
        self
    }

    /// How often the trimmer runs (default 5 s).
    #[must_use]
    pub fn with_trim_interval(mut self, interval: Duration) -> Self {
        self.trim_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// The retention: keep acknowledged entries (for replicas that start from the
    /// beginning) up to `max_len` entries and `max_age`; `trim_undelivered` lets the bounds cut
    /// entries some group has not read or acknowledged yet (a bounded stream, at the price of
    /// losing them). By default acknowledged entries are trimmed and nothing else is.
    #[must_use]
    pub fn with_retention(
        mut self,
        keep_acknowledged: bool,
        max_len: Option<u64>,
        max_age: Option<Duration>,
        trim_undelivered: bool,
    ) -> Self {
        self.keep_acknowledged = keep_acknowledged;
        self.max_len = max_len;
        self.max_age = max_age;
        self.trim_undelivered = trim_undelivered;
        self
    }

    /// How long a publish keeps trying across reconnects before it fails (default 60 s).
    #[must_use]
    pub fn with_publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// Binds only these CQRS ids when a replica declares its queue; by default every
    /// registered replica model is bound.
    #[must_use]
    pub fn with_bind_only(mut self, cqrs_ids: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.bind_only = Some(cqrs_ids.into_iter().map(Into::into).collect());
        self
    }

    /// Trusts only the CA certificates of this PEM bundle for `rediss://` (option
    /// `tls_ca_file`): the server's certificate must chain to one of them, and the system's
    /// roots are not consulted. Without it the system's roots are used. The name checked is
    /// the URL's host.
    ///
    /// ```
    /// use cqrs_actors::CqrsConfig;
    /// use cqrs_transports::redis::RedisConfig;
    /// # fn config() -> cqrs_actors::Result<RedisConfig> {
    /// let service = CqrsConfig::default().with_url("rediss://:secret@cache.internal:6380/0");
    /// let config = RedisConfig::from_cqrs_config(&service)?
    ///     .with_tls_ca_file("/etc/cqrs/ca.pem")
    ///     .with_tls_client_cert("/etc/cqrs/client.pem", "/etc/cqrs/client.key");
    /// # Ok(config)
    /// # }
    /// ```
    ///
    /// The files are read when the transport connects; a file that is missing, unreadable or
    /// not PEM fails [`RedisTransport::connect`](super::RedisTransport::connect) with
    /// [`ErrorKind::Config`](cqrs_actors::ErrorKind::Config) naming the setting and the path.
    #[must_use]
    pub fn with_tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_files.ca_file = Some(path.into());
        self
    }

    /// Presents this client certificate (a PEM chain, the client's certificate first) and
    /// its private key (PEM: PKCS#8, PKCS#1 or SEC1) over `rediss://` (options
    /// `tls_cert_file` and `tls_key_file`), for servers that check clients
    /// (`tls-auth-clients`). `AUTH` stays with the URL's user and password.
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

    /// The exchange (the key space).
    #[must_use]
    pub fn exchange(&self) -> &str {
        &self.exchange
    }

    /// The database number.
    #[must_use]
    pub fn db(&self) -> i64 {
        self.db
    }

    /// The base of the consumer names.
    #[must_use]
    pub fn consumer_name(&self) -> &str {
        &self.consumer_name
    }

    /// The URL with the password replaced by `****`.
    #[must_use]
    pub fn redacted_url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let auth = match (&self.user, &self.password) {
            (Some(u), Some(_)) => format!("{u}:****@"),
            (None, Some(_)) => ":****@".to_owned(),
            (Some(u), None) => format!("{u}@"),
            (None, None) => String::new(),
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{scheme}://{auth}{host}:{}/{}", self.port, self.db)
    }

    /// What redis-rs connects to; the password travels only inside it, never in a URL.
    pub(crate) fn connection_info(&self) -> Result<ConnectionInfo> {
        let addr = if self.tls {
            ConnectionAddr::TcpTls {
                host: self.host.clone(),
                port: self.port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(self.host.clone(), self.port)
        };
        let mut redis = RedisConnectionInfo::default().set_db(self.db);
        if let Some(user) = &self.user {
            redis = redis.set_username(user);
        }
        if let Some(password) = &self.password {
            redis = redis.set_password(password);
        }
        let info = addr
            .into_connection_info()
            .map_err(|e| Error::config("url", format!("not a Redis address: {:?}", e.kind())))?;
        Ok(info.set_redis_settings(redis))
    }

    pub(crate) fn connection_timeout(&self) -> Duration {
        self.connection_timeout
    }

    /// The client of this configuration: for `rediss://` with the TLS files read now (the
    /// given CA only, else the system's roots; the client certificate if set).
    pub(crate) fn client(&self) -> Result<::redis::Client> {
        let info = self.connection_info()?;
        let invalid = |e: ::redis::RedisError| {
            Error::config("url", format!("not a Redis address: {:?}", e.kind()))
        };
        self.tls_files.check("redis", self.tls, "rediss")?;
        #[cfg(feature = "redis-tls")]
        if self.tls {
            use ::redis::{ClientTlsConfig, TlsCertificates};
            // redis-rs builds its rustls configuration with the process's default provider:
            // ring, the one this crate compiles in, unless the application chose one.
            if rustls::crypto::CryptoProvider::get_default().is_none() {
                let _ = rustls::crypto::ring::default_provider().install_default();
            }
            let material = self.tls_files.load("redis")?;
            let certificates = TlsCertificates {
                client_tls: material.identity.map(|id| ClientTlsConfig {
                    client_cert: id.cert_pem,
                    client_key: id.key_pem,
                }),
                root_cert: material.roots.map(|(pem, _)| pem),
            };
            return ::redis::Client::build_with_tls(info, certificates).map_err(invalid);
        }
        ::redis::Client::open(info).map_err(invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_actors::ErrorKind;

    #[test]
    fn every_part_of_the_url_is_read() {
        let c = RedisConfig::from_url(
            "redis://svc:p%40ss%2Fw@cache.local:6380/3?connection_timeout=2500",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.user.as_deref(), Some("svc"));
        assert_eq!(c.password.as_deref(), Some("p@ss/w"));
        assert_eq!((c.host.as_str(), c.port, c.db), ("cache.local", 6380, 3));
        assert_eq!(c.connection_timeout, Duration::from_millis(2500));
        let info = c.connection_info().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(info.redis_settings().password(), Some("p@ss/w"));
        assert_eq!(info.redis_settings().db(), 3);
    }

    #[test]
    fn defaults_and_password_only_urls() {
        let c = RedisConfig::from_url("redis://localhost").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((c.port, c.db, c.user.is_none()), (6379, 0, true));
        let c =
            RedisConfig::from_url("redis://:only@[::1]:7000/").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (c.user.as_deref(), c.password.as_deref()),
            (None, Some("only"))
        );
        assert_eq!((c.host.as_str(), c.port), ("::1", 7000));
        assert_eq!(c.redacted_url(), "redis://:****@[::1]:7000/0");
    }

    #[test]
    fn the_password_never_shows() {
        let c = RedisConfig::from_url("redis://svc:hunter2@h/1").unwrap_or_else(|e| panic!("{e}"));
        let debug = format!("{c:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("redis://svc:****@h:6379/1"), "{debug}");
    }

    #[test]
    fn bad_urls_are_config_errors_that_quote_no_secret() {
        for url in [
            "http://h/",
            "redis://h/x",
            "redis://h/-1",
            "redis://h:notaport/",
            "redis://h/?unknown=1",
            "redis://h/?connection_timeout=soon",
            "redis://h/%zz",
            "no scheme",
            "redis://svc:S3cret/Pw@host/0",
            "redis://svc:S3cret#x@host/0",
            "redis://svc:S3cret?x@host/0",
        ] {
            let err = RedisConfig::from_url(url).expect_err(url);
            assert_eq!(err.kind(), ErrorKind::Config, "{url}");
            assert!(!err.to_string().contains("S3cret"), "{url}: {err}");
        }
    }

    #[test]
    fn rediss_needs_the_tls_feature() {
        let result = RedisConfig::from_url("rediss://u:p@cache.example:6380/0");
        if cfg!(feature = "redis-tls") {
            let c = result.unwrap_or_else(|e| panic!("{e}"));
            assert!(c.tls);
            assert!(matches!(
                c.connection_info().map(|i| i.addr().clone()),
                Ok(ConnectionAddr::TcpTls { ref host, port: 6380, insecure: false, .. }) if host == "cache.example"
            ));
            assert_eq!(c.redacted_url(), "rediss://u:****@cache.example:6380/0");
        } else {
            assert_eq!(
                result.map(|_| ()).map_err(|e| e.kind()),
                Err(ErrorKind::Config)
            );
        }
    }

    #[test]
    fn tls_files_come_from_the_options_table_and_show_in_debug() {
        let toml = "url = \"rediss://:hunter2@cache:6390/0\"\n[redis]\n\
                    tls_ca_file = \"/etc/cqrs/ca.pem\"\ntls_cert_file = \"/etc/cqrs/c.pem\"\n\
                    tls_key_file = \"/etc/cqrs/c.key\"";
        let service =
            cqrs_actors::CqrsConfig::from_toml_str(toml).unwrap_or_else(|e| panic!("{e}"));
        let result = RedisConfig::from_cqrs_config(&service);
        if !cfg!(feature = "redis-tls") {
            let err = result.map(|_| ()).expect_err("rediss without the feature");
            assert_eq!(err.kind(), ErrorKind::Config);
            assert!(err.to_string().contains("redis-tls"), "{err}");
            return;
        }
        let c = result.unwrap_or_else(|e| panic!("{e}"));
        let built = RedisConfig::from_url("rediss://:hunter2@cache:6390/0")
            .unwrap_or_else(|e| panic!("{e}"))
            .with_tls_ca_file("/etc/cqrs/ca.pem")
            .with_tls_client_cert("/etc/cqrs/c.pem", "/etc/cqrs/c.key");
        assert_eq!(c.tls_files, built.tls_files);
        let debug = format!("{c:?}");
        assert!(
            debug.contains("/etc/cqrs/c.key") && !debug.contains("hunter2"),
            "{debug}"
        );
        for bad in [
            "url = \"redis://cache/0\"\n[redis]\ntls_ca_file = \"/etc/cqrs/ca.pem\"",
            "url = \"rediss://cache/0\"\n[redis]\ntls_cert_file = \"/etc/cqrs/c.pem\"",
            "url = \"rediss://cache/0\"\n[redis]\ntls_ca_file = 5",
        ] {
            let service =
                cqrs_actors::CqrsConfig::from_toml_str(bad).unwrap_or_else(|e| panic!("{e}"));
            let err = RedisConfig::from_cqrs_config(&service).expect_err(bad);
            assert_eq!(err.kind(), ErrorKind::Config, "{bad}");
            assert!(err.to_string().contains("redis.tls_"), "{bad}: {err}");
        }
    }

    #[test]
    fn options_are_read_and_checked() {
        let service = cqrs_actors::CqrsConfig::from_toml_str(
            "url = \"redis://127.0.0.1/0\"\nexchange = \"events\"\n\
             [redis]\nconsumers = 3\nconsumer_name = \"pod-a\"\nclaim_idle = 0.5\n\
             max_deliveries = 4\ngroup_start = \"earliest\"\nkeep_acknowledged = true\n\
             max_len = 1000\nmax_age = 3600\ntrim_undelivered = false\nwait_replicas = 1",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let c = RedisConfig::from_cqrs_config(&service).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.exchange(), "events");
        assert_eq!((c.consumers, c.consumer_name()), (3, "pod-a"));
        assert_eq!(c.claim_idle, Duration::from_millis(500));
        assert_eq!((c.max_deliveries, c.group_start), (4, GroupStart::Earliest));
        assert_eq!((c.keep_acknowledged, c.max_len), (true, Some(1000)));
        assert_eq!(c.wait_replicas, 1);
        for bad in [
            "[redis]\nconsumers = 0",
            "[redis]\nclaim_idle = \"soon\"",
            "[redis]\ngroup_start = \"middle\"",
            "[redis]\nkey_prefix = \"a{b}\"",
            "[redis]\nno_such_option = 1",
        ] {
            let service = cqrs_actors::CqrsConfig::from_toml_str(&format!(
                "url = \"redis://127.0.0.1/0\"\n{bad}"
            ))
            .unwrap_or_else(|e| panic!("{e}"));
            let err = RedisConfig::from_cqrs_config(&service).expect_err(bad);
            assert_eq!(err.kind(), ErrorKind::Config, "{bad}");
            assert!(err.to_string().contains("redis."), "{bad}: {err}");
        }
    }
}
