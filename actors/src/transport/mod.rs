//! The transport protocol: the actor messages the framework exchanges with a broker.
//!
//! A transport is an actix actor that handles the messages below ([`Transport`] is their
//! bound); this module is all a transport author needs to read. [`TransportHandle::new`] turns
//! the address of any such actor into the handle the rest of the framework uses.
//!
//! | message | direction | answers once |
//! |---|---|---|
//! | [`Declare`] | framework → transport | the replica queue, its dead-letter queue and their bindings exist |
//! | [`Publish`] | framework → transport | the broker confirmed the message (publisher confirm) |
//! | [`Subscribe`] | framework → transport | deliveries of a queue flow to a recipient as [`Deliveries`] |
//! | [`Deliveries`] | transport → consumer | the consumer accepted the batch (backpressure) |
//! | [`Settle`] | framework → transport | deliveries are acknowledged, or handed back for redelivery |
//! | [`Park`] | framework → transport | a copy is durably parked and comes back to the queue after a delay |
//! | [`PublishDeadLetter`] | framework → transport | the dead letter is confirmed in the dead-letter queue |
//! | [`Cancel`] | framework → transport | no new deliveries; or (`release`) unacknowledged ones go back |
//! | [`Inspect`] | framework → transport | message counts of a queue |
//! | [`Ping`] | framework → transport | whether the broker connection is up now (health) |
//! | [`ListDeadLetters`] | operator → transport | dead letters, left in place and in order |
//! | [`RetryDeadLetters`] | operator → transport | each dead letter republished (confirmed), then removed |
//! | [`PurgeDeadLetters`] | operator → transport | dead letters deleted, with their count |
//! | [`DescribeQueue`] | operator → transport | a replica's broker objects, with counts |
//! | [`DeleteQueue`] | operator → transport | a replica's broker objects deleted (refused while they hold messages) |
//!
//! Rules every transport keeps (the conformance suite in `cqrs-transports` checks them):
//! - a [`Publish`], [`Park`] or [`PublishDeadLetter`] answers `Ok` only once the broker holds
//!   the message durably; an error means the message may not be there and the caller retries
//!   or keeps the original unacknowledged;
//! - deliveries of one queue reach one consumer in the order the broker holds them, and a
//!   consumer has at most `prefetch` unacknowledged deliveries;
//! - a delivery that is never settled is delivered again (with `redelivered` set) once its
//!   consumer is released or its connection is lost;
//! - routing keys and bindings follow WIRE.md section 3: see [`Route::routing_key`] and
//!   [`Declare`].
//!
//! The operator's messages are never sent by the framework (the command line sends them); the
//! rules they share are under *Operator tools* below.
//!
//! Transports must give their actor a mailbox large enough for the windows the framework uses
//! (`ctx.set_mailbox_capacity`), because `Addr::send` to a full mailbox may reorder messages.
//!
//! # Files
//! - `messages.rs`: the messages of the message path and what they carry;
//! - `operator.rs`: the operator's tools (dead letters, describe and delete a queue);
//! - `handle.rs`: [`Transport`] and [`TransportHandle`].
//!
//! # Operator tools
//! Dead letters are taken oldest first and those a tool does not remove stay in order; a
//! `cqrs_id` filter selects the dead letters whose [`DeadLetter::cqrs_id`] is that id, and a
//! `limit` counts only those. A queue that does not exist holds nothing: listing it answers no
//! dead letters, purging it 0, describing it leaves it out, deleting it deletes nothing.

mod handle;
mod messages;
mod operator;

pub use handle::{Transport, TransportHandle};
pub use messages::{
    Cancel, ConsumerTag, Declare, Deliveries, Delivery, DeliveryTag, HEADER_ERROR, HEADER_REASON,
    HEADER_TRACEPARENT, HEADER_TRACESTATE, Headers, Inspect, MAX_DELIVERIES, OutgoingMessage, Park,
    Ping, Publish, PublishDeadLetter, QueueStats, Route, Settle, Settlement, Subscribe,
};
pub use operator::{
    DeadLetter, DeleteQueue, DescribeQueue, ListDeadLetters, PurgeDeadLetters, RetryDeadLetters,
    RetryReport, Rewrite, TopologyObject, queue_not_empty,
};
