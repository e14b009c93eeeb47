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

//!
//! - `suite.rs`: [`conformance_tests!`](crate::conformance_tests), [`run_check`];
//! - `support.rs`: [`Names`], [`collect`], [`message`], [`declare`], [`wait_stats`];
//! - `message_path.rs`: the checks of the message path ([`publish_consume`], ...);
//! - `operator.rs`: the checks of the operator's tools ([`dead_letters_are_listed_in_place`],
//!   ...).

mod message_path;
mod operator;
mod suite;
mod support;

pub use message_path::{
    dead_letter_with_reason, delayed_retry, directed_routing, per_key_order,
    prefetch_bounds_unacked, publish_consume, redelivery_after_consumer_crash, requeue_redelivers,
};
pub use operator::{
    dead_letters_are_listed_in_place, dead_letters_are_purged_by_cqrs_id_or_all,
    dead_letters_are_retried_once_after_their_republish,
    delete_queue_refuses_while_messages_remain, describe_queue_shows_what_declare_made,
};
pub use suite::{no_teardown, run_check};
pub use support::{Collected, Collector, Names, body, collect, declare, message, wait_stats};
