//! The master side: consume the sync requests of the master models that answer them, and
//! answer each with a SYNC of the row's current state to the asking replica's queue.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::LocalBoxFuture;
use serde_json::Value;

use super::request::{SyncRequest, request_topology};
use crate::actors::Drain;
use crate::envelope::{Envelope, JsonObject, SignalType};
use crate::error::{Error, ErrorKind, Result};
use crate::registry::Registry;
use crate::system::Publisher;
use crate::transport::{
    ConsumerTag, Deliveries, Delivery, HEADER_ERROR, HEADER_REASON, Headers, PublishDeadLetter,
    Route, Settlement, Subscribe, TransportHandle,
};
use crate::values;

/// What a master did with a sync request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowSynced {
    /// A SYNC of the row went to the asking queue (or, for a table with an outbox, into the
    /// outbox, which the system relays).
    Sent,
    /// The row is not there, or the model does not replicate it (`is_sync_instance`,
    /// produce off): nothing was published. The master keeps no tombstone, so it has no
    /// revision to put on a DELETE; the DELETE it published when the row went is what tells
    /// replicas, and the deleted-diff tools find rows a replica kept by mistake.
    Absent,
}

/// How a master reads one row and publishes it as a directed SYNC: the port behind
/// [`CqrsSystemBuilder::answer_sync_requests`](crate::CqrsSystemBuilder::answer_sync_requests).
///
/// The SeaORM adapters implement it for every master table (`cqrs_sync::orm::SyncRows`); a
/// master model published by hand can use [`sync_source_fn`].
pub trait SyncSource: Send + Sync + 'static {
    /// The CQRS id of the master model.
    fn cqrs_id(&self) -> &str;

    /// Publishes a SYNC of the row `pk` to replica `queue` (`cqrs.<queue>.<cqrs_id>`), or
    /// answers [`RowSynced::Absent`] when there is no such row to send.
    fn sync_row<'a>(
        &'a self,
        pk: &'a Value,
        queue: &'a str,
        publisher: &'a Publisher,
    ) -> LocalBoxFuture<'a, Result<RowSynced>>;
}

impl<S: SyncSource + ?Sized> SyncSource for Arc<S> {
    fn cqrs_id(&self) -> &str {
        (**self).cqrs_id()
    }

    fn sync_row<'a>(
        &'a self,
        pk: &'a Value,
        queue: &'a str,
        publisher: &'a Publisher,
    ) -> LocalBoxFuture<'a, Result<RowSynced>> {
        (**self).sync_row(pk, queue, publisher)
    }
}

/// A [`SyncSource`] written as a closure that reads a row's `instance_data` (with
/// `cqrs_revision` and `cqrs_updated`), `None` when there is no such row; see
/// [`sync_source_fn`].
pub struct FnSyncSource<F> {
    cqrs_id: String,
    read: F,
}

impl<F> fmt::Debug for FnSyncSource<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnSyncSource")
            .field("cqrs_id", &self.cqrs_id)
            .finish_non_exhaustive()
    }
}

/// Answers sync requests for master model `cqrs_id` with the row `read` returns, published as
/// a SYNC to the asking queue.
///
/// ```
/// use cqrs_actors::{JsonObject, sync_source_fn};
/// let rows: std::collections::HashMap<i64, JsonObject> = Default::default();
/// let source = sync_source_fn("author", move |pk: serde_json::Value| {
///     let row = pk.as_i64().and_then(|pk| rows.get(&pk).cloned());
///     async move { Ok(row) }
/// });
/// # let _ = source;
/// ```
pub fn sync_source_fn<F, Fut>(cqrs_id: impl Into<String>, read: F) -> FnSyncSource<F>
where
    F: Fn(Value) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<JsonObject>>> + 'static,
{
    FnSyncSource {
        cqrs_id: cqrs_id.into(),
        read,
    }
}

