//! W3C trace context from the master's write to the replica's apply (feature `otel`), over the
//! real RabbitMQ and Redis: the span current where service code writes travels as
//! `traceparent`, directly or through a SeaORM outbox on PostgreSQL relayed later, and the
//! replica's span for the event is its child in the same trace. A message without the header
//! is applied as before, in a trace of its own. `otel::otlp_layer` sends spans to a stand-in
//! collector on the loopback.
//!
//! Spans are recorded by an exporter that keeps them in memory ([`Recorded`]); each test finds
//! its own by the trace id of its write span, so the tests can share the one global subscriber.

// A failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use cqrs_sync::orm::{MasterTable, Outbox};
use cqrs_sync::transport::HEADER_TRACEPARENT;
use cqrs_sync::{
    Applied, CqrsConfig, CqrsSystem, CqrsSystemExt, Error, MasterModel, MemoryTable, ReplicaEvent,
    ReplicaModel, RetryPolicy, TransportHandle, handler_fn,
};
use opentelemetry::trace::{SpanId, TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use sea_orm::ActiveValue::Set;
use support::db::{Backend, TestDb};
use support::entities::author;
use support::{row, unique, wait_until};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;

const PATIENCE: Duration = Duration::from_secs(60);

/// The spans ended so far. Written here rather than taken from the SDK's in-memory exporter,
/// which sits behind its `testing` feature (metrics and logs with it): as a dev-dependency it
/// would be compiled into every test build, `otel` or not.
#[derive(Debug, Clone, Default)]
struct Recorded(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Recorded {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(batch);
        std::future::ready(Ok(()))
    }
}

impl Recorded {
    /// The ended spans of one trace.
    fn of_trace(&self, trace: TraceId) -> Vec<SpanData> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|s| s.span_context.trace_id() == trace)
            .cloned()
            .collect()
    }

    /// Every ended span.
    fn all(&self) -> Vec<SpanData> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The recorder behind the global subscriber: OpenTelemetry for every span, plus warnings to
/// the test writer.
fn recorded() -> &'static Recorded {
    static RECORDED: OnceLock<(Recorded, SdkTracerProvider)> = OnceLock::new();
    let (recorded, _) = RECORDED.get_or_init(|| {
        let recorded = Recorded::default();
        // Each span is exported as it ends, so a test sees it without a flush.
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(recorded.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("trace_context")))
            .with(
                tracing_subscriber::fmt::layer()
                    .with_test_writer()
                    .with_filter(tracing_subscriber::EnvFilter::new("warn")),
            );
        tracing::subscriber::set_global_default(subscriber).unwrap();
        (recorded, provider)
    });
    recorded
}

/// The value of a string attribute.
fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

/// The `cqrs.envelope` spans of `trace` with the role `operation` (`send` or `process`).
fn envelope_spans(trace: TraceId, operation: &str) -> Vec<SpanData> {
    recorded()
        .of_trace(trace)
        .into_iter()
        .filter(|s| {
            s.name == "cqrs.envelope"
                && attribute(s, "messaging.operation.type").as_deref() == Some(operation)
        })
        .collect()
}

/// A span standing for the transaction service code writes in; its trace and span id.
fn write_span(name: &str) -> (tracing::Span, TraceId, SpanId) {
    recorded();
    let span = tracing::info_span!("service.write", what = name);
    let cx = span.context();
    let context = cx.span().span_context().clone();
    assert!(context.is_valid(), "the write span is recorded");
    (span, context.trace_id(), context.span_id())
}

/// Waits until the replica processed an event in `trace`, and checks that its span is a child
/// of the write span `parent`, taken from the message (remote).
async fn replica_span_is_child_of(trace: TraceId, parent: SpanId) -> SpanData {
    wait_until(
        "the replica's span in the write's trace",
        PATIENCE,
        || async { !envelope_spans(trace, "process").is_empty() },
    )
    .await;
    let spans = envelope_spans(trace, "process");
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let span = spans.into_iter().next().unwrap();
    assert_eq!(span.parent_span_id, parent, "{span:#?}");
    assert!(span.parent_span_is_remote, "the parent came in the message");
    assert_eq!(attribute(&span, "cqrs_id").as_deref(), Some("author"));
    span
}

/// A replica of `author` into a memory table, and a master publishing by hand, on `transport`
/// built from `config`.
async fn systems(
    transport: &TransportHandle,
    config: &CqrsConfig,
) -> (CqrsSystem, CqrsSystem, MemoryTable) {
    let table = MemoryTable::new();
    let replica = CqrsSystem::builder()
        .config(config.clone().with_queue(unique("trace_replica")))
        .replica(ReplicaModel::new("author", table.clone()))
        .transport(transport.clone())
        .start()
        .await
        .unwrap();
    let master = CqrsSystem::builder()
        .config(config.clone())
        .master(MasterModel::new("author"))
        .transport(transport.clone())
        .start()
        .await
        .unwrap();
    (replica, master, table)
}

