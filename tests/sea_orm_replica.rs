//! The django-cqrs replica behaviours on a SeaORM table, on SQLite, PostgreSQL and MariaDB:
//! create, update, delete, stale, duplicate, gap, SYNC downgrade, mapping, missing keys and
//! fields, hooks, only-direct-syncs, tombstones, and batches that fail part-way.

// The scenarios are plain async functions run by generated #[test]s; a failed unwrap is a
// failed test.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cqrs_orm_adapters::{ReplicaTable, RowChange, Tombstones};
use cqrs_sync::CqrsSystemExt;
use cqrs_sync::transport::{Headers, OutgoingMessage};
use cqrs_sync::transports::memory::MemoryBroker;
use cqrs_sync::{
    Applied, CqrsConfig, CqrsSystem, ErrorKind, JsonObject, MemoryTable, ReplicaEvent,
    ReplicaHandler, ReplicaModel, Route, SignalType, Skip,
};
use sea_orm::{ActiveModelTrait, ActiveValue, EntityTrait, QueryOrder};
use serde_json::{Value, json};
use support::db::{Backend, TestDb, on_each_db};
use support::entities::{book, child, parent, tag};
use support::{body, unique, wait_until};

on_each_db!(
    revision_rules,
    value_forms,
    mapping,
    bad_data_is_not_retried,
    hooks_replace_the_default_writes,
    tombstones_off_and_on,
    a_save_and_a_delete_applied_at_once_by_two_processes_leave_no_row,
    batches_match_the_rules_one_by_one,
    large_batches_write_what_small_ones_write,
    a_failing_event_is_isolated_from_its_batch,
    only_direct_syncs_both_ways,
    data_errors_dead_letter_at_once_and_missing_parents_retry,
);

