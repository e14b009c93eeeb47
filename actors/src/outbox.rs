//! The outbox port: where master events wait, encoded, between the commit that wrote them and
//! the broker's confirm. The system relays every registered outbox (see DESIGN.md section 3);
//! a database adapter implements [`OutboxStore`], and [`MemoryOutbox`] keeps events in memory
//! (tests, and services whose writes are not transactional anyway).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use tokio::sync::Notify;

use crate::codec::{Codec, expiry_after};
use crate::envelope::Envelope;
use crate::error::Result;
use crate::trace_context;
use crate::transport::{Headers, OutgoingMessage, Route};

/// One event as the transport publishes it: encoded once, when it was written.
#[derive(Clone, PartialEq, Eq)]
pub struct EncodedEvent {
    /// Broadcast to the CQRS id, or one replica queue.
    pub route: Route,
    /// The body as the codec wrote it.
    pub body: Vec<u8>,
    /// The codec's content type.
    pub content_type: String,
    /// The envelope's `expires`, also inside the body (kept beside it for inspection).
    pub expires: Option<DateTime<Utc>>,
    /// Headers published with it: the W3C trace context of the span current when it was
    /// encoded (feature `otel`), so that an event relayed later still names the write.
    pub headers: Headers,
}

impl fmt::Debug for EncodedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedEvent")
            .field("routing_key", &self.route.routing_key())
            .field("body_len", &self.body.len())
            .field("content_type", &self.content_type)
            .field("expires", &self.expires)
            .field("headers", &self.headers)
            .finish()
    }
}

impl EncodedEvent {
    /// Encodes `envelope` with `codec`, stamping `expires` from `ttl` when the envelope has
    /// none (`ttl` = `None`: never expires). With the feature `otel`, the trace context of the
    /// span current here goes into [`headers`](Self::headers).
    pub fn encode(
        mut envelope: Envelope,
        route: Route,
        codec: Codec,
        ttl: Option<Duration>,
    ) -> Result<Self> {
        if envelope.expires.is_none() {
            envelope.expires = ttl.map(expiry_after);
        }
        Ok(Self {
            body: codec.encode(&envelope)?,
            content_type: codec.content_type().to_owned(),
            expires: envelope.expires,
            route,
            headers: trace_context::current(),
        })
    }

    /// The CQRS id it is published under.
    #[must_use]
    pub fn cqrs_id(&self) -> &str {
        self.route.cqrs_id()
    }

    /// The message the transport publishes.
    #[must_use]
    pub fn into_message(self) -> OutgoingMessage {
        OutgoingMessage {
            route: self.route,
            body: self.body,
            content_type: self.content_type,
            headers: self.headers,
            expiration: None,
        }
    }
}

/// An event in an outbox, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Its position: events are relayed in increasing `id`.
    pub id: i64,
    /// The event.
    pub event: EncodedEvent,
}

/// The port an outbox implements so the system can relay it: a lease (one relay at a time
/// across processes), ordered reads and deletion once confirmed.
///
/// The system holds one relay per outbox: it reads the events of its registered CQRS ids in
/// `id` order, publishes at most `master.publish_window` of them unconfirmed, and deletes them
/// once the broker confirmed them. An implementation must keep `id`s increasing in commit order
/// for each row, and [`wake_signal`](Self::wake_signal) should be notified when a writer in this
/// process commits events (the relay polls otherwise).
pub trait OutboxStore: Send + Sync + 'static {
    /// A name for logs and errors (the table).
    fn name(&self) -> &str;

    /// Takes or renews the relay lease for `owner` for `ttl`; `false` when another owner holds
    /// an unexpired lease.
    fn lease<'a>(&'a self, owner: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool>>;

    /// Gives the lease up if `owner` holds it.
    fn release<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<()>>;

    /// Up to `limit` events with an id above `after` whose CQRS id is one of `cqrs_ids`, in id
    /// order.
    fn read<'a>(
        &'a self,
        after: i64,
        limit: usize,
        cqrs_ids: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<StoredEvent>>>;

    /// Deletes relayed events.
    fn delete<'a>(&'a self, ids: &'a [i64]) -> BoxFuture<'a, Result<()>>;

    /// How many events wait, per CQRS id.
    fn waiting(&self) -> BoxFuture<'_, Result<BTreeMap<String, u64>>>;

    /// The id of the newest event written so far, if any.
    fn last_id(&self) -> BoxFuture<'_, Result<Option<i64>>>;

    /// Notified when a writer in this process committed events.
    fn wake_signal(&self) -> Arc<Notify>;
}

