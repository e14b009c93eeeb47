//! What the broker benches share: the message, the transport's side of each measurement
//! (publishing with a window of unconfirmed publishes, as the relay does; consuming with an
//! acknowledgement per batch, as the replica pipeline does) and the report.

use std::future::Future;
use std::time::{Duration, Instant};

use actix::prelude::*;
use cqrs_sync::transport::{Deliveries, Headers, OutgoingMessage, Settlement, Subscribe};
use cqrs_sync::{Route, TransportHandle};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;

pub type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

/// `CQRS_BENCH_MESSAGES`, else `default`.
pub fn messages(default: usize) -> usize {
    std::env::var("CQRS_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A 300-byte body shaped like a SAVE.
pub fn body() -> Vec<u8> {
    let mut b =
        br#"{"signal_type":"SAVE","cqrs_id":"bench","instance_data":{"id":1,"name":""#.to_vec();
    b.resize(290, b'x');
    b.extend_from_slice(br#""}}"#);
    b.resize(300, b' ');
    b
}

/// Messages per second.
pub fn rate(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

/// Publishes `n` broadcasts of `bench` through the transport with at most `window`
/// unconfirmed, as the relay and the producer keep it. Answers the rate.
pub async fn publish(t: &TransportHandle, n: usize, window: usize) -> BenchResult<f64> {
    let payload = body();
    let started = Instant::now();
    let mut pending = FuturesUnordered::new();
    for _ in 0..n {
        if pending.len() >= window {
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
    Ok(rate(n, started.elapsed()))
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

/// Consumes `n` messages of `queue` through the transport with `prefetch`, acknowledging
/// each batch. Answers the rate.
pub async fn consume(
    t: &TransportHandle,
    queue: &str,
    n: usize,
    prefetch: u32,
) -> BenchResult<f64> {
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
            prefetch,
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
    Ok(consume)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `CQRS_BENCH_ROUNDS` (default 3) rounds of the raw ceiling and the transport, each
/// answering `(publish, consume)` rates, then prints the medians and their ratios under
/// `title`.
pub async fn report<R, T, RF, TF>(title: &str, mut raw: R, mut transport: T) -> BenchResult<()>
where
    R: FnMut(usize) -> RF,
    T: FnMut(usize) -> TF,
    RF: Future<Output = BenchResult<(f64, f64)>>,
    TF: Future<Output = BenchResult<(f64, f64)>>,
{
    let rounds: usize = std::env::var("CQRS_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let mut figures: [Vec<f64>; 4] = Default::default();
    for round in 0..rounds {
        let (raw_pub, raw_con) = raw(round).await?;
        let (t_pub, t_con) = transport(round).await?;
        for (f, v) in figures.iter_mut().zip([raw_pub, raw_con, t_pub, t_con]) {
            f.push(v);
        }
    }
    let [raw_pub, raw_con, t_pub, t_con] = figures.map(median);
    println!("{title}, median of {rounds}");
    println!(
        "{:<10} {:>14} {:>14} {:>8}",
        "", "raw msg/s", "transport", "ratio"
    );
    for (what, raw, t) in [("publish", raw_pub, t_pub), ("consume", raw_con, t_con)] {
        println!("{what:<10} {raw:>14.0} {t:>14.0} {:>7.0}%", 100.0 * t / raw);
    }
    Ok(())
}
