//! The actor side of the broker: the transport protocol's messages and the delivery pump that
//! sends ready messages to consumers.

use std::collections::BTreeSet;
use std::time::Instant;

use actix::prelude::*;
use cqrs_actors::transport::{
    Cancel, ConsumerTag, Declare, Deliveries, Inspect, MAX_DELIVERIES, Park, Ping, Publish,
    PublishDeadLetter, QueueStats, Settle, Settlement, Subscribe,
};
use cqrs_actors::{Error, ErrorKind, Result};

use super::MemoryBroker;
use super::broker::{CHANNEL, Consumer, Message, ParkRecord};
use super::faults::Fate;

/// Reads the list of parked messages so far (memory transport only).
#[derive(Debug, Message)]
#[rtype(result = "Vec<ParkRecord>")]
pub struct ParkLog;

impl MemoryBroker {
    /// Routes a message by its routing key to every bound queue; `false` when none is bound.
    pub(super) fn route(&mut self, mut message: Message, ctx: &mut Context<Self>) -> bool {
        let queues: Vec<String> = match self.bindings.get(&message.routing_key) {
            Some(bound) if !bound.is_empty() => bound.iter().cloned().collect(),
            _ => return false,
        };
        message.seq = self.next_seq();
        for q in &queues {
            self.queues
                .entry(q.clone())
                .or_default()
                .ready
                .push_back(message.clone());
        }
        for q in queues {
            self.dispatch(&q, ctx);
        }
        true
    }

    /// Puts a message that came back at the head of `queue`, marked redelivered, and delivers.
    fn enqueue_front(&mut self, queue: &str, mut message: Message, ctx: &mut Context<Self>) {
        message.redelivered = true;
        self.queues
            .entry(queue.to_owned())
            .or_default()
            .ready
            .push_front(message);
        self.dispatch(queue, ctx);
    }

    /// Puts a message at the tail of `queue` and delivers.
    fn enqueue_back(&mut self, queue: &str, message: Message, ctx: &mut Context<Self>) {
        self.queues
            .entry(queue.to_owned())
            .or_default()
            .ready
            .push_back(message);
        self.dispatch(queue, ctx);
    }

    /// Sends ready messages of `queue` to its consumers, one batch in flight per consumer.
    fn dispatch(&mut self, queue_name: &str, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let Some(queue) = self.queues.get_mut(queue_name) else {
            return;
        };
        // Expired messages are dropped as they reach the head, not searched for on every
        // publish: a queue with a backlog and no consumer costs nothing per message.
        let n = queue.consumers.len();
        for i in 0..n {
            let Some(queue) = self.queues.get_mut(queue_name) else {
                return;
            };
            if queue.ready.is_empty() {
                return;
            }
            let tag = queue.consumers[(queue.next_consumer + i) % n];
            let Some(consumer) = self.consumers.get(&tag) else {
                continue;
            };
            if consumer.sending || consumer.cancelled {
                continue;
            }
            let room = if consumer.prefetch == 0 {
                MAX_DELIVERIES
            } else {
                (consumer.prefetch as usize)
                    .saturating_sub(consumer.unacked)
                    .min(MAX_DELIVERIES)
            };
            if room == 0 {
                continue;
            }
            let mut batch = Vec::new();
            while batch.len() < room {
                let Some(queue) = self.queues.get_mut(queue_name) else {
                    break;
                };
                if queue.ready.is_empty() {
                    break;
                }
                let index = self.faults.pick(queue.ready.len());
                let Some(message) = queue.ready.remove(index) else {
                    break;
                };
                if message.expires_at.is_some_and(|at| at <= now) {
                    continue;
                }
                match self.faults.fate() {
                    Fate::Deliver => batch.push(self.track(tag, queue_name, message)),
                    Fate::Duplicate => {
                        let mut copy = message.clone();
                        copy.redelivered = true;
                        batch.push(self.track(tag, queue_name, message));
                        if batch.len() < room {
                            batch.push(self.track(tag, queue_name, copy));
                        } else {
                            self.queues
                                .entry(queue_name.to_owned())
                                .or_default()
                                .ready
                                .push_back(copy);
                        }
                    }
                    Fate::Drop => {
                        let after = self.faults.plan().redelivery_after();
                        let q = queue_name.to_owned();
                        ctx.run_later(after, move |act, ctx| act.enqueue_front(&q, message, ctx));
                    }
                    Fate::Delay(d) => {
                        let q = queue_name.to_owned();
                        ctx.run_later(d, move |act, ctx| act.enqueue_back(&q, message, ctx));
                    }
                }
            }
            if batch.is_empty() {
                continue;
            }
            let Some(consumer) = self.consumers.get_mut(&tag) else {
                continue;
            };
            consumer.sending = true;
            consumer.unacked += batch.len();
            let request = consumer.recipient.send(Deliveries(batch));
            let q = queue_name.to_owned();
            ctx.spawn(request.into_actor(self).map(move |result, act, ctx| {
                if let Some(c) = act.consumers.get_mut(&tag) {
                    c.sending = false;
                }
                if result.is_err() {
                    tracing::warn!(
                        consumer = tag.0,
                        "memory transport: consumer is gone; releasing its deliveries"
                    );
                    act.release(tag, ctx);
                }
                act.dispatch(&q, ctx);
            }));
        }
        if let Some(queue) = self.queues.get_mut(queue_name) {
            queue.next_consumer = queue.next_consumer.wrapping_add(1);
        }
    }

