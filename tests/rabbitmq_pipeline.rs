//! The replica pipeline over the real RabbitMQ broker: a Rust master feeding a Rust replica
//! (saves, updates, deletes, broadcast and directed syncs), a poison message that goes
//! through its parked retries into the dead-letter queue while the rest flows, and malformed
//! bodies and unknown ids dead-lettered with a reason.

#![cfg(feature = "rabbitmq")]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cqrs_sync::CqrsSystemExt;
use cqrs_sync::transport::{HEADER_ERROR, HEADER_REASON, Headers, OutgoingMessage};
use cqrs_sync::{
    CqrsConfig, CqrsSystem, Error, MasterModel, MemoryTable, ReplicaEvent, ReplicaModel,
    RetryPolicy, Route, SignalType, handler_fn,
};
use cqrs_transports::conformance::collect;
use futures_util::future::join_all;
use serde_json::Value;
use support::rabbitmq::{Vhost, connect};
use support::{body, row, wait_until};

const PATIENCE: Duration = Duration::from_secs(60);

fn names(table: &MemoryTable) -> BTreeMap<String, (i64, Value)> {
    table
        .snapshot()
        .into_iter()
        .map(|(pk, r)| {
            (
                pk,
                (
                    r.revision,
                    r.data.get("name").cloned().unwrap_or(Value::Null),
                ),
            )
        })
        .collect()
}

#[actix_rt::test]
async fn a_rust_master_feeds_rust_replicas_through_the_broker() {
    support::init_tracing();
    let vhost = Vhost::create("cqrs_pipeline");
    let (transport, _addr) = connect(vhost.config()).await;
    let (one, two) = (MemoryTable::new(), MemoryTable::new());
    let replica = |queue: &str, table: &MemoryTable| {
        CqrsSystem::builder()
            .config(CqrsConfig::default().with_queue(queue).with_workers(4))
            .replica(ReplicaModel::new("author", table.clone()))
            .transport(transport.clone())
            .start()
    };
    let r1 = replica("replica_one", &one)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let r2 = replica("replica_two", &two)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let master = CqrsSystem::builder()
        .master(MasterModel::new("author"))
        .transport(transport.clone())
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let publisher = master.publisher();

    let n = 500;
    let saves: Vec<_> = (1..=n)
        .map(|id| publisher.save("author", row(id, 0, &format!("a{id}"))))
        .chain((1..=n).map(|id| publisher.save("author", row(id, 1, &format!("a{id}-v1")))))
        .collect();
    for r in join_all(saves).await {
        r.unwrap_or_else(|e| panic!("save: {e}"));
    }
    for id in (1..=n).step_by(10) {
        publisher
            .delete("author", Value::from(id), 2, chrono::Utc::now())
            .await
            .unwrap_or_else(|e| panic!("delete: {e}"));
    }
    // A directed SYNC reaches replica one only; a broadcast SYNC reaches both.
    publisher
        .sync("author", row(2, 7, "direct"), Some("replica_one"))
        .await
        .unwrap_or_else(|e| panic!("sync: {e}"));
    publisher
        .sync("author", row(3, 8, "broadcast"), None)
        .await
        .unwrap_or_else(|e| panic!("sync: {e}"));

    let mut expected: BTreeMap<String, (i64, Value)> = (1..=n)
        .filter(|id| (id - 1) % 10 != 0)
        .map(|id| (id.to_string(), (1, Value::from(format!("a{id}-v1")))))
        .collect();
    expected.insert("3".into(), (8, Value::from("broadcast")));
    let mut expected_one = expected.clone();
    expected_one.insert("2".into(), (7, Value::from("direct")));
    wait_until("replica one converges", PATIENCE, || async {
        names(&one) == expected_one
    })
    .await;
    wait_until("replica two converges", PATIENCE, || async {
        names(&two) == expected
    })
    .await;
    for s in [r1, r2, master] {
        s.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    }
}

