//! Transports of cqrs-sync. Each is an actix actor speaking the protocol of
//! [`cqrs_actors::transport`]; [`conformance`] is the suite every transport passes.
//!
//! - [`memory`] (feature `memory`, on by default): in-process, with seeded fault injection.

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "memory")]
pub mod memory;
