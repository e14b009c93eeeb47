//! Gap repair over the real RabbitMQ broker: a SeaORM master table on SQLite answers the sync
//! requests of a SeaORM replica table on PostgreSQL that missed revisions, and the replica
//! converges to the master's row without an operator.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use cqrs_sync::orm::{Dispatch, MasterTable, ReplicaTable, SyncRows};
use cqrs_sync::transport::{HEADER_REASON, Headers, ListDeadLetters, OutgoingMessage};
use cqrs_sync::{CqrsSystem, CqrsSystemExt, ReplicaModel, Route, sync_request_key};
use sea_orm::{ActiveValue::Set, ConnectionTrait};
use support::db::{Backend, TestDb};
use support::faults::{item, items};
use support::rabbitmq::{Vhost, connect};
use support::{row, wait_until};

const PATIENCE: Duration = Duration::from_secs(60);

#[actix_rt::test]
async fn a_replica_that_missed_revisions_converges_through_the_broker() {
    support::init_tracing();
    let vhost = Vhost::create("cqrs_gap_repair");
    let (master_t, _m) = connect(vhost.config()).await;
    let (replica_t, _r) = connect(vhost.config()).await;
    let master_db = TestDb::new(Backend::Sqlite, "gap_master").await;
    master_db.create(item::Entity).await;
    let replica_db = TestDb::new(Backend::Postgres, "gap_replica").await;
    replica_db.create(item::Entity).await;

    let replica_table =
        ReplicaTable::new(replica_db.db.clone(), item::Entity).unwrap_or_else(|e| panic!("{e}"));
    let replica = CqrsSystem::builder()
        .config(vhost.service_config().with_queue("gap_replica"))
        .replica(ReplicaModel::new("item", replica_table).with_gap_repair(true))
        .transport(replica_t.clone())
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let table = MasterTable::new("item", item::Entity, Dispatch::AfterCommit)
        .unwrap_or_else(|e| panic!("{e}"));
    let master = CqrsSystem::builder()
        .config(vhost.service_config())
        .master(&table)
        .answer_sync_requests(SyncRows::new(table.source(master_db.db.clone())))
        .transport(master_t.clone())
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let created = table
        .insert(
            &master_db.db,
            item::ActiveModel {
                id: Set(1),
                name: Set("one".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let first = created.cqrs_revision;
    let expected = |rev: i64, name: &str| BTreeMap::from([(1, (rev, name.to_owned()))]);
    wait_until("the replica to have the row", PATIENCE, || async {
        items(&replica_db).await == expected(first, "one")
    })
    .await;

    // Five revisions whose events never left the master (written past the adapter), then a
    // straggler SAVE of an older one arrives: the replica applies it with a gap and asks.
    let latest = first + 6;
    let sql = format!("UPDATE item SET name = 'latest', cqrs_revision = {latest} WHERE id = 1");
    master_db
        .db
        .execute_unprepared(&sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    master
        .publisher()
        .save("item", row(1, first + 3, "straggler"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_until(
        "the replica to converge to the master's row",
        PATIENCE,
        || async { items(&replica_db).await == expected(latest, "latest") },
    )
    .await;

    // A request that is not JSON is dead-lettered with its reason on the master side, and
    // nothing is left in the request queue.
    master_t
        .publish(OutgoingMessage {
            route: Route::broadcast(sync_request_key("item")),
            body: b"{not json".to_vec(),
            content_type: "text/plain".into(),
            headers: Headers::new(),
            expiration: None,
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let dead_letter_queue = format!("dead_letter_{}", sync_request_key("item"));
    let list = || {
        master_t.list_dead_letters(ListDeadLetters {
            dead_letter_queue: dead_letter_queue.clone(),
            cqrs_id: None,
            limit: usize::MAX,
        })
    };
    wait_until("the bad request to be dead-lettered", PATIENCE, || {
        let listed = list();
        async move { listed.await.is_ok_and(|l| l.len() == 1) }
    })
    .await;
    let letters = list().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        letters[0].headers.get(HEADER_REASON).map(String::as_str),
        Some("decode")
    );
    let stats = replica_t
        .inspect("gap_replica")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        stats.dead_letters, 0,
        "a request reached the replica's queues"
    );

    for s in [replica, master] {
        s.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    }
    master_db.cleanup().await;
    replica_db.cleanup().await;
}
