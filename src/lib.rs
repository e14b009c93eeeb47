#![doc = include_str!("../README.md")]

pub use cqrs_actors::{
    Applied, Backoff, BackoffKind, Codec, CodecName, CqrsConfig, CqrsSystem, CqrsSystemBuilder,
    DecodeError, EncodeError, Envelope, Error, ErrorKind, JsonObject, MasterConfig, MasterModel,
    MemoryTable, Metrics, MetricsSnapshot, ModelConfig, Publisher, Registry, RegistryBuilder,
    ReplicaConfig, ReplicaEvent, ReplicaHandler, ReplicaModel, Result, RetryDecision, RetryPolicy,
    Route, Row, SecretUrl, SignalType, Skip, TransportHandle, handler_fn, revision, transport,
    values,
};

/// Transports: [`transports::memory`] (feature `memory`), [`transports::rabbitmq`] (feature
/// `rabbitmq`) and the conformance suite (feature `conformance`).
pub mod transports {
    #[cfg(feature = "conformance")]
    pub use cqrs_transports::conformance;
    #[cfg(feature = "memory")]
    pub use cqrs_transports::memory;
    #[cfg(feature = "rabbitmq")]
    pub use cqrs_transports::rabbitmq;
}

/// The SeaORM adapters (feature `sea-orm`; drivers with `postgres`, `mysql`, `sqlite`).
#[cfg(feature = "sea-orm")]
pub mod orm {
    pub use cqrs_orm_adapters::{
        Delivery, Hook, MasterTable, MetaInput, Outbox, OutboxEvent, OutboxRelay, RelayConfig,
        RelayStats, ReplicaTable, RowChange, Serializer, ShutdownRelay, StopRelay, Tombstones,
        to_json,
    };
}

/// What an application author needs, in one import.
pub mod prelude {
    pub use cqrs_actors::prelude::*;
    #[cfg(feature = "memory")]
    pub use cqrs_transports::memory::{FaultPlan, MemoryBroker};
}
