//! Router: decodes deliveries, validates them, finds the replica model and shards by
//! `(cqrs_id, pk)` over the ReplicaApply workers, so one row's events stay in order while
//! different rows apply in parallel. Nothing is dropped: whatever cannot be routed goes to the
//! dead-letter queue with a reason.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use actix::prelude::*;
use chrono::Utc;
use futures_util::FutureExt;
use futures_util::future::join_all;

use super::{
    Apply, DeadLetterRequest, DeadLetterer, Delivered, Drain, Incoming, ReplicaApply,
    ReplicaShared, id_counts,
};
use crate::codec::Codec;
use crate::envelope::SignalType;
use crate::error::{Error, ErrorKind};
use crate::handler::ReplicaEvent;
use crate::stats::{OTHER_ID, Outcome};
use crate::telemetry::EnvelopeSpan;
use crate::transport::{Deliveries, Delivery, Settlement};
use crate::values;

pub(crate) struct Router {
    shared: Arc<ReplicaShared>,
    shards: Vec<Addr<ReplicaApply>>,
    dead_letters: Addr<DeadLetterer>,
    direct_prefix: String,
}

impl Router {
    pub fn new(
        shared: Arc<ReplicaShared>,
        shards: Vec<Addr<ReplicaApply>>,
        dead_letters: Addr<DeadLetterer>,
    ) -> Self {
        let direct_prefix = format!("cqrs.{}.", shared.queue);
        Self {
            shared,
            shards,
            dead_letters,
            direct_prefix,
        }
    }

    fn shard_of(&self, cqrs_id: &str, pk: &str) -> usize {
        let mut h = DefaultHasher::new();
        cqrs_id.hash(&mut h);
        pk.hash(&mut h);
        (h.finish() % self.shards.len() as u64) as usize
    }
}

/// Where one delivery goes.
enum Routed {
    Apply(usize, Incoming),
    DeadLetter(DeadLetterRequest),
    Ack(crate::transport::DeliveryTag),
}

impl Router {
    fn route(&self, delivery: Delivery) -> Routed {
        let Delivery {
            tag,
            routing_key,
            body,
            content_type,
            redelivered,
            headers,
            ..
        } = delivery;
        let reject = |body: Vec<u8>,
                      content_type: Option<String>,
                      cqrs_id: Option<String>,
                      err: Error,
                      span: tracing::Span| {
            Routed::DeadLetter(DeadLetterRequest {
                tag,
                cqrs_id,
                body,
                content_type,
                reason: err.kind().as_str().to_owned(),
                error: err.to_string(),
                span,
            })
        };
        let decoded = Codec::for_content_type(content_type.as_deref()).and_then(|codec| {
            codec
                .decode(&body, self.shared.config.master().message_ttl())
                .map(|e| (codec, e))
        });
        let (codec, envelope) = match decoded {
            Ok(ok) => ok,
            Err(e) => {
                self.shared.metrics.count(OTHER_ID, Outcome::Received, 1);
                let span = tracing::info_span!("cqrs.envelope", routing_key = %values::excerpt(&routing_key));
                span.in_scope(|| tracing::error!(event = "rejected", error = %e, "CQRS message cannot be decoded"));
                return reject(body, content_type, None, e.into(), span);
            }
        };
        self.shared
            .metrics
            .count(&envelope.cqrs_id, Outcome::Received, 1);
        let span = EnvelopeSpan::new(&envelope, headers);
        // Entering a span costs even when its event is filtered out: look first.
        if tracing::enabled!(tracing::Level::DEBUG) {
            span.get(&envelope).in_scope(|| tracing::debug!(event = "received", routing_key = %values::excerpt(&routing_key), redelivered, "CQRS is received"));
        }
        let Some(model) = self.shared.registry.replica(&envelope.cqrs_id) else {
            let err = Error::new(
                ErrorKind::UnknownCqrsId,
                format!(
                    "no replica model with CQRS id {:?}",
                    values::excerpt(&envelope.cqrs_id)
                ),
            );
            span.get(&envelope).in_scope(
                || tracing::error!(event = "rejected", error = %err, "No model with such CQRS_ID"),
            );
            // No binding carries an unknown id: the dead letter goes to the queue directly.
            return reject(body, content_type, None, err, span.get(&envelope).clone());
        };
        let cqrs_id = envelope.cqrs_id.clone();
        if let Err(err) = envelope.validate() {
            span.get(&envelope).in_scope(|| tracing::error!(event = "rejected", error = %err, "CQRS message is inconsistent"));
            return reject(
                body,
                content_type,
                Some(cqrs_id),
                err,
                span.get(&envelope).clone(),
            );
        }
        let now = Utc::now();
        if envelope.is_expired(now) {
            let err = Error::new(
                ErrorKind::Expired,
                format!("expired at {:?}", envelope.expires),
            );
            return reject(
                body,
                content_type,
                Some(cqrs_id),
                err,
                span.get(&envelope).clone(),
            );
        }
        let direct = routing_key.strip_prefix(&self.direct_prefix) == Some(cqrs_id.as_str());
        if model.only_direct_syncs() && envelope.signal_type == SignalType::Sync && !direct {
            span.get(&envelope).in_scope(|| {
                tracing::info!(
                    event = "skipped",
                    reason = "broadcast_sync",
                    "CQRS broadcast sync ignored (only direct syncs)"
                )
            });
            self.shared.metrics.count(&cqrs_id, Outcome::Skipped, 1);
            return Routed::Ack(tag);
        }
        let shard = self.shard_of(&cqrs_id, &envelope.pk_text());
        let event = ReplicaEvent::new(envelope, routing_key, direct, redelivered);
        Routed::Apply(
            shard,
            Incoming {
                event,
                delivered: Delivered {
                    tag,
                    codec,
                    body,
                    content_type,
                    span,
                },
            },
        )
    }
}

