//! The framework's tables as SeaORM migrations, on SQLite, PostgreSQL and MariaDB: a migrator
//! records them by name, up creates tables the outbox and the tombstones work with, down drops
//! them, and tables made earlier by `create_table` are taken as they are. An outbox made by an
//! earlier release, without the `headers` column, gets it from `AddOutboxHeaders` or from
//! `create_table`, and its rows stay readable.

// The scenarios are plain async functions run by generated #[test]s; a failed unwrap is a
// failed test.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use cqrs_sync::orm::migration::sea_orm_migration::{MigrationTrait, MigratorTrait, SchemaManager};
use cqrs_sync::orm::migration::{AddOutboxHeaders, CreateOutbox, CreateTombstones};
use cqrs_sync::orm::{Outbox, ReplicaTable, Tombstones};
use cqrs_sync::{Applied, JsonObject, ReplicaEvent, ReplicaHandler, SignalType, Skip};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::{Value, json};
use support::db::{Backend, TestDb, on_each_db};
use support::entities::book;

on_each_db!(
    up_creates_working_tables_and_down_drops_them,
    tables_made_by_create_table_are_kept,
    an_outbox_of_an_earlier_release_gets_the_headers_column
);

/// A service's migrator: the default tables and a second outbox and tombstone table of other
/// names.
struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreateOutbox::default()),
            Box::new(CreateTombstones::default()),
            Box::new(CreateOutbox::new("orders_outbox")),
            Box::new(CreateTombstones::new("orders_tombstones")),
        ]
    }
}

/// Every table the migrator makes, with its columns.
const TABLES: [(&str, &[&str]); 6] = [
    (
        "cqrs_outbox",
        &[
            "id",
            "cqrs_id",
            "queue",
            "content_type",
            "expires_at",
            "body",
            "headers",
        ],
    ),
    ("cqrs_outbox_lease", &["name", "owner", "expires_at"]),
    ("cqrs_tombstones", &["table_name", "pk", "revision"]),
    (
        "orders_outbox",
        &[
            "id",
            "cqrs_id",
            "queue",
            "content_type",
            "expires_at",
            "body",
            "headers",
        ],
    ),
    ("orders_outbox_lease", &["name", "owner", "expires_at"]),
    ("orders_tombstones", &["table_name", "pk", "revision"]),
];

async fn applied(t: &TestDb) -> Vec<String> {
    Migrator::get_applied_migrations(&t.db)
        .await
        .unwrap()
        .iter()
        .map(|m| m.name().to_owned())
        .collect()
}

/// Whether each of [`TABLES`] exists, and with all its columns when it does.
async fn tables(t: &TestDb) -> Vec<bool> {
    let manager = SchemaManager::new(&t.db);
    let mut found = Vec::new();
    for (table, columns) in TABLES {
        let exists = manager.has_table(table).await.unwrap();
        if exists {
            for column in columns {
                assert!(
                    manager.has_column(table, column).await.unwrap(),
                    "{table}.{column} exists"
                );
            }
        }
        found.push(exists);
    }
    found
}

