//! The RabbitMQ transport (lapin), wire-compatible with django-cqrs (WIRE.md section 3).
//!
//! - [`RabbitMqConfig`]: the URL (`amqp://` or `amqps://`, virtual host, heartbeat, connection
//!   name), the exchange, classic or quorum queues, windows and parking tiers.
//! - [`RabbitMqTransport`]: the actor. Publishes are persistent `text/plain` (or MessagePack)
//!   messages with `mandatory` and publisher confirms, pipelined up to a window; consumers use
//!   manual acks and a prefetch; retries are parked in per-tier TTL queues that dead-letter
//!   back to `cqrs.Q.X`; a lost connection is re-established with backoff, the topology
//!   declared again, consumers resumed and unconfirmed publishes sent again.
//!
//! ```no_run
//! # async fn run() -> cqrs_actors::Result<()> {
//! use cqrs_transports::rabbitmq::{RabbitMqConfig, RabbitMqTransport};
//! let config = RabbitMqConfig::from_url("amqp://guest:guest@127.0.0.1:5672/%2f")?;
//! let (transport, _addr) = RabbitMqTransport::connect(config).await?;
//! assert_eq!(transport.name(), "rabbitmq");
//! # Ok(())
//! # }
//! ```

mod config;
mod consumer;
mod link;
mod publisher;
mod topology;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use cqrs_actors::transport::{
    Cancel, ConsumerTag, Declare, Deliveries, Headers, Inspect, OutgoingMessage, Park, Publish,
    PublishDeadLetter, QueueStats, Settle, Subscribe,
};
use cqrs_actors::{Error, ErrorKind, Result, Route, TransportHandle};
use futures_util::future::join_all;
use lapin::BasicProperties;
use lapin::options::{BasicCancelOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use tokio::sync::{mpsc, watch};

pub use config::{QueueType, RabbitMqConfig};
use consumer::{ChannelEntry, ChannelGone, Forward};
use link::{Link, LinkRx, LinkUp, wait_link};
use publisher::{Outgoing, Publisher};

/// Turns a lapin error into a transport error (retryable: the connection comes back).
pub(crate) fn lapin_error(what: &str, e: lapin::Error) -> Error {
    Error::with_source(ErrorKind::Transport, format!("RabbitMQ {what} failed"), e)
}

struct ConsumerSpec {
    queue: String,
    prefetch: u32,
    recipient: Recipient<Deliveries>,
    active: bool,
    pending: usize,
}

/// The RabbitMQ transport actor. Start it with [`RabbitMqTransport::connect`] or
/// [`RabbitMqTransport::start`].
pub struct RabbitMqTransport {
    config: Arc<RabbitMqConfig>,
    link: LinkRx,
    /// Reports a lost connection; dropping the last sender stops the connection task.
    lost: mpsc::UnboundedSender<u64>,
    publisher: Publisher,
    topology: Arc<Mutex<Vec<Declare>>>,
    bound: BTreeSet<String>,
    consumers: BTreeMap<ConsumerTag, ConsumerSpec>,
    channels: HashMap<u64, Arc<ChannelEntry>>,
    next_consumer: u64,
    next_channel: u64,
}

impl std::fmt::Debug for RabbitMqTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitMqTransport")
            .field("config", &self.config)
            .field("consumers", &self.consumers.len())
            .field("channels", &self.channels.len())
            .finish_non_exhaustive()
    }
}

impl RabbitMqTransport {
    /// Starts the transport inside the running actix system; it connects (and reconnects) in
    /// the background, and requests wait for the connection up to the publish timeout.
    #[must_use]
    pub fn start(config: RabbitMqConfig) -> (TransportHandle, Addr<RabbitMqTransport>) {
        let config = Arc::new(config);
        let addr = RabbitMqTransport::create(|ctx| {
            let (link_tx, link_rx) = watch::channel(None);
            let topology = Arc::new(Mutex::new(Vec::new()));
            let lost = link::spawn(
                Arc::clone(&config),
                Arc::clone(&topology),
                link_tx,
                ctx.address().recipient().downgrade(),
            );
            let publisher = Publisher::spawn(
                link_rx.clone(),
                lost.clone(),
                config.publish_window(),
                config.publish_timeout(),
            );
            RabbitMqTransport {
                config,
                link: link_rx,
                lost,
                publisher,
                topology,
                bound: BTreeSet::new(),
                consumers: BTreeMap::new(),
                channels: HashMap::new(),
                next_consumer: 0,
                next_channel: 0,
            }
        });
        (TransportHandle::new("rabbitmq", &addr), addr)
    }

