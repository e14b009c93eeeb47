//! Fault tests on the real broker: the broker closes every connection while 10,000 events
//! flow (into a SeaORM replica table on SQLite), and a replica process is killed mid-stream and
//! restarted. In both cases the replica ends with the master's rows and no event is missing.

#![cfg(feature = "rabbitmq")]

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use cqrs_orm_adapters::ReplicaTable;
use cqrs_sync::CqrsSystemExt;
use cqrs_sync::transport::Declare;
use cqrs_sync::{CqrsConfig, CqrsSystem, MasterModel, ReplicaModel};
use support::db::{Backend, TestDb};
use support::faults::{Killed, applied, expect_last_revisions, item, publish_batch, two_revisions};
use support::rabbitmq::{Vhost, close_all_connections, connect};
use support::wait_until;

const PATIENCE: Duration = Duration::from_secs(120);

#[actix_rt::test]
async fn the_broker_closing_every_connection_mid_stream_loses_nothing() {
    support::init_tracing();
    let vhost = Vhost::create("cqrs_fault_close");
    let (master_t, _m) = connect(vhost.config()).await;
    let (replica_t, _r) = connect(vhost.config()).await;
    let db = TestDb::new(Backend::Sqlite, "fault_close").await;
    db.create(item::Entity).await;
    let table = ReplicaTable::new(db.db.clone(), item::Entity).unwrap_or_else(|e| panic!("{e}"));
    let replica = CqrsSystem::builder()
        .config(
            CqrsConfig::default()
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
        .master(MasterModel::new("item"))
        .transport(master_t.clone())
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let publisher = master.publisher();

    // 5,000 rows, two revisions each: 10,000 events, 100 in flight at a time. The broker
    // closes every connection once 1,000 are out; the second half goes out only after that,
    // so the close lands while events flow both ways.
    let rows = 5_000;
    let mut close: Option<actix_rt::task::JoinHandle<()>> = None;
    for (i, rev, ids) in two_revisions(rows) {
        let second_half = rev == 1 && ids.start == 1;
        if second_half && let Some(c) = close.take() {
            c.await.unwrap_or_else(|e| panic!("{e}"));
        }
        publish_batch(&publisher, ids, rev).await;
        if i == 10 {
            close = Some(actix_rt::spawn(close_all_connections(vhost.name.clone())));
        }
    }
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

/// A replica process of queue `killed` on `vhost`.
fn spawn_replica(vhost: &Vhost, log: &std::path::Path) -> Killed {
    let options: toml::Table = "reconnect_min = 0.05\nreconnect_max = 1"
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let config = vhost
        .service_config()
        .with_queue("killed")
        .with_workers(4)
        .with_rabbitmq_options(options);
    support::faults::spawn_replica("replica_child_process", &config, log, Duration::ZERO)
}

#[actix_rt::test]
async fn a_replica_process_killed_mid_stream_and_restarted_loses_nothing() {
    support::init_tracing();
    let vhost = Vhost::create("cqrs_fault_kill");
    let dir = std::env::temp_dir().join(support::unique("cqrs_kill"));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let log = dir.join("applied.log");
    let (transport, _addr) = connect(vhost.config()).await;
    transport
        .declare(Declare {
            queue: "killed".into(),
            dead_letter_queue: "dead_letter_killed".into(),
            cqrs_ids: vec!["item".into()],
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let master = CqrsSystem::builder()
        .master(MasterModel::new("item"))
        .transport(transport.clone())
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let publisher = master.publisher();
    // Revision 0 of 5,000 rows goes out before the first process starts; it is killed after
    // 2,000 applies, holding unacknowledged deliveries; revision 1 goes out while no replica
    // runs; the restarted process must apply whatever the first left, and all of revision 1.
    let rows = 5_000;
    for start in (0..rows).step_by(500) {
        publish_batch(&publisher, start + 1..start + 501, 0).await;
    }
    let first = spawn_replica(&vhost, &log);
    wait_until(
        "the first replica process applies 2,000 events",
        PATIENCE,
        || async { applied(&log).0 >= 2_000 },
    )
    .await;
    drop(first);
    let (at_kill, _) = applied(&log);
    for start in (0..rows).step_by(500) {
        publish_batch(&publisher, start + 1..start + 501, 1).await;
    }
    let _second = spawn_replica(&vhost, &log);
    let expected: BTreeSet<(i64, i64)> = (1..=rows).flat_map(|id| [(id, 0), (id, 1)]).collect();
    wait_until(
        "the restarted replica applies every event",
        PATIENCE,
        || async { applied(&log).1 == expected },
    )
    .await;
    let (total, _) = applied(&log);
    assert!(
        total >= at_kill + rows as usize,
        "the restarted process applied revision 1 ({at_kill} lines before the kill, {total} in all)"
    );
    master.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_dir_all(&dir);
}