impl<F, Fut> SyncSource for FnSyncSource<F>
where
    F: Fn(Value) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<JsonObject>>> + 'static,
{
    fn cqrs_id(&self) -> &str {
        &self.cqrs_id
    }

    fn sync_row<'a>(
        &'a self,
        pk: &'a Value,
        queue: &'a str,
        publisher: &'a Publisher,
    ) -> LocalBoxFuture<'a, Result<RowSynced>> {
        Box::pin(async move {
            let Some(data) = (self.read)(pk.clone()).await? else {
                return Ok(RowSynced::Absent);
            };
            let envelope = Envelope::new(SignalType::Sync, &self.cqrs_id, data).with_pk(pk.clone());
            publisher
                .publish(envelope, Route::queue(queue, &self.cqrs_id))
                .await?;
            Ok(RowSynced::Sent)
        })
    }
}

/// How many requests one master process holds unacknowledged per CQRS id: answers are one row
/// each, so a small window keeps the database busy without letting a flood of requests in.
const PREFETCH: u32 = 32;

/// Consumes the request queues and answers.
struct SyncResponder {
    sources: HashMap<String, Arc<dyn SyncSource>>,
    publisher: Publisher,
    transport: TransportHandle,
    dead_message_ttl: Option<Duration>,
}

impl Actor for SyncResponder {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(16);
    }
}

impl Handler<Deliveries> for SyncResponder {
    type Result = AtomicResponse<Self, ()>;

    /// Answers a batch one request at a time and acknowledges every one of them: a request is
    /// answered, or dead-lettered with its reason, or (when even that fails) logged. Nothing
    /// is handed back for redelivery, so no request can loop: a lost request costs one row a
    /// later repair, never a hot loop on the master.
    fn handle(&mut self, msg: Deliveries, _: &mut Context<Self>) -> Self::Result {
        let sources = self.sources.clone();
        let publisher = self.publisher.clone();
        let transport = self.transport.clone();
        let ttl = self.dead_message_ttl;
        let fut = async move {
            let mut tags = Vec::with_capacity(msg.0.len());
            for delivery in msg.0 {
                tags.push(delivery.tag);
                if let Err(e) = answer(&sources, &publisher, &delivery).await {
                    dead_letter(&transport, delivery, e, ttl).await;
                }
            }
            if let Err(e) = transport.settle(tags, Settlement::Ack).await {
                tracing::warn!(error = %e, "ack of sync requests failed; they will be answered again");
            }
        };
        AtomicResponse::new(Box::pin(fut.into_actor(self)))
    }
}

impl Handler<Drain> for SyncResponder {
    type Result = ();

    /// Answers once every batch received before it has been answered (the batches are atomic).
    fn handle(&mut self, _: Drain, _: &mut Context<Self>) {}
}

async fn answer(
    sources: &HashMap<String, Arc<dyn SyncSource>>,
    publisher: &Publisher,
    delivery: &Delivery,
) -> Result<()> {
    let request = SyncRequest::decode(&delivery.body)?;
    let source = sources.get(&request.cqrs_id).ok_or_else(|| {
        Error::new(
            ErrorKind::UnknownCqrsId,
            format!(
                "no master model answers sync requests for CQRS id {:?}",
                values::excerpt(&request.cqrs_id)
            ),
        )
    })?;
    let pk = values::pk_text(&request.instance_pk);
    let outcome = source
        .sync_row(&request.instance_pk, &request.queue, publisher)
        .await?;
    let (cqrs_id, pk, queue) = (
        values::excerpt(&request.cqrs_id),
        values::excerpt(&pk),
        values::excerpt(&request.queue),
    );
    match outcome {
        RowSynced::Sent => {
            tracing::info!(event = "sync_request_answered", %cqrs_id, %pk, %queue, "row sent to the asking replica")
        }
        RowSynced::Absent => {
            tracing::info!(event = "sync_request_absent", %cqrs_id, %pk, %queue, "asked for a row that is not here (deleted?): nothing sent")
        }
    }
    Ok(())
}

