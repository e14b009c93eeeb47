//! The outbox relay: publishes an outbox's events in order, as they were encoded at commit,
//! with one window of unconfirmed publishes, and deletes them once the broker confirmed them.
//! The system starts one per registered outbox and stops it on shutdown.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::sync::Notify;

use crate::error::{ErrorKind, Result};
use crate::outbox::OutboxStore;
use crate::stats::{IdMetrics, Metrics, Outcome};
use crate::transport::TransportHandle;

/// Rows relayed per round before the relay reads the outbox from its start again, so that a row
/// committed late with a lower id is not left waiting behind a busy stream.
const ROUND_ROWS: usize = 20_000;

/// How often the relay looks for events of CQRS ids no master model is registered for.
const UNKNOWN_CHECK_EVERY: Duration = Duration::from_secs(60);

/// How a relay paces itself (from `[master]`).
#[derive(Debug, Clone)]
pub(crate) struct RelaySettings {
    pub window: usize,
    pub poll_interval: Duration,
    pub lease_ttl: Duration,
    pub owner: String,
}

/// What the system and a running relay share.
pub(crate) struct RelayControl {
    stopping: AtomicBool,
    stop: Notify,
    /// Notified after every deletion of relayed events.
    progress: Notify,
    status: Mutex<RelayStatus>,
}

impl Default for RelayControl {
    fn default() -> Self {
        Self {
            stopping: AtomicBool::new(false),
            stop: Notify::new(),
            progress: Notify::new(),
            status: Mutex::new(RelayStatus {
                leader: false,
                moved: Instant::now(),
                error: None,
            }),
        }
    }
}

impl RelayControl {
    /// How the relay is doing.
    pub fn status(&self) -> std::sync::MutexGuard<'_, RelayStatus> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The relay deleted relayed events, or found nothing to relay.
    fn moved(&self) {
        let mut s = self.status();
        s.leader = true;
        s.moved = Instant::now();
        s.error = None;
    }
}

/// How a relay is doing, for the health check.
#[derive(Debug, Clone)]
pub(crate) struct RelayStatus {
    /// It holds the outbox's lease (another process relays otherwise).
    pub leader: bool,
    /// When it last deleted relayed events or found the outbox empty.
    pub moved: Instant,
    /// Its last failure, until it moves again.
    pub error: Option<String>,
}

/// A running relay.
pub(crate) struct RelayHandle {
    pub outbox: Arc<dyn OutboxStore>,
    pub cqrs_ids: Arc<[String]>,
    control: Arc<RelayControl>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RelayHandle {
    /// Starts relaying on the current arbiter.
    pub fn start(
        outbox: Arc<dyn OutboxStore>,
        cqrs_ids: Vec<String>,
        transport: TransportHandle,
        settings: RelaySettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        let control = Arc::new(RelayControl::default());
        let cqrs_ids: Arc<[String]> = cqrs_ids.into();
        let relay = Relay {
            outbox: Arc::clone(&outbox),
            cqrs_ids: Arc::clone(&cqrs_ids),
            transport,
            settings,
            metrics,
            control: Arc::clone(&control),
            warned: BTreeSet::new(),
            checked: None,
            renewed: None,
        };
        let task = actix::spawn(relay.supervise());
        Self {
            outbox,
            cqrs_ids,
            control,
            task: Some(task),
        }
    }

    /// Waits until every event of the registered CQRS ids written before this call is
    /// confirmed by the broker and deleted.
    pub async fn flush(&self) -> Result<()> {
        let Some(mark) = self.outbox.last_id().await? else {
            return Ok(());
        };
        loop {
            let progress = self.control.progress.notified();
            let first = self.outbox.read(0, 1, &self.cqrs_ids).await?;
            if first.first().is_none_or(|e| e.id > mark) {
                return Ok(());
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), progress).await;
        }
    }

    /// What the relay shares with its handle (its status, for the health check).
    pub fn control(&self) -> Arc<RelayControl> {
        Arc::clone(&self.control)
    }

    /// Stops reading, waits for the publishes in flight, deletes what they confirmed and gives
    /// the lease up.
    pub async fn stop(&mut self) {
        self.control.stopping.store(true, Ordering::SeqCst);
        self.control.stop.notify_waiters();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        // A system dropped without shutdown stops relaying as a crash would: the lease expires
        // and unconfirmed events are published again by the next holder.
        if let Some(task) = self.task.take() {
            task.abort();
        }
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
    /// Asked to stop.
    Stopped,
}

type Pending = Pin<Box<dyn Future<Output = Result<()>>>>;

/// Confirmed events being deleted while the relay goes on.
struct Deleting {
    ids: Vec<i64>,
    future: Pending,
}

struct Relay {
    outbox: Arc<dyn OutboxStore>,
    cqrs_ids: Arc<[String]>,
    transport: TransportHandle,
    settings: RelaySettings,
    metrics: Arc<Metrics>,
    control: Arc<RelayControl>,
    /// CQRS ids already reported as having events but no master model.
    warned: BTreeSet<String>,
    checked: Option<Instant>,
    /// When the lease was last taken or renewed.
    renewed: Option<Instant>,
}

impl Relay {
    fn stopping(&self) -> bool {
        self.control.stopping.load(Ordering::SeqCst)
    }

