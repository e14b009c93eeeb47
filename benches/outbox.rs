//! The master path end to end: rows written through a `MasterTable` into PostgreSQL with their
//! events in the outbox, relayed by the system to the broker's confirm and deleted, against the
//! transport's own publish rate for the same messages, measured in the same run, on the memory
//! transport and on RabbitMQ.
//!
//! ```text
//! cargo bench --bench outbox --features postgres,rabbitmq
//! CQRS_BENCH_ROWS=50000 cargo bench --bench outbox --features postgres,rabbitmq
//! ```
//!
//! Each round writes `CQRS_BENCH_ROWS` rows (default 20,000) of about 300 bytes in
//! transactions of 100 rows (`insert_many`) while the relay publishes them, and stops the
//! clock when `CqrsSystem::flush` returns: every event confirmed by the broker and deleted
//! from the outbox. The ceiling publishes the same encoded events straight through the
//! transport with the same window (`master.publish_window`, 1000, or `CQRS_BENCH_WINDOW`). Medians of 3 rounds. It
//! also times what encoding once saves: the JSON decode and re-encode of each event the relay
//! did before it published stored bytes. RabbitMQ is skipped when 127.0.0.1:5672 is not
//! reachable. Each run works in a PostgreSQL schema and a RabbitMQ exchange of its own and
//! removes them at the end.

#![allow(clippy::print_stdout, clippy::unwrap_used)] // a bench prints its figures and may panic

#[path = "support/book.rs"]
mod book;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use cqrs_sync::orm::{MasterTable, Outbox};
use cqrs_sync::transport::Declare;
use cqrs_sync::transports::memory::MemoryBroker;
use cqrs_sync::transports::rabbitmq::{RabbitMqConfig, RabbitMqTransport, Teardown};
use cqrs_sync::{Codec, CqrsConfig, CqrsSystem, CqrsSystemExt, EncodedEvent, TransportHandle};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, Schema};

const PG: &str = "postgres://postgres@127.0.0.1:5432/test";
const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// `master.publish_window`, also the ceiling's window (`CQRS_BENCH_WINDOW`, default 1000).
fn window() -> u32 {
    std::env::var("CQRS_BENCH_WINDOW")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}
const BATCH: i64 = 100;

