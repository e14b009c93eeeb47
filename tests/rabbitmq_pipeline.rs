//! The replica pipeline over the real RabbitMQ broker: a Rust master feeding a Rust replica
//! (saves, updates, deletes, broadcast and directed syncs), a poison message that goes
//! through its parked retries into the dead-letter queue while the rest flows, and malformed
//! bodies and unknown ids dead-lettered with a reason.

#![cfg(feature = "rabbitmq")]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use cqrs_sync::CqrsSystemExt;
use cqrs_sync::{CqrsConfig, CqrsSystem, MasterModel, MemoryTable, ReplicaModel};
use futures_util::future::join_all;
use serde_json::Value;
use support::rabbitmq::{Vhost, connect};
use support::{row, wait_until};

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
    support::scenarios::poison_is_parked_then_dead_lettered_while_others_flow(
        &transport,
        &vhost.service_config(),
    )
    .await;
}

#[actix_rt::test]
async fn malformed_bodies_and_unknown_ids_are_dead_lettered_with_a_reason() {
    support::init_tracing();
    let vhost = Vhost::create("cqrs_reject");
    let (transport, _addr) = connect(vhost.config()).await;
    support::scenarios::malformed_and_unknown_are_dead_lettered(
        &transport,
        &vhost.service_config(),
    )
    .await;
}
