//! What the checks share: unique names, a collecting consumer, messages and declarations.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use cqrs_actors::transport::{
    ConsumerTag, Declare, Deliveries, Delivery, Headers, OutgoingMessage, Settlement, Subscribe,
};
use cqrs_actors::{Route, TransportHandle};

/// How long a check waits for something that should happen.
pub(super) const PATIENCE: Duration = Duration::from_secs(10);

/// Unique queue names for one check run.
#[derive(Debug, Clone)]
pub struct Names {
    prefix: String,
}

impl Names {
    /// Names under `<prefix>_<check>_<unique>`.
    #[must_use]
    pub fn new(prefix: &str, check: &str) -> Self {
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() % 1_000_000_000_000);
        Self {
            prefix: format!("{prefix}_{check}_{unique}_{}", std::process::id()),
        }
    }

    /// The prefix every name starts with.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A queue name.
    #[must_use]
    pub fn queue(&self, name: &str) -> String {
        format!("{}_{name}", self.prefix)
    }

    /// A CQRS id (also unique, so that a shared broker's bindings do not mix).
    #[must_use]
    pub fn cqrs_id(&self, name: &str) -> String {
        format!("{}_{name}", self.prefix).replace('.', "_")
    }
}

/// A consumer that records what it receives and acknowledges it or not.
pub struct Collector {
    transport: TransportHandle,
    ack: bool,
    seen: Arc<Mutex<Vec<Delivery>>>,
}

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<Deliveries> for Collector {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Deliveries, _: &mut Context<Self>) -> Self::Result {
        let tags: Vec<_> = msg.0.iter().map(|d| d.tag).collect();
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(msg.0);
        let settle = self
            .ack
            .then(|| self.transport.settle(tags, Settlement::Ack));
        Box::pin(async move {
            if let Some(s) = settle {
                s.await.unwrap_or_else(|e| panic!("ack failed: {e}"));
            }
        })
    }
}

/// A running [`Collector`].
pub struct Collected {
    /// Its consumer tag.
    pub consumer: ConsumerTag,
    seen: Arc<Mutex<Vec<Delivery>>>,
    _addr: Addr<Collector>,
}

impl Collected {
    /// What it has received so far.
    #[must_use]
    pub fn seen(&self) -> Vec<Delivery> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Waits until it has received at least `n` deliveries, or panics saying what it got.
    pub async fn wait_for(&self, n: usize, what: &str) -> Vec<Delivery> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let seen = self.seen();
            if seen.len() >= n {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: expected {n} deliveries within {PATIENCE:?}, got {}",
                seen.len()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Subscribes a collector to `queue`.
pub async fn collect(
    transport: &TransportHandle,
    queue: &str,
    prefetch: u32,
    ack: bool,
) -> Collected {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let addr = Collector {
        transport: transport.clone(),
        ack,
        seen: Arc::clone(&seen),
    }
    .start();
    let consumer = transport
        .subscribe(Subscribe {
            queue: queue.to_owned(),
            prefetch,
            consumer: addr.clone().recipient(),
        })
        .await
        .unwrap_or_else(|e| panic!("subscribe to {queue}: {e}"));
    Collected {
        consumer,
        seen,
        _addr: addr,
    }
}

/// A JSON-bodied message.
#[must_use]
pub fn message(route: Route, body: &str) -> OutgoingMessage {
    OutgoingMessage {
        route,
        body: body.as_bytes().to_vec(),
        content_type: "text/plain".to_owned(),
        headers: Headers::new(),
        expiration: None,
    }
}

/// Declares `queue` (dead-letter queue `<queue>_dlq`) bound to `ids`, or panics.
pub async fn declare(t: &TransportHandle, queue: &str, ids: &[&str]) {
    t.declare(Declare {
        queue: queue.to_owned(),
        dead_letter_queue: format!("{queue}_dlq"),
        cqrs_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
    })
    .await
    .unwrap_or_else(|e| panic!("declare {queue}: {e}"));
}

/// Waits until `queue` has `ready` and `unacked` messages, or panics saying what it has.
pub async fn wait_stats(t: &TransportHandle, queue: &str, ready: u64, unacked: u64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let stats = t
            .inspect(queue)
            .await
            .unwrap_or_else(|e| panic!("inspect {queue}: {e}"));
        if stats.ready == ready && stats.unacked == unacked {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{queue}: expected ready={ready} unacked={unacked}, got {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The body as text.
#[must_use]
pub fn body(d: &Delivery) -> String {
    String::from_utf8_lossy(&d.body).into_owned()
}
