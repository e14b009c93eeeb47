//! Hostile messages against a replica on the real RabbitMQ and PostgreSQL: one message must
//! never stall the others.
//!
//! - Every class of bad message (200,000-character ids, signal types, `expires` and wrongly
//!   typed keys, bodies that are not JSON or not MessagePack, NUL bytes, numbers and texts too
//!   large for their columns, a pk that disagrees with its data, a negative revision, a long
//!   unknown content type, an expired message), each followed by good ones: every bad one ends
//!   in the dead-letter queue with its reason and no retry, every good one is applied, and the
//!   connection is never lost.
//! - A dead-letter queue deleted by an operator while the replica runs is declared again.
//! - When it cannot be declared again (the user may not), the delivery is handed back with a
//!   growing pause instead of thousands of times a second, and lands once it can.

#![cfg(all(feature = "rabbitmq", feature = "postgres"))]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cqrs_orm_adapters::ReplicaTable;
use cqrs_sync::CqrsSystemExt;
use cqrs_sync::transport::{HEADER_ERROR, HEADER_REASON, Headers, OutgoingMessage};
use cqrs_sync::transports::rabbitmq::Connections;
use cqrs_sync::{CqrsConfig, CqrsSystem, ReplicaModel, Route};
use futures_util::future::join_all;
use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::{Value, json};
use support::db::{Backend, TestDb};
use support::entities::{child, parent};
use support::rabbitmq::{Vhost, connect};
use support::wait_until;

const PATIENCE: Duration = Duration::from_secs(60);

fn long() -> String {
    "x".repeat(200_000)
}

