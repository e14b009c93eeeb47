//! The replica pipeline end to end on the memory transport: retries, dead letters, expiry,
//! malformed input, panics, only-direct-syncs and graceful shutdown.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use cqrs_sync::CqrsSystemExt;
use cqrs_sync::transport::{HEADER_ERROR, HEADER_REASON, Headers, OutgoingMessage};
use cqrs_sync::transports::memory::{MemoryBroker, ParkLog};
use cqrs_sync::{
    Applied, Codec, CqrsConfig, CqrsSystem, CqrsSystemBuilder, Error, ErrorKind, JsonObject,
    MemoryTable, ReplicaEvent, ReplicaModel, Route, SignalType, TransportHandle, handler_fn,
};
use cqrs_transports::conformance::collect;
use support::{body, row, unique, wait_until};

const PATIENCE: Duration = Duration::from_secs(20);

fn raw(route: Route, body: Vec<u8>, content_type: &str) -> OutgoingMessage {
    OutgoingMessage {
        route,
        body,
        content_type: content_type.to_owned(),
        headers: Headers::new(),
        expiration: None,
    }
}

async fn save(transport: &TransportHandle, cqrs_id: &str, data: JsonObject) {
    let message = raw(
        Route::broadcast(cqrs_id),
        body(SignalType::Save, cqrs_id, data),
        "text/plain",
    );
    transport
        .publish(message)
        .await
        .unwrap_or_else(|e| panic!("publish: {e}"));
}

async fn start(builder: CqrsSystemBuilder, transport: &TransportHandle) -> CqrsSystem {
    builder
        .transport(transport.clone())
        .start()
        .await
        .unwrap_or_else(|e| panic!("start: {e}"))
}

async fn wait_queue(t: &TransportHandle, queue: &str, ready: u64, unacked: u64) {
    wait_until(
        &format!("{queue} to hold ready={ready} unacked={unacked}"),
        PATIENCE,
        || async {
            t.inspect(queue)
                .await
                .is_ok_and(|s| s.ready == ready && s.unacked == unacked)
        },
    )
    .await;
}

#[actix_rt::test]
async fn a_failing_handler_is_retried_max_retries_times_then_dead_lettered() {
    support::init_tracing();
    let queue = unique("retry");
    let (transport, broker) = MemoryBroker::default().start_transport();
    let attempts = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&attempts);
    let config = CqrsConfig::default()
        .with_queue(&queue)
        .with_max_retries(Some(3))
        .with_retry_delay(Duration::from_millis(50));
    let system = start(
        CqrsSystem::builder()
            .config(config)
            .replica(ReplicaModel::new(
                "failing",
                handler_fn(move |_: ReplicaEvent| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async { Err(Error::handler("the replica database is read-only")) }
                }),
            )),
        &transport,
    )
    .await;

    save(&transport, "failing", row(1, 0, "x")).await;
    let dlq = format!("dead_letter_{queue}");
    wait_queue(&transport, &dlq, 1, 0).await;
    wait_queue(&transport, &queue, 0, 0).await;
    system.wait_idle().await.unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(
        attempts.load(Ordering::SeqCst),
        4,
        "the first attempt and exactly 3 retries"
    );
    let parked = broker.send(ParkLog).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(parked.len(), 3);
    for (i, p) in parked.iter().enumerate() {
        assert_eq!(p.delay, Duration::from_millis(50), "configured delay");
        assert_eq!(
            p.routing_key,
            format!("cqrs.{queue}.failing"),
            "retry copies go to this replica only"
        );
        let copy = Codec::Json
            .decode(&p.body, None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            copy.retries as usize,
            i + 1,
            "each copy carries retries + 1"
        );
    }
    support::expect_retries_exhausted(&transport, &dlq, "failing", 3, "read-only").await;
    let m = system.metrics();
    assert_eq!((m.retried, m.dead_lettered, m.applied), (3, 1, 0));
    system.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
}