fn object(v: Value) -> JsonObject {
    match v {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn data(id: i64, revision: i64, title: &str) -> JsonObject {
    object(json!({
        "id": id,
        "title": title,
        "cqrs_revision": revision,
        "cqrs_updated": "2026-11-27 17:08:25.074040+00:00",
        "unknown_key": "dropped",
    }))
}

fn event(signal: SignalType, data: JsonObject) -> ReplicaEvent {
    ReplicaEvent::new(
        cqrs_sync::Envelope::new(signal, "book", data),
        "book",
        false,
        false,
    )
}

fn delete(id: i64, revision: i64) -> ReplicaEvent {
    event(
        SignalType::Delete,
        object(
            json!({"id": id, "cqrs_revision": revision, "cqrs_updated": "2026-11-27 17:09:00+00:00"}),
        ),
    )
}

async fn setup(backend: Backend, name: &str) -> (TestDb, ReplicaTable) {
    support::init_tracing();
    let t = TestDb::new(backend, name).await;
    t.create(book::Entity).await;
    let table = ReplicaTable::new(t.db.clone(), book::Entity).unwrap_or_else(|e| panic!("{e}"));
    (t, table)
}

async fn apply(table: &ReplicaTable, e: ReplicaEvent) -> cqrs_sync::Result<Applied> {
    table.apply(&e).await
}

async fn stored(t: &TestDb, id: i64) -> Option<book::Model> {
    book::Entity::find_by_id(id)
        .one(&t.db)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn revision_rules(backend: Backend) {
    let (t, table) = setup(backend, "rules").await;
    let save = |rev, title| event(SignalType::Save, data(1, rev, title));
    let sync = |rev, title| event(SignalType::Sync, data(1, rev, title));
    assert_eq!(
        apply(&table, save(0, "v0")).await.unwrap(),
        Applied::Created
    );
    assert_eq!(
        apply(&table, save(1, "v1")).await.unwrap(),
        Applied::Updated
    );
    assert_eq!(
        apply(&table, save(0, "old")).await.unwrap(),
        Applied::Skipped(Skip::Stale)
    );
    assert_eq!(
        apply(&table, save(1, "dup")).await.unwrap(),
        Applied::Skipped(Skip::Duplicate)
    );
    let row = stored(&t, 1).await.unwrap();
    assert_eq!((row.cqrs_revision, row.title.as_str()), (1, "v1"));
    assert_eq!(
        apply(&table, save(5, "gap")).await.unwrap(),
        Applied::UpdatedAfterGap { missing: 3 },
        "a gap is applied"
    );
    assert_eq!(
        apply(&table, sync(3, "downgrade")).await.unwrap(),
        Applied::Updated
    );
    let row = stored(&t, 1).await.unwrap();
    assert_eq!((row.cqrs_revision, row.title.as_str()), (3, "downgrade"));
    assert_eq!(
        apply(&table, sync(3, "same")).await.unwrap(),
        Applied::Updated,
        "SYNC with the same revision applies"
    );
    assert_eq!(apply(&table, delete(1, 4)).await.unwrap(), Applied::Deleted);
    assert!(stored(&t, 1).await.is_none());
    assert_eq!(
        apply(&table, delete(1, 4)).await.unwrap(),
        Applied::Skipped(Skip::Missing),
        "deleting a missing row succeeds"
    );
    assert_eq!(
        apply(&table, save(2, "stale after delete")).await.unwrap(),
        Applied::Created,
        "without tombstones a stale SAVE re-creates the row, as django-cqrs does"
    );
    t.cleanup().await;
}

async fn value_forms(backend: Backend) {
    let (t, table) = setup(backend, "values").await;
    let mut d = data(7, 0, "Dune");
    for (k, v) in [
        ("isbn", json!("978-0441013593")),
        ("price", json!("12.34")),
        ("published", json!("1965-08-01")),
        ("rating", json!(4.5)),
        ("active", json!(true)),
        ("code", json!("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11")),
        ("extra", json!({"tags": ["sf", 1]})),
        ("stamped", json!("2026-11-27T18:29:46.788133Z")),
        ("naive", json!("2026-11-27 18:29:46+00:00")),
        ("at", json!("10:20:30.500000")),
    ] {
        d.insert(k.into(), v);
    }
    assert_eq!(
        apply(&table, event(SignalType::Save, d)).await.unwrap(),
        Applied::Created
    );
    let row = stored(&t, 7).await.unwrap();
    assert_eq!(row.isbn.as_deref(), Some("978-0441013593"));
    assert_eq!(row.price.map(|p| p.to_string()).as_deref(), Some("12.34"));
    assert_eq!(
        row.published.map(|d| d.to_string()).as_deref(),
        Some("1965-08-01")
    );
    assert_eq!(row.rating, Some(4.5));
    assert_eq!(row.active, Some(true));
    assert_eq!(
        row.code.map(|u| u.to_string()).as_deref(),
        Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
    );
    assert_eq!(row.extra, Some(json!({"tags": ["sf", 1]})));
    // MySQL's TIMESTAMP and TIME keep whole seconds unless declared with a precision (6).
    let (stamped, at) = if backend == Backend::MySql {
        ("2026-11-27T18:29:46+00:00", "10:20:30")
    } else {
        ("2026-11-27T18:29:46.788133+00:00", "10:20:30.500")
    };
    assert_eq!(
        row.stamped.map(|s| s.to_rfc3339()).as_deref(),
        Some(stamped)
    );
    assert_eq!(
        row.naive.map(|s| s.to_string()).as_deref(),
        Some("2026-11-27 18:29:46")
    );
    assert_eq!(row.at.map(|s| s.to_string()).as_deref(), Some(at));
    // A float decimal (what django-cqrs sends) and nulls for nullable columns.
    let mut d = data(7, 1, "Dune");
    d.insert("price".into(), json!(9.5));
    d.insert("isbn".into(), Value::Null);
    apply(&table, event(SignalType::Save, d)).await.unwrap();
    let row = stored(&t, 7).await.unwrap();
    // SQLite keeps no scale: compare the number.
    assert_eq!(
        row.price.map(|p| p.normalize().to_string()).as_deref(),
        Some("9.5")
    );
    assert_eq!(row.isbn, None);
    assert_eq!(row.rating, Some(4.5), "keys not sent are left as they are");
    t.cleanup().await;
}

async fn mapping(backend: Backend) {
    support::init_tracing();
    let t = TestDb::new(backend, "mapping").await;
    t.create(tag::Entity).await;
    let table = ReplicaTable::new(t.db.clone(), tag::Entity)
        .and_then(|r| r.with_mapping([("id", "key"), ("name", "title")]))
        .unwrap_or_else(|e| panic!("{e}"));
    let d = object(
        json!({"id": 5, "name": "rust", "title": "ignored", "cqrs_revision": 0,
        "cqrs_updated": "2026-11-27 17:08:25+00:00"}),
    );
    assert_eq!(
        table.apply(&event(SignalType::Save, d)).await.unwrap(),
        Applied::Created
    );
    let row = tag::Entity::find_by_id("5".to_owned())
        .one(&t.db)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("row 5 missing"));
    assert_eq!(row.title, "rust", "mapped key, not the replica's own name");
    let d = object(json!({"id": 7, "name": "go", "cqrs_revision": 0,
        "cqrs_updated": "2026-11-27 17:08:25+00:00"}));
    let other_pk = ReplicaEvent::new(
        cqrs_sync::Envelope::new(SignalType::Save, "tag", d).with_pk(json!("8")),
        "tag",
        false,
        false,
    );
    let err = table.apply(&other_pk).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
    let missing = object(json!({"id": 6, "cqrs_revision": 0,
        "cqrs_updated": "2026-11-27 17:08:25+00:00"}));
    let err = table
        .apply(&event(SignalType::Save, missing))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
    assert!(err.message().contains("name"), "{err}");
    let bad = ReplicaTable::new(t.db.clone(), tag::Entity)
        .and_then(|r| r.with_mapping([("id", "nope")]))
        .unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::Config);
    t.cleanup().await;
}

async fn bad_data_is_not_retried(backend: Backend) {
    let (t, table) = setup(backend, "bad").await;
    let mut no_title = data(1, 0, "x");
    no_title.remove("title");
    let mut no_pk = data(1, 0, "x");
    no_pk.remove("id");
    let mut no_rev = data(1, 0, "x");
    no_rev.remove("cqrs_revision");
    let mut no_updated = data(1, 0, "x");
    no_updated.remove("cqrs_updated");
    let mut mismatch = data(1, 0, "x");
    mismatch.insert("price".into(), json!("twelve"));
    let mut null_title = data(1, 0, "x");
    null_title.insert("title".into(), Value::Null);
    let cases = [
        (no_title, "title"),
        (no_pk, "PK"),
        (no_rev, "cqrs_revision"),
        (no_updated, "cqrs_updated"),
        (mismatch, "price"),
        (null_title, "title"),
    ];
    let events: Vec<ReplicaEvent> = cases
        .iter()
        .map(|(d, _)| event(SignalType::Save, d.clone()))
        .collect();
    let results = table.apply_batch(&events).await;
    for ((_, word), result) in cases.iter().zip(results) {
        let err = result.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
        assert!(!err.is_retryable());
        assert!(err.message().contains(word), "{err} should name {word}");
    }
    let mut negative = data(1, 0, "x");
    negative.insert("cqrs_revision".into(), json!(-1));
    let other_pk = ReplicaEvent::new(
        cqrs_sync::Envelope::new(SignalType::Save, "book", data(1, 0, "x")).with_pk(json!(2)),
        "book",
        false,
        false,
    );
    for (e, word) in [
        (event(SignalType::Save, negative), "negative"),
        (other_pk, "instance_pk"),
    ] {
        let err = table.apply(&e).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
        assert!(err.message().contains(word), "{err} should say {word}");
    }
    let no_id = event(
        SignalType::Delete,
        object(json!({"cqrs_revision": 1, "cqrs_updated": "2026-11-27 17:08:25+00:00"})),
    );
    assert_eq!(
        table.apply(&no_id).await.unwrap_err().kind(),
        ErrorKind::InvalidData
    );
    assert!(stored(&t, 1).await.is_none(), "nothing was written");
    t.cleanup().await;
}

async fn hooks_replace_the_default_writes(backend: Backend) {
    let (t, table) = setup(backend, "hooks").await;
    let calls: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = |what: &'static str| {
        let calls = Arc::clone(&calls);
        move |change: &RowChange| {
            calls
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(format!("{what} {} {}", change.pk, change.revision));
        }
    };
    let on_create = log("create");
    let on_update = log("update");
    let on_delete = log("delete");
    let table = table
        .on_create(Arc::new(move |txn, change: &RowChange| {
            on_create(change);
            Box::pin(async move {
                let title = change.data["title"]
                    .as_str()
                    .unwrap_or_default()
                    .to_uppercase();
                book::ActiveModel {
                    id: ActiveValue::Set(change.pk.as_i64().unwrap_or_default()),
                    title: ActiveValue::Set(title),
                    cqrs_revision: ActiveValue::Set(
                        i32::try_from(change.revision).unwrap_or_default(),
                    ),
                    cqrs_updated: ActiveValue::Set(chrono::Utc::now()),
                    ..Default::default()
                }
                .insert(txn)
                .await
                .map_err(|e| cqrs_sync::Error::handler(e.to_string()))?;
                Ok(())
            })
        }))
        .on_update(Arc::new(move |_, change: &RowChange| {
            on_update(change);
            Box::pin(async { Ok(()) })
        }))
        .on_delete(Arc::new(move |_, change: &RowChange| {
            on_delete(change);
            Box::pin(async { Ok(()) })
        }));
    let events = [
        event(SignalType::Save, data(1, 0, "hello")),
        event(SignalType::Save, data(1, 1, "world")),
        delete(1, 2),
    ];
    let results: Vec<Applied> = table
        .apply_batch(&events)
        .await
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("{e}")))
        .collect();
    assert_eq!(
        results,
        [Applied::Created, Applied::Updated, Applied::Deleted]
    );
    let row = stored(&t, 1).await.unwrap_or_else(|| panic!("row kept"));
    assert_eq!(
        row.title, "HELLO",
        "create hook wrote, update and delete hooks did not"
    );
    assert_eq!(
        *calls.lock().unwrap(),
        ["create 1 0", "update 1 1", "delete 1 2"]
    );
    t.cleanup().await;
}

