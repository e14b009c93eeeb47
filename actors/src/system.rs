//! [`CqrsSystem`]: what a service starts from its `main`, inside an actix system.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::LocalBoxFuture;
use serde_json::Value;

use crate::actors::{
    DeadLetterer, Drain, Produce, Producer, RelayControl, RelayHandle, RelaySettings, ReplicaApply,
    ReplicaShared, Retrier, Router,
};
use crate::config::CqrsConfig;
use crate::envelope::{Envelope, JsonObject, SignalType};
use crate::error::{Error, Result};
use crate::gap_repair::{Answering, GapRequester, SyncSource};
use crate::health::{Health, Probe};
use crate::master::{MasterBinding, MasterRegistration};
use crate::outbox::{EncodedEvent, OutboxStore};
use crate::registry::{Registry, RegistryBuilder, ReplicaModel};
use crate::retry::RetryPolicy;
use crate::stats::{Metrics, MetricsSnapshot, QueueSnapshot};
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
    sync_sources: Vec<Arc<dyn SyncSource>>,
}

impl std::fmt::Debug for CqrsSystemBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CqrsSystemBuilder")
            .field("config", &self.config)
            .field("masters", &self.masters)
            .field("transport", &self.transport)
            .field("connects_by_url", &self.connector.is_some())
            .field("sync_sources", &self.sync_sources.len())
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

    /// Answers gap-repair sync requests for the master model `source.cqrs_id()` (registered
    /// with [`master`](Self::master)): the system consumes queue `cqrs_sync_request.<cqrs_id>`
    /// and answers each request with a SYNC of the row, read through `source`, to the asking
    /// replica's queue. Off unless called; call it once per master model that should answer.
    /// See [`SyncRequest`](crate::SyncRequest) for the request and why Python peers never see
    /// it.
    #[must_use]
    pub fn answer_sync_requests(mut self, source: impl SyncSource) -> Self {
        self.sync_sources.push(Arc::new(source));
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
        let registered = registry
            .master_ids()
            .into_iter()
            .chain(registry.replica_ids());
        let metrics = Arc::new(Metrics::default());
        for id in registered {
            metrics.register(&id);
        }
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
        let answering = Answering::start(
            self.sync_sources,
            &registry,
            &transport,
            publisher.clone(),
            config.replica().dead_message_ttl(),
        )
        .await?;
        let mut system = CqrsSystem {
            transport,
            producer,
            metrics,
            relays,
            replica: None,
            config: Arc::clone(&config),
            registry: Arc::clone(&registry),
            sampler: None,
            answering,
        };
        if registry.replica_ids().is_empty() {
            system.sampler = Some(system.start_sampler());
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
        let gap_repair =
            GapRequester::for_replicas(&registry, &config, system.transport.clone(), &queue);
        let shared = Arc::new(ReplicaShared {
            policies: retry_policies(&registry, &config),
            registry,
            config: Arc::clone(&config),
            transport: system.transport.clone(),
            queue: queue.clone(),
            dead_letter_queue,
            declare,
            metrics: Arc::clone(&system.metrics),
            gap_repair,
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
            queue: config.queue().unwrap_or_default().to_owned(),
            router,
            shards,
            retrier,
            dead_letters,
        });
        system.sampler = Some(system.start_sampler());
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
    queue: String,
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
    config: Arc<CqrsConfig>,
    registry: Arc<Registry>,
    /// Samples the gauges read from the broker and the outboxes.
    sampler: Option<tokio::task::JoinHandle<()>>,
    answering: Option<Answering>,
}

impl Drop for CqrsSystem {
    fn drop(&mut self) {
        if let Some(sampler) = self.sampler.take() {
            sampler.abort();
        }
    }
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

    /// The figures so far: totals, and each CQRS id's own (see [`stats`](crate::stats)).
    /// The gauges read from the broker and the outboxes are as last sampled
    /// (`observability.sample_interval`).
    #[must_use]
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// The live figures, shared with the actors (for an exporter that reads them itself).
    #[must_use]
    pub fn metrics_handle(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Samples the gauges now instead of at the next `observability.sample_interval`.
    pub async fn sample(&self) {
        sample(&self.sampling()).await;
    }

    fn sampling(&self) -> Sampling {
        Sampling {
            metrics: Arc::clone(&self.metrics),
            transport: self.transport.clone(),
            outboxes: self
                .relays
                .iter()
                .map(|r| (Arc::clone(&r.outbox), Arc::clone(&r.cqrs_ids)))
                .collect(),
            queue: self.replica.as_ref().map(|r| r.queue.clone()),
            timeout: self.config.observability().probe_timeout(),
        }
    }

    fn start_sampler(&self) -> tokio::task::JoinHandle<()> {
        let sampling = self.sampling();
        let every = self.config.observability().sample_interval();
        actix::spawn(async move {
            loop {
                sample(&sampling).await;
                tokio::time::sleep(every).await;
            }
        })
    }

    /// Liveness and readiness, for Kubernetes probes: see [`HealthProbe::check`].
    pub async fn health(&self) -> Health {
        self.health_probe().check().await
    }

    /// A handle that checks this system's health from elsewhere (an HTTP endpoint's task);
    /// cheap to clone.
    #[must_use]
    pub fn health_probe(&self) -> HealthProbe {
        HealthProbe {
            transport: self.transport.clone(),
            registry: Arc::clone(&self.registry),
            config: Arc::clone(&self.config),
            metrics: Arc::clone(&self.metrics),
            relays: self
                .relays
                .iter()
                .map(|r| {
                    (
                        (Arc::clone(&r.outbox), Arc::clone(&r.cqrs_ids)),
                        r.control(),
                    )
                })
                .collect(),
            replica: self
                .replica
                .as_ref()
                .map(|r| (r.queue.clone(), r.router.clone(), r.shards.clone())),
        }
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
        if let Some(a) = &self.answering {
            a.drain().await?;
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
        if let Some(a) = &self.answering {
            a.cancel(&self.transport, false).await?;
        }
        for relay in &mut self.relays {
            relay.stop().await;
        }
        self.wait_idle().await?;
        if let Some(r) = self.replica.take() {
            self.transport.cancel(r.consumer, true).await?;
        }
        if let Some(a) = self.answering.take() {
            a.cancel(&self.transport, true).await?;
        }
        Ok(())
    }
}

/// An outbox and the CQRS ids relayed from it.
type Outboxed = (Arc<dyn OutboxStore>, Arc<[String]>);

/// Checks a [`CqrsSystem`]'s health (see [`CqrsSystem::health_probe`]). Cheap to clone.
#[derive(Clone)]
pub struct HealthProbe {
    transport: TransportHandle,
    registry: Arc<Registry>,
    config: Arc<CqrsConfig>,
    metrics: Arc<Metrics>,
    relays: Vec<(Outboxed, Arc<RelayControl>)>,
    replica: Option<(String, Addr<Router>, Vec<Addr<ReplicaApply>>)>,
}

impl std::fmt::Debug for HealthProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthProbe")
            .field("transport", &self.transport)
            .field("outboxes", &self.relays.len())
            .field("consuming", &self.replica.is_some())
            .finish()
    }
}

impl HealthProbe {
    /// Liveness and readiness, for Kubernetes probes (`GET /healthz` and `GET /readyz` of the
    /// `prometheus` feature's endpoint answer with it). Each check waits at most
    /// `observability.probe_timeout`:
    /// - `transport` (ready): the broker connection is up ([`Ping`](crate::transport::Ping));
    /// - `database:<cqrs_id>` (ready): each replica model's handler can apply now (a table
    ///   adapter pings its database);
    /// - `outbox:<name>` (ready): the relay's last round of each outbox succeeded (it reads
    ///   the outbox, or asks for its lease, every poll interval), and while events wait (as
    ///   last sampled) it moved (deleted relayed events or found none waiting) within
    ///   `observability.relay_stuck_after`, unless another process holds its lease;
    /// - `workers` (live): fewer than `observability.crash_loop_restarts` worker restarts in
    ///   the last minute;
    /// - `consumer` (live): the replica's router and workers run.
    pub async fn check(&self) -> Health {
        let obs = self.config.observability();
        let timeout = obs.probe_timeout();
        let mut health = Health::default();
        health.push(
            "transport",
            Probe::Ready,
            within(timeout, self.transport.ping())
                .await
                .map(|()| format!("{} connected", self.transport.name())),
        );
        for id in self.registry.replica_ids() {
            let Some(model) = self.registry.replica(&id) else {
                continue;
            };
            let handler = Arc::clone(model.handler());
            health.push(
                format!("database:{id}"),
                Probe::Ready,
                within(timeout, handler.check())
                    .await
                    .map(|()| "answers".to_owned()),
            );
        }
        // The relay reads its outbox every poll interval and the sampler counts it: a probe
        // asks neither again (a count over a large backlog could outlast the probe).
        for ((outbox, cqrs_ids), control) in &self.relays {
            let name = format!("outbox:{}", outbox.name());
            let status = control.status().clone();
            let still = status.moved.elapsed();
            let depth: u64 = cqrs_ids
                .iter()
                .map(|id| self.metrics.id(id).outbox_depth())
                .sum();
            let result = if let Some(error) = status.error {
                Err(format!(
                    "{depth} waiting; the relay's last round failed: {error}"
                ))
            } else if !status.leader {
                Ok(format!("{depth} waiting; another process relays it"))
            } else if depth > 0 && still > obs.relay_stuck_after() {
                Err(format!(
                    "{depth} events waiting and the relay has not moved for {:.0} s",
                    still.as_secs_f64()
                ))
            } else {
                Ok(format!("{depth} waiting"))
            };
            health.push(name, Probe::Ready, result);
        }
        let restarts = self.metrics.restarts_within(Duration::from_secs(60));
        let limit = obs.crash_loop_restarts() as usize;
        health.push(
            "workers",
            Probe::Live,
            if limit > 0 && restarts >= limit {
                Err(format!(
                    "{restarts} worker restarts in the last minute (crash loop)"
                ))
            } else {
                Ok(format!("{restarts} restarts in the last minute"))
            },
        );
        if let Some((queue, router, shards)) = &self.replica {
            let running = router.connected() && shards.iter().all(Addr::connected);
            health.push(
                "consumer",
                Probe::Live,
                if running {
                    Ok(format!("consuming {queue}"))
                } else {
                    Err(format!("the actors consuming {queue} stopped"))
                },
            );
        }
        health
    }
}

/// What the sampler reads.
struct Sampling {
    metrics: Arc<Metrics>,
    transport: TransportHandle,
    outboxes: Vec<Outboxed>,
    queue: Option<String>,
    timeout: Duration,
}

/// Reads the gauges that need a round trip: each outbox's depth per CQRS id, the replica
/// queue's counts; and hands the in-flight counts to the facade. A failed read leaves the
/// last value.
async fn sample(s: &Sampling) {
    for (outbox, ids) in &s.outboxes {
        match within(s.timeout, outbox.waiting()).await {
            Ok(waiting) => {
                for id in ids.iter() {
                    s.metrics
                        .set_outbox_depth(id, waiting.get(id).copied().unwrap_or(0));
                }
            }
            Err(e) => {
                tracing::debug!(outbox = %outbox.name(), error = %e, "could not sample the outbox depth")
            }
        }
    }
    if let Some(queue) = &s.queue {
        match within(s.timeout, s.transport.inspect(queue.clone())).await {
            Ok(stats) => s.metrics.set_queue(
                queue,
                QueueSnapshot {
                    ready: stats.ready,
                    parked: stats.parked,
                    dead_letters: stats.dead_letters,
                },
            ),
            Err(e) => tracing::debug!(queue = %queue, error = %e, "could not sample the queue"),
        }
    }
    s.metrics.sample_in_flight();
}

/// `fut`'s result, or an error after `timeout`; errors as text (for a health check).
async fn within<T>(timeout: Duration, fut: impl Future<Output = Result<T>>) -> Result<T, String> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {:.1} s", timeout.as_secs_f64())),
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