#[actix_rt::test]
async fn expired_malformed_and_unknown_messages_are_dead_lettered_with_a_reason() {
    support::init_tracing();
    let queue = unique("reject");
    let (transport, _broker) = MemoryBroker::default().start_transport();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let system = start(
        CqrsSystem::builder()
            .config(CqrsConfig::default().with_queue(&queue))
            .replica(ReplicaModel::new(
                "book",
                handler_fn(move |_: ReplicaEvent| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async { Ok(Applied::Created) }
                }),
            )),
        &transport,
    )
    .await;
    // A binding for an id the replica does not know, as left behind by a removed model.
    transport
        .declare(cqrs_sync::transport::Declare {
            queue: queue.clone(),
            dead_letter_queue: format!("dead_letter_{queue}"),
            cqrs_ids: vec!["ghost".into()],
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let expired = br#"{"signal_type":"SAVE","cqrs_id":"book","instance_data":{"id":1,"cqrs_revision":0,"cqrs_updated":"2026-11-27 17:08:25+00:00"},"previous_data":null,"instance_pk":1,"correlation_id":null,"retries":0,"expires":"2020-01-01T00:00:00+00:00","meta":{}}"#;
    let cases: Vec<(Route, Vec<u8>, &str, &str)> = vec![
        (
            Route::broadcast("book"),
            expired.to_vec(),
            "text/plain",
            "expired",
        ),
        (
            Route::broadcast("book"),
            b"{\"signal_type\":\"SAVE\",".to_vec(),
            "text/plain",
            "decode",
        ),
        (
            Route::broadcast("book"),
            br#"{"signal_type":"SAVE","cqrs_id":"book","instance_pk":1}"#.to_vec(),
            "text/plain",
            "decode",
        ),
        (
            Route::broadcast("book"),
            br#"{"signal_type":"UPSERT","cqrs_id":"book","instance_data":{},"instance_pk":1}"#
                .to_vec(),
            "text/plain",
            "decode",
        ),
        (
            Route::broadcast("book"),
            body(SignalType::Save, "book", row(2, 0, "x")),
            "application/xml",
            "decode",
        ),
        (
            Route::broadcast("ghost"),
            body(SignalType::Save, "ghost", row(3, 0, "x")),
            "text/plain",
            "unknown_cqrs_id",
        ),
    ];
    for (route, bytes, ct, _) in &cases {
        transport
            .publish(raw(route.clone(), bytes.clone(), ct))
            .await
            .unwrap_or_else(|e| panic!("publish: {e}"));
    }
    let dlq = format!("dead_letter_{queue}");
    wait_queue(&transport, &dlq, cases.len() as u64, 0).await;
    wait_queue(&transport, &queue, 0, 0).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "nothing reached the handler"
    );
    let dead = collect(&transport, &dlq, 100, true).await;
    let seen = dead.wait_for(cases.len(), "dead letters").await;
    for ((_, bytes, _, reason), letter) in cases.iter().zip(&seen) {
        assert_eq!(&letter.body, bytes, "the body is kept as received");
        assert_eq!(
            letter.headers.get(HEADER_REASON).map(String::as_str),
            Some(*reason)
        );
        assert!(
            letter
                .headers
                .get(HEADER_ERROR)
                .is_some_and(|e| !e.is_empty())
        );
    }
    assert_eq!(system.metrics().dead_lettered, cases.len() as u64);
    system.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
}

#[actix_rt::test]
async fn invalid_data_is_dead_lettered_without_retries() {
    support::init_tracing();
    let queue = unique("invalid");
    let (transport, broker) = MemoryBroker::default().start_transport();
    let system = start(
        CqrsSystem::builder()
            .config(CqrsConfig::default().with_queue(&queue))
            .replica(ReplicaModel::new("book", MemoryTable::new())),
        &transport,
    )
    .await;
    let mut data = row(1, 0, "x");
    data.remove("cqrs_revision");
    save(&transport, "book", data).await;
    let dlq = format!("dead_letter_{queue}");
    wait_queue(&transport, &dlq, 1, 0).await;
    let dead = collect(&transport, &dlq, 10, true).await;
    let seen = dead.wait_for(1, "dead letter").await;
    assert_eq!(
        seen[0].headers.get(HEADER_REASON).map(String::as_str),
        Some(ErrorKind::InvalidData.as_str())
    );
    assert!(
        broker.send(ParkLog).await.unwrap_or_default().is_empty(),
        "no retry for data that cannot apply"
    );
    system.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
}

#[actix_rt::test]
async fn a_panicking_handler_restarts_its_worker_and_the_message_is_redelivered() {
    support::init_tracing();
    let queue = unique("panic");
    let (transport, _broker) = MemoryBroker::default().start_transport();
    let table = MemoryTable::new();
    let store = table.clone();
    let panicked = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&panicked);
    let system = start(
        CqrsSystem::builder()
            .config(CqrsConfig::default().with_queue(&queue).with_workers(2))
            .replica(ReplicaModel::new(
                "book",
                handler_fn(move |event: ReplicaEvent| {
                    let (store, flag) = (store.clone(), Arc::clone(&flag));
                    async move {
                        if event.pk() == 7 && !flag.swap(true, Ordering::SeqCst) {
                            panic!("simulated bug on row 7");
                        }
                        store.apply_event(&event)
                    }
                }),
            )),
        &transport,
    )
    .await;
    for id in 1..=10 {
        save(&transport, "book", row(id, 0, "x")).await;
    }
    wait_until("all 10 rows applied", PATIENCE, || async {
        table.len() == 10
    })
    .await;
    wait_queue(&transport, &queue, 0, 0).await;
    assert!(panicked.load(Ordering::SeqCst));
    let m = system.metrics();
    assert_eq!(m.restarts, 1, "the worker was restarted once");
    assert!(m.requeued >= 1, "the in-flight message was handed back");
    assert_eq!(m.dead_lettered, 0);
    assert_eq!(
        table.get("7").map(|r| r.data["name"].clone()),
        Some("x".into())
    );
    system.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
}

