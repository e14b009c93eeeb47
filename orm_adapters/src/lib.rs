//! SeaORM adapters of cqrs-sync: master bookkeeping (`cqrs_revision`, `cqrs_updated`) with a
//! transactional outbox, and revision-guarded batched replica apply, for PostgreSQL,
//! MySQL/MariaDB and SQLite.
//!
//! This crate holds no adapter yet; until it does, replica models are written against
//! [`cqrs_actors::ReplicaHandler`] (see [`cqrs_actors::MemoryTable`] for one that keeps rows
//! under the replica rules).
