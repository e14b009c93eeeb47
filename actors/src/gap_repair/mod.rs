//! Gap repair (off by default): a replica that sees events were lost asks the master for the
//! row, and the master answers with a directed SYNC.
//!
//! A replica model with gap repair on ([`ReplicaModel::with_gap_repair`](crate::ReplicaModel::with_gap_repair)
//! or `[models.<id>] gap_repair = true`) that applies a SAVE with a revision gap
//! ([`Applied::UpdatedAfterGap`](crate::Applied)) or ignores a SAVE as older than a tombstone
//! ([`Skip::Deleted`](crate::Skip)) publishes a [`SyncRequest`] with routing key
//! `cqrs_sync_request.<cqrs_id>` (see [`SYNC_REQUEST_PREFIX`] for why no django-cqrs peer
//! receives it). Requests are deduplicated per row within a window and rate-limited over all
//! rows (`[gap_repair]`, [`GapRepairConfig`](crate::GapRepairConfig)).
//!
//! A master service answers for the master models it was given a [`SyncSource`] for
//! ([`CqrsSystemBuilder::answer_sync_requests`](crate::CqrsSystemBuilder::answer_sync_requests)):
//! it consumes queue `cqrs_sync_request.<cqrs_id>` and publishes a SYNC of the row's current
//! state to `cqrs.<asking queue>.<cqrs_id>`, the message django-cqrs's `cqrs_sync --queue`
//! sends. A row the master no longer has is answered with nothing ([`RowSynced::Absent`]).
//! A request that cannot be answered (not JSON, a bad pk or queue, an unknown CQRS id, a
//! failing source) is dead-lettered to `dead_letter_cqrs_sync_request.<cqrs_id>` with the
//! reason in `x-cqrs-reason`, and acknowledged: requests are never redelivered in a loop.
//!
//! # Files
//! - `request.rs`: the request's wire form, routing key and queue;
//! - `limiter.rs`: deduplication per row and the rate limit;
//! - `requester.rs`: the replica side;
//! - `responder.rs`: the master side and the [`SyncSource`] port.

mod limiter;
mod request;
mod requester;
mod responder;

pub use request::{SYNC_REQUEST_PREFIX, SyncRequest, sync_request_key};
pub(crate) use requester::GapRequester;
pub(crate) use responder::Answering;
pub use responder::{FnSyncSource, RowSynced, SyncSource, sync_source_fn};