    /// Starts the transport and waits for the first connection (up to the publish timeout),
    /// so that a wrong URL or an unreachable broker fails here with
    /// [`ErrorKind::Transport`].
    pub async fn connect(
        config: RabbitMqConfig,
    ) -> Result<(TransportHandle, Addr<RabbitMqTransport>)> {
        let deadline = Instant::now() + config.publish_timeout();
        let (handle, addr) = Self::start(config);
        let mut link = addr.send(CurrentLink).await?;
        if let Err(e) = wait_link(&mut link, None, deadline).await {
            // Nobody will use this transport: stop it, and with it the reconnect attempts.
            let _ = addr.send(Stop).await;
            return Err(e);
        }
        Ok((handle, addr))
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.config.publish_timeout()
    }

    fn outgoing(
        &self,
        exchange: &str,
        routing_key: &str,
        body: Vec<u8>,
        properties: BasicProperties,
    ) -> Result<Outgoing> {
        Ok(Outgoing {
            exchange: topology::short("exchange", exchange)?,
            routing_key: topology::short("routing key", routing_key)?,
            body,
            properties,
        })
    }

    /// Opens the consuming channels `tag` is short of on the current connection.
    fn ensure_consumers(&mut self, tag: ConsumerTag, ctx: &mut Context<Self>) {
        let Some(link) = self.link.borrow().clone() else {
            return;
        };
        let live = self
            .channels
            .values()
            .filter(|c| c.consumer == tag && c.generation == link.generation)
            .count();
        let wanted = self.config.consumers();
        let Some(spec) = self.consumers.get_mut(&tag) else {
            return;
        };
        if !spec.active {
            return;
        }
        let missing = wanted.saturating_sub(live + spec.pending);
        spec.pending += missing;
        let (queue, prefetch) = (spec.queue.clone(), spec.prefetch);
        for _ in 0..missing {
            self.next_channel += 1;
            let id = self.next_channel;
            let queue = queue.clone();
            let link = Arc::clone(&link);
            let open = async move {
                let opened = consumer::open(&link, &queue, prefetch, id).await;
                (link, queue, opened)
            };
            ctx.spawn(
                open.into_actor(self)
                    .map(move |(link, queue, opened), act, ctx| {
                        act.opened(tag, id, &link, queue, opened, ctx);
                    }),
            );
        }
    }

    fn opened(
        &mut self,
        tag: ConsumerTag,
        id: u64,
        link: &Link,
        queue: String,
        opened: Result<(lapin::Channel, lapin::Consumer)>,
        ctx: &mut Context<Self>,
    ) {
        let Some(spec) = self.consumers.get_mut(&tag) else {
            if let Ok((channel, _)) = opened {
                actix::spawn(async move {
                    let _ = channel.close(200, "consumer released".into()).await;
                });
            }
            return;
        };
        spec.pending = spec.pending.saturating_sub(1);
        match opened {
            Ok((channel, stream)) => {
                let entry = Arc::new(ChannelEntry {
                    consumer: tag,
                    generation: link.generation,
                    queue: queue.clone(),
                    channel: channel.clone(),
                    lapin_tag: stream.tag(),
                    unacked: Arc::default(),
                });
                if !spec.active {
                    let _ = entry;
                    actix::spawn(async move {
                        let _ = channel.close(200, "consumer cancelled".into()).await;
                    });
                    return;
                }
                consumer::forward(
                    stream,
                    Forward {
                        id,
                        queue,
                        channel,
                        unacked: Arc::clone(&entry.unacked),
                        recipient: spec.recipient.clone(),
                        gone: ctx.address().recipient(),
                        publisher: self.publisher.clone(),
                        tiers: self.config.park_tiers().to_vec(),
                    },
                );
                self.channels.insert(id, entry);
            }
            Err(e) => {
                tracing::warn!(error = %e, queue = %queue, "consumer not started; trying again");
                ctx.run_later(Duration::from_secs(1), move |act, ctx| {
                    act.ensure_consumers(tag, ctx);
                });
            }
        }
    }
}

