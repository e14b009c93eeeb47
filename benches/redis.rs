//! The Redis Streams transport's publish and consume rates next to the raw ceiling of the
//! same server measured in the same run (redis-rs directly: pipelined `XADD`s, then
//! `XREADGROUP` with pipelined `XACK`s, in batches, no database).
//!
//! ```text
//! cargo bench --bench redis --features redis
//! CQRS_BENCH_MESSAGES=200000 CQRS_BENCH_REDIS_URL=redis://127.0.0.1:6379/0 cargo bench ...
//! ```
//!
//! Both sides use 300-byte bodies, batches of 1000 (the publish window and the prefetch), and
//! the same entry fields (body, content type, routing key). The raw publisher sends one
//! pipeline of 1000 `XADD`s at a time; the transport is kept 1000 publishes unconfirmed, as the
//! framework's relay and producer keep it, and pipelines what queued up. The raw consumer reads
//! 1000 entries and acknowledges them with one `XACK`; the transport's consumer settles each
//! batch it is handed.
#![allow(clippy::print_stdout)] // a bench reports on stdout

#[path = "support/redis_reply.rs"]
mod redis_reply;
#[path = "support/transport.rs"]
mod support;

use std::time::{Duration, Instant};

use actix::prelude::*;
use cqrs_sync::transport::Declare;
use cqrs_sync::transports::redis::{RedisConfig, RedisTransport, Teardown};
use redis::Value;
use redis::aio::MultiplexedConnection;
use redis_reply::read_and_ack;
use support::{BenchResult, body, rate};

const BATCH: usize = 1000;

fn url() -> String {
    std::env::var("CQRS_BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned())
}

async fn connection() -> BenchResult<MultiplexedConnection> {
    let config =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
    Ok(redis::Client::open(url())?
        .get_multiplexed_async_connection_with_config(&config)
        .await?)
}

/// Raw redis-rs: append `n` entries in pipelines of 1000, then read them with a consumer group
/// 1000 at a time, acknowledging each read with one `XACK`.
async fn raw(n: usize, key: String) -> BenchResult<(f64, f64)> {
    let key = key.as_str();
    let mut conn = connection().await?;
    let _: Value = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg("g")
        .arg("$")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await?;
    let payload = body();
    let started = Instant::now();
    let mut sent = 0;
    while sent < n {
        let k = BATCH.min(n - sent);
        let mut pipe = redis::pipe();
        for _ in 0..k {
            pipe.cmd("XADD")
                .arg(key)
                .arg("*")
                .arg("body")
                .arg(payload.as_slice())
                .arg("content_type")
                .arg("text/plain")
                .arg("routing_key")
                .arg("bench");
        }
        let _: Vec<Value> = pipe.query_async(&mut conn).await?;
        sent += k;
    }
    let publish = rate(n, started.elapsed());

    let started = Instant::now();
    let mut seen = 0;
    while seen < n {
        seen += read_and_ack(&mut conn, key, "raw", BATCH, 1000).await?;
    }
    let consume = rate(n, started.elapsed());
    let _: i64 = redis::cmd("DEL").arg(key).query_async(&mut conn).await?;
    Ok((publish, consume))
}

/// The transport: publish `n` messages through it, then consume them through it.
async fn transport(n: usize, exchange: &str) -> BenchResult<(f64, f64)> {
    let service = cqrs_sync::CqrsConfig::default()
        .with_url(url())
        .with_exchange(exchange)
        .with_publish_window(BATCH as u32);
    let config = RedisConfig::from_cqrs_config(&service)?;
    let (t, addr) = RedisTransport::connect(config).await?;
    let queue = "bench_queue";
    t.declare(Declare {
        queue: queue.to_owned(),
        dead_letter_queue: format!("dead_letter_{queue}"),
        cqrs_ids: vec!["bench".into()],
    })
    .await?;
    let publish = support::publish(&t, n, BATCH).await?;
    let consume = support::consume(&t, queue, n, BATCH as u32).await?;
    addr.send(Teardown).await??;
    Ok((publish, consume))
}

fn main() -> BenchResult<()> {
    let n = support::messages(100_000);
    let run = std::process::id();
    System::new().block_on(support::report(
        &format!("Redis Streams, {n} 300-byte entries, batches of {BATCH}"),
        |round| raw(n, format!("cqrs_bench_raw_{run}_{round}")),
        |round| async move { transport(n, &format!("cqrs_bench_{run}_{round}")).await },
    ))
}
