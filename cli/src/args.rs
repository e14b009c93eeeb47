//! The command tree, flags after django-cqrs's `manage.py cqrs_*` commands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The standalone `cqrs` command: a configuration file and one subcommand.
#[derive(Debug, Parser)]
#[command(
    name = "cqrs",
    version,
    about = "cqrs-sync: run a replica from a configuration file, and the repair tools of \
             django-cqrs (bulk dump/load, sync, diff pipelines, dead letters)"
)]
pub struct Cli {
    /// The configuration file (TOML); `CQRS_*` variables override it.
    #[arg(
        short = 'c',
        long,
        global = true,
        env = "CQRS_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands; mount them in a service's own binary with `#[command(subcommand)]`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume and apply events until SIGINT/SIGTERM (a second signal exits at once).
    Consume(ConsumeArgs),
    /// Write a master table as a dump: line 1 the CQRS id, then one instance_data per line.
    BulkDump(BulkDumpArgs),
    /// Load a dump into a replica table, each line as a SAVE under the revision rules.
    BulkLoad(BulkLoadArgs),
    /// Re-publish rows of a master table as SYNC, to every replica or one queue.
    Sync(SyncArgs),
    /// Print the master's `[pk, revision]` pairs, for `diff-replica`.
    DiffMaster(DiffMasterArgs),
    /// Read `diff-master` output, print the pks this replica lacks or holds at another revision.
    DiffReplica(BatchArgs),
    /// Read `diff-replica` output, re-publish those rows as SYNC.
    DiffSync(DiffSyncArgs),
    /// Print this replica's pks, for `deleted-diff-master`.
    DeletedDiffReplica(DiffMasterArgs),
    /// Read `deleted-diff-replica` output, print the pks the master no longer has.
    DeletedDiffMaster(BatchArgs),
    /// Read `deleted-diff-master` output, delete those rows from the replica.
    DeletedSyncReplica(BatchArgs),
    /// Dead letters of this replica's queue: dump, retry or purge.
    DeadLetters(DeadLettersArgs),
    /// Print what `consume` declares, with message counts; `--delete` removes it.
    Topology(TopologyArgs),
}

/// `consume`.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Apply workers (default: `replica.workers` of the configuration).
    #[arg(short = 'w', long)]
    pub workers: Option<usize>,
    /// Only these CQRS ids (default: every replica of the configuration).
    #[arg(long = "cqrs-id", visible_alias = "cid", value_name = "ID")]
    pub cqrs_ids: Vec<String>,
}

/// `bulk-dump`.
#[derive(Debug, Args)]
pub struct BulkDumpArgs {
    /// The master's CQRS id.
    #[arg(long = "cqrs-id", visible_alias = "cid", value_name = "ID")]
    pub cqrs_id: String,
    /// The dump file, or `-` for stdout (default: `<cqrs id>.dump`).
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<String>,
    /// Rows per read.
    #[arg(short = 'b', long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub batch: u64,
    /// Overwrite an existing file.
    #[arg(short = 'f', long)]
    pub force: bool,
}

/// `bulk-load`.
#[derive(Debug, Args)]
pub struct BulkLoadArgs {
    /// The dump file, or `-` for stdin.
    #[arg(short = 'i', long, value_name = "FILE")]
    pub input: String,
    /// Delete every row of the table first.
    #[arg(long)]
    pub clear: bool,
    /// Rows per transaction.
    #[arg(short = 'b', long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub batch: u64,
}

/// `sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The master's CQRS id.
    #[arg(long = "cqrs-id", visible_alias = "cid", value_name = "ID")]
    pub cqrs_id: String,
    /// Which rows: a JSON object of lookups (`{"id__in": [1, 2]}`); `{}` for all rows.
    #[arg(short = 'f', long, value_name = "FILTER")]
    pub filter: Option<String>,
    /// Send to this replica queue only (default: every replica).
    #[arg(short = 'q', long)]
    pub queue: Option<String>,
    /// Rows per read.
    #[arg(short = 'b', long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub batch: u64,
}

/// `diff-master` and `deleted-diff-replica`.
#[derive(Debug, Args)]
pub struct DiffMasterArgs {
    /// The CQRS id.
    #[arg(long = "cqrs-id", visible_alias = "cid", value_name = "ID")]
    pub cqrs_id: String,
    /// Which rows: a JSON object of lookups; all rows by default.
    #[arg(short = 'f', long, value_name = "FILTER")]
    pub filter: Option<String>,
    /// Rows per line.
    #[arg(short = 'b', long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=30_000))]
    pub batch: u64,
}

/// Commands that read a pipeline from stdin.
#[derive(Debug, Args)]
pub struct BatchArgs {
    /// Keys per database round trip.
    #[arg(short = 'b', long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=30_000))]
    pub batch: u64,
}

/// `diff-sync`.
#[derive(Debug, Args)]
pub struct DiffSyncArgs {
    /// Send to this queue instead of the one the input names.
    #[arg(short = 'q', long)]
    pub queue: Option<String>,
    /// Rows per read.
    #[arg(short = 'b', long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=30_000))]
    pub batch: u64,
}

/// `dead-letters`.
#[derive(Debug, Args)]
pub struct DeadLettersArgs {
    /// What to do with them.
    #[command(subcommand)]
    pub action: DeadLetterAction,
}

/// `dead-letters dump|retry|purge`.
#[derive(Debug, Subcommand)]
pub enum DeadLetterAction {
    /// Print each dead letter as one JSON line (body, reason, error, routing key, retries);
    /// they stay in the queue.
    Dump(DeadLetterFilter),
    /// Re-publish them to the queue with `retries` reset; each leaves the dead-letter queue
    /// once its copy is confirmed.
    Retry(DeadLetterFilter),
    /// Delete them, and print how many went.
    Purge(DeadLetterIds),
}

/// Which dead letters.
#[derive(Debug, Args)]
pub struct DeadLetterFilter {
    /// Only this CQRS id's.
    #[arg(long = "cqrs-id", visible_alias = "cid", value_name = "ID")]
    pub cqrs_id: Option<String>,
    /// At most this many.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
}

/// Which dead letters to purge.
#[derive(Debug, Args)]
pub struct DeadLetterIds {
    /// Only this CQRS id's.
    #[arg(long = "cqrs-id", visible_alias = "cid", value_name = "ID")]
    pub cqrs_id: Option<String>,
}

/// `topology`.
#[derive(Debug, Args)]
pub struct TopologyArgs {
    /// Delete the queue's objects instead (refused while they hold messages).
    #[arg(long)]
    pub delete: bool,
    /// With `--delete`: delete even when they hold messages (which are lost).
    #[arg(long, requires = "delete")]
    pub force: bool,
}