    /// Runs the relay; a panic in it is logged and the relay starts again.
    async fn supervise(mut self) {
        loop {
            match AssertUnwindSafe(self.run()).catch_unwind().await {
                Ok(()) => break,
                Err(_) => {
                    tracing::error!(outbox = %self.outbox.name(), "outbox relay panicked; starting it again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        if let Err(e) = self.outbox.release(&self.settings.owner).await {
            tracing::warn!(outbox = %self.outbox.name(), error = %e, "could not release the outbox lease; another relay takes over when it expires");
        }
    }

    async fn run(&mut self) {
        let mut backoff = Duration::from_millis(100);
        while !self.stopping() {
            let round = self.round().await;
            let pause = match round {
                Ok(Round::Stopped) => return,
                Ok(Round::Busy) => {
                    backoff = Duration::from_millis(100);
                    self.control.moved();
                    continue;
                }
                // Another process holds the lease: try again at the next poll, or at once when a
                // writer of this process commits (the holder may have given the lease up).
                Ok(idle @ (Round::Idle | Round::NotLeader)) => {
                    backoff = Duration::from_millis(100);
                    if matches!(idle, Round::Idle) {
                        self.control.moved();
                    } else {
                        // Not this process's to relay: nothing for it to be stuck on.
                        let mut s = self.control.status();
                        s.leader = false;
                        s.moved = Instant::now();
                        s.error = None;
                    }
                    self.report_unknown_ids().await;
                    let wake = self.outbox.wake_signal();
                    let woken = wake.notified();
                    let stop = self.control.stop.notified();
                    if self.stopping() {
                        return;
                    }
                    tokio::select! {
                        () = woken => {}
                        () = stop => {}
                        () = tokio::time::sleep(self.settings.poll_interval) => {}
                    }
                    continue;
                }
                Err(e) => {
                    self.control.status().error = Some(e.to_string());
                    // The events stay in the outbox and are tried again, in order; nothing
                    // behind the failing one is published until it goes out.
                    tracing::error!(outbox = %self.outbox.name(), error = %e, retry_in = ?backoff, "outbox relay failed; events wait in the outbox");
                    let pause = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    pause
                }
            };
            let stop = self.control.stop.notified();
            if self.stopping() {
                return;
            }
            tokio::select! {
                () = stop => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Logs, once per id, events that wait for a CQRS id no master model of this system is
    /// registered for: they stay in the outbox for a process that registers it.
    async fn report_unknown_ids(&mut self) {
        if self
            .checked
            .is_some_and(|t| t.elapsed() < UNKNOWN_CHECK_EVERY)
        {
            return;
        }
        self.checked = Some(Instant::now());
        let waiting = match self.outbox.waiting().await {
            Ok(w) => w,
            Err(e) => {
                tracing::debug!(outbox = %self.outbox.name(), error = %e, "could not count the outbox");
                return;
            }
        };
        for (cqrs_id, count) in waiting {
            if self.cqrs_ids.contains(&cqrs_id) || !self.warned.insert(cqrs_id.clone()) {
                continue;
            }
            tracing::error!(outbox = %self.outbox.name(), cqrs_id = %crate::values::excerpt(&cqrs_id), events = count, "events wait in the outbox for a CQRS id no master model is registered for; they stay there until a process that registers it relays them");
        }
    }

    /// Takes or renews the lease, unless this relay renewed it less than a third of its time
    /// to live ago.
    async fn renew(&mut self) -> Result<bool> {
        if self
            .renewed
            .is_some_and(|t| t.elapsed() < self.settings.lease_ttl / 3)
        {
            return Ok(true);
        }
        let held = self
            .outbox
            .lease(&self.settings.owner, self.settings.lease_ttl)
            .await?;
        self.renewed = held.then(Instant::now);
        Ok(held)
    }

    /// Relays from the start of the outbox until it is empty (as far as reads and wake-ups
    /// tell), starting over from the beginning every [`ROUND_ROWS`] rows.
    ///
    /// At most a window of publishes waits for confirms, and it is kept full: a quarter of it
    /// is read again as soon as it is free. Confirmed events are deleted a quarter window at a
    /// time while later publishes wait for theirs, and reads pause while a window of them
    /// waits to be deleted (the database is behind). Events published and not yet deleted
    /// thus stay under two windows: what a crash can make the next holder send again.
    async fn round(&mut self) -> Result<Round> {
        if !self.renew().await? {
            return Ok(Round::NotLeader);
        }
        let window = self.settings.window.max(1);
        let step = (window / 4).max(1);
        let wake = self.outbox.wake_signal();
        let mut cursor = 0;
        let mut exhausted = false;
        let mut sent = 0;
        // Ids published and not yet deleted: a read from the start of the outbox again skips
        // them rather than publishing them twice.
        let mut held: HashSet<i64> = HashSet::with_capacity(window);
        let mut in_flight: VecDeque<(i64, Arc<IdMetrics>, Pending)> =
            VecDeque::with_capacity(window);
        let mut confirmed: Vec<i64> = Vec::with_capacity(window);
        let mut deleting: Option<Deleting> = None;
        loop {
            let stopping = self.stopping();
            if sent >= ROUND_ROWS && deleting.is_none() {
                // Back to the start for rows committed late with lower ids. No delete is
                // running, so every row the read can see is either held or not relayed yet.
                cursor = 0;
                sent = 0;
                exhausted = false;
            }
            // Confirmed events waiting to be deleted stop the reads once they are a window:
            // the database is behind.
            let room = window - in_flight.len();
            let undeleted = held.len() - in_flight.len();
            if !stopping && !exhausted && sent < ROUND_ROWS && room >= step && undeleted < window {
                let rows = self.outbox.read(cursor, room, &self.cqrs_ids).await?;
                exhausted = rows.len() < room;
                for row in rows {
                    cursor = row.id;
                    if !held.insert(row.id) {
                        continue;
                    }
                    sent += 1;
                    let figures = self.metrics.id(row.event.cqrs_id());
                    let publish = self.transport.publish(row.event.into_message());
                    in_flight.push_back((row.id, figures, Box::pin(publish)));
                }
            }
            if deleting.is_none()
                && !confirmed.is_empty()
                && (confirmed.len() >= step || in_flight.is_empty())
            {
                deleting = Some(self.delete(std::mem::take(&mut confirmed)));
            }
            if in_flight.is_empty() && deleting.is_none() {
                return Ok(if stopping {
                    Round::Stopped
                } else if exhausted {
                    Round::Idle
                } else {
                    Round::Busy
                });
            }
            let woken = exhausted && !stopping;
            tokio::select! {
                biased;
                deleted = async { deleting.as_mut().map(|d| &mut d.future).expect("a delete").await },
                    if deleting.is_some() =>
                {
                    let done = deleting.take().map(|d| d.ids).unwrap_or_default();
                    if let Err(e) = deleted {
                        self.settle(&mut confirmed).await;
                        return Err(e);
                    }
                    for id in &done {
                        held.remove(id);
                    }
                    self.control.moved();
                    self.control.progress.notify_waiters();
                }
                published = async { in_flight.front_mut().map(|p| &mut p.2).expect("a publish").await },
                    if !in_flight.is_empty() =>
                {
                    let Some((id, figures, _)) = in_flight.pop_front() else {
                        continue;
                    };
                    match published {
                        Ok(()) => figures.count(Outcome::Published, 1),
                        // No replica queue is bound to the CQRS id: the broker took the event
                        // and delivered it to nobody, as it does for a django-cqrs master.
                        // Holding the row would stop the outbox until some replica appears.
                        Err(e) if e.kind() == ErrorKind::Unroutable => {
                            tracing::warn!(outbox = %self.outbox.name(), id, error = %e, "CQRS event reached no queue");
                        }
                        Err(e) => {
                            // Later publishes may still go out; their rows stay, so they are
                            // sent again in order after the failed one.
                            if let Some(d) = deleting.take() {
                                let _ = d.future.await;
                            }
                            self.settle(&mut confirmed).await;
                            return Err(e);
                        }
                    }
                    confirmed.push(id);
                }
                // Nothing more was there at the last read: read again when a writer commits,
                // from the start of the outbox, as a transaction that took its ids before the
                // last read and committed after it has them below the cursor. Held ids are
                // skipped.
                () = wake.notified(), if woken => {
                    exhausted = false;
                    cursor = 0;
                }
            }
            if !self.renew().await? {
                if let Some(d) = deleting.take() {
                    let _ = d.future.await;
                }
                self.settle(&mut confirmed).await;
                tracing::warn!(outbox = %self.outbox.name(), "outbox relay lost its lease");
                return Ok(Round::NotLeader);
            }
        }
    }

    /// Starts deleting confirmed events while the relay goes on. The delete runs as a task of
    /// its own, so that it moves on while the relay awaits a read (which may need the very
    /// connection the delete holds, when the pool has one).
    fn delete(&self, ids: Vec<i64>) -> Deleting {
        let outbox = Arc::clone(&self.outbox);
        let batch = ids.clone();
        let task = actix::spawn(async move { outbox.delete(&batch).await });
        Deleting {
            ids,
            future: Box::pin(async move {
                task.await.unwrap_or_else(|e| {
                    Err(crate::error::Error::new(
                        ErrorKind::Database,
                        format!("deleting relayed events stopped: {e}"),
                    ))
                })
            }),
        }
    }

    /// Deletes what was confirmed before the round ends on a failure: a failure to delete is
    /// logged, as those events are sent again by the next round.
    async fn settle(&self, confirmed: &mut Vec<i64>) {
        if let Err(e) = self.flush(confirmed).await {
            tracing::warn!(outbox = %self.outbox.name(), error = %e, "could not delete relayed events; they are sent again");
        }
    }

    async fn flush(&self, confirmed: &mut Vec<i64>) -> Result<()> {
        if confirmed.is_empty() {
            return Ok(());
        }
        self.outbox.delete(confirmed).await?;
        confirmed.clear();
        self.control.moved();
        self.control.progress.notify_waiters();
        Ok(())
    }
}
