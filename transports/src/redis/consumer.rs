//! A consumer: one task with a connection of its own that reads a queue's streams with
//! `XREADGROUP` and hands the entries to the framework in batches, within the prefetch.
//!
//! Before reading new entries it takes up the ones pending under its own name (a restart under
//! the same name) and under names released in this process; every `claim_idle / 4` it takes
//! over entries left idle by consumers that are gone (`XCLAIM` after `XPENDING … IDLE`), and
//! sends an entry delivered `max_deliveries` times to the dead-letter stream with reason
//! `poison` instead of delivering it again.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, MultiplexedConnection};
use ::redis::{RedisError, Value};
use actix::Recipient;
use cqrs_actors::transport::{
    Deliveries, Delivery, DeliveryTag, HEADER_ERROR, HEADER_REASON, MAX_DELIVERIES,
};
use tokio::sync::Notify;

use super::conn::{backoff, dedicated, is_connection_error};
use super::keys::{
    Entry, F_HEADER, StreamId, now_ms, parse_entries, pending_entries, stream_replies,
};
use super::{Local, RedisConfig, lock, scripts};

/// One stream a consumer reads.
#[derive(Debug, Clone)]
pub(crate) struct Stream {
    /// Its key.
    pub key: String,
    /// The CQRS id of a per-id stream; `None` for the queue's own stream.
    pub cqrs_id: Option<String>,
}

/// What the actor and the consumer task share.
pub(crate) struct Consumer {
    pub channel: u64,
    pub queue: String,
    pub dead_letter_stream: String,
    pub dead_letter_queue: String,
    pub name: String,
    pub slot: usize,
    /// The streams it reads; Declare may add some while it runs (indexes stay valid).
    pub streams: Mutex<Vec<Stream>>,
    pub prefetch: u32,
    pub state: Mutex<State>,
    pub wake: Notify,
}

/// The deliveries a consumer holds.
#[derive(Default)]
pub(crate) struct State {
    /// Delivered and not settled: tag → (stream index, id).
    pub unacked: HashMap<u64, (usize, StreamId)>,
    pub next_tag: u64,
    /// Handed back with `Requeue`, to deliver again.
    pub requeued: Vec<(usize, StreamId)>,
    /// No new deliveries (cancelled).
    pub stopped: bool,
}

impl Consumer {
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The streams it reads now.
    pub(crate) fn streams(&self) -> Vec<Stream> {
        self.streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The key of stream `i`.
    pub(crate) fn key(&self, i: usize) -> String {
        self.streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(i)
            .map(|s| s.key.clone())
            .unwrap_or_default()
    }

    /// Starts reading `more` streams too (a Declare that bound more CQRS ids to the queue).
    pub(crate) fn add_streams(&self, more: &[Stream]) {
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        for s in more {
            if !streams.iter().any(|have| have.key == s.key) {
                streams.push(s.clone());
            }
        }
    }

    fn stopped(&self) -> bool {
        self.state().stopped
    }

    /// Room under the prefetch (without one, a read asks for [`UNBOUNDED_READ`] entries).
    fn room(&self) -> usize {
        let held = self.state().unacked.len();
        match self.prefetch {
            0 => UNBOUNDED_READ,
            p => (p as usize).saturating_sub(held),
        }
    }
}

/// How many entries a consumer without a prefetch asks for in one read.
const UNBOUNDED_READ: usize = 1000;

/// What a consumer task needs besides its own state.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub config: Arc<RedisConfig>,
    pub control: ConnectionManager,
    pub local: Arc<Mutex<Local>>,
}

/// An entry waiting for room under the prefetch.
struct Held {
    entry: Entry,
    redelivered: bool,
    /// Deliveries before this one, when known (claims and take-overs).
    count: Option<u64>,
}

