//! The poison flood, on RabbitMQ and on Redis with PostgreSQL: hostile messages of every class
//! interleaved with valid ones, waiting in the queue as a backlog when the replica starts.
//! Every hostile one must end in the dead-letter queue with the reason of its class, every
//! valid one must be applied, and nothing may be retried. The replica's rate on the valid
//! messages is printed next to its rate on the same valid messages without the flood.
//!
//! By default 1,000 hostile and 10,000 valid messages; `CQRS_FLOOD=full` runs the 10,000 and
//! 100,000 of the README's figures:
//!
//! ```text
//! CQRS_FLOOD=full cargo test --release --all-features --test poison_flood -- --nocapture --test-threads 1
//! ```

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cqrs_sync::transport::{Declare, OutgoingMessage};
use cqrs_sync::{CqrsConfig, CqrsSystem, TransportHandle};
use futures_util::future::join_all;
use serde_json::{Value, json};
use support::db::{Backend, TestDb};
use support::hostile::{
    data, message, message_of, reason_counts, replica_system, rows, save, tables,
};

const QUEUE: &str = "flood";
const DLQ: &str = "dead_letter_flood";

/// How many hostile and valid messages.
fn sizes() -> (usize, usize) {
    if std::env::var("CQRS_FLOOD").is_ok_and(|v| v == "full") {
        (10_000, 100_000)
    } else {
        (1_000, 10_000)
    }
}

/// A JSON array or object nested `depth` deep.
fn nested(depth: usize) -> Vec<u8> {
    let mut body = "[".repeat(depth).into_bytes();
    body.extend(std::iter::repeat_n(b']', depth));
    body
}

/// Hostile message `i` (its class picked by `i`): its class, the reason its dead letter must
/// carry, and the message. Row ids from 1,000,000 keep them apart from the valid rows.
fn hostile(i: usize) -> (&'static str, &'static str, OutgoingMessage) {
    let id = 1_000_000 + i as i64;
    let json = message_of;
    let variant = i / 16;
    match i % 16 {
        0 => {
            let mut body = format!("not json {i} {{").into_bytes();
            body.extend([0, 0xff, 0xfe, b'"']);
            ("not JSON", "decode", json(body))
        }
        1 => {
            let mut rng = fastrand::Rng::with_seed(i as u64);
            let body: Vec<u8> = (0..rng.usize(1..512)).map(|_| rng.u8(..)).collect();
            (
                "MessagePack garbage",
                "decode",
                message(body, "application/msgpack"),
            )
        }
        2 => (
            "wrong type: signal_type",
            "decode",
            json(save(id, |m| {
                m.insert("signal_type".into(), json!(variant));
            })),
        ),
        3 => (
            "unknown signal type",
            "decode",
            json(save(id, |m| {
                m.insert("signal_type".into(), json!(format!("EXPLODE{variant}")));
            })),
        ),
        4 => (
            "wrong type: instance_data",
            "decode",
            json(save(id, |m| {
                m.insert("instance_data".into(), json!([id, "not an object"]));
            })),
        ),
        5 => (
            "wrong type: column",
            "invalid_data",
            json(save(id, |m| {
                data(m).insert("qty".into(), json!({"many": variant}));
            })),
        ),
        6 => (
            "unknown CQRS id",
            "unknown_cqrs_id",
            json(save(id, |m| {
                m.insert("cqrs_id".into(), json!(format!("nobody_{variant}")));
            })),
        ),
        7 => (
            "oversized field",
            "invalid_data",
            json(save(id, |m| {
                data(m).insert("label".into(), json!("x".repeat(100_000 + variant)));
            })),
        ),
        8 => (
            "oversized body",
            "decode",
            // 64 KiB to 1 MiB, cut off.
            json(
                format!(
                    "{{\"signal_type\": \"SAVE\", \"pad\": \"{}",
                    "y".repeat(64 << (10 + variant % 5))
                )
                .into_bytes(),
            ),
        ),
        9 => ("deep nesting", "decode", json(nested(10_000 + variant))),
        10 => (
            "NUL byte",
            "invalid_data",
            json(save(id, |m| {
                data(m).insert("label".into(), json!(format!("a\u{0}{variant}")));
            })),
        ),
        11 => (
            "out-of-range number",
            "invalid_data",
            json(save(id, |m| {
                data(m).insert("qty".into(), json!(9_000_000_000_i64 + variant as i64));
            })),
        ),
        12 => (
            "out-of-range date",
            "invalid_data",
            json(save(id, |m| {
                data(m).insert(
                    "cqrs_updated".into(),
                    json!(format!("2026-13-{:02} 25:61:00+00:00", 1 + variant % 28)),
                );
            })),
        ),
        13 => (
            "keys that are not columns",
            "invalid_data",
            json(save(id, |m| {
                let d = data(m);
                for column in ["parent_id", "label", "qty", "price", "extra"] {
                    d.remove(column);
                }
                d.insert("not_a_column".into(), json!(variant));
                d.insert("\u{0}also_not".into(), json!("x"));
            })),
        ),
        14 => (
            "mismatched pk",
            "invalid_data",
            json(save(id, |m| {
                m.insert("instance_pk".into(), json!(id + 1));
            })),
        ),
        _ => (
            "expired",
            "expired",
            json(save(id, |m| {
                m.insert("expires".into(), json!("2020-01-01T00:00:00+00:00"));
            })),
        ),
    }
}

