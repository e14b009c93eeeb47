//! The publisher: one task that writes every publish and dead letter of the transport in
//! order, as pipelined `XADD`s on a connection of its own. What queued up while earlier
//! batches were on their way goes out as the next batch, and up to three batches may be on
//! their way at once, so that building one overlaps the server's work on the others.
//!
//! Order: a batch is written to the connection before the next one is built, and replies come
//! back in the order of the requests. When the connection is lost, every batch on its way
//! fails with it and is sent again, in order, once a new connection is up (an entry the server
//! appended before the loss then appears twice; the replica's revision rules ignore the copy).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use ::redis::aio::MultiplexedConnection;
use ::redis::{RedisError, RedisResult, Value};
use cqrs_actors::transport::OutgoingMessage;
use cqrs_actors::{Error, ErrorKind, Result, Route};
use tokio::sync::{mpsc, oneshot};

use super::RedisConfig;
use super::conn::{backoff, dedicated, is_connection_error};
use super::keys::{F_BODY, F_CONTENT_TYPE, F_EXPIRES_AT, F_HEADER, F_ROUTING_KEY, Fields, Keys};

/// Batches on their way at once (the bench measured 2 at 80 % of the raw ceiling, 3 at
/// 82–89 %).
const DEPTH: usize = 3;

/// One entry to append.
pub(crate) struct Request {
    pub entry: Outgoing,
    pub deadline: Instant,
    pub reply: oneshot::Sender<Result<()>>,
}

/// What to append.
pub(crate) enum Outgoing {
    /// A message, to the stream of its route, which must have a queue (RabbitMQ's
    /// `mandatory`); its expiry in ms since the epoch.
    Message(OutgoingMessage, Option<u64>),
    /// Fields to a stream, unchecked (dead letters).
    Fields(String, Fields),
}

impl Request {
    fn route(&self) -> Option<&Route> {
        match &self.entry {
            Outgoing::Message(m, _) => Some(&m.route),
            Outgoing::Fields(..) => None,
        }
    }

    fn stream_name(&self, keys: &Keys) -> String {
        match &self.entry {
            Outgoing::Message(m, _) => keys.route_stream(&m.route),
            Outgoing::Fields(stream, _) => stream.clone(),
        }
    }
}

/// Starts the publisher task; it ends when every sender is dropped and nothing is left to
/// send.
pub(crate) fn spawn(keys: Keys, config: Arc<RedisConfig>) -> mpsc::UnboundedSender<Request> {
    let (tx, rx) = mpsc::unbounded_channel();
    let publisher = Publisher {
        rx,
        conn: None,
        attempt: 0,
        keys,
        routes: Routes {
            fresh: HashMap::new(),
            ttl: config.route_cache,
        },
        // The window split over the batches on their way: the framework keeps at most a window
        // of publishes unconfirmed, so larger batches would leave the others empty.
        max: config.publish_window.div_ceil(DEPTH).clamp(1, 4096),
        config,
        queued: VecDeque::new(),
        in_flight: VecDeque::new(),
    };
    actix::spawn(publisher.run());
    tx
}

type Reply = Pin<Box<dyn Future<Output = RedisResult<Vec<Value>>>>>;

struct Publisher {
    rx: mpsc::UnboundedReceiver<Request>,
    conn: Option<MultiplexedConnection>,
    attempt: u32,
    keys: Keys,
    routes: Routes,
    max: usize,
    config: Arc<RedisConfig>,
    /// Received, not yet sent (or to send again), in order.
    queued: VecDeque<Request>,
    /// Sent, waiting for the server's replies, oldest first.
    in_flight: VecDeque<(Vec<Request>, Reply)>,
}

impl Publisher {
    async fn run(mut self) {
        let mut open = true;
        loop {
            if self.queued.is_empty() && self.in_flight.is_empty() {
                if !open {
                    return;
                }
                match self.rx.recv().await {
                    Some(r) => self.queued.push_back(r),
                    None => return,
                }
            }
            while let Ok(r) = self.rx.try_recv() {
                self.queued.push_back(r);
            }
            while self.in_flight.len() < DEPTH && !self.queued.is_empty() {
                if !self.send_next().await {
                    break;
                }
            }
            let room = self.in_flight.len() < DEPTH;
            let Some((_, reply)) = self.in_flight.front_mut() else {
                continue;
            };
            tokio::select! {
                biased;
                result = reply => {
                    let (batch, _) = self.in_flight.pop_front().expect("a batch is in flight");
                    self.complete(batch, result).await;
                }
                r = self.rx.recv(), if open && room => match r {
                    Some(r) => self.queued.push_back(r),
                    None => open = false,
                },
            }
        }
    }

