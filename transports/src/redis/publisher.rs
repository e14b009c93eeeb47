//! The publisher: one task that writes every publish and dead letter of the transport in
//! order, as pipelined `XADD`s, one round trip per batch of what queued up while the previous
//! batch was on its way.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::Value;
use ::redis::aio::ConnectionManager;
use cqrs_actors::{Error, ErrorKind, Result};
use tokio::sync::{mpsc, oneshot};

use super::RedisConfig;
use super::conn::{backoff, is_connection_error, redis_error};
use super::keys::Keys;

/// What must exist for a publish to be routable (RabbitMQ's `mandatory`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Check {
    /// Some queue is bound to the CQRS id.
    Bound(String),
    /// The queue was declared.
    Queue(String),
}

/// One entry to append.
pub(crate) struct Request {
    pub stream: String,
    pub check: Option<Check>,
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
    pub deadline: Instant,
    pub reply: oneshot::Sender<Result<()>>,
}

/// Starts the publisher task; it ends when every sender is dropped.
pub(crate) fn spawn(
    conn: ConnectionManager,
    keys: Keys,
    config: Arc<RedisConfig>,
) -> mpsc::UnboundedSender<Request> {
    let (tx, rx) = mpsc::unbounded_channel();
    actix::spawn(run(rx, conn, keys, config));
    tx
}

async fn run(
    mut rx: mpsc::UnboundedReceiver<Request>,
    mut conn: ConnectionManager,
    keys: Keys,
    config: Arc<RedisConfig>,
) {
    let max = config.publish_window.clamp(1, 4096);
    let mut routes = Routes {
        fresh: HashMap::new(),
        ttl: config.route_cache,
    };
    let mut batch: Vec<Request> = Vec::with_capacity(max);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < max {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        routes.check(&mut conn, &keys, &config, &mut batch).await;
        if !batch.is_empty() {
            append(&mut conn, &config, &mut batch).await;
        }
    }
}

/// Which routes were seen bound lately, so that a publish costs no extra round trip.
struct Routes {
    fresh: HashMap<Check, Instant>,
    ttl: Duration,
}

impl Routes {
    /// Answers `Unroutable` to the requests whose route has no queue, asking the server about
    /// the routes not seen bound within the cache time.
    async fn check(
        &mut self,
        conn: &mut ConnectionManager,
        keys: &Keys,
        config: &RedisConfig,
        batch: &mut Vec<Request>,
    ) {
        let now = Instant::now();
        let stale: BTreeSet<Check> = batch
            .iter()
            .filter_map(|r| r.check.clone())
            .filter(|c| {
                self.fresh
                    .get(c)
                    .is_none_or(|at| now.duration_since(*at) > self.ttl)
            })
            .collect();
        if stale.is_empty() {
            return;
        }
        let stale: Vec<Check> = stale.into_iter().collect();
        let mut pipe = ::redis::pipe();
        for check in &stale {
            match check {
                Check::Bound(id) => pipe.cmd("SCARD").arg(keys.bindings(id)),
                Check::Queue(q) => pipe.cmd("HEXISTS").arg(keys.queues()).arg(q),
            };
        }
        let answer = retry::<Vec<i64>>(conn, config, batch, |_| pipe.clone()).await;
        let counts = match answer {
            Ok(counts) => counts,
            Err(e) => {
                for r in batch.drain(..) {
                    let _ = r
                        .reply
                        .send(Err(redis_error("route lookup", clone_error(&e))));
                }
                return;
            }
        };
        let mut unroutable = BTreeSet::new();
        for (check, n) in stale.into_iter().zip(counts) {
            if n > 0 {
                self.fresh.insert(check, now);
            } else {
                self.fresh.remove(&check);
                unroutable.insert(check);
            }
        }
        if unroutable.is_empty() {
            return;
        }
        let (gone, keep): (Vec<Request>, Vec<Request>) = batch
            .drain(..)
            .partition(|r| r.check.as_ref().is_some_and(|c| unroutable.contains(c)));
        *batch = keep;
        for r in gone {
            let what = match r.check {
                Some(Check::Bound(id)) => format!("no queue is bound to CQRS id {id:?}"),
                Some(Check::Queue(q)) => format!("queue {q:?} is not declared"),
                None => String::new(),
            };
            let _ = r.reply.send(Err(Error::new(ErrorKind::Unroutable, what)));
        }
    }
}

