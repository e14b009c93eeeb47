//! [`CqrsSystem`]: what a service starts from its `main`, inside an actix system.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use actix::prelude::*;
use futures_util::future::LocalBoxFuture;
use serde_json::Value;

use crate::actors::{
    DeadLetterer, Drain, Produce, Producer, RelayHandle, RelaySettings, ReplicaApply,
    ReplicaShared, Retrier, Router,
};
use crate::config::CqrsConfig;
use crate::envelope::{Envelope, JsonObject, SignalType};
use crate::error::{Error, Result};
use crate::master::{MasterBinding, MasterRegistration};
use crate::outbox::{EncodedEvent, OutboxStore};
use crate::registry::{Registry, RegistryBuilder, ReplicaModel};
use crate::retry::RetryPolicy;
use crate::telemetry::{Metrics, MetricsSnapshot};
use crate::trace_context;
use crate::transport::{
    ConsumerTag, Declare, HEADER_TRACEPARENT, Route, Subscribe, TransportHandle,
};

/// Connects the transport a configuration's `url` names, for builders given none (the
/// `cqrs-sync` facade plugs in its transports this way).
pub trait Connect: Send + Sync + 'static {
    /// Connects the transport for `config.url()` (with its options table), or fails naming
    /// the scheme when none is compiled in.
    fn connect<'a>(&'a self, config: &'a CqrsConfig)
    -> LocalBoxFuture<'a, Result<TransportHandle>>;
}

/// Builds a [`CqrsSystem`]: register models, give the configuration, start.
#[derive(Default)]
pub struct CqrsSystemBuilder {
    config: CqrsConfig,
    registry: RegistryBuilder,
    masters: Vec<MasterRegistration>,
    transport: Option<TransportHandle>,
    connector: Option<Arc<dyn Connect>>,
}

impl std::fmt::Debug for CqrsSystemBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CqrsSystemBuilder")
            .field("config", &self.config)
            .field("masters", &self.masters)
            .field("transport", &self.transport)
            .field("connects_by_url", &self.connector.is_some())
            .finish_non_exhaustive()
    }
}

impl CqrsSystemBuilder {
    /// An empty builder that connects no transport by itself: give one with
    /// [`transport`](Self::transport) or a [`Connect`] with [`connector`](Self::connector).
    /// (`cqrs_sync::CqrsSystem::builder()` comes with the transports compiled in.)
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses this configuration (default: [`CqrsConfig::default`]).
    #[must_use]
    pub fn config(mut self, config: CqrsConfig) -> Self {
        self.config = config;
        self
    }

    /// Registers a master model: a [`MasterModel`](crate::MasterModel) published by hand through the
    /// [`Publisher`], or a master table (with its outbox, which the system relays).
    #[must_use]
    pub fn master(mut self, master: impl Into<MasterRegistration>) -> Self {
        let master = master.into();
        self.registry = self.registry.master(master.model.clone());
        self.masters.push(master);
        self
    }

    /// Registers a replica model.
    #[must_use]
    pub fn replica(mut self, model: ReplicaModel) -> Self {
        self.registry = self.registry.replica(model);
        self
    }

    /// Uses this transport instead of connecting the one the configuration's `url` names.
    #[must_use]
    pub fn transport(mut self, transport: TransportHandle) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Connects the transport with `connector` when none is given.
    #[must_use]
    pub fn connector(mut self, connector: impl Connect) -> Self {
        self.connector = Some(Arc::new(connector));
        self
    }

