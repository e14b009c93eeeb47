//! Fault tests on the real Redis server: every client connection is killed three times while
//! 10,000 events flow into a SeaORM replica table, and a replica process is killed (`SIGKILL`)
//! holding pending entries that another consumer then claims. In both cases every event is
//! applied and none is lost.

#![cfg(all(feature = "redis", feature = "sqlite"))]

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use cqrs_orm_adapters::ReplicaTable;
use cqrs_sync::transport::Declare;
use cqrs_sync::{CqrsSystem, CqrsSystemExt, MasterModel, ReplicaModel};
use support::db::{Backend, TestDb};
use support::faults::{applied, expect_last_revisions, item, publish_batch, two_revisions};
use support::redis::{PATIENCE, Space, connect, kill_clients};
use support::wait_until;

#[actix_rt::test]
async fn killing_every_client_connection_three_times_mid_stream_loses_nothing() {
    support::init_tracing();
    let space = Space::create("cqrs_redis_kill_clients");
    let options = "reconnect_min = 0.05\nreconnect_max = 1\nblock = 0.5";
    let (master_t, _m) = connect(space.config_with(options)).await;
    let (replica_t, _r) = connect(space.config_with(options)).await;
    let db = TestDb::new(Backend::Sqlite, "redis_kill_clients").await;
    db.create(item::Entity).await;
    let table = ReplicaTable::new(db.db.clone(), item::Entity).unwrap_or_else(|e| panic!("{e}"));
    let replica = CqrsSystem::builder()
        .config(
            space
                .service_config_with(options)
                .with_queue("faulty")
                .with_workers(1)
                .with_batch_size(500),
        )
        .replica(ReplicaModel::new("item", table))
        .transport(replica_t.clone())
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let master = CqrsSystem::builder()
        .config(space.service_config_with(options))
        .master(MasterModel::new("item"))
        .transport(master_t.clone())
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let publisher = master.publisher();

    // 5,000 rows, two revisions each: 10,000 events, 100 in flight at a time; every client
    // connection of the server is killed after 1,000, 4,000 and 7,000 events went out.
    let rows = 5_000;
    let mut killed = Vec::new();
    for (i, rev, ids) in two_revisions(rows) {
        publish_batch(&publisher, ids, rev).await;
        if [10, 40, 70].contains(&i) {
            killed.push(kill_clients().await);
        }
    }
    assert!(
        killed.iter().all(|n| *n > 0),
        "each kill closed connections: {killed:?}"
    );
    expect_last_revisions(&db, rows, &replica).await;
    for s in [replica, master] {
        s.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    }
    db.cleanup().await;
}

/// The replica process of the kill test: runs only when started by it.
#[test]
fn replica_child_process() {
    support::faults::replica_child_main();
}