async fn tombstones_off_and_on(backend: Backend) {
    let (t, table) = setup(backend, "tomb").await;
    let tombstones = Tombstones::new(unique("tomb"));
    tombstones.create_table(&t.db).await.unwrap();
    let guarded = table.clone().with_tombstones(tombstones);
    for (table, id) in [(&table, 1), (&guarded, 2)] {
        apply(table, event(SignalType::Save, data(id, 0, "a")))
            .await
            .unwrap();
        apply(table, event(SignalType::Save, data(id, 1, "b")))
            .await
            .unwrap();
        assert_eq!(apply(table, delete(id, 2)).await.unwrap(), Applied::Deleted);
    }
    let late = |id| event(SignalType::Save, data(id, 1, "late"));
    assert_eq!(apply(&table, late(1)).await.unwrap(), Applied::Created);
    assert_eq!(
        apply(&guarded, late(2)).await.unwrap(),
        Applied::Skipped(Skip::Deleted)
    );
    assert_eq!(
        apply(&guarded, event(SignalType::Sync, data(2, 1, "sync")))
            .await
            .unwrap(),
        Applied::Skipped(Skip::Deleted)
    );
    assert!(stored(&t, 2).await.is_none());
    assert_eq!(
        apply(&guarded, event(SignalType::Save, data(2, 3, "new")))
            .await
            .unwrap(),
        Applied::Created,
        "a newer revision than the delete comes back"
    );
    t.cleanup().await;
}