/// A save published inside a write span is applied in that span's trace, as a child of it,
/// after the master's own send span (also its child); a save published outside any span
/// carries no header and is applied in a trace of its own.
async fn publish_carries_the_writes_context(transport: &TransportHandle, config: &CqrsConfig) {
    let (replica, master, table) = systems(transport, config).await;
    let publisher = master.publisher();

    let (write, trace, write_id) = write_span("publish");
    async { publisher.save("author", row(1, 0, "traced")).await }
        .instrument(write.clone())
        .await
        .unwrap();
    drop(write);
    let applied = replica_span_is_child_of(trace, write_id).await;
    let sends = envelope_spans(trace, "send");
    assert_eq!(sends.len(), 1, "the master's publish span: {sends:#?}");
    assert_eq!(sends[0].parent_span_id, write_id);
    assert_ne!(
        applied.span_context.span_id(),
        sends[0].span_context.span_id()
    );

    // No span, no header: applied as before, its span the root of a trace of its own.
    publisher
        .save("author", row(2, 0, "untraced"))
        .await
        .unwrap();
    wait_until("the untraced save is applied", PATIENCE, || async {
        table.get("2").is_some()
    })
    .await;
    wait_until("the untraced event's span ended", PATIENCE, || async {
        recorded().all().iter().any(|s| {
            s.name == "cqrs.envelope"
                && attribute(s, "messaging.operation.type").as_deref() == Some("process")
                && attribute(s, "pk").as_deref() == Some("2")
        })
    })
    .await;
    let untraced: Vec<_> = recorded()
        .all()
        .into_iter()
        .filter(|s| s.name == "cqrs.envelope" && attribute(s, "pk").as_deref() == Some("2"))
        .collect();
    for span in &untraced {
        assert_ne!(span.span_context.trace_id(), trace);
        assert_eq!(span.parent_span_id, SpanId::INVALID, "{span:#?}");
    }
    assert!(table.get("1").is_some());

    for s in [replica, master] {
        s.shutdown().await.unwrap();
    }
}

#[actix_rt::test]
async fn a_publish_is_applied_in_the_writes_trace_over_rabbitmq() {
    let vhost = support::rabbitmq::Vhost::create("cqrs_trace");
    let (transport, _addr) = support::rabbitmq::connect(vhost.config()).await;
    publish_carries_the_writes_context(&transport, &CqrsConfig::default()).await;
}

#[actix_rt::test]
async fn a_publish_is_applied_in_the_writes_trace_over_redis() {
    let space = support::redis::Space::create("cqrs_trace");
    let (transport, _addr) = support::redis::connect(space.config()).await;
    publish_carries_the_writes_context(&transport, &space.service_config()).await;
}

/// A SeaORM master writes in a span while the relay is held off: the outbox row keeps the
/// write's `traceparent` (read back from the table), and once the relay publishes it, long
/// after the write span ended, the replica applies it as that span's child.
#[actix_rt::test]
async fn an_outbox_event_relayed_later_keeps_the_writes_trace_over_rabbitmq() {
    recorded();
    let vhost = support::rabbitmq::Vhost::create("cqrs_trace_outbox");
    let (transport, _addr) = support::rabbitmq::connect(vhost.config()).await;
    let t = TestDb::new(Backend::Postgres, "trace_outbox").await;
    t.create(author::Entity).await;
    let outbox = Outbox::with_table(t.db.clone(), unique("outbox"));
    outbox.create_table().await.unwrap();
    let authors = MasterTable::new("author", author::Entity, &outbox).unwrap();
    let table = MemoryTable::new();
    let replica = CqrsSystem::builder()
        .config(CqrsConfig::default().with_queue(unique("trace_outbox_replica")))
        .replica(ReplicaModel::new("author", table.clone()))
        .transport(transport.clone())
        .start()
        .await
        .unwrap();
    // Held by an inspector, the outbox is not relayed until it lets go.
    let held = outbox
        .store()
        .lease("inspector", Duration::from_secs(3_600))
        .await
        .unwrap();
    assert!(held);
    let master = CqrsSystem::builder()
        .master(&authors)
        .transport(transport.clone())
        .start()
        .await
        .unwrap();

    let (write, trace, write_id) = write_span("outbox");
    let created = async {
        authors
            .insert(
                &t.db,
                author::ActiveModel {
                    name: Set("through the outbox".to_owned()),
                    ..Default::default()
                },
            )
            .await
    }
    .instrument(write.clone())
    .await
    .unwrap();
    drop(write);

    let stored = outbox.read(0, 10).await.unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    let traceparent = stored[0].event.headers.get(HEADER_TRACEPARENT).unwrap();
    assert_eq!(
        traceparent,
        &format!("00-{trace}-{write_id}-01"),
        "the outbox row keeps the write's context"
    );

    outbox.store().release("inspector").await.unwrap();
    outbox.wake();
    let applied = replica_span_is_child_of(trace, write_id).await;
    assert_eq!(
        attribute(&applied, "pk").as_deref(),
        Some(created.id.to_string().as_str())
    );
    assert!(table.get(&created.id.to_string()).is_some());
    master.flush().await.unwrap();
    assert_eq!(outbox.pending().await.unwrap(), 0);
    for s in [replica, master] {
        s.shutdown().await.unwrap();
    }
    t.cleanup().await;
}