    /// Forgets a consumer and hands its unacknowledged deliveries back, oldest first.
    fn release(&mut self, consumer: ConsumerTag, ctx: &mut Context<Self>) {
        if let Some(queue) = self.forget_consumer(consumer) {
            self.dispatch(&queue, ctx);
        }
    }
}

/// The error of a message that no queue is bound for.
pub(super) fn unroutable(routing_key: &str) -> Error {
    Error::new(
        ErrorKind::Unroutable,
        format!("no queue is bound to routing key {routing_key:?}"),
    )
}

impl Actor for MemoryBroker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // The framework bounds in-flight work with windows and prefetch; a small mailbox here
        // would only risk reordering sends that wait for room.
        ctx.set_mailbox_capacity(1 << 20);
    }
}

impl Handler<Declare> for MemoryBroker {
    type Result = Result<()>;

    fn handle(&mut self, msg: Declare, _: &mut Context<Self>) -> Result<()> {
        self.queues.entry(msg.queue.clone()).or_default();
        self.queues
            .entry(msg.dead_letter_queue.clone())
            .or_default();
        for id in &msg.cqrs_ids {
            self.bind(id.clone(), &msg.queue);
            self.bind(format!("cqrs.{}.{id}", msg.queue), &msg.queue);
            self.bind(
                format!("cqrs.{}.{id}", msg.dead_letter_queue),
                &msg.dead_letter_queue,
            );
        }
        Ok(())
    }
}

impl Handler<Publish> for MemoryBroker {
    type Result = Result<()>;

    fn handle(&mut self, Publish(msg): Publish, ctx: &mut Context<Self>) -> Result<()> {
        let message = Message::from(msg);
        let routing_key = message.routing_key.clone();
        if self.route(message, ctx) {
            Ok(())
        } else {
            Err(unroutable(&routing_key))
        }
    }
}

impl Handler<Subscribe> for MemoryBroker {
    type Result = Result<ConsumerTag>;

    fn handle(&mut self, msg: Subscribe, ctx: &mut Context<Self>) -> Result<ConsumerTag> {
        if !self.queues.contains_key(&msg.queue) {
            return Err(Error::transport(format!(
                "queue {:?} is not declared",
                msg.queue
            )));
        }
        self.next_consumer += 1;
        let tag = ConsumerTag(self.next_consumer);
        self.consumers.insert(
            tag,
            Consumer {
                queue: msg.queue.clone(),
                prefetch: msg.prefetch,
                recipient: msg.consumer,
                unacked: 0,
                sending: false,
                cancelled: false,
            },
        );
        self.queues
            .entry(msg.queue.clone())
            .or_default()
            .consumers
            .push(tag);
        self.dispatch(&msg.queue, ctx);
        Ok(tag)
    }
}

impl Handler<Settle> for MemoryBroker {
    type Result = Result<()>;

