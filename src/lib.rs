#![doc = include_str!("../README.md")]

pub use cqrs_actors::{
    Applied, Backoff, BackoffKind, Check, Codec, CodecName, Connect, CqrsConfig, CqrsSystem,
    CqrsSystemBuilder, DecodeError, EncodeError, EncodedEvent, Envelope, Error, ErrorKind,
    FnSyncSource, GapRepairConfig, Health, HealthProbe, IdSnapshot, JsonObject, MasterBinding,
    MasterConfig, MasterModel, MasterRegistration, MasterSlot, MemoryOutbox, MemoryTable, Metrics,
    MetricsSnapshot, ModelConfig, ObservabilityConfig, OutboxStore, Probe, Publisher, Registry,
    RegistryBuilder, ReplicaConfig, ReplicaEvent, ReplicaHandler, ReplicaModel, Result,
    RetryDecision, RetryPolicy, Route, Row, RowSynced, SYNC_REQUEST_PREFIX, SecretUrl, SignalType,
    Skip, StoredEvent, SyncRequest, SyncSource, TransportHandle, handler_fn, revision, stats,
    sync_request_key, sync_source_fn, transport, values,
};
pub use cqrs_transports::UrlConnector;

/// `CqrsSystem::builder()`: a [`CqrsSystemBuilder`] that connects the transport the
/// configuration's `url` names (`memory://`, `amqp://`, `amqps://`, as compiled in) unless one
/// is given. In the [`prelude`].
///
/// ```no_run
/// use cqrs_sync::prelude::*;
/// # async fn run() -> cqrs_sync::Result<()> {
/// let system = CqrsSystem::builder()
///     .config(CqrsConfig::load(None)?) // url = "amqp://...", exchange, queue, [rabbitmq]
///     .replica(ReplicaModel::new("customer", MemoryTable::new()))
///     .start()
///     .await?;
/// # system.shutdown().await
/// # }
/// ```
pub trait CqrsSystemExt {
    /// Starts building a system that connects its transport by URL.
    fn builder() -> CqrsSystemBuilder;
}

impl CqrsSystemExt for CqrsSystem {
    fn builder() -> CqrsSystemBuilder {
        CqrsSystemBuilder::new().connector(UrlConnector)
    }
}

/// Transports: [`transports::memory`] (feature `memory`), [`transports::rabbitmq`] (feature
/// `rabbitmq`), [`transports::redis`] (feature `redis`) and the conformance suite (feature
/// `conformance`).
pub mod transports {
    #[cfg(feature = "conformance")]
    pub use cqrs_transports::conformance;
    #[cfg(feature = "memory")]
    pub use cqrs_transports::memory;
    #[cfg(feature = "rabbitmq")]
    pub use cqrs_transports::rabbitmq;
    #[cfg(feature = "redis")]
    pub use cqrs_transports::redis;
}

/// The SeaORM adapters (feature `sea-orm`; drivers with `postgres`, `mysql`, `sqlite`).
#[cfg(feature = "sea-orm")]
pub mod orm {
    #[cfg(feature = "migration")]
    pub use cqrs_orm_adapters::migration;
    pub use cqrs_orm_adapters::{
        Dispatch, Filter, Hook, MasterRow, MasterSource, MasterTable, MasterView, MetaInput,
        Outbox, ReplicaTable, RowChange, RowPage, Serializer, SyncPage, SyncRows, Tombstones,
        db_error, to_json,
    };
}

#[cfg(feature = "prometheus")]
pub mod prometheus;

#[cfg(feature = "otel")]
pub mod otel;

/// The `cqrs` command's tree and tools (feature `cli`): mount [`cli::Command`] in a service's
/// own binary, over [`cli::Tools`] built with its tables.
#[cfg(feature = "cli")]
pub use cqrs_cli as cli;

/// What an application author needs, in one import.
pub mod prelude {
    pub use crate::CqrsSystemExt;
    pub use cqrs_actors::prelude::*;
    #[cfg(feature = "memory")]
    pub use cqrs_transports::memory::{FaultPlan, MemoryBroker};
}