/// Applies `events` until each is applied, as the replica's retries do with failed events
/// (a deadlock or a busy database between two processes).
async fn apply_until_applied(table: &ReplicaTable, mut events: Vec<ReplicaEvent>) {
    for _ in 0..50 {
        let results = table.apply_batch(&events).await;
        events = events
            .into_iter()
            .zip(results)
            .filter_map(|(e, r)| r.is_err().then_some(e))
            .collect();
        if events.is_empty() {
            return;
        }
    }
    panic!("{} events never applied", events.len());
}

/// Competing consumers: one process applies the SAVEs of new rows while another applies
/// their DELETEs, at the same time. Whatever the order, a deleted row must not be left behind
/// (a DELETE that found no row stores a tombstone the SAVE must see).
async fn a_save_and_a_delete_applied_at_once_by_two_processes_leave_no_row(backend: Backend) {
    let (t, table) = setup(backend, "race").await;
    let tombstones = Tombstones::new(unique("race"));
    tombstones.create_table(&t.db).await.unwrap();
    let first = table.with_tombstones(tombstones.clone());
    let second = ReplicaTable::new(t.reconnect().await, book::Entity)
        .unwrap()
        .with_tombstones(tombstones);
    for round in 0..8_i64 {
        let ids = round * 200 + 1..=round * 200 + 200;
        let saves: Vec<_> = ids
            .clone()
            .map(|id| event(SignalType::Save, data(id, 0, "new")))
            .collect();
        let deletes: Vec<_> = ids.map(|id| delete(id, 1)).collect();
        futures_util::join!(
            apply_until_applied(&first, saves),
            apply_until_applied(&second, deletes),
        );
    }
    let left = book::Entity::find().all(&t.db).await.unwrap();
    assert!(
        left.is_empty(),
        "{} deleted rows came back, such as {:?}",
        left.len(),
        left.first().map(|b| b.id)
    );
    t.cleanup().await;
}