impl Actor for Router {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(64);
    }
}

impl Handler<Deliveries> for Router {
    type Result = AtomicResponse<Self, ()>;

    /// Routes a batch. Atomic: the next batch is routed only after every worker accepted this
    /// one, which keeps per-row order and passes backpressure back to the transport.
    fn handle(&mut self, msg: Deliveries, _: &mut Context<Self>) -> Self::Result {
        let mut per_shard: Vec<Vec<Incoming>> =
            (0..self.shards.len()).map(|_| Vec::new()).collect();
        let mut dead = Vec::new();
        let mut acks = Vec::new();
        for delivery in msg.0 {
            match self.route(delivery) {
                Routed::Apply(shard, incoming) => per_shard[shard].push(incoming),
                Routed::DeadLetter(req) => dead.push(req),
                Routed::Ack(tag) => acks.push(tag),
            }
        }
        let sends: Vec<_> = per_shard
            .into_iter()
            .zip(&self.shards)
            .filter(|(batch, _)| !batch.is_empty())
            .map(|(batch, shard)| {
                let tags: Vec<_> = batch.iter().map(|i| i.delivered.tag).collect();
                let ids = id_counts(batch.iter().map(|i| i.event.cqrs_id()));
                ((tags, ids), shard.send(Apply(batch)).boxed_local())
            })
            .chain(dead.into_iter().map(|req| {
                let ids = id_counts(req.cqrs_id.as_deref());
                (
                    (vec![req.tag], ids),
                    self.dead_letters.send(req).boxed_local(),
                )
            }))
            .collect();
        let settle = self.shared.transport.settle(acks, Settlement::Ack);
        let shared = Arc::clone(&self.shared);
        let fut = async move {
            let (tags, requests): (Vec<_>, Vec<_>) = sends.into_iter().unzip();
            for ((tags, ids), sent) in tags.into_iter().zip(join_all(requests).await) {
                shared
                    .hand_back_if_gone(tags, ids, sent, "replica worker or dead-letterer")
                    .await;
            }
            if let Err(e) = settle.await {
                tracing::warn!(error = %e, "ack of skipped deliveries failed; they will be redelivered");
            }
        };
        AtomicResponse::new(Box::pin(fut.into_actor(self)))
    }
}

impl Handler<Drain> for Router {
    type Result = ();

    /// Answers once every batch received before it has been handed to the workers.
    fn handle(&mut self, _: Drain, _: &mut Context<Self>) {}
}
