//! Publishing with publisher confirms and a window of unconfirmed messages.
//!
//! One task takes publishes in the order they were asked for and writes them to the
//! confirm-mode channel without waiting for the broker or for lapin's I/O thread, up to
//! `publish_window` unconfirmed at once; confirms are matched as they arrive. When the
//! connection is lost, every message without a confirm is written again on the next
//! connection, in its original order and before anything newer (at least once: the replica's
//! revision rules make a duplicate harmless). A message still without a connection at its
//! publish timeout fails with [`ErrorKind::Transport`].
//!
//! One message must not be able to stall the others. RabbitMQ answers some publishes by
//! closing the channel or the whole connection (a header larger than the frame size, an
//! exchange that does not exist), and writing such a message again after the reconnect would
//! close it again, for ever. So:
//! - a message whose properties do not fit in one frame of the connection fails at once with
//!   [`ErrorKind::InvalidData`], without being written;
//! - the oldest unconfirmed message of a lost connection is the one the broker most likely
//!   refused (it handles a channel's publishes in order): after it was that message on
//!   `attempts` lost connections it fails with [`ErrorKind::Transport`], and its caller decides
//!   (a replica hands the delivery back with a backoff, a relay tries its row later).
//!
//! A message no queue takes (published `mandatory`) comes back from the broker before its ack.
//! lapin hands a returned message to whichever confirm it completes next, and an ack the broker
//! sends for several messages completes the oldest first, so the return can arrive with the
//! confirm of an older message still waiting for the disk. The returned message is therefore
//! matched to its publish by exchange, routing key and body, and the outcomes of one connection
//! are answered in publish order, so that a return is always seen before the confirm of the
//! message it belongs to is answered.

use std::collections::{BTreeMap, VecDeque};
use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use cqrs_actors::{Error, ErrorKind, Result};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use lapin::options::BasicPublishOptions;
use lapin::protocol::basic::gen_properties;
use lapin::types::ShortString;
use lapin::{BasicProperties, Confirmation};
use tokio::sync::{mpsc, oneshot};

use super::link::{Link, LinkRx};

/// One message for the broker.
pub(crate) struct Outgoing {
    pub exchange: ShortString,
    pub routing_key: ShortString,
    pub body: Vec<u8>,
    pub properties: BasicProperties,
}

struct Job {
    out: Outgoing,
    reply: oneshot::Sender<Result<()>>,
}

/// The handle on the publishing task. Cheap to clone.
#[derive(Clone)]
pub(crate) struct ConfirmPipeline {
    jobs: mpsc::UnboundedSender<Job>,
}

/// How the publishing task behaves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Most unconfirmed messages at once.
    pub window: usize,
    /// How long a message may wait for a connection.
    pub timeout: Duration,
    /// How many lost connections a message may be the oldest unconfirmed one of.
    pub attempts: u32,
}

impl ConfirmPipeline {
    pub fn spawn(link: LinkRx, lost: mpsc::UnboundedSender<u64>, limits: Limits) -> Self {
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx, link, lost, limits));
        Self { jobs }
    }

    /// Queues `out` now (so calls keep their order); resolves once the broker confirmed it.
    pub fn publish(&self, out: Outgoing) -> impl Future<Output = Result<()>> + 'static {
        let (reply, answer) = oneshot::channel();
        let queued = self.jobs.send(Job { out, reply }).is_ok();
        async move {
            if !queued {
                return Err(Error::unavailable("RabbitMQ publisher"));
            }
            answer
                .await
                .map_err(|_| Error::unavailable("RabbitMQ publisher"))?
        }
    }
}

/// A message the broker has not confirmed yet.
struct Pending {
    exchange: ShortString,
    routing_key: ShortString,
    /// Shared with the write in flight, so that writing it copies no body.
    body: Arc<Vec<u8>>,
    properties: BasicProperties,
    /// The size of its content header frame, which AMQP cannot split.
    header_frame: usize,
    reply: oneshot::Sender<Result<()>>,
    deadline: Instant,
    /// The connection it was last written on (0: not written yet).
    generation: u64,
    /// Lost connections on which it was the oldest unconfirmed message.
    blamed: u32,
    /// The broker's answer on `generation`, kept until every older message of that connection
    /// has its own (`true`: ack).
    answered: Option<bool>,
    /// The broker returned it: no queue is bound to its routing key.
    returned: bool,
}

