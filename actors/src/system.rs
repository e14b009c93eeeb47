//! [`CqrsSystem`]: what a service starts from its `main`, inside an actix system.

use std::future::Future;
use std::sync::Arc;

use actix::prelude::*;
use serde_json::Value;

use crate::actors::{
    DeadLetterer, Drain, Produce, Producer, ReplicaApply, ReplicaShared, Retrier, Router,
};
use crate::config::CqrsConfig;
use crate::envelope::{Envelope, JsonObject, SignalType};
use crate::error::{Error, Result};
use crate::registry::{MasterModel, RegistryBuilder, ReplicaModel};
use crate::telemetry::{Metrics, MetricsSnapshot};
use crate::transport::{ConsumerTag, Declare, Route, Subscribe, TransportHandle};

/// Builds a [`CqrsSystem`]: register models, choose a transport, start.
#[derive(Debug, Default)]
pub struct CqrsSystemBuilder {
    config: CqrsConfig,
    registry: RegistryBuilder,
    transport: Option<TransportHandle>,
}

impl CqrsSystemBuilder {
    /// Uses this configuration (default: [`CqrsConfig::default`]).
    #[must_use]
    pub fn config(mut self, config: CqrsConfig) -> Self {
        self.config = config;
        self
    }

    /// Registers a master model.
    #[must_use]
    pub fn master(mut self, model: MasterModel) -> Self {
        self.registry = self.registry.master(model);
        self
    }

    /// Registers a replica model.
    #[must_use]
    pub fn replica(mut self, model: ReplicaModel) -> Self {
        self.registry = self.registry.replica(model);
        self
    }

    /// Uses this transport.
    #[must_use]
    pub fn transport(mut self, transport: TransportHandle) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Validates the configuration and the registry, declares the replica topology, starts the
    /// actors and, when there are replica models, starts consuming. Call it inside a running
    /// actix system.
    pub async fn start(self) -> Result<CqrsSystem> {
        self.config.validate()?;
        let registry = Arc::new(self.registry.build()?);
        let transport = self
            .transport
            .ok_or_else(|| Error::config("transport", "no transport was given"))?;
        let config = Arc::new(self.config);
        let metrics = Arc::new(Metrics::default());
        let producer = Producer::new(
            transport.clone(),
            Arc::clone(&registry),
            Arc::clone(&config),
            Arc::clone(&metrics),
        )
        .start();
        let mut system = CqrsSystem {
            transport,
            producer,
            metrics,
            replica: None,
        };
        if registry.replica_ids().is_empty() {
            return Ok(system);
        }
        let queue = config
            .queue()
            .ok_or_else(|| Error::config("queue", "a service with replica models needs a queue"))?
            .to_owned();
        let dead_letter_queue = config
            .dead_letter_queue()
            .unwrap_or_else(|| format!("dead_letter_{queue}"));
        let declare = Declare {
            queue: queue.clone(),
            dead_letter_queue: dead_letter_queue.clone(),
            cqrs_ids: registry.replica_ids(),
        };
        system.transport.declare(declare.clone()).await?;
        let shared = Arc::new(ReplicaShared {
            registry,
            config: Arc::clone(&config),
            transport: system.transport.clone(),
            queue: queue.clone(),
            dead_letter_queue,
            declare,
            metrics: Arc::clone(&system.metrics),
        });
        let dead_letters = DeadLetterer::new(Arc::clone(&shared)).start();
        let retrier = Retrier::new(Arc::clone(&shared), dead_letters.clone()).start();
        let shards: Vec<Addr<ReplicaApply>> = (0..config.replica().workers())
            .map(|_| {
                let (shared, retrier) = (Arc::clone(&shared), retrier.clone());
                Supervisor::start(move |_| ReplicaApply::new(shared, retrier))
            })
            .collect();
        let router = Router::new(Arc::clone(&shared), shards.clone(), dead_letters.clone()).start();
        let consumer = system
            .transport
            .subscribe(Subscribe {
                queue,
                prefetch: config.replica().prefetch(),
                consumer: router.clone().recipient(),
            })
            .await?;
        system.replica = Some(ReplicaSide {
            consumer,
            router,
            shards,
            retrier,
            dead_letters,
        });
        Ok(system)
    }
}

struct ReplicaSide {
    consumer: ConsumerTag,
    router: Addr<Router>,
    shards: Vec<Addr<ReplicaApply>>,
    retrier: Addr<Retrier>,
    dead_letters: Addr<DeadLetterer>,
}

