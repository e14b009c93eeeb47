//! A master and a replica in one process on the in-memory transport: no services needed.
//!
//! The master keeps its `author` rows in memory and publishes every change; the replica keeps
//! its copy in a [`MemoryTable`]. At the end both tables are printed side by side.
//!
//! ```text
//! cargo run --example quickstart
//! ```

#![allow(clippy::print_stdout)] // an example's job is to print its result

use std::collections::BTreeMap;
use std::time::Duration;

use cqrs_sync::prelude::*;
use cqrs_sync::values::format_datetime;
use serde_json::{Value, json};

/// The master's table: id → (revision, name, email).
type MasterTable = BTreeMap<i64, (i64, String, String)>;

fn instance_data(id: i64, revision: i64, name: &str, email: &str) -> JsonObject {
    let now = chrono::Utc::now();
    match json!({"id": id, "name": name, "email": email, "cqrs_revision": revision, "cqrs_updated": format_datetime(&now)})
    {
        Value::Object(map) => map,
        _ => JsonObject::new(),
    }
}

#[actix::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();

    let (transport, _broker) = MemoryBroker::default().start_transport();
    let replica_table = MemoryTable::new();
    let config = CqrsConfig::default().with_queue("quickstart_replica");
    let system = CqrsSystem::builder()
        .config(config)
        .master(MasterModel::new("author"))
        .replica(ReplicaModel::new("author", replica_table.clone()))
        .transport(transport)
        .start()
        .await?;
    let publisher = system.publisher();

    // The master service: create, update and delete rows, publishing each committed change.
    let mut master: MasterTable = BTreeMap::new();
    let people = [
        ("Ada Lovelace", "ada@example.com"),
        ("Alan Turing", "alan@example.com"),
        ("Grace Hopper", "grace@example.com"),
        ("Edsger Dijkstra", "edsger@example.com"),
        ("Barbara Liskov", "barbara@example.com"),
    ];
    for (id, (name, email)) in (1..).zip(people) {
        master.insert(id, (0, name.to_owned(), email.to_owned()));
        publisher
            .save("author", instance_data(id, 0, name, email))
            .await?;
    }
    for (id, new_name) in [
        (1, "Ada King, Countess of Lovelace"),
        (3, "Rear Admiral Grace Hopper"),
        (1, "Augusta Ada King"),
    ] {
        if let Some((revision, name, email)) = master.get_mut(&id) {
            *revision += 1;
            *name = new_name.to_owned();
            publisher
                .save("author", instance_data(id, *revision, name, email))
                .await?;
        }
    }
    if let Some((revision, _, _)) = master.remove(&4) {
        publisher
            .delete("author", Value::from(4), revision + 1, chrono::Utc::now())
            .await?;
    }

    // Every publish above is confirmed; wait until the replica queue is drained and acknowledged.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = system.transport().inspect("quickstart_replica").await?;
        if (stats.ready, stats.unacked) == (0, 0) || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    system.settle().await?;
    let replica = replica_table.snapshot();

    println!(
        "{:<4} {:<34} {:>4}   | {:<34} {:>4}",
        "id", "master name", "rev", "replica name", "rev"
    );
    let mut ids: Vec<String> = master.keys().map(ToString::to_string).collect();
    ids.extend(
        replica
            .keys()
            .filter(|k| !master.contains_key(&k.parse::<i64>().unwrap_or(-1)))
            .cloned(),
    );
    let mut matches = true;
    for id in ids {
        let m = id.parse::<i64>().ok().and_then(|k| master.get(&k));
        let r = replica.get(&id);
        let (mn, mr) = m.map_or(("-".to_owned(), "-".to_owned()), |(rev, name, _)| {
            (name.clone(), rev.to_string())
        });
        let (rn, rr) = r.map_or(("-".to_owned(), "-".to_owned()), |row| {
            (
                row.data
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_owned(),
                row.revision.to_string(),
            )
        });
        matches &= mn == rn && mr == rr;
        println!("{id:<4} {mn:<34} {mr:>4}   | {rn:<34} {rr:>4}");
    }
    let metrics = system.metrics();
    println!(
        "\npublished {}, received {}, applied {}, skipped {}, dead-lettered {}",
        metrics.published,
        metrics.received,
        metrics.applied,
        metrics.skipped,
        metrics.dead_lettered
    );
    println!("tables match: {}", if matches { "yes" } else { "NO" });
    system.shutdown().await?;
    if !matches {
        return Err("the replica does not match the master".into());
    }
    Ok(())
}