    /// A connection, made anew after a loss (with backoff); requests past their deadline are
    /// answered meanwhile.
    async fn connection(&mut self) -> Option<MultiplexedConnection> {
        loop {
            if let Some(conn) = &self.conn {
                return Some(conn.clone());
            }
            self.expire();
            if self.queued.is_empty() {
                return None;
            }
            let timeout = self.config.publish_timeout.max(Duration::from_secs(1));
            match dedicated(&self.config, timeout).await {
                Ok(conn) => {
                    self.conn = Some(conn);
                    self.attempt = 0;
                }
                Err(e) => {
                    if self.attempt == 0 {
                        tracing::warn!(error = %e, "Redis publisher cannot connect; trying again");
                    }
                    tokio::time::sleep(backoff(&self.config, self.attempt)).await;
                    self.attempt += 1;
                }
            }
        }
    }

    /// Answers the queued requests whose deadline passed.
    fn expire(&mut self) {
        let now = Instant::now();
        let timeout = self.config.publish_timeout;
        self.queued.retain_mut(|r| {
            if r.deadline > now {
                return true;
            }
            let (tx, _) = oneshot::channel();
            let reply = std::mem::replace(&mut r.reply, tx);
            let _ = reply.send(Err(Error::new(
                ErrorKind::Transport,
                format!("Redis did not take a publish within {timeout:?}"),
            )));
            false
        });
    }

    /// Takes the next batch off the queue, checks its routes and writes it to the connection.
    /// Returns `false` when nothing could be sent now.
    async fn send_next(&mut self) -> bool {
        let Some(conn) = self.connection().await else {
            return false;
        };
        let n = self.queued.len().min(self.max);
        let mut batch: Vec<Request> = self.queued.drain(..n).collect();
        if let Err(e) = self
            .routes
            .check(conn.clone(), &self.keys, &mut batch)
            .await
        {
            // The connection is lost: the batch goes back to the front, in order.
            for r in batch.into_iter().rev() {
                self.queued.push_front(r);
            }
            self.lost(&e).await;
            return false;
        }
        if batch.is_empty() {
            return true;
        }
        let pipe = self.pipeline(&batch);
        let mut reply: Reply = Box::pin(async move {
            let mut conn = conn;
            pipe.query_async::<Vec<Value>>(&mut conn).await
        });
        // The first poll writes the batch to the connection's queue, so the next batch goes
        // behind it.
        let first = std::future::poll_fn(|cx| Poll::Ready(reply.as_mut().poll(cx))).await;
        match first {
            Poll::Ready(result) => self.complete(batch, result).await,
            Poll::Pending => self.in_flight.push_back((batch, reply)),
        }
        true
    }

    /// The batch as `XADD`s, its keys and routing keys written without allocating per entry,
    /// each command sized for its arguments up front (it would otherwise grow as they come).
    fn pipeline(&self, batch: &[Request]) -> ::redis::Pipeline {
        let mut pipe = ::redis::Pipeline::with_capacity(batch.len() + 1);
        pipe.ignore_errors();
        let mut buf = String::new();
        for r in batch {
            match &r.entry {
                Outgoing::Message(m, expires_at) => {
                    let headers: usize = m.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
                    let mut cmd = ::redis::Cmd::with_capacity(
                        12 + 2 * m.headers.len(),
                        m.body.len() + headers + 256,
                    );
                    self.keys.write_route_stream(&mut buf, &m.route);
                    cmd.arg("XADD").arg(buf.as_str()).arg("*");
                    cmd.arg(F_BODY).arg(m.body.as_slice());
                    cmd.arg(F_CONTENT_TYPE).arg(m.content_type.as_str());
                    cmd.arg(F_ROUTING_KEY);
                    match &m.route {
                        Route::Broadcast { cqrs_id } => cmd.arg(cqrs_id.as_str()),
                        Route::Queue { queue, cqrs_id } => {
                            buf.clear();
                            buf.push_str("cqrs.");
                            buf.push_str(queue);
                            buf.push('.');
                            buf.push_str(cqrs_id);
                            cmd.arg(buf.as_str())
                        }
                    };
                    if let Some(at) = expires_at {
                        cmd.arg(F_EXPIRES_AT).arg(*at);
                    }
                    for (name, value) in &m.headers {
                        buf.clear();
                        buf.push_str(F_HEADER);
                        buf.push_str(name);
                        cmd.arg(buf.as_str()).arg(value.as_str());
                    }
                    pipe.add_command(cmd);
                }
                Outgoing::Fields(stream, fields) => {
                    pipe.cmd("XADD").arg(stream).arg("*");
                    for (k, v) in fields {
                        pipe.arg(k.as_bytes()).arg(v.as_slice());
                    }
                }
            }
        }
        if self.config.wait_replicas > 0 {
            pipe.cmd("WAIT")
                .arg(self.config.wait_replicas)
                .arg(u64::try_from(self.config.wait_timeout.as_millis()).unwrap_or(u64::MAX));
        }
        pipe
    }

