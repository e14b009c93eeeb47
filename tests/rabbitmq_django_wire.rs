//! The wire test against the real django-cqrs 3.1.0 from PyPI (the Django project in
//! `tests/django_wire/`, run with the virtualenv `target/django-venv` that the test creates on
//! first use with `tests/django_wire/setup-venv.sh`):
//! - a Django master's creates, updates, deletes, directed and broadcast syncs are applied by a
//!   Rust replica (a SeaORM `ReplicaTable` on SQLite) to the same table contents;
//! - a Rust master's events are applied by a Django replica (`cqrs_consume`) to the same
//!   contents, one of them carrying `traceparent` and `tracestate` headers;
//! - a Django replica and a Rust replica bound to one exchange both converge.
//!
//! django-cqrs 3.1.0 always uses the virtual host `/`, so each test has its own exchange and
//! queues there and deletes them at the end (the helpers are in `tests/support/django.rs`).

#![cfg(feature = "rabbitmq")]

mod support;

use cqrs_orm_adapters::ReplicaTable;
use cqrs_sync::CqrsSystemExt;
use cqrs_sync::transport::{HEADER_TRACEPARENT, HEADER_TRACESTATE};
use cqrs_sync::{
    Codec, CqrsConfig, CqrsSystem, EncodedEvent, Envelope, JsonObject, MasterModel, ReplicaModel,
    Route, SignalType, TransportHandle,
};
use cqrs_transports::conformance::run_check;
use sea_orm::EntityTrait;
use serde_json::{Value, json};
use support::db::{Backend, TestDb};
use support::django::{
    Django, PATIENCE, Table, declare_queue, normalise, service, teardown, temp_dir, transport,
    wait_django,
};
use support::{unique, wait_until};

/// The Rust replica's table: the Django replica's columns, SeaORM types.
mod author {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "author")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub name: String,
        #[sea_orm(column_type = "Decimal(Some((6, 2)))")]
        pub rating: Decimal,
        pub birth_date: Option<Date>,
        pub cqrs_revision: i64,
        pub cqrs_updated: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The SeaORM replica's rows, normalised like the Django tables.
async fn rust_table(db: &TestDb) -> Table {
    author::Entity::find()
        .all(&db.db)
        .await
        .unwrap_or_else(|e| panic!("read the Rust replica: {e}"))
        .into_iter()
        .map(|a| {
            (
                a.id,
                (
                    a.name,
                    format!("{:.2}", a.rating),
                    a.birth_date.map(|d| d.to_string()),
                    a.cqrs_revision,
                ),
            )
        })
        .collect()
}

/// The configuration of a system on `transport` (built by [`transport`]).
fn on(transport: &TransportHandle) -> CqrsConfig {
    service(transport.exchange().unwrap_or("cqrs"))
}

/// A Rust replica of `author` on `queue`, applying into a SQLite table through SeaORM.
async fn rust_replica(transport: &TransportHandle, queue: &str) -> (CqrsSystem, TestDb) {
    let db = TestDb::new(Backend::Sqlite, "wire").await;
    db.create(author::Entity).await;
    let table = ReplicaTable::new(db.db.clone(), author::Entity).unwrap_or_else(|e| panic!("{e}"));
    let system = CqrsSystem::builder()
        .config(
            on(transport)
                .with_queue(queue)
                .with_workers(1)
                .with_batch_size(100),
        )
        .replica(ReplicaModel::new("author", table))
        .transport(transport.clone())
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (system, db)
}

