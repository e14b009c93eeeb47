//! Fault tests on the real broker: the broker closes every connection while 10,000 events
//! flow (into a SeaORM replica table on SQLite), and a replica process is killed mid-stream and
//! restarted. In both cases the replica ends with the master's rows and no event is missing.

#![cfg(feature = "rabbitmq")]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cqrs_orm_adapters::ReplicaTable;
use cqrs_sync::CqrsSystemExt;
use cqrs_sync::transport::Declare;
use cqrs_sync::{
    Applied, CqrsConfig, CqrsSystem, MasterModel, ReplicaEvent, ReplicaModel, handler_fn,
};
use futures_util::future::join_all;
use sea_orm::EntityTrait;
use support::db::{Backend, TestDb};
use support::rabbitmq::{Vhost, close_all_connections, connect};
use support::{row, wait_until};

const PATIENCE: Duration = Duration::from_secs(120);

/// The replica table of the close test.
mod item {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "item")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub name: String,
        pub cqrs_revision: i64,
        pub cqrs_updated: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `id -> (revision, name)` as the replica table holds it.
async fn items(db: &TestDb) -> BTreeMap<i64, (i64, String)> {
    item::Entity::find()
        .all(&db.db)
        .await
        .unwrap_or_else(|e| panic!("read the replica: {e}"))
        .into_iter()
        .map(|i| (i.id, (i.cqrs_revision, i.name)))
        .collect()
}

/// Publishes revision `rev` of rows `ids`, all in flight at once, and checks every confirm.
async fn publish_batch(publisher: &cqrs_sync::Publisher, ids: std::ops::Range<i64>, rev: i64) {
    let sends: Vec<_> = ids
        .map(|id| publisher.save("item", row(id, rev, &format!("item-{id}-r{rev}"))))
        .collect();
    for r in join_all(sends).await {
        r.unwrap_or_else(|e| panic!("a publish failed across the reconnect: {e}"));
    }
}

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
    let mut close = None;
    for (i, start) in (0..2 * rows).step_by(100).enumerate() {
        let (rev, first) = if start < rows {
            (0, start)
        } else {
            (1, start - rows)
        };
        publish_batch(&publisher, first + 1..first + 101, rev).await;
        if i == 10 {
            close = Some(actix_rt::spawn(close_all_connections(vhost.name.clone())));
        }
        if start == rows
            && let Some(c) = close.take()
        {
            c.await.unwrap_or_else(|e| panic!("{e}"));
        }
    }
    let expected: BTreeMap<i64, (i64, String)> = (1..=rows)
        .map(|id| (id, (1, format!("item-{id}-r1"))))
        .collect();
    wait_until(
        "the replica table equals the master's rows",
        PATIENCE,
        || async { items(&db).await == expected },
    )
    .await;
    replica.wait_idle().await.unwrap_or_else(|e| panic!("{e}"));
    let m = replica.metrics();
    assert_eq!(m.dead_lettered, 0, "nothing was dead-lettered");
    for s in [replica, master] {
        s.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    }
    db.cleanup().await;
}

const CHILD_URL: &str = "CQRS_FAULT_CHILD_URL";
const CHILD_LOG: &str = "CQRS_FAULT_CHILD_LOG";

/// The replica process of the kill test: runs only when started by it (with its variables),
/// applies events by appending `pk revision` lines to a file, and runs until killed.
#[test]
fn replica_child_process() {
    let (Ok(url), Ok(log)) = (std::env::var(CHILD_URL), std::env::var(CHILD_LOG)) else {
        return;
    };
    actix_rt::System::new().block_on(async move {
        let config = cqrs_sync::transports::rabbitmq::RabbitMqConfig::from_cqrs_config(
            &cqrs_sync::CqrsConfig::default().with_url(url),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let (transport, _addr) = connect(config).await;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("{log}: {e}"));
        let file = Arc::new(Mutex::new(file));
        let _system = CqrsSystem::builder()
            .config(CqrsConfig::default().with_queue("killed").with_workers(4))
            .replica(ReplicaModel::new(
                "item",
                handler_fn(move |e: ReplicaEvent| {
                    let line = format!(
                        "{} {}\n",
                        e.pk(),
                        e.envelope().instance_data["cqrs_revision"]
                    );
                    let written = file
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .write_all(line.as_bytes());
                    async move {
                        written.map_err(|e| cqrs_sync::Error::handler(e.to_string()))?;
                        Ok(Applied::Updated)
                    }
                }),
            ))
            .transport(transport)
            .start()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    });
}

fn spawn_replica(vhost: &Vhost, log: &std::path::Path) -> Child {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    Command::new(exe)
        .args([
            "replica_child_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_URL, vhost.url())
        .env(CHILD_LOG, log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start the replica process: {e}"))
}

/// Every `(pk, revision)` the replica process applied, and how many lines it wrote.
fn applied(log: &std::path::Path) -> (usize, BTreeSet<(i64, i64)>) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut events = BTreeSet::new();
    let mut lines = 0;
    for line in text.lines() {
        let parsed = line
            .split_once(' ')
            .and_then(|(pk, rev)| Some((pk.parse().ok()?, rev.parse().ok()?)));
        if let Some(event) = parsed {
            lines += 1;
            events.insert(event);
        }
    }
    (lines, events)
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
    let first = Killed(spawn_replica(&vhost, &log));
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
    let _second = Killed(spawn_replica(&vhost, &log));
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
