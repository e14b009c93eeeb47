//! The `cqrs` command of cqrs-sync: django-cqrs's `manage.py cqrs_*` commands, twice.
//!
//! - **Standalone**: the `cqrs` binary (facade feature `cli`) driven by a configuration file
//!   alone ([`config`](crate::Tools::from_file)): a replica of any table without writing Rust,
//!   its columns read from the database.
//! - **Embedded**: the same [`Command`] tree mounted in a service's own binary, run over
//!   [`Tools`] built in code with the service's tables, hooks and serializers.
//!
//! ```no_run
//! use clap::Parser;
//! # async fn run(tools: cqrs_cli::Tools) {
//! #[derive(Parser)]
//! enum Admin {
//!     /// The replication tools.
//!     #[command(subcommand)]
//!     Cqrs(cqrs_cli::Command),
//! }
//! let Admin::Cqrs(command) = Admin::parse();
//! let code = cqrs_cli::run(command, &tools).await;
//! std::process::exit(code);
//! # }
//! ```
//!
//! Line formats are django-cqrs's (WIRE.md section 7), so pipelines mix the two. stdout carries
//! data only; progress and summaries go to stderr. Exit codes: 0 success, 1 failure at run
//! time, 2 usage error.

mod args;
mod commands;
mod config;
mod error;
mod io;
mod progress;
mod tools;

pub use args::{
    BatchArgs, BulkDumpArgs, BulkLoadArgs, Cli, Command, ConsumeArgs, DeadLetterAction,
    DeadLetterFilter, DeadLetterIds, DeadLettersArgs, DiffMasterArgs, DiffSyncArgs, SyncArgs,
    TopologyArgs,
};
pub use commands::run_command;
pub use error::{CliError, CliResult};
pub use tools::Tools;

/// Runs `command` over `tools`, prints a failure on stderr, and answers the exit code (0, 1
/// or 2).
pub async fn run(command: Command, tools: &Tools) -> i32 {
    match run_command(command, tools).await {
        Ok(()) => 0,
        Err(e) => {
            io::note(&format!("error: {e}"));
            e.exit_code()
        }
    }
}

/// The standalone `cqrs` program: parses the arguments (usage errors exit 2), reads the
/// configuration file, runs the command in an actix system and exits with its code.
pub fn main() -> ! {
    use clap::Parser;
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    init_logging();
    let code = actix_rt::System::new().block_on(async move {
        match Tools::from_file(cli.config.as_deref()).await {
            Ok(tools) => run(cli.command, &tools).await,
            Err(e) => {
                io::note(&format!("error: {e}"));
                e.exit_code()
            }
        }
    });
    std::process::exit(code)
}

/// Logs to stderr, filtered by `RUST_LOG` (default: warnings; lapin's only from errors, as it
/// logs whole message bodies at warning).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,lapin=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}
