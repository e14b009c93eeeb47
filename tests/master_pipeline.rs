//! The master pipeline the system owns: registration checked at start, one window from the
//! outbox to the broker's confirm, the URL picking the transport, the retry policy resolved
//! once, and a Django-shaped master (wire keys, cascade deletes in one transaction).

// The scenarios are plain async functions run by generated #[test]s; a failed unwrap is a
// failed test.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix::prelude::*;
use cqrs_sync::orm::{MasterTable, Outbox};
use cqrs_sync::transport::{
    Cancel, ConsumerTag, DeadLetter, Declare, DeleteQueue, DescribeQueue, Inspect, ListDeadLetters,
    Park, Ping, Publish, PublishDeadLetter, PurgeDeadLetters, QueueStats, RetryDeadLetters,
    RetryReport, Settle, Subscribe, TopologyObject,
};
use cqrs_sync::transports::memory::MemoryBroker;
use cqrs_sync::{
    Codec, CqrsConfig, CqrsSystem, CqrsSystemExt, EncodedEvent, Envelope, ErrorKind, MasterModel,
    MasterRegistration, MemoryOutbox, MemoryTable, ModelConfig, ReplicaModel, Result, RetryPolicy,
    Route, SignalType, TransportHandle,
};
use sea_orm::ActiveValue::Set;
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryOrder};
use serde_json::json;
use support::db::{Backend, TestDb, on_each_db};
use support::entities::{author, child, parent};
use support::{row, unique, wait_until};

const PATIENCE: Duration = Duration::from_secs(30);

on_each_db!(a_django_shaped_master_sends_field_names_and_a_delete_per_cascaded_row);

fn new_author(name: &str) -> author::ActiveModel {
    author::ActiveModel {
        name: Set(name.to_owned()),
        ..Default::default()
    }
}

/// A master system for `masters` on `transport`.
async fn start(
    config: CqrsConfig,
    masters: Vec<MasterRegistration>,
    transport: &TransportHandle,
) -> Result<CqrsSystem> {
    let mut builder = CqrsSystem::builder()
        .config(config)
        .transport(transport.clone());
    for master in masters {
        builder = builder.master(master);
    }
    builder.start().await
}

#[actix_rt::test]
async fn a_forgotten_registration_fails_at_start_naming_the_id() {
    support::init_tracing();
    let t = TestDb::new(Backend::Sqlite, "forgotten").await;
    t.create(author::Entity).await;
    let outbox = Outbox::with_table(t.db.clone(), unique("outbox"));
    outbox.create_table().await.unwrap();
    let authors = MasterTable::new("author", author::Entity, &outbox).unwrap();
    let books = MasterTable::new("book", author::Entity, &outbox).unwrap();

    // Writing through a table no started system registered fails, and writes nothing.
    let err = authors
        .insert(&t.db, new_author("unregistered"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("author"), "{err}");
    assert_eq!(author::Entity::find().all(&t.db).await.unwrap().len(), 0);
    assert_eq!(outbox.pending().await.unwrap(), 0);

    // Both tables write; the process stops before the events went out (another owner holds
    // the lease, as a relay of a process that died would).
    let (transport, _broker) = MemoryBroker::default().start_transport();
    let store = outbox.store();
    assert!(store.lease("dead", Duration::from_secs(600)).await.unwrap());
    let first = start(
        CqrsConfig::default(),
        vec![(&authors).into(), (&books).into()],
        &transport,
    )
    .await
    .unwrap();
    authors.insert(&t.db, new_author("a")).await.unwrap();
    books.insert(&t.db, new_author("b")).await.unwrap();
    first.shutdown().await.unwrap();

    // The next start forgets the books: it fails, naming them, and relays nothing.
    let err = start(CqrsConfig::default(), vec![(&authors).into()], &transport)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().starts_with("config: book"), "{err}");
    assert!(err.to_string().contains(outbox.table()), "{err}");
    assert_eq!(outbox.pending().await.unwrap(), 2);

    // With both registered it starts and relays everything.
    store.release("dead").await.unwrap();
    let again = start(
        CqrsConfig::default(),
        vec![(&authors).into(), (&books).into()],
        &transport,
    )
    .await
    .unwrap();
    again.flush().await.unwrap();
    assert_eq!(outbox.pending().await.unwrap(), 0);
    again.shutdown().await.unwrap();
    t.cleanup().await;
}

/// A transport in front of another that holds each publish for a while before passing it on,
/// and records how many were unconfirmed at once.
struct Counting {
    inner: TransportHandle,
    hold: Duration,
    in_flight: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    published: Arc<AtomicUsize>,
}

impl Actor for Counting {
    type Context = Context<Self>;
}

