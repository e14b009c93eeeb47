//! [`RedisTransport`]: the actor, its connections and the protocol messages of
//! `cqrs_actors::transport`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::redis::Value;
use ::redis::aio::ConnectionManager;
use actix::prelude::*;
use cqrs_actors::transport::{
    Cancel, ConsumerTag, Declare, Inspect, Park, Ping, Publish, QueueStats, Settle, Settlement,
    Subscribe,
};
use cqrs_actors::{Error, ErrorKind, Result, TransportHandle};
use tokio::sync::{Notify, oneshot, watch};

use super::conn::{self, backoff, is_connection_error, redis_error};
use super::consumer::{self, Consumer, Ctx, Stream};
use super::keys::{self, Keys, message_fields, pack_member};
use super::maintenance::{Maintenance, Movers};
use super::publisher::{self, Outgoing, Request};
use super::{GroupStart, Local, RedisConfig, lock, scripts};

/// A declared queue: its streams (its own first) and its dead-letter queue.
#[derive(Debug, Clone)]
pub(super) struct QueueInfo {
    streams: Vec<Stream>,
    dead_letter_queue: String,
}

/// The Redis Streams transport actor. Start it with [`RedisTransport::connect`].
pub struct RedisTransport {
    config: Arc<RedisConfig>,
    pub(super) keys: Keys,
    pub(super) control: ConnectionManager,
    publisher: tokio::sync::mpsc::UnboundedSender<Request>,
    local: Arc<Mutex<Local>>,
    pub(super) queues: HashMap<String, QueueInfo>,
    pub(super) registered_dead_letters: HashSet<String>,
    consumers: BTreeMap<ConsumerTag, Vec<Arc<Consumer>>>,
    channels: HashMap<u64, Arc<Consumer>>,
    pub(super) maintenance: Maintenance,
    stop: watch::Sender<bool>,
    next_consumer: u64,
    next_channel: u64,
}

impl std::fmt::Debug for RedisTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTransport")
            .field("config", &self.config)
            .field("consumers", &self.consumers.len())
            .finish_non_exhaustive()
    }
}

impl RedisTransport {
    /// Connects (the control connection and the publisher's), checks the durability the
    /// configuration requires, and starts the transport with its mover and trimmer. A wrong
    /// URL, a wrong password or an unreachable server fails here with
    /// [`ErrorKind::Transport`].
    pub async fn connect(config: RedisConfig) -> Result<(TransportHandle, Addr<RedisTransport>)> {
        let timeout = config.publish_timeout.max(Duration::from_secs(1));
        let mut control = conn::manager(&config, timeout).await?;
        let _: String = ::redis::cmd("PING")
            .query_async(&mut control)
            .await
            .map_err(|e| redis_error(&format!("PING to {}", config.redacted_url()), e))?;
        if config.require_aof {
            check_aof(&mut control).await?;
        }
        let exchange = config.exchange.clone();
        let keys = Keys::new(&config.key_prefix, &config.exchange);
        let config = Arc::new(config);
        let (stop, stopped) = watch::channel(false);
        let local = Arc::new(Mutex::new(Local::default()));
        let maintenance = Maintenance {
            config: Arc::clone(&config),
            keys: keys.clone(),
            control: control.clone(),
            movers: Movers::default(),
            mover_wake: Arc::new(Notify::new()),
            local: Arc::clone(&local),
            stop: stopped,
        };
        let publisher = publisher::spawn(keys.clone(), Arc::clone(&config));
        let addr = RedisTransport {
            config,
            keys,
            control,
            publisher,
            local,
            queues: HashMap::new(),
            registered_dead_letters: HashSet::new(),
            consumers: BTreeMap::new(),
            channels: HashMap::new(),
            maintenance,
            stop,
            next_consumer: 0,
            next_channel: 0,
        }
        .start();
        Ok((
            TransportHandle::new("redis", &addr).with_exchange(exchange),
            addr,
        ))
    }

    /// Stops every consumer: no new reads; what they hold stays pending under their names.
    pub(super) fn stop_consumers(&mut self) {
        for c in self.channels.values() {
            c.state().stopped = true;
            c.wake.notify_one();
        }
    }

