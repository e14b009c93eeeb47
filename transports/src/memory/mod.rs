//! The in-memory transport: a broker inside the process with the routing of WIRE.md section 3,
//! acknowledgements, redelivery, parking with a delay, dead-letter queues and seeded fault
//! injection. For tests, examples and the quick start; nothing survives the process.
//!
//! ```
//! # #[actix_rt::main]
//! # async fn main() {
//! use cqrs_transports::memory::{FaultPlan, MemoryBroker};
//! let (transport, _broker) = MemoryBroker::new(FaultPlan::seeded(7).with_duplicate(0.1)).start_transport();
//! assert_eq!(transport.name(), "memory");
//! # }
//! ```

mod faults;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use actix::prelude::*;
use cqrs_actors::transport::{
    Cancel, ConsumerTag, Declare, Deliveries, Delivery, DeliveryTag, Headers, Inspect,
    OutgoingMessage, Park, Publish, PublishDeadLetter, QueueStats, Settle, Settlement, Subscribe,
};
use cqrs_actors::{Error, ErrorKind, Result, TransportHandle};

pub use faults::FaultPlan;
use faults::{Fate, Faults};

/// Most deliveries in one [`Deliveries`] batch.
const MAX_BATCH: usize = 256;

#[derive(Clone)]
struct Message {
    routing_key: String,
    body: Vec<u8>,
    content_type: Option<String>,
    headers: Headers,
    redelivered: bool,
    expires_at: Option<Instant>,
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
        }
    }
}

#[derive(Default)]
struct Queue {
    ready: VecDeque<Message>,
    consumers: Vec<ConsumerTag>,
    next_consumer: usize,
}

struct Consumer {
    queue: String,
    prefetch: u32,
    recipient: Recipient<Deliveries>,
    unacked: usize,
    sending: bool,
    cancelled: bool,
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

/// Reads the list of parked messages so far (memory transport only).
#[derive(Debug, Message)]
#[rtype(result = "Vec<ParkRecord>")]
pub struct ParkLog;

/// The in-memory broker actor. It implements the whole transport protocol.
pub struct MemoryBroker {
    queues: HashMap<String, Queue>,
    bindings: HashMap<String, BTreeSet<String>>,
    consumers: BTreeMap<ConsumerTag, Consumer>,
    unacked: HashMap<u64, (ConsumerTag, String, Message)>,
    next_tag: u64,
    next_consumer: u64,
    faults: Faults,
    parked: Vec<ParkRecord>,
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new(FaultPlan::default())
    }
}

thread_local! {
    /// The brokers of `memory://` URLs, by URL, on this thread (an actix system runs its
    /// actors on one).
    static SHARED: std::cell::RefCell<HashMap<String, Addr<MemoryBroker>>> =
        std::cell::RefCell::new(HashMap::new());
}

/// The broker `url` names on this thread, started on first use (and again once it stopped).
pub(crate) fn shared(url: &str) -> TransportHandle {
    let key = url.trim_end_matches('/').to_ascii_lowercase();
    SHARED.with(|shared| {
        let mut shared = shared.borrow_mut();
        let addr = match shared.get(&key) {
            Some(addr) if addr.connected() => addr.clone(),
            _ => {
                let addr = MemoryBroker::default().start();
                shared.insert(key, addr.clone());
                addr
            }
        };
        TransportHandle::new("memory", &addr)
    })
}

/// The channel number of every memory delivery tag.
const CHANNEL: u64 = 1;

impl MemoryBroker {
    /// A broker that injects the faults of `plan`.
    #[must_use]
    pub fn new(plan: FaultPlan) -> Self {
        Self {
            queues: HashMap::new(),
            bindings: HashMap::new(),
            consumers: BTreeMap::new(),
            unacked: HashMap::new(),
            next_tag: 0,
            next_consumer: 0,
            faults: Faults::new(plan),
            parked: Vec::new(),
        }
    }

    /// Starts the broker and returns the transport handle and its address.
    ///
    /// Each call starts a broker of its own; systems that connect by URL share the broker of
    /// their URL (`memory://` or `memory://<name>`) within one actix system.
    #[must_use]
    pub fn start_transport(self) -> (TransportHandle, Addr<MemoryBroker>) {
        let addr = self.start();
        (TransportHandle::new("memory", &addr), addr)
    }

    fn bind(&mut self, key: String, queue: &str) {
        self.bindings
            .entry(key)
            .or_default()
            .insert(queue.to_owned());
    }

    fn is_routable(&self, routing_key: &str) -> bool {
        self.bindings
            .get(routing_key)
            .is_some_and(|queues| !queues.is_empty())
    }

    /// Routes a message by its routing key to every bound queue; `false` when none is bound.
    fn route(&mut self, message: Message, ctx: &mut Context<Self>) -> bool {
        let queues: Vec<String> = match self.bindings.get(&message.routing_key) {
            Some(bound) if !bound.is_empty() => bound.iter().cloned().collect(),
            _ => return false,
        };
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

    fn enqueue_front(&mut self, queue: &str, mut message: Message, ctx: &mut Context<Self>) {
        message.redelivered = true;
        self.queues
            .entry(queue.to_owned())
            .or_default()
            .ready
            .push_front(message);
        self.dispatch(queue, ctx);
    }

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
        queue
            .ready
            .retain(|m| m.expires_at.is_none_or(|at| at > now));
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
                MAX_BATCH
            } else {
                (consumer.prefetch as usize)
                    .saturating_sub(consumer.unacked)
                    .min(MAX_BATCH)
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

    fn track(&mut self, consumer: ConsumerTag, queue: &str, message: Message) -> Delivery {
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

    /// Forgets a consumer and hands its unacknowledged deliveries back, oldest first.
    fn release(&mut self, consumer: ConsumerTag, ctx: &mut Context<Self>) {
        let Some(c) = self.consumers.remove(&consumer) else {
            return;
        };
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
        self.dispatch(&c.queue, ctx);
    }
}

fn unroutable(routing_key: &str) -> Error {
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
        };
        self.enqueue_back(&msg.dead_letter_queue, message, ctx);
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
        })
    }
}

impl Handler<ParkLog> for MemoryBroker {
    type Result = MessageResult<ParkLog>;

    fn handle(&mut self, _: ParkLog, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.parked.clone())
    }
}