/// Runs the consumer until it is cancelled or its recipient is gone.
pub(crate) async fn run(c: Arc<Consumer>, recipient: Recipient<Deliveries>, ctx: Ctx) {
    let mut held = VecDeque::new();
    let mut attempt = 0;
    while !c.stopped() {
        let conn = match dedicated(&ctx.config, ctx.config.block + Duration::from_secs(10)).await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, queue = %c.queue, consumer = %c.name, attempt, "Redis consumer cannot connect; trying again");
                tokio::time::sleep(backoff(&ctx.config, attempt)).await;
                attempt += 1;
                continue;
            }
        };
        let mut reader = Reader {
            c: &c,
            ctx: &ctx,
            conn,
            recipient: &recipient,
            held: &mut held,
            refused: 0,
        };
        match reader.serve().await {
            Ok(()) => break,
            Err(e) => {
                if attempt == 0 {
                    tracing::warn!(error = %e, queue = %c.queue, consumer = %c.name, "Redis consumer lost its connection; reconnecting");
                }
                tokio::time::sleep(backoff(&ctx.config, attempt)).await;
                attempt += 1;
            }
        }
    }
    tracing::debug!(queue = %c.queue, consumer = %c.name, "Redis consumer stopped");
}

struct Reader<'a> {
    c: &'a Arc<Consumer>,
    ctx: &'a Ctx,
    conn: MultiplexedConnection,
    recipient: &'a Recipient<Deliveries>,
    held: &'a mut VecDeque<Held>,
    /// Reads the server refused in a row (a key of another type, say): the pause before the
    /// next grows, and only every doubling is logged.
    refused: u32,
}

type ReadFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, RedisError>>>>;