fn clone_error(e: &::redis::RedisError) -> ::redis::RedisError {
    ::redis::RedisError::from((::redis::ErrorKind::Io, "request failed", e.to_string()))
}

/// Sends the pipeline `build` makes of the batch until the server answers, or the requests'
/// deadline passes; requests past their deadline are answered with the error and dropped, and
/// the pipeline is made again of the rest.
async fn retry<T: ::redis::FromRedisValue>(
    conn: &mut ConnectionManager,
    config: &RedisConfig,
    batch: &mut Vec<Request>,
    build: impl Fn(&[Request]) -> ::redis::Pipeline,
) -> std::result::Result<T, ::redis::RedisError> {
    let mut attempt = 0;
    loop {
        match build(batch).query_async::<T>(conn).await {
            Err(e) if is_connection_error(&e) => {
                let now = Instant::now();
                let (late, keep): (Vec<Request>, Vec<Request>) =
                    batch.drain(..).partition(|r| r.deadline <= now);
                *batch = keep;
                for r in late {
                    let _ = r.reply.send(Err(Error::with_source(
                        ErrorKind::Transport,
                        format!(
                            "Redis did not answer a publish within {:?}",
                            config.publish_timeout
                        ),
                        clone_error(&e),
                    )));
                }
                if batch.is_empty() {
                    return Err(e);
                }
                tracing::warn!(error = %e, attempt, "Redis connection lost; publishing again once it is back");
                tokio::time::sleep(backoff(config, attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Appends the batch, in order, and answers each request.
async fn append(conn: &mut ConnectionManager, config: &RedisConfig, batch: &mut Vec<Request>) {
    let answer = retry::<Vec<Value>>(conn, config, batch, |batch| {
        let mut pipe = ::redis::pipe();
        pipe.ignore_errors();
        for r in batch {
            pipe.cmd("XADD").arg(&r.stream).arg("*");
            for (k, v) in &r.fields {
                pipe.arg(k.as_slice()).arg(v.as_slice());
            }
        }
        if config.wait_replicas > 0 {
            pipe.cmd("WAIT")
                .arg(config.wait_replicas)
                .arg(u64::try_from(config.wait_timeout.as_millis()).unwrap_or(u64::MAX));
        }
        pipe
    })
    .await;
    let mut values = match answer {
        Ok(values) => values,
        Err(e) => {
            for r in batch.drain(..) {
                let _ = r.reply.send(Err(redis_error(
                    &format!("XADD {}", r.stream),
                    clone_error(&e),
                )));
            }
            return;
        }
    };
    let replicas_short = if config.wait_replicas > 0 {
        match values.pop() {
            Some(Value::Int(n)) if n >= i64::from(config.wait_replicas) => None,
            Some(Value::Int(n)) => Some(format!(
                "only {n} of {} replicas acknowledged within {:?}",
                config.wait_replicas, config.wait_timeout
            )),
            other => Some(format!("WAIT answered {other:?}")),
        }
    } else {
        None
    };
    for (r, v) in batch.drain(..).zip(values) {
        let result = match (&v, &replicas_short) {
            (Value::ServerError(e), _) => Err(Error::new(
                ErrorKind::Transport,
                format!("Redis XADD {} failed: {e:?}", r.stream),
            )),
            (_, Some(short)) => Err(Error::new(ErrorKind::Transport, short.clone())),
            _ => Ok(()),
        };
        let _ = r.reply.send(result);
    }
}
