//! Tracing: one span per envelope with the fields of STYLE.md and lifecycle events named after
//! django-cqrs's log lines (the figures are in [`stats`](crate::stats)).

use tracing::Span;

use crate::envelope::Envelope;
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