impl Reader<'_> {
    /// Serves until cancelled (`Ok`) or the connection is lost (`Err`).
    async fn serve(&mut self) -> Result<(), RedisError> {
        let own = self.c.name.clone();
        self.adopt(&own).await?;
        let claim_every = (self.ctx.config.claim_idle / 4).max(Duration::from_millis(10));
        let mut next_claim = Instant::now() + claim_every;
        let mut read: Option<ReadFuture> = None;
        loop {
            if self.c.stopped() {
                return Ok(());
            }
            self.take_requeued().await?;
            let orphans: Vec<String> = lock(&self.ctx.local)
                .orphans
                .get(&self.c.queue)
                .map(|o| o.iter().cloned().collect())
                .unwrap_or_default();
            for name in orphans {
                if self.adopt(&name).await?
                    && let Some(o) = lock(&self.ctx.local).orphans.get_mut(&self.c.queue)
                {
                    o.remove(&name);
                }
            }
            if Instant::now() >= next_claim {
                self.claim().await?;
                next_claim = Instant::now() + claim_every;
            }
            if !self.deliver_held().await {
                return Ok(());
            }
            let room = self.c.room();
            if read.is_none() && room > 0 && self.held.is_empty() {
                read = Some(self.read(room));
            }
            let woken = self.c.wake.notified();
            let pause = tokio::time::sleep_until(next_claim.into());
            tokio::select! {
                r = async { read.as_mut().expect("checked").await }, if read.is_some() => {
                    read = None;
                    match r {
                        Ok(reply) => {
                            self.refused = 0;
                            self.take_read(&reply);
                        }
                        Err(e) if is_connection_error(&e) => return Err(e),
                        Err(e) => self.read_failed(&e).await,
                    }
                }
                () = woken => {}
                () = pause => {}
            }
        }
    }

    /// Starts `XREADGROUP … BLOCK` for up to `count` new entries per stream.
    fn read(&self, count: usize) -> ReadFuture {
        let mut cmd = ::redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.c.queue)
            .arg(&self.c.name)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(u64::try_from(self.ctx.config.block.as_millis()).unwrap_or(u64::MAX))
            .arg("STREAMS");
        let streams = self.c.streams();
        for s in &streams {
            cmd.arg(&s.key);
        }
        for _ in &streams {
            cmd.arg(">");
        }
        let mut conn = self.conn.clone();
        Box::pin(async move { cmd.query_async::<Value>(&mut conn).await })
    }

    /// Queues what a read returned, in id order across the streams.
    fn take_read(&mut self, reply: &Value) {
        let mut entries = Vec::new();
        let streams = self.c.streams();
        for (key, list) in stream_replies(reply) {
            if let Some(i) = streams.iter().position(|s| s.key.as_bytes() == key) {
                entries.extend(parse_entries(i, list));
            }
        }
        entries.sort_by_key(|e| e.id);
        self.held.extend(entries.into_iter().map(|entry| Held {
            entry,
            redelivered: false,
            count: None,
        }));
    }

    /// A read the server refused: a group or stream deleted under the consumer is created
    /// again (from the start for the queue's own stream, as configured for the others).
    async fn read_failed(&mut self, e: &RedisError) {
        if self.c.stopped() {
            return;
        }
        if e.code() == Some("NOGROUP") {
            tracing::error!(queue = %self.c.queue, "a consumer group of the queue was deleted; creating it again");
            let mut control = self.ctx.control.clone();
            for s in &self.c.streams() {
                let start = match (&s.cqrs_id, self.ctx.config.group_start) {
                    (Some(_), super::GroupStart::Latest) => "$",
                    _ => "0",
                };
                let created: Result<Value, RedisError> = ::redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(&s.key)
                    .arg(&self.c.queue)
                    .arg(start)
                    .arg("MKSTREAM")
                    .query_async(&mut control)
                    .await;
                if let Err(e) = created
                    && e.code() != Some("BUSYGROUP")
                {
                    tracing::warn!(error = %e, key = %s.key, "cannot create the consumer group again");
                }
            }
        } else {
            // 0.5 s doubling to 30 s; logged at the first refusal and each doubling after.
            let pause = Duration::from_millis(500)
                .saturating_mul(1 << self.refused.min(6))
                .min(Duration::from_secs(30));
            if self.refused <= 6 {
                tracing::error!(error = %e, queue = %self.c.queue, refused = self.refused + 1, pause_ms = pause.as_millis() as u64, "Redis refused XREADGROUP; trying again after a pause");
            }
            self.refused = self.refused.saturating_add(1);
            tokio::time::sleep(pause).await;
        }
    }

    /// The control connection: this consumer's own may be blocked in `XREADGROUP`.
    fn control(&self) -> ConnectionManager {
        self.ctx.control.clone()
    }

    /// Ids this consumer already holds (delivered or waiting for room).
    fn holding(&self) -> HashSet<(usize, StreamId)> {
        let mut ids: HashSet<_> = self.c.state().unacked.values().copied().collect();
        ids.extend(self.held.iter().map(|h| (h.entry.stream, h.id())));
        ids
    }

    /// Takes over the entries pending under `name` (this consumer's own, or a released one of
    /// this process). Returns whether none is left under that name.
    async fn adopt(&mut self, name: &str) -> Result<bool, RedisError> {
        const PAGE: usize = 1000;
        let holding = self.holding();
        let mut drained = true;
        for (i, s) in self.c.streams().iter().enumerate() {
            let pending: Value = ::redis::cmd("XPENDING")
                .arg(&s.key)
                .arg(&self.c.queue)
                .arg("-")
                .arg("+")
                .arg(PAGE)
                .arg(name)
                .query_async(&mut self.control())
                .await?;
            let list: Vec<(StreamId, u64)> = pending_entries(&pending)
                .into_iter()
                .filter(|(id, _, _)| !holding.contains(&(i, *id)))
                .map(|(id, _, count)| (id, count))
                .collect();
            if list.len() >= PAGE {
                drained = false;
            }
            self.take_over(i, &list, 0).await?;
        }
        Ok(drained)
    }

    /// Takes over entries idle longer than `claim_idle` under consumers not alive in this
    /// process.
    async fn claim(&mut self) -> Result<(), RedisError> {
        let idle = u64::try_from(self.ctx.config.claim_idle.as_millis()).unwrap_or(u64::MAX);
        let live: HashSet<String> = lock(&self.ctx.local)
            .live
            .get(&self.c.queue)
            .cloned()
            .unwrap_or_default();
        for (i, s) in self.c.streams().iter().enumerate() {
            let pending: Value = ::redis::cmd("XPENDING")
                .arg(&s.key)
                .arg(&self.c.queue)
                .arg("IDLE")
                .arg(idle)
                .arg("-")
                .arg("+")
                .arg(100)
                .query_async(&mut self.control())
                .await?;
            let list: Vec<(StreamId, u64)> = pending_entries(&pending)
                .into_iter()
                .filter(|(_, owner, _)| !live.contains(owner))
                .map(|(id, _, count)| (id, count))
                .collect();
            if !list.is_empty() {
                tracing::info!(queue = %self.c.queue, key = %s.key, entries = list.len(), "taking over entries left pending by a consumer that is gone");
            }
            self.take_over(i, &list, idle).await?;
        }
        Ok(())
    }

    /// Claims `list` (id, deliveries so far) of stream `i` for this consumer, sending those
    /// delivered `max_deliveries` times to the dead-letter stream instead.
    async fn take_over(
        &mut self,
        i: usize,
        list: &[(StreamId, u64)],
        min_idle: u64,
    ) -> Result<(), RedisError> {
        if list.is_empty() {
            return Ok(());
        }
        let max = u64::from(self.ctx.config.max_deliveries);
        let (poison, rest): (Vec<_>, Vec<_>) = list.iter().partition(|(_, n)| *n >= max);
        for (id, n) in poison.into_iter().copied() {
            self.poison(i, id, n).await?;
        }
        if rest.is_empty() {
            return Ok(());
        }
        let counts: HashMap<StreamId, u64> = rest.iter().map(|(id, n)| (*id, *n)).collect();
        let mut cmd = ::redis::cmd("XCLAIM");
        cmd.arg(self.c.key(i))
            .arg(&self.c.queue)
            .arg(&self.c.name)
            .arg(min_idle);
        for (id, _) in &rest {
            cmd.arg(id.to_string());
        }
        let claimed: Value = cmd.query_async(&mut self.control()).await?;
        let mut entries = parse_entries(i, &claimed);
        entries.sort_by_key(|e| e.id);
        for entry in entries {
            let count = counts.get(&entry.id).copied();
            self.held.push_back(Held {
                entry,
                redelivered: true,
                count,
            });
        }
        Ok(())
    }

    /// Moves a crash-looping entry to the dead-letter stream with reason `poison`.
    async fn poison(&mut self, i: usize, id: StreamId, deliveries: u64) -> Result<(), RedisError> {
        let config = &self.ctx.config;
        let stream = self.c.key(i);
        let expires = config
            .dead_message_ttl
            .map(|ttl| (now_ms() + u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)).to_string())
            .unwrap_or_default();
        let error = format!(
            "delivered {deliveries} times without being settled (max_deliveries = {}); \
             a consumer crashed or hung on it each time",
            config.max_deliveries
        );
        tracing::error!(queue = %self.c.queue, key = %stream, id = %id, deliveries, "poison entry moved to the dead-letter stream");
        let mut control = self.ctx.control.clone();
        let _: i64 = scripts::DEAD_LETTER
            .key(&stream)
            .key(&self.c.dead_letter_stream)
            .arg(&self.c.queue)
            .arg(id.to_string())
            .arg(&self.c.dead_letter_queue)
            .arg(format!("cqrs.{}.", self.c.queue))
            .arg(expires)
            .arg(format!("{F_HEADER}{HEADER_REASON}"))
            .arg("poison")
            .arg(format!("{F_HEADER}{HEADER_ERROR}"))
            .arg(error)
            .invoke_async(&mut control)
            .await?;
        Ok(())
    }

    /// Delivers again what was handed back with `Requeue`, reading the entries anew.
    async fn take_requeued(&mut self) -> Result<(), RedisError> {
        let requeued = std::mem::take(&mut self.c.state().requeued);
        if requeued.is_empty() {
            return Ok(());
        }
        let mut pipe = ::redis::pipe();
        for (i, id) in &requeued {
            let id = id.to_string();
            pipe.cmd("XRANGE").arg(self.c.key(*i)).arg(&id).arg(&id);
        }
        let mut control = self.ctx.control.clone();
        let replies: Vec<Value> = match pipe.query_async(&mut control).await {
            Ok(r) => r,
            Err(e) => {
                self.c.state().requeued.extend(requeued);
                return Err(e);
            }
        };
        let mut front = Vec::new();
        for ((i, id), reply) in requeued.into_iter().zip(replies) {
            match parse_entries(i, &reply).pop() {
                Some(entry) => front.push(Held {
                    entry,
                    redelivered: true,
                    count: None,
                }),
                None => {
                    tracing::warn!(queue = %self.c.queue, id = %id, "a requeued entry is gone from its stream (trimmed with trim_undelivered?)");
                    self.ack(i, &[id]).await;
                }
            }
        }
        for h in front.into_iter().rev() {
            self.held.push_front(h);
        }
        Ok(())
    }

    /// Hands held entries to the recipient as far as the prefetch allows. Returns `false` when
    /// the recipient is gone.
    async fn deliver_held(&mut self) -> bool {
        loop {
            let room = self.c.room().min(MAX_DELIVERIES);
            if room == 0 || self.held.is_empty() || self.c.stopped() {
                return true;
            }
            let now = now_ms();
            let mut batch: Vec<Delivery> = Vec::new();
            let mut dropped: Vec<(usize, StreamId)> = Vec::new();
            {
                let mut state = self.c.state();
                while batch.len() < room {
                    let Some(h) = self.held.pop_front() else {
                        break;
                    };
                    let (i, id) = (h.entry.stream, h.entry.id);
                    if h.entry.fields.is_none() {
                        tracing::warn!(queue = %self.c.queue, id = %id, "a pending entry is gone from its stream; acknowledging it");
                        dropped.push((i, id));
                        continue;
                    }
                    if h.entry.expired(now) {
                        tracing::info!(queue = %self.c.queue, id = %id, "entry expired before delivery; dropped");
                        dropped.push((i, id));
                        continue;
                    }
                    let tag = state.next_tag;
                    state.next_tag += 1;
                    state.unacked.insert(tag, (i, id));
                    batch.push(h.entry.into_delivery(
                        DeliveryTag {
                            channel: self.c.channel,
                            tag,
                        },
                        &self.c.queue,
                        h.redelivered,
                        h.count,
                    ));
                }
            }
            let mut per_stream: HashMap<usize, Vec<StreamId>> = HashMap::new();
            for (i, id) in dropped {
                per_stream.entry(i).or_default().push(id);
            }
            for (i, ids) in per_stream {
                self.ack(i, &ids).await;
            }
            if batch.is_empty() {
                continue;
            }
            if let Err(e) = self.recipient.send(Deliveries(batch)).await {
                tracing::warn!(error = %e, queue = %self.c.queue, "the consumer is gone; its deliveries stay pending for the next one");
                self.c.state().stopped = true;
                return false;
            }
        }
    }

    async fn ack(&self, i: usize, ids: &[StreamId]) {
        let mut control = self.ctx.control.clone();
        let mut cmd = ::redis::cmd("XACK");
        cmd.arg(self.c.key(i)).arg(&self.c.queue);
        for id in ids {
            cmd.arg(id.to_string());
        }
        if let Err(e) = cmd.query_async::<i64>(&mut control).await {
            tracing::warn!(error = %e, queue = %self.c.queue, "XACK failed; the entries stay pending and come back");
        }
    }
}

