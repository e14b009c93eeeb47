//! Transports of cqrs-sync. Each is an actix actor speaking the protocol of
//! [`cqrs_actors::transport`]; [`conformance`] is the suite every transport passes.
//!
//! - [`memory`] (feature `memory`, on by default): in-process, with seeded fault injection.
//! - [`rabbitmq`] (feature `rabbitmq`; `rabbitmq-tls` adds `amqps://`): RabbitMQ through lapin,
//!   wire-compatible with django-cqrs.
//! - [`redis`] (feature `redis`; `redis-tls` adds `rediss://`): Redis Streams through redis-rs,
//!   with consumer groups, claims, parked retries, dead letters and trimming without loss.

//! - [`UrlConnector`]: connects the one a configuration's `url` names.

#[cfg(feature = "conformance")]
pub mod conformance;
mod connect;
#[cfg(feature = "memory")]
pub mod memory;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(any(feature = "rabbitmq", feature = "redis"))]
mod tls;
#[cfg(any(feature = "rabbitmq", feature = "redis"))]
mod url;

pub use connect::UrlConnector;
