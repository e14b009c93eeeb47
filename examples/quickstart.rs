//! A master and a replica in one process, each with its own SQLite file, on the in-memory
//! transport: no services needed.
//!
//! The master owns the `author` table: it creates, updates and deletes rows through a
//! [`MasterTable`], which bumps `cqrs_revision` and writes each event to an outbox in the same
//! transaction; the system relays the outbox. The replica applies the events to its own
//! `author` table with a [`ReplicaTable`]. At the end both tables are printed side by side.
//!
//! ```text
//! cargo run --example quickstart --features sqlite
//! ```

#![allow(clippy::print_stdout)] // an example's job is to print its result

use std::path::{Path, PathBuf};
use std::time::Duration;

use cqrs_sync::orm::{MasterTable, Outbox, ReplicaTable};
use cqrs_sync::prelude::*;
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, EntityTrait,
    QueryOrder, Schema,
};

/// The `author` table, the same on both sides.
mod author {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "author")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub name: String,
        pub email: String,
        pub cqrs_revision: i64,
        pub cqrs_updated: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A fresh SQLite file with the `author` table.
async fn open(path: &Path) -> Result<DatabaseConnection, Box<dyn std::error::Error>> {
    let _ = std::fs::remove_file(path);
    let mut options = ConnectOptions::new(format!("sqlite://{}?mode=rwc", path.display()));
    options.max_connections(1).sqlx_logging(false);
    let db = Database::connect(options).await?;
    let create = Schema::new(db.get_database_backend()).create_table_from_entity(author::Entity);
    db.execute(&create).await?;
    Ok(db)
}

/// Rows equal as replicated: `cqrs_updated` travels with microsecond precision.
fn same(a: &[author::Model], b: &[author::Model]) -> bool {
    let key = |r: &author::Model| {
        (
            r.id,
            r.name.clone(),
            r.email.clone(),
            r.cqrs_revision,
            r.cqrs_updated.timestamp_micros(),
        )
    };
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| key(x) == key(y))
}

async fn rows(db: &DatabaseConnection) -> Result<Vec<author::Model>, sea_orm::DbErr> {
    author::Entity::find()
        .order_by_asc(author::Column::Id)
        .all(db)
        .await
}

#[actix::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();

    let dir: PathBuf = std::env::temp_dir().join("cqrs-sync-quickstart");
    std::fs::create_dir_all(&dir)?;
    let master_db = open(&dir.join("master.sqlite3")).await?;
    let replica_db = open(&dir.join("replica.sqlite3")).await?;
    let outbox = Outbox::new(master_db.clone());
    outbox.create_table().await?;

    let authors = MasterTable::new("author", author::Entity, &outbox)?;
    let system = CqrsSystem::builder() // url = "memory://" by default
        .config(CqrsConfig::default().with_queue("quickstart_replica"))
        .master(&authors)
        .replica(ReplicaModel::new(
            "author",
            ReplicaTable::new(replica_db.clone(), author::Entity)?,
        ))
        .start()
        .await?;

    // The master service: create, update and delete rows. Each write commits the row and its
    // event together; the relay publishes the event.
    let people = [
        ("Ada Lovelace", "ada@example.com"),
        ("Alan Turing", "alan@example.com"),
        ("Grace Hopper", "grace@example.com"),
        ("Edsger Dijkstra", "edsger@example.com"),
        ("Barbara Liskov", "barbara@example.com"),
    ];
    let created = authors
        .insert_many(
            &master_db,
            people
                .iter()
                .map(|(name, email)| author::ActiveModel {
                    name: Set((*name).to_owned()),
                    email: Set((*email).to_owned()),
                    ..Default::default()
                })
                .collect(),
        )
        .await?;
    let id = |i: usize| created[i].id;
    for (i, name) in [
        (0, "Ada King, Countess of Lovelace"),
        (2, "Rear Admiral Grace Hopper"),
        (0, "Augusta Ada King"),
    ] {
        let change = author::ActiveModel {
            id: Set(id(i)),
            name: Set(name.to_owned()),
            ..Default::default()
        };
        authors.update(&master_db, change).await?;
    }
    authors.delete(&master_db, id(3)).await?;
    authors
        .update_many(
            &master_db,
            sea_orm::Condition::all().add(author::Column::Email.like("%@example.com")),
            vec![(author::Column::Email, "on-file@example.org".into())],
        )
        .await?;

    // Wait until every event is confirmed by the broker, then until the replica applied it.
    system.flush().await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let master = rows(&master_db).await?;
    let mut replica = rows(&replica_db).await?;
    while !same(&master, &replica) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        system.wait_idle().await?;
        replica = rows(&replica_db).await?;
    }

    println!("master:  {}", dir.join("master.sqlite3").display());
    println!("replica: {}\n", dir.join("replica.sqlite3").display());
    println!(
        "{:<4} {:<32} {:>4}   | {:<32} {:>4}",
        "id", "master name", "rev", "replica name", "rev"
    );
    let mut ids: Vec<i64> = master.iter().chain(&replica).map(|r| r.id).collect();
    ids.sort_unstable();
    ids.dedup();
    let show = |rows: &[author::Model], id: i64| {
        rows.iter().find(|r| r.id == id).map_or_else(
            || ("-".to_owned(), "-".to_owned()),
            |r| (r.name.clone(), r.cqrs_revision.to_string()),
        )
    };
    for id in ids {
        let ((mn, mr), (rn, rr)) = (show(&master, id), show(&replica, id));
        println!("{id:<4} {mn:<32} {mr:>4}   | {rn:<32} {rr:>4}");
    }
    let metrics = system.metrics();
    println!(
        "\npublished {}, received {}, applied {}, skipped {}, dead-lettered {}",
        metrics.published,
        metrics.received,
        metrics.applied,
        metrics.skipped,
        metrics.dead_lettered
    );
    let matches = same(&master, &replica);
    println!("tables match: {}", if matches { "yes" } else { "NO" });
    system.shutdown().await?;
    if !matches {
        return Err("the replica does not match the master".into());
    }
    Ok(())
}
