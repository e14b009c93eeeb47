//! Producer: publishes master events in the order they were produced, with a window of
//! unconfirmed publishes (never one round trip per message), and answers each caller once its
//! message is confirmed.

use std::collections::VecDeque;
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::{Drain, IdleWaiters};
use crate::codec::{Codec, expiry_after};
use crate::config::CqrsConfig;
use crate::envelope::Envelope;
use crate::error::{Error, ErrorKind, Result};
use crate::outbox::EncodedEvent;
use crate::registry::Registry;
use crate::stats::{Metrics, Outcome};
use crate::telemetry::send_span;
use crate::trace_context::{self, Role};
use crate::transport::{Headers, OutgoingMessage, Route, TransportHandle};
use crate::values;

/// Publishes one event; resolves once the broker confirmed it.
#[derive(Debug, Message)]
#[rtype(result = "Result<()>")]
pub(crate) enum Produce {
    /// An envelope published by hand: checked against its master model, `expires` stamped from
    /// the model's (or the configured) message TTL when it has none, encoded with the codec.
    Envelope {
        /// The message.
        envelope: Envelope,
        /// Broadcast, or one replica queue (a directed SYNC).
        route: Route,
        /// Headers to publish with it (the caller's trace context).
        headers: Headers,
    },
    /// An event a master table encoded at write time (direct mode): published as it is.
    Encoded(EncodedEvent),
}

/// The master-side publishing actor of [`Publisher`](crate::Publisher) calls.
pub(crate) struct Producer {
    transport: TransportHandle,
    registry: Arc<Registry>,
    config: Arc<CqrsConfig>,
    metrics: Arc<Metrics>,
    codec: Codec,
    window: usize,
    queue: VecDeque<(OutgoingMessage, tracing::Span, oneshot::Sender<Result<()>>)>,
    in_flight: usize,
    idle: IdleWaiters,
}

impl Producer {
    pub(crate) fn new(
        transport: TransportHandle,
        registry: Arc<Registry>,
        config: Arc<CqrsConfig>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let codec = config.codec();
        let window = config.master().publish_window() as usize;
        Self {
            transport,
            registry,
            config,
            metrics,
            codec,
            window,
            queue: VecDeque::new(),
            in_flight: 0,
            idle: IdleWaiters::default(),
        }
    }

    fn encode(&self, produce: Produce) -> Result<Option<(OutgoingMessage, tracing::Span)>> {
        let (mut envelope, route, headers) = match produce {
            Produce::Envelope {
                envelope,
                route,
                headers,
            } => (envelope, route, headers),
            Produce::Encoded(event) => {
                let span = tracing::debug_span!("cqrs.envelope", cqrs_id = %values::excerpt(event.cqrs_id()));
                trace_context::adopt(&span, &event.headers, Role::Send);
                return Ok(Some((event.into_message(), span)));
            }
        };
        let model = self.registry.master(&envelope.cqrs_id).ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                format!("no master model with CQRS id {:?}", envelope.cqrs_id),
            )
        })?;
        if !model.produces() {
            return Ok(None);
        }
        if envelope.expires.is_none() {
            let ttl = model
                .message_ttl()
                .unwrap_or_else(|| self.config.master().message_ttl());
            envelope.expires = ttl.map(expiry_after);
        }
        let span = send_span(&envelope);
        trace_context::adopt(&span, &headers, Role::Send);
        let body = self.codec.encode(&envelope)?;
        let message = OutgoingMessage {
            route,
            body,
            content_type: self.codec.content_type().to_owned(),
            headers,
            expiration: None,
        };
        Ok(Some((message, span)))
    }

    /// Hands queued messages to the transport while the window has room. Requests are created
    /// here, in queue order, so the broker sees them in the order they were produced.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        while self.in_flight < self.window {
            let Some((message, span, reply)) = self.queue.pop_front() else {
                break;
            };
            self.in_flight += 1;
            let figures = self.metrics.id(message.route.cqrs_id());
            let request = self.transport.publish(message);
            ctx.spawn(
                async move {
                    let result = request.await;
                    match &result {
                        Ok(()) => {
                            figures.count(Outcome::Published, 1);
                            span.in_scope(|| tracing::debug!(event = "published", "CQRS is published"));
                        }
                        Err(e) => span.in_scope(|| tracing::error!(event = "publish_failed", cqrs_id = %values::excerpt(figures.cqrs_id()), error = %e, "CQRS couldn't be published")),
                    }
                    let _ = reply.send(result);
                }
                .into_actor(self)
                .map(|(), act, ctx| {
                    act.in_flight -= 1;
                    act.pump(ctx);
                }),
            );
        }
        if self.in_flight == 0 && self.queue.is_empty() {
            self.idle.notify();
        }
    }
}

impl Actor for Producer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.window.max(16));
    }
}

impl Handler<Produce> for Producer {
    type Result = ResponseFuture<Result<()>>;

    fn handle(&mut self, msg: Produce, ctx: &mut Context<Self>) -> Self::Result {
        let (message, span) = match self.encode(msg) {
            Ok(Some(ok)) => ok,
            Ok(None) => return Box::pin(async { Ok(()) }),
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let (tx, rx) = oneshot::channel();
        self.queue.push_back((message, span, tx));
        self.pump(ctx);
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(Error::unavailable("producer")))
        })
    }
}

impl Handler<Drain> for Producer {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, _: &mut Context<Self>) -> Self::Result {
        self.idle.wait(self.in_flight == 0 && self.queue.is_empty())
    }
}