impl Actor for RabbitMqTransport {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // The framework bounds in-flight work with windows and prefetch; a small mailbox here
        // would only risk reordering sends that wait for room.
        ctx.set_mailbox_capacity(1 << 20);
    }

    /// Closes the consuming channels, which ends their tasks and hands their unacknowledged
    /// deliveries back to the broker; the publisher and connection tasks then end too.
    fn stopped(&mut self, _: &mut Context<Self>) {
        for entry in self.channels.drain().map(|(_, e)| e) {
            actix::spawn(async move {
                let _ = entry.channel.close(200, "transport stopped".into()).await;
            });
        }
    }
}

/// Stops the transport (a failed [`RabbitMqTransport::connect`]).
#[derive(Message)]
#[rtype(result = "()")]
struct Stop;

impl Handler<Stop> for RabbitMqTransport {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// The current connection watch (for [`RabbitMqTransport::connect`]).
#[derive(Message)]
#[rtype(result = "LinkRx")]
struct CurrentLink;

impl Handler<CurrentLink> for RabbitMqTransport {
    type Result = MessageResult<CurrentLink>;

    fn handle(&mut self, _: CurrentLink, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.link.clone())
    }
}

impl Handler<LinkUp> for RabbitMqTransport {
    type Result = ();

    fn handle(&mut self, LinkUp(link): LinkUp, ctx: &mut Context<Self>) {
        self.channels.retain(|_, c| c.generation == link.generation);
        let tags: Vec<ConsumerTag> = self.consumers.keys().copied().collect();
        for tag in tags {
            self.ensure_consumers(tag, ctx);
        }
    }
}

impl Handler<ChannelGone> for RabbitMqTransport {
    type Result = ();

    /// A cancelled consumer's channel stays open (its deliveries can still be settled) until
    /// the consumer is released; any other ended channel is replaced.
    fn handle(&mut self, msg: ChannelGone, ctx: &mut Context<Self>) {
        let Some(entry) = self.channels.get(&msg.id) else {
            return;
        };
        let tag = entry.consumer;
        if msg.consumer_gone {
            self.channels.remove(&msg.id);
            self.consumers.remove(&tag);
            return;
        }
        let active = self.consumers.get(&tag).is_some_and(|c| c.active);
        if !active && entry.channel.status().connected() {
            return;
        }
        self.channels.remove(&msg.id);
        if active {
            ctx.run_later(Duration::from_millis(200), move |act, ctx| {
                act.ensure_consumers(tag, ctx);
            });
        }
    }
}

impl Handler<Declare> for RabbitMqTransport {
    type Result = ResponseFuture<Result<()>>;

    fn handle(&mut self, msg: Declare, _: &mut Context<Self>) -> Self::Result {
        self.bound.extend(topology::bound_keys(&self.config, &msg));
        {
            let mut declared = self
                .topology
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !declared.iter().any(|d| {
                d.queue == msg.queue
                    && d.dead_letter_queue == msg.dead_letter_queue
                    && d.cqrs_ids == msg.cqrs_ids
            }) {
                declared.push(msg.clone());
            }
        }
        let (mut link, config, deadline, lost) = (
            self.link.clone(),
            Arc::clone(&self.config),
            self.deadline(),
            self.lost.clone(),
        );
        Box::pin(async move {
            let mut after = None;
            loop {
                let l = wait_link(&mut link, after, deadline).await?;
                let declared = async {
                    let channel = l
                        .connection
                        .create_channel()
                        .await
                        .map_err(|e| lapin_error("open channel", e))?;
                    topology::declare_exchange(&channel, &config).await?;
                    topology::declare_replica(&channel, &config, &msg).await?;
                    let _ = channel.close(200, "declared".into()).await;
                    Ok::<(), Error>(())
                }
                .await;
                match declared {
                    Err(_) if !l.connection.status().connected() => {
                        let _ = lost.send(l.generation);
                        after = Some(l.generation);
                    }
                    other => return other,
                }
            }
        })
    }
}

