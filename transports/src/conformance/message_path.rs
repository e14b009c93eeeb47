//! The checks of the message path: publish, consume, order, redelivery, prefetch, parking,
//! dead letters and routing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cqrs_actors::transport::{HEADER_ERROR, HEADER_REASON, Headers, PublishDeadLetter, Settlement};
use cqrs_actors::{ErrorKind, Route, TransportHandle};

use super::{Names, body, collect, declare, message, wait_stats};

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
