//! Hostile messages: every class of bad message, each with the reason its dead letter must
//! carry, the child table they are aimed at, and the scenario every broker transport passes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cqrs_orm_adapters::ReplicaTable;
use cqrs_sync::transport::{HEADER_ERROR, HEADER_REASON, Headers, OutgoingMessage};
use cqrs_sync::{CqrsConfig, CqrsSystem, CqrsSystemExt, ReplicaModel, Route, TransportHandle};
use futures_util::future::join_all;
use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::{Value, json};

use super::db::TestDb;
use super::entities::{child, parent};
use super::wait_until;

const PATIENCE: Duration = Duration::from_secs(60);

pub fn long() -> String {
    "x".repeat(200_000)
}

/// A SAVE of child `id` (of parent 1) as a master sends it, with `change` applied to the body.
pub fn save(id: i64, change: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Vec<u8> {
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

pub fn data(map: &mut serde_json::Map<String, Value>) -> &mut serde_json::Map<String, Value> {
    match map.get_mut("instance_data") {
        Some(Value::Object(d)) => d,
        _ => unreachable!("the body has instance_data"),
    }
}

pub fn message(body: Vec<u8>, content_type: &str) -> OutgoingMessage {
    OutgoingMessage {
        route: Route::broadcast("child"),
        body,
        content_type: content_type.to_owned(),
        headers: Headers::new(),
        expiration: None,
    }
}

/// Every class of bad message, with the reason its dead letter must carry.
pub fn hostile() -> Vec<(&'static str, OutgoingMessage)> {
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
pub async fn tables(db: &TestDb) {
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

pub async fn rows(db: &TestDb) -> u64 {
    child::Entity::find()
        .count(&db.db)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// How many dead letters carry each reason header (none counts as the empty reason).
pub fn reason_counts<'a>(
    headers: impl IntoIterator<Item = &'a Headers>,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for h in headers {
        let reason = h.get(HEADER_REASON).cloned().unwrap_or_default();
        *counts.entry(reason).or_default() += 1;
    }
    counts
}

pub fn message_of(body: Vec<u8>) -> OutgoingMessage {
    message(body, "text/plain")
}

/// Publishes every hostile message through `system`'s transport, each followed by 100 good
/// ones, and checks that each hostile one reaches `dlq` once with its reason and a bounded
/// error, that every good one is applied and that nothing was retried. Answers how long it
/// took.
pub async fn every_hostile_message_is_dead_lettered(
    system: &CqrsSystem,
    db: &TestDb,
    dlq: &str,
) -> Duration {
    let transport = system.transport().clone();
    let dead = cqrs_transports::conformance::collect(&transport, dlq, 100, true).await;

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
    wait_until("every good message applied", PATIENCE, || async {
        rows(db).await == good
    })
    .await;
    let took = started.elapsed();
    system.wait_idle().await.unwrap_or_else(|e| panic!("{e}"));

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
    }
    let reasons = reason_counts(letters.iter().map(|l| &l.headers));
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
    eprintln!(
        "{} hostile and {good} good messages settled in {took:?}",
        bad.len()
    );
    took
}

/// A replica of the child table on `transport`, one worker, quick retries.
pub async fn replica_system(
    base: CqrsConfig,
    transport: TransportHandle,
    db: &TestDb,
    queue: &str,
) -> CqrsSystem {
    let table = ReplicaTable::new(db.db.clone(), child::Entity).unwrap_or_else(|e| panic!("{e}"));
    CqrsSystem::builder()
        .config(
            base.with_queue(queue)
                .with_workers(1)
                .with_retry_delay(Duration::from_millis(200))
                .with_max_retries(Some(3)),
        )
        .replica(ReplicaModel::new("child", table))
        .transport(transport)
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}
