//! The messages of the framework's message path: declare, publish, consume, settle, park,
//! dead-letter and inspect.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use actix::prelude::*;

use crate::error::Result;

/// Where a published message goes (WIRE.md section 3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Route {
    /// To every replica queue bound to the CQRS id: SAVE, DELETE and broadcast SYNC.
    Broadcast {
        /// The CQRS id.
        cqrs_id: String,
    },
    /// To one replica queue: a directed SYNC, or a replica's own retry copy.
    Queue {
        /// The replica queue's name.
        queue: String,
        /// The CQRS id.
        cqrs_id: String,
    },
}

impl Route {
    /// A broadcast to every replica of `cqrs_id`.
    pub fn broadcast(cqrs_id: impl Into<String>) -> Self {
        Route::Broadcast {
            cqrs_id: cqrs_id.into(),
        }
    }

    /// A message for one replica queue.
    pub fn queue(queue: impl Into<String>, cqrs_id: impl Into<String>) -> Self {
        Route::Queue {
            queue: queue.into(),
            cqrs_id: cqrs_id.into(),
        }
    }

    /// The routing key: `X` for a broadcast, `cqrs.<queue>.X` for one queue.
    #[must_use]
    pub fn routing_key(&self) -> String {
        match self {
            Route::Broadcast { cqrs_id } => cqrs_id.clone(),
            Route::Queue { queue, cqrs_id } => format!("cqrs.{queue}.{cqrs_id}"),
        }
    }

    /// The CQRS id the message is about.
    #[must_use]
    pub fn cqrs_id(&self) -> &str {
        match self {
            Route::Broadcast { cqrs_id } | Route::Queue { cqrs_id, .. } => cqrs_id,
        }
    }
}

/// Message headers (string values; Python peers ignore them).
pub type Headers = BTreeMap<String, String>;

/// Header with the reason of a dead letter (an [`ErrorKind`](crate::ErrorKind) name).
pub const HEADER_REASON: &str = "x-cqrs-reason";
/// Header with the error text of a dead letter.
pub const HEADER_ERROR: &str = "x-cqrs-error";
/// Header with the W3C trace context.
pub const HEADER_TRACEPARENT: &str = "traceparent";
/// Header with the W3C trace state that goes with [`HEADER_TRACEPARENT`], when it is not empty.
pub const HEADER_TRACESTATE: &str = "tracestate";

/// A message on its way to the broker.
#[derive(Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// Where it goes.
    pub route: Route,
    /// The encoded body.
    pub body: Vec<u8>,
    /// `text/plain` for JSON, `application/msgpack` for MessagePack.
    pub content_type: String,
    /// Extra headers.
    pub headers: Headers,
    /// Broker-side expiry of the message (AMQP `expiration`), if any.
    pub expiration: Option<Duration>,
}

impl fmt::Debug for OutgoingMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutgoingMessage")
            .field("routing_key", &self.route.routing_key())
            .field("body_len", &self.body.len())
            .field("content_type", &self.content_type)
            .field("headers", &self.headers)
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// Publishes a message and answers once the broker confirmed it.
///
/// A message no queue is bound to fails with [`ErrorKind::Unroutable`](crate::ErrorKind).
#[derive(Debug, Message)]
#[rtype(result = "Result<()>")]
pub struct Publish(pub OutgoingMessage);

/// Declares a replica's topology: queue `queue` bound to `X` and `cqrs.<queue>.X`, and
/// `dead_letter_queue` bound to `cqrs.<dead_letter_queue>.X`, for each CQRS id `X`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<()>")]
pub struct Declare {
    /// The replica queue.
    pub queue: String,
    /// Its dead-letter queue.
    pub dead_letter_queue: String,
    /// The CQRS ids the replica consumes.
    pub cqrs_ids: Vec<String>,
}

/// Identifies one consumer of one transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConsumerTag(pub u64);

/// Identifies one delivery for [`Settle`]. Only the transport that made it interprets it: a
/// `channel` generation lets a transport tell tags of a lost connection from live ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryTag {
    /// The channel (or connection generation) the delivery came on.
    pub channel: u64,
    /// The delivery's number on that channel.
    pub tag: u64,
}

/// One message handed to a consumer.
#[derive(Clone)]
pub struct Delivery {
    /// What to settle it with.
    pub tag: DeliveryTag,
    /// The queue it was taken from.
    pub queue: String,
    /// The routing key it was published with.
    pub routing_key: String,
    /// The body, undecoded.
    pub body: Vec<u8>,
    /// The content type property, if any.
    pub content_type: Option<String>,
    /// Headers.
    pub headers: Headers,
    /// Whether the broker delivered it before (to this or another consumer).
    pub redelivered: bool,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("tag", &self.tag)
            .field("queue", &self.queue)
            .field("routing_key", &self.routing_key)
            .field("body_len", &self.body.len())
            .field("content_type", &self.content_type)
            .field("redelivered", &self.redelivered)
            .finish()
    }
}

/// Most deliveries a transport puts in one [`Deliveries`] batch: large enough that one
/// acknowledgement covers many deliveries, small enough that the Router starts on a batch
/// while the broker delivers the next.
pub const MAX_DELIVERIES: usize = 256;

