//! OpenTelemetry export of the framework's spans (feature `otel`).
//!
//! With the feature on, every message carries the W3C trace context of the span that was
//! current where the master wrote it (`traceparent`, and `tracestate` when not empty), and the
//! replica's span for the event (`cqrs.envelope`) is a child of it: one trace runs from the
//! master's write to the replica's apply, through an outbox too. That needs an OpenTelemetry
//! layer in the service's `tracing` subscriber; [`otlp_layer`] builds one that sends spans to
//! an OTLP collector over HTTP.
//!
//! Services that already run an OpenTelemetry pipeline use their own
//! `tracing_opentelemetry` layer instead: the trace context works with any of them.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};
use tracing_opentelemetry::OpenTelemetryLayer;

use crate::{Error, ErrorKind, Result};

/// The layer [`otlp_layer`] returns, for a subscriber `S` (a `tracing_subscriber` registry).
pub type OtlpLayer<S> = OpenTelemetryLayer<S, Tracer>;

/// Keeps the OTLP export running; dropping it sends the spans still buffered and stops the
/// export. Hold it until the service exits (as `tracing-appender`'s guard is held).
#[must_use = "dropping the guard stops the export"]
pub struct OtlpGuard {
    provider: SdkTracerProvider,
}

impl std::fmt::Debug for OtlpGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpGuard").finish_non_exhaustive()
    }
}

impl OtlpGuard {
    /// The tracer provider behind the layer, for instrumentation that is not `tracing`.
    #[must_use]
    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }
}

impl Drop for OtlpGuard {
    fn drop(&mut self) {
        // A collector that is away loses these spans; the service still stops.
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "the last spans could not be exported");
        }
    }
}

/// A `tracing` layer that exports spans to the OTLP collector at `endpoint` (the full traces
/// URL, such as `http://localhost:4318/v1/traces`: HTTP with protobuf bodies, no TLS), as the
/// service `service_name`, in batches from a thread of its own.
///
/// Fails with [`ErrorKind::Config`] when the exporter cannot be built (an endpoint that is not
/// a URL). A collector that is down is not an error here: spans are dropped while it is away.
///
/// ```no_run
/// use tracing_subscriber::layer::SubscriberExt;
/// use tracing_subscriber::util::SubscriberInitExt;
///
/// # fn main() -> cqrs_sync::Result<()> {
/// let (otlp, _guard) =
///     cqrs_sync::otel::otlp_layer("http://localhost:4318/v1/traces", "orders-service")?;
/// tracing_subscriber::registry().with(otlp).init();
/// // ... start the CqrsSystem and serve; `_guard` flushes the spans when the service exits.
/// # Ok(())
/// # }
/// ```
pub fn otlp_layer<S>(endpoint: &str, service_name: &str) -> Result<(OtlpLayer<S>, OtlpGuard)>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let exporter = SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| {
            Error::with_source(
                ErrorKind::Config,
                format!("otel: the OTLP exporter for {endpoint:?} cannot be built: {e}"),
                e,
            )
        })?;
    let provider = SdkTracerProvider::builder()
        .with_resource(
            Resource::builder()
                .with_service_name(service_name.to_owned())
                .build(),
        )
        .with_batch_exporter(exporter)
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("cqrs-sync"));
    Ok((layer, OtlpGuard { provider }))
}
