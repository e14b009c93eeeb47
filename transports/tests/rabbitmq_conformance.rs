//! The conformance suite on the RabbitMQ transport, against the broker on 127.0.0.1:5672
//! (`.ci/run` starts it). Each check gets its own exchange and queues, deleted afterwards.

#![cfg(all(feature = "rabbitmq", feature = "conformance"))]

use std::cell::RefCell;

use actix::Addr;
use cqrs_actors::{CqrsConfig, TransportHandle};
use cqrs_transports::conformance::Names;
use cqrs_transports::rabbitmq::{RabbitMqConfig, RabbitMqTransport, Teardown};

/// The broker the tests use; `CQRS_TEST_AMQP_URL` overrides it.
fn url() -> String {
    std::env::var("CQRS_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

thread_local! {
    static STARTED: RefCell<Option<Addr<RabbitMqTransport>>> = const { RefCell::new(None) };
}

async fn start() -> TransportHandle {
    let exchange = Names::new("cqrs_conformance", "exchange")
        .prefix()
        .to_owned();
    let service = CqrsConfig::default()
        .with_url(url())
        .with_exchange(exchange);
    let config = RabbitMqConfig::from_cqrs_config(&service).unwrap_or_else(|e| panic!("{e}"));
    let (handle, addr) = RabbitMqTransport::connect(config)
        .await
        .unwrap_or_else(|e| panic!("RabbitMQ on {} is not reachable: {e}", url()));
    STARTED.with(|s| *s.borrow_mut() = Some(addr));
    handle
}

async fn teardown(_: &TransportHandle, _: &Names) {
    if let Some(addr) = STARTED.with(|s| s.borrow_mut().take()) {
        addr.send(Teardown { exchange: true })
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("teardown: {e}"));
    }
}

cqrs_transports::conformance_tests!(start, "rmq", teardown = teardown);

mod transport_specific {
    //! What only the RabbitMQ transport promises: the AMQP properties of WIRE.md section 3,
    //! delays longer than the top parking tier, quorum queues, several consumers per queue
    //! and a clear error when the broker is unreachable.

    use std::time::{Duration, Instant};

    use cqrs_actors::transport::{
        Declare, DeleteQueue, DescribeQueue, Headers, OutgoingMessage, PublishDeadLetter,
    };
    use cqrs_actors::{ErrorKind, Route, TransportHandle};
    use cqrs_transports::conformance::{Names, collect, message, run_check};
    use cqrs_transports::rabbitmq::{
        Connections, QueueType, RabbitMqConfig, RabbitMqTransport, Teardown,
    };
    use lapin::options::{BasicGetOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    use lapin::{Connection, ConnectionProperties};

    async fn start(config: RabbitMqConfig) -> (TransportHandle, actix::Addr<RabbitMqTransport>) {
        RabbitMqTransport::connect(config)
            .await
            .unwrap_or_else(|e| panic!("RabbitMQ: {e}"))
    }

    async fn declare(t: &TransportHandle, queue: &str, id: &str) {
        t.declare(Declare {
            queue: queue.to_owned(),
            dead_letter_queue: format!("{queue}_dlq"),
            cqrs_ids: vec![id.to_owned()],
        })
        .await
        .unwrap_or_else(|e| panic!("declare: {e}"));
    }

    async fn teardown(addr: &actix::Addr<RabbitMqTransport>) {
        addr.send(Teardown { exchange: true })
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("teardown: {e}"));
    }

    /// The transport of a service on the test's own exchange.
    fn config(names: &Names) -> RabbitMqConfig {
        config_at(&super::url(), &names.queue("exchange"))
    }

    fn config_at(url: &str, exchange: &str) -> RabbitMqConfig {
        let service = cqrs_actors::CqrsConfig::default()
            .with_url(url)
            .with_exchange(exchange);
        RabbitMqConfig::from_cqrs_config(&service).unwrap_or_else(|e| panic!("{e}"))
    }

    #[actix_rt::test]
    async fn messages_carry_the_properties_django_cqrs_expects() {
        let names = Names::new("rmq", "properties");
        let (t, addr) = start(config(&names)).await;
        run_check(
            async {
                let (q, x) = (names.queue("q"), names.cqrs_id("x"));
                declare(&t, &q, &x).await;
                t.publish(message(Route::broadcast(&x), "{}"))
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                t.dead_letter(PublishDeadLetter {
                    dead_letter_queue: format!("{q}_dlq"),
                    cqrs_id: Some(x.clone()),
                    body: b"{}".to_vec(),
                    content_type: Some("text/plain".into()),
                    headers: Headers::new(),
                    ttl: Some(Duration::from_secs(864_000)),
                })
                .await
                .unwrap_or_else(|e| panic!("{e}"));
                let conn = Connection::connect(&super::url(), ConnectionProperties::default())
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                let channel = conn
                    .create_channel()
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                for (queue, expiration) in
                    [(q.clone(), None), (format!("{q}_dlq"), Some("864000000"))]
                {
                    let got = channel
                        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
                        .await
                        .unwrap_or_else(|e| panic!("{e}"))
                        .unwrap_or_else(|| panic!("{queue} is empty"));
                    let p = &got.delivery.properties;
                    assert_eq!(
                        p.content_type().as_ref().map(|c| c.as_str()),
                        Some("text/plain")
                    );
                    assert_eq!(*p.delivery_mode(), Some(2), "persistent");
                    assert_eq!(
                        p.expiration().as_ref().map(|e| e.as_str()),
                        expiration,
                        "{queue}"
                    );
                }
                let _ = conn.close(200, "done".into()).await;
            },
            teardown(&addr),
        )
        .await;
    }

    #[actix_rt::test]
    async fn a_delay_longer_than_the_top_tier_is_parked_again_until_due() {
        let names = Names::new("rmq", "long_delay");
        let tiers = [Duration::from_millis(100), Duration::from_millis(200)];
        let (t, addr) = start(config(&names).with_park_tiers(tiers)).await;
        run_check(
            async {
                let (q, x) = (names.queue("q"), names.cqrs_id("x"));
                declare(&t, &q, &x).await;
                let c = collect(&t, &q, 10, true).await;
                let delay = Duration::from_millis(900);
                let parked = Instant::now();
                t.park(message(Route::queue(&q, &x), "late"), delay)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                let seen = c.wait_for(1, "the long-parked copy").await;
                assert!(
                    parked.elapsed() >= delay - Duration::from_millis(50),
                    "came back after {:?}, before its delay {delay:?}",
                    parked.elapsed()
                );
                assert_eq!(seen[0].body, b"late");
                assert_eq!(seen[0].routing_key, format!("cqrs.{q}.{x}"));
            },
            teardown(&addr),
        )
        .await;
    }

    #[actix_rt::test]
    async fn quorum_queues_publish_consume_and_park() {
        let names = Names::new("rmq", "quorum");
        let (t, addr) = start(config(&names).with_queue_type(QueueType::Quorum)).await;
        run_check(
            async {
                let (q, x) = (names.queue("q"), names.cqrs_id("x"));
                declare(&t, &q, &x).await;
                let c = collect(&t, &q, 10, true).await;
                t.publish(message(Route::broadcast(&x), "now"))
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                t.park(
                    message(Route::queue(&q, &x), "later"),
                    Duration::from_millis(300),
                )
                .await
                .unwrap_or_else(|e| panic!("{e}"));
                let seen = c.wait_for(2, "quorum queue deliveries").await;
                assert_eq!(seen[0].body, b"now");
                assert_eq!(seen[1].body, b"later");
            },
            teardown(&addr),
        )
        .await;
    }

    #[actix_rt::test]
    async fn several_consumers_share_one_queue() {
        let names = Names::new("rmq", "consumers");
        let (t, addr) = start(config(&names).with_consumers(3)).await;
        run_check(
            async {
                let (q, x) = (names.queue("q"), names.cqrs_id("x"));
                declare(&t, &q, &x).await;
                let c = collect(&t, &q, 5, true).await;
                let sends: Vec<_> = (0..300)
                    .map(|i| t.publish(message(Route::broadcast(&x), &i.to_string())))
                    .collect();
                for r in futures_util::future::join_all(sends).await {
                    r.unwrap_or_else(|e| panic!("{e}"));
                }
                let seen = c.wait_for(300, "deliveries over three channels").await;
                let channels: std::collections::BTreeSet<u64> =
                    seen.iter().map(|d| d.tag.channel).collect();
                assert_eq!(channels.len(), 3, "three consuming channels");
                let mut bodies: Vec<u32> = seen
                    .iter()
                    .map(|d| String::from_utf8_lossy(&d.body).parse().unwrap_or(u32::MAX))
                    .collect();
                bodies.sort_unstable();
                assert_eq!(bodies, (0..300).collect::<Vec<u32>>(), "each message once");
            },
            teardown(&addr),
        )
        .await;
    }

    #[actix_rt::test]
    async fn a_cancelled_consumer_still_settles_what_it_holds() {
        let names = Names::new("rmq", "cancel_then_ack");
        let (t, addr) = start(config(&names)).await;
        run_check(
            async {
                let (q, x) = (names.queue("q"), names.cqrs_id("x"));
                declare(&t, &q, &x).await;
                let c = collect(&t, &q, 10, false).await;
                for i in 0..5 {
                    t.publish(message(Route::broadcast(&x), &i.to_string()))
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                }
                let held = c.wait_for(5, "held deliveries").await;
                t.cancel(c.consumer, false)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                // Let the end of the consumer stream reach the transport before settling.
                tokio::time::sleep(Duration::from_millis(300)).await;
                t.settle(
                    held.iter().map(|d| d.tag).collect(),
                    cqrs_actors::transport::Settlement::Ack,
                )
                .await
                .unwrap_or_else(|e| panic!("{e}"));
                t.cancel(c.consumer, true)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                let stats = t.inspect(&q).await.unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(
                    stats.ready, 0,
                    "acks after a cancel count; nothing comes back on release"
                );
            },
            teardown(&addr),
        )
        .await;
    }

    #[actix_rt::test]
    async fn only_the_chosen_cqrs_ids_are_bound() {
        let names = Names::new("rmq", "bind_only");
        let (kept, skipped) = (names.cqrs_id("kept"), names.cqrs_id("skipped"));
        let (t, addr) = start(config(&names).with_bind_only([kept.clone()])).await;
        run_check(
            async {
                let q = names.queue("q");
                t.declare(Declare {
                    queue: q.clone(),
                    dead_letter_queue: format!("{q}_dlq"),
                    cqrs_ids: vec![kept.clone(), skipped.clone()],
                })
                .await
                .unwrap_or_else(|e| panic!("{e}"));
                t.publish(message(Route::broadcast(&kept), "{}"))
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                let err = t
                    .publish(message(Route::broadcast(&skipped), "{}"))
                    .await
                    .expect_err("no binding for an id left out");
                assert_eq!(err.kind(), ErrorKind::Unroutable);
            },
            teardown(&addr),
        )
        .await;
    }

    /// A header larger than the broker's frame would make RabbitMQ close the connection; the
    /// transport refuses such a message itself, and the connection and the next publish are
    /// not touched.
    #[actix_rt::test]
    async fn a_message_too_large_for_a_frame_fails_without_touching_the_connection() {
        let names = Names::new("rmq", "oversized");
        let (t, addr) = start(config(&names)).await;
        run_check(
            async {
                let (q, x) = (names.queue("q"), names.cqrs_id("x"));
                declare(&t, &q, &x).await;
                let mut huge = message(Route::broadcast(&x), "{}");
                huge.headers
                    .insert("x-cqrs-error".into(), "e".repeat(200_000));
                let err = t.publish(huge).await.expect_err("a 200 KB header");
                assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
                assert!(err.message().len() < 300, "{err}");
                t.publish(message(Route::broadcast(&x), "next"))
                    .await
                    .unwrap_or_else(|e| panic!("the next publish: {e}"));
                let connections = addr
                    .send(Connections)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(connections, 1, "no reconnect");
            },
            teardown(&addr),
        )
        .await;
    }

    /// Describe names every object Declare made (the exchange, both queues, the parking
    /// exchange and one queue per tier, with the bindings), and delete removes all of them but
    /// the shared exchange, forcing past the parked copy it finds.
    #[actix_rt::test]
    async fn describe_and_delete_cover_the_parking_tiers() {
        let names = Names::new("rmq", "describe_delete");
        let tiers = [Duration::from_secs(60), Duration::from_secs(120)];
        let (t, addr) = start(config(&names).with_park_tiers(tiers)).await;
        run_check(
            async {
                let (q, x) = (names.queue("q"), names.cqrs_id("x"));
                let dlq = format!("{q}_dlq");
                declare(&t, &q, &x).await;
                t.park(
                    message(Route::queue(&q, &x), "parked"),
                    Duration::from_secs(90),
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
                let named = |kind: &str| -> Vec<(String, Option<u64>)> {
                    objects
                        .iter()
                        .filter(|o| o.kind == kind)
                        .map(|o| (o.name.clone(), o.messages))
                        .collect()
                };
                assert_eq!(
                    named("exchange"),
                    [(names.queue("exchange"), None), (format!("{q}.park"), None)]
                );
                assert_eq!(
                    named("queue"),
                    [
                        (q.clone(), Some(0)),
                        (dlq.clone(), Some(0)),
                        (format!("{q}.park.60000ms"), Some(0)),
                        (format!("{q}.park.120000ms"), Some(1)),
                    ]
                );
                let bindings: Vec<String> = named("binding").into_iter().map(|(n, _)| n).collect();
                assert_eq!(
                    bindings,
                    [
                        x.clone(),
                        format!("cqrs.{q}.{x}"),
                        format!("cqrs.{dlq}.{x}"),
                        "cqrs-park-tier=60000".to_owned(),
                        "cqrs-park-tier=120000".to_owned(),
                    ]
                );
                let delete = |force| {
                    t.delete_queue(DeleteQueue {
                        queue: q.clone(),
                        dead_letter_queue: dlq.clone(),
                        force,
                    })
                };
                let err = delete(false).await.expect_err("a parked copy is left");
                assert!(err.message().contains("parked: 1"), "{err}");
                let deleted = delete(true).await.unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(
                    deleted,
                    [
                        q.clone(),
                        dlq.clone(),
                        format!("{q}.park.60000ms"),
                        format!("{q}.park.120000ms"),
                        format!("{q}.park"),
                    ]
                );
                let conn = Connection::connect(&super::url(), ConnectionProperties::default())
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                for queue in [&q, &dlq] {
                    let channel = conn
                        .create_channel()
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                    let passive = QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    };
                    channel
                        .queue_declare(queue.as_str().into(), passive, FieldTable::default())
                        .await
                        .expect_err("deleted");
                }
                let _ = conn.close(200, "done".into()).await;
            },
            teardown(&addr),
        )
        .await;
    }

    #[actix_rt::test]
    async fn an_unreachable_broker_is_a_transport_error() {
        let config = config_at("amqp://guest:guest@127.0.0.1:1/%2f", "cqrs")
            .with_publish_timeout(Duration::from_millis(500));
        let err = RabbitMqTransport::connect(config)
            .await
            .expect_err("port 1 has no broker");
        assert_eq!(err.kind(), ErrorKind::Transport);
    }

    #[actix_rt::test]
    async fn a_wrong_password_is_refused() {
        let config = config_at("amqp://guest:not-the-password@127.0.0.1:5672/%2f", "cqrs")
            .with_publish_timeout(Duration::from_millis(500));
        let err = RabbitMqTransport::connect(config)
            .await
            .expect_err("the broker refuses the login");
        assert_eq!(err.kind(), ErrorKind::Transport);
    }

    #[actix_rt::test]
    async fn parking_a_copy_no_declared_queue_takes_back_is_refused() {
        let names = Names::new("rmq", "park_refused");
        let (t, addr) = start(config(&names)).await;
        run_check(
            async {
                let message = OutgoingMessage {
                    route: Route::queue("nobody", "book"),
                    body: b"{}".to_vec(),
                    content_type: "text/plain".to_owned(),
                    headers: Headers::new(),
                    expiration: None,
                };
                let err = t
                    .park(message, Duration::from_millis(10))
                    .await
                    .expect_err("unroutable park");
                assert_eq!(err.kind(), ErrorKind::Unroutable);
            },
            teardown(&addr),
        )
        .await;
    }
}
