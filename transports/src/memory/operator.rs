//! The operator's tools on the memory broker: dead letters listed, retried and purged, a
//! replica's queues described and deleted.

use std::time::Instant;

use actix::prelude::*;
use cqrs_actors::Result;
use cqrs_actors::transport::{
    DeadLetter, DeleteQueue, DescribeQueue, ListDeadLetters, PurgeDeadLetters, RetryDeadLetters,
    RetryReport, TopologyObject, queue_not_empty,
};

use super::MemoryBroker;
use super::broker::Message;
use super::dispatch::unroutable;

impl Message {
    fn dead_letter(&self) -> DeadLetter {
        DeadLetter {
            id: self.seq.to_string(),
            routing_key: self.routing_key.clone(),
            body: self.body.clone(),
            content_type: self.content_type.clone(),
            headers: self.headers.clone(),
        }
    }

    fn live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

impl MemoryBroker {
    /// The first `limit` live dead letters of `queue` that `cqrs_id` selects, oldest first.
    fn dead_letters(&self, queue: &str, cqrs_id: Option<&str>, limit: usize) -> Vec<DeadLetter> {
        let now = Instant::now();
        self.queues.get(queue).map_or_else(Vec::new, |q| {
            q.ready
                .iter()
                .filter(|m| m.live(now))
                .map(Message::dead_letter)
                .filter(|d| d.matches(cqrs_id))
                .take(limit)
                .collect()
        })
    }

    /// Ready and unacknowledged messages of `queue`.
    fn held(&self, queue: &str) -> (u64, u64) {
        let now = Instant::now();
        let ready = self
            .queues
            .get(queue)
            .map_or(0, |q| q.ready.iter().filter(|m| m.live(now)).count());
        let unacked = self.unacked.values().filter(|(_, q, _)| q == queue).count();
        (ready as u64, unacked as u64)
    }
}

impl Handler<ListDeadLetters> for MemoryBroker {
    type Result = Result<Vec<DeadLetter>>;

    fn handle(&mut self, msg: ListDeadLetters, _: &mut Context<Self>) -> Self::Result {
        Ok(self.dead_letters(&msg.dead_letter_queue, msg.cqrs_id.as_deref(), msg.limit))
    }
}

impl Handler<RetryDeadLetters> for MemoryBroker {
    type Result = Result<RetryReport>;

    fn handle(&mut self, msg: RetryDeadLetters, ctx: &mut Context<Self>) -> Self::Result {
        let mut report = RetryReport::default();
        for dead in self.dead_letters(&msg.dead_letter_queue, msg.cqrs_id.as_deref(), msg.limit) {
            let Some(copy) = (msg.rewrite)(&dead) else {
                report.skipped += 1;
                continue;
            };
            let copy = Message::from(copy);
            let routing_key = copy.routing_key.clone();
            if !self.route(copy, ctx) {
                return Err(unroutable(&routing_key));
            }
            if let Some(q) = self.queues.get_mut(&msg.dead_letter_queue)
                && let Some(at) = q.ready.iter().position(|m| m.seq.to_string() == dead.id)
            {
                q.ready.remove(at);
            }
            report.retried += 1;
        }
        Ok(report)
    }
}

impl Handler<PurgeDeadLetters> for MemoryBroker {
    type Result = Result<u64>;

    fn handle(&mut self, msg: PurgeDeadLetters, _: &mut Context<Self>) -> Self::Result {
        let now = Instant::now();
        let Some(q) = self.queues.get_mut(&msg.dead_letter_queue) else {
            return Ok(0);
        };
        let mut purged = 0;
        q.ready.retain(|m| {
            let selected = m.dead_letter().matches(msg.cqrs_id.as_deref());
            if selected && m.live(now) {
                purged += 1;
            }
            !selected
        });
        Ok(purged)
    }
}

impl Handler<DescribeQueue> for MemoryBroker {
    type Result = Result<Vec<TopologyObject>>;

    /// Each queue with its ready messages, consumers and unacknowledged deliveries, then the
    /// routing keys bound to them.
    fn handle(&mut self, msg: DescribeQueue, _: &mut Context<Self>) -> Self::Result {
        let names = distinct(&msg.queue, &msg.dead_letter_queue);
        let mut objects = Vec::new();
        for name in &names {
            let Some(q) = self.queues.get(*name) else {
                continue;
            };
            let (ready, unacked) = self.held(name);
            objects.push(TopologyObject::new(
                "queue",
                *name,
                Some(ready),
                format!("consumers={}, unacked={unacked}", q.consumers.len()),
            ));
        }
        let mut keys: Vec<&String> = self.bindings.keys().collect();
        keys.sort();
        for key in keys {
            for name in &names {
                if self.bindings[key].contains(*name) {
                    objects.push(TopologyObject::new(
                        "binding",
                        key.clone(),
                        None,
                        format!("bound to {name}"),
                    ));
                }
            }
        }
        Ok(objects)
    }
}

impl Handler<DeleteQueue> for MemoryBroker {
    type Result = Result<Vec<String>>;

    /// Refuses while a queue holds ready or unacknowledged messages (parked copies are not
    /// counted: they live in timers). Consumers of a deleted queue are forgotten.
    fn handle(&mut self, msg: DeleteQueue, _: &mut Context<Self>) -> Self::Result {
        let names = distinct(&msg.queue, &msg.dead_letter_queue);
        if !msg.force {
            let (ready, unacked) = self.held(&msg.queue);
            let (dead, dead_unacked) = if names.len() > 1 {
                self.held(&msg.dead_letter_queue)
            } else {
                (0, 0)
            };
            if ready + unacked + dead + dead_unacked > 0 {
                return Err(queue_not_empty(
                    &msg.queue,
                    &[
                        ("ready", ready),
                        ("unacked", unacked),
                        ("dead letters", dead + dead_unacked),
                    ],
                ));
            }
        }
        let mut deleted = Vec::new();
        for name in names {
            let consumers: Vec<_> = self
                .consumers
                .iter()
                .filter(|(_, c)| c.queue == name)
                .map(|(tag, _)| *tag)
                .collect();
            for tag in consumers {
                self.forget_consumer(tag);
            }
            self.unacked.retain(|_, (_, q, _)| q != name);
            self.bindings.retain(|_, queues| {
                queues.remove(name);
                !queues.is_empty()
            });
            if self.queues.remove(name).is_some() {
                deleted.push(name.to_owned());
            }
        }
        Ok(deleted)
    }
}

/// The queue and its dead-letter queue, once when they are the same.
fn distinct<'a>(queue: &'a str, dead_letter_queue: &'a str) -> Vec<&'a str> {
    if queue == dead_letter_queue {
        vec![queue]
    } else {
        vec![queue, dead_letter_queue]
    }
}
