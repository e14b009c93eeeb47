//! The dead-letter tools on RabbitMQ, which cannot browse a queue: each takes the messages the
//! dead-letter queue held when it began with `basic.get` on a channel of its own, settles
//! those it removes one by one, and closes the channel, which hands every other one back to
//! the queue in its place.

use actix::prelude::*;
use cqrs_actors::Result;
use cqrs_actors::transport::{
    DeadLetter, ListDeadLetters, PurgeDeadLetters, RetryDeadLetters, RetryReport,
};
use lapin::options::{BasicAckOptions, BasicGetOptions, QueuePurgeOptions};
use lapin::{Channel, Connection};

use super::link::{open_channel, wait_link};
use super::{RabbitMqTransport, consumer, lapin_error, outgoing, topology};

/// One walk over a dead-letter queue: its channel and the messages left to take.
struct Walk {
    channel: Channel,
    queue: String,
    /// Messages the queue held when the walk began and not taken yet.
    left: u64,
    /// Messages taken so far.
    taken: u64,
}

impl Walk {
    /// Starts a walk over `queue`; `None` when the queue does not exist.
    async fn start(connection: &Connection, queue: &str) -> Result<Option<Self>> {
        let Some((ready, _)) = topology::probe_queue(connection, queue).await? else {
            return Ok(None);
        };
        Ok(Some(Self {
            channel: open_channel(connection).await?,
            queue: queue.to_owned(),
            left: ready,
            taken: 0,
        }))
    }

    /// Takes the next dead letter, unacknowledged, with its delivery tag; `None` once the
    /// messages there were at the start are taken (never more: a copy published to the same
    /// queue is not walked over).
    async fn next(&mut self) -> Result<Option<(u64, DeadLetter)>> {
        if self.left == 0 {
            return Ok(None);
        }
        let got = self
            .channel
            .basic_get(
                topology::short("queue", &self.queue)?,
                BasicGetOptions { no_ack: false },
            )
            .await
            .map_err(|e| lapin_error("basic.get", e))?;
        let Some(got) = got else {
            self.left = 0;
            return Ok(None);
        };
        self.left -= 1;
        self.taken += 1;
        let d = got.delivery;
        let dead = DeadLetter {
            id: self.taken.to_string(),
            routing_key: d.routing_key.to_string(),
            content_type: d.properties.content_type().as_ref().map(|c| c.to_string()),
            headers: consumer::headers(d.properties.headers().as_ref()),
            body: d.data,
        };
        Ok(Some((d.delivery_tag, dead)))
    }

    /// Removes one taken dead letter.
    async fn remove(&self, tag: u64) -> Result<()> {
        self.channel
            .basic_ack(tag, BasicAckOptions { multiple: false })
            .await
            .map_err(|e| lapin_error("basic.ack", e))
    }

    /// Hands every taken dead letter not removed back to the queue, in its place.
    async fn end(self) {
        let _ = self
            .channel
            .close(200, "dead letters handed back".into())
            .await;
    }
}

/// Runs `work` over a walk of `queue` and ends the walk, also after an error; a queue that
/// does not exist gives `empty`.
async fn walk<T, F>(connection: &Connection, queue: &str, empty: T, work: F) -> Result<T>
where
    F: AsyncFnOnce(&mut Walk) -> Result<T>,
{
    let Some(mut w) = Walk::start(connection, queue).await? else {
        return Ok(empty);
    };
    let result = work(&mut w).await;
    w.end().await;
    result
}

impl Handler<ListDeadLetters> for RabbitMqTransport {
    type Result = ResponseFuture<Result<Vec<DeadLetter>>>;

    /// Takes the dead letters up to the `limit`-th selected one and hands them all back (which
    /// marks them redelivered).
    fn handle(&mut self, msg: ListDeadLetters, _: &mut Context<Self>) -> Self::Result {
        let (mut link, deadline) = (self.link.clone(), self.deadline());
        Box::pin(async move {
            let l = wait_link(&mut link, None, deadline).await?;
            let filter = msg.cqrs_id.as_deref();
            walk(
                &l.connection,
                &msg.dead_letter_queue,
                Vec::new(),
                async |w| {
                    let mut listed = Vec::new();
                    while listed.len() < msg.limit {
                        let Some((_, dead)) = w.next().await? else {
                            break;
                        };
                        if dead.matches(filter) {
                            listed.push(dead);
                        }
                    }
                    Ok(listed)
                },
            )
            .await
        })
    }
}

impl Handler<RetryDeadLetters> for RabbitMqTransport {
    type Result = ResponseFuture<Result<RetryReport>>;

    /// Publishes each rewritten copy through the exchange and acknowledges its dead letter once
    /// the broker confirmed the copy. If that acknowledgement is lost with the channel, the
    /// dead letter comes back and its copy is published twice: the replica's revision rules
    /// make the second one harmless.
    fn handle(&mut self, msg: RetryDeadLetters, _: &mut Context<Self>) -> Self::Result {
        let (mut link, deadline) = (self.link.clone(), self.deadline());
        let (publisher, exchange) = (self.publisher.clone(), self.config.exchange().to_owned());
        Box::pin(async move {
            let l = wait_link(&mut link, None, deadline).await?;
            let filter = msg.cqrs_id.as_deref();
            let empty = RetryReport::default();
            walk(&l.connection, &msg.dead_letter_queue, empty, async |w| {
                let (mut report, mut considered) = (RetryReport::default(), 0);
                while considered < msg.limit {
                    let Some((tag, dead)) = w.next().await? else {
                        break;
                    };
                    if !dead.matches(filter) {
                        continue;
                    }
                    considered += 1;
                    let Some(copy) = (msg.rewrite)(&dead) else {
                        report.skipped += 1;
                        continue;
                    };
                    publisher
                        .publish(outgoing::outgoing(&exchange, copy)?)
                        .await?;
                    w.remove(tag).await?;
                    report.retried += 1;
                }
                Ok(report)
            })
            .await
        })
    }
}

impl Handler<PurgeDeadLetters> for RabbitMqTransport {
    type Result = ResponseFuture<Result<u64>>;

    /// All: `queue.purge`. One CQRS id's: takes every dead letter and acknowledges that id's.
    fn handle(&mut self, msg: PurgeDeadLetters, _: &mut Context<Self>) -> Self::Result {
        let (mut link, deadline) = (self.link.clone(), self.deadline());
        Box::pin(async move {
            let l = wait_link(&mut link, None, deadline).await?;
            let queue = &msg.dead_letter_queue;
            let Some(id) = msg.cqrs_id.as_deref() else {
                if topology::probe_queue(&l.connection, queue).await?.is_none() {
                    return Ok(0);
                }
                let channel = open_channel(&l.connection).await?;
                let purged = channel
                    .queue_purge(
                        topology::short("queue", queue)?,
                        QueuePurgeOptions::default(),
                    )
                    .await
                    .map_err(|e| lapin_error("queue.purge", e));
                let _ = channel.close(200, "purged".into()).await;
                return Ok(u64::from(purged?));
            };
            walk(&l.connection, queue, 0, async |w| {
                let mut purged = 0;
                while let Some((tag, dead)) = w.next().await? {
                    if dead.matches(Some(id)) {
                        w.remove(tag).await?;
                        purged += 1;
                    }
                }
                Ok(purged)
            })
            .await
        })
    }
}
