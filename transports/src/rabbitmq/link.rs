//! The connection: connect with backoff, declare the topology, watch for loss, reconnect.
//!
//! Everything that talks to the broker reads the current [`Link`] from a watch channel. A lost
//! connection turns the watch to `None` until the next one is up and its topology declared;
//! whoever saw an operation fail reports the generation so that the loss is noticed at once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::WeakRecipient;
use actix::prelude::Message;
use cqrs_actors::transport::Declare;
use cqrs_actors::{Error, ErrorKind, Result};
use futures_util::StreamExt;
use lapin::auth::AuthProvider;
use lapin::options::ConfirmSelectOptions;
use lapin::types::{LongString, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, Event};
use tokio::sync::{mpsc, watch};

use super::config::RabbitMqConfig;
use super::{lapin_error, topology};

/// One live connection and its publishing channel (in confirm mode).
#[derive(Debug)]
pub(crate) struct Link {
    /// Counts connections since the transport started.
    pub generation: u64,
    pub connection: Connection,
    pub publish: Channel,
}

type Events = std::pin::Pin<Box<dyn futures_util::Stream<Item = Event> + Send>>;

pub(crate) type LinkRx = watch::Receiver<Option<Arc<Link>>>;

/// The last connection attempt that failed for a reason waiting does not mend (a TLS file, a
/// refused certificate): its message, for [`RabbitMqTransport::connect`](super::RabbitMqTransport::connect)
/// to fail with at once.
pub(crate) type RefusedRx = watch::Receiver<Option<String>>;

/// Tells the transport actor that a new connection is up.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct LinkUp(pub Arc<Link>);

/// Waits for a connection newer than `after` (any when `None`) until `deadline`.
/// Opens a channel on `connection`.
pub(crate) async fn open_channel(connection: &lapin::Connection) -> Result<lapin::Channel> {
    connection
        .create_channel()
        .await
        .map_err(|e| lapin_error("open channel", e))
}

pub(crate) async fn wait_link(
    rx: &mut LinkRx,
    after: Option<u64>,
    deadline: Instant,
) -> Result<Arc<Link>> {
    let wait = rx.wait_for(|l| {
        l.as_ref()
            .is_some_and(|l| after.is_none_or(|g| l.generation > g))
    });
    match tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), wait).await {
        Ok(Ok(link)) => link
            .clone()
            .ok_or_else(|| Error::transport("RabbitMQ connection vanished")),
        Ok(Err(_)) => Err(Error::unavailable("RabbitMQ transport")),
        Err(_) => Err(Error::transport(
            "no connection to RabbitMQ within the publish timeout",
        )),
    }
}

/// Starts the task that keeps a connection up. It ends, closing the connection, once every
/// sender of `lost` is dropped or the transport actor is gone.
pub(crate) fn spawn(
    config: Arc<RabbitMqConfig>,
    topology: Arc<Mutex<Vec<Declare>>>,
    link: watch::Sender<Option<Arc<Link>>>,
    refused: watch::Sender<Option<String>>,
    up: WeakRecipient<LinkUp>,
) -> mpsc::UnboundedSender<u64> {
    let (lost_tx, lost_rx) = mpsc::unbounded_channel();
    tokio::spawn(run(config, topology, link, refused, up, lost_rx));
    lost_tx
}

async fn run(
    config: Arc<RabbitMqConfig>,
    topology: Arc<Mutex<Vec<Declare>>>,
    link_tx: watch::Sender<Option<Arc<Link>>>,
    refused: watch::Sender<Option<String>>,
    up: WeakRecipient<LinkUp>,
    mut lost: mpsc::UnboundedReceiver<u64>,
) {
    let (min, max) = config.reconnect_backoff();
    let mut pause = min;
    let mut generation = 0;
    loop {
        match connect(&config, generation + 1, &topology).await {
            Ok((link, events)) => {
                generation = link.generation;
                pause = min;
                tracing::info!(
                    generation,
                    url = %config.redacted_url(),
                    "RabbitMQ connection up"
                );
                link_tx.send_replace(Some(Arc::clone(&link)));
                let told = match up.upgrade() {
                    Some(actor) => actor.send(LinkUp(Arc::clone(&link))).await.is_ok(),
                    None => false,
                };
                if !told {
                    return close(&link).await;
                }
                let stop = watch_loss(&link, events, &mut lost).await;
                link_tx.send_replace(None);
                // Also when only the publishing channel died and the connection still stands:
                // its consumers would otherwise keep deliveries no one can settle any more.
                close(&link).await;
                if stop {
                    return;
                }
                tracing::warn!(generation, "RabbitMQ connection lost; reconnecting");
            }
            Err(e) => {
                if e.kind() == ErrorKind::Config {
                    refused.send_replace(Some(e.message().to_owned()));
                }
                tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "RabbitMQ connect failed");
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    report = lost.recv() => if report.is_none() { return },
                }
                pause = (pause * 2).min(max);
            }
        }
    }
}

