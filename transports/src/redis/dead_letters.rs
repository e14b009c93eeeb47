//! Dead letters: publishing them, and the tools of the command line's `dead-letters` (list
//! without taking, retry as one step, purge).

use ::redis::Value;
use actix::prelude::*;
use cqrs_actors::Result;
use cqrs_actors::transport::PublishDeadLetter;

use super::conn::redis_error;
use super::keys::{self, entry_fields, message_fields};
use super::publisher::Outgoing;
use super::{RedisTransport, scripts};

impl Handler<PublishDeadLetter> for RedisTransport {
    type Result = ResponseFuture<Result<()>>;

    fn handle(&mut self, msg: PublishDeadLetter, _: &mut Context<Self>) -> Self::Result {
        let stream = self.keys.queue_stream(&msg.dead_letter_queue);
        let routing_key = msg.routing_key();
        let fields = entry_fields(
            msg.body,
            msg.content_type.as_deref(),
            routing_key,
            &msg.headers,
            msg.ttl,
        );
        let appended = self.append(Outgoing::Fields(stream.clone(), fields));
        if self
            .registered_dead_letters
            .contains(&msg.dead_letter_queue)
        {
            return appended;
        }
        // A dead-letter queue nobody declared here: register it, so that the trimmer expires
        // its entries and `Inspect` counts them, then append.
        self.registered_dead_letters
            .insert(msg.dead_letter_queue.clone());
        let mut pipe = ::redis::pipe();
        pipe.cmd("XGROUP")
            .arg("CREATE")
            .arg(&stream)
            .arg(&msg.dead_letter_queue)
            .arg("0")
            .arg("MKSTREAM")
            .ignore();
        pipe.cmd("SADD")
            .arg(self.keys.streams())
            .arg(&stream)
            .ignore();
        pipe.cmd("HSETNX")
            .arg(self.keys.queues())
            .arg(&msg.dead_letter_queue)
            .arg(&msg.dead_letter_queue)
            .ignore();
        pipe.ignore_errors();
        let mut control = self.control.clone();
        Box::pin(async move {
            let _ = pipe.query_async::<Value>(&mut control).await;
            appended.await
        })
    }
}

/// A dead letter as its stream holds it.
#[derive(Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The entry id in the dead-letter stream (for [`RetryDeadLetter`] and
    /// [`PurgeDeadLetters`]).
    pub id: String,
    /// `cqrs.<dead-letter queue>.<cqrs id>`, or the queue's name when the id was unknown.
    pub routing_key: String,
    /// The body as it was dead-lettered.
    pub body: Vec<u8>,
    /// Its content type.
    pub content_type: Option<String>,
    /// Its headers ([`HEADER_REASON`](cqrs_actors::transport::HEADER_REASON),
    /// [`HEADER_ERROR`](cqrs_actors::transport::HEADER_ERROR), ...).
    pub headers: cqrs_actors::transport::Headers,
}

impl std::fmt::Debug for DeadLetter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetter")
            .field("id", &self.id)
            .field("routing_key", &self.routing_key)
            .field("body_len", &self.body.len())
            .field("headers", &self.headers)
            .finish()
    }
}

/// Lists dead letters without taking them: up to `limit` entries of the dead-letter stream
/// after entry `after` (from the start when `None`). For the command line's `dead-letters
/// dump`; never sent by the framework.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Vec<DeadLetter>>")]
pub struct ListDeadLetters {
    /// The dead-letter queue.
    pub dead_letter_queue: String,
    /// List the entries after this id.
    pub after: Option<String>,
    /// At most this many.
    pub limit: usize,
}

impl Handler<ListDeadLetters> for RedisTransport {
    type Result = ResponseFuture<Result<Vec<DeadLetter>>>;

