//! The conformance suite on the memory transport.

#![cfg(all(feature = "memory", feature = "conformance"))]

async fn start() -> cqrs_actors::TransportHandle {
    cqrs_transports::memory::MemoryBroker::default()
        .start_transport()
        .0
}

cqrs_transports::conformance_tests!(start, "memory");