/// A SAVE of child `id` (of parent 1) as a master sends it, with `change` applied to the body.
fn save(id: i64, change: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Vec<u8> {
    let mut body = json!({
        "signal_type": "SAVE",
        "cqrs_id": "child",
        "instance_data": {"id": id, "parent_id": 1, "label": format!("c{id}"), "qty": 1,
                          "price": "9.99", "extra": {"n": id}, "cqrs_revision": 0,
                          "cqrs_updated": "2026-11-27 17:08:25+00:00"},
        "previous_data": null,
        "instance_pk": id,
        "correlation_id": null,
        "retries": 0,
        "expires": null,
        "meta": {},
    });
    if let Value::Object(map) = &mut body {
        change(map);
    }
    serde_json::to_vec(&body).unwrap_or_else(|e| panic!("{e}"))
}

fn data(map: &mut serde_json::Map<String, Value>) -> &mut serde_json::Map<String, Value> {
    match map.get_mut("instance_data") {
        Some(Value::Object(d)) => d,
        _ => unreachable!("the body has instance_data"),
    }
}

fn message(body: Vec<u8>, content_type: &str) -> OutgoingMessage {
    OutgoingMessage {
        route: Route::broadcast("child"),
        body,
        content_type: content_type.to_owned(),
        headers: Headers::new(),
        expiration: None,
    }
}

/// Every class of bad message, with the reason its dead letter must carry.
fn hostile() -> Vec<(&'static str, OutgoingMessage)> {
    let json = |body| message(body, "text/plain");
    vec![
        (
            "unknown_cqrs_id",
            json(save(1, |m| {
                m.insert("cqrs_id".into(), json!(long()));
            })),
        ),
        (
            "decode",
            json(save(2, |m| {
                m.insert("signal_type".into(), json!(long()));
            })),
        ),
        (
            "decode",
            json(save(3, |m| {
                m.insert("expires".into(), json!(long()));
            })),
        ),
        (
            "decode",
            json(save(4, |m| {
                m.insert("retries".into(), json!(long()));
            })),
        ),
        (
            "decode",
            json(save(5, |m| {
                m.insert("previous_data".into(), json!(long()));
            })),
        ),
        ("decode", json(long().into_bytes())),
        (
            "decode",
            message(long().into_bytes(), "application/msgpack"),
        ),
        ("decode", message(save(6, |_| {}), &"y".repeat(200))),
        (
            "invalid_data",
            json(save(7, |m| {
                data(m).insert("label".into(), json!("nul \u{0} byte"));
            })),
        ),
        (
            "invalid_data",
            json(save(8, |m| {
                data(m).insert("extra".into(), json!({"k": "nul \u{0} in json"}));
            })),
        ),
        (
            "invalid_data",
            json(save(9, |m| {
                data(m).insert("price".into(), json!("123456789.99"));
            })),
        ),
        (
            "invalid_data",
            json(save(10, |m| {
                data(m).insert("label".into(), json!(long()));
            })),
        ),
        (
            "invalid_data",
            json(save(11, |m| {
                m.insert("instance_pk".into(), json!(12));
            })),
        ),
        (
            "invalid_data",
            json(save(13, |m| {
                data(m).insert("cqrs_revision".into(), json!(-1));
            })),
        ),
        (
            "invalid_data",
            json(save(14, |m| {
                m.insert("instance_pk".into(), json!({"id": long()}));
            })),
        ),
        (
            "expired",
            json(save(15, |m| {
                m.insert("expires".into(), json!("2020-01-01T00:00:00+00:00"));
            })),
        ),
    ]
}

/// The child table (a bounded text, a decimal, JSON, a foreign key) and its parent row 1.
async fn tables(db: &TestDb) {
    use sea_orm::{ActiveModelTrait, ActiveValue};
    db.create(parent::Entity).await;
    db.create(child::Entity).await;
    parent::ActiveModel {
        id: ActiveValue::Set(1),
        name: ActiveValue::Set("one".into()),
        cqrs_revision: ActiveValue::Set(0),
        cqrs_updated: ActiveValue::Set(chrono::Utc::now()),
    }
    .insert(&db.db)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

async fn replica(
    vhost: &Vhost,
    db: &TestDb,
    queue: &str,
) -> (
    CqrsSystem,
    actix::Addr<cqrs_sync::transports::rabbitmq::RabbitMqTransport>,
) {
    let (transport, addr) = connect(vhost.config()).await;
    let table = ReplicaTable::new(db.db.clone(), child::Entity).unwrap_or_else(|e| panic!("{e}"));
    let system = CqrsSystem::builder()
        .config(
            CqrsConfig::default()
                .with_queue(queue)
                .with_workers(1)
                .with_retry_delay(Duration::from_millis(200))
                .with_max_retries(Some(3)),
        )
        .replica(ReplicaModel::new("child", table))
        .transport(transport)
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (system, addr)
}

async fn rows(db: &TestDb) -> u64 {
    child::Entity::find()
        .count(&db.db)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

#[actix_rt::test]
async fn every_hostile_message_is_dead_lettered_and_the_good_ones_behind_it_applied() {
    support::init_tracing();
    let vhost = Vhost::create("cqrs_hostile");
    let db = TestDb::new(Backend::Postgres, "hostile").await;
    tables(&db).await;
    let (system, addr) = replica(&vhost, &db, "hostile").await;
    let transport = system.transport().clone();
    let dead =
        cqrs_transports::conformance::collect(&transport, "dead_letter_hostile", 100, true).await;

    let bad = hostile();
    let per_bad = 100;
    let started = Instant::now();
    let mut sends = Vec::new();
    let mut next_id = 1_000;
    for (_, message) in bad.iter().cloned() {
        sends.push(transport.publish(message));
        for _ in 0..per_bad {
            next_id += 1;
            sends.push(transport.publish(message_of(save(next_id, |_| {}))));
        }
    }
    for result in join_all(sends).await {
        result.unwrap_or_else(|e| panic!("publish: {e}"));
    }
    let good = (bad.len() * per_bad) as u64;
    let letters = dead
        .wait_for(bad.len(), "every hostile message dead-lettered")
        .await;
    wait_until("every good message applied", PATIENCE, || {
        let db = &db;
        async move { rows(db).await == good }
    })
    .await;
    let took = started.elapsed();
    system.wait_idle().await.unwrap_or_else(|e| panic!("{e}"));

    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for letter in &letters {
        let reason = letter
            .headers
            .get(HEADER_REASON)
            .cloned()
            .unwrap_or_default();
        let error = letter
            .headers
            .get(HEADER_ERROR)
            .cloned()
            .unwrap_or_default();
        assert!(!error.is_empty(), "{reason}: the dead letter says why");
        assert!(
            error.len() <= 2_100,
            "{reason}: an error header of {} bytes",
            error.len()
        );
        *reasons.entry(reason).or_default() += 1;
    }
    let mut expected: BTreeMap<String, usize> = BTreeMap::new();
    for (reason, _) in &bad {
        *expected.entry((*reason).to_owned()).or_default() += 1;
    }
    assert_eq!(
        reasons, expected,
        "one dead letter per hostile message, with its reason"
    );
    assert_eq!(
        dead.seen().len(),
        bad.len(),
        "nothing else was dead-lettered"
    );
    let m = system.metrics();
    assert_eq!(m.retried, 0, "nothing hostile was retried: {m:?}");
    let connections = addr
        .send(Connections)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(connections, 1, "the connection was never lost");
    eprintln!(
        "{} hostile and {good} good messages settled in {took:?}",
        bad.len()
    );
    system.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    db.cleanup().await;
}

fn message_of(body: Vec<u8>) -> OutgoingMessage {
    message(body, "text/plain")
}

#[actix_rt::test]
async fn a_deleted_dead_letter_queue_is_declared_again() {
    support::init_tracing();
    let vhost = Vhost::create("cqrs_dlq_deleted");
    let db = TestDb::new(Backend::Postgres, "dlq_deleted").await;
    tables(&db).await;
    let (system, addr) = replica(&vhost, &db, "orphaned").await;
    let transport = system.transport().clone();
    vhost.delete_queue("dead_letter_orphaned").await;

    for body in [
        b"not json".to_vec(),
        save(1, |m| {
            m.insert("cqrs_id".into(), json!("nobody"));
        }),
    ] {
        transport
            .publish(message_of(body))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    wait_until("both dead-lettered", PATIENCE, || {
        let m = system.metrics();
        async move { m.dead_lettered == 2 }
    })
    .await;
    assert_eq!(
        vhost.ready("dead_letter_orphaned"),
        2,
        "the queue is back with both"
    );
    assert_eq!(
        system.metrics().requeued,
        0,
        "declared again at the first failure"
    );
    let connections = addr
        .send(Connections)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(connections, 1);
    system.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    db.cleanup().await;
}

#[actix_rt::test]
async fn a_dead_letter_queue_that_cannot_come_back_holds_its_message_with_a_pause() {
    support::init_tracing();
    let vhost = Vhost::create("cqrs_dlq_refused");
    let db = TestDb::new(Backend::Postgres, "dlq_refused").await;
    tables(&db).await;
    let (system, _addr) = replica(&vhost, &db, "refused").await;
    let transport = system.transport().clone();
    vhost.delete_queue("dead_letter_refused").await;
    vhost.allow_configure("^(?!dead_letter_).*");

    transport
        .publish(message_of(b"not json".to_vec()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let window = Duration::from_secs(3);
    tokio::time::sleep(window).await;
    let handed_back = system.metrics().requeued;
    assert!(
        (1..=8).contains(&handed_back),
        "{handed_back} hand-backs in {window:?}: a growing pause, not a hot loop"
    );
    let good = save(7, |_| {});
    transport
        .publish(message_of(good))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_until("the good message applied meanwhile", PATIENCE, || {
        let db = &db;
        async move { rows(db).await == 1 }
    })
    .await;

    vhost.allow_configure(".*");
    wait_until(
        "dead-lettered once the queue could be declared",
        PATIENCE,
        || {
            let m = system.metrics();
            async move { m.dead_lettered == 1 }
        },
    )
    .await;
    assert_eq!(vhost.ready("dead_letter_refused"), 1);
    system.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    db.cleanup().await;
}

#[actix_rt::test]
async fn a_deleted_replica_queue_is_declared_again() {
    support::init_tracing();
    let vhost = Vhost::create("cqrs_queue_deleted");
    let db = TestDb::new(Backend::Postgres, "queue_deleted").await;
    tables(&db).await;
    let (system, _addr) = replica(&vhost, &db, "vanishing").await;
    let transport = system.transport().clone();
    vhost.delete_queue("vanishing").await;
    wait_until("the queue declared again", PATIENCE, || {
        let t = transport.clone();
        async move { t.inspect("vanishing").await.is_ok() }
    })
    .await;
    wait_until("a publish routed to it and applied", PATIENCE, || {
        let t = transport.clone();
        let db = &db;
        async move {
            // Until its bindings are back, the broker reports the publish unroutable.
            let _ = t.publish(message_of(save(1, |_| {}))).await;
            rows(db).await == 1
        }
    })
    .await;
    system.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    db.cleanup().await;
}
