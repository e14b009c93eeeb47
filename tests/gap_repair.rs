//! Gap repair on the memory transport: a replica that missed revisions asks the master for
//! the row and converges without an operator; with the feature off nothing is asked; requests
//! are deduplicated per row; a malformed request is dead-lettered with its reason and the
//! master goes on answering.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cqrs_sync::transport::{HEADER_REASON, Headers, ListDeadLetters, OutgoingMessage};
use cqrs_sync::transports::memory::MemoryBroker;
use cqrs_sync::{
    CqrsConfig, CqrsSystem, CqrsSystemBuilder, JsonObject, MasterModel, MemoryTable, ModelConfig,
    ReplicaModel, Route, TransportHandle, sync_request_key, sync_source_fn,
};
use serde_json::Value;
use support::{row, unique, wait_until};

const PATIENCE: Duration = Duration::from_secs(20);

/// A master service whose rows live in a map, answering sync requests from it.
struct Master {
    rows: Arc<Mutex<HashMap<i64, JsonObject>>>,
    asked: Arc<AtomicUsize>,
    system: CqrsSystem,
}

impl Master {
    async fn start(transport: &TransportHandle) -> Self {
        let rows: Arc<Mutex<HashMap<i64, JsonObject>>> = Arc::default();
        let asked = Arc::new(AtomicUsize::new(0));
        let (read, count) = (Arc::clone(&rows), Arc::clone(&asked));
        let source = sync_source_fn("author", move |pk: Value| {
            count.fetch_add(1, Ordering::SeqCst);
            let found = pk.as_i64().and_then(|pk| {
                read.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&pk)
                    .cloned()
            });
            async move { Ok(found) }
        });
        let system = CqrsSystemBuilder::new()
            .master(MasterModel::new("author"))
            .answer_sync_requests(source)
            .transport(transport.clone())
            .start()
            .await
            .unwrap_or_else(|e| panic!("master start: {e}"));
        Self {
            rows,
            asked,
            system,
        }
    }

    /// Writes revision `rev` of row `id`; publishes its SAVE unless the event is to be lost.
    async fn write(&self, id: i64, rev: i64, name: &str, publish: bool) {
        let data = row(id, rev, name);
        self.rows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, data.clone());
        if publish {
            self.system
                .publisher()
                .save("author", data)
                .await
                .unwrap_or_else(|e| panic!("save: {e}"));
        }
    }

    fn asked(&self) -> usize {
        self.asked.load(Ordering::SeqCst)
    }
}

async fn replica(
    transport: &TransportHandle,
    config: CqrsConfig,
    model: ReplicaModel,
) -> CqrsSystem {
    CqrsSystemBuilder::new()
        .config(config)
        .replica(model)
        .transport(transport.clone())
        .start()
        .await
        .unwrap_or_else(|e| panic!("replica start: {e}"))
}

fn name_and_revision(table: &MemoryTable, pk: &str) -> Option<(String, i64)> {
    table.get(pk).map(|r| {
        let name = r
            .data
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        (name, r.revision)
    })
}

async fn wait_row(table: &MemoryTable, pk: &str, name: &str, revision: i64) {
    wait_until(
        &format!("row {pk} to be {name:?} at revision {revision}"),
        PATIENCE,
        || async { name_and_revision(table, pk) == Some((name.to_owned(), revision)) },
    )
    .await;
}

