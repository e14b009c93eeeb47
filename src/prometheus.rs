//! Prometheus export of the figures and an HTTP endpoint for scrapers and Kubernetes probes
//! (feature `prometheus`).
//!
//! [`install`] makes `metrics-exporter-prometheus` the process's recorder, with histogram
//! buckets for the latency and batch-size figures; call it before starting the system (the
//! figures of each CQRS id are registered at start). [`serve`] answers on one address:
//!
//! | path | answer |
//! |---|---|
//! | `GET /metrics` | the text exposition format (`text/plain; version=0.0.4`) |
//! | `GET /healthz` | 200 while the system is live, 503 otherwise; the checks as JSON |
//! | `GET /readyz` | 200 while it is ready, 503 otherwise; the checks as JSON |
//!
//! A service that already runs an HTTP server can mount the same answers itself:
//! [`PrometheusHandle::render`] for `/metrics` and [`CqrsSystem::health`] for the probes.
//!
//! ```no_run
//! use cqrs_sync::prelude::*;
//! # async fn run() -> cqrs_sync::Result<()> {
//! let metrics = cqrs_sync::prometheus::install()?;
//! let system = CqrsSystem::builder()
//!     .config(CqrsConfig::load(None)?)
//!     .replica(ReplicaModel::new("customer", MemoryTable::new()))
//!     .start()
//!     .await?;
//! let endpoint = cqrs_sync::prometheus::serve("0.0.0.0:9090", metrics, system.health_probe()).await?;
//! println!("metrics on {}", endpoint.local_addr());
//! # system.shutdown().await
//! # }
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use cqrs_actors::stats::{BATCH_BUCKETS, SECONDS_BUCKETS};
use cqrs_actors::{Error, ErrorKind, Health, HealthProbe, Result};
pub use metrics_exporter_prometheus::PrometheusHandle;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Longest request head the endpoint reads; probes and scrapers send a few hundred bytes.
const MAX_REQUEST: usize = 8 * 1024;

/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Installs the Prometheus recorder for the whole process, with buckets for the
/// `*_seconds` histograms and `cqrs_apply_batch_size`, and the description of every figure.
/// Fails when a recorder is already installed.
pub fn install() -> Result<PrometheusHandle> {
    let config = |e: metrics_exporter_prometheus::BuildError| {
        Error::new(
            ErrorKind::Config,
            format!("the Prometheus recorder cannot be installed: {e}"),
        )
    };
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("cqrs_apply_batch_size".to_owned()),
                BATCH_BUCKETS,
            )
        })
        .map_err(config)?
        .install_recorder()
        .map_err(config)
        .inspect(|_| cqrs_actors::stats::describe())
}

/// The running endpoint; it stops when dropped.
#[derive(Debug)]
pub struct Endpoint {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Endpoint {
    /// The address it listens on (the port the system chose for `:0`).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Listens on `addr` and answers `/metrics`, `/healthz` and `/readyz` (see the module docs).
/// Call it inside the actix system the [`CqrsSystem`](crate::CqrsSystem) runs in.
pub async fn serve(addr: &str, metrics: PrometheusHandle, health: HealthProbe) -> Result<Endpoint> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        Error::with_source(
            ErrorKind::Config,
            format!("the metrics endpoint cannot listen on {addr}"),
            e,
        )
    })?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::with_source(ErrorKind::Config, "the metrics endpoint's address", e))?;
    tracing::info!(addr = %local, "metrics endpoint listening");
    let task = actix::spawn(async move {
        let mut upkeep = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let (metrics, health) = (metrics.clone(), health.clone());
                        actix::spawn(async move {
                            if let Err(e) = answer(stream, &metrics, &health).await {
                                tracing::debug!(error = %e, "metrics endpoint request failed");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics endpoint accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = upkeep.tick() => metrics.run_upkeep(),
            }
        }
    });
    Ok(Endpoint { addr: local, task })
}

/// Reads one request head and answers it; the connection closes after the answer.
async fn answer(
    mut stream: TcpStream,
    metrics: &PrometheusHandle,
    health: &HealthProbe,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let complete = tokio::time::timeout(READ_TIMEOUT, async {
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok::<bool, std::io::Error>(false);
            }
            head.extend_from_slice(&buf[..n]);
            if head.windows(4).any(|w| w == b"\r\n\r\n") {
                return Ok(true);
            }
            if head.len() > MAX_REQUEST {
                return Ok(false);
            }
        }
    })
    .await
    .unwrap_or(Ok(false))?;
    let (status, content_type, body) = if complete {
        route(&head, metrics, health).await
    } else {
        (400, "text/plain", "bad request\n".to_owned())
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Bad Request",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
         connection: close\r\ncache-control: no-store\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

async fn route(
    head: &[u8],
    metrics: &PrometheusHandle,
    health: &HealthProbe,
) -> (u16, &'static str, String) {
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let path = target.split(|b| *b == b'?').next().unwrap_or_default();
    if method != b"GET" && method != b"HEAD" {
        return (405, "text/plain", "only GET\n".to_owned());
    }
    match path {
        b"/metrics" => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        b"/healthz" => probe(&health.check().await, Health::live),
        b"/readyz" => probe(&health.check().await, Health::ready),
        _ => (404, "text/plain", "not found\n".to_owned()),
    }
}

fn probe(health: &Health, passes: fn(&Health) -> bool) -> (u16, &'static str, String) {
    let ok = passes(health);
    let body = serde_json::json!({
        "status": if ok { "ok" } else { "failing" },
        "live": health.live(),
        "ready": health.ready(),
        "checks": health.checks,
    });
    (
        if ok { 200 } else { 503 },
        "application/json",
        format!("{body}\n"),
    )
}
