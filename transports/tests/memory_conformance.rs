//! The conformance suite on the memory transport.

#![cfg(all(feature = "memory", feature = "conformance"))]

async fn start() -> cqrs_actors::TransportHandle {
    cqrs_transports::memory::MemoryBroker::default()
        .start_transport()
        .0
}

cqrs_transports::conformance_tests!(start, "memory");

/// A retry copy that no queue would take back is refused, so the caller keeps the original.
#[actix_rt::test]
async fn parking_a_copy_no_queue_takes_back_is_refused() {
    use cqrs_actors::transport::{Headers, OutgoingMessage};
    let transport = start().await;
    let message = OutgoingMessage {
        route: cqrs_actors::Route::queue("nobody", "book"),
        body: b"{}".to_vec(),
        content_type: "text/plain".to_owned(),
        headers: Headers::new(),
        expiration: None,
    };
    let err = transport
        .park(message, std::time::Duration::from_millis(10))
        .await
        .expect_err("unroutable park");
    assert_eq!(err.kind(), cqrs_actors::ErrorKind::Unroutable);
}
