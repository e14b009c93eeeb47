//! The pipeline over the real Redis server: a SeaORM master writing through its outbox feeds
//! two SeaORM replicas (creates, updates, deletes, a directed sync), a poison message goes
//! through its parked retries into the dead-letter stream while the rest flows, and malformed
//! bodies and unknown ids are dead-lettered with a reason.

#![cfg(all(feature = "redis", feature = "postgres"))]

mod support;

use cqrs_orm_adapters::ReplicaTable;
use cqrs_sync::orm::{MasterTable, Outbox};
use cqrs_sync::{CqrsSystem, CqrsSystemExt, ReplicaModel};
use sea_orm::ActiveValue::Set;
use sea_orm::{EntityTrait, QueryOrder};
use support::db::{Backend, TestDb};
use support::entities::author;
use support::redis::{PATIENCE, Space, connect};
use support::{unique, wait_until};

async fn authors_of(db: &TestDb) -> Vec<(i64, String, i64)> {
    author::Entity::find()
        .order_by_asc(author::Column::Id)
        .all(&db.db)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|a| (a.id, a.name, a.cqrs_revision))
        .collect()
}

#[actix_rt::test]
async fn a_sea_orm_master_feeds_two_sea_orm_replicas_through_redis() {
    support::init_tracing();
    let space = Space::create("cqrs_redis_e2e");
    let (transport, _addr) = connect(space.config()).await;
    let master_db = TestDb::new(Backend::Postgres, "redis_master").await;
    master_db.create(author::Entity).await;
    let outbox = Outbox::with_table(master_db.db.clone(), unique("outbox"));
    outbox
        .create_table()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let table =
        MasterTable::new("author", author::Entity, &outbox).unwrap_or_else(|e| panic!("{e}"));
    let replica_dbs = [
        TestDb::new(Backend::Sqlite, "redis_replica_one").await,
        TestDb::new(Backend::Postgres, "redis_replica_two").await,
    ];
    let mut replicas = Vec::new();
    for (db, queue) in replica_dbs.iter().zip(["replica_one", "replica_two"]) {
        db.create(author::Entity).await;
        let replica =
            ReplicaTable::new(db.db.clone(), author::Entity).unwrap_or_else(|e| panic!("{e}"));
        replicas.push(
            CqrsSystem::builder()
                .config(space.service_config().with_queue(queue).with_workers(4))
                .replica(ReplicaModel::new("author", replica))
                .transport(transport.clone())
                .start()
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        );
    }
    let master = CqrsSystem::builder()
        .config(space.service_config())
        .master(&table)
        .transport(transport.clone())
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // 300 rows created in one statement, each renamed twice, every fifth deleted.
    let created = table
        .insert_many(
            &master_db.db,
            (0..300)
                .map(|i| author::ActiveModel {
                    name: Set(format!("a{i}")),
                    ..Default::default()
                })
                .collect(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for round in 1..=2 {
        for a in &created {
            let change = author::ActiveModel {
                id: Set(a.id),
                name: Set(format!("a{}-{round}", a.id)),
                ..Default::default()
            };
            table
                .update(&master_db.db, change)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    for victim in created.iter().step_by(5) {
        table
            .delete(&master_db.db, victim.id)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    master.flush().await.unwrap_or_else(|e| panic!("{e}"));
    let expected = authors_of(&master_db).await;
    assert_eq!(expected.len(), 240);
    for (db, name) in replica_dbs.iter().zip(["one", "two"]) {
        wait_until(
            &format!("replica {name} equals the master"),
            PATIENCE,
            || async { authors_of(db).await == expected },
        )
        .await;
    }
    for r in &replicas {
        r.wait_idle().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.metrics().dead_lettered, 0);
    }
    for s in replicas.into_iter().chain([master]) {
        s.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    }
    let [one, two] = replica_dbs;
    for db in [one, two, master_db] {
        db.cleanup().await;
    }
}

#[actix_rt::test]
async fn a_poison_message_is_parked_max_retries_times_then_dead_lettered_while_others_flow() {
    support::init_tracing();
    let space = Space::create("cqrs_redis_poison");
    let (transport, _addr) = connect(space.config()).await;
    support::scenarios::poison_is_parked_then_dead_lettered_while_others_flow(
        &transport,
        &space.service_config(),
    )
    .await;
}

#[actix_rt::test]
async fn malformed_bodies_and_unknown_ids_are_dead_lettered_with_a_reason() {
    support::init_tracing();
    let space = Space::create("cqrs_redis_reject");
    let (transport, _addr) = connect(space.config()).await;
    support::scenarios::malformed_and_unknown_are_dead_lettered(
        &transport,
        &space.service_config(),
    )
    .await;
}
