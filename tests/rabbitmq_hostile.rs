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

use std::time::Duration;

use cqrs_sync::transports::rabbitmq::Connections;
use cqrs_sync::{CqrsConfig, CqrsSystem};
use serde_json::json;
use support::db::{Backend, TestDb};
use support::hostile::{message_of, rows, save, tables};
use support::rabbitmq::{Vhost, connect};
use support::wait_until;

const PATIENCE: Duration = Duration::from_secs(60);

async fn replica(
    vhost: &Vhost,
    db: &TestDb,
    queue: &str,
) -> (
    CqrsSystem,
    actix::Addr<cqrs_sync::transports::rabbitmq::RabbitMqTransport>,
) {
    let (transport, addr) = connect(vhost.config()).await;
    let system =
        support::hostile::replica_system(CqrsConfig::default(), transport, db, queue).await;
    (system, addr)
}

#[actix_rt::test]
async fn every_hostile_message_is_dead_lettered_and_the_good_ones_behind_it_applied() {
    support::init_tracing();
    let vhost = Vhost::create("cqrs_hostile");
    let db = TestDb::new(Backend::Postgres, "hostile").await;
    tables(&db).await;
    let (system, addr) = replica(&vhost, &db, "hostile").await;
    support::hostile::every_hostile_message_is_dead_lettered(&system, &db, "dead_letter_hostile")
        .await;
    let connections = addr
        .send(Connections)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(connections, 1, "the connection was never lost");
    system.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    db.cleanup().await;
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
