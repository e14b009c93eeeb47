//! End-to-end pipeline on the memory transport with a no-op replica: master publishes through
//! the Producer (confirmed), the replica routes, shards over the workers, applies and acks.
//! Prints events/s next to the target.
//!
//! Each figure is measured in turn, in child processes: quiet (no tracing subscriber, no
//! metrics recorder) and observed (tracing at `info`, and with `--features prometheus` the
//! Prometheus recorder scraped every second); the observed rate is printed as a share of the
//! quiet one. With `--features otel` the observed runs also make every span an OpenTelemetry
//! span, and a third, traced run writes every event inside a span of its own, so that every
//! message carries a sampled `traceparent` and every apply continues its trace: the cost of
//! tracing all traffic rather than a sample of it.
//!
//! `cargo bench --bench pipeline [--features prometheus,otel]` (`PIPELINE_EVENTS=N` to change the
//! run size).

#![allow(clippy::print_stdout, clippy::unwrap_used)] // a bench prints its figures and may panic

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cqrs_sync::prelude::*;
use cqrs_sync::transports::memory::MemoryBroker;
use serde_json::{Value, json};

const TARGET: f64 = 100_000.0;

fn row(id: u64) -> JsonObject {
    let Value::Object(map) = json!({
        "id": id, "cqrs_revision": 0, "cqrs_updated": "2026-11-27 17:08:25.074040+00:00",
        "name": "Ada Lovelace", "email": "ada@example.com", "rating": "9.99", "tags": ["a", "b"],
    }) else {
        unreachable!()
    };
    map
}

async fn run(events: u64, workers: usize, traced: bool) -> (f64, Duration) {
    let (transport, _broker) = MemoryBroker::default().start_transport();
    let applied = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&applied);
    let config = CqrsConfig::default()
        .with_queue(format!("bench_{workers}"))
        .with_workers(workers)
        .with_prefetch(2000)
        .with_batch_size(200);
    let system = CqrsSystem::builder()
        .config(config)
        .master(MasterModel::new("author"))
        .replica(ReplicaModel::new(
            "author",
            handler_fn(move |_: ReplicaEvent| {
                counter.fetch_add(1, Ordering::Relaxed);
                std::future::ready(Ok(Applied::Updated))
            }),
        ))
        .transport(transport)
        .start()
        .await
        .unwrap();
    let publisher = system.publisher();
    let start = Instant::now();
    let mut pending = Vec::with_capacity(1024);
    for id in 0..events {
        if traced {
            // A service's write span: the message carries its context to the replica.
            let span = tracing::info_span!("write", id);
            pending.push(span.in_scope(|| publisher.save("author", row(id))));
        } else {
            pending.push(publisher.save("author", row(id)));
        }
        if pending.len() == 1024 {
            for f in pending.drain(..) {
                f.await.unwrap();
            }
        }
    }
    for f in pending.drain(..) {
        f.await.unwrap();
    }
    while applied.load(Ordering::Relaxed) < events {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = start.elapsed();
    system.shutdown().await.unwrap();
    (events as f64 / elapsed.as_secs_f64(), elapsed)
}

/// How a child run is observed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// No recorder and no tracing subscriber: the figures per CQRS id are kept, nothing reads
    /// them.
    Quiet,
    /// A tracing subscriber at `info` (formatting without colours into a sink, as a service
    /// logging to a collector does; with `otel`, an OpenTelemetry layer too) and, with
    /// `prometheus`, the Prometheus recorder scraped every second.
    Observed,
    /// Observed, and every event written in a span whose context its message carries (with
    /// `otel`: every message's apply is an OpenTelemetry span of the write's trace).
    Traced,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Quiet => "quiet",
            Mode::Observed => "observed",
            Mode::Traced => "traced",
        }
    }
}

/// Installs what `mode` observes with, in this (child) process.
fn observe(mode: Mode) {
    if mode == Mode::Quiet {
        return;
    }
    use tracing_subscriber::layer::SubscriberExt;
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(std::io::sink),
        );
    // With `otel`, every span is an OpenTelemetry span too and each message carries its
    // `traceparent`; the spans end in a provider without an exporter.
    #[cfg(feature = "otel")]
    let subscriber = {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "pipeline-bench");
        std::mem::forget(provider);
        subscriber.with(tracing_opentelemetry::layer().with_tracer(tracer))
    };
    tracing::subscriber::set_global_default(subscriber).unwrap();
    #[cfg(feature = "prometheus")]
    {
        let handle = cqrs_sync::prometheus::install().unwrap();
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(1));
                let _ = handle.render().len();
            }
        });
    }
}

/// Runs one measurement in a child process of `mode`, so that each mode has the process's
/// recorder and subscriber to itself; answers its events/s.
fn child(mode: Mode, events: u64, workers: usize) -> f64 {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env(
            "CQRS_PIPELINE_CHILD",
            format!("{} {events} {workers}", mode.name()),
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("rate "))
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "child {}: {text} {}",
                mode.name(),
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

fn main() {
    if let Ok(spec) = std::env::var("CQRS_PIPELINE_CHILD") {
        let mut parts = spec.split(' ');
        let mode = match parts.next() {
            Some("observed") => Mode::Observed,
            Some("traced") => Mode::Traced,
            _ => Mode::Quiet,
        };
        let events: u64 = parts.next().unwrap().parse().unwrap();
        let workers: usize = parts.next().unwrap().parse().unwrap();
        observe(mode);
        let rate = actix::System::new()
            .block_on(run(events, workers, mode == Mode::Traced))
            .0;
        println!("rate {rate}");
        return;
    }
    let events: u64 = std::env::var("PIPELINE_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    println!(
        "pipeline: memory transport, no-op apply, {events} events, publish -> confirm -> route -> apply -> ack"
    );
    for workers in [1, 4] {
        // Quiet and observed in turn, so that both see the same machine.
        let (mut quiet, mut observed, mut traced) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..3 {
            quiet.push(child(Mode::Quiet, events, workers));
            observed.push(child(Mode::Observed, events, workers));
            if cfg!(feature = "otel") {
                traced.push(child(Mode::Traced, events, workers));
            }
        }
        let (q, o) = (median(quiet.clone()), median(observed.clone()));
        println!(
            "workers={workers}: {q:>9.0} events/s quiet (median of 3; min {:.0}, max {:.0})   target >= {TARGET:.0}   {}",
            quiet.iter().copied().fold(f64::INFINITY, f64::min),
            quiet.iter().copied().fold(0.0, f64::max),
            if q >= TARGET { "ok" } else { "BELOW TARGET" }
        );
        println!(
            "workers={workers}: {o:>9.0} events/s observed ({}) = {:.1} % of quiet   ceiling: >= 90 %   {}",
            match (cfg!(feature = "prometheus"), cfg!(feature = "otel")) {
                (true, true) => "tracing at info + OpenTelemetry spans + Prometheus recorder",
                (true, false) => "tracing at info + Prometheus recorder",
                (false, true) => "tracing at info + OpenTelemetry spans",
                (false, false) => "tracing at info; --features prometheus,otel for the rest",
            },
            o / q * 100.0,
            if o >= 0.9 * q {
                "ok"
            } else {
                "OVER 10 % OVERHEAD"
            }
        );
        if !traced.is_empty() {
            let t = median(traced);
            println!(
                "workers={workers}: {t:>9.0} events/s traced (as observed, every message in a sampled trace) = {:.1} % of quiet",
                t / q * 100.0
            );
        }
    }
}
