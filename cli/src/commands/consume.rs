//! `consume` (django-cqrs `cqrs_consume`): the replica side until SIGINT or SIGTERM.

use crate::args::ConsumeArgs;
use crate::error::{CliError, CliResult};
use crate::io::note;
use crate::tools::Tools;

/// Consumes the given replica ids (all by default) with `-w` workers. The first SIGINT or
/// SIGTERM shuts down gracefully: consuming stops, what is in flight is applied and
/// acknowledged, and the command exits 0. A second signal exits at once (130).
pub(super) async fn consume(args: ConsumeArgs, tools: &Tools) -> CliResult {
    let ids = if args.cqrs_ids.is_empty() {
        tools.replica_ids()
    } else {
        for id in &args.cqrs_ids {
            tools.replica_table(id)?;
        }
        args.cqrs_ids.clone()
    };
    if ids.is_empty() {
        return Err(CliError::usage(
            "the configuration has no replica tables to consume ([replicas.<cqrs id>])",
        ));
    }
    let queue = tools.queue()?.to_owned();
    let mut config = tools.config().clone();
    if let Some(workers) = args.workers {
        if workers == 0 {
            return Err(CliError::usage("-w/--workers must be at least 1"));
        }
        config = config.with_workers(workers);
    }
    let mut signals = Signals::new()?;
    let system = tools.start_system(config, &ids).await?;
    note(&format!(
        "consuming {} from queue {queue} (SIGINT/SIGTERM to stop)",
        ids.join(", ")
    ));
    let signal = signals.next().await;
    note(&format!(
        "{signal}: finishing what is in flight (again to exit at once)"
    ));
    actix_rt::spawn(async move {
        let again = signals.next().await;
        note(&format!("{again}: exiting now"));
        std::process::exit(130);
    });
    system.shutdown().await?;
    note("stopped");
    Ok(())
}

/// SIGINT and SIGTERM.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> CliResult<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// The name of the next signal.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}
