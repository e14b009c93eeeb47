//! Start and stop: the running system shared with the HTTP handlers, the HTTP server run
//! until SIGTERM or Ctrl-C, and the order of a graceful stop (HTTP first, so that no request
//! writes while the system shuts down; then the system).

use std::sync::Arc;

use actix_web::dev::Server;
use cqrs_sync::{CqrsSystem, MetricsSnapshot};
use tokio::sync::RwLock;

/// The running [`CqrsSystem`], for the handlers to read its counters while the service's
/// `main` keeps the right to shut it down. Cheap to clone.
#[derive(Clone)]
pub struct SystemSlot(Arc<RwLock<Option<CqrsSystem>>>);

impl SystemSlot {
    /// Holds `system` until [`take`](Self::take).
    pub fn new(system: CqrsSystem) -> Self {
        Self(Arc::new(RwLock::new(Some(system))))
    }

    /// The system's counters, or `None` once it is shutting down.
    pub async fn metrics(&self) -> Option<MetricsSnapshot> {
        self.0.read().await.as_ref().map(CqrsSystem::metrics)
    }

    /// The system, once no handler reads it any more; `None` if taken before.
    pub async fn take(&self) -> Option<CqrsSystem> {
        self.0.write().await.take()
    }
}

/// Waits for SIGTERM or SIGINT (Ctrl-C) and answers which came.
pub async fn stop_requested() -> std::io::Result<&'static str> {
    #[cfg(unix)]
    {
        use actix_rt::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => Ok("SIGTERM"),
            interrupted = actix_rt::signal::ctrl_c() => interrupted.map(|()| "SIGINT"),
        }
    }
    #[cfg(not(unix))]
    {
        actix_rt::signal::ctrl_c().await.map(|()| "Ctrl-C")
    }
}

/// Runs `server` (built with `disable_signals()`: the signals are handled here, and bound to
/// `addr`, or the error of binding it) until SIGTERM or Ctrl-C, then stops it gracefully: it
/// stops accepting, and requests in flight finish within its shutdown timeout. Fails if it
/// could not bind or stopped on its own.
pub async fn serve_until_stopped(
    server: std::io::Result<Server>,
    addr: &str,
) -> std::io::Result<()> {
    let server =
        server.map_err(|e| std::io::Error::new(e.kind(), format!("HTTP_ADDR {addr}: {e}")))?;
    tracing::info!(addr, "listening");
    let handle = server.handle();
    let mut running = actix_rt::spawn(server);
    tokio::select! {
        signal = stop_requested() => {
            let signal = signal?;
            tracing::info!(signal, "stopping: the HTTP server first");
            handle.stop(true).await;
            running.await.map_err(std::io::Error::other)?
        }
        ended = &mut running => {
            ended.map_err(std::io::Error::other)??;
            Err(std::io::Error::other("the HTTP server stopped by itself"))
        }
    }
}
