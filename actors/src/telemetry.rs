//! Tracing: one span per envelope with the fields of STYLE.md and lifecycle events named after
//! django-cqrs's log lines (the figures are in [`stats`](crate::stats)).

use std::sync::OnceLock;

use tracing::Span;

use crate::envelope::Envelope;
use crate::trace_context::{self, Role};
use crate::transport::Headers;
use crate::values;

/// The span every log line about one message is recorded in. Its text fields (`cqrs_id`, `pk`,
/// `correlation_id`) are excerpts of at most [`values::EXCERPT_MAX`] bytes, whatever the
/// message carried.
#[must_use]
pub fn envelope_span(envelope: &Envelope) -> Span {
    tracing::info_span!(
        "cqrs.envelope",
        cqrs_id = %values::excerpt(&envelope.cqrs_id),
        pk = %values::excerpt(&envelope.pk_text()),
        signal = %envelope.signal_type,
        revision = envelope.revision(),
        retries = envelope.retries,
        correlation_id = envelope
            .correlation_id
            .as_deref()
            .map(|c| tracing::field::display(values::excerpt(c))),
    )
}

/// The master's span around one publish, at DEBUG: one span per event on both sides of the
/// broker costs a busy master a third of its rate, while the trace of a write already goes from
/// its own span to the replica's [`envelope_span`] through the headers. Turn it on with a
/// filter like `cqrs_actors=debug` to see publish and confirm in the trace.
#[must_use]
pub(crate) fn send_span(envelope: &Envelope) -> Span {
    tracing::debug_span!(
        "cqrs.envelope",
        cqrs_id = %values::excerpt(&envelope.cqrs_id),
        pk = %values::excerpt(&envelope.pk_text()),
        signal = %envelope.signal_type,
        revision = envelope.revision(),
    )
}

/// The [`envelope_span`] of one message on the replica, made the first time something is
/// recorded in it.
///
/// Most messages apply with nothing recorded about them at `info`: making their span anyway
/// would cost a subscriber (formatting its fields, an OpenTelemetry span built and ended) more
/// than the rest of the message's way through the replica. The span is made at once only when
/// the message carries a sampled trace context, so that a traced write is followed by its
/// apply; otherwise when a log line about the message is written (a debug line, a stale or
/// duplicate message, a failure, a retry, a dead letter), with the carried context as its
/// parent. The apply of each batch has its own `cqrs.batch` span.
pub(crate) struct EnvelopeSpan {
    span: OnceLock<Span>,
    /// The message's headers, for the trace context they may carry.
    headers: Headers,
}

impl EnvelopeSpan {
    /// The span of `envelope`, whose message came with `headers`: made now if they carry a
    /// sampled trace context, else on first use.
    pub(crate) fn new(envelope: &Envelope, headers: Headers) -> Self {
        let this = Self {
            span: OnceLock::new(),
            headers,
        };
        if trace_context::is_sampled(&this.headers) {
            this.get(envelope);
        }
        this
    }

    /// The span of `envelope` (the envelope this was made for), made now if it was not yet.
    pub(crate) fn get(&self, envelope: &Envelope) -> &Span {
        self.span.get_or_init(|| {
            let span = envelope_span(envelope);
            trace_context::adopt(&span, &self.headers, Role::Process);
            span
        })
    }
}
