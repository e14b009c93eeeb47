//! Messages for tests and tools, never sent by the framework: trim now, delete consumers
//! that left, stop, and delete every key of the exchange.

use actix::prelude::*;
use cqrs_actors::Result;

use super::conn::redis_error;
use super::{RedisTransport, lock};

/// Trims every stream of the exchange now (the trimmer does it every `trim_interval`) and
/// answers the number of entries trimmed. For tests and tools; never sent by the framework.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<u64>")]
pub struct TrimNow;

impl Handler<TrimNow> for RedisTransport {
    type Result = ResponseFuture<Result<u64>>;

    fn handle(&mut self, _: TrimNow, _: &mut Context<Self>) -> Self::Result {
        let mut m = self.maintenance.clone();
        Box::pin(async move { m.trim_all().await.map_err(|e| redis_error("trimming", e)) })
    }
}

/// Deletes the consumers that left with nothing pending (idle longer than
/// `consumer_gc_idle`) now, and answers how many. For tests and tools.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<u64>")]
pub struct DeleteGoneConsumers;

impl Handler<DeleteGoneConsumers> for RedisTransport {
    type Result = ResponseFuture<Result<u64>>;

    fn handle(&mut self, _: DeleteGoneConsumers, _: &mut Context<Self>) -> Self::Result {
        let mut m = self.maintenance.clone();
        Box::pin(async move {
            m.delete_gone_consumers()
                .await
                .map_err(|e| redis_error("deleting consumers", e))
        })
    }
}

/// Stops the transport: consumers stop reading (their pending entries stay with their names
/// for a restart or a claim), the mover and the trimmer end. For tests and tools.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Stop;

impl Handler<Stop> for RedisTransport {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Deletes every key of the exchange (streams, parked sets, registries), after stopping the
/// transport's consumers (a consumer would create its groups again). For tests and tools;
/// never sent by the framework.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<u64>")]
pub struct Teardown;

impl Handler<Teardown> for RedisTransport {
    type Result = ResponseFuture<Result<u64>>;

    fn handle(&mut self, _: Teardown, _: &mut Context<Self>) -> Self::Result {
        self.stop_consumers();
        self.queues.clear();
        self.registered_dead_letters.clear();
        lock(&self.maintenance.movers).clear();
        let (mut control, pattern) = (self.control.clone(), glob_escape(self.keys.base()) + "*");
        Box::pin(async move {
            let mut cursor = 0u64;
            let mut deleted = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) = ::redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut control)
                    .await
                    .map_err(|e| redis_error("SCAN", e))?;
                if !keys.is_empty() {
                    let n: u64 = ::redis::cmd("DEL")
                        .arg(&keys)
                        .query_async(&mut control)
                        .await
                        .map_err(|e| redis_error("DEL", e))?;
                    deleted += n;
                }
                if next == 0 {
                    return Ok(deleted);
                }
                cursor = next;
            }
        })
    }
}

/// Escapes the glob characters of a key for `SCAN MATCH`.
fn glob_escape(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for ch in key.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}