/// Keeps a request that could not be answered in the dead-letter queue of the queue it came
/// from, with the reason in headers; logs it when even that fails.
async fn dead_letter(
    transport: &TransportHandle,
    delivery: Delivery,
    error: Error,
    ttl: Option<Duration>,
) {
    let mut headers = Headers::new();
    headers.insert(HEADER_REASON.to_owned(), error.kind().as_str().to_owned());
    headers.insert(HEADER_ERROR.to_owned(), error.to_string());
    let letter = PublishDeadLetter {
        dead_letter_queue: format!("dead_letter_{}", delivery.queue),
        // The request queue's name is its own routing key (see `request_topology`).
        cqrs_id: Some(delivery.queue.clone()),
        body: delivery.body,
        content_type: delivery.content_type,
        headers,
        ttl,
    };
    let queue = values::abbreviate(&delivery.queue, 200);
    match transport.dead_letter(letter).await {
        Ok(()) => {
            tracing::warn!(event = "sync_request_dead_lettered", queue, reason = error.kind().as_str(), error = %error, "sync request could not be answered")
        }
        Err(e) => {
            tracing::error!(event = "sync_request_dropped", queue, reason = error.kind().as_str(), error = %error, dead_letter_error = %e, "sync request could not be answered nor dead-lettered; dropped")
        }
    }
}

/// The running master side of gap repair: the responder and its consumers.
pub(crate) struct Answering {
    responder: Addr<SyncResponder>,
    consumers: Vec<ConsumerTag>,
}

impl Answering {
    /// Checks the sources against the registry's master models, declares a request queue per
    /// CQRS id and consumes them. `None` when no source was given.
    pub async fn start(
        sources: Vec<Arc<dyn SyncSource>>,
        registry: &Registry,
        transport: &TransportHandle,
        publisher: Publisher,
        dead_message_ttl: Option<Duration>,
    ) -> Result<Option<Self>> {
        if sources.is_empty() {
            return Ok(None);
        }
        let mut by_id: HashMap<String, Arc<dyn SyncSource>> = HashMap::new();
        for source in sources {
            let id = source.cqrs_id().to_owned();
            if registry.master(&id).is_none() {
                return Err(Error::config(
                    &id,
                    "answer_sync_requests was given a source for this CQRS id, and no master \
                     model with it is registered: register it with CqrsSystemBuilder::master",
                ));
            }
            if by_id.insert(id.clone(), source).is_some() {
                return Err(Error::new(
                    ErrorKind::DuplicateCqrsId,
                    format!("two sync sources answer for CQRS id {id:?}"),
                ));
            }
        }
        let mut ids: Vec<String> = by_id.keys().cloned().collect();
        ids.sort();
        let responder = SyncResponder {
            sources: by_id,
            publisher,
            transport: transport.clone(),
            dead_message_ttl,
        }
        .start();
        let mut consumers = Vec::with_capacity(ids.len());
        for id in &ids {
            let topology = request_topology(id);
            let queue = topology.queue.clone();
            transport.declare(topology).await?;
            let consumer = transport
                .subscribe(Subscribe {
                    queue,
                    prefetch: PREFETCH,
                    consumer: responder.clone().recipient(),
                })
                .await?;
            consumers.push(consumer);
        }
        tracing::info!(models = ?ids, "answering sync requests (gap repair)");
        Ok(Some(Self {
            responder,
            consumers,
        }))
    }

    /// Waits until every request received so far is answered.
    pub async fn drain(&self) -> Result<()> {
        self.responder.send(Drain).await?;
        Ok(())
    }

    /// Stops the consumers: with `release`, unacknowledged requests go back to their queues.
    pub async fn cancel(&self, transport: &TransportHandle, release: bool) -> Result<()> {
        for consumer in &self.consumers {
            transport.cancel(*consumer, release).await?;
        }
        Ok(())
    }
}