fn properties(
    content_type: &str,
    headers: &Headers,
    expiration: Option<Duration>,
) -> BasicProperties {
    let mut props = BasicProperties::default()
        .with_content_type(ShortString::from(content_type.to_owned()))
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
        props = props.with_expiration(ShortString::from(ttl.as_millis().to_string()));
    }
    props
}

impl Handler<Publish> for RabbitMqTransport {
    type Result = ResponseFuture<Result<()>>;

    fn handle(&mut self, Publish(msg): Publish, _: &mut Context<Self>) -> Self::Result {
        let OutgoingMessage {
            route,
            body,
            content_type,
            headers,
            expiration,
        } = msg;
        let props = properties(&content_type, &headers, expiration);
        match self.outgoing(self.config.exchange(), &route.routing_key(), body, props) {
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
        match self.outgoing(
            &topology::park_exchange(&queue),
            &routing_key,
            msg.message.body,
            props,
        ) {
            Ok(out) => Box::pin(self.publisher.publish(out)),
            Err(e) => Box::pin(async move { Err(e) }),
        }
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
        match self.outgoing(&exchange, &routing_key, msg.body, props) {
            Ok(out) => Box::pin(self.publisher.publish(out)),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }
}

impl Handler<Subscribe> for RabbitMqTransport {
    type Result = ResponseActFuture<Self, Result<ConsumerTag>>;

    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) -> Self::Result {
        self.next_consumer += 1;
        let tag = ConsumerTag(self.next_consumer);
        let count = self.config.consumers();
        let ids: Vec<u64> = (0..count)
            .map(|_| {
                self.next_channel += 1;
                self.next_channel
            })
            .collect();
        self.consumers.insert(
            tag,
            ConsumerSpec {
                queue: msg.queue.clone(),
                prefetch: msg.prefetch,
                recipient: msg.consumer,
                active: true,
                pending: count,
            },
        );
        let (mut link, deadline, queue, prefetch) =
            (self.link.clone(), self.deadline(), msg.queue, msg.prefetch);
        let open = async move {
            let l = wait_link(&mut link, None, deadline).await?;
            let mut opened = Vec::new();
            for id in ids {
                opened.push((id, consumer::open(&l, &queue, prefetch, id).await));
            }
            Ok::<_, Error>((l, queue, opened))
        };
        Box::pin(open.into_actor(self).map(move |result, act, ctx| {
            let (link, queue, opened) = match result {
                Ok(ok) => ok,
                Err(e) => {
                    act.consumers.remove(&tag);
                    return Err(e);
                }
            };
            if let Some((_, Err(_))) = opened.iter().find(|(_, o)| o.is_err()) {
                act.consumers.remove(&tag);
                let mut first_error = None;
                for (_, o) in opened {
                    match o {
                        Ok((channel, _)) => {
                            actix::spawn(async move {
                                let _ = channel.close(200, "subscribe failed".into()).await;
                            });
                        }
                        Err(e) => first_error = first_error.or(Some(e)),
                    }
                }
                return Err(
                    first_error.unwrap_or_else(|| Error::transport("RabbitMQ subscribe failed"))
                );
            }
            for (id, o) in opened {
                act.opened(tag, id, &link, queue.clone(), o, ctx);
            }
            Ok(tag)
        }))
    }
}

impl Handler<Settle> for RabbitMqTransport {
    type Result = ResponseFuture<Result<()>>;

    fn handle(&mut self, msg: Settle, _: &mut Context<Self>) -> Self::Result {
        let mut per_channel: HashMap<u64, Vec<u64>> = HashMap::new();
        for tag in msg.tags {
            per_channel.entry(tag.channel).or_default().push(tag.tag);
        }
        let work: Vec<_> = per_channel
            .into_iter()
            .filter_map(|(id, tags)| self.channels.get(&id).map(|e| (Arc::clone(e), tags)))
            .collect();
        let settlement = msg.settlement;
        Box::pin(async move {
            join_all(work.into_iter().map(|(entry, tags)| async move {
                consumer::settle(&entry.channel, &entry.unacked, tags, settlement).await;
            }))
            .await;
            Ok(())
        })
    }
}

impl Handler<Cancel> for RabbitMqTransport {
    type Result = ResponseFuture<Result<()>>;