/// An outbox in memory: events are lost with the process, so it gives no more than publishing
/// after commit, with the system's ordering and window. For tests, and for writers that are not
/// transactional anyway.
#[derive(Clone, Default)]
pub struct MemoryOutbox {
    inner: Arc<MemoryInner>,
}

#[derive(Default)]
struct MemoryInner {
    state: Mutex<MemoryState>,
    wake: Arc<Notify>,
}

impl MemoryInner {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
struct MemoryState {
    next_id: i64,
    events: BTreeMap<i64, EncodedEvent>,
    lease: Option<(String, Instant)>,
}

impl fmt::Debug for MemoryOutbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryOutbox")
            .field("events", &self.lock().events.len())
            .finish()
    }
}

impl MemoryOutbox {
    /// An empty outbox.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.inner.lock()
    }

    /// Appends events in order and wakes the relay.
    pub fn push(&self, events: impl IntoIterator<Item = EncodedEvent>) {
        {
            let mut state = self.lock();
            for event in events {
                state.next_id += 1;
                let id = state.next_id;
                state.events.insert(id, event);
            }
        }
        self.inner.wake.notify_one();
    }

    /// The port the system relays: the same value for every clone, so that registrations
    /// sharing this outbox share one relay.
    #[must_use]
    pub fn store(&self) -> Arc<dyn OutboxStore> {
        Arc::clone(&self.inner) as Arc<dyn OutboxStore>
    }

    /// Events waiting.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().events.len()
    }

    /// Whether nothing waits.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl OutboxStore for MemoryInner {
    fn name(&self) -> &str {
        "memory"
    }

    fn lease<'a>(&'a self, owner: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool>> {
        let mut state = self.lock();
        let now = Instant::now();
        let free = match &state.lease {
            None => true,
            Some((holder, until)) => holder == owner || *until < now,
        };
        if free {
            state.lease = Some((owner.to_owned(), now + ttl));
        }
        Box::pin(async move { Ok(free) })
    }

    fn release<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<()>> {
        let mut state = self.lock();
        if state.lease.as_ref().is_some_and(|(h, _)| h == owner) {
            state.lease = None;
        }
        Box::pin(async { Ok(()) })
    }

    fn read<'a>(
        &'a self,
        after: i64,
        limit: usize,
        cqrs_ids: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<StoredEvent>>> {
        let out: Vec<StoredEvent> = self
            .lock()
            .events
            .range(after.saturating_add(1)..)
            .filter(|(_, e)| cqrs_ids.iter().any(|id| id == e.cqrs_id()))
            .take(limit)
            .map(|(&id, event)| StoredEvent {
                id,
                event: event.clone(),
            })
            .collect();
        Box::pin(async move { Ok(out) })
    }

    fn delete<'a>(&'a self, ids: &'a [i64]) -> BoxFuture<'a, Result<()>> {
        let mut state = self.lock();
        for id in ids {
            state.events.remove(id);
        }
        Box::pin(async { Ok(()) })
    }

    fn waiting(&self) -> BoxFuture<'_, Result<BTreeMap<String, u64>>> {
        let mut out = BTreeMap::new();
        for event in self.lock().events.values() {
            *out.entry(event.cqrs_id().to_owned()).or_insert(0) += 1;
        }
        Box::pin(async move { Ok(out) })
    }

    fn last_id(&self) -> BoxFuture<'_, Result<Option<i64>>> {
        let last = self.lock().events.keys().next_back().copied();
        Box::pin(async move { Ok(last) })
    }

    fn wake_signal(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }
}
