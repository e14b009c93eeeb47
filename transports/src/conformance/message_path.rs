//! The transport conformance suite: the behaviour every transport must show, as reusable async
//! checks. A transport's tests call [`conformance_tests!`](crate::conformance_tests) with a
//! function that starts the transport and a prefix for queue names:
//!
//! ```no_run
//! // tests/memory_conformance.rs (the caller needs `actix-rt` as a dev-dependency)
//! async fn start() -> cqrs_actors::TransportHandle {
//!     cqrs_transports::memory::MemoryBroker::default().start_transport().0
//! }
//! cqrs_transports::conformance_tests!(start, "conformance");
//! # fn main() {}
//! ```
//!
//! Each check panics with a message that says what the transport got wrong. Every queue it
//! declares starts with the given prefix, so a caller can delete them afterwards.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use cqrs_actors::transport::{
    ConsumerTag, Declare, Deliveries, Delivery, HEADER_ERROR, HEADER_REASON, Headers,
    OutgoingMessage, PublishDeadLetter, Settlement, Subscribe,
};
use cqrs_actors::{ErrorKind, Route, TransportHandle};

/// How long a check waits for something that should happen.
const PATIENCE: Duration = Duration::from_secs(10);

/// Generates one `#[actix_rt::test]` per check, each with a fresh transport from `$start` (an
/// async fn returning a [`TransportHandle`]) and queue names starting with `$prefix`.
#[macro_export]
///
/// With `teardown = $teardown` (an async fn taking `&TransportHandle` and `&Names`), the
/// teardown runs after each check, also when the check failed, so a broker is left clean.
macro_rules! conformance_tests {
    ($start:path, $prefix:expr) => {
        $crate::conformance_tests!($start, $prefix, teardown = $crate::conformance::no_teardown);
    };
    ($start:path, $prefix:expr, teardown = $teardown:path) => {
        $crate::conformance_tests!(@each $start, $prefix, $teardown,
            publish_consume, per_key_order, redelivery_after_consumer_crash, requeue_redelivers,
            prefetch_bounds_unacked, delayed_retry, dead_letter_with_reason, directed_routing);
    };
    (@each $start:path, $prefix:expr, $teardown:path, $($check:ident),*) => {
        $(
            #[actix_rt::test]
            async fn $check() {
                let transport = $start().await;
                let names = $crate::conformance::Names::new($prefix, stringify!($check));
                $crate::conformance::run_check(
                    $crate::conformance::$check(&transport, &names),
                    $teardown(&transport, &names),
                )
                .await;
            }
        )*
    };
}

/// Runs a check, then the teardown whatever the check's outcome, then reports the outcome.
pub async fn run_check(check: impl Future<Output = ()>, teardown: impl Future<Output = ()>) {
    use futures_util::FutureExt;
    let outcome = std::panic::AssertUnwindSafe(check).catch_unwind().await;
    teardown.await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// The teardown of transports that leave nothing behind.
pub async fn no_teardown(_: &TransportHandle, _: &Names) {}

/// Unique queue names for one check run.
#[derive(Debug, Clone)]
pub struct Names {
    prefix: String,
}

impl Names {
    /// Names under `<prefix>_<check>_<unique>`.
    #[must_use]
    pub fn new(prefix: &str, check: &str) -> Self {
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() % 1_000_000_000_000);
        Self {
            prefix: format!("{prefix}_{check}_{unique}_{}", std::process::id()),
        }
    }

    /// The prefix every name starts with.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A queue name.
    #[must_use]
    pub fn queue(&self, name: &str) -> String {
        format!("{}_{name}", self.prefix)
    }

    /// A CQRS id (also unique, so that a shared broker's bindings do not mix).
    #[must_use]
    pub fn cqrs_id(&self, name: &str) -> String {
        format!("{}_{name}", self.prefix).replace('.', "_")
    }
}