/// A batch of deliveries for a consumer. The transport sends the next batch to the same
/// consumer only after this one is answered, which keeps the order and applies backpressure.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Deliveries(pub Vec<Delivery>);

/// Starts consuming `queue`; deliveries go to `consumer` in batches.
#[derive(Message)]
#[rtype(result = "Result<ConsumerTag>")]
pub struct Subscribe {
    /// The queue to consume (declared before).
    pub queue: String,
    /// At most this many unacknowledged deliveries at once (0 = no limit).
    pub prefetch: u32,
    /// Who receives the deliveries.
    pub consumer: Recipient<Deliveries>,
}

impl fmt::Debug for Subscribe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscribe")
            .field("queue", &self.queue)
            .field("prefetch", &self.prefetch)
            .finish()
    }
}

/// How to settle deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// The effect is durable: forget the deliveries.
    Ack,
    /// Not handled: deliver them again (with `redelivered` set).
    Requeue,
}

/// Settles deliveries of one consumer. Tags the transport no longer knows (a lost channel) are
/// ignored: those deliveries come back anyway.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<()>")]
pub struct Settle {
    /// The deliveries.
    pub tags: Vec<DeliveryTag>,
    /// What to do with them.
    pub settlement: Settlement,
}

/// Stops a consumer. With `release == false` no new deliveries are sent but unacknowledged ones
/// can still be settled (AMQP `basic.cancel`); with `release == true` every delivery still
/// unacknowledged goes back to its queue for redelivery (what a closed channel does).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<()>")]
pub struct Cancel {
    /// The consumer.
    pub consumer: ConsumerTag,
    /// Hand back unacknowledged deliveries too.
    pub release: bool,
}

/// Parks a copy of a message durably; after `delay` it is routed by its route again (a
/// replica's retry copy goes to `cqrs.<queue>.X`). Answers once the copy is durable, so the
/// caller may then acknowledge the original.
#[derive(Debug, Message)]
#[rtype(result = "Result<()>")]
pub struct Park {
    /// The copy (its body already carries `retries + 1`).
    pub message: OutgoingMessage,
    /// How long it stays parked.
    pub delay: Duration,
}

/// Publishes a dead letter to `dead_letter_queue` and answers once it is confirmed. It is
/// delivered to that queue even when `cqrs_id` is unknown or absent (an undecodable body).
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct PublishDeadLetter {
    /// The dead-letter queue.
    pub dead_letter_queue: String,
    /// The CQRS id, when the body told it; the routing key is then
    /// `cqrs.<dead_letter_queue>.<cqrs_id>`.
    pub cqrs_id: Option<String>,
    /// The body as it should be kept (the last attempt's body, or the raw bytes received).
    pub body: Vec<u8>,
    /// Its content type.
    pub content_type: Option<String>,
    /// Headers, including [`HEADER_REASON`] and [`HEADER_ERROR`].
    pub headers: Headers,
    /// How long the broker keeps it (the dead-message TTL), `None` for ever.
    pub ttl: Option<Duration>,
}

impl PublishDeadLetter {
    /// The routing key WIRE.md gives a dead letter, or the queue's own name when the CQRS id is
    /// unknown.
    #[must_use]
    pub fn routing_key(&self) -> String {
        match &self.cqrs_id {
            Some(id) => format!("cqrs.{}.{id}", self.dead_letter_queue),
            None => self.dead_letter_queue.clone(),
        }
    }
}

impl fmt::Debug for PublishDeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishDeadLetter")
            .field("dead_letter_queue", &self.dead_letter_queue)
            .field("cqrs_id", &self.cqrs_id)
            .field("body_len", &self.body.len())
            .field("headers", &self.headers)
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// Message counts of a queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Ready for delivery.
    pub ready: u64,
    /// Delivered and not yet settled (0 where the broker does not tell).
    pub unacked: u64,
    /// Retry copies parked for the queue, waiting for their delay (0 where the transport does
    /// not tell).
    pub parked: u64,
    /// Messages in the queue's dead-letter queue (0 where the transport does not tell).
    pub dead_letters: u64,
}

/// Asks whether the broker connection is up now: `Ok` when the transport could talk to the
/// broker at once, an [`ErrorKind::Transport`](crate::ErrorKind::Transport) error saying why
/// not otherwise. Answers without waiting for a reconnect (health probes).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<()>")]
pub struct Ping;

/// Asks for a queue's message counts.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<QueueStats>")]
pub struct Inspect {
    /// The queue.
    pub queue: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_keys_follow_the_wire_contract() {
        assert_eq!(Route::broadcast("book").routing_key(), "book");
        assert_eq!(
            Route::queue("replica", "book").routing_key(),
            "cqrs.replica.book"
        );
        let dl = PublishDeadLetter {
            dead_letter_queue: "dead_letter_replica".into(),
            cqrs_id: Some("book".into()),
            body: vec![],
            content_type: None,
            headers: Headers::new(),
            ttl: None,
        };
        assert_eq!(dl.routing_key(), "cqrs.dead_letter_replica.book");
    }
}
