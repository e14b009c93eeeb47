//! The figures and the health of a replica after a known scenario, on the memory transport and
//! on the real RabbitMQ: applied, stale, duplicate, gap, retried and dead-lettered per CQRS id,
//! the lag histogram, the in-flight count; health turning not-ready when the broker connection
//! is gone and ready again after the reconnect.

mod support;

use std::time::Duration;

use chrono::Utc;
use cqrs_sync::transport::{Headers, OutgoingMessage};
use cqrs_sync::transports::memory::MemoryBroker;
use cqrs_sync::{
    CqrsConfig, CqrsSystem, CqrsSystemBuilder, Error, JsonObject, MemoryTable, ReplicaEvent,
    ReplicaModel, Route, SignalType, TransportHandle, handler_fn, stats::OTHER_ID, values,
};
use serde_json::json;
use support::{body, unique, wait_until};

const PATIENCE: Duration = Duration::from_secs(30);

/// A row as a master sends it, changed now.
fn author(id: i64, revision: i64) -> JsonObject {
    let v = json!({
        "id": id,
        "name": format!("v{revision}"),
        "cqrs_revision": revision,
        "cqrs_updated": values::format_datetime(&Utc::now()),
    });
    match v {
        serde_json::Value::Object(map) => map,
        _ => unreachable!("json! of an object is an object"),
    }
}

async fn send(transport: &TransportHandle, cqrs_id: &str, body: Vec<u8>) {
    transport
        .publish(OutgoingMessage {
            route: Route::broadcast(cqrs_id),
            body,
            content_type: "text/plain".to_owned(),
            headers: Headers::new(),
            expiration: None,
        })
        .await
        .unwrap_or_else(|e| panic!("publish: {e}"));
}

/// A replica of `author` (a memory table) and `book` (a handler that always fails, one retry).
async fn replica(transport: &TransportHandle) -> CqrsSystem {
    let config =
        CqrsConfig::from_toml_str("[replica]\nmax_retries = 1\nretry_delay = 0.05\njitter = 0.0\n")
            .map(|c| c.with_queue(unique("observed")))
            .unwrap_or_else(|e| panic!("{e}"));
    CqrsSystemBuilder::new()
        .config(config)
        .replica(ReplicaModel::new("author", MemoryTable::new()))
        .replica(ReplicaModel::new(
            "book",
            handler_fn(|_: ReplicaEvent| async { Err(Error::handler("the book table is locked")) }),
        ))
        .transport(transport.clone())
        .start()
        .await
        .unwrap_or_else(|e| panic!("start: {e}"))
}