/// Closes the connection, giving up after a moment when the broker does not answer.
async fn close(link: &Link) {
    if link.connection.status().connected() {
        let closing = link.connection.close(200, "transport stopped".into());
        let _ = tokio::time::timeout(Duration::from_secs(2), closing).await;
    }
}

/// Waits until the connection is lost (`false`) or the transport is gone (`true`).
async fn watch_loss(
    link: &Link,
    mut events: Events,
    lost: &mut mpsc::UnboundedReceiver<u64>,
) -> bool {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            event = events.next() => match event {
                // lapin reports a channel's error here too (a declare the broker refused, a
                // publish to a missing exchange): the connection itself may still stand.
                Some(Event::Error(e)) if link.connection.status().connected() => {
                    tracing::debug!(error = %e, "RabbitMQ channel error; the connection stands");
                }
                Some(Event::Error(e)) => {
                    tracing::warn!(error = %e, "RabbitMQ connection error");
                    return false;
                }
                Some(_) => {}
                None => return false,
            },
            report = lost.recv() => match report {
                Some(g) if g == link.generation => return false,
                Some(_) => {}
                None => return true,
            },
            _ = tick.tick() => {
                if !link.connection.status().connected() || !link.publish.status().connected() {
                    return false;
                }
            }
        }
    }
}

/// SASL PLAIN with credentials held here rather than in the URI.
struct PlainAuth {
    user: String,
    password: String,
}

impl AuthProvider for PlainAuth {
    fn mechanism(&self) -> ShortString {
        "PLAIN".into()
    }

    fn auth_starter(&self) -> std::result::Result<LongString, String> {
        let mut response = vec![0];
        response.extend_from_slice(self.user.as_bytes());
        response.push(0);
        response.extend_from_slice(self.password.as_bytes());
        Ok(LongString::from(response))
    }
}

async fn connect(
    config: &RabbitMqConfig,
    generation: u64,
    topology: &Mutex<Vec<Declare>>,
) -> Result<(Arc<Link>, Events)> {
    let (user, password) = config.credentials();
    let mut props = ConnectionProperties::default().with_auth_provider(PlainAuth {
        user: user.to_owned(),
        password: password.to_owned(),
    });
    if let Some(name) = config.connection_name() {
        props = props.with_connection_name(name.as_bytes().to_vec().into());
    }
    let connection = open(config, props).await?;
    let events: Events = Box::pin(connection.events_listener());
    let declares: Vec<Declare> = topology
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let setup = open_channel(&connection).await?;
    topology::declare_exchange(&setup, config).await?;
    for declare in &declares {
        topology::declare_replica(&setup, config, declare).await?;
    }
    let _ = setup.close(200, "topology declared".into()).await;
    let publish = open_channel(&connection).await?;
    publish
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| lapin_error("confirm select", e))?;
    Ok((
        Arc::new(Link {
            generation,
            connection,
            publish,
        }),
        events,
    ))
}

/// Opens the connection: `amqps://` with the configured TLS files (`open_tls`), `amqp://`
/// plain.
async fn open(config: &RabbitMqConfig, props: ConnectionProperties) -> Result<Connection> {
    #[cfg(feature = "rabbitmq-tls")]
    if let Some(connector) = config.tls_connector()? {
        return open_tls(config, connector, props).await;
    }
    Connection::connect_uri(config.amqp_uri(), props)
        .await
        .map_err(|e| lapin_error("connect", e))
}

/// An `amqps://` connection with the transport's own rustls connector (lapin's would add the
/// system's roots to a given CA). The server name checked is the URL's host.
#[cfg(feature = "rabbitmq-tls")]
async fn open_tls(
    config: &RabbitMqConfig,
    connector: lapin::tcp::RustlsConnector,
    props: ConnectionProperties,
) -> Result<Connection> {
    use lapin::tcp::{AMQPUriTcpExt, TLSConfig};
    use lapin::uri::{AMQPScheme, AMQPUri};

    let runtime = lapin::runtime::default_runtime().map_err(|e| lapin_error("connect", e))?;
    let handshake = async move |uri: AMQPUri, runtime| {
        let mut plain = uri.clone();
        plain.scheme = AMQPScheme::AMQP;
        let tcp = plain
            .connect_with_config_async(TLSConfig::default(), &runtime)
            .await?;
        Ok(tcp.into_rustls(&connector, &uri.authority.host).await?)
    };
    Connection::connector(config.amqp_uri(), runtime, handshake, props)
        .await
        .map_err(|e| match crate::tls::refusal(&e, "rabbitmq") {
            Some(reason) => Error::with_source(
                ErrorKind::Config,
                format!("RabbitMQ at {}: {reason}", config.redacted_url()),
                e,
            ),
            None => lapin_error("connect", e),
        })
}
