//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different subset of the helpers

#[cfg(feature = "cli")]
pub mod cli;
pub mod db;
#[cfg(feature = "rabbitmq")]
pub mod django;
pub mod entities;
pub mod faults;
pub mod hostile;
pub mod http;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;
#[cfg(feature = "redis")]
pub mod redis;
pub mod scenarios;
pub mod services;
#[cfg(any(feature = "rabbitmq-tls", feature = "redis-tls"))]
pub mod tls;

use std::future::Future;
use std::time::{Duration, Instant};

use cqrs_sync::{JsonObject, SignalType};
use serde_json::{Value, json};

/// Logs to the test writer (shown for failing tests), filtered by `RUST_LOG` (default warn).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// Log output kept in memory, to read what a test logged: give clones to
/// `tracing_subscriber::fmt().with_writer(move || capture.clone())`.
#[derive(Clone, Default)]
pub struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    /// What was written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(
            &self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
        .into_owned()
    }
}

/// A replica and a master of `author` on `config`, each connecting by its URL: one event goes
/// from the master's publisher to the replica. Returns the replica's transport.
pub async fn round_trip(config: &cqrs_sync::CqrsConfig) -> cqrs_sync::TransportHandle {
    use cqrs_sync::{CqrsSystem, CqrsSystemExt, MasterModel, MemoryTable, ReplicaModel};
    let table = MemoryTable::new();
    let replica = CqrsSystem::builder()
        .config(config.clone().with_queue(unique("by_url")))
        .replica(ReplicaModel::new("author", table.clone()))
        .start()
        .await
        .unwrap_or_else(|e| panic!("replica: {e}"));
    let transport = replica.transport().clone();
    let master = CqrsSystem::builder()
        .config(config.clone())
        .master(MasterModel::new("author"))
        .start()
        .await
        .unwrap_or_else(|e| panic!("master: {e}"));
    master
        .publisher()
        .save("author", row(1, 0, "by url"))
        .await
        .unwrap_or_else(|e| panic!("publish: {e}"));
    wait_until("the replica to apply", Duration::from_secs(30), || async {
        table.len() == 1
    })
    .await;
    master.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    replica.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    transport
}

/// A name unique to this test run, for queues.
pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{name}_{}_{nanos}", std::process::id())
}

/// Waits until `check` holds, polling; panics with `what` after `deadline`.
pub async fn wait_until<F, Fut>(what: &str, deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    while !check().await {
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A row as a master sends it.
pub fn row(id: i64, revision: i64, name: &str) -> JsonObject {
    let v = json!({
        "id": id,
        "name": name,
        "cqrs_revision": revision,
        "cqrs_updated": format!("2026-11-27 17:08:{:02}.{:06}+00:00", revision % 60, id % 1_000_000),
    });
    match v {
        Value::Object(map) => map,
        _ => unreachable!("json! of an object is an object"),
    }
}

/// An envelope body as bytes.
pub fn body(signal: SignalType, cqrs_id: &str, data: JsonObject) -> Vec<u8> {
    let envelope = cqrs_sync::Envelope::new(signal, cqrs_id, data);
    cqrs_sync::Codec::Json
        .encode(&envelope)
        .unwrap_or_else(|e| panic!("encode: {e}"))
}

/// Waits for the one dead letter of `cqrs_id` in `dlq` and checks it is a message that used up
/// `retries` retries: body with `retries` unchanged, the dead-letter routing key, the reason
/// `retries_exhausted` and an error header containing `error_part`.
pub async fn expect_retries_exhausted(
    transport: &cqrs_sync::TransportHandle,
    dlq: &str,
    cqrs_id: &str,
    retries: u32,
    error_part: &str,
) {
    use cqrs_sync::transport::{HEADER_ERROR, HEADER_REASON};
    let dead = cqrs_transports::conformance::collect(transport, dlq, 10, true).await;
    let seen = dead.wait_for(1, "dead letter").await;
    let letter = cqrs_sync::Codec::Json
        .decode(&seen[0].body, None)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        letter.retries, retries,
        "the dead letter keeps retries == max_retries"
    );
    assert_eq!(seen[0].routing_key, format!("cqrs.{dlq}.{cqrs_id}"));
    assert_eq!(
        seen[0].headers.get(HEADER_REASON).map(String::as_str),
        Some("retries_exhausted")
    );
    assert!(
        seen[0]
            .headers
            .get(HEADER_ERROR)
            .is_some_and(|e| e.contains(error_part)),
        "error header {:?} should contain {error_part:?}",
        seen[0].headers.get(HEADER_ERROR)
    );
}
