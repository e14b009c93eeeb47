//! DeadLetterer: publishes a message to the dead-letter queue with the reason in headers,
//! waits for the confirm, then acknowledges the original.

use std::sync::Arc;

use actix::prelude::*;

use super::{Drain, IdleWaiters, ReplicaShared};
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
}

impl DeadLetterer {
    pub fn new(shared: Arc<ReplicaShared>) -> Self {
        Self {
            shared,
            in_flight: 0,
            idle: IdleWaiters::default(),
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
        let mut headers = Headers::new();
        headers.insert(HEADER_REASON.to_owned(), req.reason.clone());
        headers.insert(HEADER_ERROR.to_owned(), req.error.clone());
        let publish = shared.transport.dead_letter(PublishDeadLetter {
            dead_letter_queue: shared.dead_letter_queue.clone(),
            cqrs_id: req.cqrs_id,
            body: req.body,
            content_type: req.content_type,
            headers,
            ttl: shared.config.replica().dead_message_ttl(),
        });
        let span = req.span;
        let (tag, reason, error) = (req.tag, req.reason, req.error);
        let fut = async move {
            match publish.await {
                Ok(()) => {
                    span.in_scope(|| {
                        tracing::warn!(event = "dead_lettered", reason = %reason, error = %error, "CQRS is added to dead letter queue");
                    });
                    shared.metrics.add_dead_lettered(1);
                    if let Err(e) = shared.transport.settle(vec![tag], Settlement::Ack).await {
                        span.in_scope(|| tracing::warn!(error = %e, "ack after dead letter failed; the message will be redelivered"));
                    }
                }
                Err(e) => {
                    span.in_scope(|| {
                        tracing::error!(error = %e, reason = %reason, "dead letter not confirmed; handing the message back for redelivery");
                    });
                    shared.metrics.add_requeued(1);
                    let _ = shared
                        .transport
                        .settle(vec![tag], Settlement::Requeue)
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

    fn handle(&mut self, _: Drain, _: &mut Context<Self>) -> Self::Result {
        self.idle.wait(self.in_flight == 0)
    }
}
