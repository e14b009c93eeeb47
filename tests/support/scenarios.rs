//! Scenarios every broker transport must pass end to end, run by each transport's tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cqrs_sync::CqrsSystemExt;
use cqrs_sync::transport::{HEADER_ERROR, HEADER_REASON, Headers, OutgoingMessage};
use cqrs_sync::{
    CqrsConfig, CqrsSystem, Error, MasterModel, MemoryTable, ReplicaEvent, ReplicaModel,
    RetryPolicy, Route, SignalType, TransportHandle, handler_fn,
};
use cqrs_transports::conformance::collect;
use futures_util::future::join_all;

use super::{body, row, wait_until};

const PATIENCE: Duration = Duration::from_secs(60);

/// A poison message goes through 3 parked retries into the dead-letter queue with its reason,
/// while 2,000 good messages behind it are applied without waiting.
pub async fn poison_is_parked_then_dead_lettered_while_others_flow(
    transport: &TransportHandle,
    base: &CqrsConfig,
) {
    let queue = "poisoned";
    let attempts = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&attempts);
    let good = MemoryTable::new();
    let delay = Duration::from_secs(2);
    let system = CqrsSystem::builder()
        .config(base.clone().with_queue(queue).with_workers(2))
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
    super::expect_retries_exhausted(transport, &dlq, "failing", 3, "read-only").await;
    system.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
}

/// Malformed bodies and an id no model takes are dead-lettered with a reason, as received; the
/// good message behind them is applied.
pub async fn malformed_and_unknown_are_dead_lettered(
    transport: &TransportHandle,
    base: &CqrsConfig,
) {
    let queue = "rejecting";
    let table = MemoryTable::new();
    let system = CqrsSystem::builder()
        .config(base.clone().with_queue(queue))
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
    let dead = collect(transport, &dlq, 10, true).await;
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