#[actix_rt::test]
async fn a_replica_that_missed_revisions_asks_the_master_and_converges() {
    support::init_tracing();
    let (transport, _broker) = MemoryBroker::default().start_transport();
    let master = Master::start(&transport).await;
    let table = MemoryTable::new();
    let queue = unique("gap_on");
    let replica = replica(
        &transport,
        CqrsConfig::default().with_queue(&queue),
        ReplicaModel::new("author", table.clone()).with_gap_repair(true),
    )
    .await;
    master.write(1, 1, "one", true).await;
    wait_row(&table, "1", "one", 1).await;
    // Revisions 2..4 never reach the broker; 5 does, late (a gap of 3), when the master is
    // at 6 already and that SAVE was lost too: only the master's answer can bring the replica
    // to the row's current state.
    for rev in 2..=6 {
        master.write(1, rev, &format!("lost {rev}"), false).await;
    }
    master.write(1, 6, "six", false).await;
    master
        .system
        .publisher()
        .save("author", row(1, 5, "five"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_row(&table, "1", "six", 6).await;
    assert_eq!(master.asked(), 1);
    // The request went to the master's queue only: nothing reached the replica's queues,
    // which are bound the way django-cqrs binds them.
    let stats = transport
        .inspect(&queue)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((stats.ready, stats.unacked, stats.dead_letters), (0, 0, 0));
    replica.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    master
        .system
        .shutdown()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

#[actix_rt::test]
async fn with_gap_repair_off_nothing_is_requested() {
    support::init_tracing();
    let (transport, _broker) = MemoryBroker::default().start_transport();
    let master = Master::start(&transport).await;
    let table = MemoryTable::new();
    let replica = replica(
        &transport,
        CqrsConfig::default().with_queue(unique("gap_off")),
        ReplicaModel::new("author", table.clone()),
    )
    .await;
    master.write(1, 1, "one", true).await;
    master.write(1, 2, "lost", false).await;
    master.write(1, 3, "three", true).await;
    master.write(1, 4, "four", false).await;
    wait_row(&table, "1", "three", 3).await;
    replica.wait_idle().await.unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    master
        .system
        .wait_idle()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(master.asked(), 0, "a replica with gap repair off asked");
    let stats = transport
        .inspect(sync_request_key("author"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((stats.ready, stats.unacked), (0, 0));
    assert_eq!(name_and_revision(&table, "1"), Some(("three".into(), 3)));
    replica.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    master
        .system
        .shutdown()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

#[actix_rt::test]
async fn a_row_is_asked_for_once_within_the_window_however_many_gaps_it_shows() {
    support::init_tracing();
    let (transport, _broker) = MemoryBroker::default().start_transport();
    let master = Master::start(&transport).await;
    let table = MemoryTable::new();
    // Turned on by configuration this time, `[models.author] gap_repair = true`.
    let config = CqrsConfig::default()
        .with_queue(unique("gap_dedup"))
        .with_model("author", ModelConfig::default().with_gap_repair(true));
    let replica = replica(
        &transport,
        config,
        ReplicaModel::new("author", table.clone()),
    )
    .await;
    master.write(1, 1, "one", true).await;
    master.write(2, 1, "two", true).await;
    wait_row(&table, "2", "two", 1).await;
    // The master is at revision 9 of row 1 and 3 of row 2; the replica sees gaps at 3, 5, 7
    // on row 1 and one gap on row 2.
    master.write(1, 9, "nine", false).await;
    for rev in [3, 5, 7] {
        let data = row(1, rev, &format!("r{rev}"));
        master
            .system
            .publisher()
            .save("author", data)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    master.write(2, 3, "two at 3", true).await;
    wait_row(&table, "1", "nine", 9).await;
    wait_row(&table, "2", "two at 3", 3).await;
    replica.wait_idle().await.unwrap_or_else(|e| panic!("{e}"));
    master
        .system
        .wait_idle()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(master.asked(), 2, "one request per row, not one per gap");
    replica.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    master
        .system
        .shutdown()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

#[actix_rt::test]
async fn a_save_older_than_a_tombstone_asks_and_a_row_the_master_lacks_gets_no_answer() {
    support::init_tracing();
    let (transport, _broker) = MemoryBroker::default().start_transport();
    let master = Master::start(&transport).await;
    let table = MemoryTable::new().with_tombstones(true);
    let replica = replica(
        &transport,
        CqrsConfig::default().with_queue(unique("gap_tomb")),
        ReplicaModel::new("author", table.clone()).with_gap_repair(true),
    )
    .await;
    master.write(1, 1, "one", true).await;
    wait_row(&table, "1", "one", 1).await;
    master
        .rows
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&1);
    master
        .system
        .publisher()
        .delete("author", Value::from(1), 3, chrono::Utc::now())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_until("row 1 to be deleted", PATIENCE, || async {
        table.get("1").is_none()
    })
    .await;
    // A late SAVE of revision 2 is older than the delete: ignored, and the master is asked.
    master
        .system
        .publisher()
        .save("author", row(1, 2, "late"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_until("the master to be asked", PATIENCE, || async {
        master.asked() == 1
    })
    .await;
    master
        .system
        .wait_idle()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    replica.wait_idle().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(table.get("1").is_none(), "the row came back");
    replica.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    master
        .system
        .shutdown()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

fn request(body: &[u8]) -> OutgoingMessage {
    OutgoingMessage {
        route: Route::broadcast(sync_request_key("author")),
        body: body.to_vec(),
        content_type: "text/plain".into(),
        headers: Headers::new(),
        expiration: None,
    }
}

#[actix_rt::test]
async fn a_malformed_request_is_dead_lettered_with_its_reason_and_answering_goes_on() {
    support::init_tracing();
    let (transport, _broker) = MemoryBroker::default().start_transport();
    let master = Master::start(&transport).await;
    let table = MemoryTable::new();
    let queue = unique("gap_bad");
    let replica = replica(
        &transport,
        CqrsConfig::default().with_queue(&queue),
        ReplicaModel::new("author", table.clone()),
    )
    .await;
    master.write(7, 4, "seven", false).await;
    let bad: [&[u8]; 3] = [
        b"not json at all",
        br#"{"cqrs_id":"author","instance_pk":{"x":1},"queue":"q"}"#,
        br#"{"cqrs_id":"nobody","instance_pk":1,"queue":"q"}"#,
    ];
    for body in bad {
        transport
            .publish(request(body))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // A good request after the bad ones is still answered.
    let good = format!(r#"{{"cqrs_id":"author","instance_pk":7,"queue":"{queue}"}}"#);
    transport
        .publish(request(good.as_bytes()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_row(&table, "7", "seven", 4).await;
    let dead_letter_queue = format!("dead_letter_{}", sync_request_key("author"));
    let list = || {
        transport.list_dead_letters(ListDeadLetters {
            dead_letter_queue: dead_letter_queue.clone(),
            cqrs_id: None,
            limit: usize::MAX,
        })
    };
    wait_until("three dead letters", PATIENCE, || {
        let listed = list();
        async move { listed.await.is_ok_and(|l| l.len() == 3) }
    })
    .await;
    let letters = list().await.unwrap_or_else(|e| panic!("{e}"));
    let reasons: Vec<&str> = letters
        .iter()
        .map(|l| l.headers.get(HEADER_REASON).map_or("", String::as_str))
        .collect();
    assert_eq!(reasons, ["decode", "invalid_data", "unknown_cqrs_id"]);
    assert_eq!(letters[0].body, bad[0]);
    let stats = transport
        .inspect(sync_request_key("author"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((stats.ready, stats.unacked), (0, 0), "requests left behind");
    replica.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    master
        .system
        .shutdown()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}