fn object(v: Value) -> JsonObject {
    match v {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn event(signal: SignalType, id: i64, revision: i64) -> ReplicaEvent {
    let data = object(json!({
        "id": id,
        "title": format!("r{revision}"),
        "cqrs_revision": revision,
        "cqrs_updated": "2026-11-30 09:00:00+00:00",
    }));
    ReplicaEvent::new(
        cqrs_sync::Envelope::new(signal, "book", data),
        "book",
        false,
        false,
    )
}

/// The outbox is empty, its lease can be taken and given back, and tombstones in `tombstones`
/// keep a stale SAVE from bringing back a deleted row.
async fn check_tables_work(t: &TestDb, outbox: &str, tombstones: &str) {
    let outbox = Outbox::with_table(t.db.clone(), outbox);
    assert_eq!(outbox.pending().await.unwrap(), 0);
    assert!(outbox.read(0, 10).await.unwrap().is_empty());
    let store = outbox.store();
    assert!(
        store
            .lease("migration-test", Duration::from_secs(60))
            .await
            .unwrap()
    );
    store.release("migration-test").await.unwrap();

    let table = ReplicaTable::new(t.db.clone(), book::Entity)
        .unwrap()
        .with_tombstones(Tombstones::new(tombstones));
    let apply = |e: ReplicaEvent| {
        let table = table.clone();
        async move { table.apply(&e).await.unwrap() }
    };
    assert_eq!(apply(event(SignalType::Save, 1, 0)).await, Applied::Created);
    assert_eq!(
        apply(event(SignalType::Delete, 1, 2)).await,
        Applied::Deleted
    );
    assert_eq!(
        apply(event(SignalType::Save, 1, 1)).await,
        Applied::Skipped(Skip::Deleted),
        "the tombstone in {tombstones} holds"
    );
}

async fn up_creates_working_tables_and_down_drops_them(backend: Backend) {
    support::init_tracing();
    let t = TestDb::new(backend, "migrate").await;
    t.create(book::Entity).await;
    assert_eq!(tables(&t).await, [false; 6]);

    Migrator::up(&t.db, None).await.unwrap();
    assert_eq!(tables(&t).await, [true; 6]);
    assert_eq!(
        applied(&t).await,
        [
            "m20261130_000001_cqrs_outbox",
            "m20261130_000002_cqrs_tombstones",
            "m20261130_000001_cqrs_outbox_orders_outbox",
            "m20261130_000002_cqrs_tombstones_orders_tombstones",
        ]
    );
    assert!(
        Migrator::get_pending_migrations(&t.db)
            .await
            .unwrap()
            .is_empty()
    );
    check_tables_work(&t, "cqrs_outbox", "cqrs_tombstones").await;
    check_tables_work(&t, "orders_outbox", "orders_tombstones").await;

    // Again: nothing is pending, nothing changes.
    Migrator::up(&t.db, None).await.unwrap();
    assert_eq!(applied(&t).await.len(), 4);

    Migrator::down(&t.db, Some(2)).await.unwrap();
    assert_eq!(tables(&t).await, [true, true, true, false, false, false]);
    assert_eq!(applied(&t).await.len(), 2);

    Migrator::down(&t.db, None).await.unwrap();
    assert_eq!(tables(&t).await, [false; 6]);
    assert!(applied(&t).await.is_empty());
    assert!(
        SchemaManager::new(&t.db).has_table("book").await.unwrap(),
        "down drops only the framework's tables"
    );
    t.cleanup().await;
}

async fn tables_made_by_create_table_are_kept(backend: Backend) {
    support::init_tracing();
    let t = TestDb::new(backend, "migrate_kept").await;
    t.create(book::Entity).await;
    let outbox = Outbox::new(t.db.clone());
    outbox.create_table().await.unwrap();
    Tombstones::default().create_table(&t.db).await.unwrap();
    check_tables_work(&t, "cqrs_outbox", "cqrs_tombstones").await;

    Migrator::up(&t.db, None).await.unwrap();
    assert_eq!(tables(&t).await, [true; 6]);
    assert_eq!(applied(&t).await.len(), 4);
    let rows =
        t.db.query_one_raw(Statement::from_string(
            t.db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM cqrs_tombstones",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap();
    assert_eq!(
        rows, 1,
        "the tombstone written before the migration is kept"
    );
    Migrator::down(&t.db, None).await.unwrap();
    assert_eq!(tables(&t).await, [false; 6]);
    t.cleanup().await;
}

/// A migrator of a service that had the outbox before the `headers` column existed.
struct Upgrade;

impl MigratorTrait for Upgrade {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreateOutbox::default()),
            Box::new(AddOutboxHeaders::default()),
        ]
    }
}

/// The outbox `table` as the first release made it, with one event in it.
async fn old_outbox(t: &TestDb, table: &str) {
    let (id, body) = match t.backend {
        Backend::Postgres => ("BIGSERIAL PRIMARY KEY", "BYTEA"),
        Backend::MySql => ("BIGINT AUTO_INCREMENT PRIMARY KEY", "LONGBLOB"),
        Backend::Sqlite => ("INTEGER PRIMARY KEY AUTOINCREMENT", "BLOB"),
    };
    t.db.execute_unprepared(&format!(
        "CREATE TABLE {table} (id {id}, cqrs_id VARCHAR(191) NOT NULL, \
         queue VARCHAR(191) NULL, content_type VARCHAR(64) NOT NULL, \
         expires_at BIGINT NULL, body {body} NOT NULL)"
    ))
    .await
    .unwrap();
    let backend = t.db.get_database_backend();
    let placeholder = if backend == DbBackend::Postgres {
        "$1"
    } else {
        "?"
    };
    t.db.execute_raw(Statement::from_sql_and_values(
        backend,
        format!(
            "INSERT INTO {table} (cqrs_id, content_type, body) \
             VALUES ('author', 'text/plain', {placeholder})"
        ),
        [sea_orm::Value::Bytes(Some(b"{}".to_vec()))],
    ))
    .await
    .unwrap();
}

/// The event written before the column existed reads back with no headers.
async fn old_event_reads(t: &TestDb, table: &str) {
    let events = Outbox::with_table(t.db.clone(), table)
        .read(0, 10)
        .await
        .unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].event.body, b"{}");
    assert!(events[0].event.headers.is_empty());
}

async fn an_outbox_of_an_earlier_release_gets_the_headers_column(backend: Backend) {
    support::init_tracing();
    let t = TestDb::new(backend, "migrate_headers").await;
    let manager = SchemaManager::new(&t.db);

    // Through the migration: CreateOutbox keeps the old table, AddOutboxHeaders adds the column.
    old_outbox(&t, "cqrs_outbox").await;
    assert!(!manager.has_column("cqrs_outbox", "headers").await.unwrap());
    Upgrade::up(&t.db, None).await.unwrap();
    assert!(manager.has_column("cqrs_outbox", "headers").await.unwrap());
    old_event_reads(&t, "cqrs_outbox").await;
    Upgrade::down(&t.db, Some(1)).await.unwrap();
    assert!(!manager.has_column("cqrs_outbox", "headers").await.unwrap());
    Upgrade::down(&t.db, None).await.unwrap();
    assert!(!manager.has_table("cqrs_outbox").await.unwrap());

    // On a new database both migrations run and the second finds the column there.
    Upgrade::up(&t.db, None).await.unwrap();
    assert!(manager.has_column("cqrs_outbox", "headers").await.unwrap());
    Upgrade::down(&t.db, None).await.unwrap();

    // Through create_table, for services that call it at start.
    old_outbox(&t, "old_outbox").await;
    let outbox = Outbox::with_table(t.db.clone(), "old_outbox");
    outbox.create_table().await.unwrap();
    assert!(manager.has_column("old_outbox", "headers").await.unwrap());
    outbox.create_table().await.unwrap();
    old_event_reads(&t, "old_outbox").await;
    t.cleanup().await;
}