    /// Stops this process's consumers of `queue`, as [`Self::stop_consumers`] does.
    pub(super) fn stop_consumers_of(&mut self, queue: &str) {
        for c in self.channels.values().filter(|c| c.queue == queue) {
            c.state().stopped = true;
            c.wake.notify_one();
        }
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.config.publish_timeout
    }

    /// Sends one entry through the publisher, in order with every other publish.
    pub(super) fn append(&self, entry: Outgoing) -> ResponseFuture<Result<()>> {
        let (reply, answer) = oneshot::channel();
        let sent = self.publisher.send(Request {
            entry,
            deadline: self.deadline(),
            reply,
        });
        Box::pin(async move {
            if sent.is_err() {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    "the Redis publisher is gone",
                ));
            }
            answer
                .await
                .map_err(|_| Error::new(ErrorKind::Unavailable, "the Redis publisher is gone"))?
        })
    }

    /// The queue's streams and dead-letter queue, from this process's declarations or from
    /// the registry on the server.
    fn queue_info(&self, queue: &str) -> ResponseFuture<Result<QueueInfo>> {
        if let Some(info) = self.queues.get(queue) {
            let info = info.clone();
            return Box::pin(async move { Ok(info) });
        }
        let (mut control, keys, queue) =
            (self.control.clone(), self.keys.clone(), queue.to_owned());
        Box::pin(async move {
            let (dead_letter_queue, ids): (Option<String>, Vec<String>) = ::redis::pipe()
                .cmd("HGET")
                .arg(keys.queues())
                .arg(&queue)
                .cmd("SMEMBERS")
                .arg(keys.queue_ids(&queue))
                .query_async(&mut control)
                .await
                .map_err(|e| redis_error(&format!("HGET {}", keys.queues()), e))?;
            let dead_letter_queue = dead_letter_queue.ok_or_else(|| {
                Error::new(
                    ErrorKind::Config,
                    format!("queue {queue:?} is not declared on this exchange"),
                )
            })?;
            Ok(QueueInfo::new(&keys, &queue, dead_letter_queue, &ids))
        })
    }
}

impl QueueInfo {
    /// The queue's own stream first, then one per CQRS id.
    fn new(keys: &Keys, queue: &str, dead_letter_queue: String, cqrs_ids: &[String]) -> Self {
        let mut streams = vec![Stream {
            key: keys.queue_stream(queue),
            cqrs_id: None,
        }];
        streams.extend(cqrs_ids.iter().map(|id| Stream {
            key: keys.id_stream(id),
            cqrs_id: Some(id.clone()),
        }));
        Self {
            streams,
            dead_letter_queue,
        }
    }

    /// Adds the streams of `other` it lacks.
    fn merge(&mut self, other: &QueueInfo) {
        for s in &other.streams {
            if !self.streams.iter().any(|have| have.key == s.key) {
                self.streams.push(s.clone());
            }
        }
        self.dead_letter_queue.clone_from(&other.dead_letter_queue);
    }
}

async fn check_aof(control: &mut ConnectionManager) -> Result<()> {
    let reply: Vec<String> = ::redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendonly")
        .query_async(control)
        .await
        .map_err(|e| redis_error("CONFIG GET appendonly (for redis.require_aof)", e))?;
    if reply.get(1).map(String::as_str) != Some("yes") {
        return Err(Error::config(
            "redis.require_aof",
            "the server does not write an append-only file (appendonly is not yes): \
             acknowledged publishes would not survive a restart",
        ));
    }
    Ok(())
}

impl Actor for RedisTransport {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1 << 20);
        self.maintenance.clone().spawn();
    }

    /// Stops the consumers (their pending entries stay with their names, for the next
    /// process or a claim) and the background tasks.
    fn stopped(&mut self, _: &mut Context<Self>) {
        let _ = self.stop.send(true);
        self.stop_consumers();
    }
}

impl Handler<Declare> for RedisTransport {
    type Result = ResponseFuture<Result<()>>;

