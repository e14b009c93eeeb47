//! The RabbitMQ transport's publish and consume rates next to the raw ceiling of the same
//! broker measured in the same run (lapin directly: persistent publishes with pipelined
//! confirms, written as the transport writes them, consumption with acks, no database).
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

#[path = "support/amqp_publish.rs"]
mod amqp_publish;
#[path = "support/transport.rs"]
mod support;

use std::time::Instant;

use actix::prelude::*;
use amqp_publish::publish_confirmed;
use cqrs_sync::transport::Declare;
use cqrs_sync::transports::rabbitmq::{RabbitMqConfig, RabbitMqTransport, Teardown};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use support::{BenchResult, body, rate};

const WINDOW: usize = 1000;
const PREFETCH: u16 = 1000;

fn url() -> String {
    std::env::var("CQRS_BENCH_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// Raw lapin: publish `n` persistent messages with pipelined confirms, then consume them.
async fn raw(n: usize, queue: String) -> BenchResult<(f64, f64)> {
    let queue = queue.as_str();
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
    publish_confirmed(&channel, "", queue, n, &[payload], &props, WINDOW).await?;
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
    let publish = support::publish(&t, n, WINDOW).await?;
    let consume = support::consume(&t, queue, n, u32::from(PREFETCH)).await?;
    addr.send(Teardown { exchange: true }).await??;
    Ok((publish, consume))
}

fn main() -> BenchResult<()> {
    let n = support::messages(50_000);
    let run = std::process::id();
    System::new().block_on(support::report(
        &format!(
            "RabbitMQ, {n} persistent 300-byte messages, window {WINDOW}, prefetch {PREFETCH}"
        ),
        |round| raw(n, format!("cqrs_bench_raw_{run}_{round}")),
        |round| async move { transport(n, &format!("cqrs_bench_transport_{run}_{round}")).await },
    ))
}
