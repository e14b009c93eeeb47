//! What a replica does with an event: the [`ReplicaHandler`] trait, the [`ReplicaEvent`] it
//! receives and the [`Applied`] outcome it reports.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;

use crate::envelope::{Envelope, SignalType};
use crate::error::Result;

/// One decoded message on its way to a replica handler, with the delivery facts it needs.
#[derive(Debug, Clone)]
pub struct ReplicaEvent {
    envelope: Envelope,
    routing_key: String,
    direct: bool,
    redelivered: bool,
}

impl ReplicaEvent {
    /// An event built from an envelope; `direct` says whether it arrived by the replica's own
    /// routing key `cqrs.<queue>.X` (a directed SYNC or a retry copy).
    #[must_use]
    pub fn new(
        envelope: Envelope,
        routing_key: impl Into<String>,
        direct: bool,
        redelivered: bool,
    ) -> Self {
        Self {
            envelope,
            routing_key: routing_key.into(),
            direct,
            redelivered,
        }
    }

    /// The message body.
    #[must_use]
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// Takes the message body.
    #[must_use]
    pub fn into_envelope(self) -> Envelope {
        self.envelope
    }

    /// SAVE, DELETE or SYNC.
    #[must_use]
    pub fn signal(&self) -> SignalType {
        self.envelope.signal_type
    }

    /// The CQRS id.
    #[must_use]
    pub fn cqrs_id(&self) -> &str {
        &self.envelope.cqrs_id
    }

    /// The primary key (see [`Envelope::pk`]).
    #[must_use]
    pub fn pk(&self) -> &Value {
        self.envelope.pk()
    }

    /// The routing key it arrived by.
    #[must_use]
    pub fn routing_key(&self) -> &str {
        &self.routing_key
    }

    /// Whether it arrived by `cqrs.<own queue>.X`.
    #[must_use]
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// Whether the broker delivered it before.
    #[must_use]
    pub fn is_redelivered(&self) -> bool {
        self.redelivered
    }
}

/// Why an event was acknowledged without writing anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// A SAVE older than the stored revision.
    Stale,
    /// A SAVE with the stored revision.
    Duplicate,
    /// A SAVE or SYNC older than a remembered DELETE (tombstones on).
    Deleted,
    /// A broadcast SYNC for a model that accepts only directed syncs.
    BroadcastSync,
    /// A DELETE of a row that is not there.
    Missing,
}

/// What a handler did with an event. Every variant is a success: the delivery is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A row was created.
    Created,
    /// A row was updated.
    Updated,
    /// A row was updated by a SAVE whose revision skipped `missing` revisions: events were
    /// lost or filtered out between the master and this replica.
    UpdatedAfterGap {
        /// How many revisions were skipped.
        missing: i64,
    },
    /// A row was deleted.
    Deleted,
    /// Nothing was written, for this reason.
    Skipped(Skip),
}

/// A replica model's behaviour: apply one event, or a batch of events.
///
/// Return `Ok` once the effect is durable: the delivery is acknowledged then. Return an error
/// whose kind is retryable ([`Error::handler`](crate::Error::handler)) for a failure worth
/// another try, or a non-retryable one ([`Error::invalid_data`](crate::Error::invalid_data))
/// to dead-letter the message at once. A panic is caught: the worker restarts and the message
/// is delivered again (a second panic counts as a failed attempt).
///
/// Implement [`apply_batch`](Self::apply_batch) too when a batch can be applied in one
/// transaction; its result must have one entry per event, in order.
pub trait ReplicaHandler: Send + Sync + 'static {
    /// Applies one event.
    fn apply(&self, event: &ReplicaEvent) -> impl Future<Output = Result<Applied>> + Send;

    /// Applies events in order (same-row events keep their order). By default one by one.
    fn apply_batch(
        &self,
        events: &[ReplicaEvent],
    ) -> impl Future<Output = Vec<Result<Applied>>> + Send {
        async move {
            let mut out = Vec::with_capacity(events.len());
            for event in events {
                out.push(self.apply(event).await);
            }
            out
        }
    }

    /// Whether the handler can apply events now, for the service's readiness probe (see
    /// [`CqrsSystem::health`](crate::CqrsSystem::health)): a table adapter checks that its
    /// database answers. By default always ready.
    fn check(&self) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }
}

/// A handler written as a closure (see [`handler_fn`]).
pub struct FnHandler<F>(F);

impl<F> fmt::Debug for FnHandler<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnHandler")
    }
}

/// Turns an async closure over an owned event into a [`ReplicaHandler`].
///
/// ```
/// use cqrs_actors::{handler_fn, Applied, ReplicaEvent};
/// let handler = handler_fn(|event: ReplicaEvent| async move {
///     println!("{} {}", event.signal(), event.pk());
///     Ok(Applied::Updated)
/// });
/// # let _ = handler;
/// ```
pub fn handler_fn<F, Fut>(f: F) -> FnHandler<F>
where
    F: Fn(ReplicaEvent) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Applied>> + Send,
{
    FnHandler(f)
}

impl<F, Fut> ReplicaHandler for FnHandler<F>
where
    F: Fn(ReplicaEvent) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Applied>> + Send,
{
    fn apply(&self, event: &ReplicaEvent) -> impl Future<Output = Result<Applied>> + Send {
        (self.0)(event.clone())
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The object-safe form of [`ReplicaHandler`] the actors hold.
pub(crate) trait DynHandler: Send + Sync {
    fn apply_batch<'a>(&'a self, events: &'a [ReplicaEvent])
    -> BoxFuture<'a, Vec<Result<Applied>>>;

    fn check(&self) -> BoxFuture<'_, Result<()>>;
}

impl<H: ReplicaHandler> DynHandler for H {
    fn apply_batch<'a>(
        &'a self,
        events: &'a [ReplicaEvent],
    ) -> BoxFuture<'a, Vec<Result<Applied>>> {
        Box::pin(ReplicaHandler::apply_batch(self, events))
    }

    fn check(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(ReplicaHandler::check(self))
    }
}

pub(crate) type SharedHandler = Arc<dyn DynHandler>;