impl Pending {
    fn is(&self, message: &lapin::message::BasicReturnMessage) -> bool {
        let delivery = &message.delivery;
        delivery.exchange == self.exchange
            && delivery.routing_key == self.routing_key
            && delivery.data == *self.body
    }

    /// What its caller gets, once the broker answered.
    fn outcome(&self, acked: bool) -> Result<()> {
        if self.returned {
            return Err(Error::new(
                ErrorKind::Unroutable,
                format!(
                    "no queue is bound to routing key {:?} on exchange {:?}",
                    self.routing_key.as_str(),
                    self.exchange.as_str()
                ),
            ));
        }
        if acked {
            Ok(())
        } else {
            Err(Error::transport(format!(
                "RabbitMQ refused the message for {:?} (nack)",
                self.routing_key.as_str()
            )))
        }
    }
}

/// Bytes of the content header frame that carries `properties`: the frame's own 8 bytes, the
/// class, weight and body size (12), and the encoded properties with their flags.
/// Without headers the properties are at most ten short strings (255 bytes each) and a few
/// numbers, which always fit in the smallest frame AMQP allows (4096 bytes): only headers
/// make it worth encoding them to measure.
fn header_frame_size(properties: &BasicProperties) -> usize {
    if properties.headers().is_none() {
        return 0;
    }
    cookie_factory::r#gen(gen_properties(properties), Vec::new())
        .map_or(usize::MAX, |(bytes, _)| 8 + 12 + bytes.len())
}

/// A confirm as it arrives: sequence number, connection generation, outcome.
type Confirmed = (u64, u64, lapin::Result<Confirmation>);

struct State {
    attempts: u32,
    pending: BTreeMap<u64, Pending>,
    /// Sequence numbers to write on the current connection, oldest first.
    unsent: VecDeque<u64>,
    confirms: FuturesUnordered<BoxFuture<'static, Confirmed>>,
    current: Option<Arc<Link>>,
    lost: mpsc::UnboundedSender<u64>,
}