async fn batches_match_the_rules_one_by_one(backend: Backend) {
    let (t, table) = setup(backend, "batch").await;
    let mut rng = fastrand::Rng::with_seed(7);
    let events: Vec<ReplicaEvent> = (0..600)
        .map(|_| {
            let id = rng.i64(1..40);
            let rev = rng.i64(0..12);
            match rng.u8(0..10) {
                0 => delete(id, rev),
                1 | 2 => event(SignalType::Sync, data(id, rev, &format!("s{rev}"))),
                _ => event(SignalType::Save, data(id, rev, &format!("v{rev}"))),
            }
        })
        .collect();
    let oracle = MemoryTable::new();
    let mut expected = Vec::new();
    for e in &events {
        expected.push(oracle.apply_event(e).unwrap());
    }
    let mut got = Vec::new();
    for chunk in events.chunks(100) {
        for r in table.apply_batch(chunk).await {
            got.push(r.unwrap_or_else(|e| panic!("{e}")));
        }
    }
    assert_eq!(
        got, expected,
        "same outcome per event as the in-memory rules"
    );
    let rows = book::Entity::find()
        .order_by_asc(book::Column::Id)
        .all(&t.db)
        .await
        .unwrap();
    let want = oracle.snapshot();
    assert_eq!(rows.len(), want.len());
    for row in rows {
        let w = &want[&row.id.to_string()];
        assert_eq!(i64::from(row.cqrs_revision), w.revision, "row {}", row.id);
        assert_eq!(
            Some(&json!(row.title)),
            w.data.get("title"),
            "row {}",
            row.id
        );
    }
    t.cleanup().await;
}

