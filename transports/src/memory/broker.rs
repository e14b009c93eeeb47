//! The broker's state: the messages of its queues, the consumers of each queue, the
//! deliveries not yet settled and the record of parked retries, with their bookkeeping.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use actix::Recipient;
use cqrs_actors::transport::{
    ConsumerTag, Deliveries, Delivery, DeliveryTag, Headers, OutgoingMessage,
};

use super::MemoryBroker;

/// The channel number of every memory delivery tag.
pub(super) const CHANNEL: u64 = 1;

/// A message as the broker holds it.
#[derive(Clone)]
pub(super) struct Message {
    pub(super) routing_key: String,
    pub(super) body: Vec<u8>,
    pub(super) content_type: Option<String>,
    pub(super) headers: Headers,
    pub(super) redelivered: bool,
    pub(super) expires_at: Option<Instant>,
    /// Its number, given when the broker took it (the id of a dead letter); 0 until then.
    pub(super) seq: u64,
}

impl From<OutgoingMessage> for Message {
    fn from(msg: OutgoingMessage) -> Self {
        Self {
            routing_key: msg.route.routing_key(),
            body: msg.body,
            content_type: Some(msg.content_type),
            headers: msg.headers,
            redelivered: false,
            expires_at: msg.expiration.map(|d| Instant::now() + d),
            seq: 0,
        }
    }
}

/// A queue: its ready messages and its consumers, served in turn.
#[derive(Default)]
pub(super) struct Queue {
    pub(super) ready: VecDeque<Message>,
    pub(super) consumers: Vec<ConsumerTag>,
    pub(super) next_consumer: usize,
}

/// A subscription to a queue.
pub(super) struct Consumer {
    pub(super) queue: String,
    pub(super) prefetch: u32,
    pub(super) recipient: Recipient<Deliveries>,
    pub(super) unacked: usize,
    pub(super) sending: bool,
    pub(super) cancelled: bool,
}

/// A message that was parked (for tests that check retry delays).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkRecord {
    /// The routing key it comes back by.
    pub routing_key: String,
    /// How long it was parked for.
    pub delay: Duration,
    /// Its body.
    pub body: Vec<u8>,
}

impl MemoryBroker {
    /// The number of the next message the broker takes.
    pub(super) fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Binds the routing `key` to `queue`.
    pub(super) fn bind(&mut self, key: String, queue: &str) {
        self.bindings
            .entry(key)
            .or_default()
            .insert(queue.to_owned());
    }

    /// Whether some queue is bound to `routing_key`.
    pub(super) fn is_routable(&self, routing_key: &str) -> bool {
        self.bindings
            .get(routing_key)
            .is_some_and(|queues| !queues.is_empty())
    }

    /// Records `message` as delivered to `consumer` and unacknowledged, under a new tag.
    pub(super) fn track(
        &mut self,
        consumer: ConsumerTag,
        queue: &str,
        message: Message,
    ) -> Delivery {
        self.next_tag += 1;
        let delivery = Delivery {
            tag: DeliveryTag {
                channel: CHANNEL,
                tag: self.next_tag,
            },
            queue: queue.to_owned(),
            routing_key: message.routing_key.clone(),
            body: message.body.clone(),
            content_type: message.content_type.clone(),
            headers: message.headers.clone(),
            redelivered: message.redelivered,
        };
        self.unacked
            .insert(self.next_tag, (consumer, queue.to_owned(), message));
        delivery
    }

    /// Forgets a consumer and puts its unacknowledged deliveries back at the head of their
    /// queues, oldest first; returns the queue it consumed from, `None` if it was unknown.
    pub(super) fn forget_consumer(&mut self, consumer: ConsumerTag) -> Option<String> {
        let c = self.consumers.remove(&consumer)?;
        if let Some(q) = self.queues.get_mut(&c.queue) {
            q.consumers.retain(|t| *t != consumer);
        }
        let mut tags: Vec<u64> = self
            .unacked
            .iter()
            .filter(|(_, (owner, _, _))| *owner == consumer)
            .map(|(t, _)| *t)
            .collect();
        tags.sort_unstable();
        for tag in tags.into_iter().rev() {
            if let Some((_, queue, message)) = self.unacked.remove(&tag) {
                let mut message = message;
                message.redelivered = true;
                self.queues
                    .entry(queue)
                    .or_default()
                    .ready
                    .push_front(message);
            }
        }
        Some(c.queue)
    }
}
