//! The chaos run: a master process and three competing replica processes over RabbitMQ or
//! Redis, with PostgreSQL on both sides, while faults are injected on a seeded schedule. At the
//! end the harness waits for the replica to converge and compares it with the master row by
//! row: **lost** (a master row missing on the replica, or a row the master deleted still
//! there) and **stale** (a row whose revision or data differ) must both be 0.
//!
//! ```text
//! cargo test --all-features --test chaos                       # short mode (CI): both transports, one seed
//! cargo test --all-features --test chaos -- --long             # 100,000 events, 5 seeds per transport
//! cargo test --all-features --test chaos -- --transport redis --seed 7 --events 20000
//! ```
//!
//! The faults: `kill -9` of a replica or of the master process (restarted after a pause),
//! broker-side connection kills (`rabbitmqctl close_all_connections` in the run's virtual host,
//! `CLIENT KILL` on Redis), a restart of the broker (Redis: the run's own `redis-server`, with
//! an fsynced append-only file, killed and started again; RabbitMQ: see [`faults`]),
//! PostgreSQL backends of the run terminated, the replica table locked, and the replica table
//! refusing writes for a while (a trigger raising a transient error).
//!
//! The master writes in batches of one transaction each (the rows, their outbox events and the
//! run's progress), so a master killed mid-batch starts again from its last committed op. New
//! rows take fresh ids, as an auto-increment key does; some rows are hot (written often and
//! never deleted), the others are updated and deleted at random.

// A harness, not a library: a failed unwrap is a failed run.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[path = "../support/mod.rs"]
#[allow(unused)]
mod support;

mod faults;
mod master;
mod replica;
mod run;

use std::time::Duration;

/// What one run does.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub transport: Transport,
    pub seed: u64,
    pub events: u64,
    /// The pause between two faults, drawn from this range (milliseconds).
    pub fault_every: (u64, u64),
    /// How long the replica may take to converge after the master's last commit.
    pub patience: Duration,
}

/// The broker of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    RabbitMq,
    Redis,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Self::RabbitMq => "rabbitmq",
            Self::Redis => "redis",
        }
    }
}

/// The arguments after `--`.
struct Args {
    long: bool,
    transports: Vec<Transport>,
    seeds: Vec<u64>,
    events: Option<u64>,
}

fn parse_args() -> Args {
    let mut args = Args {
        long: std::env::var("CQRS_CHAOS").is_ok_and(|v| v == "long"),
        transports: vec![Transport::RabbitMq, Transport::Redis],
        seeds: Vec::new(),
        events: None,
    };
    let mut count = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .unwrap_or_else(|| panic!("{name} needs a value"))
                .to_owned()
        };
        match arg.as_str() {
            "--long" => args.long = true,
            "--transport" => {
                args.transports = match value("--transport").as_str() {
                    "rabbitmq" => vec![Transport::RabbitMq],
                    "redis" => vec![Transport::Redis],
                    "both" => vec![Transport::RabbitMq, Transport::Redis],
                    other => panic!("--transport rabbitmq|redis|both, not {other}"),
                }
            }
            "--seed" => args.seeds.push(
                value("--seed")
                    .parse()
                    .unwrap_or_else(|e| panic!("--seed: {e}")),
            ),
            "--seeds" => {
                count = Some(
                    value("--seeds")
                        .parse::<u64>()
                        .unwrap_or_else(|e| panic!("--seeds: {e}")),
                );
            }
            "--events" => {
                args.events = Some(
                    value("--events")
                        .parse()
                        .unwrap_or_else(|e| panic!("--events: {e}")),
                );
            }
            // What the test runner passes to every test binary.
            "--nocapture" | "--quiet" | "-q" | "--include-ignored" | "--ignored" => {}
            other if other.starts_with("--test-threads") || other.starts_with("--color") => {}
            other if other.starts_with('-') => panic!("unknown argument {other}"),
            _ => {}
        }
    }
    if args.seeds.is_empty() {
        // A new seed each run, printed so that a failure can be run again.
        let base = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs());
        let n = count.unwrap_or(if args.long { 5 } else { 1 });
        args.seeds = (0..n).map(|i| base.wrapping_add(i * 7919)).collect();
    }
    args
}

fn main() {
    // This binary started again as a master or replica process of a run.
    if let Ok(role) = std::env::var(run::ROLE) {
        match role.as_str() {
            "master" => master::main(),
            "replica" => replica::main(),
            other => panic!("unknown role {other}"),
        }
        return;
    }
    let args = parse_args();
    let mut reports = Vec::new();
    for &transport in &args.transports {
        for &seed in &args.seeds {
            let plan = if args.long {
                Plan {
                    transport,
                    seed,
                    events: args.events.unwrap_or(100_000),
                    fault_every: (500, 2_500),
                    patience: Duration::from_secs(300),
                }
            } else {
                Plan {
                    transport,
                    seed,
                    events: args.events.unwrap_or(6_000),
                    fault_every: (300, 1_200),
                    patience: Duration::from_secs(120),
                }
            };
            let report = run::run(&plan);
            println!("{report}");
            reports.push(report);
        }
    }
    println!("\n{}", run::Report::table(&reports));
    let failed: Vec<_> = reports.iter().filter(|r| !r.holds()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} runs lost or left stale rows: {failed:#?}",
        failed.len(),
        reports.len()
    );
}
