//! End-to-end pipeline on the memory transport with a no-op replica: master publishes through
//! the Producer (confirmed), the replica routes, shards over the workers, applies and acks.
//! Prints events/s next to the target.
//!
//! `cargo bench --bench pipeline` (`PIPELINE_EVENTS=N` to change the run size).

#![allow(clippy::print_stdout, clippy::unwrap_used)] // a bench prints its figures and may panic

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cqrs_sync::prelude::*;
use cqrs_sync::transports::memory::MemoryBroker;
use serde_json::{Value, json};

const TARGET: f64 = 100_000.0;

fn row(id: u64) -> JsonObject {
    let Value::Object(map) = json!({
        "id": id, "cqrs_revision": 0, "cqrs_updated": "2026-11-27 17:08:25.074040+00:00",
        "name": "Ada Lovelace", "email": "ada@example.com", "rating": "9.99", "tags": ["a", "b"],
    }) else {
        unreachable!()
    };
    map
}

async fn run(events: u64, workers: usize) -> (f64, Duration) {
    let (transport, _broker) = MemoryBroker::default().start_transport();
    let applied = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&applied);
    let config = CqrsConfig::default()
        .with_queue(format!("bench_{workers}"))
        .with_workers(workers)
        .with_prefetch(2000)
        .with_batch_size(200);
    let system = CqrsSystem::builder()
        .config(config)
        .master(MasterModel::new("author"))
        .replica(ReplicaModel::new(
            "author",
            handler_fn(move |_: ReplicaEvent| {
                counter.fetch_add(1, Ordering::Relaxed);
                std::future::ready(Ok(Applied::Updated))
            }),
        ))
        .transport(transport)
        .start()
        .await
        .unwrap();
    let publisher = system.publisher();
    let start = Instant::now();
    let mut pending = Vec::with_capacity(1024);
    for id in 0..events {
        pending.push(publisher.save("author", row(id)));
        if pending.len() == 1024 {
            for f in pending.drain(..) {
                f.await.unwrap();
            }
        }
    }
    for f in pending.drain(..) {
        f.await.unwrap();
    }
    while applied.load(Ordering::Relaxed) < events {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = start.elapsed();
    system.shutdown().await.unwrap();
    (events as f64 / elapsed.as_secs_f64(), elapsed)
}

#[actix::main]
async fn main() {
    let events: u64 = std::env::var("PIPELINE_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    println!(
        "pipeline: memory transport, no-op apply, {events} events, publish -> confirm -> route -> apply -> ack"
    );
    for workers in [1, 4] {
        let mut rates = Vec::new();
        for _ in 0..3 {
            rates.push(run(events, workers).await.0);
        }
        rates.sort_by(f64::total_cmp);
        let median = rates[1];
        println!(
            "workers={workers}: {median:>9.0} events/s (median of 3; min {:.0}, max {:.0})   target >= {TARGET:.0}   {}",
            rates[0],
            rates[2],
            if median >= TARGET {
                "ok"
            } else {
                "BELOW TARGET"
            }
        );
    }
}