#[actix_rt::test]
async fn a_poison_message_is_parked_max_retries_times_then_dead_lettered_while_others_flow() {
    support::init_tracing();
    let vhost = Vhost::create("cqrs_poison");
    let (transport, _addr) = connect(vhost.config()).await;
    let queue = "poisoned";
    let attempts = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&attempts);
    let good = MemoryTable::new();
    let delay = Duration::from_secs(2);
    let system = CqrsSystem::builder()
        .config(CqrsConfig::default().with_queue(queue).with_workers(2))
        .replica(
            ReplicaModel::new(
                "failing",
                handler_fn(move |_: ReplicaEvent| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async { Err(Error::handler("the replica database is read-only")) }
                }),
            )
            .with_retry_policy(RetryPolicy::constant(3, delay)),
        )
        .replica(ReplicaModel::new("book", good.clone()))
        .master(MasterModel::new("failing"))
        .master(MasterModel::new("book"))
        .transport(transport.clone())
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let publisher = system.publisher();
    publisher
        .save("failing", row(1, 0, "always fails"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let n = 2000;
    let saves: Vec<_> = (1..=n)
        .map(|id| publisher.save("book", row(id, 0, "ok")))
        .collect();
    for r in join_all(saves).await {
        r.unwrap_or_else(|e| panic!("{e}"));
    }
    wait_until("the good messages are applied", PATIENCE, || async {
        good.len() == n as usize
    })
    .await;
    let dlq = format!("dead_letter_{queue}");
    // The retries wait three times two seconds in the broker; the good messages did not wait.
    let before = transport
        .inspect(&dlq)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        before.ready, 0,
        "all {n} good messages applied while the poison message was still being retried"
    );
    wait_until("the poison message is dead-lettered", PATIENCE, || async {
        transport.inspect(&dlq).await.is_ok_and(|s| s.ready == 1)
    })
    .await;
    system.wait_idle().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        4,
        "one attempt and 3 retries"
    );
    let m = system.metrics();
    assert_eq!((m.retried, m.dead_lettered), (3, 1));
    support::expect_retries_exhausted(&transport, &dlq, "failing", 3, "read-only").await;
    system.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
}

#[actix_rt::test]
async fn malformed_bodies_and_unknown_ids_are_dead_lettered_with_a_reason() {
    support::init_tracing();
    let vhost = Vhost::create("cqrs_reject");
    let (transport, _addr) = connect(vhost.config()).await;
    let queue = "rejecting";
    let table = MemoryTable::new();
    let system = CqrsSystem::builder()
        .config(CqrsConfig::default().with_queue(queue))
        .replica(ReplicaModel::new("book", table.clone()))
        .transport(transport.clone())
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // A binding left behind by a removed model: its messages reach the queue, no model takes them.
    transport
        .declare(cqrs_sync::transport::Declare {
            queue: queue.to_owned(),
            dead_letter_queue: format!("dead_letter_{queue}"),
            cqrs_ids: vec!["ghost".into()],
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let cases: Vec<(Route, Vec<u8>, &str)> = vec![
        (
            Route::broadcast("book"),
            b"{\"signal_type\":\"SAVE\",".to_vec(),
            "decode",
        ),
        (
            Route::broadcast("book"),
            br#"{"signal_type":"SAVE","cqrs_id":"book","instance_pk":1}"#.to_vec(),
            "decode",
        ),
        (
            Route::broadcast("ghost"),
            body(SignalType::Save, "ghost", row(3, 0, "x")),
            "unknown_cqrs_id",
        ),
    ];
    for (route, bytes, _) in &cases {
        transport
            .publish(OutgoingMessage {
                route: route.clone(),
                body: bytes.clone(),
                content_type: "text/plain".to_owned(),
                headers: Headers::new(),
                expiration: None,
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let good = body(SignalType::Save, "book", row(1, 0, "fine"));
    transport
        .publish(OutgoingMessage {
            route: Route::broadcast("book"),
            body: good,
            content_type: "text/plain".to_owned(),
            headers: Headers::new(),
            expiration: None,
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let dlq = format!("dead_letter_{queue}");
    wait_until("the rejects are dead-lettered", PATIENCE, || async {
        transport
            .inspect(&dlq)
            .await
            .is_ok_and(|s| s.ready == cases.len() as u64)
    })
    .await;
    wait_until("the good one is applied", PATIENCE, || async {
        table.len() == 1
    })
    .await;
    system.wait_idle().await.unwrap_or_else(|e| panic!("{e}"));
    let dead = collect(&transport, &dlq, 10, true).await;
    let seen = dead.wait_for(cases.len(), "dead letters").await;
    for ((_, bytes, reason), letter) in cases.iter().zip(&seen) {
        assert_eq!(&letter.body, bytes, "the body is kept as received");
        assert_eq!(
            letter.headers.get(HEADER_REASON).map(String::as_str),
            Some(*reason)
        );
        assert!(letter.headers.contains_key(HEADER_ERROR));
    }
    system.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
}
