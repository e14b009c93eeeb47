//! The conformance suite on the Redis Streams transport, against the server on
//! 127.0.0.1:6379 (`.ci/run` starts it). Each check gets its own exchange (key space), deleted
//! afterwards.

#![cfg(all(feature = "redis", feature = "conformance"))]

use std::cell::RefCell;

use actix::Addr;
use cqrs_actors::{CqrsConfig, TransportHandle};
use cqrs_transports::conformance::Names;
use cqrs_transports::redis::{RedisConfig, RedisTransport, Teardown};

/// The server the tests use; `CQRS_TEST_REDIS_URL` overrides it.
fn url() -> String {
    std::env::var("CQRS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned())
}

thread_local! {
    static STARTED: RefCell<Option<Addr<RedisTransport>>> = const { RefCell::new(None) };
}

async fn start() -> TransportHandle {
    let exchange = Names::new("cqrs_conformance", "exchange")
        .prefix()
        .to_owned();
    let service = CqrsConfig::default()
        .with_url(url())
        .with_exchange(exchange);
    let config = RedisConfig::from_cqrs_config(&service).unwrap_or_else(|e| panic!("{e}"));
    let (handle, addr) = RedisTransport::connect(config)
        .await
        .unwrap_or_else(|e| panic!("Redis on {} is not reachable: {e}", url()));
    STARTED.with(|s| *s.borrow_mut() = Some(addr));
    handle
}

async fn teardown(_: &TransportHandle, _: &Names) {
    if let Some(addr) = STARTED.with(|s| s.borrow_mut().take()) {
        addr.send(Teardown)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("teardown: {e}"));
    }
}

cqrs_transports::conformance_tests!(start, "redis", teardown = teardown);

mod transport_specific {
    //! What only the Redis transport promises: claims of idle entries, poison by delivery
    //! count, a consumer taking its own pending entries up after a restart, the mover shared
    //! by two transports, the trimmer, several consumers per queue, a stream deleted under a
    //! consumer, consumer clean-up, the counts of `Inspect`, and clear connection errors.

    use std::collections::BTreeSet;
    use std::time::{Duration, Instant};

    use actix::Addr;
    use std::sync::Arc;

    use cqrs_actors::transport::{
        DeadLetter, DeleteQueue, Delivery, DescribeQueue, HEADER_ERROR, HEADER_REASON,
        ListDeadLetters, RetryDeadLetters, Rewrite,
    };
    use cqrs_actors::{CqrsConfig, ErrorKind, Route, TransportHandle};
    use cqrs_transports::conformance::{Collected, Names, collect, declare, message, run_check};
    use cqrs_transports::redis::{
        DeleteGoneConsumers, HEADER_DELIVERY_COUNT, RedisConfig, RedisTransport, Stop, Teardown,
        TrimNow,
    };
    use futures_util::future::join_all;

    /// A transport of the test's own exchange, with `[redis]` options.
    async fn start(names: &Names, options: &str) -> (TransportHandle, Addr<RedisTransport>) {
        let service = CqrsConfig::default()
            .with_url(super::url())
            .with_exchange(names.queue("exchange"))
            .with_redis_options(options.parse().unwrap_or_else(|e| panic!("{e}")));
        let config = RedisConfig::from_cqrs_config(&service).unwrap_or_else(|e| panic!("{e}"));
        RedisTransport::connect(config)
            .await
            .unwrap_or_else(|e| panic!("Redis: {e}"))
    }

    async fn publish(t: &TransportHandle, x: &str, bodies: impl IntoIterator<Item = String>) {
        let sends: Vec<_> = bodies
            .into_iter()
            .map(|b| t.publish(message(Route::broadcast(x), &b)))
            .collect();
        for r in join_all(sends).await {
            r.unwrap_or_else(|e| panic!("publish: {e}"));
        }
    }