    fn handle(&mut self, msg: Cancel, _: &mut Context<Self>) -> Self::Result {
        let entries: Vec<Arc<ChannelEntry>> = if msg.release {
            self.consumers.remove(&msg.consumer);
            let ids: Vec<u64> = self
                .channels
                .iter()
                .filter(|(_, c)| c.consumer == msg.consumer)
                .map(|(id, _)| *id)
                .collect();
            ids.iter()
                .filter_map(|id| self.channels.remove(id))
                .collect()
        } else {
            if let Some(spec) = self.consumers.get_mut(&msg.consumer) {
                spec.active = false;
            }
            self.channels
                .values()
                .filter(|c| c.consumer == msg.consumer)
                .cloned()
                .collect()
        };
        let release = msg.release;
        Box::pin(async move {
            for entry in entries {
                let result = if release {
                    entry.channel.close(200, "consumer released".into()).await
                } else {
                    entry
                        .channel
                        .basic_cancel(entry.lapin_tag.clone(), BasicCancelOptions::default())
                        .await
                };
                if let Err(e) = result {
                    tracing::debug!(error = %e, "cancel on a lost channel ignored");
                }
            }
            Ok(())
        })
    }
}

impl Handler<Inspect> for RabbitMqTransport {
    type Result = ResponseFuture<Result<QueueStats>>;

    /// `ready` comes from the broker (a passive declare); `unacked` counts the deliveries this
    /// transport's consumers hold, which AMQP does not report.
    fn handle(&mut self, msg: Inspect, _: &mut Context<Self>) -> Self::Result {
        let entries: Vec<Arc<ChannelEntry>> = self
            .channels
            .values()
            .filter(|c| c.queue == msg.queue)
            .cloned()
            .collect();
        let (mut link, deadline) = (self.link.clone(), self.deadline());
        Box::pin(async move {
            let l = wait_link(&mut link, None, deadline).await?;
            let channel = l
                .connection
                .create_channel()
                .await
                .map_err(|e| lapin_error("open channel", e))?;
            let queue = channel
                .queue_declare(
                    topology::short("queue", &msg.queue)?,
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(|e| lapin_error("inspect queue", e))?;
            let _ = channel.close(200, "inspected".into()).await;
            let mut unacked = 0;
            for entry in entries {
                unacked += entry.unacked.lock().await.len() as u64;
            }
            Ok(QueueStats {
                ready: u64::from(queue.message_count()),
                unacked,
            })
        })
    }
}

/// Deletes every queue and exchange this transport declared (the replica queues, their
/// dead-letter and parking queues, the parking exchanges and the main exchange). For tests
/// and tools; never sent by the framework.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<()>")]
pub struct Teardown {
    /// Delete the main exchange too (when nothing else uses it).
    pub exchange: bool,
}

impl Handler<Teardown> for RabbitMqTransport {
    type Result = ResponseFuture<Result<()>>;

    fn handle(&mut self, msg: Teardown, _: &mut Context<Self>) -> Self::Result {
        let declared: Vec<Declare> = std::mem::take(
            &mut *self
                .topology
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        self.bound.clear();
        let (mut link, config, deadline) =
            (self.link.clone(), Arc::clone(&self.config), self.deadline());
        Box::pin(async move {
            let l = wait_link(&mut link, None, deadline).await?;
            let channel = l
                .connection
                .create_channel()
                .await
                .map_err(|e| lapin_error("open channel", e))?;
            for declare in &declared {
                topology::delete_replica(&channel, &config, declare).await?;
            }
            if msg.exchange {
                topology::delete_exchange(&channel, config.exchange()).await?;
            }
            let _ = channel.close(200, "torn down".into()).await;
            Ok(())
        })
    }
}
