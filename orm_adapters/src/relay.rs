//! [`OutboxRelay`]: the actor that publishes outbox rows in order, with a window of unconfirmed
//! publishes, and deletes them once the broker confirmed them.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix::prelude::*;
use cqrs_actors::{ErrorKind, Publisher, Result};
use sea_orm::DatabaseConnection;

use crate::outbox::Outbox;

/// How an [`OutboxRelay`] paces itself.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    window: usize,
    poll_interval: Duration,
    lease_ttl: Duration,
    owner: String,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            window: 256,
            poll_interval: Duration::from_millis(500),
            lease_ttl: Duration::from_secs(10),
            owner: format!("{}-{:016x}", std::process::id(), fastrand::u64(..)),
        }
    }
}

impl RelayConfig {
    /// Unconfirmed publishes at most (default 256). Keep it at or below the system's
    /// `master.publish_window`, whose Producer keeps the order of what it is handed.
    #[must_use]
    pub fn with_window(mut self, window: usize) -> Self {
        self.window = window.max(1);
        self
    }

    /// How often the outbox is read when nothing woke the relay (default 500 ms): the fallback
    /// for rows written by other processes.
    #[must_use]
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// How long a relay holds the lease without renewing it (default 10 s). Another process
    /// takes over after this long when the holder dies.
    #[must_use]
    pub fn with_lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// The name this relay holds the lease under (default: process id and a random suffix).
    #[must_use]
    pub fn with_owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }
}

/// Counters of a relay, shared with its handle.
#[derive(Debug, Default)]
pub struct RelayStats {
    relayed: AtomicU64,
    rounds: AtomicU64,
}

impl RelayStats {
    /// Events published, confirmed and removed from the outbox.
    #[must_use]
    pub fn relayed(&self) -> u64 {
        self.relayed.load(Ordering::Relaxed)
    }
}

/// The outbox relay (the master-side half of DESIGN.md section 3).
///
/// Several processes may run one each on the same outbox: they share a lease, so one relays at
/// a time, in outbox order, and another takes over when it stops renewing. If the relay dies
/// between a publish and the deletion of its row, the row is published again by the next
/// holder: at most `window` events are sent twice, and the replicas' revision rules absorb the
/// duplicates.
pub struct OutboxRelay {
    db: DatabaseConnection,
    outbox: Outbox,
    publisher: Publisher,
    config: RelayConfig,
    stats: Arc<RelayStats>,
    worker: Option<SpawnHandle>,
}

impl fmt::Debug for OutboxRelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboxRelay")
            .field("outbox", &self.outbox)
            .field("config", &self.config)
            .finish()
    }
}

/// Stops a relay at once, as a crash would: what is in flight is neither awaited nor deleted,
/// and the lease is kept until it expires.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopRelay;

/// Stops a relay and gives its lease up, so another process takes over at once. Rows whose
/// publish was not yet confirmed stay in the outbox and are published by the next holder.
#[derive(Debug, Message)]
#[rtype(result = "Result<()>")]
pub struct ShutdownRelay;

impl OutboxRelay {
    /// A relay of `outbox` on `db`, publishing through `publisher` (from
    /// [`CqrsSystem::publisher`](cqrs_actors::CqrsSystem::publisher); the system must register
    /// the master models whose events are in the outbox).
    #[must_use]
    pub fn new(
        db: DatabaseConnection,
        outbox: Outbox,
        publisher: Publisher,
        config: RelayConfig,
    ) -> Self {
        Self {
            db,
            outbox,
            publisher,
            config,
            stats: Arc::default(),
            worker: None,
        }
    }

    /// The relay's counters (keep a clone before starting it).
    #[must_use]
    pub fn stats(&self) -> Arc<RelayStats> {
        Arc::clone(&self.stats)
    }
}

impl Actor for OutboxRelay {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let worker = Worker {
            db: self.db.clone(),
            outbox: self.outbox.clone(),
            publisher: self.publisher.clone(),
            config: self.config.clone(),
            stats: Arc::clone(&self.stats),
        };
        self.worker = Some(ctx.spawn(worker.run().into_actor(self)));
    }
}

impl Handler<StopRelay> for OutboxRelay {
    type Result = ();