macro_rules! forward {
    ($msg:ty, $out:ty, |$inner:ident, $m:ident| $call:expr) => {
        impl Handler<$msg> for Counting {
            type Result = ResponseFuture<Result<$out>>;

            fn handle(&mut self, $m: $msg, _: &mut Context<Self>) -> Self::Result {
                let $inner = &self.inner;
                Box::pin($call)
            }
        }
    };
}

forward!(Declare, (), |t, m| t.declare(m));
forward!(Subscribe, ConsumerTag, |t, m| t.subscribe(m));
forward!(Settle, (), |t, m| t.settle(m.tags, m.settlement));
forward!(Cancel, (), |t, m| t.cancel(m.consumer, m.release));
forward!(Park, (), |t, m| t.park(m.message, m.delay));
forward!(PublishDeadLetter, (), |t, m| t.dead_letter(m));
forward!(Inspect, QueueStats, |t, m| t.inspect(m.queue));
forward!(Ping, (), |t, _m| t.ping());
forward!(ListDeadLetters, Vec<DeadLetter>, |t, m| t
    .list_dead_letters(m));
forward!(RetryDeadLetters, RetryReport, |t, m| t
    .retry_dead_letters(m));
forward!(PurgeDeadLetters, u64, |t, m| t.purge_dead_letters(m));
forward!(DescribeQueue, Vec<TopologyObject>, |t, m| t
    .describe_queue(m));
forward!(DeleteQueue, Vec<String>, |t, m| t.delete_queue(m));

impl Handler<Publish> for Counting {
    type Result = ResponseFuture<Result<()>>;

    fn handle(&mut self, Publish(message): Publish, _: &mut Context<Self>) -> Self::Result {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        self.published.fetch_add(1, Ordering::SeqCst);
        let (inner, hold, in_flight) = (self.inner.clone(), self.hold, Arc::clone(&self.in_flight));
        Box::pin(async move {
            if !hold.is_zero() {
                tokio::time::sleep(hold).await;
            }
            let result = inner.publish(message).await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            result
        })
    }
}

fn save(id: i64) -> EncodedEvent {
    let envelope = Envelope::new(SignalType::Save, "author", row(id, 0, "x")).with_pk(json!(id));
    EncodedEvent::encode(envelope, Route::broadcast("author"), Codec::Json, None).unwrap()
}

#[actix_rt::test]
async fn the_window_bounds_what_the_transport_holds_from_the_outbox() {
    support::init_tracing();
    let (inner, _broker) = MemoryBroker::default().start_transport();
    let (in_flight, most) = (Arc::default(), Arc::new(AtomicUsize::new(0)));
    let counting = Counting {
        inner: inner.clone(),
        hold: Duration::from_millis(2),
        in_flight: Arc::clone(&in_flight),
        most: Arc::clone(&most),
        published: Arc::default(),
    }
    .start();
    let transport = TransportHandle::new("counting", &counting);
    // A replica on the same broker, so that every event is routed and applied.
    let table = MemoryTable::new();
    let replica = CqrsSystem::builder()
        .config(CqrsConfig::default().with_queue(unique("window")))
        .replica(ReplicaModel::new("author", table.clone()))
        .transport(inner)
        .start()
        .await
        .unwrap();
    let outbox = MemoryOutbox::new();
    let window = 8;
    let master = start(
        CqrsConfig::default().with_publish_window(window),
        vec![MasterRegistration::new(MasterModel::new("author")).with_outbox(outbox.store())],
        &transport,
    )
    .await
    .unwrap();
    for chunk in (1..=300).collect::<Vec<i64>>().chunks(50) {
        outbox.push(chunk.iter().map(|&id| save(id)));
    }
    master.flush().await.unwrap();
    assert!(outbox.is_empty());
    wait_until("the replica to apply every event", PATIENCE, || async {
        table.len() == 300
    })
    .await;
    let most = most.load(Ordering::SeqCst);
    assert!(
        most <= window as usize,
        "{most} publishes were unconfirmed at once; the window is {window}"
    );
    assert_eq!(
        most, window as usize,
        "the relay keeps the window full while confirms are slow"
    );
    master.shutdown().await.unwrap();
    replica.shutdown().await.unwrap();
}

/// A memory broker with a queue bound to `author` that nobody consumes, behind a [`Counting`]
/// transport that holds each publish for `hold`: the relay's side alone. Answers the
/// transport, the count of publishes and the broker (kept alive by the caller).
async fn counted_broker(hold: Duration) -> (TransportHandle, Arc<AtomicUsize>, Addr<MemoryBroker>) {
    let (inner, broker) = MemoryBroker::default().start_transport();
    let queue = unique("relay");
    inner
        .declare(Declare {
            queue: queue.clone(),
            dead_letter_queue: format!("dead_letter_{queue}"),
            cqrs_ids: vec!["author".into()],
        })
        .await
        .unwrap();
    let published = Arc::new(AtomicUsize::new(0));
    let counting = Counting {
        inner,
        hold,
        in_flight: Arc::default(),
        most: Arc::default(),
        published: Arc::clone(&published),
    }
    .start();
    (
        TransportHandle::new("counting", &counting),
        published,
        broker,
    )
}

