//! Retrier: decides between a parked retry and a dead letter (per-CQRS-id [`RetryPolicy`]),
//! parks the copy with `retries + 1` without holding the delivery, and acknowledges the
//! original only once the copy is durable. A copy that cannot be parked hands the delivery
//! back after a pause ([`HandBack`](super::HandBack)).
//!
//! [`RetryPolicy`]: crate::RetryPolicy

use std::sync::Arc;

use actix::prelude::*;

use super::{
    DeadLetterRequest, DeadLetterer, Drain, HandBack, IdleWaiters, Incoming, ReplicaShared,
};
use crate::error::Error;
use crate::retry::RetryDecision;
use crate::stats::Outcome;
use crate::trace_context;
use crate::transport::{OutgoingMessage, Route, Settlement};

/// A message whose apply failed.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct RetryRequest {
    pub incoming: Incoming,
    pub error: Error,
}

pub(crate) struct Retrier {
    shared: Arc<ReplicaShared>,
    dead_letters: Addr<DeadLetterer>,
    in_flight: usize,
    idle: IdleWaiters,
    /// The pauses before handing back what could not be published, this actor's own: a
    /// success of the other kind of publish must not reset them.
    hand_back: Arc<HandBack>,
}

impl Retrier {
    pub fn new(shared: Arc<ReplicaShared>, dead_letters: Addr<DeadLetterer>) -> Self {
        Self {
            shared,
            dead_letters,
            in_flight: 0,
            idle: IdleWaiters::default(),
            hand_back: Arc::default(),
        }
    }
}

impl Actor for Retrier {
    type Context = Context<Self>;
}

impl Handler<RetryRequest> for Retrier {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, req: RetryRequest, _: &mut Context<Self>) -> Self::Result {
        self.in_flight += 1;
        let shared = Arc::clone(&self.shared);
        let hand_back = Arc::clone(&self.hand_back);
        let dead_letters = self.dead_letters.clone();
        let incoming = req.incoming;
        let error = req.error;
        let decision = shared
            .retry_policy(incoming.event.cqrs_id())
            .decide(incoming.event.envelope().retries, &error);
        let fut = async move {
            let (tag, codec, span) = (
                incoming.delivered.tag,
                incoming.delivered.codec,
                incoming.span().clone(),
            );
            let envelope = incoming.event.envelope();
            match decision {
                RetryDecision::Retry { delay } => {
                    let copy = envelope.next_retry();
                    let body = match codec.encode(&copy) {
                        Ok(body) => body,
                        Err(e) => {
                            let request = dead_letter(incoming, "invalid_data", e.to_string());
                            send_dead_letter(&shared, &dead_letters, request).await;
                            return;
                        }
                    };
                    let message = OutgoingMessage {
                        route: Route::queue(shared.queue.clone(), envelope.cqrs_id.clone()),
                        body,
                        content_type: codec.content_type().to_owned(),
                        // The next attempt's span is a child of this one's.
                        headers: trace_context::of_span(&span),
                        expiration: None,
                    };
                    let park = || shared.transport.park(message.clone(), delay);
                    match shared.publish_redeclaring("retry copy", park).await {
                        Ok(()) => {
                            hand_back.succeeded();
                            span.in_scope(|| {
                                tracing::warn!(event = "retried", error = %error, delay_ms = delay.as_millis() as u64, next_retries = copy.retries, "CQRS is delayed");
                            });
                            shared.metrics.count(&copy.cqrs_id, Outcome::Retried, 1);
                            if let Err(e) =
                                shared.transport.settle(vec![tag], Settlement::Ack).await
                            {
                                span.in_scope(|| tracing::warn!(error = %e, "ack after park failed; the message will be redelivered"));
                            }
                        }
                        Err(e) => {
                            shared.metrics.count(&copy.cqrs_id, Outcome::Requeued, 1);
                            hand_back
                                .after_failure(&shared.transport, tag, "retry copy", &e, &span)
                                .await;
                        }
                    }
                }
                RetryDecision::DeadLetter { reason } => {
                    let request = dead_letter(incoming, reason, error.to_string());
                    send_dead_letter(&shared, &dead_letters, request).await;
                }
            }
        };
        Box::pin(fut.into_actor(self).map(|(), act, _| {
            act.in_flight -= 1;
            if act.in_flight == 0 {
                act.idle.notify();
            }
        }))
    }
}

/// Hands a dead letter to the DeadLetterer, or the delivery back if that actor is gone.
async fn send_dead_letter(
    shared: &ReplicaShared,
    dead_letters: &Addr<DeadLetterer>,
    request: DeadLetterRequest,
) {
    let tag = request.tag;
    let ids = super::id_counts(request.cqrs_id.as_deref());
    let sent = dead_letters.send(request).await;
    shared
        .hand_back_if_gone(vec![tag], ids, sent, "dead-letterer")
        .await;
}

/// The dead letter of a decoded message: the body as it was received (its `retries` unchanged).
pub(super) fn dead_letter(incoming: Incoming, reason: &str, error: String) -> DeadLetterRequest {
    let span = incoming.span().clone();
    DeadLetterRequest {
        tag: incoming.delivered.tag,
        cqrs_id: Some(incoming.event.cqrs_id().to_owned()),
        body: incoming.delivered.body,
        content_type: incoming.delivered.content_type,
        reason: reason.to_owned(),
        error,
        span,
    }
}

impl Handler<Drain> for Retrier {
    type Result = ResponseFuture<()>;

    /// Answers once nothing is in flight; a delivery held back after a failure is handed back
    /// at once.
    fn handle(&mut self, _: Drain, _: &mut Context<Self>) -> Self::Result {
        self.hand_back.hurry();
        self.idle.wait(self.in_flight == 0)
    }
}