impl State {
    /// A new connection: everything unconfirmed is written again, in order, except the oldest
    /// message of a lost connection when it has now been that `attempts` times.
    fn connected(&mut self, link: Option<Arc<Link>>) {
        // Answers kept for order: no return can come for them any more.
        let answered: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.answered.is_some())
            .map(|(seq, _)| *seq)
            .collect();
        for seq in answered {
            self.answer(seq);
        }
        if let Some(l) = &link {
            let head = self
                .pending
                .iter_mut()
                .find(|(_, p)| p.generation > 0 && p.generation < l.generation);
            if let Some((&seq, p)) = head {
                p.blamed += 1;
                if p.blamed >= self.attempts {
                    self.fail(
                        seq,
                        Error::transport(format!(
                            "RabbitMQ closed the channel or connection {} times while this \
                             message was the oldest one waiting for its confirm; not published",
                            self.attempts
                        )),
                    );
                }
            }
            self.unsent = self
                .pending
                .iter()
                .filter(|(_, p)| p.generation < l.generation)
                .map(|(seq, _)| *seq)
                .collect();
        }
        self.current = link;
    }

    /// Answers a pending message with `error`.
    fn fail(&mut self, seq: u64, error: Error) {
        if let Some(p) = self.pending.remove(&seq) {
            tracing::warn!(routing_key = %p.routing_key, error = %error, "publish failed");
            let _ = p.reply.send(Err(error));
        }
    }

    fn connection_lost(&mut self, generation: u64) {
        if self
            .current
            .as_ref()
            .is_some_and(|l| l.generation == generation)
        {
            let _ = self.lost.send(generation);
            self.current = None;
        }
    }

    /// Writes what waits to be written, while the connection holds.
    async fn write(&mut self) {
        while let Some(link) = self.current.clone() {
            let Some(seq) = self.unsent.pop_front() else {
                return;
            };
            let Some(p) = self.pending.get_mut(&seq) else {
                continue;
            };
            let frame_max = link.connection.configuration().frame_max();
            if frame_max > 0 && p.header_frame > frame_max as usize {
                let size = p.header_frame;
                self.fail(
                    seq,
                    Error::new(
                        ErrorKind::InvalidData,
                        format!(
                            "the message's properties and headers take {size} bytes, more than \
                             the broker's frame size of {frame_max}; not published"
                        ),
                    ),
                );
                continue;
            }
            let (generation, before) = (link.generation, p.generation);
            p.generation = generation;
            let channel = link.publish.clone();
            let (exchange, routing_key) = (p.exchange.clone(), p.routing_key.clone());
            let (body, properties) = (Arc::clone(&p.body), p.properties.clone());
            let mut confirm: BoxFuture<'static, Confirmed> = Box::pin(async move {
                let options = BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                };
                let result = match channel
                    .basic_publish(exchange, routing_key, options, &body, properties)
                    .await
                {
                    Ok(confirm) => confirm.await,
                    Err(e) => Err(e),
                };
                (seq, generation, result)
            });
            // lapin queues the frames on the first poll and resolves the publish only once its
            // I/O thread wrote them. Polling each publish once here keeps the frames in publish
            // order without waiting for that thread between messages, so it writes many at a
            // time and the broker reads them in one go.
            match poll_fn(|cx| Poll::Ready(confirm.as_mut().poll(cx))).await {
                Poll::Ready((_, _, Err(e))) => {
                    // Not written: the channel is closed already. It goes first on the next
                    // connection, and it was never on this one, so it is not the message to
                    // blame for losing it.
                    if let Some(p) = self.pending.get_mut(&seq) {
                        p.generation = before;
                    }
                    tracing::debug!(error = %e, "publish failed; waiting for a new connection");
                    self.unsent.push_front(seq);
                    self.connection_lost(generation);
                }
                Poll::Ready(done) => self.confirms.push(Box::pin(std::future::ready(done))),
                Poll::Pending => self.confirms.push(confirm),
            }
        }
    }

    fn confirmed(&mut self, (seq, generation, result): Confirmed) {
        let Ok(confirmation) = result else {
            tracing::debug!(
                generation,
                "confirm lost with the connection; publishing again"
            );
            self.connection_lost(generation);
            return;
        };
        if self
            .pending
            .get(&seq)
            .is_none_or(|p| p.generation != generation)
        {
            return; // written again on a newer connection; that confirm decides
        }
        let (acked, returned) = match confirmation {
            Confirmation::Ack(returned) => (true, returned),
            Confirmation::Nack(returned) => (false, returned),
            Confirmation::NotRequested => (true, None),
        };
        if let Some(message) = returned {
            self.mark_returned(seq, generation, &message);
        }
        if let Some(p) = self.pending.get_mut(&seq) {
            p.answered = Some(acked);
        }
        // Answer in publish order: a return lapin gives to an older message's confirm is seen
        // before the message it belongs to is answered.
        while let Some(seq) = self
            .pending
            .iter()
            .find(|(_, p)| p.generation == generation)
            .and_then(|(seq, p)| p.answered.map(|_| *seq))
        {
            self.answer(seq);
        }
    }

    /// Marks the publish `message` is the return of: the one whose confirm brought it if it
    /// matches, else the oldest matching one of the same connection not marked yet.
    fn mark_returned(
        &mut self,
        seq: u64,
        generation: u64,
        message: &lapin::message::BasicReturnMessage,
    ) {
        let owner = if self.pending.get(&seq).is_some_and(|p| p.is(message)) {
            self.pending.get_mut(&seq)
        } else {
            self.pending
                .values_mut()
                .find(|p| p.generation == generation && !p.returned && p.is(message))
        };
        match owner {
            Some(p) => p.returned = true,
            None => tracing::warn!(
                routing_key = %message.delivery.routing_key,
                "RabbitMQ returned a message that no waiting publish matches"
            ),
        }
    }

    /// Answers a message the broker answered.
    fn answer(&mut self, seq: u64) {
        if let Some(p) = self.pending.remove(&seq) {
            let outcome = p.outcome(p.answered.unwrap_or(true));
            let _ = p.reply.send(outcome);
        }
    }

    /// Fails the messages that could not be written on a live connection before their deadline.
    fn expire(&mut self, now: Instant) {
        let live = self.current.as_ref().map_or(0, |l| l.generation);
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now && (live == 0 || p.generation < live))
            .map(|(seq, _)| *seq)
            .collect();
        for seq in expired {
            if let Some(p) = self.pending.remove(&seq) {
                let _ = p.reply.send(Err(Error::transport(
                    "no connection to RabbitMQ within the publish timeout",
                )));
            }
        }
        self.unsent.retain(|seq| self.pending.contains_key(seq));
    }
}