    /// Validates the configuration and the registry, connects the transport, checks every
    /// outbox, starts relaying it, declares the replica topology, starts the actors and, when
    /// there are replica models, starts consuming. Call it inside a running actix system.
    ///
    /// Fails, naming the key or the CQRS id, when the configuration is invalid, when the given
    /// transport was built for another exchange than the configuration's, and when an outbox
    /// holds events of a CQRS id that no master model registered with it publishes.
    pub async fn start(self) -> Result<CqrsSystem> {
        self.config.validate()?;
        let registry = Arc::new(self.registry.build()?);
        let config = Arc::new(self.config);
        let transport = match (self.transport, &self.connector) {
            (Some(t), _) => t,
            (None, Some(c)) => c.connect(&config).await?,
            (None, None) => {
                return Err(Error::config(
                    "url",
                    format!(
                        "no transport was given, and this builder connects none for {}: use \
                         cqrs_sync::CqrsSystem::builder(), or give one with \
                         CqrsSystemBuilder::transport",
                        config.url()
                    ),
                ));
            }
        };
        if let Some(exchange) = transport.exchange()
            && exchange != config.exchange()
        {
            return Err(Error::config(
                "exchange",
                format!(
                    "the configuration names exchange {:?}, but the {} transport was built for \
                     {exchange:?}: build it from the same configuration",
                    config.exchange(),
                    transport.name()
                ),
            ));
        }
        let outboxes = outboxes_of(&self.masters);
        for (outbox, ids) in &outboxes {
            check_outbox(outbox.as_ref(), ids).await?;
        }
        let metrics = Arc::new(Metrics::default());
        let producer = Producer::new(
            transport.clone(),
            Arc::clone(&registry),
            Arc::clone(&config),
            Arc::clone(&metrics),
        )
        .start();
        let publisher = Publisher {
            producer: producer.clone(),
        };
        for master in &self.masters {
            if let Some(slot) = &master.slot {
                slot.bind(MasterBinding {
                    codec: config.codec(),
                    message_ttl: master
                        .model
                        .message_ttl()
                        .unwrap_or_else(|| config.master().message_ttl()),
                    publisher: publisher.clone(),
                });
            }
        }
        let settings = RelaySettings {
            window: config.master().publish_window() as usize,
            poll_interval: config.master().outbox_poll_interval(),
            lease_ttl: config.master().outbox_lease_ttl(),
            owner: format!("{}-{:016x}", std::process::id(), fastrand::u64(..)),
        };
        let relays = outboxes
            .into_iter()
            .map(|(outbox, ids)| {
                RelayHandle::start(
                    outbox,
                    ids,
                    transport.clone(),
                    settings.clone(),
                    Arc::clone(&metrics),
                )
            })
            .collect();
        let mut system = CqrsSystem {
            transport,
            producer,
            metrics,
            relays,
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
            policies: retry_policies(&registry, &config),
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

/// The distinct outboxes of the registrations (the same `Arc`), each with its CQRS ids.
fn outboxes_of(masters: &[MasterRegistration]) -> Vec<(Arc<dyn OutboxStore>, Vec<String>)> {
    let mut out: Vec<(Arc<dyn OutboxStore>, Vec<String>)> = Vec::new();
    for master in masters {
        let Some(outbox) = &master.outbox else {
            continue;
        };
        let id = master.model.cqrs_id().to_owned();
        match out.iter_mut().find(|(o, _)| same_outbox(o, outbox)) {
            Some((_, ids)) => ids.push(id),
            None => out.push((Arc::clone(outbox), vec![id])),
        }
    }
    out
}

fn same_outbox(a: &Arc<dyn OutboxStore>, b: &Arc<dyn OutboxStore>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

/// Fails when `outbox` holds events of a CQRS id that none of `ids` is: nothing in this
/// process would ever relay them.
async fn check_outbox(outbox: &dyn OutboxStore, ids: &[String]) -> Result<()> {
    for (cqrs_id, count) in outbox.waiting().await? {
        if !ids.contains(&cqrs_id) {
            return Err(Error::config(
                &cqrs_id,
                format!(
                    "the outbox {} holds {count} event(s) of this CQRS id, and no master model \
                     registered with it publishes them: register the table that wrote them \
                     (CqrsSystemBuilder::master)",
                    outbox.name()
                ),
            ));
        }
    }
    Ok(())
}

/// Each replica model's retry policy: the model's own, else `[models.<id>]` over `[replica]`.
/// A model that has both is told about in a warning: the code's policy wins.
fn retry_policies(registry: &Registry, config: &CqrsConfig) -> HashMap<String, RetryPolicy> {
    registry
        .replica_ids()
        .into_iter()
        .map(|id| {
            let own = registry.replica(&id).and_then(|m| m.retry_policy().cloned());
            let policy = match own {
                Some(policy) => {
                    if config.has_model_settings(&id) {
                        tracing::warn!(cqrs_id = %crate::values::excerpt(&id), "the replica model sets its own retry policy in code, which wins over [models.<id>] of the configuration");
                    }
                    policy
                }
                None => config.retry_policy(&id),
            };
            (id, policy)
        })
        .collect()
}

struct ReplicaSide {
    consumer: ConsumerTag,
    router: Addr<Router>,
    shards: Vec<Addr<ReplicaApply>>,
    retrier: Addr<Retrier>,
    dead_letters: Addr<DeadLetterer>,
}

/// A running set of cqrs-sync actors: the relay of each registered outbox, a [`Publisher`] for
/// master models, and the replica pipeline consuming this service's queue when it has replica
/// models.
///
/// ```no_run
/// use cqrs_actors::{handler_fn, Applied, CqrsConfig, CqrsSystemBuilder, ReplicaEvent, ReplicaModel};
/// # async fn run(transport: cqrs_actors::TransportHandle) -> cqrs_actors::Result<()> {
/// let system = CqrsSystemBuilder::new()
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
    relays: Vec<RelayHandle>,
    replica: Option<ReplicaSide>,
}

impl std::fmt::Debug for CqrsSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CqrsSystem")
            .field("transport", &self.transport)
            .field("outboxes", &self.relays.len())
            .field("consuming", &self.replica.is_some())
            .finish()
    }
}

impl CqrsSystem {
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

