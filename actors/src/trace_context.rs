//! W3C trace context in message headers (feature `otel`).
//!
//! On the master, the span that is current where service code writes (the transaction's span
//! around a SeaORM `MasterTable` save, or around a [`Publisher`](crate::Publisher) call) is written into the message as `traceparent` (and `tracestate` when it has one). The
//! context is taken when the event is encoded, so an event that waits in an outbox and is
//! published later by the relay carries the context of the write, not of the relay.
//!
//! On the replica, the span of each event (`cqrs.envelope`, the span its apply, retry and dead
//! letter are recorded in) is made a child of the context its message carried. A message whose
//! `traceparent` is sampled gets its span at once, so that the trace of a write goes on to its
//! apply; events applied together in one batch keep one span each, each with its own remote
//! parent, rather than one batch span with links. Other messages get their span only when
//! something is recorded about them (see `EnvelopeSpan`), still with the carried context as
//! parent. A retry copy carries the context of the failed attempt's span, so the next attempt
//! is its child.
//!
//! Messages without the headers (django-cqrs peers, or a master without `otel`) are handled as
//! before: the span has no remote parent. Without the feature every function here is a no-op
//! and nothing of OpenTelemetry is compiled.

use tracing::Span;

use crate::transport::Headers;
#[cfg(feature = "otel")]
use crate::transport::{HEADER_TRACEPARENT, HEADER_TRACESTATE};

/// Longest `tracestate` taken from a message. W3C asks a receiver to propagate at least 512
/// characters and lets it drop a longer list; a hostile message cannot make every span of
/// the replica carry kilobytes of it.
#[cfg(feature = "otel")]
const TRACESTATE_MAX: usize = 512;

/// The role of a span on the message path, recorded as the OpenTelemetry messaging attribute
/// `messaging.operation.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The master hands the event to the broker.
    Send,
    /// The replica applies the event.
    Process,
}

impl Role {
    #[cfg(feature = "otel")]
    fn as_str(self) -> &'static str {
        match self {
            Role::Send => "send",
            Role::Process => "process",
        }
    }
}

/// The trace context of the span current at the call, as headers; empty when there is none
/// (no span, no OpenTelemetry layer, or the feature is off).
#[must_use]
pub(crate) fn current() -> Headers {
    of_span(&Span::current())
}

/// The trace context of `span`, as headers (see [`current`]).
#[cfg(feature = "otel")]
#[must_use]
pub(crate) fn of_span(span: &Span) -> Headers {
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    let mut headers = Headers::new();
    if span.is_disabled() {
        return headers;
    }
    TraceContextPropagator::new().inject_context(&span.context(), &mut Carrier(&mut headers));
    headers
}

/// The trace context of `span`, as headers: none without the feature `otel`.
#[cfg(not(feature = "otel"))]
#[must_use]
pub(crate) fn of_span(_span: &Span) -> Headers {
    Headers::new()
}

/// Makes `span` a child of the context carried by `headers`, if they carry a valid one, and
/// records its role. Call it before the span is first entered: OpenTelemetry starts the span
/// then, and its parent cannot change afterwards.
#[cfg(feature = "otel")]
pub(crate) fn adopt(span: &Span, headers: &Headers, role: Role) {
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    if span.is_disabled() {
        return;
    }
    span.set_attribute("messaging.operation.type", role.as_str());
    if !headers.contains_key(HEADER_TRACEPARENT) {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&Extract(headers));
    if !parent.span().span_context().is_valid() {
        return;
    }
    // Fails only when no OpenTelemetry layer records the span or it was entered already;
    // either way the span stays as it was, which is all a missing header would give.
    if let Err(e) = span.set_parent(parent) {
        tracing::debug!(error = %e, "the remote trace context could not be set as the span's parent");
    }
}

/// Makes `span` a child of the context in `headers`: nothing without the feature `otel`.
#[cfg(not(feature = "otel"))]
pub(crate) fn adopt(_span: &Span, _headers: &Headers, _role: Role) {}

/// Whether `headers` carry a trace context whose `traceparent` says it is sampled: the
/// replica then continues the trace with a span of its own for the message. A malformed one is
/// left to [`adopt`], which ignores it.
#[cfg(feature = "otel")]
#[must_use]
pub(crate) fn is_sampled(headers: &Headers) -> bool {
    headers
        .get(HEADER_TRACEPARENT)
        .and_then(|tp| tp.rsplit('-').next())
        .and_then(|flags| u8::from_str_radix(flags, 16).ok())
        .is_some_and(|flags| flags & 0x01 == 0x01)
}

/// Whether `headers` carry a sampled trace context: never without the feature `otel`.
#[cfg(not(feature = "otel"))]
#[must_use]
pub(crate) fn is_sampled(_headers: &Headers) -> bool {
    false
}

/// Headers as the propagator writes them.
#[cfg(feature = "otel")]
struct Carrier<'a>(&'a mut Headers);

#[cfg(feature = "otel")]
impl opentelemetry::propagation::Injector for Carrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        if !value.is_empty() {
            self.0.insert(key.to_owned(), value);
        }
    }
}

/// Headers of a message as the propagator reads them: only the two trace context headers,
/// and `tracestate` only while it is of a sane length.
#[cfg(feature = "otel")]
struct Extract<'a>(&'a Headers);

#[cfg(feature = "otel")]
impl opentelemetry::propagation::Extractor for Extract<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let value = self.0.get(key).map(String::as_str)?;
        match key {
            HEADER_TRACEPARENT => Some(value),
            HEADER_TRACESTATE if value.len() <= TRACESTATE_MAX => Some(value),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![HEADER_TRACEPARENT, HEADER_TRACESTATE]
    }
}

#[cfg(all(test, feature = "otel"))]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_is_read_and_a_long_tracestate_is_left_out() {
        let mut headers = Headers::new();
        headers.insert(
            HEADER_TRACEPARENT.to_owned(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
        );
        headers.insert(HEADER_TRACESTATE.to_owned(), "a=".repeat(400));
        let extract = Extract(&headers);
        use opentelemetry::propagation::Extractor;
        assert!(extract.get(HEADER_TRACEPARENT).is_some());
        assert_eq!(extract.get(HEADER_TRACESTATE), None);
        assert_eq!(extract.get("x-other"), None);
    }

    #[test]
    fn only_a_sampled_traceparent_asks_for_a_span_at_once() {
        let with = |tp: &str| {
            let mut headers = Headers::new();
            headers.insert(HEADER_TRACEPARENT.to_owned(), tp.to_owned());
            headers
        };
        let id = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7";
        assert!(is_sampled(&with(&format!("{id}-01"))));
        assert!(is_sampled(&with(&format!("{id}-03"))));
        assert!(!is_sampled(&with(&format!("{id}-00"))));
        assert!(!is_sampled(&with(&format!("{id}-zz"))));
        assert!(!is_sampled(&with("")));
        assert!(!is_sampled(&Headers::new()));
    }

    #[test]
    fn no_span_gives_no_headers() {
        assert!(of_span(&Span::none()).is_empty());
        assert!(current().is_empty());
    }
}
