//! Publishing with publisher confirms and a window of unconfirmed messages.
//!
//! One task takes publishes in the order they were asked for and writes them to the
//! confirm-mode channel without waiting for the broker, up to `publish_window` unconfirmed at
//! once; confirms are matched as they arrive. When the connection is lost, every message
//! without a confirm is written again on the next connection, in its original order and before
//! anything newer (at least once: the replica's revision rules make a duplicate harmless).
//! A message still without a connection at its publish timeout fails with
//! [`ErrorKind::Transport`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_actors::{Error, ErrorKind, Result};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use lapin::{BasicProperties, Confirmation};
use tokio::sync::{mpsc, oneshot};

use super::link::{Link, LinkRx};

/// One message for the broker.
pub(crate) struct Outgoing {
    pub exchange: ShortString,
    pub routing_key: ShortString,
    pub body: Vec<u8>,
    pub properties: BasicProperties,
}

struct Job {
    out: Outgoing,
    reply: oneshot::Sender<Result<()>>,
}

/// The handle on the publishing task. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Publisher {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Publisher {
    pub fn spawn(
        link: LinkRx,
        lost: mpsc::UnboundedSender<u64>,
        window: usize,
        timeout: Duration,
    ) -> Self {
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx, link, lost, window, timeout));
        Self { jobs }
    }

    /// Queues `out` now (so calls keep their order); resolves once the broker confirmed it.
    pub fn publish(&self, out: Outgoing) -> impl Future<Output = Result<()>> + 'static {
        let (reply, answer) = oneshot::channel();
        let queued = self.jobs.send(Job { out, reply }).is_ok();
        async move {
            if !queued {
                return Err(Error::unavailable("RabbitMQ publisher"));
            }
            answer
                .await
                .map_err(|_| Error::unavailable("RabbitMQ publisher"))?
        }
    }
}

/// A message the broker has not confirmed yet.
struct Pending {
    out: Outgoing,
    reply: oneshot::Sender<Result<()>>,
    deadline: Instant,
    /// The connection it was last written on (0: not written yet).
    generation: u64,
}

/// A confirm as it arrives: sequence number, connection generation, outcome.
type Confirmed = (u64, u64, lapin::Result<Confirmation>);

struct State {
    pending: BTreeMap<u64, Pending>,
    /// Sequence numbers to write on the current connection, oldest first.
    unsent: VecDeque<u64>,
    confirms: FuturesUnordered<BoxFuture<'static, Confirmed>>,
    current: Option<Arc<Link>>,
    lost: mpsc::UnboundedSender<u64>,
}

impl State {
    /// A new connection: everything unconfirmed is written again, in order.
    fn connected(&mut self, link: Option<Arc<Link>>) {
        if let Some(l) = &link {
            self.unsent = self
                .pending
                .iter()
                .filter(|(_, p)| p.generation < l.generation)
                .map(|(seq, _)| *seq)
                .collect();
        }
        self.current = link;
    }

    fn connection_lost(&mut self, generation: u64) {
        if self
            .current
            .as_ref()
            .is_some_and(|l| l.generation == generation)
        {
            let _ = self.lost.send(generation);
            self.current = None;
        }
    }

    /// Writes what waits to be written, while the connection holds.
    async fn write(&mut self) {
        while let Some(link) = self.current.clone() {
            let Some(seq) = self.unsent.pop_front() else {
                return;
            };
            let Some(p) = self.pending.get_mut(&seq) else {
                continue;
            };
            let sent = link
                .publish
                .basic_publish(
                    p.out.exchange.clone(),
                    p.out.routing_key.clone(),
                    BasicPublishOptions {
                        mandatory: true,
                        immediate: false,
                    },
                    &p.out.body,
                    p.out.properties.clone(),
                )
                .await;
            match sent {
                Ok(confirm) => {
                    let generation = link.generation;
                    p.generation = generation;
                    self.confirms
                        .push(Box::pin(async move { (seq, generation, confirm.await) }));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "publish failed; waiting for a new connection");
                    self.unsent.push_front(seq);
                    self.connection_lost(link.generation);
                }
            }
        }
    }

    fn confirmed(&mut self, (seq, generation, result): Confirmed) {
        let Ok(confirmation) = result else {
            tracing::debug!(
                generation,
                "confirm lost with the connection; publishing again"
            );
            self.connection_lost(generation);
            return;
        };
        if self
            .pending
            .get(&seq)
            .is_none_or(|p| p.generation != generation)
        {
            return; // written again on a newer connection; that confirm decides
        }
        let Some(p) = self.pending.remove(&seq) else {
            return;
        };
        let result = match confirmation {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_)) => Err(Error::new(
                ErrorKind::Unroutable,
                format!(
                    "no queue is bound to routing key {:?} on exchange {:?}",
                    p.out.routing_key.as_str(),
                    p.out.exchange.as_str()
                ),
            )),
            Confirmation::Nack(None) => Err(Error::transport(format!(
                "RabbitMQ refused the message for {:?} (nack)",
                p.out.routing_key.as_str()
            ))),
        };
        let _ = p.reply.send(result);
    }

    /// Fails the messages that could not be written on a live connection before their deadline.
    fn expire(&mut self, now: Instant) {
        let live = self.current.as_ref().map_or(0, |l| l.generation);
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now && (live == 0 || p.generation < live))
            .map(|(seq, _)| *seq)
            .collect();
        for seq in expired {
            if let Some(p) = self.pending.remove(&seq) {
                let _ = p.reply.send(Err(Error::transport(
                    "no connection to RabbitMQ within the publish timeout",
                )));
            }
        }
        self.unsent.retain(|seq| self.pending.contains_key(seq));
    }
}

async fn run(
    mut jobs: mpsc::UnboundedReceiver<Job>,
    mut link: LinkRx,
    lost: mpsc::UnboundedSender<u64>,
    window: usize,
    timeout: Duration,
) {
    let mut state = State {
        pending: BTreeMap::new(),
        unsent: VecDeque::new(),
        confirms: FuturesUnordered::new(),
        current: None,
        lost,
    };
    state.connected(link.borrow_and_update().clone());
    let mut next_seq = 0u64;
    let mut jobs_open = true;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        state.write().await;
        if !jobs_open && state.pending.is_empty() {
            return;
        }
        tokio::select! {
            job = jobs.recv(), if jobs_open && state.pending.len() < window => match job {
                Some(Job { out, reply }) => {
                    next_seq += 1;
                    state.pending.insert(next_seq, Pending {
                        out,
                        reply,
                        deadline: Instant::now() + timeout,
                        generation: 0,
                    });
                    state.unsent.push_back(next_seq);
                }
                None => jobs_open = false,
            },
            Some(confirmed) = state.confirms.next(), if !state.confirms.is_empty() => {
                state.confirmed(confirmed);
            },
            changed = link.changed() => {
                if changed.is_err() {
                    // The connection task is gone: nothing will be confirmed any more.
                    state.current = None;
                    state.expire(Instant::now() + timeout);
                    return;
                }
                let next = link.borrow_and_update().clone();
                state.connected(next);
            },
            _ = tick.tick() => state.expire(Instant::now()),
        }
    }
}
