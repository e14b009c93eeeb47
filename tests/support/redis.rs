//! Redis helpers: every test works in a key space of its own (an exchange with a unique
//! name) on 127.0.0.1:6379, deleted when the guard drops.

use std::time::Duration;

use actix::Addr;
use cqrs_sync::TransportHandle;
use cqrs_sync::transports::redis::{RedisConfig, RedisTransport};

/// The server the tests use; `CQRS_TEST_REDIS_URL` overrides it.
pub fn url() -> String {
    std::env::var("CQRS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned())
}

/// A plain connection for what the tests do behind the transport's back.
pub fn client() -> ::redis::Connection {
    ::redis::Client::open(url())
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| panic!("Redis on {}: {e} (.ci/run starts it)", url()))
}

/// A key space for one test.
pub struct Space {
    pub exchange: String,
    /// Connects to the server the space is on.
    connect: fn() -> ::redis::Connection,
}

impl Space {
    /// An exchange named `<prefix>_<unique>`.
    pub fn create(prefix: &str) -> Self {
        Self::create_on(client, prefix)
    }

    /// An exchange named `<prefix>_<unique>` on the server `connect` reaches (for the keys and
    /// their cleanup).
    pub fn create_on(connect: fn() -> ::redis::Connection, prefix: &str) -> Self {
        Self {
            exchange: super::unique(prefix),
            connect,
        }
    }

    /// A service configuration for this key space, with `[redis]` options.
    pub fn service_config_with(&self, options: &str) -> cqrs_sync::CqrsConfig {
        let options: toml::Table = options.parse().unwrap_or_else(|e| panic!("options: {e}"));
        cqrs_sync::CqrsConfig::default()
            .with_url(url())
            .with_exchange(&self.exchange)
            .with_redis_options(options)
    }

    /// A service configuration for this key space.
    pub fn service_config(&self) -> cqrs_sync::CqrsConfig {
        self.service_config_with("")
    }

    /// Its transport configuration, with `[redis]` options.
    pub fn config_with(&self, options: &str) -> RedisConfig {
        RedisConfig::from_cqrs_config(&self.service_config_with(options))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Its transport configuration.
    pub fn config(&self) -> RedisConfig {
        self.config_with("")
    }

    /// The keys of this space.
    pub fn keys(&self) -> Vec<String> {
        let pattern = format!("cqrs:{{{}}}:*", self.exchange);
        let mut conn = (self.connect)();
        let keys: Vec<String> = ::redis::cmd("KEYS")
            .arg(&pattern)
            .query(&mut conn)
            .unwrap_or_else(|e| panic!("KEYS: {e}"));
        keys
    }
}

impl Drop for Space {
    fn drop(&mut self) {
        let keys = self.keys();
        if !keys.is_empty() {
            let mut conn = (self.connect)();
            if let Err(e) = ::redis::cmd("DEL").arg(&keys).query::<i64>(&mut conn) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

/// Connects a transport.
pub async fn connect(config: RedisConfig) -> (TransportHandle, Addr<RedisTransport>) {
    RedisTransport::connect(config)
        .await
        .unwrap_or_else(|e| panic!("Redis on 127.0.0.1:6379: {e}"))
}

/// Kills every normal client connection of the server (`CLIENT KILL TYPE normal`), off the
/// runtime. Answers how many were killed.
pub async fn kill_clients() -> i64 {
    tokio::task::spawn_blocking(|| {
        let mut conn = client();
        ::redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .query::<i64>(&mut conn)
            .unwrap_or_else(|e| panic!("CLIENT KILL: {e}"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// How long the tests wait on Redis.
pub const PATIENCE: Duration = Duration::from_secs(120);
