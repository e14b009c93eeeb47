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