#[actix_rt::test]
async fn a_handler_that_always_panics_ends_in_the_dead_letter_queue() {
    support::init_tracing();
    let queue = unique("poison");
    let (transport, _broker) = MemoryBroker::default().start_transport();
    let system = start(
        CqrsSystem::builder()
            .config(
                CqrsConfig::default()
                    .with_queue(&queue)
                    .with_max_retries(Some(1))
                    .with_retry_delay(Duration::from_millis(10)),
            )
            .replica(ReplicaModel::new(
                "book",
                handler_fn(|_: ReplicaEvent| async { panic!("always") }),
            )),
        &transport,
    )
    .await;
    save(&transport, "book", row(1, 0, "x")).await;
    let dlq = format!("dead_letter_{queue}");
    wait_queue(&transport, &dlq, 1, 0).await;
    wait_queue(&transport, &queue, 0, 0).await;
    assert!(system.metrics().restarts >= 2);
    system.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
}

#[actix_rt::test]
async fn only_direct_syncs_decides_by_routing_key() {
    support::init_tracing();
    let queue = unique("direct");
    let (transport, _broker) = MemoryBroker::default().start_transport();
    let audit = MemoryTable::new();
    let plain = MemoryTable::new();
    let system = start(
        CqrsSystem::builder()
            .config(CqrsConfig::default().with_queue(&queue))
            .replica(ReplicaModel::new("audit", audit.clone()).with_only_direct_syncs(true))
            .replica(ReplicaModel::new("plain", plain.clone())),
        &transport,
    )
    .await;
    let publish = |route: Route, id: &str, pk: i64| {
        transport.publish(raw(
            route,
            body(SignalType::Sync, id, row(pk, 0, "x")),
            "text/plain",
        ))
    };
    publish(Route::broadcast("audit"), "audit", 1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    publish(Route::queue(&queue, "audit"), "audit", 2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    publish(Route::broadcast("plain"), "plain", 1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    publish(Route::queue(&queue, "plain"), "plain", 2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_queue(&transport, &queue, 0, 0).await;
    system.wait_idle().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        audit.snapshot().keys().cloned().collect::<Vec<_>>(),
        ["2"],
        "broadcast SYNC ignored, directed applied"
    );
    assert_eq!(plain.len(), 2, "without the flag both apply");
    assert_eq!(system.metrics().skipped, 1);
    system.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
}

#[actix_rt::test]
async fn shutdown_finishes_in_flight_work_and_loses_nothing() {
    support::init_tracing();
    let queue = unique("shutdown");
    let (transport, _broker) = MemoryBroker::default().start_transport();
    let table = MemoryTable::new();
    let store = table.clone();
    let system = start(
        CqrsSystem::builder()
            .config(
                CqrsConfig::default()
                    .with_queue(&queue)
                    .with_prefetch(20)
                    .with_batch_size(5),
            )
            .replica(ReplicaModel::new(
                "book",
                handler_fn(move |event: ReplicaEvent| {
                    let store = store.clone();
                    async move {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        store.apply_event(&event)
                    }
                }),
            )),
        &transport,
    )
    .await;
    for id in 0..200 {
        save(&transport, "book", row(id, 0, "x")).await;
    }
    wait_until("some rows applied", PATIENCE, || async {
        table.len() >= 10
    })
    .await;
    system
        .shutdown()
        .await
        .unwrap_or_else(|e| panic!("shutdown: {e}"));
    let stats = transport
        .inspect(&queue)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stats.unacked, 0, "nothing left unacknowledged");
    assert_eq!(
        table.len() as u64 + stats.ready,
        200,
        "every message is applied or still queued"
    );
    assert!(table.len() < 200 || stats.ready == 0);
}

#[actix_rt::test]
async fn a_replica_service_needs_a_queue() {
    let (transport, _broker) = MemoryBroker::default().start_transport();
    let err = CqrsSystem::builder()
        .replica(ReplicaModel::new("book", MemoryTable::new()))
        .transport(transport)
        .start()
        .await
        .expect_err("no queue configured");
    assert_eq!(err.kind(), ErrorKind::Config);
}