/// A batch too large for one `VALUES` statement (PostgreSQL writes it as one array per column)
/// stores exactly what batches of 100 store: every column kind, NULLs, and text that means
/// something in an array literal or SQL (quotes, backslashes, braces, commas, `NULL`).
async fn large_batches_write_what_small_ones_write(backend: Backend) {
    let (large, large_table) = setup(backend, "large").await;
    let (small, small_table) = setup(backend, "small").await;
    let texts = [
        "plain",
        "",
        "NULL",
        "null",
        "a \"quoted\" word",
        "back\\slash",
        "{braces}",
        "a,b",
        "tab\tand\nnewline",
        "ünïcödé ✓",
        "' OR 1=1 --",
    ];
    let row = |id: i64, revision: i64| {
        let n = usize::try_from(id).unwrap_or_default();
        let mut d = data(id, revision, texts[n % texts.len()]);
        let null_every = |k: usize, v: Value| if n % k == 0 { Value::Null } else { v };
        for (key, value) in [
            // Unique in the table.
            (
                "isbn",
                null_every(3, json!(format!("{}{n}", texts[(n + 3) % texts.len()]))),
            ),
            (
                "price",
                null_every(4, json!(format!("{}.{:02}", n, n % 100))),
            ),
            (
                "published",
                null_every(
                    5,
                    json!(format!("19{:02}-0{}-1{}", n % 100, n % 9 + 1, n % 10)),
                ),
            ),
            (
                "rating",
                null_every(
                    6,
                    json!(f64::from(u32::try_from(n).unwrap_or(0)) / 7.0 - 100.0),
                ),
            ),
            ("active", null_every(7, json!(n % 2 == 0))),
            (
                "code",
                null_every(8, json!(format!("a0eebc99-9c0b-4ef8-bb6d-{n:012}"))),
            ),
            (
                "extra",
                null_every(
                    9,
                    json!({"n": n, "text": texts[n % texts.len()], "list": [1, "two", null]}),
                ),
            ),
            (
                "stamped",
                null_every(
                    10,
                    json!(format!("2026-11-27 18:29:{:02}.{:06}+00:00", n % 60, n)),
                ),
            ),
            (
                "naive",
                null_every(11, json!(format!("2026-11-27 18:{:02}:46+00:00", n % 60))),
            ),
            (
                "at",
                null_every(12, json!(format!("10:{:02}:30.{:06}", n % 60, n % 1000))),
            ),
        ] {
            d.insert(key.into(), value);
        }
        d
    };
    // 13 columns: more than 2,307 rows of one kind of write do not fit one `VALUES` statement
    // (30,000 values). 7,500 rows make each of the second batch's three thirds larger.
    let first: Vec<ReplicaEvent> = (1..=7_500)
        .map(|id| event(SignalType::Save, row(id, 1)))
        .collect();
    // Then: newer SAVEs of some rows, stale ones of others, SYNCs that may go down.
    let second: Vec<ReplicaEvent> = (1..=7_500)
        .map(|id| match id % 3 {
            0 => event(SignalType::Save, row(id + 1, 2)),
            1 => event(SignalType::Save, row(id, 0)),
            _ => event(SignalType::Sync, row(id, 0)),
        })
        .collect();
    for events in [&first, &second] {
        let got = large_table.apply_batch(events).await;
        let mut want = Vec::new();
        for chunk in events.chunks(100) {
            want.extend(small_table.apply_batch(chunk).await);
        }
        let got: Vec<Applied> = got
            .into_iter()
            .map(|r| r.unwrap_or_else(|e| panic!("{e}")))
            .collect();
        let want: Vec<Applied> = want
            .into_iter()
            .map(|r| r.unwrap_or_else(|e| panic!("{e}")))
            .collect();
        assert_eq!(got, want);
    }
    let rows = |db: &TestDb| {
        let db = db.db.clone();
        async move {
            book::Entity::find()
                .order_by_asc(book::Column::Id)
                .all(&db)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        }
    };
    let (got, want) = (rows(&large).await, rows(&small).await);
    assert_eq!(got.len(), 7_501);
    assert_eq!(got, want);
    let quoted = got.iter().find(|r| r.title == "a \"quoted\" word");
    assert!(quoted.is_some(), "text survives as it was");
    large.cleanup().await;
    small.cleanup().await;
}

async fn a_failing_event_is_isolated_from_its_batch(backend: Backend) {
    let (t, table) = setup(backend, "isolate").await;
    let with_isbn = |id, isbn: &str| {
        let mut d = data(id, 0, "t");
        d.insert("isbn".into(), json!(isbn));
        event(SignalType::Save, d)
    };
    let events = [
        with_isbn(1, "same"),
        with_isbn(2, "same"),
        with_isbn(3, "other"),
    ];
    let results = table.apply_batch(&events).await;
    assert_eq!(results[0].as_ref().ok(), Some(&Applied::Created));
    let err = results[1].as_ref().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Database, "{err}");
    assert!(err.is_retryable());
    assert_eq!(results[2].as_ref().ok(), Some(&Applied::Created));
    assert!(stored(&t, 1).await.is_some());
    assert!(stored(&t, 2).await.is_none());
    assert!(stored(&t, 3).await.is_some());
    t.cleanup().await;
}