    async fn teardown(addr: &Addr<RedisTransport>) {
        addr.send(Teardown)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("teardown: {e}"));
    }

    async fn stop(addr: &Addr<RedisTransport>) {
        addr.send(Stop).await.unwrap_or_else(|e| panic!("{e}"));
    }

    fn bodies(seen: &[Delivery]) -> Vec<String> {
        seen.iter()
            .map(|d| String::from_utf8_lossy(&d.body).into_owned())
            .collect()
    }

    fn count(d: &Delivery) -> Option<&str> {
        d.headers.get(HEADER_DELIVERY_COUNT).map(String::as_str)
    }

    /// A plain connection, for what the tests look at behind the transport's back.
    fn client() -> redis::Connection {
        redis::Client::open(super::url())
            .and_then(|c| c.get_connection())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn xlen(names: &Names, key: &str) -> u64 {
        let key = format!("cqrs:{{{}}}:{key}", names.queue("exchange"));
        redis::cmd("XLEN")
            .arg(key)
            .query(&mut client())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn trim(addr: &Addr<RedisTransport>) -> u64 {
        addr.send(TrimNow)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("trim: {e}"))
    }

    /// Waits until `collected` saw `n` deliveries, then a little longer to be sure no more
    /// come.
    async fn exactly(collected: &Collected, n: usize, what: &str) -> Vec<Delivery> {
        collected.wait_for(n, what).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let seen = collected.seen();
        assert_eq!(seen.len(), n, "{what}: more deliveries than expected");
        seen
    }

    #[actix_rt::test]
    async fn entries_left_by_a_dead_consumer_are_claimed_by_another() {
        let names = Names::new("redis", "claims");
        let options = "claim_idle = 0.3";
        let (a, a_addr) = start(&names, &format!("{options}\nconsumer_name = \"a\"")).await;
        let (b, b_addr) = start(&names, &format!("{options}\nconsumer_name = \"b\"")).await;
        run_check(
            async {
                let (q, x) = (names.queue("q"), names.cqrs_id("x"));
                declare(&a, &q, &[&x]).await;
                let dying = collect(&a, &q, 100, false).await;
                publish(&a, &x, (0..5).map(|i| format!("m{i}"))).await;
                dying.wait_for(5, "the first consumer").await;
                // The first process dies with its five entries pending.
                stop(&a_addr).await;
                let claiming = collect(&b, &q, 100, true).await;
                let started = Instant::now();
                let seen = exactly(&claiming, 5, "claimed entries").await;
                assert!(
                    started.elapsed() >= Duration::from_millis(250),
                    "claimed after {:?}, before claim_idle",
                    started.elapsed()
                );
                assert_eq!(bodies(&seen), ["m0", "m1", "m2", "m3", "m4"]);
                assert!(seen.iter().all(|d| d.redelivered && count(d) == Some("1")));
                let stats = b.inspect(&q).await.unwrap_or_else(|e| panic!("{e}"));
                assert_eq!((stats.ready, stats.unacked), (0, 0));
            },
            teardown(&b_addr),
        )
        .await;
    }

    #[actix_rt::test]
    async fn an_entry_delivered_max_deliveries_times_is_dead_lettered_as_poison() {
        let names = Names::new("redis", "poison");
        let options = "claim_idle = 0.2\nmax_deliveries = 2";
        let mut addrs = Vec::new();
        let (q, x) = (names.queue("q"), names.cqrs_id("x"));
        // Two consumers crash on the entry in turn (never settling it), each in its own
        // process; the third finds it delivered twice and dead-letters it.
        for name in ["first", "second"] {
            let (t, addr) = start(&names, &format!("{options}\nconsumer_name = \"{name}\"")).await;
            declare(&t, &q, &[&x]).await;
            let crashing = collect(&t, &q, 10, false).await;
            if name == "first" {
                publish(&t, &x, ["crash".to_owned(), "fine".to_owned()]).await;
            }
            crashing.wait_for(2, name).await;
            stop(&addr).await;
            addrs.push(addr);
        }
        let (t, addr) = start(&names, &format!("{options}\nconsumer_name = \"third\"")).await;
        run_check(
            async {
                let dlq = format!("{q}_dlq");
                let c = collect(&t, &q, 10, true).await;
                let mut stats = t.inspect(&q).await.unwrap_or_else(|e| panic!("{e}"));
                let deadline = Instant::now() + Duration::from_secs(10);
                while stats.dead_letters < 2 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    stats = t.inspect(&q).await.unwrap_or_else(|e| panic!("{e}"));
                }
                assert_eq!(
                    stats.dead_letters, 2,
                    "both crash-looping entries: {stats:?}"
                );
                assert!(
                    c.seen().is_empty(),
                    "a poison entry was delivered a third time"
                );
                let dead = collect(&t, &dlq, 10, true).await;
                let letters = dead.wait_for(2, "poison dead letters").await;
                assert_eq!(bodies(&letters), ["crash", "fine"]);
                for d in &letters {
                    assert_eq!(
                        d.headers.get(HEADER_REASON).map(String::as_str),
                        Some("poison")
                    );
                    assert!(
                        d.headers
                            .get(HEADER_ERROR)
                            .is_some_and(|e| e.contains("delivered 2 times")),
                        "{:?}",
                        d.headers
                    );
                    assert_eq!(d.routing_key, format!("cqrs.{dlq}.{x}"));
                }
                let stats = t.inspect(&q).await.unwrap_or_else(|e| panic!("{e}"));
                assert_eq!((stats.ready, stats.unacked), (0, 0));
            },
            teardown(&addr),
        )
        .await;
        drop(addrs);
    }

    #[actix_rt::test]
    async fn a_restarted_consumer_takes_its_own_pending_entries_up_first() {
        let names = Names::new("redis", "restart");
        let options = "consumer_name = \"pod-0\"\nclaim_idle = 600";
        let (t, addr) = start(&names, options).await;
        let (q, x) = (names.queue("q"), names.cqrs_id("x"));
        declare(&t, &q, &[&x]).await;
        let before = collect(&t, &q, 100, false).await;
        publish(&t, &x, (0..3).map(|i| format!("held{i}"))).await;
        before.wait_for(3, "before the restart").await;
        stop(&addr).await;
        let (t, addr) = start(&names, options).await;
        run_check(
            async {
                publish(&t, &x, ["new".to_owned()]).await;
                let after = collect(&t, &q, 100, true).await;
                // The claim time is ten minutes: only taking its own entries up brings them.
                let seen = exactly(&after, 4, "after the restart").await;
                assert_eq!(bodies(&seen), ["held0", "held1", "held2", "new"]);
                assert!(
                    seen[..3]
                        .iter()
                        .all(|d| d.redelivered && count(d) == Some("1"))
                );
                assert!(!seen[3].redelivered);
            },
            teardown(&addr),
        )
        .await;
    }

    #[actix_rt::test]
    async fn two_transports_move_parked_copies_each_exactly_once() {
        let names = Names::new("redis", "movers");
        let (one, one_addr) = start(&names, "mover_interval = 0.01").await;
        let (two, _two_addr) = start(&names, "mover_interval = 0.01").await;
        run_check(
            async {
                let (q, x) = (names.queue("q"), names.cqrs_id("x"));
                declare(&one, &q, &[&x]).await;
                declare(&two, &q, &[&x]).await;
                let c = collect(&one, &q, 0, true).await;
                let parks: Vec<_> = (0..400)
                    .map(|i| {
                        let t = if i % 2 == 0 { &one } else { &two };
                        let delay = Duration::from_millis(50 + (i % 7) * 40);
                        t.park(message(Route::queue(&q, &x), &i.to_string()), delay)
                    })
                    .collect();
                for r in join_all(parks).await {
                    r.unwrap_or_else(|e| panic!("park: {e}"));
                }
                let seen = exactly(&c, 400, "moved copies").await;
                let distinct: BTreeSet<String> = bodies(&seen).into_iter().collect();
                assert_eq!(distinct.len(), 400, "each parked copy exactly once");
                let stats = one.inspect(&q).await.unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(stats.parked, 0);
            },
            teardown(&one_addr),
        )
        .await;
    }

    #[actix_rt::test]
    async fn the_trimmer_keeps_what_a_slow_replica_has_not_read_and_drops_what_all_acked() {
        let names = Names::new("redis", "trim");
        let (t, addr) = start(&names, "trim_interval = 3600").await;
        run_check(
            async {
                let (fast, slow, x) =
                    (names.queue("fast"), names.queue("slow"), names.cqrs_id("x"));
                declare(&t, &fast, &[&x]).await;
                declare(&t, &slow, &[&x]).await;
                let stream = format!("x:{x}");
                let f = collect(&t, &fast, 0, true).await;
                publish(&t, &x, (0..100).map(|i| i.to_string())).await;
                f.wait_for(100, "the fast replica").await;
                trim(&addr).await;
                assert_eq!(
                    xlen(&names, &stream),
                    100,
                    "the slow replica's entries survive"
                );
                // The slow replica reads 40 and holds them: they and what follows stay.
                let s = collect(&t, &slow, 40, false).await;
                let held = s.wait_for(40, "the slow replica").await;
                trim(&addr).await;
                assert_eq!(xlen(&names, &stream), 100, "pending entries survive");
                t.settle(
                    held[..30].iter().map(|d| d.tag).collect(),
                    cqrs_actors::transport::Settlement::Ack,
                )
                .await
                .unwrap_or_else(|e| panic!("{e}"));
                s.wait_for(70, "more for the slow replica").await;
                assert_eq!(trim(&addr).await, 30, "the acknowledged head goes");
                let rest: Vec<_> = s.seen()[30..].iter().map(|d| d.tag).collect();
                t.settle(rest, cqrs_actors::transport::Settlement::Ack)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                s.wait_for(100, "all of it").await;
                let tail: Vec<_> = s.seen()[70..].iter().map(|d| d.tag).collect();
                t.settle(tail, cqrs_actors::transport::Settlement::Ack)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                trim(&addr).await;
                assert_eq!(
                    xlen(&names, &stream),
                    0,
                    "an acknowledged backlog is trimmed"
                );
            },
            teardown(&addr),
        )
        .await;
    }

    #[actix_rt::test]
    async fn retention_keeps_acknowledged_history_and_cuts_undelivered_only_when_asked() {
        let names = Names::new("redis", "retention");
        let (t, addr) = start(
            &names,
            "trim_interval = 3600\nkeep_acknowledged = true\nmax_len = 30",
        )
        .await;
        let (x, q) = (names.cqrs_id("x"), names.queue("q"));
        let stream = format!("x:{x}");
        run_check(
            async {
                declare(&t, &q, &[&x]).await;
                let c = collect(&t, &q, 0, true).await;
                publish(&t, &x, (0..100).map(|i| i.to_string())).await;
                c.wait_for(100, "all").await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                trim(&addr).await;
                assert_eq!(xlen(&names, &stream), 30, "history kept up to max_len");
                // A replica that is down: its entries are never cut without trim_undelivered.
                t.cancel(c.consumer, true)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                publish(&t, &x, (0..50).map(|i| i.to_string())).await;
                trim(&addr).await;
                assert_eq!(
                    xlen(&names, &stream),
                    50,
                    "undelivered entries survive max_len"
                );
            },
            async {},
        )
        .await;
        stop(&addr).await;
        let (t, addr) = start(
            &names,
            "trim_interval = 3600\nkeep_acknowledged = true\nmax_len = 30\ntrim_undelivered = true",
        )
        .await;
        run_check(
            async {
                trim(&addr).await;
                assert_eq!(
                    xlen(&names, &stream),
                    30,
                    "trim_undelivered cuts to max_len"
                );
                let _ = &t;
            },
            teardown(&addr),
        )
        .await;
    }

    #[actix_rt::test]
    async fn several_consumers_share_one_queue() {
        let names = Names::new("redis", "consumers");
        let (t, addr) = start(&names, "consumers = 3").await;
        run_check(
            async {
                let (q, x) = (names.queue("q"), names.cqrs_id("x"));
                declare(&t, &q, &[&x]).await;
                let c = collect(&t, &q, 5, true).await;
                publish(&t, &x, (0..300).map(|i| i.to_string())).await;
                let seen = exactly(&c, 300, "deliveries over three consumers").await;
                let channels: BTreeSet<u64> = seen.iter().map(|d| d.tag.channel).collect();
                assert_eq!(channels.len(), 3, "three consumers");
                let mut got: Vec<u32> = bodies(&seen)
                    .iter()
                    .map(|b| b.parse().unwrap_or(u32::MAX))
                    .collect();
                got.sort_unstable();
                assert_eq!(got, (0..300).collect::<Vec<u32>>(), "each message once");
            },
            teardown(&addr),
        )
        .await;
    }

    /// A consumer of a queue bound to one id that has received `before`: the queue, the id
    /// stream's key and the consumer.
    async fn consuming(t: &TransportHandle, names: &Names) -> (String, String, String, Collected) {
        let (q, x) = (names.queue("q"), names.cqrs_id("x"));
        declare(t, &q, &[&x]).await;
        let c = collect(t, &q, 10, true).await;
        publish(t, &x, ["before".to_owned()]).await;
        c.wait_for(1, "before").await;
        let key = format!("cqrs:{{{}}}:x:{x}", names.queue("exchange"));
        (q, x, key, c)
    }

    /// Waits until `key` has the consumer group `group` again (what a publish needs to reach
    /// it, since the group comes back at the stream's end).
    async fn wait_for_group(key: &str, group: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let groups: redis::Value = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(key)
                .query(&mut client())
                .unwrap_or(redis::Value::Nil);
            if format!("{groups:?}").contains(group) {
                return;
            }
            assert!(Instant::now() < deadline, "the group never came back");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn delete(key: &str) {
        let _: i64 = redis::cmd("DEL")
            .arg(key)
            .query(&mut client())
            .unwrap_or_else(|e| panic!("{e}"));
    }

    #[actix_rt::test]
    async fn a_stream_deleted_under_a_consumer_is_created_again() {
        let names = Names::new("redis", "deleted");
        let (t, addr) = start(&names, "block = 0.2").await;
        run_check(
            async {
                let (q, x, key, c) = consuming(&t, &names).await;
                // An operator deletes the stream and with it the consumer group.
                delete(&key);
                wait_for_group(&key, &q).await;
                publish(&t, &x, ["after".to_owned()]).await;
                let seen = c.wait_for(2, "after the deletion").await;
                assert_eq!(bodies(&seen), ["before", "after"]);
            },
            teardown(&addr),
        )
        .await;
    }

    #[actix_rt::test]
    async fn a_stream_key_of_another_type_pauses_the_queue_until_it_is_fixed() {
        let names = Names::new("redis", "wrongtype");
        let (t, addr) = start(&names, "block = 0.2").await;
        run_check(
            async {
                let (q, x, key, c) = consuming(&t, &names).await;
                // Someone writes a string where the stream was: every read is refused.
                delete(&key);
                let _: () = redis::cmd("SET")
                    .arg(&key)
                    .arg("not a stream")
                    .query(&mut client())
                    .unwrap_or_else(|e| panic!("{e}"));
                tokio::time::sleep(Duration::from_millis(1200)).await;
                // Fixed: the consumer creates its group again and reads on.
                delete(&key);
                wait_for_group(&key, &q).await;
                publish(&t, &x, ["after".to_owned()]).await;
                let seen = c.wait_for(2, "after the fix").await;
                assert_eq!(bodies(&seen), ["before", "after"]);
            },
            teardown(&addr),
        )
        .await;
    }

    #[actix_rt::test]
    async fn consumers_that_left_are_deleted_only_with_nothing_pending() {
        let names = Names::new("redis", "gc");
        let (q, x) = (names.queue("q"), names.cqrs_id("x"));
        let (a, a_addr) = start(&names, "consumer_name = \"idle\"").await;
        declare(&a, &q, &[&x]).await;
        let idle = collect(&a, &q, 10, true).await;
        publish(&a, &x, ["acked".to_owned()]).await;
        idle.wait_for(1, "acked").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop(&a_addr).await;
        let (b, b_addr) = start(&names, "consumer_name = \"holding\"").await;
        let holding = collect(&b, &q, 10, false).await;
        publish(&b, &x, ["held".to_owned()]).await;
        holding.wait_for(1, "held").await;
        stop(&b_addr).await;
        let (_c, c_addr) = start(&names, "consumer_name = \"sweeper\"\nconsumer_gc_idle = 0").await;
        run_check(
            async {
                let deleted = c_addr
                    .send(DeleteGoneConsumers)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
                    .unwrap_or_else(|e| panic!("{e}"));
                let key = format!("cqrs:{{{}}}:x:{x}", names.queue("exchange"));
                let consumers: redis::Value = redis::cmd("XINFO")
                    .arg("CONSUMERS")
                    .arg(&key)
                    .arg(&q)
                    .query(&mut client())
                    .unwrap_or_else(|e| panic!("{e}"));
                let text = format!("{consumers:?}");
                assert!(deleted >= 1, "the idle consumer was deleted");
                assert!(!text.contains("idle-0"), "{text}");
                assert!(
                    text.contains("holding-0"),
                    "a consumer with pending entries stays: {text}"
                );
            },
            teardown(&c_addr),
        )
        .await;
    }

    #[actix_rt::test]
    async fn directed_messages_to_an_undeclared_queue_are_unroutable() {
        let names = Names::new("redis", "unroutable");
        let (t, addr) = start(&names, "").await;
        run_check(
            async {
                let err = t
                    .publish(message(Route::queue(names.queue("nobody"), "x"), "{}"))
                    .await
                    .expect_err("no such queue");
                assert_eq!(err.kind(), ErrorKind::Unroutable);
            },
            teardown(&addr),
        )
        .await;
    }

    #[actix_rt::test]
    async fn inspect_counts_parked_copies_and_dead_letters() {
        let names = Names::new("redis", "inspect");
        let (t, addr) = start(&names, "").await;
        run_check(
            async {
                let (q, x) = (names.queue("q"), names.cqrs_id("x"));
                declare(&t, &q, &[&x]).await;
                t.park(
                    message(Route::queue(&q, &x), "later"),
                    Duration::from_secs(600),
                )
                .await
                .unwrap_or_else(|e| panic!("{e}"));
                t.dead_letter(cqrs_actors::transport::PublishDeadLetter {
                    dead_letter_queue: format!("{q}_dlq"),
                    cqrs_id: Some(x.clone()),
                    body: b"dead".to_vec(),
                    content_type: None,
                    headers: Default::default(),
                    ttl: None,
                })
                .await
                .unwrap_or_else(|e| panic!("{e}"));
                publish(&t, &x, ["ready".to_owned()]).await;
                let stats = t.inspect(&q).await.unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(
                    (stats.ready, stats.unacked, stats.parked, stats.dead_letters),
                    (1, 0, 1, 1)
                );
                let err = t
                    .inspect(names.queue("unknown"))
                    .await
                    .expect_err("unknown");
                assert!(err.to_string().contains("not declared"), "{err}");
            },
            teardown(&addr),
        )
        .await;
    }

    /// Dead letters carry their stream entry ids; two processes retrying the same dead letters
    /// at once republish each exactly once (the script appends and removes in one step).
    #[actix_rt::test]
    async fn two_transports_retrying_at_once_republish_each_dead_letter_once() {
        let names = Names::new("redis", "dead_race");
        let (t, addr) = start(&names, "").await;
        let (other, other_addr) = start(&names, "").await;
        run_check(
            async {
                let (q, x) = (names.queue("q"), names.cqrs_id("x"));
                let dlq = format!("{q}_dlq");
                declare(&t, &q, &[&x]).await;
                for i in 0..40 {
                    t.dead_letter(cqrs_actors::transport::PublishDeadLetter {
                        dead_letter_queue: dlq.clone(),
                        cqrs_id: Some(x.clone()),
                        body: format!("dead{i}").into_bytes(),
                        content_type: Some("text/plain".to_owned()),
                        headers: Default::default(),
                        ttl: None,
                    })
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                }
                let listed = t
                    .list_dead_letters(ListDeadLetters {
                        dead_letter_queue: dlq.clone(),
                        cqrs_id: None,
                        limit: 1,
                    })
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                let (ms, seq) = listed[0]
                    .id
                    .split_once('-')
                    .unwrap_or_else(|| panic!("not an entry id: {}", listed[0].id));
                assert!(ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok());
                let c = collect(&t, &q, 100, true).await;
                let rewrite: Rewrite = {
                    let q = q.clone();
                    Arc::new(move |d: &DeadLetter| {
                        Some(message(
                            Route::queue(&q, d.cqrs_id()?),
                            &String::from_utf8_lossy(&d.body),
                        ))
                    })
                };
                let retry = |t: TransportHandle| {
                    t.retry_dead_letters(RetryDeadLetters {
                        dead_letter_queue: dlq.clone(),
                        cqrs_id: None,
                        limit: usize::MAX,
                        rewrite: Arc::clone(&rewrite),
                    })
                };
                let (a, b) = tokio::join!(retry(t.clone()), retry(other.clone()));
                let (a, b) = (
                    a.unwrap_or_else(|e| panic!("{e}")),
                    b.unwrap_or_else(|e| panic!("{e}")),
                );
                assert_eq!(a.retried + b.retried, 40, "{a:?} {b:?}");
                let seen = exactly(&c, 40, "the retried copies").await;
                let distinct: BTreeSet<String> = bodies(&seen).into_iter().collect();
                assert_eq!(distinct.len(), 40, "each dead letter once");
                assert_eq!(xlen(&names, &format!("q:{dlq}")), 0);
            },
            async {
                teardown(&addr).await;
                stop(&other_addr).await;
            },
        )
        .await;
    }

    /// Describe shows the queue's streams, groups, bindings, parked set and registry entries;
    /// a forced delete leaves no key naming the queue, and no group of it on the id stream.
    #[actix_rt::test]
    async fn delete_queue_leaves_no_key_and_no_group_of_the_queue() {
        let names = Names::new("redis", "delete_queue");
        let (t, addr) = start(&names, "").await;
        run_check(
            async {
                let (q, x) = (names.queue("q"), names.cqrs_id("x"));
                let dlq = format!("{q}_dlq");
                declare(&t, &q, &[&x]).await;
                publish(&t, &x, ["waiting".to_owned()]).await;
                t.park(
                    message(Route::queue(&q, &x), "later"),
                    Duration::from_secs(600),
                )
                .await
                .unwrap_or_else(|e| panic!("{e}"));
                let objects = t
                    .describe_queue(DescribeQueue {
                        queue: q.clone(),
                        dead_letter_queue: dlq.clone(),
                    })
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                let kinds: BTreeSet<&str> = objects.iter().map(|o| o.kind.as_str()).collect();
                assert_eq!(
                    kinds,
                    BTreeSet::from(["stream", "group", "binding", "parked set", "registry"]),
                    "{objects:#?}"
                );
                let deleted = t
                    .delete_queue(DeleteQueue {
                        queue: q.clone(),
                        dead_letter_queue: dlq.clone(),
                        force: true,
                    })
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                assert!(deleted.len() >= 6, "{deleted:?}");
                let base = format!("cqrs:{{{}}}:", names.queue("exchange"));
                let mut con = client();
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{base}*"))
                    .query(&mut con)
                    .unwrap_or_else(|e| panic!("{e}"));
                assert!(!keys.iter().any(|k| k.contains(&q)), "keys left: {keys:?}");
                let groups: Vec<redis::Value> = redis::cmd("XINFO")
                    .arg("GROUPS")
                    .arg(format!("{base}x:{x}"))
                    .query(&mut con)
                    .unwrap_or_else(|e| panic!("{e}"));
                assert!(groups.is_empty(), "groups left: {groups:?}");
                let queues: Vec<String> = redis::cmd("HKEYS")
                    .arg(format!("{base}queues"))
                    .query(&mut con)
                    .unwrap_or_else(|e| panic!("{e}"));
                assert!(queues.is_empty(), "registry left: {queues:?}");
            },
            teardown(&addr),
        )
        .await;
    }

    #[actix_rt::test]
    async fn a_wrong_password_or_a_plain_server_behind_rediss_fails_clearly() {
        for url in [
            "redis://svc:S3cr%40t%2Fpw@127.0.0.1:6379/0",
            "redis://127.0.0.1:1/0",
        ] {
            let service = CqrsConfig::default().with_url(url);
            let config = RedisConfig::from_cqrs_config(&service).unwrap_or_else(|e| panic!("{e}"));
            let err = RedisTransport::connect(config).await.expect_err(url);
            assert_eq!(err.kind(), ErrorKind::Transport, "{url}: {err}");
            let text = format!("{err} {err:?}");
            assert!(!text.contains("S3cr"), "{text}");
        }
        if cfg!(feature = "redis-tls") {
            let service = CqrsConfig::default().with_url("rediss://127.0.0.1:6379/0");
            let config = RedisConfig::from_cqrs_config(&service).unwrap_or_else(|e| panic!("{e}"));
            let err = RedisTransport::connect(config)
                .await
                .expect_err("TLS to a plain server");
            assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
        }
    }
}
