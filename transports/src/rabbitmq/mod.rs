//! The RabbitMQ transport (lapin), wire-compatible with django-cqrs (WIRE.md section 3).
//!
//! - [`RabbitMqConfig`]: built from the service's configuration: the URL (`amqp://` or
//!   `amqps://`, virtual host, heartbeat, connection name), the exchange, the window, and the
//!   `[rabbitmq]` options (classic or quorum queues, consumers, parking tiers, ...).
//! - [`RabbitMqTransport`]: the actor. Publishes are persistent `text/plain` (or MessagePack)
//!   messages with `mandatory` and publisher confirms, pipelined up to a window; consumers use
//!   manual acks and a prefetch; retries are parked in per-tier TTL queues that dead-letter
//!   back to `cqrs.Q.X`; a lost connection is re-established with backoff, the topology
//!   declared again, consumers resumed and unconfirmed publishes sent again.
//!
//! ```no_run
//! # async fn run() -> cqrs_actors::Result<()> {
//! use cqrs_actors::CqrsConfig;
//! use cqrs_transports::rabbitmq::{RabbitMqConfig, RabbitMqTransport};
//! let service = CqrsConfig::default().with_url("amqp://guest:guest@127.0.0.1:5672/%2f");
//! let (transport, _addr) = RabbitMqTransport::connect(RabbitMqConfig::from_cqrs_config(&service)?).await?;
//! assert_eq!(transport.name(), "rabbitmq");
//! # Ok(())
//! # }
//! ```

mod config;
mod confirm;
mod consumer;
mod dead_letters;
mod link;
mod outgoing;
mod subscriptions;
mod topology;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix::prelude::*;
use cqrs_actors::transport::{
    ConsumerTag, Declare, DeleteQueue, DescribeQueue, Inspect, Ping, QueueStats, TopologyObject,
};
use cqrs_actors::{Error, ErrorKind, Result, TransportHandle};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use tokio::sync::{mpsc, watch};

pub use config::{QueueType, RabbitMqConfig};
use confirm::ConfirmPipeline;
use consumer::ChannelEntry;
use link::{LinkRx, RefusedRx, open_channel, wait_link};
use subscriptions::ConsumerSpec;

/// The `tracing` filter directive that keeps credentials out of logs: add it to the
/// service's filter (`RUST_LOG=trace,lapin=debug`, or `EnvFilter::new("info").add_directive(
/// LOG_DIRECTIVE.parse()?)`).
///
/// At trace level lapin logs every frame it writes, and the login frame carries the user and
/// password (as a byte array). Nothing of cqrs-sync's own logs a password at any level; lapin's
/// debug level and above does not either.
pub const LOG_DIRECTIVE: &str = "lapin=debug";

/// Turns a lapin error into a transport error (retryable: the connection comes back).
pub(crate) fn lapin_error(what: &str, e: lapin::Error) -> Error {
    Error::with_source(ErrorKind::Transport, format!("RabbitMQ {what} failed"), e)
}

/// The RabbitMQ transport actor. Start it with [`RabbitMqTransport::connect`] or
/// [`RabbitMqTransport::start`].
pub struct RabbitMqTransport {
    config: Arc<RabbitMqConfig>,
    link: LinkRx,
    /// Reports a lost connection; dropping the last sender stops the connection task.
    lost: mpsc::UnboundedSender<u64>,
    publisher: ConfirmPipeline,
    topology: Arc<Mutex<Vec<Declare>>>,
    bound: BTreeSet<String>,
    consumers: BTreeMap<ConsumerTag, ConsumerSpec>,
    channels: HashMap<u64, Arc<ChannelEntry>>,
    next_consumer: u64,
    next_channel: u64,
    /// Connections opened so far.
    connections: u64,
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
        let (handle, addr, _) = Self::spawn(config);
        (handle, addr)
    }

    fn spawn(config: RabbitMqConfig) -> (TransportHandle, Addr<RabbitMqTransport>, RefusedRx) {
        let exchange = config.exchange().to_owned();
        let config = Arc::new(config);
        let (refused_tx, refused_rx) = watch::channel(None);
        let addr = RabbitMqTransport::create(|ctx| {
            let (link_tx, link_rx) = watch::channel(None);
            let topology = Arc::new(Mutex::new(Vec::new()));
            let lost = link::spawn(
                Arc::clone(&config),
                Arc::clone(&topology),
                link_tx,
                refused_tx,
                ctx.address().recipient().downgrade(),
            );
            let publisher =
                ConfirmPipeline::spawn(link_rx.clone(), lost.clone(), config.publish_limits());
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
                connections: 0,
            }
        });
        (
            TransportHandle::new("rabbitmq", &addr).with_exchange(exchange),
            addr,
            refused_rx,
        )
    }

    /// Starts the transport and waits for the first connection (up to the publish timeout),
    /// so that a wrong URL or an unreachable broker fails here with
    /// [`ErrorKind::Transport`]. What waiting does not mend fails at once with
    /// [`ErrorKind::Config`]: a TLS file that is missing or invalid, a server certificate that
    /// is refused (not signed by the trusted CA, or not for the URL's host), a client
    /// certificate the broker refuses.
    pub async fn connect(
        config: RabbitMqConfig,
    ) -> Result<(TransportHandle, Addr<RabbitMqTransport>)> {
        let deadline = Instant::now() + config.publish_timeout();
        let (handle, addr, mut refused) = Self::spawn(config);
        let mut link = addr.send(CurrentLink).await?;
        let first = tokio::select! {
            up = wait_link(&mut link, None, deadline) => up.map(drop),
            Ok(reason) = refused.wait_for(Option::is_some) => Err(Error::new(
                ErrorKind::Config,
                reason.clone().unwrap_or_default(),
            )),
        };
        if let Err(e) = first {
            // Nobody will use this transport: stop it, and with it the reconnect attempts.
            let _ = addr.send(Stop).await;
            return Err(e);
        }
        Ok((handle, addr))
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.config.publish_timeout()
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
                    let channel = open_channel(&l.connection).await?;
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

impl Handler<Ping> for RabbitMqTransport {
    type Result = Result<()>;

    /// Up while a connection with its publishing channel stands; the connection task clears
    /// it the moment the broker closes either, and sets it again once it reconnected.
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> Result<()> {
        match self.link.borrow().as_ref() {
            Some(link) if link.connection.status().connected() => Ok(()),
            _ => Err(Error::transport(format!(
                "no connection to RabbitMQ at {}; reconnecting",
                self.config.redacted_url()
            ))),
        }
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
            let channel = open_channel(&l.connection).await?;
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
                ..QueueStats::default()
            })
        })
    }
}

