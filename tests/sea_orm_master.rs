//! The SeaORM master side on SQLite, PostgreSQL and MariaDB: revision bookkeeping, the outbox
//! and the system's relay of it (including a master killed mid-window and two processes on one
//! outbox), direct mode, and the sync, dump and diff primitives.

// The scenarios are plain async functions run by generated #[test]s; a failed unwrap is a
// failed test.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cqrs_sync::CqrsSystemExt;
use cqrs_sync::orm::{Dispatch, MasterTable, Outbox, ReplicaTable};
use cqrs_sync::transports::memory::MemoryBroker;
use cqrs_sync::{
    Applied, Codec, CqrsConfig, CqrsSystem, JsonObject, ReplicaEvent, ReplicaModel, SignalType,
    TransportHandle, handler_fn,
};
use rust_decimal::Decimal;
use sea_orm::ActiveValue::Set;
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryOrder};
use serde_json::{Value, json};
use support::db::{Backend, TestDb, on_each_db};
use support::entities::author;
use support::{unique, wait_until};

const PATIENCE: Duration = Duration::from_secs(60);

on_each_db!(
    writes_bump_revisions_and_record_events,
    relayed_events_reach_a_replica_table,
    a_relay_killed_mid_window_loses_nothing,
    two_relays_share_one_outbox,
    direct_mode_publishes_after_commit,
    sync_dump_and_diff_repair_a_replica,
    a_custom_serializer_reads_through_the_transaction,
    the_relay_reads_past_pages_of_other_ids,
);

fn new_author(name: &str) -> author::ActiveModel {
    author::ActiveModel {
        name: Set(name.to_owned()),
        fee: Set(Some(Decimal::new(1250, 2))),
        ..Default::default()
    }
}

async fn master_db(backend: Backend, name: &str) -> (TestDb, Outbox) {
    support::init_tracing();
    let t = TestDb::new(backend, name).await;
    t.create(author::Entity).await;
    let outbox = Outbox::with_table(t.db.clone(), unique("outbox"));
    outbox
        .create_table()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (t, outbox)
}

fn authors(outbox: &Outbox) -> MasterTable<author::Entity> {
    MasterTable::new("author", author::Entity, outbox).unwrap_or_else(|e| panic!("{e}"))
}

/// The lease owner tests take to keep the system's relay off an outbox while they inspect it.
const INSPECTOR: &str = "inspector";

/// Keeps every relay off `outbox` until [`let_go`].
async fn hold(outbox: &Outbox) {
    let held = outbox
        .store()
        .lease(INSPECTOR, Duration::from_secs(3_600))
        .await
        .unwrap();
    assert!(held, "the outbox lease was free");
}

async fn let_go(outbox: &Outbox) {
    outbox.store().release(INSPECTOR).await.unwrap();
}

/// A master system for `table` on a memory broker of its own, its relay kept off.
async fn inspected(outbox: &Outbox, table: &MasterTable<author::Entity>) -> CqrsSystem {
    hold(outbox).await;
    let (transport, _broker) = MemoryBroker::default().start_transport();
    CqrsSystem::builder()
        .transport(transport)
        .master(table)
        .start()
        .await
        .unwrap()
}