/// Valid message `i` of row `i + 1`; every tenth one carries keys the table does not have,
/// which a replica ignores (WIRE.md section 1).
fn valid(i: usize) -> OutgoingMessage {
    message_of(save(i as i64 + 1, |m| {
        if i.is_multiple_of(10) {
            data(m).insert("added_on_the_master_later".into(), Value::from(i));
            m.insert("unknown_envelope_key".into(), Value::from("ignored"));
        }
    }))
}

/// Publishes `messages` (all confirmed) through `transport`, 2,000 in flight at a time.
async fn publish(transport: &TransportHandle, messages: Vec<OutgoingMessage>) {
    let mut messages = messages.into_iter().peekable();
    while messages.peek().is_some() {
        let sends: Vec<_> = messages
            .by_ref()
            .take(2_000)
            .map(|m| transport.publish(m))
            .collect();
        for r in join_all(sends).await {
            r.unwrap_or_else(|e| panic!("publish: {e}"));
        }
    }
}

/// What one drain measured.
struct Drain {
    valid_per_second: f64,
    reasons: BTreeMap<String, usize>,
}

/// Leaves `valid` valid messages and, when `flood`, `hostile` hostile ones interleaved with
/// them in the replica's queue, then starts the replica and times it until every valid one
/// is applied and every hostile one dead-lettered.
async fn drain(
    config: CqrsConfig,
    transport: TransportHandle,
    (hostile_n, valid_n): (usize, usize),
    flood: bool,
) -> Drain {
    let db = TestDb::new(Backend::Postgres, "flood").await;
    tables(&db).await;
    transport
        .declare(Declare {
            queue: QUEUE.to_owned(),
            dead_letter_queue: DLQ.to_owned(),
            cqrs_ids: vec!["child".to_owned()],
        })
        .await
        .unwrap_or_else(|e| panic!("declare: {e}"));

    let every = if flood {
        valid_n / hostile_n
    } else {
        usize::MAX
    };
    let mut classes: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
    let mut expected: BTreeMap<String, usize> = BTreeMap::new();
    let mut messages = Vec::with_capacity(valid_n + hostile_n);
    let mut h = 0;
    for i in 0..valid_n {
        if flood && i.is_multiple_of(every) && h < hostile_n {
            let (class, reason, m) = hostile(h);
            classes.entry(class).or_insert((0, reason)).0 += 1;
            *expected.entry(reason.to_owned()).or_default() += 1;
            messages.push(m);
            h += 1;
        }
        messages.push(valid(i));
    }
    publish(&transport, messages).await;
    let dead = cqrs_transports::conformance::collect(&transport, DLQ, 500, true).await;

    let started = Instant::now();
    let system: CqrsSystem = replica_system(config, transport.clone(), &db, QUEUE).await;
    support::wait_until(
        "every valid message applied",
        Duration::from_secs(600),
        || async { rows(&db).await == valid_n as u64 },
    )
    .await;
    let took = started.elapsed();
    let letters = dead
        .wait_for(h, "every hostile message dead-lettered")
        .await;
    system.wait_idle().await.unwrap_or_else(|e| panic!("{e}"));

    let reasons = reason_counts(letters.iter().map(|l| &l.headers));
    if flood {
        eprintln!("hostile classes (count, reason): {classes:?}");
    }
    assert_eq!(
        reasons, expected,
        "one dead letter per hostile message, with the reason of its class"
    );
    assert_eq!(dead.seen().len(), h, "nothing else was dead-lettered");
    let m = system.metrics();
    assert_eq!(m.retried, 0, "nothing was retried: {m:?}");
    assert_eq!(
        m.applied, valid_n as u64,
        "every valid message applied once: {m:?}"
    );
    system.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    // A reader still running would create the dead-letter stream again after the key space
    // is deleted.
    transport
        .cancel(dead.consumer, true)
        .await
        .unwrap_or_else(|e| panic!("cancel: {e}"));
    db.cleanup().await;
    Drain {
        valid_per_second: valid_n as f64 / took.as_secs_f64(),
        reasons,
    }
}