/// An event whose first apply fails is parked and applied again; the retry copy carries the
/// failed attempt's context, so the second attempt's span is a child of the first, in the
/// write's trace.
#[actix_rt::test]
async fn a_retried_event_stays_in_the_writes_trace_over_rabbitmq() {
    recorded();
    let vhost = support::rabbitmq::Vhost::create("cqrs_trace_retry");
    let (transport, _addr) = support::rabbitmq::connect(vhost.config()).await;
    let attempts = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&attempts);
    let system = CqrsSystem::builder()
        .config(CqrsConfig::default().with_queue(unique("trace_retry")))
        .replica(
            ReplicaModel::new(
                "author",
                handler_fn(move |_: ReplicaEvent| {
                    let first = counter.fetch_add(1, Ordering::SeqCst) == 0;
                    async move {
                        if first {
                            Err(Error::handler("the replica database is read-only"))
                        } else {
                            Ok(Applied::Created)
                        }
                    }
                }),
            )
            .with_retry_policy(RetryPolicy::constant(3, Duration::from_secs(1))),
        )
        .master(MasterModel::new("author"))
        .transport(transport.clone())
        .start()
        .await
        .unwrap();
    let publisher = system.publisher();
    let (write, trace, write_id) = write_span("retry");
    async { publisher.save("author", row(1, 0, "retried")).await }
        .instrument(write.clone())
        .await
        .unwrap();
    drop(write);
    wait_until("both attempts' spans ended", PATIENCE, || async {
        envelope_spans(trace, "process").len() == 2
    })
    .await;
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    let spans = envelope_spans(trace, "process");
    let first = spans
        .iter()
        .find(|s| s.parent_span_id == write_id)
        .unwrap_or_else(|| panic!("the first attempt is the write's child: {spans:#?}"));
    let second = spans
        .iter()
        .find(|s| s.parent_span_id == first.span_context.span_id())
        .unwrap_or_else(|| panic!("the second attempt is the first's child: {spans:#?}"));
    assert!(second.parent_span_is_remote);
    assert_eq!(attribute(second, "retries").as_deref(), Some("1"));
    system.shutdown().await.unwrap();
}

/// One HTTP request taken by a stand-in collector on `listener`: its head as text and its
/// body, answered with 200. Gives up after 30 s.
fn collect_one(listener: std::net::TcpListener) -> (String, Vec<u8>) {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    listener.set_nonblocking(true).unwrap();
    let mut stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(std::time::Instant::now() < deadline, "no export came");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the exporter closed before its request ended");
        received.extend_from_slice(&buf[..n]);
        if let Some(i) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no content-length: {head}"));
    while received.len() < head_end + length {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the exporter closed before its body ended");
        received.extend_from_slice(&buf[..n]);
    }
    stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .unwrap();
    (head, received[head_end..head_end + length].to_vec())
}

/// `otel::otlp_layer` sends the spans to the collector as OTLP over HTTP with protobuf bodies,
/// when its guard is dropped at the latest, from inside an actix runtime as a service would.
#[actix_rt::test]
async fn otlp_layer_exports_to_a_collector() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let collector = std::thread::spawn(move || collect_one(listener));
    let (layer, guard) =
        cqrs_sync::otel::otlp_layer(&format!("http://{addr}/v1/traces"), "trace-context-test")
            .unwrap();
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        tracing::info_span!("exported_span").in_scope(|| {});
    });
    drop(guard);
    let (head, body) = collector.join().unwrap();
    assert!(head.starts_with("POST /v1/traces "), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/x-protobuf"),
        "{head}"
    );
    let contains = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    assert!(contains(b"exported_span"), "the span is in the export");
    assert!(contains(b"trace-context-test"), "so is the service name");
}

#[test]
fn otlp_layer_refuses_an_endpoint_that_is_not_a_url() {
    let err = cqrs_sync::otel::otlp_layer::<tracing_subscriber::Registry>("not a url", "x")
        .err()
        .unwrap();
    assert_eq!(err.kind(), cqrs_sync::ErrorKind::Config);
}