    /// Answers a batch from the server's replies; a lost connection sends it again, with every
    /// batch behind it.
    async fn complete(&mut self, batch: Vec<Request>, result: RedisResult<Vec<Value>>) {
        match result {
            Ok(values) => self.answer(batch, values),
            Err(e) if is_connection_error(&e) => {
                let mut again = vec![batch];
                for (later, reply) in std::mem::take(&mut self.in_flight) {
                    match reply.await {
                        Ok(values) => self.answer(later, values),
                        Err(_) => again.push(later),
                    }
                }
                for r in again.into_iter().flatten().rev() {
                    self.queued.push_front(r);
                }
                self.lost(&e).await;
            }
            Err(e) => {
                let text = e.to_string();
                for r in batch {
                    let stream = r.stream_name(&self.keys);
                    let _ = r.reply.send(Err(Error::new(
                        ErrorKind::Transport,
                        format!("Redis XADD {stream} failed: {text}"),
                    )));
                }
            }
        }
    }

    async fn lost(&mut self, e: &RedisError) {
        if self.attempt == 0 {
            tracing::warn!(error = %e, "Redis connection lost; publishing again once it is back");
        }
        self.conn = None;
        tokio::time::sleep(backoff(&self.config, self.attempt)).await;
        self.attempt += 1;
    }

    fn answer(&self, batch: Vec<Request>, mut values: Vec<Value>) {
        let replicas_short = if self.config.wait_replicas > 0 {
            match values.pop() {
                Some(Value::Int(n)) if n >= i64::from(self.config.wait_replicas) => None,
                Some(Value::Int(n)) => Some(format!(
                    "only {n} of {} replicas acknowledged within {:?}",
                    self.config.wait_replicas, self.config.wait_timeout
                )),
                other => Some(format!("WAIT answered {other:?}")),
            }
        } else {
            None
        };
        for (r, v) in batch.into_iter().zip(values) {
            let result = match (&v, &replicas_short) {
                (Value::ServerError(e), _) => Err(Error::new(
                    ErrorKind::Transport,
                    format!("Redis XADD {} failed: {e:?}", r.stream_name(&self.keys)),
                )),
                (_, Some(short)) => Err(Error::new(ErrorKind::Transport, short.clone())),
                _ => Ok(()),
            };
            let _ = r.reply.send(result);
        }
    }
}

/// Which routes were seen bound lately (by stream key), so that a publish costs no extra
/// round trip.
struct Routes {
    fresh: HashMap<String, Instant>,
    ttl: Duration,
}

impl Routes {
    /// Answers `Unroutable` to the requests whose route has no queue (and takes them out of
    /// the batch), asking the server about the routes not seen bound within the cache time.
    async fn check(
        &mut self,
        mut conn: MultiplexedConnection,
        keys: &Keys,
        batch: &mut Vec<Request>,
    ) -> RedisResult<()> {
        let now = Instant::now();
        let mut buf = String::new();
        let mut stale: BTreeMap<String, Route> = BTreeMap::new();
        for route in batch.iter().filter_map(Request::route) {
            keys.write_route_stream(&mut buf, route);
            let fresh = self
                .fresh
                .get(buf.as_str())
                .is_some_and(|at| now.duration_since(*at) <= self.ttl);
            if !fresh && !stale.contains_key(buf.as_str()) {
                stale.insert(buf.clone(), route.clone());
            }
        }
        if stale.is_empty() {
            return Ok(());
        }
        let mut pipe = ::redis::pipe();
        for route in stale.values() {
            match route {
                Route::Broadcast { cqrs_id } => pipe.cmd("SCARD").arg(keys.bindings(cqrs_id)),
                Route::Queue { queue, .. } => pipe.cmd("HEXISTS").arg(keys.queues()).arg(queue),
            };
        }
        let counts: Vec<i64> = match pipe.query_async(&mut conn).await {
            Ok(counts) => counts,
            Err(e) if is_connection_error(&e) => return Err(e),
            Err(e) => {
                for r in batch.drain(..) {
                    let _ = r.reply.send(Err(Error::new(
                        ErrorKind::Transport,
                        format!("Redis route lookup failed: {e}"),
                    )));
                }
                return Ok(());
            }
        };
        let mut unroutable = BTreeSet::new();
        for ((stream, _), n) in stale.into_iter().zip(counts) {
            if n > 0 {
                self.fresh.insert(stream, now);
            } else {
                self.fresh.remove(&stream);
                unroutable.insert(stream);
            }
        }
        if unroutable.is_empty() {
            return Ok(());
        }
        let (gone, keep): (Vec<Request>, Vec<Request>) = batch.drain(..).partition(|r| {
            r.route()
                .is_some_and(|route| unroutable.contains(&keys.route_stream(route)))
        });
        *batch = keep;
        for r in gone {
            let what = match r.route() {
                Some(Route::Broadcast { cqrs_id }) => {
                    format!("no queue is bound to CQRS id {cqrs_id:?}")
                }
                Some(Route::Queue { queue, .. }) => format!("queue {queue:?} is not declared"),
                None => String::new(),
            };
            let _ = r.reply.send(Err(Error::new(ErrorKind::Unroutable, what)));
        }
        Ok(())
    }
}
