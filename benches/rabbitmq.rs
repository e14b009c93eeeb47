//! The RabbitMQ transport's publish and consume rates next to the raw ceiling of the same
//! broker measured in the same run (lapin directly: persistent publishes with pipelined
//! confirms, consumption with acks, no database).
//!
//! ```text
//! cargo bench --bench rabbitmq --features rabbitmq
//! CQRS_BENCH_MESSAGES=100000 CQRS_BENCH_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo bench ...
//! ```
//!
//! Both sides use 300-byte bodies, a window of 1000 unconfirmed publishes and a prefetch of
//! 1000. The raw consumer acks with `multiple` every 100 deliveries; the transport's consumer
//! settles each batch it is handed, which the transport sends as one `multiple` ack.
#![allow(clippy::print_stdout)] // a bench reports on stdout

use std::time::{Duration, Instant};

use actix::prelude::*;
use cqrs_sync::transport::{Declare, Deliveries, Headers, OutgoingMessage, Settlement, Subscribe};
use cqrs_sync::transports::rabbitmq::{RabbitMqConfig, RabbitMqTransport, Teardown};
use cqrs_sync::{Route, TransportHandle};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio::sync::mpsc;

const WINDOW: usize = 1000;
const PREFETCH: u16 = 1000;

fn messages() -> usize {
    std::env::var("CQRS_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000)
}

fn url() -> String {
    std::env::var("CQRS_BENCH_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
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

/// Raw lapin: publish `n` persistent messages with pipelined confirms, then consume them.
async fn raw(n: usize, queue: &str) -> BenchResult<(f64, f64)> {
    let conn = Connection::connect(&url(), ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let payload = body();
    let props = BasicProperties::default()
        .with_content_type("text/plain".into())
        .with_delivery_mode(2);
    let started = Instant::now();
    let mut pending = FuturesUnordered::new();
    for _ in 0..n {
        if pending.len() >= WINDOW {
            pending.next().await.transpose()?;
        }
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &payload,
                props.clone(),
            )
            .await?;
        pending.push(confirm);
    }
    while let Some(c) = pending.next().await {
        c?;
    }
    let publish = rate(n, started.elapsed());

    let consumer_channel = conn.create_channel().await?;
    consumer_channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await?;
    let mut consumer = consumer_channel
        .basic_consume(
            queue.into(),
            "raw-bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let started = Instant::now();
    let mut seen = 0;
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        seen += 1;
        if seen % 100 == 0 || seen == n {
            consumer_channel
                .basic_ack(delivery.delivery_tag, BasicAckOptions { multiple: true })
                .await?;
        }
        if seen == n {
            break;
        }
    }
    let consume = rate(n, started.elapsed());
    channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await?;
    let _ = conn.close(200, "bench done".into()).await;
    Ok((publish, consume))
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
async fn transport(n: usize, queue: &str) -> BenchResult<(f64, f64)> {
    let exchange = format!("{queue}_x");
    let service = cqrs_sync::CqrsConfig::default()
        .with_url(url())
        .with_exchange(&exchange)
        .with_publish_window(WINDOW as u32);
    let config = RabbitMqConfig::from_cqrs_config(&service)?;
    let (t, addr) = RabbitMqTransport::connect(config).await?;
    t.declare(Declare {
        queue: queue.to_owned(),
        dead_letter_queue: format!("dead_letter_{queue}"),
        cqrs_ids: vec!["bench".into()],
    })
    .await?;
    let payload = body();
    let started = Instant::now();
    let publishes: Vec<_> = (0..n)
        .map(|_| {
            t.publish(OutgoingMessage {
                route: Route::broadcast("bench"),
                body: payload.clone(),
                content_type: "text/plain".to_owned(),
                headers: Headers::new(),
                expiration: None,
            })
        })
        .collect();
    for p in futures_util::future::join_all(publishes).await {
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
            prefetch: u32::from(PREFETCH),
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
    addr.send(Teardown { exchange: true }).await??;
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
            let (t_pub, t_con) =
                transport(n, &format!("cqrs_bench_transport_{run}_{round}")).await?;
            for (f, v) in figures.iter_mut().zip([raw_pub, raw_con, t_pub, t_con]) {
                f.push(v);
            }
        }
        let [raw_pub, raw_con, t_pub, t_con] = figures.map(median);
        println!(
            "RabbitMQ, {n} persistent 300-byte messages, window {WINDOW}, prefetch {PREFETCH}, median of {rounds}"
        );
        println!("{:<10} {:>14} {:>14} {:>8}", "", "raw msg/s", "transport", "ratio");
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
