//! The publishing side of the transport actor: publishes, parked retry copies and dead
//! letters, with the AMQP properties of WIRE.md section 3.

use std::time::Duration;

use actix::prelude::*;
use cqrs_actors::transport::{Headers, OutgoingMessage, Park, Publish, PublishDeadLetter};
use cqrs_actors::{Error, ErrorKind, Result, Route};
use lapin::BasicProperties;
use lapin::types::{FieldTable, ShortString};

use super::confirm::Outgoing;
use super::{RabbitMqTransport, consumer, topology};

impl RabbitMqTransport {
    /// Hands a message to the publisher; resolves once the broker confirmed it.
    fn publish_to(
        &self,
        exchange: &str,
        routing_key: &str,
        body: Vec<u8>,
        properties: Result<BasicProperties>,
    ) -> ResponseFuture<Result<()>> {
        let out = properties.and_then(|properties| {
            Ok(Outgoing {
                exchange: topology::short("exchange", exchange)?,
                routing_key: topology::short("routing key", routing_key)?,
                body,
                properties,
            })
        });
        match out {
            Ok(out) => Box::pin(self.publisher.publish(out)),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }
}

/// Persistent, with the content type, headers and expiration of WIRE.md section 3. Headers
/// whose name is too long for AMQP are left out.
fn properties(
    content_type: &str,
    headers: &Headers,
    expiration: Option<Duration>,
) -> Result<BasicProperties> {
    let mut props = BasicProperties::default()
        .with_content_type(topology::short("content type", content_type)?)
        .with_delivery_mode(2);
    if !headers.is_empty() {
        let mut table = FieldTable::default();
        for (k, v) in headers {
            if let Ok(key) = ShortString::try_new(k.as_str()) {
                table.insert(key, topology::text(v));
            }
        }
        props = props.with_headers(table);
    }
    if let Some(ttl) = expiration {
        props = props.with_expiration(topology::short("expiration", &ttl.as_millis().to_string())?);
    }
    Ok(props)
}

/// The broker message for `msg`, to `exchange` by its route's routing key.
pub(super) fn outgoing(exchange: &str, msg: OutgoingMessage) -> Result<Outgoing> {
    let OutgoingMessage {
        route,
        body,
        content_type,
        headers,
        expiration,
    } = msg;
    Ok(Outgoing {
        exchange: topology::short("exchange", exchange)?,
        routing_key: topology::short("routing key", &route.routing_key())?,
        body,
        properties: properties(&content_type, &headers, expiration)?,
    })
}

impl Handler<Publish> for RabbitMqTransport {
    type Result = ResponseFuture<Result<()>>;

    fn handle(&mut self, Publish(msg): Publish, _: &mut Context<Self>) -> Self::Result {
        match outgoing(self.config.exchange(), msg) {
            Ok(out) => Box::pin(self.publisher.publish(out)),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }
}

impl Handler<Park> for RabbitMqTransport {
    type Result = ResponseFuture<Result<()>>;

    /// Publishes the copy to the queue's parking exchange with the tier header; it comes back
    /// to the queue by its routing key when the tier's TTL expires. A copy no queue this
    /// transport declared would take back is refused, so the caller keeps the original.
    fn handle(&mut self, msg: Park, _: &mut Context<Self>) -> Self::Result {
        let routing_key = msg.message.route.routing_key();
        let queue = match &msg.message.route {
            Route::Queue { queue, .. } if self.bound.contains(&routing_key) => queue.clone(),
            _ => {
                return Box::pin(async move {
                    Err(Error::new(
                        ErrorKind::Unroutable,
                        format!("no declared queue takes a parked copy back by {routing_key:?}"),
                    ))
                });
            }
        };
        let tiers = self.config.park_tiers();
        let tier = topology::tier_for(tiers, msg.delay);
        let mut headers = msg.message.headers;
        headers.insert(
            topology::HEADER_TIER.to_owned(),
            tier.as_millis().to_string(),
        );
        if msg.delay > tier {
            let due = consumer::unix_ms()
                .saturating_add(u64::try_from(msg.delay.as_millis()).unwrap_or(u64::MAX));
            headers.insert(topology::HEADER_DUE.to_owned(), due.to_string());
        }
        let props = properties(&msg.message.content_type, &headers, None);
        self.publish_to(
            &topology::park_exchange(&queue),
            &routing_key,
            msg.message.body,
            props,
        )
    }
}

impl Handler<PublishDeadLetter> for RabbitMqTransport {
    type Result = ResponseFuture<Result<()>>;

    /// Publishes by `cqrs.<dead_letter_queue>.X` when that key is bound, otherwise (an unknown
    /// or missing CQRS id) straight to the queue through the default exchange.
    fn handle(&mut self, msg: PublishDeadLetter, _: &mut Context<Self>) -> Self::Result {
        let key = msg.routing_key();
        let (exchange, routing_key) = if msg.cqrs_id.is_some() && self.bound.contains(&key) {
            (self.config.exchange().to_owned(), key)
        } else {
            (String::new(), msg.dead_letter_queue.clone())
        };
        let content_type = msg
            .content_type
            .unwrap_or_else(|| cqrs_actors::JSON_CONTENT_TYPE.to_owned());
        let props = properties(&content_type, &msg.headers, msg.ttl);
        self.publish_to(&exchange, &routing_key, msg.body, props)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_follow_the_wire_contract_and_never_panic() {
        let props = properties(
            "text/plain",
            &Headers::new(),
            Some(Duration::from_secs(864_000)),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            props.content_type().as_ref().map(|c| c.as_str()),
            Some("text/plain")
        );
        assert_eq!(*props.delivery_mode(), Some(2));
        assert_eq!(
            props.expiration().as_ref().map(|e| e.as_str()),
            Some("864000000")
        );
        let too_long = properties(&"x".repeat(300), &Headers::new(), None);
        assert_eq!(
            too_long.map(|_| ()).map_err(|e| e.kind()),
            Err(ErrorKind::Config)
        );
    }
}