impl RabbitMqTransport {
    /// The CQRS ids this transport bound `queue` to (AMQP cannot list bindings).
    fn declared_ids(&self, queue: &str) -> Vec<String> {
        let declared = self
            .topology
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut ids: Vec<String> = declared
            .iter()
            .filter(|d| d.queue == queue)
            .flat_map(|d| topology::bound_ids(&self.config, d))
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Forgets the declarations of a deleted queue, so that a reconnect does not declare it
    /// again and a publish to its keys is not expected to route.
    fn forget_queue(&mut self, queue: &str) {
        let mut declared = self
            .topology
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        declared.retain(|d| d.queue != queue);
        self.bound = declared
            .iter()
            .flat_map(|d| topology::bound_keys(&self.config, d))
            .collect();
    }
}

impl Handler<DescribeQueue> for RabbitMqTransport {
    type Result = ResponseFuture<Result<Vec<TopologyObject>>>;

    /// The exchange, the queue and dead-letter queue with their ready messages, the parking
    /// exchange and tier queues with the copies they hold, and the bindings: the routing keys
    /// of the CQRS ids this transport declared the queue with, and the tiers'.
    fn handle(&mut self, msg: DescribeQueue, _: &mut Context<Self>) -> Self::Result {
        let ids = self.declared_ids(&msg.queue);
        let (mut link, config, deadline) =
            (self.link.clone(), Arc::clone(&self.config), self.deadline());
        Box::pin(async move {
            let l = wait_link(&mut link, None, deadline).await?;
            topology::describe_replica(
                &l.connection,
                &config,
                &msg.queue,
                &msg.dead_letter_queue,
                &ids,
            )
            .await
        })
    }
}

impl Handler<DeleteQueue> for RabbitMqTransport {
    type Result = ResponseActFuture<Self, Result<Vec<String>>>;

    /// Deletes the queue, its dead-letter queue, its tier queues and its parking exchange
    /// (with the bindings of each), and forgets its declaration.
    fn handle(&mut self, msg: DeleteQueue, _: &mut Context<Self>) -> Self::Result {
        let (mut link, config, deadline) =
            (self.link.clone(), Arc::clone(&self.config), self.deadline());
        let queue = msg.queue.clone();
        let deleted = async move {
            let l = wait_link(&mut link, None, deadline).await?;
            topology::delete_replica_objects(
                &l.connection,
                &config,
                &msg.queue,
                &msg.dead_letter_queue,
                msg.force,
            )
            .await
        };
        Box::pin(deleted.into_actor(self).map(move |deleted, this, _| {
            if deleted.is_ok() {
                this.forget_queue(&queue);
            }
            deleted
        }))
    }
}

/// Asks how many connections the transport has opened so far: 1 while the first one holds,
/// one more per reconnect. For tests and tools; never sent by the framework.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "u64")]
pub struct Connections;

impl Handler<Connections> for RabbitMqTransport {
    type Result = u64;

    fn handle(&mut self, _: Connections, _: &mut Context<Self>) -> u64 {
        self.connections
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
            let channel = open_channel(&l.connection).await?;
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
