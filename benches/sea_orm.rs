//! SeaORM adapters on the local PostgreSQL (127.0.0.1:5432, database `test`):
//!
//! 1. replica apply rate at batch sizes 1, 10, 100 and 1000 (one transaction per batch), next
//!    to the target (≥ 20,000 events/s at 1000 and ≥ 10× the batch-1 rate);
//! 2. master writes through the outbox (row + event in one transaction) against plain SeaORM
//!    inserts of the same rows, and the ratio.
//!
//! ```text
//! cargo bench --bench sea_orm --features postgres
//! ```
//!
//! Each run works in a schema of its own and drops it at the end.

#![allow(clippy::print_stdout, clippy::unwrap_used)] // a bench prints its figures and may panic

use std::time::{Duration, Instant};

use cqrs_orm_adapters::{MasterTable, Outbox, ReplicaTable};
use cqrs_sync::CqrsSystemExt;
use cqrs_sync::transports::memory::MemoryBroker;
use cqrs_sync::{
    CqrsConfig, CqrsSystem, Envelope, JsonObject, MasterModel, ReplicaEvent, ReplicaHandler,
    ReplicaModel, SignalType,
};
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, EntityTrait,
    Schema, TransactionTrait,
};
use serde_json::json;

mod book {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "book")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub title: String,
        pub body: String,
        #[sea_orm(column_type = "Decimal(Some((10, 2)))")]
        pub price: Decimal,
        pub published: Date,
        pub active: bool,
        pub rating: f64,
        pub code: Uuid,
        pub cqrs_revision: i64,
        pub cqrs_updated: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

const URL: &str = "postgres://postgres@127.0.0.1:5432/test";

async fn connect(schema: Option<&str>) -> DatabaseConnection {
    let url = match schema {
        Some(s) => format!("{URL}?options=-c%20search_path%3D{s}"),
        None => URL.to_owned(),
    };
    let mut o = ConnectOptions::new(url);
    o.max_connections(4).sqlx_logging(false);
    Database::connect(o).await.unwrap()
}

async fn fresh_table(db: &DatabaseConnection) {
    db.execute_unprepared("DROP TABLE IF EXISTS book")
        .await
        .unwrap();
    let create = Schema::new(db.get_database_backend()).create_table_from_entity(book::Entity);
    db.execute(&create).await.unwrap();
}

fn row(id: i64, revision: i64) -> JsonObject {
    let v = json!({
        "id": id,
        "title": format!("Title of book {id}"),
        "body": "Lorem ipsum dolor sit amet, consectetur adipiscing elit. ".repeat(10),
        "price": "19.99",
        "published": "2026-11-27",
        "active": true,
        "rating": 4.25,
        "code": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "cqrs_revision": revision,
        "cqrs_updated": "2026-11-27 17:08:25.074040+00:00",
    });
    v.as_object().cloned().unwrap()
}

/// Half creates, then half updates of the same rows.
fn events(n: usize) -> Vec<ReplicaEvent> {
    let half = (n / 2) as i64;
    (0..2)
        .flat_map(|rev| (1..=half).map(move |id| (id, rev)))
        .map(|(id, rev)| {
            ReplicaEvent::new(
                Envelope::new(SignalType::Save, "book", row(id, rev)),
                "book",
                false,
                false,
            )
        })
        .collect()
}

async fn apply_rate(db: &DatabaseConnection, batch: usize, n: usize) -> f64 {
    fresh_table(db).await;
    let table = ReplicaTable::new(db.clone(), book::Entity).unwrap();
    let events = events(n);
    let start = Instant::now();
    for chunk in events.chunks(batch) {
        for r in table.apply_batch(chunk).await {
            r.unwrap();
        }
    }
    events.len() as f64 / start.elapsed().as_secs_f64()
}