    fn handle(&mut self, _: StopRelay, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<ShutdownRelay> for OutboxRelay {
    type Result = ResponseActFuture<Self, Result<()>>;

    fn handle(&mut self, _: ShutdownRelay, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(worker) = self.worker.take() {
            ctx.cancel_future(worker);
        }
        let (db, outbox, owner) = (
            self.db.clone(),
            self.outbox.clone(),
            self.config.owner.clone(),
        );
        Box::pin(
            async move { outbox.release(&db, &owner).await }
                .into_actor(self)
                .map(|result, _, ctx| {
                    ctx.stop();
                    result
                }),
        )
    }
}

/// What one round ended with.
enum Round {
    /// The outbox is empty (as far as this round saw).
    Idle,
    /// More may be waiting: go again at once.
    Busy,
    /// Another process holds the lease.
    NotLeader,
}

type Pending = Pin<Box<dyn Future<Output = Result<()>>>>;

/// Rows relayed per round before the relay reads the outbox from its start again, so that a row
/// committed late with a lower id is not left waiting behind a busy stream.
const ROUND_ROWS: usize = 20_000;

struct Worker {
    db: DatabaseConnection,
    outbox: Outbox,
    publisher: Publisher,
    config: RelayConfig,
    stats: Arc<RelayStats>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Worker {
    async fn run(self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let round = self.round().await;
            self.stats.rounds.fetch_add(1, Ordering::Relaxed);
            match round {
                Ok(Round::Busy) => backoff = Duration::from_millis(100),
                Ok(Round::Idle) => {
                    backoff = Duration::from_millis(100);
                    let _ = tokio::time::timeout(self.config.poll_interval, self.outbox.notified())
                        .await;
                }
                Ok(Round::NotLeader) => tokio::time::sleep(self.config.poll_interval).await,
                Err(e) => {
                    // The events stay in the outbox and are tried again, in order; nothing
                    // behind the failing one is published until it goes out.
                    let hint = match e.kind() {
                        ErrorKind::Config => {
                            "register each MasterTable's model() with the CqrsSystem whose \
                             publisher the relay uses"
                        }
                        ErrorKind::Decode => "an outbox row is not a readable event",
                        _ => "the broker or the database is unavailable",
                    };
                    tracing::error!(outbox = %self.outbox.table(), error = %e, hint, retry_in = ?backoff, "outbox relay failed; events wait in the outbox");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn renew(&self) -> Result<bool> {
        let ttl = i64::try_from(self.config.lease_ttl.as_millis()).unwrap_or(i64::MAX / 2);
        self.outbox
            .lease(&self.db, &self.config.owner, now_ms(), ttl)
            .await
    }

    /// Relays from the start of the outbox until it is empty or [`ROUND_ROWS`] went out.
    async fn round(&self) -> Result<Round> {
        if !self.renew().await? {
            return Ok(Round::NotLeader);
        }
        let window = self.config.window;
        let renew_every = self.config.lease_ttl / 3;
        let mut renewed = std::time::Instant::now();
        let mut cursor = 0;
        let mut exhausted = false;
        let mut sent = 0;
        let mut in_flight: VecDeque<(i64, Pending)> = VecDeque::with_capacity(window);
        let mut confirmed: Vec<i64> = Vec::new();
        loop {
            // Rows published but not yet deleted (in flight or confirmed) never exceed the
            // window: that bounds what a crash can make the next holder send twice.
            if !exhausted && in_flight.len() + confirmed.len() <= window / 2 && sent < ROUND_ROWS {
                self.flush(&mut confirmed).await?;
                let want = window - in_flight.len();
                let rows = self.outbox.read(&self.db, cursor, want).await?;
                exhausted = rows.len() < want;
                for row in rows {
                    cursor = row.id;
                    sent += 1;
                    let publish = self.publisher.publish(row.envelope, row.route);
                    in_flight.push_back((row.id, Box::pin(publish)));
                }
            }
            let Some((id, publish)) = in_flight.pop_front() else {
                self.flush(&mut confirmed).await?;
                return Ok(if exhausted { Round::Idle } else { Round::Busy });
            };
            match publish.await {
                Ok(()) => {}
                // No replica queue is bound to the CQRS id: the broker took the event and
                // delivered it to nobody, as it does for a django-cqrs master. Holding the row
                // would stop the outbox until some replica appears.
                Err(e) if e.kind() == ErrorKind::Unroutable => {
                    tracing::warn!(outbox = %self.outbox.table(), id, error = %e, "CQRS event reached no queue");
                }
                Err(e) => {
                    // Later publishes may still go out; their rows stay, so they are sent again
                    // in order after the failed one.
                    self.flush(&mut confirmed).await?;
                    return Err(e);
                }
            }
            confirmed.push(id);
            if confirmed.len() >= (window / 2).max(1) {
                self.flush(&mut confirmed).await?;
            }
            if renewed.elapsed() >= renew_every {
                renewed = std::time::Instant::now();
                if !self.renew().await? {
                    self.flush(&mut confirmed).await?;
                    tracing::warn!(outbox = %self.outbox.table(), "outbox relay lost its lease");
                    return Ok(Round::NotLeader);
                }
            }
        }
    }

    async fn flush(&self, confirmed: &mut Vec<i64>) -> Result<()> {
        if confirmed.is_empty() {
            return Ok(());
        }
        self.outbox.delete(&self.db, confirmed).await?;
        self.stats
            .relayed
            .fetch_add(confirmed.len() as u64, Ordering::Relaxed);
        confirmed.clear();
        Ok(())
    }
}
