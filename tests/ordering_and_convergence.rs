//! Per-row order across parallel workers, and convergence under injected broker faults.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cqrs_sync::CqrsSystemExt;
use cqrs_sync::transports::memory::{FaultPlan, MemoryBroker};
use cqrs_sync::{
    Applied, CqrsConfig, CqrsSystem, MasterModel, MemoryTable, ReplicaEvent, ReplicaModel, Row,
    handler_fn,
};
use serde_json::Value;
use support::{row, unique, wait_until};

#[actix_rt::test]
async fn per_row_order_holds_with_four_workers_under_a_shuffled_load() {
    support::init_tracing();
    let queue = unique("order");
    let (transport, _broker) = MemoryBroker::default().start_transport();
    let seen: Arc<Mutex<HashMap<i64, Vec<i64>>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let system = CqrsSystem::builder()
        .config(
            CqrsConfig::default()
                .with_queue(&queue)
                .with_workers(4)
                .with_batch_size(8)
                .with_prefetch(64),
        )
        .master(MasterModel::new("item"))
        .replica(ReplicaModel::new(
            "item",
            handler_fn(move |event: ReplicaEvent| {
                let sink = Arc::clone(&sink);
                async move {
                    let pk = event.pk().as_i64().unwrap_or(-1);
                    let revision = event.envelope().revision().unwrap_or(-1);
                    // Yield so that workers interleave.
                    tokio::task::yield_now().await;
                    sink.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .entry(pk)
                        .or_default()
                        .push(revision);
                    Ok(Applied::Updated)
                }
            }),
        ))
        .transport(transport.clone())
        .start()
        .await
        .unwrap_or_else(|e| panic!("start: {e}"));

    let (rows, revisions) = (60_i64, 25_i64);
    let mut next = vec![0_i64; rows as usize];
    let mut rng = fastrand::Rng::with_seed(2026);
    let publisher = system.publisher();
    let mut sends = Vec::new();
    for _ in 0..rows * revisions {
        let pk = loop {
            let pk = rng.i64(0..rows);
            if next[pk as usize] < revisions {
                break pk;
            }
        };
        let rev = next[pk as usize];
        next[pk as usize] += 1;
        sends.push(publisher.save("item", row(pk, rev, "x")));
    }
    for result in futures_join(sends).await {
        result.unwrap_or_else(|e| panic!("publish: {e}"));
    }
    let total = (rows * revisions) as usize;
    wait_until("every event applied", Duration::from_secs(30), || async {
        seen.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .map(Vec::len)
            .sum::<usize>()
            == total
    })
    .await;
    let seen = seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    for (pk, revs) in &seen {
        let expected: Vec<i64> = (0..revisions).collect();
        assert_eq!(revs, &expected, "row {pk} applied out of order");
    }
    system.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
}

async fn futures_join<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut out = Vec::with_capacity(futures.len());
    for f in futures {
        out.push(f.await);
    }
    out
}

/// The master's side of the convergence test: rows with revisions, as a SeaORM master would
/// keep them.
#[derive(Default)]
struct Master {
    rows: BTreeMap<i64, (i64, String)>,
    deleted: BTreeMap<i64, i64>,
    next_id: i64,
}

#[actix_rt::test]
async fn a_revision_guarded_replica_converges_despite_drops_duplicates_delays_and_reordering() {
    support::init_tracing();
    let seed = std::env::var("CQRS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("convergence seed = {seed} (rerun with CQRS_TEST_SEED={seed})");
    let plan = FaultPlan::seeded(seed)
        .with_drop(0.05)
        .with_duplicate(0.05)
        .with_delay(0.05, Duration::from_millis(30))
        .with_reorder(0.2, 16)
        .with_redeliver(0.05)
        .with_redelivery_after(Duration::from_millis(10));
    let queue = unique("converge");
    let (transport, _broker) = MemoryBroker::new(plan).start_transport();
    let replica = MemoryTable::new().with_tombstones(true);
    let system = CqrsSystem::builder()
        .config(
            CqrsConfig::default()
                .with_queue(&queue)
                .with_workers(4)
                .with_batch_size(16),
        )
        .master(MasterModel::new("doc"))
        .replica(ReplicaModel::new("doc", replica.clone()))
        .transport(transport.clone())
        .start()
        .await
        .unwrap_or_else(|e| panic!("start (seed {seed}): {e}"));
    let publisher = system.publisher();

    let mut rng = fastrand::Rng::with_seed(seed);
    let mut master = Master::default();
    let now = chrono::Utc::now();
    for _ in 0..1500 {
        let live: Vec<i64> = master.rows.keys().copied().collect();
        let op = rng.u8(0..10);
        if live.is_empty() || op < 3 {
            let id = master.next_id;
            master.next_id += 1;
            let name = format!("doc-{id}-r0");
            master.rows.insert(id, (0, name.clone()));
            publisher
                .save("doc", row(id, 0, &name))
                .await
                .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        } else if op < 9 {
            let id = live[rng.usize(0..live.len())];
            let entry = master.rows.get_mut(&id).unwrap_or_else(|| unreachable!());
            entry.0 += 1;
            entry.1 = format!("doc-{id}-r{}", entry.0);
            let (rev, name) = entry.clone();
            publisher
                .save("doc", row(id, rev, &name))
                .await
                .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        } else {
            let id = live[rng.usize(0..live.len())];
            let (rev, _) = master.rows.remove(&id).unwrap_or_else(|| unreachable!());
            master.deleted.insert(id, rev + 1);
            publisher
                .delete("doc", Value::from(id), rev + 1, now)
                .await
                .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        }
    }
    let expected: BTreeMap<String, (i64, String)> = master
        .rows
        .iter()
        .map(|(id, (rev, name))| (id.to_string(), (*rev, name.clone())))
        .collect();
    let view = |rows: BTreeMap<String, Row>| -> BTreeMap<String, (i64, String)> {
        rows.into_iter()
            .map(|(pk, r)| {
                (
                    pk,
                    (
                        r.revision,
                        r.data
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                    ),
                )
            })
            .collect()
    };
    let converged = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if view(replica.snapshot()) == expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if converged.is_err() {
        let got = view(replica.snapshot());
        let differing: Vec<_> = expected
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(v))
            .map(|(k, v)| format!("{k}: master {v:?} replica {:?}", got.get(k)))
            .chain(
                got.keys()
                    .filter(|k| !expected.contains_key(*k))
                    .map(|k| format!("{k}: deleted on master, present on replica")),
            )
            .take(10)
            .collect();
        panic!("seed {seed}: replica did not converge; first differences: {differing:#?}");
    }
    let m = system.metrics();
    assert!(
        m.received > m.published,
        "seed {seed}: faults should have caused extra deliveries ({m:?})"
    );
    system.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
}
