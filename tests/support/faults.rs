//! What the fault tests of every broker share: the replica table, publishing in batches, and
//! a replica process (this test binary started again) that logs what it applies and runs until
//! it is killed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cqrs_sync::{
    Applied, CqrsConfig, CqrsSystem, CqrsSystemExt, ReplicaEvent, ReplicaModel, handler_fn,
};
use futures_util::future::join_all;
use sea_orm::EntityTrait;

use super::db::TestDb;
use super::row;

/// The replica table of the fault tests.
pub mod item {
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
pub async fn items(db: &TestDb) -> BTreeMap<i64, (i64, String)> {
    item::Entity::find()
        .all(&db.db)
        .await
        .unwrap_or_else(|e| panic!("read the replica: {e}"))
        .into_iter()
        .map(|i| (i.id, (i.cqrs_revision, i.name)))
        .collect()
}

/// Publishes revision `rev` of rows `ids`, all in flight at once, and checks every confirm.
pub async fn publish_batch(publisher: &cqrs_sync::Publisher, ids: std::ops::Range<i64>, rev: i64) {
    let sends: Vec<_> = ids
        .map(|id| publisher.save("item", row(id, rev, &format!("item-{id}-r{rev}"))))
        .collect();
    for r in join_all(sends).await {
        r.unwrap_or_else(|e| panic!("a publish failed across the fault: {e}"));
    }
}

/// The events of the fault tests in batches of 100: revision 0 of rows `1..=rows`, then
/// revision 1 of each, as `(batch number, revision, ids)`.
pub fn two_revisions(rows: i64) -> impl Iterator<Item = (usize, i64, std::ops::Range<i64>)> {
    (0..2 * rows)
        .step_by(100)
        .enumerate()
        .map(move |(i, start)| {
            let (rev, first) = if start < rows {
                (0, start)
            } else {
                (1, start - rows)
            };
            (i, rev, first + 1..first + 101)
        })
}

/// Waits until the replica table holds revision 1 of every row of [`two_revisions`], then
/// checks that the replica dead-lettered nothing.
pub async fn expect_last_revisions(db: &TestDb, rows: i64, replica: &CqrsSystem) {
    let expected: BTreeMap<i64, (i64, String)> = (1..=rows)
        .map(|id| (id, (1, format!("item-{id}-r1"))))
        .collect();
    super::wait_until(
        "the replica table equals the master's rows",
        Duration::from_secs(120),
        || async { items(db).await == expected },
    )
    .await;
    replica.wait_idle().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        replica.metrics().dead_lettered,
        0,
        "nothing was dead-lettered"
    );
}

const CHILD_CONFIG: &str = "CQRS_FAULT_CHILD_CONFIG";
const CHILD_LOG: &str = "CQRS_FAULT_CHILD_LOG";
const CHILD_PAUSE_MS: &str = "CQRS_FAULT_CHILD_PAUSE_MS";

/// The body of the replica process: when this binary was started by [`spawn_replica`], runs
/// a replica of `item` with the configuration it was given, appending `pk revision` lines to
/// its log for each event applied, until it is killed. Otherwise returns at once.
pub fn replica_child_main() {
    let (Ok(config), Ok(log)) = (std::env::var(CHILD_CONFIG), std::env::var(CHILD_LOG)) else {
        return;
    };
    let pause = Duration::from_millis(
        std::env::var(CHILD_PAUSE_MS)
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0),
    );
    actix_rt::System::new().block_on(async move {
        let config = CqrsConfig::from_toml_str(&config).unwrap_or_else(|e| panic!("{e}"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("{log}: {e}"));
        let file = Arc::new(Mutex::new(file));
        let _system = CqrsSystem::builder()
            .config(config)
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
                        tokio::time::sleep(pause).await;
                        written.map_err(|e| cqrs_sync::Error::handler(e.to_string()))?;
                        Ok(Applied::Updated)
                    }
                }),
            ))
            .start()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    });
}

/// A replica process killed (`SIGKILL`) when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts this test binary again as a replica process (its test `child_test` calls
/// [`replica_child_main`]) with `config` (written as TOML), logging to `log` and pausing
/// `pause` in each apply.
pub fn spawn_replica(
    child_test: &str,
    config: &CqrsConfig,
    log: &std::path::Path,
    pause: Duration,
) -> Killed {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    let config = toml::to_string(config).unwrap_or_else(|e| panic!("{e}"));
    let child = Command::new(exe)
        .args([child_test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_CONFIG, config)
        .env(CHILD_LOG, log)
        .env(CHILD_PAUSE_MS, pause.as_millis().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start the replica process: {e}"));
    Killed(child)
}

/// Every `(pk, revision)` the replica processes applied, and how many lines they wrote.
pub fn applied(log: &std::path::Path) -> (usize, BTreeSet<(i64, i64)>) {
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
