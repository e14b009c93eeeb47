//! Connections to the server and the errors they give.

use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use ::redis::{AsyncConnectionConfig, Client, RedisError};
use cqrs_actors::{Error, ErrorKind, Result};

use super::RedisConfig;

/// A transport error about `what` (a command and the key it names).
pub(crate) fn redis_error(what: &str, e: RedisError) -> Error {
    Error::with_source(ErrorKind::Transport, format!("Redis {what} failed"), e)
}

/// Whether the error says the connection is gone (worth reconnecting and trying again), as
/// opposed to an answer of the server.
pub(crate) fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}

fn client(config: &RedisConfig) -> Result<Client> {
    config.client()
}

/// A connection that reconnects by itself (with backoff) after it is lost; the request that
/// met the loss fails and is retried by the caller.
pub(crate) async fn manager(
    config: &RedisConfig,
    response_timeout: Duration,
) -> Result<ConnectionManager> {
    let (min, max) = (config.reconnect_min, config.reconnect_max);
    let settings = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.connection_timeout()))
        .set_response_timeout(Some(response_timeout))
        .set_min_delay(min.max(Duration::from_millis(1)))
        .set_max_delay(max.max(Duration::from_millis(1)))
        .set_number_of_retries(3);
    ConnectionManager::new_with_config(client(config)?, settings)
        .await
        .map_err(|e| unreachable(config, e))
}

/// A connection of its own (a consumer's blocking reads hold up everything behind them).
pub(crate) async fn dedicated(
    config: &RedisConfig,
    response_timeout: Duration,
) -> Result<MultiplexedConnection> {
    let settings = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.connection_timeout()))
        .set_response_timeout(Some(response_timeout));
    client(config)?
        .get_multiplexed_async_connection_with_config(&settings)
        .await
        .map_err(|e| unreachable(config, e))
}

/// Why the first connection failed: a refused certificate (which waiting does not mend) is a
/// configuration error, anything else a transport error.
fn unreachable(config: &RedisConfig, e: RedisError) -> Error {
    #[cfg(feature = "redis-tls")]
    if let Some(reason) = crate::tls::refusal(&e, "redis") {
        return Error::with_source(
            ErrorKind::Config,
            format!("Redis at {}: {reason}", config.redacted_url()),
            e,
        );
    }
    Error::with_source(
        ErrorKind::Transport,
        format!("Redis at {} is not reachable", config.redacted_url()),
        e,
    )
}

/// The pause before reconnect attempt `attempt` (from 0), doubling from the minimum to the
/// maximum, with jitter.
pub(crate) fn backoff(config: &RedisConfig, attempt: u32) -> Duration {
    let base = config
        .reconnect_min
        .saturating_mul(1u32 << attempt.min(16))
        .min(config.reconnect_max);
    base.mul_f64(0.75 + fastrand::f64() / 2.0)
}