impl Held {
    fn id(&self) -> StreamId {
        self.entry.id
    }
}

/// Acknowledges deliveries: `XACK` per stream, in one round trip, tried again while the
/// connection comes back (an acknowledgement that is lost brings the entry back).
pub(crate) async fn ack(
    control: &mut ConnectionManager,
    config: &RedisConfig,
    c: &Consumer,
    ids: &[(usize, StreamId)],
) -> cqrs_actors::Result<()> {
    let mut per_stream: HashMap<usize, BTreeSet<StreamId>> = HashMap::new();
    for (i, id) in ids {
        per_stream.entry(*i).or_default().insert(*id);
    }
    let mut pipe = ::redis::pipe();
    for (i, ids) in &per_stream {
        pipe.cmd("XACK").arg(c.key(*i)).arg(&c.queue);
        for id in ids {
            pipe.arg(id.to_string());
        }
    }
    let deadline = Instant::now() + config.publish_timeout;
    let mut attempt = 0;
    loop {
        match pipe.query_async::<Vec<i64>>(control).await {
            Ok(_) => return Ok(()),
            Err(e) if is_connection_error(&e) && Instant::now() < deadline => {
                tokio::time::sleep(backoff(config, attempt)).await;
                attempt += 1;
            }
            Err(e) => {
                return Err(super::conn::redis_error(
                    &format!("XACK on queue {}", c.queue),
                    e,
                ));
            }
        }
    }
}