#[actix_rt::test]
async fn rounds_that_start_over_send_nothing_twice() {
    support::init_tracing();
    let (transport, published, _broker) = counted_broker(Duration::ZERO).await;
    let outbox = MemoryOutbox::new();
    let master = start(
        CqrsConfig::default().with_publish_window(500),
        vec![MasterRegistration::new(MasterModel::new("author")).with_outbox(outbox.store())],
        &transport,
    )
    .await
    .unwrap();
    // More than two rounds' rows (20,000 each), written while the relay runs: each round
    // reads the outbox from its start again with events of the last one still unconfirmed
    // or undeleted, and must skip them.
    let total = 45_000;
    for chunk in (1..=total).collect::<Vec<i64>>().chunks(1000) {
        outbox.push(chunk.iter().map(|&id| save(id)));
        tokio::task::yield_now().await;
    }
    master.flush().await.unwrap();
    assert!(outbox.is_empty());
    assert_eq!(
        published.load(Ordering::SeqCst),
        total as usize,
        "every event published once"
    );
    master.shutdown().await.unwrap();
}

/// A transaction that took its outbox ids before another one and commits after it: the relay
/// has read past those ids when the wake-up of the late commit comes, while the other
/// transaction's events still wait for their confirm. It must read from the start again then,
/// not wait for its next poll.
async fn an_event_committed_late_below_the_cursor_is_relayed_at_once(backend: Backend) {
    use sea_orm::TransactionTrait;

    let t = TestDb::new(backend, "late").await;
    t.create(author::Entity).await;
    let outbox = Outbox::with_table(t.db.clone(), unique("outbox"));
    outbox.create_table().await.unwrap();
    let table = MasterTable::new("author", author::Entity, &outbox).unwrap();
    let (transport, published, _broker) = counted_broker(Duration::from_secs(2)).await;
    let master = start(
        CqrsConfig::default().with_outbox_poll_interval(Duration::from_secs(120)),
        vec![(&table).into()],
        &transport,
    )
    .await
    .unwrap();

    let early = t.db.begin().await.unwrap();
    table.insert(&early, new_author("early")).await.unwrap();
    table.insert(&t.db, new_author("late")).await.unwrap();
    wait_until("the first committed event to go out", PATIENCE, || async {
        published.load(Ordering::SeqCst) == 1
    })
    .await;
    early.commit().await.unwrap();
    outbox.wake();
    wait_until(
        "the event committed late, well before the next poll",
        Duration::from_secs(15),
        || async { published.load(Ordering::SeqCst) == 2 },
    )
    .await;
    master.flush().await.unwrap();
    master.shutdown().await.unwrap();
    t.cleanup().await;
}

#[actix_rt::test]
async fn an_event_committed_late_below_the_cursor_is_relayed_at_once_on_postgres() {
    support::init_tracing();
    an_event_committed_late_below_the_cursor_is_relayed_at_once(Backend::Postgres).await;
}

#[actix_rt::test]
async fn an_event_committed_late_below_the_cursor_is_relayed_at_once_on_mariadb() {
    support::init_tracing();
    an_event_committed_late_below_the_cursor_is_relayed_at_once(Backend::MySql).await;
}