/// The flood and the plain backlog on one transport, and the ratio of their rates.
async fn flood_and_baseline(
    name: &str,
    fresh: impl AsyncFn() -> (CqrsConfig, TransportHandle, Box<dyn std::any::Any>),
) {
    let sizes = sizes();
    let (config, transport, guard) = fresh().await;
    let without = drain(config, transport, sizes, false).await;
    drop(guard);
    let (config, transport, guard) = fresh().await;
    let with = drain(config, transport, sizes, true).await;
    drop(guard);
    eprintln!(
        "poison flood on {name}: {} hostile and {} valid messages; dead letters by reason {:?}; \
         valid messages applied at {:.0}/s with the flood and {:.0}/s without: ratio {:.2}",
        sizes.0,
        sizes.1,
        with.reasons,
        with.valid_per_second,
        without.valid_per_second,
        with.valid_per_second / without.valid_per_second
    );
    assert!(without.reasons.is_empty());
}

#[cfg(all(feature = "rabbitmq", feature = "postgres"))]
#[actix_rt::test]
async fn the_poison_flood_is_dead_lettered_and_every_valid_message_applied_on_rabbitmq() {
    support::init_tracing();
    flood_and_baseline("RabbitMQ", async || {
        let vhost = support::rabbitmq::Vhost::create("cqrs_flood");
        let (transport, addr) = support::rabbitmq::connect(vhost.config()).await;
        let config = vhost.service_config();
        (
            config,
            transport,
            Box::new((addr, vhost)) as Box<dyn std::any::Any>,
        )
    })
    .await;
}

#[cfg(all(feature = "redis", feature = "postgres"))]
#[actix_rt::test]
async fn the_poison_flood_is_dead_lettered_and_every_valid_message_applied_on_redis() {
    support::init_tracing();
    flood_and_baseline("Redis", async || {
        let space = support::redis::Space::create("cqrs_flood");
        let (transport, addr) = support::redis::connect(space.config()).await;
        let config = space.service_config();
        (
            config,
            transport,
            Box::new((addr, space)) as Box<dyn std::any::Any>,
        )
    })
    .await;
}
