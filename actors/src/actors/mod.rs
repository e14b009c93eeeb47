//! The actors of DESIGN.md section 3 and what they share.
//!
//! Replica path: transport → [`Router`] (decode, validate, shard by `(cqrs_id, pk)`) →
//! [`ReplicaApply`] × N (batched apply, ack after success) → on failure [`Retrier`] (park a copy
//! with `retries + 1`, ack once parked) → when exhausted, expired, malformed or unknown
//! [`DeadLetterer`] (publish confirmed, then ack). Master path: outbox → relay → transport, or
//! service code → [`Producer`] → transport (publish with confirm, a window of unconfirmed
//! messages, in order).

mod dead_letter;
mod hand_back;
mod producer;
mod relay;
mod replica_apply;
mod retry;
mod router;

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::codec::Codec;
use crate::config::CqrsConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::handler::ReplicaEvent;
use crate::registry::Registry;
use crate::retry::RetryPolicy;
use crate::stats::{Metrics, Outcome};
use crate::telemetry::EnvelopeSpan;
use crate::transport::{Declare, DeliveryTag, Settlement, TransportHandle};

pub(crate) use dead_letter::{DeadLetterRequest, DeadLetterer};
use hand_back::HandBack;
pub(crate) use producer::{Produce, Producer};
pub(crate) use relay::{RelayControl, RelayHandle, RelaySettings};
pub(crate) use replica_apply::{Apply, ReplicaApply};
pub(crate) use retry::{Retrier, RetryRequest};
pub(crate) use router::Router;

/// What every replica-side actor reads.
pub(crate) struct ReplicaShared {
    pub registry: Arc<Registry>,
    pub config: Arc<CqrsConfig>,
    /// Each replica model's retry policy, resolved once at start.
    pub policies: HashMap<String, RetryPolicy>,
    pub transport: TransportHandle,
    pub queue: String,
    pub dead_letter_queue: String,
    /// The replica's topology, as declared at start.
    pub declare: Declare,
    pub metrics: Arc<Metrics>,
    /// Asks masters for rows after lost events, when a replica model has gap repair on.
    pub gap_repair: Option<crate::gap_repair::GapRequester>,
}

impl ReplicaShared {
    pub fn retry_policy(&self, cqrs_id: &str) -> RetryPolicy {
        self.policies
            .get(cqrs_id)
            .cloned()
            .unwrap_or_else(|| self.config.retry_policy(cqrs_id))
    }

    /// Runs a park or dead-letter publish; when no queue took it (an operator deleted the
    /// queue or its binding), declares the replica's topology again and tries once more.
    pub async fn publish_redeclaring<F, Fut>(&self, what: &str, publish: F) -> Result<()>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        match publish().await {
            Err(e) if e.kind() == ErrorKind::Unroutable => {
                tracing::debug!(error = %e, "{what} reached no queue; declaring the replica's queues again");
                self.transport
                    .declare(self.declare.clone())
                    .await
                    .map_err(|d| {
                        Error::with_source(
                            d.kind(),
                            format!("{e}; declaring the queues again failed: {d}"),
                            d,
                        )
                    })?;
                publish().await?;
                tracing::warn!(queue = %self.queue, dead_letter_queue = %self.dead_letter_queue, "{what} reached no queue until the replica's queues were declared again (deleted while the replica ran?)");
                Ok(())
            }
            other => other,
        }
    }

    /// Hands deliveries back for redelivery when the actor they were sent to is gone, so a
    /// closed mailbox never leaves them unacknowledged for the life of the consumer.
    pub async fn hand_back_if_gone<T>(
        &self,
        tags: Vec<DeliveryTag>,
        ids: IdCounts,
        sent: Result<T, MailboxError>,
        to: &str,
    ) {
        let Err(e) = sent else { return };
        tracing::error!(error = %e, actor = to, deliveries = tags.len(), "actor is gone; handing its deliveries back");
        for (id, n) in ids {
            self.metrics.count(&id, Outcome::Requeued, n);
        }
        if let Err(e) = self.transport.settle(tags, Settlement::Requeue).await {
            tracing::warn!(error = %e, "requeue failed; the deliveries come back when the consumer is released");
        }
    }
}

/// How many deliveries of each CQRS id a group holds (for the figures of a rare path).
pub(crate) type IdCounts = Vec<(String, u64)>;

/// Counts the CQRS ids of a group of deliveries.
pub(crate) fn id_counts<'a>(ids: impl IntoIterator<Item = &'a str>) -> IdCounts {
    let mut counts: IdCounts = Vec::new();
    for id in ids {
        match counts.iter_mut().find(|(i, _)| i == id) {
            Some((_, n)) => *n += 1,
            None => counts.push((id.to_owned(), 1)),
        }
    }
    counts
}

/// A decoded delivery on its way through the replica actors.
pub(crate) struct Incoming {
    pub event: ReplicaEvent,
    pub delivered: Delivered,
}

/// Everything about an incoming message but the decoded event, so that a batch of events can
/// be lent to a handler without copying them.
pub(crate) struct Delivered {
    pub tag: DeliveryTag,
    pub codec: Codec,
    /// The body as received, kept for the dead-letter queue.
    pub body: Vec<u8>,
    pub content_type: Option<String>,
    /// The message's span, made when first needed.
    pub span: EnvelopeSpan,
}

impl Incoming {
    /// The span of this message: everything recorded about it goes in it.
    pub fn span(&self) -> &tracing::Span {
        self.delivered.span.get(self.event.envelope())
    }
}

/// Waits until an actor has nothing in flight.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Drain;

/// Callers waiting for an actor to become idle.
#[derive(Default)]
pub(crate) struct IdleWaiters(Vec<oneshot::Sender<()>>);

impl IdleWaiters {
    /// A future that resolves when [`notify`](Self::notify) is called (or at once if `idle`).
    pub fn wait(&mut self, idle: bool) -> ResponseFuture<()> {
        if idle {
            return Box::pin(async {});
        }
        let (tx, rx) = oneshot::channel();
        self.0.push(tx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }

    pub fn notify(&mut self) {
        for tx in self.0.drain(..) {
            let _ = tx.send(());
        }
    }
}
