//! The commands, one file per family:
//! - `consume`: the replica side until a signal;
//! - `dump`: bulk dump and bulk load;
//! - `sync`: SYNC by filter;
//! - `diff`: the revision and deletion pipelines;
//! - `dead_letters`: dump, retry, purge;
//! - `topology`: what `consume` declares, and its deletion.

mod consume;
mod dead_letters;
mod diff;
mod dump;
mod sync;
mod topology;

use cqrs_orm_adapters::Filter;

use crate::args::Command;
use crate::error::{CliError, CliResult};
use crate::tools::Tools;

/// Runs one command over `tools`.
pub async fn run_command(command: Command, tools: &Tools) -> CliResult {
    match command {
        Command::Consume(args) => consume::consume(args, tools).await,
        Command::BulkDump(args) => dump::bulk_dump(args, tools).await,
        Command::BulkLoad(args) => dump::bulk_load(args, tools).await,
        Command::Sync(args) => sync::sync(args, tools).await,
        Command::DiffMaster(args) => diff::diff_master(args, tools).await,
        Command::DiffReplica(args) => diff::diff_replica(args, tools).await,
        Command::DiffSync(args) => diff::diff_sync(args, tools).await,
        Command::DeletedDiffReplica(args) => diff::deleted_diff_replica(args, tools).await,
        Command::DeletedDiffMaster(args) => diff::deleted_diff_master(args, tools).await,
        Command::DeletedSyncReplica(args) => diff::deleted_sync_replica(args, tools).await,
        Command::DeadLetters(args) => dead_letters::dead_letters(args, tools).await,
        Command::Topology(args) => topology::topology(args, tools).await,
    }
}

/// A `-f` filter, or every row.
fn parse_filter(filter: Option<&str>) -> CliResult<Filter> {
    match filter {
        Some(text) => text
            .parse()
            .map_err(|e: cqrs_actors::Error| CliError::usage(e.message().to_owned())),
        None => Ok(Filter::all()),
    }
}

/// A failure while reading a pipeline's input, naming the line.
fn bad_line(number: u64, message: impl std::fmt::Display) -> CliError {
    CliError::Runtime(cqrs_actors::Error::invalid_data(format!(
        "line {number}: {message}"
    )))
}
