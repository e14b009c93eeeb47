//! [`Transport`], the bound every transport actor meets, and [`TransportHandle`], the
//! type-erased handle the rest of the framework (and the command line) uses.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use actix::dev::RecipientRequest;
use actix::prelude::*;

use super::messages::{
    Cancel, ConsumerTag, Declare, DeliveryTag, Inspect, OutgoingMessage, Park, Ping, Publish,
    PublishDeadLetter, QueueStats, Settle, Settlement, Subscribe,
};
use super::operator::{
    DeadLetter, DeleteQueue, DescribeQueue, ListDeadLetters, PurgeDeadLetters, RetryDeadLetters,
    RetryReport, TopologyObject,
};
use crate::error::Result;

/// The actor messages a transport handles. Implemented for every actor that handles them all.
pub trait Transport:
    Actor<Context = Context<Self>>
    + Handler<Declare>
    + Handler<Publish>
    + Handler<Subscribe>
    + Handler<Settle>
    + Handler<Cancel>
    + Handler<Park>
    + Handler<PublishDeadLetter>
    + Handler<Inspect>
    + Handler<Ping>
    + Handler<ListDeadLetters>
    + Handler<RetryDeadLetters>
    + Handler<PurgeDeadLetters>
    + Handler<DescribeQueue>
    + Handler<DeleteQueue>
{
}

impl<A> Transport for A where
    A: Actor<Context = Context<A>>
        + Handler<Declare>
        + Handler<Publish>
        + Handler<Subscribe>
        + Handler<Settle>
        + Handler<Cancel>
        + Handler<Park>
        + Handler<PublishDeadLetter>
        + Handler<Inspect>
        + Handler<Ping>
        + Handler<Ping>
        + Handler<ListDeadLetters>
        + Handler<RetryDeadLetters>
        + Handler<PurgeDeadLetters>
        + Handler<DescribeQueue>
        + Handler<DeleteQueue>
{
}

/// The framework's handle on a running transport actor.
///
/// Its requests are handed to the transport when a method is called; the futures they return
/// borrow nothing (`use<>`), so they may outlive the handle they came from.
#[derive(Clone)]
pub struct TransportHandle {
    name: &'static str,
    exchange: Option<String>,
    declare: Recipient<Declare>,
    publish: Recipient<Publish>,
    subscribe: Recipient<Subscribe>,
    settle: Recipient<Settle>,
    cancel: Recipient<Cancel>,
    park: Recipient<Park>,
    dead_letter: Recipient<PublishDeadLetter>,
    inspect: Recipient<Inspect>,
    ping: Recipient<Ping>,
    list_dead_letters: Recipient<ListDeadLetters>,
    retry_dead_letters: Recipient<RetryDeadLetters>,
    purge_dead_letters: Recipient<PurgeDeadLetters>,
    describe_queue: Recipient<DescribeQueue>,
    delete_queue: Recipient<DeleteQueue>,
}

impl fmt::Debug for TransportHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportHandle")
            .field("name", &self.name)
            .field("exchange", &self.exchange)
            .finish()
    }
}

impl TransportHandle {
    /// A handle on the transport actor at `addr`; `name` appears in logs.
    pub fn new<T: Transport>(name: &'static str, addr: &Addr<T>) -> Self {
        Self {
            name,
            exchange: None,
            declare: addr.clone().recipient(),
            publish: addr.clone().recipient(),
            subscribe: addr.clone().recipient(),
            settle: addr.clone().recipient(),
            cancel: addr.clone().recipient(),
            park: addr.clone().recipient(),
            dead_letter: addr.clone().recipient(),
            inspect: addr.clone().recipient(),
            ping: addr.clone().recipient(),
            list_dead_letters: addr.clone().recipient(),
            retry_dead_letters: addr.clone().recipient(),
            purge_dead_letters: addr.clone().recipient(),
            describe_queue: addr.clone().recipient(),
            delete_queue: addr.clone().recipient(),
        }
    }

    /// The transport's name.
    #[must_use]
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Says which exchange the transport was built for, so that a system started with another
    /// one in its configuration fails at start instead of publishing elsewhere.
    #[must_use]
    pub fn with_exchange(mut self, exchange: impl Into<String>) -> Self {
        self.exchange = Some(exchange.into());
        self
    }