    fn handle(&mut self, msg: Declare, _: &mut Context<Self>) -> Self::Result {
        let ids: Vec<String> = msg
            .cqrs_ids
            .iter()
            .filter(|id| {
                self.config
                    .bind_only
                    .as_ref()
                    .is_none_or(|only| only.contains(id))
            })
            .cloned()
            .collect();
        let keys = &self.keys;
        let (q, dlq) = (&msg.queue, &msg.dead_letter_queue);
        let id_start = match self.config.group_start {
            GroupStart::Latest => "$",
            GroupStart::Earliest => "0",
        };
        let mut pipe = ::redis::pipe();
        pipe.ignore_errors();
        let mut groups = vec![(keys.queue_stream(q), q.clone(), "0")];
        groups.push((keys.queue_stream(dlq), dlq.clone(), "0"));
        for id in &ids {
            groups.push((keys.id_stream(id), q.clone(), id_start));
        }
        for (stream, group, start) in &groups {
            pipe.cmd("XGROUP")
                .arg("CREATE")
                .arg(stream)
                .arg(group)
                .arg(*start)
                .arg("MKSTREAM");
            pipe.cmd("SADD").arg(keys.streams()).arg(stream);
        }
        for id in &ids {
            pipe.cmd("SADD").arg(keys.bindings(id)).arg(q);
        }
        pipe.cmd("HSET").arg(keys.queues()).arg(q).arg(dlq);
        pipe.cmd("HSETNX").arg(keys.queues()).arg(dlq).arg(dlq);
        if !ids.is_empty() {
            pipe.cmd("SADD").arg(keys.queue_ids(q)).arg(&ids);
        }
        let declared = QueueInfo::new(keys, q, dlq.clone(), &ids);
        self.queues
            .entry(q.clone())
            .and_modify(|info| info.merge(&declared))
            .or_insert_with(|| declared.clone());
        self.queues
            .entry(dlq.clone())
            .or_insert_with(|| QueueInfo::new(keys, dlq, dlq.clone(), &[]));
        // Consumers of the queue start reading the streams of newly bound ids.
        for c in self.channels.values().filter(|c| &c.queue == q) {
            c.add_streams(&declared.streams);
            c.wake.notify_one();
        }
        self.registered_dead_letters.insert(dlq.clone());
        let own = keys.queue_stream(q);
        lock(&self.maintenance.movers).insert((keys.parked(&own), own));
        let (control, config, deadline) = (
            self.control.clone(),
            Arc::clone(&self.config),
            self.deadline(),
        );
        let queue = q.clone();
        Box::pin(async move {
            let replies: Vec<Value> = with_retry(&config, deadline, || {
                let (pipe, mut control) = (pipe.clone(), control.clone());
                async move { pipe.query_async::<Vec<Value>>(&mut control).await }
            })
            .await
            .map_err(|e| redis_error(&format!("declaring queue {queue}"), e))?;
            for reply in replies {
                if let Value::ServerError(e) = reply
                    && e.code() != "BUSYGROUP"
                {
                    return Err(Error::new(
                        ErrorKind::Transport,
                        format!("Redis refused to declare queue {queue}: {e:?}"),
                    ));
                }
            }
            Ok(())
        })
    }
}

