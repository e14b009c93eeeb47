//! The Prometheus endpoint scraped over HTTP: `/metrics` parsed after a known scenario (the
//! counters per CQRS id and the lag histogram's buckets), `/healthz` and `/readyz` as JSON,
//! and what the endpoint answers to requests it does not serve.
//!
//! One test in its own binary: the recorder is the process's.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use chrono::Utc;
use cqrs_sync::transport::{Headers, OutgoingMessage};
use cqrs_sync::transports::memory::MemoryBroker;
use cqrs_sync::{
    CqrsConfig, CqrsSystemBuilder, MemoryTable, ReplicaModel, Route, SignalType, values,
};
use serde_json::json;
use support::http::{Response, request};
use support::{body, unique, wait_until};

/// One sample of the exposition format: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the text exposition format (comments skipped; label values without escapes, as
/// ours are).
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("no value: {line}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|e| panic!("value of {line}: {e}"));
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), BTreeMap::new()),
                Some((name, rest)) => {
                    let inner = rest
                        .strip_suffix('}')
                        .unwrap_or_else(|| panic!("labels of {line}"));
                    let labels = inner
                        .split(',')
                        .filter(|p| !p.is_empty())
                        .map(|pair| {
                            let (k, v) = pair
                                .split_once('=')
                                .unwrap_or_else(|| panic!("label {pair} of {line}"));
                            (k.to_owned(), v.trim_matches('"').to_owned())
                        })
                        .collect();
                    (name.to_owned(), labels)
                }
            };
            (name, labels, value)
        })
        .collect()
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
}

async fn get(addr: SocketAddr, method: &'static str, path: &'static str) -> Response {
    tokio::task::spawn_blocking(move || request(addr, method, path, None))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

#[actix_rt::test]
async fn the_endpoint_is_scraped_and_parsed_after_a_known_scenario() {
    support::init_tracing();
    let recorder = cqrs_sync::prometheus::install().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        cqrs_sync::prometheus::install().is_err(),
        "a second recorder is refused"
    );
    let (transport, _broker) = MemoryBroker::default().start_transport();
    let system = CqrsSystemBuilder::new()
        .config(CqrsConfig::default().with_queue(unique("scraped")))
        .replica(ReplicaModel::new("author", MemoryTable::new()))
        .transport(transport.clone())
        .start()
        .await
        .unwrap_or_else(|e| panic!("start: {e}"));
    let endpoint = cqrs_sync::prometheus::serve("127.0.0.1:0", recorder, system.health_probe())
        .await
        .unwrap_or_else(|e| panic!("serve: {e}"));
    let addr = endpoint.local_addr();

    // Created, updated, then the update again (a duplicate).
    for revision in [0, 1, 1] {
        let data = json!({
            "id": 1, "name": "n", "cqrs_revision": revision,
            "cqrs_updated": values::format_datetime(&Utc::now()),
        });
        let serde_json::Value::Object(data) = data else {
            unreachable!("an object")
        };
        transport
            .publish(OutgoingMessage {
                route: Route::broadcast("author"),
                body: body(SignalType::Save, "author", data),
                content_type: "text/plain".to_owned(),
                headers: Headers::new(),
                expiration: None,
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        wait_until("settled", Duration::from_secs(20), || {
            let m = system.metrics().id("author");
            async move { m.in_flight == 0 && m.received > 0 }
        })
        .await;
    }
    system.wait_idle().await.unwrap_or_else(|e| panic!("{e}"));
    system.sample().await;

    let scraped = get(addr, "GET", "/metrics").await;
    assert_eq!(scraped.status, 200, "{}", scraped.body);
    assert!(
        scraped
            .body
            .contains("# HELP cqrs_replication_lag_seconds replica commit time minus"),
        "described"
    );
    let samples = parse(&scraped.body);
    let author = [("cqrs_id", "author")];
    assert_eq!(
        value(&samples, "cqrs_events_received_total", &author),
        Some(3.0)
    );
    assert_eq!(
        value(&samples, "cqrs_events_applied_total", &author),
        Some(2.0)
    );
    assert_eq!(
        value(&samples, "cqrs_events_ignored_duplicate_total", &author),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "cqrs_events_dead_lettered_total", &author),
        Some(0.0)
    );
    assert_eq!(
        value(&samples, "cqrs_replication_lag_seconds_count", &author),
        Some(2.0)
    );
    let buckets: Vec<(f64, f64)> = samples
        .iter()
        .filter(|(n, l, _)| {
            n == "cqrs_replication_lag_seconds_bucket"
                && l.get("cqrs_id").map(String::as_str) == Some("author")
        })
        .map(|(_, l, v)| {
            let le = l.get("le").map_or(f64::NAN, |le| {
                if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::NAN)
                }
            });
            (le, *v)
        })
        .collect();
    assert_eq!(
        buckets.len(),
        cqrs_sync::stats::SECONDS_BUCKETS.len() + 1,
        "{buckets:?}"
    );
    assert!(
        buckets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
        "cumulative buckets in order: {buckets:?}"
    );
    assert_eq!(buckets.last().map(|b| b.1), Some(2.0));
    assert!(
        value(&samples, "cqrs_apply_batch_size_count", &author).is_some_and(|n| n >= 1.0),
        "batch sizes recorded"
    );
    assert!(
        samples
            .iter()
            .any(|(n, l, _)| n == "cqrs_queue_ready" && l.contains_key("queue")),
        "the sampled queue gauge"
    );

    for path in ["/healthz", "/readyz"] {
        let probe = get(addr, "GET", path).await;
        let body = probe.expect(200);
        assert_eq!(body["status"], "ok", "{path}: {body}");
        assert_eq!(body["checks"][0]["name"], "transport");
    }
    assert_eq!(get(addr, "GET", "/nothing").await.status, 404);
    assert_eq!(get(addr, "POST", "/metrics").await.status, 405);

    drop(endpoint);
    system.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
}