#[actix_rt::test]
async fn a_django_master_feeds_a_rust_replica() {
    support::init_tracing();
    let dir = temp_dir("cqrs_wire_dm");
    let exchange = unique("wire_dm");
    let rust_queue = unique("rust_replica");
    let master = Django::new("master", &dir, &exchange, "unused");
    // Authors 1-10 are published before any replica queue exists: the broker drops them, and
    // only the directed (1-5) and broadcast (6-10) syncs bring them to the replica.
    master.run(&["wire_master", "before"]);
    let (t, addr) = transport(&exchange).await;
    run_check(
        async {
            let (replica, table) = rust_replica(&t, &rust_queue).await;
            master.run(&["wire_master", "main", "--queue", &rust_queue]);
            let expected = master.table();
            assert_eq!(expected.len(), 60 - 7, "60 authors less 7 deleted");
            wait_until(
                "the Rust replica equals the Django master",
                PATIENCE,
                || async { rust_table(&table).await == expected },
            )
            .await;
            replica.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
            table.cleanup().await;
        },
        teardown(&addr),
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn author(id: i64, revision: i64, name: &str, rating: &str, birth: Option<&str>) -> JsonObject {
    let v = json!({
        "id": id,
        "name": name,
        "rating": rating,
        "birth_date": birth,
        "cqrs_revision": revision,
        "cqrs_updated": format!("2026-11-27T18:29:{:02}.788133Z", revision % 60),
    });
    match v {
        Value::Object(map) => map,
        _ => unreachable!("json! of an object is an object"),
    }
}

#[actix_rt::test]
async fn a_rust_master_feeds_a_django_replica() {
    support::init_tracing();
    let dir = temp_dir("cqrs_wire_rm");
    let exchange = unique("wire_rm");
    let dj_queue = unique("dj_replica");
    let django = Django::new("replica", &dir, &exchange, &dj_queue);
    let (t, addr) = transport(&exchange).await;
    run_check(
        async {
            declare_queue(&t, &dj_queue).await;
            let _consumer = django.consume();
            let master = CqrsSystem::builder()
                .config(on(&t))
                .master(MasterModel::new("author"))
                .transport(t.clone())
                .start()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let p = master.publisher();
            let mut expected = Table::new();
            for id in 1..=40 {
                let name = format!("rust author {id} \u{e9} \"q\" / s");
                let birth = (id % 3 != 0)
                    .then(|| format!("19{:02}-0{}-1{}", 50 + id % 40, 1 + id % 9, id % 10));
                let rating = format!("{}.{:02}", id % 50, (id * 7) % 100);
                p.save("author", author(id, 0, &name, &rating, birth.as_deref()))
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                let (_, row) = normalise(
                    &Value::Object(author(id, 0, &name, &rating, birth.as_deref())),
                    0,
                );
                expected.insert(id, row);
            }
            for id in (1..=40).step_by(3) {
                let name = format!("rust author {id} v1");
                p.save("author", author(id, 1, &name, "9.99", None))
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                expected.insert(
                    id,
                    normalise(&Value::Object(author(id, 1, &name, "9.99", None)), 1).1,
                );
            }
            for id in (5..=40).step_by(7) {
                let revision = expected.get(&id).map_or(0, |r| r.3) + 1;
                p.delete("author", Value::from(id), revision, chrono::Utc::now())
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                expected.remove(&id);
            }
            // A SYNC directed at the Django queue and a broadcast one, same revision, new content.
            for (id, queue) in [(2, Some(dj_queue.as_str())), (3, None)] {
                let revision = expected.get(&id).map_or(0, |r| r.3);
                let data = author(
                    id,
                    revision,
                    &format!("synced {id}"),
                    "1.50",
                    Some("2000-01-01"),
                );
                p.sync("author", data.clone(), queue)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                expected.insert(id, normalise(&Value::Object(data), revision).1);
            }
            // A message carrying W3C trace context headers (as a master with the feature `otel`
            // sends them) is applied like any other: Kombu ignores headers it does not know.
            let data = author(41, 0, "traced author", "4.10", None);
            let mut event = EncodedEvent::encode(
                Envelope::new(SignalType::Save, "author", data.clone()),
                Route::broadcast("author"),
                Codec::Json,
                None,
            )
            .unwrap_or_else(|e| panic!("{e}"));
            event.headers.insert(
                HEADER_TRACEPARENT.to_owned(),
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
            );
            event.headers.insert(
                HEADER_TRACESTATE.to_owned(),
                "rojo=00f067aa0ba902b7".to_owned(),
            );
            p.publish_encoded(event)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            expected.insert(41, normalise(&Value::Object(data), 0).1);
            wait_django(&django, &expected).await;
            master.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
            drop(_consumer);
        },
        teardown(&addr),
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[actix_rt::test]
async fn a_django_and_a_rust_replica_on_one_exchange_both_converge() {
    support::init_tracing();
    let dir = temp_dir("cqrs_wire_both");
    let exchange = unique("wire_both");
    let (dj_queue, rust_queue) = (unique("dj_replica"), unique("rust_replica"));
    let master = Django::new("master", &dir, &exchange, "unused");
    let dj_replica = Django::new("replica", &dir, &exchange, &dj_queue);
    let (t, addr) = transport(&exchange).await;
    run_check(
        async {
            declare_queue(&t, &dj_queue).await;
            let _consumer = dj_replica.consume();
            let (replica, table) = rust_replica(&t, &rust_queue).await;
            master.run(&["wire_master", "before"]);
            master.run(&["wire_master", "main", "--queue", &dj_queue]);
            let expected = master.table();
            wait_until(
                "the Rust replica equals the Django master",
                PATIENCE,
                || async { rust_table(&table).await == expected },
            )
            .await;
            wait_django(&dj_replica, &expected).await;
            replica.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
            table.cleanup().await;
            drop(_consumer);
        },
        teardown(&addr),
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}