async fn pending(outbox: &Outbox) -> Vec<cqrs_sync::Envelope> {
    outbox
        .read(0, 10_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|e| {
            assert_eq!(e.event.content_type, "text/plain");
            Codec::Json
                .decode(&e.event.body, None)
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect()
}

async fn writes_bump_revisions_and_record_events(backend: Backend) {
    let (t, outbox) = master_db(backend, "m_writes").await;
    let table = authors(&outbox)
        .with_tracked_fields([author::Column::Name, author::Column::Born])
        .with_delete_data(|m: &author::Model| Some(json!({"name": m.name})))
        .with_meta(|input| {
            let mut meta = JsonObject::new();
            meta.insert("signal".into(), json!(input.signal.as_str()));
            Some(meta)
        })
        .with_correlation(|signal, id, pk, queue| Some(format!("{signal}:{id}:{pk}:{queue:?}")));
    let filtered = authors(&outbox).with_is_sync_instance(|m: &author::Model| m.name != "secret");
    let quiet = authors(&outbox).with_produce(false);
    let subset = authors(&outbox).with_fields([author::Column::Name]);
    let mut systems = Vec::new();
    for t in [&table, &filtered, &quiet, &subset] {
        systems.push(inspected(&outbox, t).await);
    }
    let a = table.insert(&t.db, new_author("Ann")).await.unwrap();
    assert_eq!(a.cqrs_revision, 0);
    let change = author::ActiveModel {
        id: Set(a.id),
        name: Set("Anne".into()),
        ..Default::default()
    };
    let a2 = table.update(&t.db, change).await.unwrap();
    assert_eq!(a2.cqrs_revision, 1);
    assert!(a2.cqrs_updated >= a.cqrs_updated);
    assert!(table.delete(&t.db, a.id).await.unwrap());
    assert!(!table.delete(&t.db, a.id).await.unwrap(), "already gone");

    let events = pending(&outbox).await;
    assert_eq!(events.len(), 3);
    let (create, update, delete) = (&events[0], &events[1], &events[2]);
    assert_eq!(create.signal_type, SignalType::Save);
    assert_eq!(create.instance_data["name"], json!("Ann"));
    let fee = create.instance_data["fee"]
        .as_str()
        .map(|s| s.parse::<Decimal>());
    assert_eq!(fee, Some(Ok(Decimal::new(125, 1))), "decimals as strings");
    assert_eq!(create.instance_data["cqrs_revision"], json!(0));
    assert!(
        create.instance_data["cqrs_updated"]
            .as_str()
            .is_some_and(|s| s.contains('+'))
    );
    assert_eq!(create.instance_pk, json!(a.id));
    assert_eq!(
        create.previous_data,
        Some(object(json!({"name": null}))),
        "create: tracked fields with a value, as null"
    );
    assert_eq!(create.meta, Some(object(json!({"signal": "SAVE"}))));
    assert_eq!(
        create.correlation_id.as_deref(),
        Some(format!("SAVE:author:{}:None", a.id).as_str())
    );
    assert_eq!(update.instance_data["cqrs_revision"], json!(1));
    assert_eq!(update.previous_data, Some(object(json!({"name": "Ann"}))));
    assert_eq!(delete.signal_type, SignalType::Delete);
    let keys: Vec<&str> = delete.instance_data.keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 4, "{keys:?}");
    assert_eq!(delete.instance_data["id"], json!(a.id));
    assert_eq!(delete.instance_data["cqrs_revision"], json!(2));
    assert_eq!(delete.instance_data["custom"], json!({"name": "Anne"}));

    // Bulk create and bulk update: revisions in SQL, one event per row.
    let rows = table
        .insert_many(
            &t.db,
            vec![new_author("B"), new_author("C"), new_author("D")],
        )
        .await
        .unwrap();
    assert!(rows.iter().all(|r| r.cqrs_revision == 0));
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let n = table
        .update_many(
            &t.db,
            Condition::all().add(author::Column::Id.is_in(ids.clone())),
            vec![(author::Column::Name, "bulk".into())],
        )
        .await
        .unwrap();
    assert_eq!(n, 3);
    let stored = author::Entity::find()
        .order_by_asc(author::Column::Id)
        .all(&t.db)
        .await
        .unwrap();
    assert!(
        stored
            .iter()
            .all(|r| r.cqrs_revision == 1 && r.name == "bulk")
    );
    let events = pending(&outbox).await;
    assert_eq!(events.len(), 3 + 3 + 3);
    let bulk = &events[6..];
    assert!(
        bulk.iter()
            .all(|e| e.instance_data["cqrs_revision"] == json!(1))
    );
    assert_eq!(
        bulk[0].previous_data,
        Some(object(json!({"name": "B", "born": null}))),
        "bulk update: every tracked field, before the update"
    );

    // Filtered rows and produce off: revisions move, nothing is recorded.
    let s = filtered.insert(&t.db, new_author("secret")).await.unwrap();
    let change = author::ActiveModel {
        id: Set(s.id),
        fee: Set(None),
        ..Default::default()
    };
    assert_eq!(quiet.update(&t.db, change).await.unwrap().cqrs_revision, 1);
    subset.insert(&t.db, new_author("E")).await.unwrap();
    let events = pending(&outbox).await;
    assert_eq!(events.len(), 10, "one more event, from the subset table");
    let mut last: Vec<&str> = events[9].instance_data.keys().map(String::as_str).collect();
    last.sort_unstable();
    assert_eq!(last, ["cqrs_revision", "cqrs_updated", "id", "name"]);
    let_go(&outbox).await;
    for system in systems {
        system.shutdown().await.unwrap();
    }
    t.cleanup().await;
}

fn object(v: Value) -> JsonObject {
    match v {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// A system consuming `author` events into a recording handler, one worker so the record
/// keeps the delivery order.
async fn recording_system(
    transport: &TransportHandle,
    queue: &str,
) -> (CqrsSystem, Arc<Mutex<Vec<(i64, i64, SignalType)>>>) {
    let seen: Arc<Mutex<Vec<(i64, i64, SignalType)>>> = Arc::default();
    let record = Arc::clone(&seen);
    let handler = handler_fn(move |e: ReplicaEvent| {
        let record = Arc::clone(&record);
        async move {
            let env = e.envelope();
            let pk = match env.signal_type {
                SignalType::Delete => env.instance_data["id"].as_i64(),
                _ => env.instance_pk.as_i64(),
            }
            .unwrap_or(-1);
            let revision = env.revision().unwrap_or(-1);
            record
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((pk, revision, env.signal_type));
            Ok(Applied::Updated)
        }
    });
    let system = CqrsSystem::builder()
        .config(CqrsConfig::default().with_queue(queue))
        .replica(ReplicaModel::new("author", handler))
        .transport(transport.clone())
        .start()
        .await
        .unwrap_or_else(|e| panic!("start: {e}"));
    (system, seen)
}

/// A master service: `table` registered with a system of its own on `transport`.
async fn master_system(
    table: &MasterTable<author::Entity>,
    transport: &TransportHandle,
    config: CqrsConfig,
) -> CqrsSystem {
    CqrsSystem::builder()
        .config(config)
        .master(table)
        .transport(transport.clone())
        .start()
        .await
        .unwrap_or_else(|e| panic!("start: {e}"))
}

async fn drained(outbox: &Outbox) {
    wait_until("the outbox to drain", PATIENCE, || async {
        outbox.pending().await.is_ok_and(|n| n == 0)
    })
    .await;
}

/// Writes `rows` rows and `updates` updates of each, through `table`.
async fn write_history(
    t: &TestDb,
    table: &MasterTable<author::Entity>,
    rows: usize,
    updates: usize,
) -> BTreeMap<i64, i64> {
    let mut last = BTreeMap::new();
    let created = table
        .insert_many(
            &t.db,
            (0..rows).map(|i| new_author(&format!("a{i}"))).collect(),
        )
        .await
        .unwrap();
    for a in &created {
        last.insert(a.id, 0);
    }
    for round in 1..=updates {
        for a in &created {
            let change = author::ActiveModel {
                id: Set(a.id),
                name: Set(format!("a{}-{round}", a.id)),
                ..Default::default()
            };
            let m = table.update(&t.db, change).await.unwrap();
            last.insert(a.id, m.cqrs_revision);
        }
    }
    last
}

/// Every committed revision arrived, in per-row order; returns how many arrived twice.
fn check_history(seen: &[(i64, i64, SignalType)], last: &BTreeMap<i64, i64>) -> usize {
    let distinct: HashSet<(i64, i64)> = seen.iter().map(|(p, r, _)| (*p, *r)).collect();
    for (pk, top) in last {
        for rev in 0..=*top {
            assert!(
                distinct.contains(&(*pk, rev)),
                "row {pk} revision {rev} never arrived"
            );
        }
        let order: Vec<i64> = seen
            .iter()
            .filter(|(p, ..)| p == pk)
            .map(|(_, r, _)| *r)
            .collect();
        assert!(
            order.windows(2).all(|w| w[0] <= w[1]),
            "row {pk} arrived out of order: {order:?}"
        );
    }
    seen.len() - distinct.len()
}

async fn relayed_events_reach_a_replica_table(backend: Backend) {
    let (t, outbox) = master_db(backend, "m_e2e").await;
    let replica_db = TestDb::new(backend, "m_e2e_replica").await;
    replica_db.create(author::Entity).await;
    let queue = unique("e2e");
    let (transport, _broker) = MemoryBroker::default().start_transport();
    let table = authors(&outbox);
    let replica = ReplicaTable::new(replica_db.db.clone(), author::Entity).unwrap();
    let system = CqrsSystem::builder()
        .config(CqrsConfig::default().with_queue(&queue))
        .master(&table)
        .replica(ReplicaModel::new("author", replica))
        .transport(transport.clone())
        .start()
        .await
        .unwrap();
    write_history(&t, &table, 20, 3).await;
    let first = author::Entity::find()
        .order_by_asc(author::Column::Id)
        .all(&t.db)
        .await
        .unwrap();
    for victim in first.iter().step_by(4) {
        table.delete(&t.db, victim.id).await.unwrap();
    }
    system.flush().await.unwrap();
    assert_eq!(
        outbox.pending().await.unwrap(),
        0,
        "flush waited for every event"
    );
    replica_matches(&t, &replica_db, "the replica to match the master").await;
    system.shutdown().await.unwrap();
    replica_db.cleanup().await;
    t.cleanup().await;
}

async fn authors_of(db: &TestDb) -> Vec<author::Model> {
    author::Entity::find()
        .order_by_asc(author::Column::Id)
        .all(&db.db)
        .await
        .unwrap_or_default()
}

/// Waits until the replica's `author` table equals the master's.
async fn replica_matches(master: &TestDb, replica: &TestDb, what: &str) {
    wait_until(what, PATIENCE, || async {
        same_rows(&authors_of(master).await, &authors_of(replica).await)
    })
    .await;
}

/// Rows equal in every column but `cqrs_updated`'s sub-second part, which MySQL's
/// `TIMESTAMP` drops.
fn same_rows(a: &[author::Model], b: &[author::Model]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            (x.id, &x.name, x.fee, x.born, x.cqrs_revision)
                == (y.id, &y.name, y.fee, y.born, y.cqrs_revision)
                && x.cqrs_updated.timestamp() == y.cqrs_updated.timestamp()
        })
}

async fn a_relay_killed_mid_window_loses_nothing(backend: Backend) {
    let (t, outbox) = master_db(backend, "m_kill").await;
    let queue = unique("kill");
    let (transport, _broker) = MemoryBroker::default().start_transport();
    let (system, seen) = recording_system(&transport, &queue).await;
    let table = authors(&outbox);
    hold(&outbox).await;
    // Two windows stay below the 40 ids between two revisions of a row, so that what is sent
    // again after the crash cannot put a row's revisions out of order.
    let window = 16;
    let config = || {
        CqrsConfig::default()
            .with_publish_window(window)
            .with_outbox_lease_ttl(Duration::from_millis(400))
            .with_outbox_poll_interval(Duration::from_millis(50))
    };
    let first = master_system(&table, &transport, config()).await;
    let last = write_history(&t, &table, 40, 15).await;
    let total: i64 = last.values().map(|r| r + 1).sum();
    let_go(&outbox).await;
    wait_until("some events relayed", PATIENCE, || {
        let n = first.metrics().published;
        async move { n >= 100 }
    })
    .await;
    // The master process dies: its relay stops where it is, its lease stays until it expires.
    drop(first);
    let before_restart = seen.lock().unwrap().len();
    assert!(
        (before_restart as i64) < total,
        "the relay was stopped before the end ({before_restart} of {total})"
    );
    let second = master_system(&table, &transport, config()).await;
    second.flush().await.unwrap();
    drained(&outbox).await;
    system.wait_idle().await.unwrap();
    let seen = seen.lock().unwrap().clone();
    let twice = check_history(&seen, &last);
    // At most a window unconfirmed and less than a window confirmed but not yet deleted.
    assert!(
        twice < 2 * window as usize,
        "{twice} events were sent twice; the window is {window}"
    );
    second.shutdown().await.unwrap();
    system.shutdown().await.unwrap();
    t.cleanup().await;
}

async fn two_relays_share_one_outbox(backend: Backend) {
    let (t, outbox) = master_db(backend, "m_two").await;
    let queue = unique("two");
    let (transport, _broker) = MemoryBroker::default().start_transport();
    let (system, seen) = recording_system(&transport, &queue).await;
    let config = || {
        CqrsConfig::default()
            .with_publish_window(16)
            .with_outbox_poll_interval(Duration::from_millis(20))
    };
    let table = authors(&outbox);
    let a = master_system(&table, &transport, config()).await;
    // A second process: its own connection pool, outbox handle and table on the same tables.
    let other = authors(&Outbox::with_table(t.reconnect().await, outbox.table()));
    let b = master_system(&other, &transport, config()).await;
    let last = write_history(&t, &table, 25, 8).await;
    drained(&outbox).await;
    system.wait_idle().await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        check_history(&seen, &last),
        0,
        "nothing was published twice"
    );
    assert_eq!(
        a.metrics().published + b.metrics().published,
        seen.len() as u64,
        "each event relayed by exactly one relay"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    system.shutdown().await.unwrap();
    t.cleanup().await;
}

/// One outbox, two CQRS ids: a relay of `author` alone skips whole pages of the other id's
/// events, with the bodies from memory (the process that wrote them) or from the table
/// (another process).
async fn the_relay_reads_past_pages_of_other_ids(backend: Backend) {
    let (t, outbox) = master_db(backend, "m_others").await;
    let table = authors(&outbox);
    let others = MasterTable::new("other", author::Entity, &outbox).unwrap();
    hold(&outbox).await;
    let (transport, _broker) = MemoryBroker::default().start_transport();
    let system = CqrsSystem::builder()
        .transport(transport)
        .master(&table)
        .master(&others)
        .start()
        .await
        .unwrap();
    let first = table.insert(&t.db, new_author("first")).await.unwrap();
    for i in 0..50 {
        others
            .insert(&t.db, new_author(&format!("other {i}")))
            .await
            .unwrap();
    }
    let rest = table
        .insert_many(
            &t.db,
            (0..5).map(|i| new_author(&format!("a{i}"))).collect(),
        )
        .await
        .unwrap();
    let expected: Vec<i64> = std::iter::once(first.id)
        .chain(rest.iter().map(|a| a.id))
        .collect();
    let ids = ["author".to_owned()];
    let elsewhere = Outbox::with_table(t.reconnect().await, outbox.table());
    for (store, whose) in [
        (outbox.store(), "this process"),
        (elsewhere.store(), "another"),
    ] {
        let mut seen = Vec::new();
        let mut after = 0;
        loop {
            let page = store.read(after, 16, &ids).await.unwrap();
            let Some(last) = page.last() else { break };
            after = last.id;
            for e in page {
                assert_eq!(e.event.cqrs_id(), "author", "{whose}");
                let envelope = Codec::Json.decode(&e.event.body, None).unwrap();
                seen.push(envelope.instance_data["id"].as_i64().unwrap());
            }
        }
        assert_eq!(
            seen, expected,
            "the author events, in order, read by {whose}"
        );
        let theirs = store.read(0, 16, &["other".to_owned()]).await.unwrap();
        assert_eq!(
            theirs.len(),
            16,
            "a full page of the other id, read by {whose}"
        );
        assert!(store.read(0, 16, &[]).await.unwrap().is_empty());
    }
    system.shutdown().await.unwrap();
    t.cleanup().await;
}

async fn direct_mode_publishes_after_commit(backend: Backend) {
    support::init_tracing();
    let t = TestDb::new(backend, "m_direct").await;
    t.create(author::Entity).await;
    let queue = unique("direct_mode");
    let (transport, _broker) = MemoryBroker::default().start_transport();
    let (system, seen) = recording_system(&transport, &queue).await;
    let table = MasterTable::new("author", author::Entity, Dispatch::AfterCommit).unwrap();
    let master = master_system(&table, &transport, CqrsConfig::default()).await;
    let last = write_history(&t, &table, 5, 2).await;
    master.flush().await.unwrap();
    system.wait_idle().await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(check_history(&seen, &last), 0);
    assert_eq!(seen.len(), 15);
    master.shutdown().await.unwrap();
    system.shutdown().await.unwrap();
    t.cleanup().await;
}

async fn sync_dump_and_diff_repair_a_replica(backend: Backend) {
    let (t, outbox) = master_db(backend, "m_sync").await;
    let replica_db = TestDb::new(backend, "m_sync_replica").await;
    replica_db.create(author::Entity).await;
    let queue = unique("sync");
    let (transport, _broker) = MemoryBroker::default().start_transport();
    let table = authors(&outbox);
    let replica = ReplicaTable::new(replica_db.db.clone(), author::Entity).unwrap();
    hold(&outbox).await;
    let system = CqrsSystem::builder()
        .config(CqrsConfig::default().with_queue(&queue))
        .master(&table)
        .replica(ReplicaModel::new("author", replica.clone()))
        .transport(transport.clone())
        .start()
        .await
        .unwrap();
    write_history(&t, &table, 10, 1).await;

    // Bulk dump on the master, bulk load on the replica.
    let mut lines = Vec::new();
    let mut after = None;
    loop {
        let page = table.dump_page(&t.db, after.clone(), 4).await.unwrap();
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        lines.extend(page.into_iter().map(|(_, data)| data));
    }
    assert_eq!(lines.len(), 10);
    let loaded = replica.load("author", lines).await;
    assert!(loaded.iter().all(|r| matches!(r, Ok(Applied::Created))));

    // Break the replica: one stale row, one missing, one extra.
    let rows = author::Entity::find()
        .order_by_asc(author::Column::Id)
        .all(&t.db)
        .await
        .unwrap();
    let (stale, gone) = (rows[2].id, rows[3].id);
    let change = author::ActiveModel {
        id: Set(stale),
        name: Set("newer on the master".into()),
        ..Default::default()
    };
    table.update(&t.db, change).await.unwrap();
    replica.delete_pks(&[json!(gone)]).await.unwrap();
    let extra = author::ActiveModel {
        id: Set(9_999),
        name: Set("only here".into()),
        cqrs_revision: Set(0),
        cqrs_updated: Set(chrono::Utc::now()),
        ..Default::default()
    };
    sea_orm::ActiveModelTrait::insert(extra, &replica_db.db)
        .await
        .unwrap();

    // diff master -> diff replica -> diff sync (directed to this queue).
    let mut to_sync = Vec::new();
    let mut after = None;
    loop {
        let page = table.revisions_page(&t.db, after.clone(), 3).await.unwrap();
        let Some((last, _)) = page.last() else { break };
        after = Some(sea_orm::Value::BigInt(last.as_i64()));
        to_sync.extend(replica.diff(&page).await.unwrap());
    }
    assert_eq!(to_sync, [json!(stale), json!(gone)]);
    let ids: Vec<i64> = to_sync.iter().filter_map(Value::as_i64).collect();
    let synced = table
        .sync(
            &t.db,
            Condition::all().add(author::Column::Id.is_in(ids)),
            Some(&queue),
            100,
        )
        .await
        .unwrap();
    assert_eq!(synced, 2);

    // deleted diff replica -> deleted diff master -> deleted sync replica.
    let pks = replica
        .pks_page(&cqrs_orm_adapters::Filter::all(), None, 1_000)
        .await
        .unwrap();
    let pk_values: Vec<sea_orm::Value> = pks
        .iter()
        .map(|p| sea_orm::Value::BigInt(p.as_i64()))
        .collect();
    let missing = table.missing(&t.db, pk_values).await.unwrap();
    assert_eq!(missing, [json!(9_999)]);
    assert_eq!(replica.delete_pks(&missing).await.unwrap(), 1);

    let_go(&outbox).await;
    drained(&outbox).await;
    replica_matches(&t, &replica_db, "the replica to be repaired").await;
    system.shutdown().await.unwrap();
    replica_db.cleanup().await;
    t.cleanup().await;
}

#[actix_rt::test]
async fn an_event_no_queue_takes_does_not_block_the_outbox() {
    let (t, outbox) = master_db(Backend::Sqlite, "m_unroutable").await;
    let (transport, _broker) = MemoryBroker::default().start_transport();
    let table = authors(&outbox);
    // A master with no replica anywhere: every publish is unroutable.
    let system = master_system(&table, &transport, CqrsConfig::default()).await;
    table
        .insert(&t.db, new_author("nobody listens"))
        .await
        .unwrap();
    table
        .insert(&t.db, new_author("still nobody"))
        .await
        .unwrap();
    system.flush().await.unwrap();
    assert_eq!(outbox.pending().await.unwrap(), 0);
    assert_eq!(system.metrics().published, 0, "both reached no queue");
    system.shutdown().await.unwrap();
    t.cleanup().await;
}

async fn a_custom_serializer_reads_through_the_transaction(backend: Backend) {
    let (t, outbox) = master_db(backend, "m_serializer").await;
    let table = authors(&outbox).with_serializer(Arc::new(|model: &author::Model, txn| {
        Box::pin(async move {
            // A serializer may query the database inside the write's transaction: here it
            // counts the authors, which includes the row being written.
            let count = author::Entity::find()
                .all(txn)
                .await
                .map_err(|e| cqrs_sync::Error::handler(e.to_string()))?
                .len();
            Ok(object(json!({
                "id": model.id,
                "display": format!("{} ({count})", model.name.to_uppercase()),
                "nested": {"born": model.born.map(|d| d.to_string())},
            })))
        })
    }));
    let system = inspected(&outbox, &table).await;
    let a = table.insert(&t.db, new_author("ursula")).await.unwrap();
    table.insert(&t.db, new_author("octavia")).await.unwrap();
    let events = pending(&outbox).await;
    assert_eq!(events.len(), 2);
    let first = &events[0].instance_data;
    assert_eq!(first["id"], json!(a.id));
    assert_eq!(first["display"], json!("URSULA (1)"));
    assert_eq!(first["nested"], json!({"born": null}));
    assert_eq!(
        first["cqrs_revision"],
        json!(0),
        "the sync fields are added after it"
    );
    assert!(first.contains_key("cqrs_updated"));
    assert!(
        !first.contains_key("name"),
        "only what the serializer returned"
    );
    assert_eq!(events[1].instance_data["display"], json!("OCTAVIA (2)"));
    let_go(&outbox).await;
    system.shutdown().await.unwrap();
    t.cleanup().await;
}