/// A running set of cqrs-sync actors: a [`Publisher`] for master models, and the replica
/// pipeline consuming this service's queue when it has replica models.
///
/// ```no_run
/// use cqrs_actors::{handler_fn, Applied, CqrsConfig, CqrsSystem, ReplicaEvent, ReplicaModel};
/// # async fn run(transport: cqrs_actors::TransportHandle) -> cqrs_actors::Result<()> {
/// let system = CqrsSystem::builder()
///     .config(CqrsConfig::default().with_queue("billing"))
///     .replica(ReplicaModel::new("author", handler_fn(|e: ReplicaEvent| async move {
///         println!("{} {}", e.signal(), e.pk());
///         Ok(Applied::Updated)
///     })))
///     .transport(transport)
///     .start()
///     .await?;
/// // ... serve ...
/// system.shutdown().await
/// # }
/// ```
pub struct CqrsSystem {
    transport: TransportHandle,
    producer: Addr<Producer>,
    metrics: Arc<Metrics>,
    replica: Option<ReplicaSide>,
}

impl std::fmt::Debug for CqrsSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CqrsSystem")
            .field("transport", &self.transport)
            .field("consuming", &self.replica.is_some())
            .finish()
    }
}

impl CqrsSystem {
    /// Starts building.
    #[must_use]
    pub fn builder() -> CqrsSystemBuilder {
        CqrsSystemBuilder::default()
    }

    /// The handle service code publishes master events with.
    #[must_use]
    pub fn publisher(&self) -> Publisher {
        Publisher {
            producer: self.producer.clone(),
        }
    }

    /// The transport in use.
    #[must_use]
    pub fn transport(&self) -> &TransportHandle {
        &self.transport
    }

    /// The counters so far.
    #[must_use]
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// Waits until everything received so far is applied, parked or dead-lettered and
    /// acknowledged, and every publish is confirmed. Consumption goes on.
    pub async fn settle(&self) -> Result<()> {
        if let Some(r) = &self.replica {
            r.router.send(Drain).await?;
            for shard in &r.shards {
                shard.send(Drain).await?;
            }
            r.retrier.send(Drain).await?;
            r.dead_letters.send(Drain).await?;
        }
        self.producer.send(Drain).await?;
        Ok(())
    }

    /// Graceful shutdown: stop consuming, finish in-flight work, acknowledge it, wait for
    /// pending publishes, release the consumer, stop the actors.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(r) = &self.replica {
            self.transport.cancel(r.consumer, false).await?;
        }
        self.settle().await?;
        if let Some(r) = self.replica.take() {
            self.transport.cancel(r.consumer, true).await?;
        }
        Ok(())
    }
}

/// Publishes master events (see [`CqrsSystem::publisher`]). Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    producer: Addr<Producer>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Publisher")
    }
}

impl Publisher {
    /// Publishes an envelope to a route; the future resolves once the broker confirmed it.
    /// The message is handed to the Producer when this is called (not when the future is first
    /// polled), so messages keep the order of the calls and many can be in flight at once.
    pub fn publish(
        &self,
        envelope: Envelope,
        route: Route,
    ) -> impl Future<Output = Result<()>> + 'static {
        let request = self.producer.send(Produce { envelope, route });
        async move { request.await? }
    }

    /// Publishes a SAVE of `instance_data` (which carries `cqrs_revision` and `cqrs_updated`).
    pub fn save(
        &self,
        cqrs_id: &str,
        instance_data: JsonObject,
    ) -> impl Future<Output = Result<()>> + 'static {
        let route = Route::broadcast(cqrs_id);
        self.publish(
            Envelope::new(SignalType::Save, cqrs_id, instance_data),
            route,
        )
    }

    /// Publishes a DELETE: `instance_data` is `{"id", "cqrs_revision", "cqrs_updated"}` as
    /// WIRE.md section 2 requires.
    pub fn delete(
        &self,
        cqrs_id: &str,
        pk: Value,
        revision: i64,
        updated: chrono::DateTime<chrono::Utc>,
    ) -> impl Future<Output = Result<()>> + 'static {
        let mut data = JsonObject::new();
        data.insert("id".into(), pk.clone());
        data.insert("cqrs_revision".into(), Value::from(revision));
        data.insert(
            "cqrs_updated".into(),
            Value::String(crate::values::format_datetime(&updated)),
        );
        let envelope = Envelope::new(SignalType::Delete, cqrs_id, data).with_pk(pk);
        self.publish(envelope, Route::broadcast(cqrs_id))
    }

    /// Publishes a SYNC of `instance_data`, to every replica or to one replica `queue`.
    pub fn sync(
        &self,
        cqrs_id: &str,
        instance_data: JsonObject,
        queue: Option<&str>,
    ) -> impl Future<Output = Result<()>> + 'static {
        let route = match queue {
            Some(q) => Route::queue(q, cqrs_id),
            None => Route::broadcast(cqrs_id),
        };
        self.publish(
            Envelope::new(SignalType::Sync, cqrs_id, instance_data),
            route,
        )
    }
}