/// Runs `op` again while the connection is lost, until `deadline`.
async fn with_retry<T, F, Fut>(
    config: &RedisConfig,
    deadline: Instant,
    mut op: F,
) -> std::result::Result<T, ::redis::RedisError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ::redis::RedisResult<T>>,
{
    let mut attempt = 0;
    loop {
        match op().await {
            Err(e) if is_connection_error(&e) && Instant::now() < deadline => {
                tokio::time::sleep(backoff(config, attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

impl Handler<Publish> for RedisTransport {
    type Result = ResponseFuture<Result<()>>;

    fn handle(&mut self, Publish(msg): Publish, _: &mut Context<Self>) -> Self::Result {
        let expires_at = msg.expiration.map(|ttl| {
            keys::now_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
        });
        self.append(Outgoing::Message(msg, expires_at))
    }
}

impl Handler<Park> for RedisTransport {
    type Result = ResponseFuture<Result<()>>;

    fn handle(&mut self, msg: Park, _: &mut Context<Self>) -> Self::Result {
        let stream = self.keys.route_stream(&msg.message.route);
        let parked = self.keys.parked(&stream);
        lock(&self.maintenance.movers).insert((parked.clone(), stream));
        let nonce = format!("{}:{}", keys::now_ms(), fastrand::u64(..));
        let member = pack_member(nonce.as_bytes(), &message_fields(msg.message));
        let delay = u64::try_from(msg.delay.as_millis()).unwrap_or(u64::MAX);
        let (control, config, deadline) = (
            self.control.clone(),
            Arc::clone(&self.config),
            self.deadline(),
        );
        let wake = Arc::clone(&self.maintenance.mover_wake);
        Box::pin(async move {
            let _due: i64 = with_retry(&config, deadline, || {
                let (member, mut control, parked) =
                    (member.clone(), control.clone(), parked.clone());
                async move {
                    scripts::PARK
                        .key(&parked)
                        .arg(delay)
                        .arg(member)
                        .invoke_async(&mut control)
                        .await
                }
            })
            .await
            .map_err(|e| redis_error(&format!("parking a copy in {parked}"), e))?;
            wake.notify_one();
            Ok(())
        })
    }
}

impl Handler<Subscribe> for RedisTransport {
    type Result = ResponseActFuture<Self, Result<ConsumerTag>>;

    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) -> Self::Result {
        let info = self.queue_info(&msg.queue);
        Box::pin(info.into_actor(self).map(move |info, this, _| {
            let info = info?;
            this.next_consumer += 1;
            let tag = ConsumerTag(this.next_consumer);
            let ctx = Ctx {
                config: Arc::clone(&this.config),
                control: this.control.clone(),
                local: Arc::clone(&this.local),
            };
            let mut started = Vec::new();
            for _ in 0..this.config.consumers {
                let slot = {
                    let mut local = lock(&this.local);
                    let used = local.slots.entry(msg.queue.clone()).or_default();
                    let slot = (0..).find(|n| !used.contains(n)).unwrap_or(0);
                    used.insert(slot);
                    slot
                };
                let name = format!("{}-{slot}", this.config.consumer_name);
                lock(&this.local)
                    .live
                    .entry(msg.queue.clone())
                    .or_default()
                    .insert(name.clone());
                this.next_channel += 1;
                let consumer = Arc::new(Consumer {
                    channel: this.next_channel,
                    queue: msg.queue.clone(),
                    dead_letter_stream: this.keys.queue_stream(&info.dead_letter_queue),
                    dead_letter_queue: info.dead_letter_queue.clone(),
                    name,
                    slot,
                    streams: Mutex::new(info.streams.clone()),
                    prefetch: msg.prefetch,
                    state: Mutex::default(),
                    wake: Notify::new(),
                });
                this.channels
                    .insert(consumer.channel, Arc::clone(&consumer));
                actix::spawn(consumer::run(
                    Arc::clone(&consumer),
                    msg.consumer.clone(),
                    ctx.clone(),
                ));
                started.push(consumer);
            }
            this.consumers.insert(tag, started);
            Ok(tag)
        }))
    }
}

impl Handler<Settle> for RedisTransport {
    type Result = ResponseFuture<Result<()>>;

    fn handle(&mut self, msg: Settle, _: &mut Context<Self>) -> Self::Result {
        let mut per_channel: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for t in &msg.tags {
            per_channel.entry(t.channel).or_default().push(t.tag);
        }
        let mut acks = Vec::new();
        for (channel, tags) in per_channel {
            let Some(c) = self.channels.get(&channel) else {
                continue;
            };
            let ids: Vec<_> = {
                let mut state = c.state();
                let ids: Vec<_> = tags
                    .iter()
                    .filter_map(|t| state.unacked.remove(t))
                    .collect();
                if msg.settlement == Settlement::Requeue {
                    state.requeued.extend(ids);
                    Vec::new()
                } else {
                    ids
                }
            };
            if msg.settlement == Settlement::Requeue {
                c.wake.notify_one();
            } else if !ids.is_empty() {
                acks.push((Arc::clone(c), ids));
            }
        }
        let (control, config) = (self.control.clone(), Arc::clone(&self.config));
        Box::pin(async move {
            let mut result = Ok(());
            for (c, ids) in acks {
                let mut control = control.clone();
                if let Err(e) = consumer::ack(&mut control, &config, &c, &ids).await {
                    result = Err(e);
                }
                c.wake.notify_one();
            }
            result
        })
    }
}

impl Handler<Cancel> for RedisTransport {
    type Result = Result<()>;

    fn handle(&mut self, msg: Cancel, _: &mut Context<Self>) -> Result<()> {
        let Some(consumers) = self.consumers.get(&msg.consumer) else {
            return Ok(());
        };
        let consumers = consumers.clone();
        for c in &consumers {
            c.state().stopped = true;
            c.wake.notify_one();
        }
        if !msg.release {
            return Ok(());
        }
        self.consumers.remove(&msg.consumer);
        let mut queues = BTreeSet::new();
        for c in consumers {
            self.channels.remove(&c.channel);
            c.state().unacked.clear();
            let mut local = lock(&self.local);
            if let Some(slots) = local.slots.get_mut(&c.queue) {
                slots.remove(&c.slot);
            }
            if let Some(live) = local.live.get_mut(&c.queue) {
                live.remove(&c.name);
            }
            local
                .orphans
                .entry(c.queue.clone())
                .or_default()
                .insert(c.name.clone());
            queues.insert(c.queue.clone());
        }
        // The consumers left of the same queues take the released entries over at once.
        for c in self.channels.values() {
            if queues.contains(&c.queue) {
                c.wake.notify_one();
            }
        }
        Ok(())
    }
}

impl Handler<Ping> for RedisTransport {
    type Result = ResponseFuture<Result<()>>;

    /// A `PING` on the control connection, answered within the response timeout.
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> Self::Result {
        let mut control = self.control.clone();
        Box::pin(async move {
            ::redis::cmd("PING")
                .query_async::<()>(&mut control)
                .await
                .map_err(|e| redis_error("PING", e))
        })
    }
}

impl Handler<Inspect> for RedisTransport {
    type Result = ResponseFuture<Result<QueueStats>>;

    /// `ready`: entries of the queue's streams not yet delivered to its group; `unacked`: its
    /// pending entries; `parked`: copies waiting in its parked set; `dead_letters`: entries of
    /// its dead-letter stream.
    fn handle(&mut self, msg: Inspect, _: &mut Context<Self>) -> Self::Result {
        let info = self.queue_info(&msg.queue);
        let (control, keys, config, deadline) = (
            self.control.clone(),
            self.keys.clone(),
            Arc::clone(&self.config),
            self.deadline(),
        );
        Box::pin(async move {
            let info = info.await?;
            let own = keys.queue_stream(&msg.queue);
            let dead = keys.queue_stream(&info.dead_letter_queue);
            let parked = keys.parked(&own);
            let (counts, (parked, dead_letters)): ((u64, u64), (u64, u64)) =
                with_retry(&config, deadline, || {
                    let mut invocation = scripts::INSPECT.prepare_invoke();
                    for s in &info.streams {
                        invocation.key(&s.key);
                    }
                    invocation.arg(&msg.queue);
                    let mut pipe = ::redis::pipe();
                    pipe.cmd("ZCARD").arg(&parked).cmd("XLEN").arg(&dead);
                    let mut control = control.clone();
                    async move {
                        let counts = invocation.invoke_async(&mut control).await?;
                        Ok((counts, pipe.query_async(&mut control).await?))
                    }
                })
                .await
                .map_err(|e| redis_error(&format!("inspecting queue {}", msg.queue), e))?;
            let dead_letters = if info.dead_letter_queue == msg.queue {
                0
            } else {
                dead_letters
            };
            Ok(QueueStats {
                ready: counts.0,
                unacked: counts.1,
                parked,
                dead_letters,
            })
        })
    }
}