    fn handle(&mut self, msg: ListDeadLetters, _: &mut Context<Self>) -> Self::Result {
        let stream = self.keys.queue_stream(&msg.dead_letter_queue);
        let mut control = self.control.clone();
        Box::pin(async move {
            let start = msg
                .after
                .map_or_else(|| "-".to_owned(), |id| format!("({id}"));
            let reply: Value = ::redis::cmd("XRANGE")
                .arg(&stream)
                .arg(start)
                .arg("+")
                .arg("COUNT")
                .arg(msg.limit.max(1))
                .query_async(&mut control)
                .await
                .map_err(|e| redis_error(&format!("XRANGE {stream}"), e))?;
            Ok(keys::parse_entries(0, &reply)
                .into_iter()
                .map(|entry| {
                    let id = entry.id.to_string();
                    let tag = cqrs_actors::transport::DeliveryTag { channel: 0, tag: 0 };
                    let d = entry.into_delivery(tag, &msg.dead_letter_queue, false, None);
                    DeadLetter {
                        id,
                        routing_key: d.routing_key,
                        body: d.body,
                        content_type: d.content_type,
                        headers: d.headers,
                    }
                })
                .collect())
        })
    }
}

/// Republishes a dead letter as `message` (the caller rewrites its body: `retries` reset, a
/// new `expires`) to the stream of the message's route, and removes it from the dead-letter
/// stream in the same step, so it is never lost nor left twice. Answers `false` when the
/// entry is no longer there. For the command line's `dead-letters retry`.
#[derive(Debug, Message)]
#[rtype(result = "Result<bool>")]
pub struct RetryDeadLetter {
    /// The dead-letter queue.
    pub dead_letter_queue: String,
    /// The entry id, from [`ListDeadLetters`].
    pub id: String,
    /// The copy to publish (usually `Route::queue(<replica queue>, <cqrs id>)`).
    pub message: cqrs_actors::transport::OutgoingMessage,
}

impl Handler<RetryDeadLetter> for RedisTransport {
    type Result = ResponseFuture<Result<bool>>;

    fn handle(&mut self, msg: RetryDeadLetter, _: &mut Context<Self>) -> Self::Result {
        let dead = self.keys.queue_stream(&msg.dead_letter_queue);
        let target = self.keys.route_stream(&msg.message.route);
        let mut invocation = scripts::RETRY_DEAD_LETTER.prepare_invoke();
        invocation
            .key(&dead)
            .key(&target)
            .arg(&msg.dead_letter_queue)
            .arg(&msg.id);
        for (k, v) in message_fields(msg.message) {
            invocation.arg(k.as_bytes()).arg(v);
        }
        let mut control = self.control.clone();
        Box::pin(async move {
            let moved: i64 = invocation.invoke_async(&mut control).await.map_err(|e| {
                redis_error(&format!("retrying dead letter {} of {dead}", msg.id), e)
            })?;
            Ok(moved == 1)
        })
    }
}

/// Deletes dead letters: the given entries, or all of the queue's. Answers how many were
/// deleted. For the command line's `dead-letters purge`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<u64>")]
pub struct PurgeDeadLetters {
    /// The dead-letter queue.
    pub dead_letter_queue: String,
    /// The entry ids, or `None` for all.
    pub ids: Option<Vec<String>>,
}

impl Handler<PurgeDeadLetters> for RedisTransport {
    type Result = ResponseFuture<Result<u64>>;

    fn handle(&mut self, msg: PurgeDeadLetters, _: &mut Context<Self>) -> Self::Result {
        let stream = self.keys.queue_stream(&msg.dead_letter_queue);
        let mut control = self.control.clone();
        Box::pin(async move {
            let mut pipe = ::redis::pipe();
            match &msg.ids {
                Some(ids) if ids.is_empty() => return Ok(0),
                Some(ids) => {
                    pipe.cmd("XACK")
                        .arg(&stream)
                        .arg(&msg.dead_letter_queue)
                        .arg(ids)
                        .ignore();
                    pipe.cmd("XDEL").arg(&stream).arg(ids);
                }
                None => {
                    pipe.cmd("XTRIM").arg(&stream).arg("MAXLEN").arg(0);
                }
            }
            let (n,): (u64,) = pipe
                .query_async(&mut control)
                .await
                .map_err(|e| redis_error(&format!("purging {stream}"), e))?;
            Ok(n)
        })
    }
}