#[actix_rt::test]
async fn a_replica_process_killed_with_pending_entries_is_taken_over_by_another_consumer() {
    support::init_tracing();
    let space = Space::create("cqrs_redis_sigkill");
    let dir = std::env::temp_dir().join(support::unique("cqrs_redis_kill"));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let log = dir.join("applied.log");
    let options = "claim_idle = 1";
    let (transport, _addr) = connect(space.config_with(options)).await;
    let queue = "killed";
    transport
        .declare(Declare {
            queue: queue.into(),
            dead_letter_queue: format!("dead_letter_{queue}"),
            cqrs_ids: vec!["item".into()],
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let master = CqrsSystem::builder()
        .config(space.service_config_with(options))
        .master(MasterModel::new("item"))
        .transport(transport.clone())
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let publisher = master.publisher();
    let rows = 5_000;
    for start in (0..rows).step_by(500) {
        publish_batch(&publisher, start + 1..start + 501, 0).await;
    }
    // The first replica process is killed after 2,000 applies, with entries pending.
    let child_config = |name: &str| {
        space
            .service_config_with(&format!("{options}\nconsumer_name = \"{name}\""))
            .with_queue(queue)
            .with_workers(4)
    };
    let first = support::faults::spawn_replica(
        "replica_child_process",
        &child_config("doomed"),
        &log,
        Duration::from_millis(2),
    );
    wait_until(
        "the first replica process applies 2,000 events with entries pending",
        PATIENCE,
        || async {
            applied(&log).0 >= 2_000 && transport.inspect(queue).await.is_ok_and(|s| s.unacked > 0)
        },
    )
    .await;
    drop(first);
    let pending = transport
        .inspect(queue)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unacked;
    for start in (0..rows).step_by(500) {
        publish_batch(&publisher, start + 1..start + 501, 1).await;
    }
    // Another consumer, under another name, claims what the dead one held.
    let _second = support::faults::spawn_replica(
        "replica_child_process",
        &child_config("survivor"),
        &log,
        Duration::ZERO,
    );
    let expected: BTreeSet<(i64, i64)> = (1..=rows).flat_map(|id| [(id, 0), (id, 1)]).collect();
    wait_until(
        "the other consumer applies every event",
        PATIENCE,
        || async { applied(&log).1 == expected },
    )
    .await;
    wait_until("nothing is left pending", PATIENCE, || async {
        transport
            .inspect(queue)
            .await
            .is_ok_and(|s| s.unacked == 0 && s.ready == 0)
    })
    .await;
    assert!(pending > 0, "the killed process held pending entries");
    master.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[actix_rt::test]
async fn two_processes_move_each_parked_copy_back_exactly_once() {
    support::init_tracing();
    let space = Space::create("cqrs_redis_movers");
    let dir = std::env::temp_dir().join(support::unique("cqrs_redis_movers"));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let log = dir.join("applied.log");
    // Both processes run a mover for the queue, every 10 ms: they race for every due copy.
    let options = "mover_interval = 0.01";
    let queue = "moved";
    let (transport, _addr) = connect(space.config_with(options)).await;
    transport
        .declare(Declare {
            queue: queue.into(),
            dead_letter_queue: format!("dead_letter_{queue}"),
            cqrs_ids: vec!["item".into()],
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let _child = support::faults::spawn_replica(
        "replica_child_process",
        &space
            .service_config_with(&format!("{options}\nconsumer_name = \"mover\""))
            .with_queue(queue),
        &log,
        Duration::ZERO,
    );
    // A probe (row 0) tells when the replica process consumes.
    transport
        .publish(cqrs_sync::transport::OutgoingMessage {
            route: cqrs_sync::Route::queue(queue, "item"),
            body: support::body(
                cqrs_sync::SignalType::Save,
                "item",
                support::row(0, 0, "probe"),
            ),
            content_type: "text/plain".to_owned(),
            headers: cqrs_sync::transport::Headers::new(),
            expiration: None,
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_until("the replica process consumes", PATIENCE, || async {
        applied(&log).1.contains(&(0, 0))
    })
    .await;
    let copies = 400;
    let parks: Vec<_> = (1..=copies)
        .map(|id| {
            let body = support::body(
                cqrs_sync::SignalType::Save,
                "item",
                support::row(id, 0, "parked"),
            );
            transport.park(
                cqrs_sync::transport::OutgoingMessage {
                    route: cqrs_sync::Route::queue(queue, "item"),
                    body,
                    content_type: "text/plain".to_owned(),
                    headers: cqrs_sync::transport::Headers::new(),
                    expiration: None,
                },
                Duration::from_millis(20 + (id as u64 % 9) * 30),
            )
        })
        .collect();
    for r in futures_util::future::join_all(parks).await {
        r.unwrap_or_else(|e| panic!("park: {e}"));
    }
    // The probe (row 0) and every copy.
    let expected: BTreeSet<(i64, i64)> = (0..=copies).map(|id| (id, 0)).collect();
    wait_until("every copy applied", PATIENCE, || async {
        applied(&log).1 == expected
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (lines, _) = applied(&log);
    assert_eq!(
        lines,
        copies as usize + 1,
        "the probe and each parked copy came back exactly once"
    );
    let stats = transport
        .inspect(queue)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stats.parked, 0);
    let _ = std::fs::remove_dir_all(&dir);
}