fn new_book(id: i64) -> book::ActiveModel {
    book::ActiveModel {
        id: Set(id),
        title: Set(format!("Title of book {id}")),
        body: Set("Lorem ipsum dolor sit amet, consectetur adipiscing elit. ".repeat(10)),
        price: Set(rust_decimal::Decimal::new(1999, 2)),
        published: Set(chrono::NaiveDate::from_ymd_opt(2026, 11, 27).unwrap()),
        active: Set(true),
        rating: Set(4.25),
        code: Set(uuid::Uuid::nil()),
        cqrs_revision: Set(0),
        cqrs_updated: Set(chrono::Utc::now()),
    }
}

async fn plain_inserts(db: &DatabaseConnection, n: i64) -> Duration {
    fresh_table(db).await;
    let start = Instant::now();
    for id in 1..=n {
        new_book(id).insert(db).await.unwrap();
    }
    start.elapsed()
}

async fn plain_inserts_in_transactions(db: &DatabaseConnection, n: i64) -> Duration {
    fresh_table(db).await;
    let start = Instant::now();
    for id in 1..=n {
        let txn = db.begin().await.unwrap();
        new_book(id).insert(&txn).await.unwrap();
        txn.commit().await.unwrap();
    }
    start.elapsed()
}

async fn plain_batches(db: &DatabaseConnection, n: i64, batch: i64) -> Duration {
    fresh_table(db).await;
    let start = Instant::now();
    for first in (1..=n).step_by(batch as usize) {
        let rows = (first..first + batch).map(new_book);
        book::Entity::insert_many(rows).exec(db).await.unwrap();
    }
    start.elapsed()
}

/// A master table registered with a system whose relay is kept off the outbox (a lease held
/// under another name), so that the writes are measured alone.
async fn master_table(db: &DatabaseConnection) -> (MasterTable<book::Entity>, CqrsSystem) {
    fresh_table(db).await;
    let outbox = Outbox::with_table(db.clone(), "bench_outbox");
    outbox.create_table().await.unwrap();
    db.execute_unprepared("DELETE FROM bench_outbox")
        .await
        .unwrap();
    let held = outbox
        .store()
        .lease("bench", Duration::from_secs(3_600))
        .await
        .unwrap();
    assert!(held);
    let table = MasterTable::new("book", book::Entity, &outbox).unwrap();
    let (transport, _broker) = MemoryBroker::default().start_transport();
    let system = CqrsSystem::builder()
        .master(&table)
        .transport(transport)
        .start()
        .await
        .unwrap();
    (table, system)
}

async fn outbox_inserts(db: &DatabaseConnection, n: i64) -> Duration {
    let (table, _system) = master_table(db).await;
    let start = Instant::now();
    for id in 1..=n {
        table.insert(db, new_book(id)).await.unwrap();
    }
    start.elapsed()
}

async fn outbox_batches(db: &DatabaseConnection, n: i64, batch: i64) -> Duration {
    let (table, _system) = master_table(db).await;
    let start = Instant::now();
    for first in (1..=n).step_by(batch as usize) {
        let rows = (first..first + batch).map(new_book).collect();
        table.insert_many(db, rows).await.unwrap();
    }
    start.elapsed()
}

/// Master publishes through the Producer (memory transport), the replica pipeline applies
/// into PostgreSQL through a `ReplicaTable`.
async fn pipeline_rate(db: &DatabaseConnection, n: i64, workers: usize, batch: usize) -> f64 {
    fresh_table(db).await;
    let (transport, _broker) = MemoryBroker::default().start_transport();
    let table = ReplicaTable::new(db.clone(), book::Entity).unwrap();
    let config = CqrsConfig::default()
        .with_queue(format!("bench_orm_{}", std::process::id()))
        .with_workers(workers)
        .with_prefetch(u32::try_from(4 * batch.max(250)).unwrap_or(u32::MAX))
        .with_batch_size(batch);
    let system = CqrsSystem::builder()
        .config(config)
        .master(MasterModel::new("book"))
        .replica(ReplicaModel::new("book", table))
        .transport(transport)
        .start()
        .await
        .unwrap();
    let publisher = system.publisher();
    let start = Instant::now();
    let mut pending = Vec::with_capacity(1024);
    for id in 1..=n {
        pending.push(publisher.save("book", row(id, 0)));
        if pending.len() == 1024 {
            for f in pending.drain(..) {
                f.await.unwrap();
            }
        }
    }
    for f in pending.drain(..) {
        f.await.unwrap();
    }
    while system.metrics().applied < n as u64 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    system.shutdown().await.unwrap();
    rate
}