/// A consumer that records what it receives and acknowledges it or not.
pub struct Collector {
    transport: TransportHandle,
    ack: bool,
    seen: Arc<Mutex<Vec<Delivery>>>,
}

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<Deliveries> for Collector {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Deliveries, _: &mut Context<Self>) -> Self::Result {
        let tags: Vec<_> = msg.0.iter().map(|d| d.tag).collect();
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(msg.0);
        let settle = self
            .ack
            .then(|| self.transport.settle(tags, Settlement::Ack));
        Box::pin(async move {
            if let Some(s) = settle {
                s.await.unwrap_or_else(|e| panic!("ack failed: {e}"));
            }
        })
    }
}

/// A running [`Collector`].
pub struct Collected {
    /// Its consumer tag.
    pub consumer: ConsumerTag,
    seen: Arc<Mutex<Vec<Delivery>>>,
    _addr: Addr<Collector>,
}

impl Collected {
    /// What it has received so far.
    #[must_use]
    pub fn seen(&self) -> Vec<Delivery> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Waits until it has received at least `n` deliveries, or panics saying what it got.
    pub async fn wait_for(&self, n: usize, what: &str) -> Vec<Delivery> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let seen = self.seen();
            if seen.len() >= n {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: expected {n} deliveries within {PATIENCE:?}, got {}",
                seen.len()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Subscribes a collector to `queue`.
pub async fn collect(
    transport: &TransportHandle,
    queue: &str,
    prefetch: u32,
    ack: bool,
) -> Collected {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let addr = Collector {
        transport: transport.clone(),
        ack,
        seen: Arc::clone(&seen),
    }
    .start();
    let consumer = transport
        .subscribe(Subscribe {
            queue: queue.to_owned(),
            prefetch,
            consumer: addr.clone().recipient(),
        })
        .await
        .unwrap_or_else(|e| panic!("subscribe to {queue}: {e}"));
    Collected {
        consumer,
        seen,
        _addr: addr,
    }
}

/// A JSON-bodied message.
#[must_use]
pub fn message(route: Route, body: &str) -> OutgoingMessage {
    OutgoingMessage {
        route,
        body: body.as_bytes().to_vec(),
        content_type: "text/plain".to_owned(),
        headers: Headers::new(),
        expiration: None,
    }
}

/// Declares `queue` (dead-letter queue `<queue>_dlq`) bound to `ids`, or panics.
pub async fn declare(t: &TransportHandle, queue: &str, ids: &[&str]) {
    t.declare(Declare {
        queue: queue.to_owned(),
        dead_letter_queue: format!("{queue}_dlq"),
        cqrs_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
    })
    .await
    .unwrap_or_else(|e| panic!("declare {queue}: {e}"));
}

async fn wait_stats(t: &TransportHandle, queue: &str, ready: u64, unacked: u64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let stats = t
            .inspect(queue)
            .await
            .unwrap_or_else(|e| panic!("inspect {queue}: {e}"));
        if stats.ready == ready && stats.unacked == unacked {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{queue}: expected ready={ready} unacked={unacked}, got {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn body(d: &Delivery) -> String {
    String::from_utf8_lossy(&d.body).into_owned()
}

/// Published messages reach the bound queue intact, in order, with their content type and
/// routing key; acknowledged ones are gone; a message no queue is bound to is `Unroutable`.
pub async fn publish_consume(t: &TransportHandle, names: &Names) {
    let (q, x) = (names.queue("q"), names.cqrs_id("x"));
    declare(t, &q, &[&x]).await;
    let c = collect(t, &q, 50, true).await;
    for i in 0..100 {
        t.publish(message(Route::broadcast(&x), &format!("{{\"n\":{i}}}")))
            .await
            .unwrap_or_else(|e| panic!("publish {i}: {e}"));
    }
    let seen = c.wait_for(100, "publish_consume").await;
    for (i, d) in seen.iter().enumerate() {
        assert_eq!(
            body(d),
            format!("{{\"n\":{i}}}"),
            "delivery {i} out of order or altered"
        );
        assert_eq!(d.routing_key, x);
        assert_eq!(d.content_type.as_deref(), Some("text/plain"));
        assert!(!d.redelivered);
    }
    wait_stats(t, &q, 0, 0).await;
    let err = t
        .publish(message(Route::broadcast(names.cqrs_id("nobody")), "{}"))
        .await
        .expect_err("unroutable publish must fail");
    assert_eq!(err.kind(), ErrorKind::Unroutable);
}

/// Messages of each key arrive in the order they were published, whatever the interleaving.
pub async fn per_key_order(t: &TransportHandle, names: &Names) {
    let (q, x) = (names.queue("q"), names.cqrs_id("x"));
    declare(t, &q, &[&x]).await;
    let c = collect(t, &q, 7, true).await;
    let mut rng = fastrand::Rng::with_seed(42);
    let mut next = [0u32; 10];
    let total = 300;
    for _ in 0..total {
        let key = rng.usize(0..10);
        t.publish(message(
            Route::broadcast(&x),
            &format!("{key}:{}", next[key]),
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        next[key] += 1;
    }
    let seen = c.wait_for(total, "per_key_order").await;
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for d in &seen {
        let text = body(d);
        let (key, n) = text
            .split_once(':')
            .unwrap_or_else(|| panic!("bad body {text}"));
        let n: i64 = n.parse().unwrap_or_else(|_| panic!("bad body {text}"));
        let prev = last.insert(key.to_owned(), n).unwrap_or(-1);
        assert_eq!(n, prev + 1, "key {key}: got {n} after {prev}");
    }
}

/// Deliveries a consumer never acknowledged come again, marked redelivered, to the next
/// consumer once the first is released (as after a crash).
pub async fn redelivery_after_consumer_crash(t: &TransportHandle, names: &Names) {
    let (q, x) = (names.queue("q"), names.cqrs_id("x"));
    declare(t, &q, &[&x]).await;
    let crashing = collect(t, &q, 100, false).await;
    for i in 0..5 {
        t.publish(message(Route::broadcast(&x), &format!("m{i}")))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    crashing.wait_for(5, "first consumer").await;
    wait_stats(t, &q, 0, 5).await;
    t.cancel(crashing.consumer, true)
        .await
        .unwrap_or_else(|e| panic!("release: {e}"));
    let next = collect(t, &q, 100, true).await;
    let seen = next.wait_for(5, "second consumer").await;
    let bodies: Vec<String> = seen.iter().map(body).collect();
    assert_eq!(
        bodies,
        ["m0", "m1", "m2", "m3", "m4"],
        "redelivered in the original order"
    );
    assert!(
        seen.iter().all(|d| d.redelivered),
        "redeliveries must be marked"
    );
    wait_stats(t, &q, 0, 0).await;
}

/// A delivery settled with `Requeue` comes again, marked redelivered.
pub async fn requeue_redelivers(t: &TransportHandle, names: &Names) {
    let (q, x) = (names.queue("q"), names.cqrs_id("x"));
    declare(t, &q, &[&x]).await;
    let c = collect(t, &q, 10, false).await;
    t.publish(message(Route::broadcast(&x), "again"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let first = c.wait_for(1, "first delivery").await;
    t.settle(vec![first[0].tag], Settlement::Requeue)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let seen = c.wait_for(2, "requeued delivery").await;
    assert_eq!(body(&seen[1]), "again");
    assert!(seen[1].redelivered);
    t.settle(vec![seen[1].tag], Settlement::Ack)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_stats(t, &q, 0, 0).await;
}

/// A consumer never holds more than `prefetch` unacknowledged deliveries.
pub async fn prefetch_bounds_unacked(t: &TransportHandle, names: &Names) {
    let (q, x) = (names.queue("q"), names.cqrs_id("x"));
    declare(t, &q, &[&x]).await;
    let c = collect(t, &q, 3, false).await;
    for i in 0..10 {
        t.publish(message(Route::broadcast(&x), &format!("{i}")))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let seen = c.wait_for(3, "prefetch").await;
    wait_stats(t, &q, 7, 3).await;
    assert_eq!(c.seen().len(), 3, "more than prefetch delivered");
    t.settle(seen.iter().map(|d| d.tag).collect(), Settlement::Ack)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    c.wait_for(6, "after ack").await;
    t.cancel(c.consumer, true)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// A parked copy is not delivered before its delay, then arrives on the replica queue by
/// `cqrs.<queue>.X`.
pub async fn delayed_retry(t: &TransportHandle, names: &Names) {
    let (q, x) = (names.queue("q"), names.cqrs_id("x"));
    declare(t, &q, &[&x]).await;
    let c = collect(t, &q, 10, true).await;
    let delay = Duration::from_millis(400);
    let parked_at = Instant::now();
    t.park(message(Route::queue(&q, &x), "retry-copy"), delay)
        .await
        .unwrap_or_else(|e| panic!("park: {e}"));
    let stats = t.inspect(&q).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stats.ready, 0, "a parked copy must not be ready at once");
    let seen = c.wait_for(1, "parked copy").await;
    assert!(
        parked_at.elapsed() >= delay - Duration::from_millis(50),
        "came back after {:?}, before its delay {delay:?}",
        parked_at.elapsed()
    );
    assert_eq!(body(&seen[0]), "retry-copy");
    assert_eq!(seen[0].routing_key, format!("cqrs.{q}.{x}"));
}

/// Dead letters reach the dead-letter queue with their reason, also when the CQRS id is unknown.
pub async fn dead_letter_with_reason(t: &TransportHandle, names: &Names) {
    let (q, x) = (names.queue("q"), names.cqrs_id("x"));
    let dlq = format!("{q}_dlq");
    declare(t, &q, &[&x]).await;
    for (cqrs_id, body_text) in [(Some(x.clone()), "known"), (None, "{not json")] {
        let mut headers = Headers::new();
        headers.insert(HEADER_REASON.to_owned(), "retries_exhausted".to_owned());
        headers.insert(HEADER_ERROR.to_owned(), "handler: boom".to_owned());
        t.dead_letter(PublishDeadLetter {
            dead_letter_queue: dlq.clone(),
            cqrs_id,
            body: body_text.as_bytes().to_vec(),
            content_type: Some("text/plain".to_owned()),
            headers,
            ttl: Some(Duration::from_secs(600)),
        })
        .await
        .unwrap_or_else(|e| panic!("dead letter: {e}"));
    }
    wait_stats(t, &dlq, 2, 0).await;
    let c = collect(t, &dlq, 10, true).await;
    let seen = c.wait_for(2, "dead letters").await;
    assert_eq!(
        seen.iter().map(body).collect::<Vec<_>>(),
        ["known", "{not json"]
    );
    for d in &seen {
        assert_eq!(
            d.headers.get(HEADER_REASON).map(String::as_str),
            Some("retries_exhausted")
        );
        assert_eq!(
            d.headers.get(HEADER_ERROR).map(String::as_str),
            Some("handler: boom")
        );
    }
    assert_eq!(seen[0].routing_key, format!("cqrs.{dlq}.{x}"));
}

/// A message for one queue reaches only that queue; a broadcast reaches every bound queue.
pub async fn directed_routing(t: &TransportHandle, names: &Names) {
    let (q1, q2, x) = (names.queue("one"), names.queue("two"), names.cqrs_id("x"));
    declare(t, &q1, &[&x]).await;
    declare(t, &q2, &[&x]).await;
    let c1 = collect(t, &q1, 10, true).await;
    let c2 = collect(t, &q2, 10, true).await;
    t.publish(message(Route::queue(&q1, &x), "for-one"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    t.publish(message(Route::broadcast(&x), "for-all"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let one = c1.wait_for(2, "queue one").await;
    let two = c2.wait_for(1, "queue two").await;
    assert_eq!(
        one.iter().map(body).collect::<Vec<_>>(),
        ["for-one", "for-all"]
    );
    assert_eq!(two.iter().map(body).collect::<Vec<_>>(), ["for-all"]);
    assert_eq!(one[0].routing_key, format!("cqrs.{q1}.{x}"));
    wait_stats(t, &q2, 0, 0).await;
    assert_eq!(
        c2.seen().len(),
        1,
        "a directed message leaked to another queue"
    );
}
