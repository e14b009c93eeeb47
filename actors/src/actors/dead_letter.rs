//! DeadLetterer: publishes a message to the dead-letter queue with the reason in headers,
//! waits for the confirm, then acknowledges the original. A dead-letter queue deleted under a
//! running replica is declared again; a dead letter that cannot be published is handed back
//! after a pause ([`HandBack`](super::HandBack)).

use std::sync::Arc;

use actix::prelude::*;

use super::{Drain, HandBack, IdleWaiters, ReplicaShared};
use crate::stats::{OTHER_ID, Outcome};
use crate::transport::{
    DeliveryTag, HEADER_ERROR, HEADER_REASON, Headers, PublishDeadLetter, Settlement,
};

/// A message that ends in the dead-letter queue.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct DeadLetterRequest {
    pub tag: DeliveryTag,
    pub cqrs_id: Option<String>,
    pub body: Vec<u8>,
    pub content_type: Option<String>,
    pub reason: String,
    pub error: String,
    pub span: tracing::Span,
}

pub(crate) struct DeadLetterer {
    shared: Arc<ReplicaShared>,
    in_flight: usize,
    idle: IdleWaiters,
    /// The pauses before handing back what could not be published, this actor's own: a
    /// success of the other kind of publish must not reset them.
    hand_back: Arc<HandBack>,
}

impl DeadLetterer {
    pub fn new(shared: Arc<ReplicaShared>) -> Self {
        Self {
            shared,
            in_flight: 0,
            idle: IdleWaiters::default(),
            hand_back: Arc::default(),
        }
    }
}

impl Actor for DeadLetterer {
    type Context = Context<Self>;
}

impl Handler<DeadLetterRequest> for DeadLetterer {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, req: DeadLetterRequest, _: &mut Context<Self>) -> Self::Result {
        self.in_flight += 1;
        let shared = Arc::clone(&self.shared);
        let hand_back = Arc::clone(&self.hand_back);
        let fut = async move {
            let mut headers = Headers::new();
            headers.insert(HEADER_REASON.to_owned(), req.reason.clone());
            headers.insert(HEADER_ERROR.to_owned(), req.error.clone());
            let letter = || {
                shared.transport.dead_letter(PublishDeadLetter {
                    dead_letter_queue: shared.dead_letter_queue.clone(),
                    cqrs_id: req.cqrs_id.clone(),
                    body: req.body.clone(),
                    content_type: req.content_type.clone(),
                    headers: headers.clone(),
                    ttl: shared.config.replica().dead_message_ttl(),
                })
            };
            let span = &req.span;
            match shared.publish_redeclaring("dead letter", letter).await {
                Ok(()) => {
                    hand_back.succeeded();
                    span.in_scope(|| {
                        tracing::warn!(event = "dead_lettered", reason = %req.reason, error = %req.error, "CQRS is added to dead letter queue");
                    });
                    shared.metrics.count(
                        req.cqrs_id.as_deref().unwrap_or(OTHER_ID),
                        Outcome::DeadLettered,
                        1,
                    );
                    if let Err(e) = shared
                        .transport
                        .settle(vec![req.tag], Settlement::Ack)
                        .await
                    {
                        span.in_scope(|| tracing::warn!(error = %e, "ack after dead letter failed; the message will be redelivered"));
                    }
                }
                Err(e) => {
                    shared.metrics.count(
                        req.cqrs_id.as_deref().unwrap_or(OTHER_ID),
                        Outcome::Requeued,
                        1,
                    );
                    hand_back
                        .after_failure(&shared.transport, req.tag, "dead letter", &e, span)
                        .await;
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

impl Handler<Drain> for DeadLetterer {
    type Result = ResponseFuture<()>;

    /// Answers once nothing is in flight; a delivery held back after a failure is handed back
    /// at once.
    fn handle(&mut self, _: Drain, _: &mut Context<Self>) -> Self::Result {
        self.hand_back.hurry();
        self.idle.wait(self.in_flight == 0)
    }
}