#[actix_rt::main]
async fn main() {
    let schema = format!("cqrs_bench_{}", std::process::id());
    let admin = connect(None).await;
    admin
        .execute_unprepared(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let db = connect(Some(&schema)).await;

    println!("replica apply into PostgreSQL (SAVE events, half creates, half updates)");
    println!(
        "{:>6} {:>9} {:>14} {:>10}",
        "batch", "events", "events/s", "vs batch 1"
    );
    let mut base = 0.0;
    let mut rate_1000 = 0.0;
    for (batch, n) in [(1, 4_000), (10, 20_000), (100, 60_000), (1000, 100_000)] {
        let _ = apply_rate(&db, batch, n.min(2_000)).await; // warm up
        let mut runs = Vec::new();
        for _ in 0..3 {
            runs.push(apply_rate(&db, batch, n).await);
        }
        runs.sort_by(f64::total_cmp);
        let rate = runs[1];
        if batch == 1 {
            base = rate;
        }
        if batch == 1000 {
            rate_1000 = rate;
        }
        println!("{batch:>6} {n:>9} {rate:>14.0} {:>9.1}x", rate / base);
    }
    println!(
        "target: >= 20000 events/s at batch 1000 ({}), >= 10x batch 1 ({:.1}x)",
        if rate_1000 >= 20_000.0 {
            "met"
        } else {
            "NOT met"
        },
        rate_1000 / base
    );

    println!(
        "\npipeline: publish -> memory transport -> route -> ReplicaTable on PostgreSQL -> ack"
    );
    for (workers, batch) in [(1, 1000), (4, 250), (4, 1000)] {
        let mut runs = Vec::new();
        for _ in 0..3 {
            runs.push(pipeline_rate(&db, 100_000, workers, batch).await);
        }
        runs.sort_by(f64::total_cmp);
        println!(
            "workers={workers} batch_size={batch:<5} {:>9.0} events/s (median of 3)",
            runs[1]
        );
    }

    println!("\nmaster writes (rows/s; the ratio is outbox time over plain time)");
    let n = 3_000;
    let _ = plain_inserts(&db, 200).await;
    let _ = outbox_inserts(&db, 200).await;
    // Each figure is the median of 3 runs.
    macro_rules! median3 {
        ($e:expr) => {{
            let mut runs = vec![$e.await, $e.await, $e.await];
            runs.sort();
            runs[1]
        }};
    }
    let single = median3!(plain_inserts(&db, n));
    let single_txn = median3!(plain_inserts_in_transactions(&db, n));
    let single_outbox = median3!(outbox_inserts(&db, n));
    let batch = median3!(plain_batches(&db, n * 10, 100));
    let batch_outbox = median3!(outbox_batches(&db, n * 10, 100));
    let rows = |label: &str, plain: Duration, outbox: Duration, n: i64| {
        let rate = |d: Duration| n as f64 / d.as_secs_f64();
        println!(
            "{label:<40} plain {:>8.0}   outbox {:>8.0}   overhead {:.2}x",
            rate(plain),
            rate(outbox),
            outbox.as_secs_f64() / plain.as_secs_f64()
        );
    };
    rows("one row, autocommit insert", single, single_outbox, n);
    rows(
        "one row, insert in a transaction",
        single_txn,
        single_outbox,
        n,
    );
    rows(
        "100 rows per transaction (insert_many)",
        batch,
        batch_outbox,
        n * 10,
    );

    admin
        .execute_unprepared(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}
