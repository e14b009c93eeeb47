//! Dead letters: publishing them, and the operator's tools (list without taking, retry with
//! the republish and the removal in one step, purge).

use ::redis::Value;
use ::redis::aio::ConnectionManager;
use actix::prelude::*;
use cqrs_actors::transport::{
    DeadLetter, DeliveryTag, ListDeadLetters, PublishDeadLetter, PurgeDeadLetters,
    RetryDeadLetters, RetryReport, Route,
};
use cqrs_actors::{Error, ErrorKind, Result};

use super::conn::redis_error;
use super::keys::{self, Keys, StreamId, entry_fields, message_fields};
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

/// Entries read per `XRANGE` while looking for dead letters.
const PAGE: usize = 500;

/// The first `limit` dead letters of `stream` that `cqrs_id` selects, oldest first, with their
/// entry ids; expired ones are left out (the trimmer deletes them).
async fn read(
    control: &mut ConnectionManager,
    stream: &str,
    dead_letter_queue: &str,
    cqrs_id: Option<&str>,
    limit: usize,
) -> Result<Vec<(StreamId, DeadLetter)>> {
    let mut found = Vec::new();
    let mut start = "-".to_owned();
    let now = keys::now_ms();
    while found.len() < limit {
        let reply: Value = ::redis::cmd("XRANGE")
            .arg(stream)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(PAGE)
            .query_async(control)
            .await
            .map_err(|e| redis_error(&format!("XRANGE {stream}"), e))?;
        let entries = keys::parse_entries(0, &reply);
        let Some(last) = entries.last() else {
            break;
        };
        start = format!("({}", last.id);
        let page_len = entries.len();
        for entry in entries {
            if found.len() == limit {
                break;
            }
            if entry.expired(now) {
                continue;
            }
            let id = entry.id;
            let tag = DeliveryTag { channel: 0, tag: 0 };
            let d = entry.into_delivery(tag, dead_letter_queue, false, None);
            let dead = DeadLetter {
                id: id.to_string(),
                routing_key: d.routing_key,
                body: d.body,
                content_type: d.content_type,
                headers: d.headers,
            };
            if dead.matches(cqrs_id) {
                found.push((id, dead));
            }
        }
        if page_len < PAGE {
            break;
        }
    }
    Ok(found)
}

impl Handler<ListDeadLetters> for RedisTransport {
    type Result = ResponseFuture<Result<Vec<DeadLetter>>>;

    fn handle(&mut self, msg: ListDeadLetters, _: &mut Context<Self>) -> Self::Result {
        let stream = self.keys.queue_stream(&msg.dead_letter_queue);
        let mut control = self.control.clone();
        Box::pin(async move {
            let filter = msg.cqrs_id.as_deref();
            let found = read(
                &mut control,
                &stream,
                &msg.dead_letter_queue,
                filter,
                msg.limit,
            );
            Ok(found.await?.into_iter().map(|(_, d)| d).collect())
        })
    }
}

/// The key (and hash field) the retry script checks for a queue that takes `route`, as the
/// publisher does: a bound queue for a broadcast, a declared one for a directed message.
fn route_check(keys: &Keys, route: &Route) -> (String, String) {
    match route {
        Route::Broadcast { cqrs_id } => (keys.bindings(cqrs_id), String::new()),
        Route::Queue { queue, .. } => (keys.queues(), queue.clone()),
    }
}

impl Handler<RetryDeadLetters> for RedisTransport {
    type Result = ResponseFuture<Result<RetryReport>>;

    /// Each copy is appended and its dead letter removed by one script, so that neither
    /// happens without the other; a dead letter removed meanwhile by another tool is left out
    /// of the report.
    fn handle(&mut self, msg: RetryDeadLetters, _: &mut Context<Self>) -> Self::Result {
        let dead_stream = self.keys.queue_stream(&msg.dead_letter_queue);
        let (mut control, keys) = (self.control.clone(), self.keys.clone());
        Box::pin(async move {
            let filter = msg.cqrs_id.as_deref();
            let queue = &msg.dead_letter_queue;
            let found = read(&mut control, &dead_stream, queue, filter, msg.limit).await?;
            let mut report = RetryReport::default();
            for (id, dead) in found {
                let Some(copy) = (msg.rewrite)(&dead) else {
                    report.skipped += 1;
                    continue;
                };
                let routing_key = copy.route.routing_key();
                let target = keys.route_stream(&copy.route);
                let (check, field) = route_check(&keys, &copy.route);
                let mut invocation = scripts::RETRY_DEAD_LETTER.prepare_invoke();
                invocation
                    .key(&dead_stream)
                    .key(&target)
                    .key(&check)
                    .arg(queue)
                    .arg(id.to_string())
                    .arg(&field);
                for (k, v) in message_fields(copy) {
                    invocation.arg(k.as_bytes()).arg(v);
                }
                let moved: i64 = invocation.invoke_async(&mut control).await.map_err(|e| {
                    redis_error(&format!("retrying dead letter {id} of {dead_stream}"), e)
                })?;
                match moved {
                    1 => report.retried += 1,
                    0 => {}
                    _ => {
                        return Err(Error::new(
                            ErrorKind::Unroutable,
                            format!("no queue is bound to routing key {routing_key:?}"),
                        ));
                    }
                }
            }
            Ok(report)
        })
    }
}

impl Handler<PurgeDeadLetters> for RedisTransport {
    type Result = ResponseFuture<Result<u64>>;

    /// All: the stream is trimmed to nothing (its group stays). One CQRS id's: those entries
    /// are acknowledged and deleted.
    fn handle(&mut self, msg: PurgeDeadLetters, _: &mut Context<Self>) -> Self::Result {
        let stream = self.keys.queue_stream(&msg.dead_letter_queue);
        let mut control = self.control.clone();
        Box::pin(async move {
            let queue = &msg.dead_letter_queue;
            let Some(cqrs_id) = msg.cqrs_id.as_deref() else {
                return ::redis::cmd("XTRIM")
                    .arg(&stream)
                    .arg("MAXLEN")
                    .arg(0)
                    .query_async(&mut control)
                    .await
                    .map_err(|e| redis_error(&format!("purging {stream}"), e));
            };
            let found = read(&mut control, &stream, queue, Some(cqrs_id), usize::MAX).await?;
            let mut purged = 0;
            for chunk in found.chunks(PAGE) {
                let ids: Vec<String> = chunk.iter().map(|(id, _)| id.to_string()).collect();
                let (n,): (u64,) = ::redis::pipe()
                    .cmd("XACK")
                    .arg(&stream)
                    .arg(queue)
                    .arg(&ids)
                    .ignore()
                    .cmd("XDEL")
                    .arg(&stream)
                    .arg(&ids)
                    .query_async(&mut control)
                    .await
                    .map_err(|e| redis_error(&format!("purging {stream}"), e))?;
                purged += n;
            }
            Ok(purged)
        })
    }
}
