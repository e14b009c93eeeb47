//! Gap repair over the real Redis server: the request travels as one more stream, the
//! master's answer as a directed SYNC, and the replica converges.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cqrs_sync::{
    CqrsSystem, CqrsSystemExt, JsonObject, MasterModel, MemoryTable, ReplicaModel, sync_source_fn,
};
use serde_json::Value;
use support::redis::{PATIENCE, Space, connect};
use support::{row, wait_until};

fn state(table: &MemoryTable) -> Option<(String, i64)> {
    table.get("1").map(|r| {
        let name = r.data.get("name").and_then(Value::as_str).unwrap_or("");
        (name.to_owned(), r.revision)
    })
}

#[actix_rt::test]
async fn a_replica_that_missed_revisions_converges_through_redis() {
    support::init_tracing();
    let space = Space::create("cqrs_redis_gap");
    let (transport, _addr) = connect(space.config()).await;
    let table = MemoryTable::new();
    let replica = CqrsSystem::builder()
        .config(space.service_config().with_queue("gap_replica"))
        .replica(ReplicaModel::new("author", table.clone()).with_gap_repair(true))
        .transport(transport.clone())
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let current: Arc<Mutex<JsonObject>> = Arc::new(Mutex::new(row(1, 1, "one")));
    let asked = Arc::new(AtomicUsize::new(0));
    let (read, count) = (Arc::clone(&current), Arc::clone(&asked));
    let master = CqrsSystem::builder()
        .config(space.service_config())
        .master(MasterModel::new("author"))
        .answer_sync_requests(sync_source_fn("author", move |pk: Value| {
            count.fetch_add(1, Ordering::SeqCst);
            let found = (pk.as_i64() == Some(1))
                .then(|| read.lock().unwrap_or_else(|e| e.into_inner()).clone());
            async move { Ok(found) }
        }))
        .transport(transport.clone())
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let publisher = master.publisher();
    publisher
        .save("author", row(1, 1, "one"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_until("the replica to have the row", PATIENCE, || async {
        state(&table) == Some(("one".into(), 1))
    })
    .await;
    // Revisions 2..6 are never published; a straggler SAVE of revision 4 is.
    *current.lock().unwrap_or_else(|e| e.into_inner()) = row(1, 6, "six");
    publisher
        .save("author", row(1, 4, "four"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_until("the replica to converge", PATIENCE, || async {
        state(&table) == Some(("six".into(), 6))
    })
    .await;
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    for s in [replica, master] {
        s.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    }
}
