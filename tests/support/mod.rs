//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different subset of the helpers

pub mod db;
pub mod entities;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;

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
