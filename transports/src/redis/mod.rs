//! The Redis Streams transport (redis-rs), with the guarantees of the RabbitMQ one.
//!
//! - [`RedisConfig`]: built from the service's configuration: the URL (`redis://` or
//!   `rediss://`, user, password, database), the exchange (it names the key space), the
//!   window, and the `[redis]` options (consumers, consumer names, claims, retention, ...).
//! - [`RedisTransport`]: the actor. Masters append to one stream per CQRS id; each replica
//!   queue is a consumer group on the streams of the ids it replicates and on a stream of its
//!   own (directed SYNCs and retry copies); dead letters go to the stream of the dead-letter
//!   queue; parked retries wait in a sorted set until a mover brings them back; a trimmer
//!   keeps streams bounded without cutting what a group still needs. The README's Redis
//!   section gives the key layout.
//! - The operator's tools of the transport protocol (dead letters listed, retried and purged;
//!   a replica queue described and deleted) work on those keys; [`TrimNow`],
//!   [`DeleteGoneConsumers`], [`Stop`], [`Teardown`]: for tests and tools.
//!
//! ```no_run
//! # async fn run() -> cqrs_actors::Result<()> {
//! use cqrs_actors::CqrsConfig;
//! use cqrs_transports::redis::{RedisConfig, RedisTransport};
//! let service = CqrsConfig::default().with_url("redis://127.0.0.1:6379/0");
//! let (transport, _addr) = RedisTransport::connect(RedisConfig::from_cqrs_config(&service)?).await?;
//! assert_eq!(transport.name(), "redis");
//! # Ok(())
//! # }
//! ```

mod config;
mod conn;
mod consumer;
mod dead_letters;
mod keys;
mod maintenance;
mod publisher;
mod queues;
mod scripts;
mod tools;
mod transport;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

pub use config::{GroupStart, RedisConfig};
pub use keys::HEADER_DELIVERY_COUNT;
pub use tools::{DeleteGoneConsumers, Stop, Teardown, TrimNow};
pub use transport::RedisTransport;

/// Locks a mutex, also after a panic elsewhere.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the consumers of this process know of each other.
#[derive(Default)]
pub(crate) struct Local {
    /// Queue → consumer slots in use (consumer `n` is named `<consumer_name>-<n>`).
    pub slots: HashMap<String, BTreeSet<usize>>,
    /// Queue → names of released consumers whose pending entries the next consumer of the
    /// queue takes over at once.
    pub orphans: HashMap<String, BTreeSet<String>>,
    /// Queue (group) → names of the consumers alive in this process.
    pub live: HashMap<String, HashSet<String>>,
}