#[actix_rt::test]
async fn the_url_picks_the_memory_transport() {
    support::init_tracing();
    let url = format!("memory://{}", unique("url"));
    // A replica and a master connecting by the same URL reach the same broker.
    let transport = support::round_trip(&CqrsConfig::default().with_url(&url)).await;
    assert_eq!(transport.name(), "memory");
    // Another URL is another broker: nothing is bound there.
    let elsewhere = CqrsSystem::builder()
        .config(CqrsConfig::default().with_url("memory://elsewhere"))
        .master(MasterModel::new("author"))
        .start()
        .await
        .unwrap();
    let err = elsewhere
        .publisher()
        .save("author", row(2, 0, "nobody"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unroutable);
    // A scheme with no transport compiled in, or none at all, is a configuration error
    // naming the URL.
    let mut urls = vec!["http://127.0.0.1:6379/0"];
    if !cfg!(feature = "redis") {
        urls.push("redis://127.0.0.1:6379/0");
    }
    for url in urls {
        let err = CqrsSystem::builder()
            .config(CqrsConfig::default().with_url(url))
            .start()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let scheme = url.split_once("://").map_or(url, |(s, _)| s);
        assert!(err.to_string().contains(scheme), "{err}");
    }
    elsewhere.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn a_retry_policy_in_code_and_in_the_configuration_warns_at_start() {
    let lines = support::Capture::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let config = CqrsConfig::default()
        .with_queue(unique("policies"))
        .with_model("author", ModelConfig::default().with_max_retries(Some(5)))
        .with_model("book", ModelConfig::default().with_max_retries(Some(7)));
    let (transport, _broker) = MemoryBroker::default().start_transport();
    let system = CqrsSystem::builder()
        .config(config)
        .replica(
            ReplicaModel::new("author", MemoryTable::new())
                .with_retry_policy(RetryPolicy::default().with_max_retries(Some(1))),
        )
        .replica(ReplicaModel::new("book", MemoryTable::new()))
        .replica(
            ReplicaModel::new("tag", MemoryTable::new()).with_retry_policy(RetryPolicy::default()),
        )
        .transport(transport)
        .start()
        .await
        .unwrap();
    system.shutdown().await.unwrap();
    let text = lines.text();
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("retry policy"))
        .collect();
    assert_eq!(warnings.len(), 1, "{text}");
    assert!(warnings[0].contains("cqrs_id=author"), "{text}");
}

async fn a_django_shaped_master_sends_field_names_and_a_delete_per_cascaded_row(backend: Backend) {
    support::init_tracing();
    let t = TestDb::new(backend, "django_shape").await;
    t.create(parent::Entity).await;
    t.create(child::Entity).await;
    let outbox = Outbox::with_table(t.db.clone(), unique("outbox"));
    outbox.create_table().await.unwrap();
    let parents = MasterTable::new("parent", parent::Entity, &outbox).unwrap();
    let children = MasterTable::new("child", child::Entity, &outbox)
        .unwrap()
        .with_wire_keys([(child::Column::ParentId, "parent")])
        .with_tracked_fields([child::Column::ParentId]);
    // The lease is held so the events can be read before they go out.
    let store = outbox.store();
    assert!(
        store
            .lease("reader", Duration::from_secs(600))
            .await
            .unwrap()
    );
    let (transport, _broker) = MemoryBroker::default().start_transport();
    let system = start(
        CqrsConfig::default(),
        vec![(&parents).into(), (&children).into()],
        &transport,
    )
    .await
    .unwrap();
    for id in [1, 2] {
        let p = parent::ActiveModel {
            id: Set(id),
            name: Set(format!("p{id}")),
            ..Default::default()
        };
        parents.insert(&t.db, p).await.unwrap();
    }
    let kids = (1..=3)
        .map(|id| child::ActiveModel {
            id: Set(id),
            parent_id: Set(if id == 3 { 2 } else { 1 }),
            label: Set(format!("c{id}")),
            qty: Set(1),
            ..Default::default()
        })
        .collect();
    children.insert_many(&t.db, kids).await.unwrap();

    // Deleting parent 1 and its children in one transaction: a DELETE per deleted row.
    let txn = sea_orm::TransactionTrait::begin(&t.db).await.unwrap();
    let gone = children
        .delete_many(&txn, Condition::all().add(child::Column::ParentId.eq(1)))
        .await
        .unwrap();
    assert_eq!(gone, 2);
    assert!(parents.delete(&txn, 1).await.unwrap());
    txn.commit().await.unwrap();

    let events: Vec<Envelope> = outbox
        .read(0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| Codec::Json.decode(&e.event.body, None).unwrap())
        .collect();
    let shape: Vec<(SignalType, &str, i64)> = events
        .iter()
        .map(|e| {
            let id = e.instance_data["id"].as_i64().unwrap_or(-1);
            (e.signal_type, e.cqrs_id.as_str(), id)
        })
        .collect();
    assert_eq!(
        shape,
        [
            (SignalType::Save, "parent", 1),
            (SignalType::Save, "parent", 2),
            (SignalType::Save, "child", 1),
            (SignalType::Save, "child", 2),
            (SignalType::Save, "child", 3),
            (SignalType::Delete, "child", 1),
            (SignalType::Delete, "child", 2),
            (SignalType::Delete, "parent", 1),
        ]
    );
    let saved = &events[2];
    assert_eq!(saved.instance_data["parent"], json!(1), "the field's name");
    assert!(!saved.instance_data.contains_key("parent_id"));
    assert_eq!(
        saved
            .previous_data
            .as_ref()
            .map(|p| p.contains_key("parent")),
        Some(true),
        "tracked fields under the wire key too"
    );
    assert_eq!(events[5].instance_data["cqrs_revision"], json!(1));
    let left: Vec<i64> = child::Entity::find()
        .order_by_asc(child::Column::Id)
        .all(&t.db)
        .await
        .unwrap()
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(left, [3]);
    store.release("reader").await.unwrap();
    system.flush().await.unwrap();
    system.shutdown().await.unwrap();
    t.cleanup().await;
}
