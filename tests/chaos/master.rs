//! The master process: writes the run's ops through a `MasterTable` with an outbox, from
//! four writers at once, a batch per transaction together with the writer's progress, and
//! relays them until it is killed.

use std::time::Duration;

use cqrs_sync::orm::{MasterTable, Outbox};
use cqrs_sync::{CqrsConfig, CqrsSystem, CqrsSystemExt};
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, Statement, TransactionTrait,
};
use serde_json::json;

use crate::run::{self, CONFIG, CQRS_ID, DB, EVENTS, OUTBOX, SEED, row};

/// Ops per transaction.
const BATCH: i64 = 50;
/// Writers at once, each with its own ids and hot rows.
const WRITERS: i64 = 4;
/// Rows `1..=HOT` are written often and never deleted (`HOT / WRITERS` of them per writer).
const HOT: i64 = 20;

pub fn main() {
    crate::support::init_tracing();
    actix_rt::System::new().block_on(async {
        let events: i64 = run::env(EVENTS).parse().unwrap_or_else(|e| panic!("{e}"));
        let seed: u64 = run::env(SEED).parse().unwrap_or_else(|e| panic!("{e}"));
        let db = run::connect_patiently(&run::env(DB), WRITERS as u32 + 2).await;
        let outbox = Outbox::with_table(db.clone(), OUTBOX);
        let table =
            MasterTable::new(CQRS_ID, row::Entity, &outbox).unwrap_or_else(|e| panic!("{e}"));
        let config = CqrsConfig::from_toml_str(&run::env(CONFIG))
            .unwrap_or_else(|e| panic!("{e}"))
            .with_outbox_lease_ttl(Duration::from_secs(2))
            .with_outbox_poll_interval(Duration::from_millis(100));
        // The broker may be down (restarting) when this process starts.
        let _system = loop {
            match CqrsSystem::builder()
                .config(config.clone())
                .master(&table)
                .start()
                .await
            {
                Ok(system) => break system,
                Err(e) => {
                    eprintln!("master start: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let writers = (0..WRITERS).map(|w| {
            let (db, table) = (db.clone(), &table);
            let share = events / WRITERS + if w == 0 { events % WRITERS } else { 0 };
            async move {
                loop {
                    match write_batch(&db, table, w, share, seed).await {
                        Ok(true) => break,
                        Ok(false) => {}
                        Err(e) => {
                            eprintln!("master writer {w}: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
        });
        futures_util::future::join_all(writers).await;
        // Relays what is left until the run ends it.
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    });
}

/// One batch of writer `w`'s ops in one transaction with its progress; `true` once its
/// `share` of the ops is written. Writer `w` creates the ids `HOT + 1 + w + WRITERS * k`,
/// after its hot rows `1 + w + WRITERS * j`.
async fn write_batch(
    db: &DatabaseConnection,
    table: &MasterTable<row::Entity>,
    w: i64,
    share: i64,
    seed: u64,
) -> Result<bool, String> {
    let txn = db.begin().await.map_err(|e| e.to_string())?;
    let progress = txn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT next_op, next_k FROM chaos_progress WHERE writer = $1 FOR UPDATE",
            [w.into()],
        ))
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no progress row")?;
    let mut op: i64 = progress.try_get("", "next_op").map_err(|e| e.to_string())?;
    let mut next_k: i64 = progress.try_get("", "next_k").map_err(|e| e.to_string())?;
    if op >= share {
        return Ok(true);
    }
    let id_of = |k: i64| HOT + 1 + w + WRITERS * k;
    let end = (op + BATCH).min(share);
    while op < end {
        let mut rng = fastrand::Rng::with_seed(
            seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((w as u64) << 40) ^ op as u64,
        );
        let roll = rng.u32(0..100);
        // Its own hot rows: no two writers wait on each other's row locks.
        let hot_insert = op < HOT / WRITERS;
        let target = if hot_insert || roll < 15 {
            None
        } else if roll < 55 {
            Some(1 + w + WRITERS * rng.i64(0..HOT / WRITERS))
        } else if next_k > 0 {
            Some(id_of(rng.i64(0..next_k)))
        } else {
            None
        };
        let existing = match target {
            Some(id) => row::Entity::find_by_id(id)
                .one(&txn)
                .await
                .map_err(|e| e.to_string())?
                .map(|_| id),
            None => None,
        };
        let payload = json!({
            "op": op,
            "tags": ["a", format!("t{}", rng.u8(..))],
            "nested": {"x": rng.i32(..), "ok": rng.bool(), "none": null},
        });
        match existing {
            Some(id) if roll >= 85 && id > HOT => {
                table.delete(&txn, id).await.map_err(|e| e.to_string())?;
            }
            Some(id) => {
                let update = row::ActiveModel {
                    id: Set(id),
                    name: Set(format!("row {id} op {w}/{op} \u{e9}\u{2603}")),
                    n: Set(op),
                    payload: Set(Some(payload)),
                    ..Default::default()
                };
                table
                    .update(&txn, update)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            None => {
                let id = if hot_insert {
                    1 + w + WRITERS * op
                } else {
                    next_k += 1;
                    id_of(next_k - 1)
                };
                let insert = row::ActiveModel {
                    id: Set(id),
                    name: Set(format!("row {id} op {w}/{op}")),
                    n: Set(op),
                    payload: Set((op % 7 != 0).then_some(payload)),
                    ..Default::default()
                };
                table
                    .insert(&txn, insert)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        op += 1;
    }
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "UPDATE chaos_progress SET next_op = $1, next_k = $2 WHERE writer = $3",
        [op.into(), next_k.into(), w.into()],
    ))
    .await
    .map_err(|e| e.to_string())?;
    txn.commit().await.map_err(|e| e.to_string())?;
    Ok(op >= share)
}