async fn only_direct_syncs_both_ways(backend: Backend) {
    let (t, table) = setup(backend, "direct").await;
    let queue = unique("orm_direct");
    let (transport, _broker) = MemoryBroker::default().start_transport();
    let tags_db = TestDb::new(backend, "direct_tags").await;
    tags_db.create(tag::Entity).await;
    let tags = ReplicaTable::new(tags_db.db.clone(), tag::Entity)
        .and_then(|r| r.with_mapping([("id", "key"), ("title", "title")]))
        .unwrap_or_else(|e| panic!("{e}"));
    let system = CqrsSystem::builder()
        .config(CqrsConfig::default().with_queue(&queue))
        .replica(ReplicaModel::new("book", table).with_only_direct_syncs(true))
        .replica(ReplicaModel::new("tag", tags))
        .transport(transport.clone())
        .start()
        .await
        .unwrap_or_else(|e| panic!("start: {e}"));
    for (route, id) in [
        (Route::broadcast("book"), 1),
        (Route::queue(&queue, "book"), 2),
        (Route::broadcast("tag"), 1),
        (Route::queue(&queue, "tag"), 2),
    ] {
        let cqrs_id = route.cqrs_id().to_owned();
        let message = OutgoingMessage {
            route,
            body: body(SignalType::Sync, &cqrs_id, data(id, 0, "synced")),
            content_type: "text/plain".into(),
            headers: Headers::new(),
            expiration: None,
        };
        transport.publish(message).await.unwrap();
    }
    wait_until(
        "four events applied or skipped",
        Duration::from_secs(20),
        || {
            let m = system.metrics();
            async move { m.applied + m.skipped >= 4 }
        },
    )
    .await;
    system.wait_idle().await.unwrap();
    assert!(stored(&t, 1).await.is_none(), "broadcast SYNC ignored");
    assert!(stored(&t, 2).await.is_some(), "directed SYNC applied");
    let tags = tag::Entity::find().all(&tags_db.db).await.unwrap();
    assert_eq!(tags.len(), 2, "without the flag both apply");
    system.shutdown().await.unwrap();
    tags_db.cleanup().await;
    t.cleanup().await;
}