    /// Waits until every master event written so far is confirmed by the broker: each
    /// outbox's events of its registered CQRS ids up to the newest one at the time of the call
    /// (taken out of the outbox), and every [`Publisher`] call made before. For scripts, tests
    /// and a shutdown that leaves nothing behind; it waits as long as the broker is away (wrap
    /// it in a timeout).
    pub async fn flush(&self) -> Result<()> {
        for relay in &self.relays {
            relay.flush().await?;
        }
        self.producer.send(Drain).await?;
        Ok(())
    }

    /// Waits until everything received so far is applied, parked or dead-lettered and
    /// acknowledged, and every publish is confirmed. Consumption goes on.
    pub async fn wait_idle(&self) -> Result<()> {
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

    /// Graceful shutdown: stop consuming, finish in-flight work, acknowledge it, stop relaying
    /// (the publishes in flight are confirmed and their events deleted; the rest stay in the
    /// outbox for the next start: call [`flush`](Self::flush) first to send them), give the
    /// outbox leases up, wait for pending publishes, release the consumer.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(r) = &self.replica {
            self.transport.cancel(r.consumer, false).await?;
        }
        for relay in &mut self.relays {
            relay.stop().await;
        }
        self.wait_idle().await?;
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
    /// With the feature `otel`, the message carries the trace context of the span current at
    /// the call.
    pub fn publish(
        &self,
        envelope: Envelope,
        route: Route,
    ) -> impl Future<Output = Result<()>> + 'static {
        let request = self.producer.send(Produce::Envelope {
            envelope,
            route,
            headers: trace_context::current(),
        });
        async move { request.await? }
    }

    /// Publishes an event encoded at write time, as it is (a master table's direct mode). It
    /// keeps the trace context it was encoded with; one encoded with none gets the context of
    /// the span current at the call (feature `otel`).
    pub fn publish_encoded(
        &self,
        mut event: EncodedEvent,
    ) -> impl Future<Output = Result<()>> + 'static {
        if !event.headers.contains_key(HEADER_TRACEPARENT) {
            event.headers.extend(trace_context::current());
        }
        let request = self.producer.send(Produce::Encoded(event));
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
