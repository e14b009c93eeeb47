//! The conformance suite on the RabbitMQ transport, against the broker on 127.0.0.1:5672
//! (`.ci/run` starts it). Each check gets its own exchange and queues, deleted afterwards.

#![cfg(all(feature = "rabbitmq", feature = "conformance"))]

use std::cell::RefCell;

use actix::Addr;
use cqrs_actors::TransportHandle;
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
    let config = RabbitMqConfig::from_url(&url())
        .unwrap_or_else(|e| panic!("{e}"))
        .with_exchange(exchange);
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
