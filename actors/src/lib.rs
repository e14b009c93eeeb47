//! The core of cqrs-sync: the envelope and its codecs, the registry of models, retry policies,
//! configuration, the transport protocol and the supervised actor pipeline.
//!
//! - [`Envelope`], [`SignalType`] and [`Codec`]: the wire form of WIRE.md sections 1-2;
//!   [`values`] has the value forms (Python datetimes, decimals, dates, UUIDs).
//! - [`Registry`], [`MasterModel`], [`ReplicaModel`] and the [`ReplicaHandler`] trait: what a
//!   service publishes and how it applies what it receives.
//! - [`RetryPolicy`]: how failures are retried before they are dead-lettered.
//! - [`CqrsConfig`]: the settings, from TOML and `CQRS_*` variables.
//! - [`transport`]: the messages a transport actor handles; a transport is one file away.
//! - [`OutboxStore`]: the port an outbox implements; the system relays each registered one.
//! - [`CqrsSystem`]: starts it all inside an actix system; [`Publisher`] publishes.
//! - [`SyncSource`] and [`SyncRequest`]: gap repair, a replica asking the master for a row
//!   after lost events (off by default).

mod actors;
mod codec;
mod config;
mod envelope;
mod error;
mod gap_repair;
mod handler;
mod health;
mod master;
mod memory_table;
mod outbox;
mod registry;
mod retry;
pub mod revision;
mod secret_url;
pub mod stats;
mod system;
mod telemetry;
mod trace_context;
pub mod transport;
pub mod values;

pub use codec::{
    Codec, DecodeError, EncodeError, JSON_CONTENT_TYPE, MSGPACK_CONTENT_TYPE, expiry_after,
};
pub use config::{
    BackoffKind, CodecName, CqrsConfig, GapRepairConfig, MasterConfig, MaxRetries, ModelConfig,
    ObservabilityConfig, ReplicaConfig, SecretUrl, Ttl,
};
pub use envelope::{Envelope, JsonObject, SignalType, UnknownSignalType};
pub use error::{Error, ErrorKind, MAX_MESSAGE_LEN, Result};
pub use gap_repair::{
    FnSyncSource, RowSynced, SYNC_REQUEST_PREFIX, SyncRequest, SyncSource, sync_request_key,
    sync_source_fn,
};
pub use handler::{Applied, FnHandler, ReplicaEvent, ReplicaHandler, Skip, handler_fn};
pub use health::{Check, Health, Probe};
pub use master::{MasterBinding, MasterRegistration, MasterSlot};
pub use memory_table::{MemoryTable, Row};
pub use outbox::{EncodedEvent, MemoryOutbox, OutboxStore, StoredEvent};
pub use registry::{MasterModel, Registry, RegistryBuilder, ReplicaModel};
pub use retry::{Backoff, REASON_RETRIES_EXHAUSTED, RetryDecision, RetryPolicy, ShouldRetry};
pub use stats::{IdSnapshot, Metrics, MetricsSnapshot};
pub use system::{Connect, CqrsSystem, CqrsSystemBuilder, HealthProbe, Publisher};
pub use telemetry::envelope_span;
pub use transport::{Route, TransportHandle};

/// What an application author needs, in one import.
pub mod prelude {
    pub use crate::{
        Applied, CqrsConfig, CqrsSystem, CqrsSystemBuilder, Envelope, Error, ErrorKind, JsonObject,
        MasterModel, MemoryTable, Publisher, ReplicaEvent, ReplicaHandler, ReplicaModel, Result,
        RetryPolicy, Route, SignalType, Skip, handler_fn,
    };
}