fn rows() -> i64 {
    std::env::var("CQRS_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

async fn connect(schema: Option<&str>) -> DatabaseConnection {
    let url = match schema {
        Some(s) => format!("{PG}?options=-c%20search_path%3D{s}"),
        None => PG.to_owned(),
    };
    let mut o = ConnectOptions::new(url);
    o.max_connections(4).sqlx_logging(false);
    Database::connect(o).await.unwrap()
}

/// The text column of every row: about 300 bytes a row.
fn body() -> String {
    "x".repeat(200)
}

/// A broker for one round, and a replica queue bound to `book` so every publish is routed.
struct Broker {
    transport: TransportHandle,
    config: CqrsConfig,
    rabbitmq: Option<actix::Addr<RabbitMqTransport>>,
}

impl Broker {
    async fn memory() -> Self {
        let (transport, _addr) = MemoryBroker::default().start_transport();
        Self::declare(Self {
            transport,
            config: CqrsConfig::default().with_publish_window(window()),
            rabbitmq: None,
        })
        .await
    }

    async fn rabbitmq(exchange: &str) -> Option<Self> {
        let config = CqrsConfig::default()
            .with_url(AMQP)
            .with_exchange(exchange)
            .with_publish_window(window());
        let rabbit = RabbitMqConfig::from_cqrs_config(&config)
            .unwrap()
            .with_publish_timeout(Duration::from_secs(5));
        let (transport, addr) = RabbitMqTransport::connect(rabbit).await.ok()?;
        Some(
            Self::declare(Self {
                transport,
                config,
                rabbitmq: Some(addr),
            })
            .await,
        )
    }

    async fn declare(self) -> Self {
        let queue = format!("bench_outbox_{}", std::process::id());
        self.transport
            .declare(Declare {
                dead_letter_queue: format!("dead_letter_{queue}"),
                queue,
                cqrs_ids: vec!["book".into()],
            })
            .await
            .unwrap();
        self
    }

    async fn close(self) {
        if let Some(addr) = self.rabbitmq {
            addr.send(Teardown { exchange: true })
                .await
                .unwrap()
                .unwrap();
        }
    }
}

type Pending = std::pin::Pin<Box<dyn std::future::Future<Output = cqrs_sync::Result<()>>>>;

/// The ceiling: the same events straight through the transport, `window()` unconfirmed.
async fn transport_rate(broker: &Broker, n: i64) -> f64 {
    let events: Vec<EncodedEvent> = (1..=n)
        .map(|id| book::event(id, &body()).unwrap())
        .collect();
    let start = Instant::now();
    let window = window() as usize;
    let mut in_flight: VecDeque<Pending> = VecDeque::with_capacity(window);
    for e in events {
        if in_flight.len() == window
            && let Some(f) = in_flight.pop_front()
        {
            f.await.unwrap();
        }
        in_flight.push_back(Box::pin(broker.transport.publish(e.into_message())));
    }
    for f in in_flight {
        f.await.unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// What [`outbox_rate`] times.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Timed {
    /// The writes alone, the relay kept off the outbox by a lease held under another name.
    Writes,
    /// The relay alone, from the release of that lease to the last confirm.
    Relay,
    /// Writes and relay together, from the first write to the last confirm.
    Both,
}

/// Rows written through the outbox and relayed by the system, until `flush` returns.
async fn outbox_rate(db: &DatabaseConnection, broker: &Broker, n: i64, timed: Timed) -> f64 {
    let hold = timed != Timed::Both;
    db.execute_unprepared("DROP TABLE IF EXISTS book, cqrs_outbox, cqrs_outbox_lease")
        .await
        .unwrap();
    let create =
        Schema::new(db.get_database_backend()).create_table_from_entity(book::entity::Entity);
    db.execute(&create).await.unwrap();
    let outbox = Outbox::new(db.clone());
    outbox.create_table().await.unwrap();
    let table = MasterTable::new("book", book::entity::Entity, &outbox).unwrap();
    if hold {
        let held = outbox
            .store()
            .lease("writer", Duration::from_secs(600))
            .await;
        assert!(held.unwrap());
    }
    let system = CqrsSystem::builder()
        .config(broker.config.clone())
        .master(&table)
        .transport(broker.transport.clone())
        .start()
        .await
        .unwrap();
    let mut start = Instant::now();
    for first in (1..=n).step_by(BATCH as usize) {
        let rows = (first..(first + BATCH).min(n + 1))
            .map(|id| book::row(id, &body()))
            .collect();
        table.insert_many(db, rows).await.unwrap();
    }
    match timed {
        Timed::Writes => {
            let rate = n as f64 / start.elapsed().as_secs_f64();
            system.shutdown().await.unwrap();
            return rate;
        }
        Timed::Relay => {
            start = Instant::now();
            outbox.store().release("writer").await.unwrap();
            outbox.wake();
        }
        Timed::Both => {}
    }
    system.flush().await.unwrap();
    let rate = n as f64 / start.elapsed().as_secs_f64();
    assert_eq!(outbox.pending().await.unwrap(), 0);
    assert_eq!(system.metrics().published, n as u64);
    system.shutdown().await.unwrap();
    rate
}

fn median(mut runs: Vec<f64>) -> f64 {
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

/// The CPU per event of decoding a stored event and encoding it again, what the relay did
/// before it published the stored bytes (nanoseconds, one core).
fn reencode_ns() -> (f64, usize) {
    let bodies: Vec<Vec<u8>> = (1..=20_000)
        .map(|id| book::event(id, &body()).unwrap().body)
        .collect();
    let start = Instant::now();
    let mut bytes = 0;
    for body in &bodies {
        let envelope = Codec::Json.decode(body, None).unwrap();
        bytes += Codec::Json.encode(&envelope).unwrap().len();
    }
    let ns = start.elapsed().as_nanos() as f64 / bodies.len() as f64;
    (ns, bytes / bodies.len())
}

#[actix_rt::main]
async fn main() {
    let n = rows();
    let schema = format!("cqrs_bench_outbox_{}", std::process::id());
    let admin = connect(None).await;
    admin
        .execute_unprepared(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let db = connect(Some(&schema)).await;

    println!(
        "master path: {n} rows of ~300 bytes, insert_many of {BATCH} per transaction into \
         PostgreSQL, relayed to the broker's confirm (window {}); medians of 3",
        window()
    );
    println!(
        "{:<10} {:>16} {:>14} {:>14} {:>14} {:>14}",
        "transport",
        "transport msg/s",
        "writes alone",
        "relay alone",
        "outbox rows/s",
        "of transport"
    );
    for name in ["memory", "rabbitmq"] {
        let mut ceiling = Vec::new();
        let mut writes = Vec::new();
        let mut relay = Vec::new();
        let mut path = Vec::new();
        let mut skipped = false;
        for round in 0..3 {
            let broker = match name {
                "memory" => Broker::memory().await,
                _ => {
                    let exchange = format!("bench_outbox_{}_{round}", std::process::id());
                    match Broker::rabbitmq(&exchange).await {
                        Some(b) => b,
                        None => {
                            skipped = true;
                            break;
                        }
                    }
                }
            };
            ceiling.push(transport_rate(&broker, n).await);
            writes.push(outbox_rate(&db, &broker, n, Timed::Writes).await);
            relay.push(outbox_rate(&db, &broker, n, Timed::Relay).await);
            path.push(outbox_rate(&db, &broker, n, Timed::Both).await);
            broker.close().await;
        }
        if skipped {
            println!("{name:<10} skipped: RabbitMQ on 127.0.0.1:5672 is not reachable");
            continue;
        }
        let (c, w, r, p) = (median(ceiling), median(writes), median(relay), median(path));
        println!(
            "{name:<10} {c:>16.0} {w:>14.0} {r:>14.0} {p:>14.0} {:>13.0}%",
            100.0 * p / c
        );
    }
    let (ns, bytes) = reencode_ns();
    println!(
        "encoding once saves the relay {:.1} µs of CPU per event (JSON decode + encode of a \
         {bytes}-byte body), {:.0} events/s of one core",
        ns / 1000.0,
        1e9 / ns
    );

    admin
        .execute_unprepared(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}
