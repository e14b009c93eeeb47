//! A replica process: applies the run's events into its `ReplicaTable` (with tombstones, so a
//! late SAVE cannot bring a deleted row back) and writes its figures every 250 ms, until it is
//! killed.

use std::time::Duration;

use cqrs_sync::orm::{ReplicaTable, Tombstones};
use cqrs_sync::{CqrsConfig, CqrsSystem, CqrsSystemExt, ReplicaModel};

use crate::run::{self, CONFIG, CQRS_ID, DB, STATS, TOMBSTONES, row};

pub fn main() {
    crate::support::init_tracing();
    actix_rt::System::new().block_on(async {
        let db = run::connect_patiently(&run::env(DB), 4).await;
        let config = CqrsConfig::from_toml_str(&run::env(CONFIG)).unwrap_or_else(|e| panic!("{e}"));
        let stats = std::path::PathBuf::from(run::env(STATS));
        let system = loop {
            let table = ReplicaTable::new(db.clone(), row::Entity)
                .unwrap_or_else(|e| panic!("{e}"))
                .with_tombstones(Tombstones::new(TOMBSTONES));
            match CqrsSystem::builder()
                .config(config.clone())
                .replica(ReplicaModel::new(CQRS_ID, table))
                .start()
                .await
            {
                Ok(system) => break system,
                Err(e) => {
                    eprintln!("replica start: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let file = stats.join(format!("stats-{}.txt", std::process::id()));
        let tmp = stats.join(format!("stats-{}.tmp", std::process::id()));
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let m = system.metrics();
            let id = m.id(CQRS_ID);
            let line = format!(
                "{} {} {} {} {} {}\n",
                m.received,
                m.applied,
                id.ignored_stale,
                id.ignored_duplicate,
                m.retried,
                m.dead_lettered
            );
            if std::fs::write(&tmp, line).is_ok() {
                let _ = std::fs::rename(&tmp, &file);
            }
        }
    });
}