async fn run(
    mut jobs: mpsc::UnboundedReceiver<Job>,
    mut link: LinkRx,
    lost: mpsc::UnboundedSender<u64>,
    limits: Limits,
) {
    let Limits {
        window,
        timeout,
        attempts,
    } = limits;
    let mut state = State {
        attempts: attempts.max(1),
        pending: BTreeMap::new(),
        unsent: VecDeque::new(),
        confirms: FuturesUnordered::new(),
        current: None,
        lost,
    };
    state.connected(link.borrow_and_update().clone());
    let mut next_seq = 0u64;
    let mut jobs_open = true;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        state.write().await;
        if !jobs_open && state.pending.is_empty() {
            return;
        }
        tokio::select! {
            job = jobs.recv(), if jobs_open && state.pending.len() < window => match job {
                Some(Job { out, reply }) => {
                    next_seq += 1;
                    state.pending.insert(next_seq, Pending {
                        header_frame: header_frame_size(&out.properties),
                        exchange: out.exchange,
                        routing_key: out.routing_key,
                        body: Arc::new(out.body),
                        properties: out.properties,
                        reply,
                        deadline: Instant::now() + timeout,
                        generation: 0,
                        blamed: 0,
                        answered: None,
                        returned: false,
                    });
                    state.unsent.push_back(next_seq);
                }
                None => jobs_open = false,
            },
            Some(confirmed) = state.confirms.next(), if !state.confirms.is_empty() => {
                state.confirmed(confirmed);
            },
            changed = link.changed() => {
                if changed.is_err() {
                    // The connection task is gone: nothing will be confirmed any more.
                    state.current = None;
                    state.expire(Instant::now() + timeout);
                    return;
                }
                let next = link.borrow_and_update().clone();
                state.connected(next);
            },
            _ = tick.tick() => state.expire(Instant::now()),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Against the broker on 127.0.0.1:5672 (`.ci/run` starts it), on the default virtual host
    //! with names of this run's own.

    use std::sync::{Arc, Mutex};

    use actix::prelude::*;
    use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
    use lapin::types::FieldTable;
    use tokio::sync::watch;

    use super::super::config::RabbitMqConfig;
    use super::super::link::{self, LinkUp};
    use super::*;

    /// Stands in for the transport actor, which the connection task reports to.
    struct Sink;

    impl Actor for Sink {
        type Context = Context<Self>;
    }

    impl Handler<LinkUp> for Sink {
        type Result = ();

        fn handle(&mut self, _: LinkUp, _: &mut Context<Self>) {}
    }

    /// A connection task for `config` and a publishing task over it with `window` unconfirmed
    /// messages; the sink it reports to must live as long as the test.
    fn pipeline(
        config: &Arc<RabbitMqConfig>,
        window: usize,
    ) -> (ConfirmPipeline, LinkRx, Addr<Sink>) {
        let sink = Sink.start();
        let (link_tx, link_rx) = watch::channel(None);
        let lost = link::spawn(
            Arc::clone(config),
            Arc::new(Mutex::new(Vec::new())),
            link_tx,
            watch::channel(None).0,
            sink.clone().recipient().downgrade(),
        );
        let limits = Limits {
            window,
            timeout: Duration::from_secs(30),
            attempts: 3,
        };
        let publisher = ConfirmPipeline::spawn(link_rx.clone(), lost, limits);
        (publisher, link_rx, sink)
    }

    fn outgoing(exchange: &str, routing_key: &str) -> Outgoing {
        Outgoing {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            body: b"{}".to_vec(),
            properties: BasicProperties::default().with_delivery_mode(2),
        }
    }

    /// A publish the broker answers by closing the channel (its exchange does not exist, and
    /// reconnecting does not make it exist) fails after `attempts` connections; a publish
    /// queued behind it is confirmed.
    #[actix_rt::test]
    async fn a_publish_the_broker_keeps_refusing_fails_after_its_attempts() {
        let url = "amqp://guest:guest@127.0.0.1:5672/%2f";
        let config = Arc::new(
            RabbitMqConfig::from_url(url)
                .unwrap_or_else(|e| panic!("{e}"))
                .with_reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200)),
        );
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let unique = format!("cqrs_publisher_test_{}_{nanos}", std::process::id());
        let admin = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| panic!("RabbitMQ on 127.0.0.1:5672: {e}"));
        let channel = admin
            .create_channel()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // Exclusive: the broker deletes it with this connection, also when the test fails.
        channel
            .queue_declare(
                unique.as_str().into(),
                QueueDeclareOptions {
                    exclusive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));

        let (publisher, link_rx, _sink) = pipeline(&config, 10);
        let started = Instant::now();
        let refused = publisher.publish(outgoing(&format!("{unique}_missing"), "x"));
        let good = publisher.publish(outgoing("", &unique));
        let err = refused.await.expect_err("the exchange does not exist");
        assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
        good.await
            .unwrap_or_else(|e| panic!("the publish behind it: {e}"));
        let connections = link_rx.borrow().as_ref().map_or(0, |l| l.generation);
        assert!(
            (3..=5).contains(&connections),
            "{connections} connections for 3 attempts"
        );
        assert!(started.elapsed() < Duration::from_secs(20));
        channel
            .queue_delete(unique.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let _ = admin.close(200, "done".into()).await;
    }

    /// Persistent messages for a durable queue, each followed by one no queue takes: the broker
    /// returns the second at once while the first waits for the disk, and its acks often cover
    /// several messages. Each publish gets its own outcome, whatever order the acks come in.
    #[actix_rt::test]
    async fn a_returned_message_fails_its_own_publish_and_no_other() {
        let url = "amqp://guest:guest@127.0.0.1:5672/%2f";
        let config = Arc::new(RabbitMqConfig::from_url(url).unwrap_or_else(|e| panic!("{e}")));
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let unique = format!("cqrs_returned_test_{}_{nanos}", std::process::id());
        let admin = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| panic!("RabbitMQ on 127.0.0.1:5672: {e}"));
        let channel = admin
            .create_channel()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // Durable, so that its persistent messages are confirmed only once on disk; the broker
        // deletes it a minute after its last use, also when the test fails.
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-expires".into(),
            lapin::types::AMQPValue::LongUInt(60_000),
        );
        channel
            .queue_declare(
                unique.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                arguments,
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));

        let (publisher, _link, _sink) = pipeline(&config, 64);
        let nowhere = format!("{unique}_nowhere");
        let mut answers = Vec::new();
        for i in 0..400 {
            let routed = i % 2 == 0;
            let key = if routed { &unique } else { &nowhere };
            let mut out = outgoing("", key);
            out.body = format!("{{\"n\": {i}}}").into_bytes();
            answers.push((routed, publisher.publish(out)));
        }
        let mut wrong = Vec::new();
        for (i, (routed, answer)) in answers.into_iter().enumerate() {
            match (routed, answer.await) {
                (true, Ok(())) => {}
                (false, Err(e)) if e.kind() == ErrorKind::Unroutable => {}
                (routed, outcome) => wrong.push(format!("#{i} routed={routed}: {outcome:?}")),
            }
        }
        assert!(
            wrong.is_empty(),
            "{} wrong outcomes: {wrong:?}",
            wrong.len()
        );
        channel
            .queue_delete(unique.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let _ = admin.close(200, "done".into()).await;
    }
}
