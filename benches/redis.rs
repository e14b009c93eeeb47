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

use std::time::{Duration, Instant};

use actix::prelude::*;
use cqrs_sync::transport::{Declare, Deliveries, Headers, OutgoingMessage, Settlement, Subscribe};
use cqrs_sync::transports::redis::{RedisConfig, RedisTransport, Teardown};
use cqrs_sync::{Route, TransportHandle};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use redis::Value;
use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;

const BATCH: usize = 1000;

fn messages() -> usize {
    std::env::var("CQRS_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn url() -> String {
    std::env::var("CQRS_BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned())
}

fn body() -> Vec<u8> {
    let mut b =
        br#"{"signal_type":"SAVE","cqrs_id":"bench","instance_data":{"id":1,"name":""#.to_vec();
    b.resize(290, b'x');
    b.extend_from_slice(br#""}}"#);
    b.resize(300, b' ');
    b
}

fn rate(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

async fn connection() -> BenchResult<MultiplexedConnection> {
    let config =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
    Ok(redis::Client::open(url())?
        .get_multiplexed_async_connection_with_config(&config)
        .await?)
}

/// Raw redis-rs: append `n` entries in pipelines of 1000, then read them with a consumer group
/// 1000 at a time, acknowledging each read with one `XACK`.
async fn raw(n: usize, key: &str) -> BenchResult<(f64, f64)> {
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
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g")
            .arg("raw")
            .arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(1000)
            .arg("STREAMS")
            .arg(key)
            .arg(">")
            .query_async(&mut conn)
            .await?;
        let ids = entry_ids(&reply);
        if ids.is_empty() {
            continue;
        }
        seen += ids.len();
        let _: i64 = redis::cmd("XACK")
            .arg(key)
            .arg("g")
            .arg(&ids)
            .query_async(&mut conn)
            .await?;
    }
    let consume = rate(n, started.elapsed());
    let _: i64 = redis::cmd("DEL").arg(key).query_async(&mut conn).await?;
    Ok((publish, consume))
}

/// The ids of an `XREADGROUP` reply of one stream.
fn entry_ids(reply: &Value) -> Vec<Vec<u8>> {
    let Value::Array(streams) = reply else {
        return Vec::new();
    };
    let mut ids = Vec::new();
    for stream in streams {
        if let Value::Array(pair) = stream
            && let Some(Value::Array(entries)) = pair.get(1)
        {
            for entry in entries {
                if let Value::Array(e) = entry
                    && let Some(Value::BulkString(id)) = e.first()
                {
                    ids.push(id.clone());
                }
            }
        }
    }
    ids
}

/// Acknowledges every batch it is handed and takes the next one without waiting for the ack,
/// as the replica pipeline does (its router answers once the workers took the batch).
struct Acker {
    transport: TransportHandle,
    seen: mpsc::UnboundedSender<usize>,
}

impl Actor for Acker {
    type Context = Context<Self>;
}

impl Handler<Deliveries> for Acker {
    type Result = ();

    fn handle(&mut self, msg: Deliveries, _: &mut Context<Self>) {
        let tags: Vec<_> = msg.0.iter().map(|d| d.tag).collect();
        let n = tags.len();
        let settle = self.transport.settle(tags, Settlement::Ack);
        let seen = self.seen.clone();
        actix::spawn(async move {
            if let Err(e) = settle.await {
                tracing::warn!(error = %e, "ack failed");
            }
            let _ = seen.send(n);
        });
    }
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
    let payload = body();
    let started = Instant::now();
    // As the framework's relay and producer do: at most a window of publishes unconfirmed.
    let mut pending = FuturesUnordered::new();
    for _ in 0..n {
        if pending.len() >= BATCH {
            pending.next().await.transpose()?;
        }
        pending.push(t.publish(OutgoingMessage {
            route: Route::broadcast("bench"),
            body: payload.clone(),
            content_type: "text/plain".to_owned(),
            headers: Headers::new(),
            expiration: None,
        }));
    }
    while let Some(p) = pending.next().await {
        p?;
    }
    let publish = rate(n, started.elapsed());

    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let acker = Acker {
        transport: t.clone(),
        seen: seen_tx,
    }
    .start();
    let started = Instant::now();
    let tag = t
        .subscribe(Subscribe {
            queue: queue.to_owned(),
            prefetch: BATCH as u32,
            consumer: acker.recipient(),
        })
        .await?;
    let mut seen = 0;
    while seen < n {
        match seen_rx.recv().await {
            Some(k) => seen += k,
            None => break,
        }
    }
    let consume = rate(n, started.elapsed());
    t.cancel(tag, true).await?;
    addr.send(Teardown).await??;
    Ok((publish, consume))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> BenchResult<()> {
    let n = messages();
    let rounds: usize = std::env::var("CQRS_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let run = std::process::id();
    System::new().block_on(async move {
        let mut figures: [Vec<f64>; 4] = Default::default();
        for round in 0..rounds {
            let (raw_pub, raw_con) = raw(n, &format!("cqrs_bench_raw_{run}_{round}")).await?;
            let (t_pub, t_con) = transport(n, &format!("cqrs_bench_{run}_{round}")).await?;
            for (f, v) in figures.iter_mut().zip([raw_pub, raw_con, t_pub, t_con]) {
                f.push(v);
            }
        }
        let [raw_pub, raw_con, t_pub, t_con] = figures.map(median);
        println!("Redis Streams, {n} 300-byte entries, batches of {BATCH}, median of {rounds}");
        println!(
            "{:<10} {:>14} {:>14} {:>8}",
            "", "raw msg/s", "transport", "ratio"
        );
        println!(
            "{:<10} {:>14.0} {:>14.0} {:>7.0}%",
            "publish",
            raw_pub,
            t_pub,
            100.0 * t_pub / raw_pub
        );
        println!(
            "{:<10} {:>14.0} {:>14.0} {:>7.0}%",
            "consume",
            raw_con,
            t_con,
            100.0 * t_con / raw_con
        );
        Ok(())
    })
}