/// Publishes the scenario and checks the figures once everything settled.
async fn scenario(transport: &TransportHandle, system: &CqrsSystem) {
    // author 1: created, updated, a duplicate, a stale SAVE, then a SAVE three revisions on.
    for revision in [0, 1, 1, 0, 5] {
        send(
            transport,
            "author",
            body(SignalType::Save, "author", author(1, revision)),
        )
        .await;
        // One at a time: the stale and duplicate verdicts need the previous one applied.
        wait_until("the author event settled", PATIENCE, || {
            let m = system.metrics().id("author");
            async move { m.received > 0 && m.in_flight == 0 }
        })
        .await;
    }
    send(
        transport,
        "book",
        body(SignalType::Save, "book", author(7, 0)),
    )
    .await;
    // A CQRS id this replica has no model for, on a key it binds.
    send(
        transport,
        "author",
        body(SignalType::Save, "nobody", author(8, 0)),
    )
    .await;
    wait_until("the book dead-lettered after its retry", PATIENCE, || {
        let m = system.metrics();
        async move { m.id("book").dead_lettered == 1 && m.id(OTHER_ID).dead_lettered == 1 }
    })
    .await;
    system.wait_idle().await.unwrap_or_else(|e| panic!("{e}"));

    let m = system.metrics();
    let a = m.id("author");
    assert_eq!(
        (
            a.received,
            a.applied,
            a.ignored_duplicate,
            a.ignored_stale,
            a.gaps
        ),
        (5, 3, 1, 1, 1),
        "author: {a:?}"
    );
    assert_eq!((a.retried, a.dead_lettered, a.in_flight), (0, 0, 0));
    assert_eq!(a.lag.count, 3, "one lag per applied SAVE");
    let p100 = a.lag.quantile(1.0).unwrap_or(f64::INFINITY);
    assert!(p100 <= 60.0, "lag of events changed just now: {p100} s");
    assert!(a.batch_size.count >= 1 && a.apply_seconds.count == a.batch_size.count);

    let b = m.id("book");
    assert_eq!(
        (
            b.received,
            b.applied,
            b.retried,
            b.dead_lettered,
            b.in_flight
        ),
        (2, 0, 1, 1, 0),
        "book: the event and its retry copy, parked once then dead-lettered: {b:?}"
    );
    assert_eq!(b.lag.count, 0);
    let other = m.id(OTHER_ID);
    assert_eq!((other.received, other.dead_lettered), (1, 1));
    assert_eq!(
        (m.received, m.applied, m.skipped, m.retried, m.dead_lettered),
        (8, 3, 2, 1, 2),
        "totals: {m:?}"
    );

    system.sample().await;
    let queues = system.metrics().queues;
    assert_eq!(queues.len(), 1, "{queues:?}");
    assert!(queues.values().all(|q| q.ready == 0));
}

#[actix_rt::test]
async fn the_figures_of_a_known_scenario_on_the_memory_transport() {
    support::init_tracing();
    let (transport, _broker) = MemoryBroker::default().start_transport();
    let system = replica(&transport).await;
    scenario(&transport, &system).await;
    let health = system.health().await;
    assert!(health.ready(), "{health:?}");
    let names: Vec<&str> = health.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "transport",
            "database:author",
            "database:book",
            "workers",
            "consumer"
        ]
    );
    system.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
}

#[cfg(feature = "rabbitmq")]
mod rabbitmq {
    use super::*;
    use support::rabbitmq::{Vhost, connect};

    #[actix_rt::test]
    async fn the_figures_of_a_known_scenario_on_rabbitmq() {
        support::init_tracing();
        let vhost = Vhost::create("cqrs_observed");
        let (transport, _addr) = connect(vhost.config()).await;
        let system = replica(&transport).await;
        scenario(&transport, &system).await;
        system.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    }

    /// The broker closes every connection of the virtual host and refuses `guest` for a while:
    /// the transport cannot reconnect, and health says not ready (but live); once the broker
    /// lets it in again it reconnects, and health says ready.
    #[actix_rt::test]
    async fn health_is_not_ready_while_the_broker_connection_is_gone() {
        support::init_tracing();
        let vhost = Vhost::create("cqrs_health");
        let (transport, _addr) = connect(vhost.config()).await;
        let system = replica(&transport).await;
        let health = system.health().await;
        assert!(health.ready(), "{health:?}");

        vhost.deny_guest();
        vhost.close_all_connections().await;
        wait_until("not ready", PATIENCE, || {
            let probe = system.health_probe();
            async move {
                let h = probe.check().await;
                !h.ready() && h.live()
            }
        })
        .await;
        let health = system.health().await;
        let failing: Vec<&str> = health.failures().map(|c| c.name.as_str()).collect();
        assert_eq!(failing, ["transport"], "{health:?}");

        vhost.allow_configure(".*");
        wait_until("ready again after the reconnect", PATIENCE, || {
            let probe = system.health_probe();
            async move { probe.check().await.ready() }
        })
        .await;
        send(
            &transport,
            "author",
            body(SignalType::Save, "author", author(3, 0)),
        )
        .await;
        wait_until("applied after the reconnect", PATIENCE, || {
            let m = system.metrics().id("author");
            async move { m.applied == 1 }
        })
        .await;
        system.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    }
}