    fn handle(&mut self, msg: Settle, ctx: &mut Context<Self>) -> Result<()> {
        let mut touched = BTreeSet::new();
        for tag in msg.tags {
            if tag.channel != CHANNEL {
                continue;
            }
            let Some((consumer, queue, message)) = self.unacked.remove(&tag.tag) else {
                continue;
            };
            if let Some(c) = self.consumers.get_mut(&consumer) {
                c.unacked = c.unacked.saturating_sub(1);
            }
            match msg.settlement {
                Settlement::Ack if self.faults.ack_lost() => {
                    let mut copy = message;
                    copy.redelivered = true;
                    self.queues
                        .entry(queue.clone())
                        .or_default()
                        .ready
                        .push_back(copy);
                }
                Settlement::Ack => {}
                Settlement::Requeue => {
                    let mut message = message;
                    message.redelivered = true;
                    self.queues
                        .entry(queue.clone())
                        .or_default()
                        .ready
                        .push_front(message);
                }
            }
            touched.insert(queue);
        }
        for q in touched {
            self.dispatch(&q, ctx);
        }
        Ok(())
    }
}

impl Handler<Cancel> for MemoryBroker {
    type Result = Result<()>;

    fn handle(&mut self, msg: Cancel, ctx: &mut Context<Self>) -> Result<()> {
        if msg.release {
            self.release(msg.consumer, ctx);
        } else if let Some(c) = self.consumers.get_mut(&msg.consumer) {
            c.cancelled = true;
        }
        Ok(())
    }
}

impl Handler<Park> for MemoryBroker {
    type Result = Result<()>;

    /// Refuses a copy that could never come back (no queue bound to its routing key), so the
    /// caller keeps the original instead of acknowledging it.
    fn handle(&mut self, msg: Park, ctx: &mut Context<Self>) -> Result<()> {
        let routing_key = msg.message.route.routing_key();
        if !self.is_routable(&routing_key) {
            return Err(unroutable(&routing_key));
        }
        self.parked.push(ParkRecord {
            routing_key: routing_key.clone(),
            delay: msg.delay,
            body: msg.message.body.clone(),
        });
        let message = Message::from(msg.message);
        ctx.run_later(msg.delay, move |act, ctx| {
            let key = message.routing_key.clone();
            if !act.route(message, ctx) {
                tracing::error!(routing_key = %key, "memory transport: parked message has no queue to return to");
            }
        });
        Ok(())
    }
}

impl Handler<PublishDeadLetter> for MemoryBroker {
    type Result = Result<()>;

    fn handle(&mut self, msg: PublishDeadLetter, ctx: &mut Context<Self>) -> Result<()> {
        let routing_key = msg.routing_key();
        let message = Message {
            routing_key,
            body: msg.body,
            content_type: msg.content_type,
            headers: msg.headers,
            redelivered: false,
            expires_at: msg.ttl.map(|d| Instant::now() + d),
            seq: self.next_seq(),
        };
        self.enqueue_back(&msg.dead_letter_queue, message, ctx);
        Ok(())
    }
}

impl Handler<Ping> for MemoryBroker {
    type Result = Result<()>;

    /// The broker lives in this process: it is up while its actor runs.
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> Result<()> {
        Ok(())
    }
}

impl Handler<Inspect> for MemoryBroker {
    type Result = Result<QueueStats>;

    fn handle(&mut self, msg: Inspect, _: &mut Context<Self>) -> Result<QueueStats> {
        let now = Instant::now();
        let ready = self.queues.get(&msg.queue).map_or(0, |q| {
            q.ready
                .iter()
                .filter(|m| m.expires_at.is_none_or(|at| at > now))
                .count()
        });
        let unacked = self
            .unacked
            .values()
            .filter(|(_, q, _)| *q == msg.queue)
            .count();
        Ok(QueueStats {
            ready: ready as u64,
            unacked: unacked as u64,
            ..QueueStats::default()
        })
    }
}

impl Handler<ParkLog> for MemoryBroker {
    type Result = MessageResult<ParkLog>;

    fn handle(&mut self, _: ParkLog, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.parked.clone())
    }
}