/// What the database itself refuses, through the whole replica pipeline: a CHECK violation
/// (every database), a NUL byte in text or JSON (PostgreSQL), a number too large for its
/// decimal column and a text too long for its column (PostgreSQL, MariaDB) go to the
/// dead-letter queue on their first failure, without retries; a row whose parent row has not
/// arrived yet (a foreign key) is retried and applied once the parent is there.
async fn data_errors_dead_letter_at_once_and_missing_parents_retry(backend: Backend) {
    use sea_orm::ExprTrait;
    use sea_orm::sea_query::Expr;
    support::init_tracing();
    let t = TestDb::new(backend, "dberr").await;
    t.create(parent::Entity).await;
    t.create_with_checks(child::Entity, [Expr::col(child::Column::Qty).gte(0)])
        .await;
    let queue = unique("dberr");
    let dlq = format!("dead_letter_{queue}");
    let (transport, _broker) = MemoryBroker::default().start_transport();
    let system = CqrsSystem::builder()
        .config(
            CqrsConfig::default()
                .with_queue(&queue)
                .with_workers(1)
                .with_retry_delay(Duration::from_millis(200))
                .with_max_retries(Some(50)),
        )
        .replica(ReplicaModel::new(
            "parent",
            ReplicaTable::new(t.db.clone(), parent::Entity).unwrap(),
        ))
        .replica(ReplicaModel::new(
            "child",
            ReplicaTable::new(t.db.clone(), child::Entity).unwrap(),
        ))
        .transport(transport.clone())
        .start()
        .await
        .unwrap_or_else(|e| panic!("start: {e}"));
    let dead = cqrs_transports::conformance::collect(&transport, &dlq, 100, true).await;
    let publish = |cqrs_id: &'static str, data: Value| {
        let message = OutgoingMessage {
            route: Route::broadcast(cqrs_id),
            body: body(SignalType::Save, cqrs_id, object(data)),
            content_type: "text/plain".into(),
            headers: Headers::new(),
            expiration: None,
        };
        transport.publish(message)
    };
    let updated = "2026-11-27 17:08:25+00:00";
    let child = |id: i64, parent: i64, label: &str, qty: i64, price: Value, extra: Value| {
        json!({"id": id, "parent_id": parent, "label": label, "qty": qty, "price": price,
               "extra": extra, "cqrs_revision": 0, "cqrs_updated": updated})
    };
    publish(
        "parent",
        json!({"id": 2, "name": "present", "cqrs_revision": 0, "cqrs_updated": updated}),
    )
    .await
    .unwrap();
    let strict = backend != Backend::Sqlite;
    let cases = [
        (
            1,
            child(1, 1, "orphan for now", 1, json!("1.00"), json!({})),
            false,
        ),
        (
            2,
            child(2, 2, "negative", -1, json!("1.00"), json!({})),
            true,
        ),
        (
            3,
            child(3, 2, "nul \u{0} byte", 1, json!("1.00"), json!({})),
            backend == Backend::Postgres,
        ),
        (
            4,
            child(
                4,
                2,
                "nul in json",
                1,
                json!("1.00"),
                json!({"k": "a\u{0}b"}),
            ),
            backend == Backend::Postgres,
        ),
        (
            5,
            child(5, 2, "too dear", 1, json!("123456.78"), json!({})),
            strict,
        ),
        (
            6,
            child(
                6,
                2,
                "a label longer than twenty",
                1,
                json!("1.00"),
                json!({}),
            ),
            strict,
        ),
        (
            7,
            child(7, 2, "fine", 3, json!("9.99"), json!([1, 2])),
            false,
        ),
    ];
    for (_, data, _) in &cases {
        publish("child", data.clone()).await.unwrap();
    }
    wait_until("the orphan retried", Duration::from_secs(20), || {
        let m = system.metrics();
        async move { m.retried >= 1 }
    })
    .await;
    publish(
        "parent",
        json!({"id": 1, "name": "late", "cqrs_revision": 0, "cqrs_updated": updated}),
    )
    .await
    .unwrap();
    let refused: Vec<i64> = cases.iter().filter(|c| c.2).map(|c| c.0).collect();
    let applied: Vec<i64> = cases.iter().filter(|c| !c.2).map(|c| c.0).collect();
    wait_until(
        "every child applied or dead-lettered",
        Duration::from_secs(30),
        || {
            let db = t.db.clone();
            let m = system.metrics();
            let (want_rows, want_dead) = (applied.len(), refused.len());
            async move {
                let rows = child::Entity::find().all(&db).await.map_or(0, |r| r.len());
                rows == want_rows && m.dead_lettered as usize == want_dead
            }
        },
    )
    .await;
    system.wait_idle().await.unwrap();
    let letters = dead.wait_for(refused.len(), "dead letters").await;
    let mut got: Vec<i64> = letters
        .iter()
        .map(|d| {
            let letter = cqrs_sync::Codec::Json.decode(&d.body, None).unwrap();
            assert_eq!(
                letter.retries, 0,
                "dead-lettered on the first failure, not retried"
            );
            assert_eq!(
                d.headers
                    .get(cqrs_sync::transport::HEADER_REASON)
                    .map(String::as_str),
                Some("invalid_data"),
                "{:?}",
                d.headers
            );
            letter.pk().as_i64().unwrap()
        })
        .collect();
    got.sort_unstable();
    assert_eq!(got, refused, "{backend:?}: the rows the database refuses");
    let rows: Vec<i64> = child::Entity::find()
        .order_by_asc(child::Column::Id)
        .all(&t.db)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(rows, applied, "the orphan applied once its parent came");
    system.shutdown().await.unwrap();
    t.cleanup().await;
}