    /// The exchange the transport was built for, if it has one.
    #[must_use]
    pub fn exchange(&self) -> Option<&str> {
        self.exchange.as_deref()
    }

    /// Sends [`Declare`].
    pub fn declare(&self, msg: Declare) -> impl Future<Output = Result<()>> + use<> {
        flatten(self.declare.send(msg))
    }

    /// Sends [`Publish`]; the future resolves once the broker confirmed. The message is handed
    /// to the transport when this is called, so calls keep their order.
    pub fn publish(&self, msg: OutgoingMessage) -> impl Future<Output = Result<()>> + use<> {
        flatten(self.publish.send(Publish(msg)))
    }

    /// Sends [`Subscribe`].
    pub fn subscribe(&self, msg: Subscribe) -> impl Future<Output = Result<ConsumerTag>> + use<> {
        flatten(self.subscribe.send(msg))
    }

    /// Sends [`Settle`] (nothing when `tags` is empty).
    pub fn settle(
        &self,
        tags: Vec<DeliveryTag>,
        settlement: Settlement,
    ) -> impl Future<Output = Result<()>> + use<> {
        let request = (!tags.is_empty()).then(|| self.settle.send(Settle { tags, settlement }));
        async move {
            match request {
                Some(r) => r.await?,
                None => Ok(()),
            }
        }
    }

    /// Sends [`Cancel`].
    pub fn cancel(
        &self,
        consumer: ConsumerTag,
        release: bool,
    ) -> impl Future<Output = Result<()>> + use<> {
        flatten(self.cancel.send(Cancel { consumer, release }))
    }

    /// Sends [`Park`]; the future resolves once the copy is durable.
    pub fn park(
        &self,
        message: OutgoingMessage,
        delay: Duration,
    ) -> impl Future<Output = Result<()>> + use<> {
        flatten(self.park.send(Park { message, delay }))
    }

    /// Sends [`PublishDeadLetter`]; the future resolves once it is confirmed.
    pub fn dead_letter(&self, msg: PublishDeadLetter) -> impl Future<Output = Result<()>> + use<> {
        flatten(self.dead_letter.send(msg))
    }

    /// Sends [`Inspect`].
    pub fn inspect(
        &self,
        queue: impl Into<String>,
    ) -> impl Future<Output = Result<QueueStats>> + 'static {
        flatten(self.inspect.send(Inspect {
            queue: queue.into(),
        }))
    }

    /// Sends [`Ping`].
    pub fn ping(&self) -> impl Future<Output = Result<()>> + 'static {
        flatten(self.ping.send(Ping))
    }

    /// Sends [`ListDeadLetters`]: the dead letters stay where they are.
    pub fn list_dead_letters(
        &self,
        msg: ListDeadLetters,
    ) -> impl Future<Output = Result<Vec<DeadLetter>>> + use<> {
        flatten(self.list_dead_letters.send(msg))
    }

    /// Sends [`RetryDeadLetters`]; the future resolves once every dead letter it took is
    /// republished and removed, or stays.
    pub fn retry_dead_letters(
        &self,
        msg: RetryDeadLetters,
    ) -> impl Future<Output = Result<RetryReport>> + use<> {
        flatten(self.retry_dead_letters.send(msg))
    }

    /// Sends [`PurgeDeadLetters`]; answers how many dead letters were deleted.
    pub fn purge_dead_letters(
        &self,
        msg: PurgeDeadLetters,
    ) -> impl Future<Output = Result<u64>> + use<> {
        flatten(self.purge_dead_letters.send(msg))
    }

    /// Sends [`DescribeQueue`].
    pub fn describe_queue(
        &self,
        msg: DescribeQueue,
    ) -> impl Future<Output = Result<Vec<TopologyObject>>> + use<> {
        flatten(self.describe_queue.send(msg))
    }

    /// Sends [`DeleteQueue`]; answers the names of the objects deleted.
    pub fn delete_queue(
        &self,
        msg: DeleteQueue,
    ) -> impl Future<Output = Result<Vec<String>>> + use<> {
        flatten(self.delete_queue.send(msg))
    }
}

async fn flatten<M, T>(request: RecipientRequest<M>) -> Result<T>
where
    M: Message<Result = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    request.await?
}
