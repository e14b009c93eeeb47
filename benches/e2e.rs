//! The whole path between two services, next to its ceilings measured in the same run.
//!
//! ```text
//! cargo bench --bench e2e --features postgres,rabbitmq,redis -- \
//!     [--transport rabbitmq|redis|both] [--events N] [--backlog N] [--row-bytes B] \
//!     [--batch N] [--write-batch N] [--writers N] [--rate R] [--lag-seconds S] \
//!     [--consumers N] [--rounds N] [--prefetch N] [--window N] [--json FILE]
//! ```
//!
//! Defaults: 100,000 events of rows of about 300 bytes, replica batches of 1000 (prefetch
//! twice that), master transactions of 100 rows from 2 writers, a publish window of 1000 (the
//! default `master.publish_window`), 2,000 events/s for 10 s, one consumer, 3 rounds.
//! `CQRS_BENCH_AMQP_URL` and `CQRS_BENCH_REDIS_URL` name other brokers.
//!
//! For each transport (both unless `--transport` names one), in one run:
//!
//! 1. **Lag.** The master (this process) writes at `--rate` events/s (a transaction every
//!    10 ms) for `--lag-seconds` (default 10) through a `MasterTable` whose outbox its system
//!    relays; `--consumers` replica processes (this binary again) apply the events with a
//!    `ReplicaTable` into their own PostgreSQL schema (one worker, batches of `--batch`) and
//!    record, for every event, their commit time minus the row's `cqrs_updated` (set in the
//!    master's writing transaction). Percentiles.
//! 2. **Raw ceilings**, then the master alone. The broker alone: raw lapin or redis-rs
//!    publishing the same encoded events with confirms (a window of `--window`, to the queue by
//!    the default exchange; Redis: pipelines of 1000 `XADD`s) while a consumer on its own
//!    connection reads and acknowledges them from the same queue, no database. The database
//!    alone: the same rows upserted in batches of `--batch` (`INSERT ... ON CONFLICT DO
//!    UPDATE ... WHERE revision is older`, bound values, one statement per transaction, one
//!    connection per consumer) into the same PostgreSQL, no broker. Both on at most 200,000
//!    events. The master alone: the same rows through a `MasterTable` and its outbox, relay
//!    off: what bounds the path when the ceilings are far above it.
//! 3. **End to end.** The master writes `--events` rows (`insert_many` of `--write-batch` rows
//!    per transaction, `--writers` at once) while its relay publishes them and the replicas
//!    apply them. Events/s from the first write to the last replica commit. Phases 2 and 3
//!    alternate for `--rounds` rounds (default 3); medians.
//! 4. **Drain.** With the replicas stopped the master writes `--backlog` rows (default
//!    `--events`) until all are confirmed by the broker (that rate is printed: the relay
//!    working through a large outbox); then the replicas start and drain them. Their peak RSS
//!    (`VmHWM`) and the drain rate.
//! 5. **Ratio**: end to end over the lower of the two ceilings.
//!
//! ```text
//! cargo bench --bench e2e --features postgres,rabbitmq,redis -- --events 100000 --backlog 1000000
//! ```
//!
//! Every run works in PostgreSQL schemas, a RabbitMQ exchange and a Redis key space of its own
//! and removes them at the end. The figures go to stdout as a table and, with `--json`, to a
//! file.

#![allow(clippy::print_stdout, clippy::print_stderr, clippy::unwrap_used)] // a bench prints and may panic

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cqrs_sync::orm::{MasterTable, Outbox, ReplicaTable};
use cqrs_sync::prelude::*;
use cqrs_sync::transport::Declare;
use cqrs_sync::transports::rabbitmq::{RabbitMqConfig, RabbitMqTransport};
use cqrs_sync::transports::redis::{RedisConfig, RedisTransport};
use cqrs_sync::{ReplicaEvent, TransportHandle};
use futures_util::StreamExt;
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Schema, Statement,
};
use serde_json::Value;

#[path = "support/amqp_publish.rs"]
mod amqp_publish;
#[path = "support/book.rs"]
mod book;
#[path = "support/proc.rs"]
mod proc;
#[path = "support/redis_reply.rs"]
mod redis_reply;

use amqp_publish::publish_confirmed;
use redis_reply::read_and_ack;

/// The master and the replicas allocate with mimalloc, as a service on this path should: with
/// glibc's malloc a third of the master's time goes to allocating and freeing (see the README).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

const PG: &str = "postgres://postgres@127.0.0.1:5432/test";
const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const REDIS: &str = "redis://127.0.0.1:6379/0";
/// Most events a ceiling measures.
const CEILING_MAX: usize = 200_000;
/// The role variable: set, this binary is a replica process.
const ROLE: &str = "CQRS_E2E_ROLE";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    RabbitMq,
    Redis,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::RabbitMq => "rabbitmq",
            Kind::Redis => "redis",
        }
    }

    fn url(self) -> String {
        let var = match self {
            Kind::RabbitMq => "CQRS_BENCH_AMQP_URL",
            Kind::Redis => "CQRS_BENCH_REDIS_URL",
        };
        std::env::var(var).unwrap_or_else(|_| match self {
            Kind::RabbitMq => AMQP.to_owned(),
            Kind::Redis => REDIS.to_owned(),
        })
    }
}

/// The command line.
#[derive(Clone, Debug)]
struct Args {
    transports: Vec<Kind>,
    events: usize,
    backlog: Option<usize>,
    row_bytes: usize,
    batch: usize,
    write_batch: usize,
    writers: usize,
    rate: u32,
    lag_seconds: u64,
    consumers: usize,
    rounds: usize,
    prefetch: Option<u32>,
    /// Unconfirmed publishes: the relay's window and the raw RabbitMQ publisher's.
    window: usize,
    json: Option<PathBuf>,
}

impl Args {
    fn parse() -> BenchResult<Self> {
        let mut args = Args {
            transports: vec![Kind::RabbitMq, Kind::Redis],
            events: 100_000,
            backlog: None,
            row_bytes: 300,
            batch: 1000,
            write_batch: 100,
            writers: 2,
            rate: 2000,
            lag_seconds: 10,
            consumers: 1,
            rounds: 3,
            prefetch: None,
            window: 1000,
            json: None,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            if flag == "--bench" {
                continue; // cargo bench's own
            }
            let mut value = || -> BenchResult<String> {
                it.next()
                    .ok_or_else(|| format!("{flag} needs a value").into())
            };
            match flag.as_str() {
                "--transport" => {
                    args.transports = match value()?.as_str() {
                        "rabbitmq" => vec![Kind::RabbitMq],
                        "redis" => vec![Kind::Redis],
                        "both" => vec![Kind::RabbitMq, Kind::Redis],
                        other => return Err(format!("unknown transport {other:?}").into()),
                    }
                }
                "--events" => args.events = value()?.parse()?,
                "--backlog" => args.backlog = Some(value()?.parse()?),
                "--row-bytes" => args.row_bytes = value()?.parse()?,
                "--batch" => args.batch = value()?.parse()?,
                "--write-batch" => args.write_batch = value()?.parse()?,
                "--writers" => args.writers = value()?.parse()?,
                "--rate" => args.rate = value()?.parse()?,
                "--lag-seconds" => args.lag_seconds = value()?.parse()?,
                "--consumers" => args.consumers = value()?.parse()?,
                "--rounds" => args.rounds = value()?.parse()?,
                "--prefetch" => args.prefetch = Some(value()?.parse()?),
                "--window" => args.window = value()?.parse()?,
                "--json" => args.json = Some(value()?.into()),
                "-h" | "--help" => {
                    println!(
                        "cargo bench --bench e2e -- [--transport rabbitmq|redis|both] [--events N] \
                         [--backlog N] [--row-bytes B] [--batch N] [--write-batch N] [--writers N] \
                         [--rate R] [--lag-seconds S] [--consumers N] [--rounds N] [--prefetch N] \
                         [--window N] [--json FILE]"
                    );
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument {other:?} (try --help)").into()),
            }
        }
        if [
            args.events,
            args.batch,
            args.write_batch,
            args.consumers,
            args.rounds,
            args.window,
        ]
        .contains(&0)
        {
            return Err(
                "--events, --batch, --write-batch, --consumers, --rounds and --window must be \
                 positive"
                    .into(),
            );
        }
        args.writers = args.writers.max(1);
        Ok(args)
    }

    fn backlog(&self) -> usize {
        self.backlog.unwrap_or(self.events)
    }

    fn prefetch(&self) -> u32 {
        self.prefetch
            .unwrap_or_else(|| (2 * self.batch).max(1000) as u32)
    }
}

/// Names of this run's exchange, queue and schemas.
#[derive(Clone, Debug)]
struct Names {
    exchange: String,
    queue: String,
    master_schema: String,
    replica_schema: String,
    ceiling_schema: String,
    writes_schema: String,
}

impl Names {
    fn new(kind: Kind) -> Self {
        let tag = format!(
            "{}_{}_{}",
            kind.name(),
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis()
                % 1_000_000
        );
        Self {
            exchange: format!("bench_e2e_{tag}"),
            queue: format!("bench_e2e_replica_{tag}"),
            master_schema: format!("bench_e2e_master_{tag}"),
            replica_schema: format!("bench_e2e_replica_{tag}"),
            ceiling_schema: format!("bench_e2e_ceiling_{tag}"),
            writes_schema: format!("bench_e2e_writes_{tag}"),
        }
    }
}

impl Names {
    fn schemas(&self) -> [&str; 4] {
        [
            &self.master_schema,
            &self.replica_schema,
            &self.ceiling_schema,
            &self.writes_schema,
        ]
    }
}

fn pg_url(schema: &str) -> String {
    format!("{PG}?options=-c%20search_path%3D{schema}")
}

async fn connect(url: &str, connections: u32) -> BenchResult<DatabaseConnection> {
    let mut o = ConnectOptions::new(url.to_owned());
    o.max_connections(connections).sqlx_logging(false);
    Ok(Database::connect(o).await?)
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as i64
}

/// The text column that makes a row's event about `row_bytes` long.
fn filler(row_bytes: usize) -> String {
    // The rest of the SAVE (keys, id, title, revision, timestamp, envelope) is ~190 bytes.
    "x".repeat(row_bytes.saturating_sub(190).max(1))
}

// ---------------------------------------------------------------------------------------------
// Ceilings.

/// Raw lapin: `n` persistent publishes with confirms (`window` unconfirmed, written as the
/// transport writes them) to one queue while a consumer on a second connection acks them
/// (`multiple` every 100). Messages/s to the last ack.
async fn rabbitmq_ceiling(
    n: usize,
    bodies: &[Vec<u8>],
    queue: &str,
    window: usize,
) -> BenchResult<f64> {
    use lapin::options::{
        BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
        QueueDeclareOptions, QueueDeleteOptions,
    };
    use lapin::types::FieldTable;
    use lapin::{BasicProperties, Connection, ConnectionProperties};

    let url = Kind::RabbitMq.url();
    let publisher = Connection::connect(&url, ConnectionProperties::default()).await?;
    let consumer = Connection::connect(&url, ConnectionProperties::default()).await?;
    let out = publisher.create_channel().await?;
    out.confirm_select(ConfirmSelectOptions::default()).await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    out.queue_declare(queue.into(), durable, FieldTable::default())
        .await?;
    let input = consumer.create_channel().await?;
    input.basic_qos(1000, BasicQosOptions::default()).await?;
    let mut deliveries = input
        .basic_consume(
            queue.into(),
            "ceiling".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let started = Instant::now();
    let consume = async {
        let mut seen = 0;
        while seen < n {
            let Some(d) = deliveries.next().await else {
                return Err::<(), Box<dyn std::error::Error>>("consumer closed".into());
            };
            let d = d?;
            seen += 1;
            if seen % 100 == 0 || seen == n {
                d.acker.ack(BasicAckOptions { multiple: true }).await?;
            }
        }
        Ok(())
    };
    let publish = async {
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("text/plain".into());
        publish_confirmed(&out, "", queue, n, bodies, &props, window).await?;
        Ok::<(), Box<dyn std::error::Error>>(())
    };
    let (c, p) = futures_util::future::join(consume, publish).await;
    c?;
    p?;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    out.queue_delete(queue.into(), QueueDeleteOptions::default())
        .await?;
    let _ = publisher.close(200, "done".into()).await;
    let _ = consumer.close(200, "done".into()).await;
    Ok(rate)
}

/// Raw redis-rs: pipelines of 1000 `XADD`s while a consumer on a second connection reads with
/// `XREADGROUP` (1000 at a time) and acknowledges each read with one `XACK`.
async fn redis_ceiling(n: usize, bodies: &[Vec<u8>], key: &str) -> BenchResult<f64> {
    let client = redis::Client::open(Kind::Redis.url())?;
    let config =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
    let mut out = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let mut input = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let _: redis::Value = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg("g")
        .arg("$")
        .arg("MKSTREAM")
        .query_async(&mut out)
        .await?;
    let started = Instant::now();
    let publish = async {
        let mut sent = 0;
        while sent < n {
            let k = 1000.min(n - sent);
            let mut pipe = redis::pipe();
            for i in sent..sent + k {
                pipe.cmd("XADD")
                    .arg(key)
                    .arg("*")
                    .arg("body")
                    .arg(bodies[i % bodies.len()].as_slice())
                    .arg("content_type")
                    .arg("text/plain")
                    .arg("routing_key")
                    .arg("book");
            }
            let _: Vec<redis::Value> = pipe.query_async(&mut out).await?;
            sent += k;
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    };
    let consume = async {
        let mut seen = 0;
        while seen < n {
            seen += read_and_ack(&mut input, key, "c", 1000, 100).await?;
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    };
    let (p, c) = futures_util::future::join(publish, consume).await;
    p?;
    c?;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let _: i64 = redis::cmd("DEL").arg(key).query_async(&mut out).await?;
    Ok(rate)
}

/// The database alone: `n` rows upserted as the replica table upserts them, `batch` per
/// statement, `writers` connections at once. Rows/s.
async fn database_ceiling(
    n: usize,
    body: &str,
    batch: usize,
    writers: usize,
    schema: &str,
) -> BenchResult<f64> {
    let db = connect(&pg_url(schema), writers as u32).await?;
    db.execute_unprepared(
        "CREATE TABLE IF NOT EXISTS book (id bigint PRIMARY KEY, title varchar NOT NULL, \
         body varchar NOT NULL, cqrs_revision bigint NOT NULL, cqrs_updated timestamptz NOT NULL)",
    )
    .await?;
    db.execute_unprepared("TRUNCATE book").await?;
    // Bound values: at most 65,535 a statement.
    let batch = batch.min(13_000);
    let updated = chrono::Utc::now();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (db, body) = (db.clone(), body.to_owned());
        tasks.push(async move {
            let mut first = w * batch;
            while first < n {
                let last = (first + batch).min(n);
                let mut sql = String::from(
                    "INSERT INTO book (id, title, body, cqrs_revision, cqrs_updated) VALUES ",
                );
                let mut values: Vec<sea_orm::Value> = Vec::with_capacity(5 * (last - first));
                for (i, id) in (first..last).enumerate() {
                    let p = 5 * i;
                    if i > 0 {
                        sql.push(',');
                    }
                    sql.push_str(&format!(
                        "(${}, ${}, ${}, ${}, ${})",
                        p + 1,
                        p + 2,
                        p + 3,
                        p + 4,
                        p + 5
                    ));
                    let id = id as i64 + 1;
                    values.push(id.into());
                    values.push(format!("book {id}").into());
                    values.push(body.clone().into());
                    values.push(0i64.into());
                    values.push(updated.into());
                }
                sql.push_str(
                    " ON CONFLICT (id) DO UPDATE SET title = excluded.title, body = excluded.body, \
                     cqrs_revision = excluded.cqrs_revision, cqrs_updated = excluded.cqrs_updated \
                     WHERE book.cqrs_revision < excluded.cqrs_revision",
                );
                db.execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    sql,
                    values,
                ))
                .await?;
                first += writers * batch;
            }
            Ok::<(), sea_orm::DbErr>(())
        });
    }
    for r in futures_util::future::join_all(tasks).await {
        r?;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    db.close().await?;
    Ok(rate)
}

// ---------------------------------------------------------------------------------------------
// The replica process.

/// What a replica process counts: events applied, its last commit, and the lags it saw.
#[derive(Default)]
struct Tally {
    applied: AtomicU64,
    last_commit_us: AtomicU64,
    lags_us: Mutex<Vec<i64>>,
}

/// The replica table, noting the commit time of every event it applied.
struct Timed {
    table: ReplicaTable,
    tally: Arc<Tally>,
    record_lag: bool,
}

impl Timed {
    fn note(&self, events: &[ReplicaEvent], results: &[cqrs_sync::Result<Applied>]) {
        let now = now_us();
        let ok = results.iter().filter(|r| r.is_ok()).count() as u64;
        self.tally
            .last_commit_us
            .store(now as u64, Ordering::Relaxed);
        self.tally.applied.fetch_add(ok, Ordering::Relaxed);
        if self.record_lag {
            let mut lags = self.tally.lags_us.lock().unwrap();
            for (event, result) in events.iter().zip(results) {
                if result.is_ok()
                    && let Some(updated) = event
                        .envelope()
                        .instance_data
                        .get("cqrs_updated")
                        .and_then(Value::as_str)
                        .and_then(|s| {
                            chrono::DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%:z").ok()
                        })
                {
                    lags.push(now - updated.timestamp_micros());
                }
            }
        }
    }
}

impl ReplicaHandler for Timed {
    async fn apply(&self, event: &ReplicaEvent) -> cqrs_sync::Result<Applied> {
        let result = self.table.apply(event).await;
        self.note(std::slice::from_ref(event), std::slice::from_ref(&result));
        result
    }

    async fn apply_batch(&self, events: &[ReplicaEvent]) -> Vec<cqrs_sync::Result<Applied>> {
        let results = self.table.apply_batch(events).await;
        self.note(events, &results);
        results
    }
}

/// A replica process: applies `book` events until its stdin closes, printing
/// `applied <count> <last commit µs>` whenever the count moved (every 20 ms at most), then
/// `lags <json array>` after a graceful shutdown.
async fn replica_process() -> BenchResult<()> {
    let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    let config = CqrsConfig::default()
        .with_url(var("CQRS_E2E_URL")?)
        .with_exchange(var("CQRS_E2E_EXCHANGE")?)
        .with_queue(var("CQRS_E2E_QUEUE")?)
        .with_workers(1)
        .with_batch_size(var("CQRS_E2E_BATCH")?.parse()?)
        .with_prefetch(var("CQRS_E2E_PREFETCH")?.parse()?);
    let db = connect(&pg_url(&var("CQRS_E2E_SCHEMA")?), 2).await?;
    let tally = Arc::new(Tally::default());
    let handler = Timed {
        table: ReplicaTable::new(db, book::entity::Entity)?,
        tally: tally.clone(),
        record_lag: std::env::var("CQRS_E2E_LAG").is_ok(),
    };
    let system = CqrsSystem::builder()
        .config(config)
        .replica(ReplicaModel::new("book", handler))
        .start()
        .await?;
    let (closed_tx, mut closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
        let _ = closed_tx.send(());
    });
    let mut out = std::io::stdout();
    writeln!(out, "ready")?;
    out.flush()?;
    let mut reported = 0;
    loop {
        tokio::select! {
            _ = &mut closed => break,
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        let applied = tally.applied.load(Ordering::Relaxed);
        if applied != reported {
            reported = applied;
            writeln!(
                out,
                "applied {applied} {}",
                tally.last_commit_us.load(Ordering::Relaxed)
            )?;
            out.flush()?;
        }
    }
    system.shutdown().await?;
    let lags = std::mem::take(&mut *tally.lags_us.lock().unwrap());
    writeln!(out, "lags {}", serde_json::to_string(&lags)?)?;
    out.flush()?;
    Ok(())
}

/// A running replica process, killed if dropped before [`Replicas::stop`].
struct ReplicaChild {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Drop for ReplicaChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the replica processes report, in the order they report it.
enum Report {
    Ready,
    Applied(usize, u64, i64),
    Lags(Vec<i64>),
}

/// The consumers of one phase.
struct Replicas {
    children: Vec<ReplicaChild>,
    reports: tokio::sync::mpsc::UnboundedReceiver<Report>,
    applied: Vec<u64>,
    last_commit_us: i64,
}

impl Replicas {
    /// Starts `n` replica processes and waits until each is consuming. (Every wait here is
    /// async: the master's relay runs on this thread.)
    async fn start(kind: Kind, names: &Names, args: &Args, record_lag: bool) -> BenchResult<Self> {
        let (tx, reports) = tokio::sync::mpsc::unbounded_channel();
        let mut children = Vec::new();
        for index in 0..args.consumers {
            let mut command = Command::new(std::env::current_exe()?);
            command
                .env(ROLE, "replica")
                .env("CQRS_E2E_URL", kind.url())
                .env("CQRS_E2E_EXCHANGE", &names.exchange)
                .env("CQRS_E2E_QUEUE", &names.queue)
                .env("CQRS_E2E_SCHEMA", &names.replica_schema)
                .env("CQRS_E2E_BATCH", args.batch.to_string())
                .env("CQRS_E2E_PREFETCH", args.prefetch().to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            if record_lag {
                command.env("CQRS_E2E_LAG", "1");
            } else {
                command.env_remove("CQRS_E2E_LAG");
            }
            let mut child = command.spawn()?;
            let stdin = child.stdin.take();
            let stdout = child.stdout.take().ok_or("no stdout")?;
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let report = if line == "ready" {
                        Report::Ready
                    } else if let Some(rest) = line.strip_prefix("applied ") {
                        let mut parts = rest.split(' ');
                        let count = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                        let at = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                        Report::Applied(index, count, at)
                    } else if let Some(rest) = line.strip_prefix("lags ") {
                        Report::Lags(serde_json::from_str(rest).unwrap_or_default())
                    } else {
                        continue;
                    };
                    if tx.send(report).is_err() {
                        break;
                    }
                }
            });
            children.push(ReplicaChild { child, stdin });
        }
        let mut replicas = Self {
            applied: vec![0; children.len()],
            children,
            reports,
            last_commit_us: 0,
        };
        let mut ready = 0;
        while ready < replicas.children.len() {
            match replicas.next(Duration::from_secs(60)).await {
                None => return Err("a replica process did not start".into()),
                Some(Report::Ready) => ready += 1,
                Some(other) => replicas.take(other),
            }
        }
        Ok(replicas)
    }

    async fn next(&mut self, timeout: Duration) -> Option<Report> {
        tokio::time::timeout(timeout, self.reports.recv())
            .await
            .ok()
            .flatten()
    }

    fn take(&mut self, report: Report) {
        if let Report::Applied(index, count, at) = report {
            self.applied[index] = count;
            self.last_commit_us = self.last_commit_us.max(at);
        }
    }

    fn total(&self) -> u64 {
        self.applied.iter().sum()
    }

    /// Waits until the replicas applied `n` events in all; answers the last commit (µs).
    async fn wait_applied(&mut self, n: u64, timeout: Duration) -> BenchResult<i64> {
        let deadline = Instant::now() + timeout;
        while self.total() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(r) => self.take(r),
                None => {
                    return Err(format!("replicas applied {} of {n} in time", self.total()).into());
                }
            }
        }
        Ok(self.last_commit_us)
    }

    /// The highest peak RSS of the processes, KiB.
    fn peak_rss_kib(&self) -> u64 {
        self.children
            .iter()
            .filter_map(|c| proc::peak_rss_kib(c.child.id()))
            .max()
            .unwrap_or(0)
    }

    /// Closes their stdin: each shuts down gracefully and reports its lags. Answers them all.
    async fn stop(mut self) -> BenchResult<Vec<i64>> {
        for c in &mut self.children {
            c.stdin.take();
        }
        let mut lags = Vec::new();
        let mut reported = 0;
        while reported < self.children.len() {
            match self.next(Duration::from_secs(60)).await {
                None => return Err("a replica process did not stop".into()),
                Some(Report::Lags(l)) => {
                    lags.extend(l);
                    reported += 1;
                }
                Some(other) => self.take(other),
            }
        }
        for c in &mut self.children {
            let status = c.child.wait()?;
            if !status.success() {
                return Err(format!("a replica process ended with {status}").into());
            }
        }
        Ok(lags)
    }
}

// ---------------------------------------------------------------------------------------------
// The master side and the run.

/// The master: its table, outbox and system (which relays the outbox), on the run's transport.
struct Master {
    db: DatabaseConnection,
    table: MasterTable<book::entity::Entity>,
    outbox: Outbox,
    body: String,
    next_id: i64,
}

impl Master {
    /// The `book` table and an outbox in `schema`, created.
    async fn create(schema: &str, body: &str, writers: usize) -> BenchResult<Self> {
        let db = connect(&pg_url(schema), (writers + 2) as u32).await?;
        let create =
            Schema::new(DbBackend::Postgres).create_table_from_entity(book::entity::Entity);
        db.execute(&create).await?;
        let outbox = Outbox::new(db.clone());
        outbox.create_table().await?;
        let table = MasterTable::new("book", book::entity::Entity, &outbox)?;
        Ok(Self {
            db,
            table,
            outbox,
            body: body.to_owned(),
            next_id: 1,
        })
    }

    /// The master's writes alone, no relay (a lease held under another name keeps the system's
    /// relay off this outbox): rows/s.
    async fn writes_alone(&mut self, args: &Args, n: usize) -> BenchResult<f64> {
        self.db
            .execute_unprepared("TRUNCATE book, cqrs_outbox")
            .await?;
        self.next_id = 1;
        let started = Instant::now();
        self.write(n, args.write_batch, args.writers).await?;
        Ok(n as f64 / started.elapsed().as_secs_f64())
    }

    async fn write(
        &mut self,
        rows: usize,
        per_transaction: usize,
        writers: usize,
    ) -> BenchResult<()> {
        let first = self.next_id;
        self.next_id += rows as i64;
        let end = self.next_id;
        let mut tasks = Vec::new();
        for w in 0..writers {
            let (db, table, body) = (&self.db, &self.table, self.body.as_str());
            tasks.push(async move {
                let mut start = first + (w * per_transaction) as i64;
                while start < end {
                    let stop = (start + per_transaction as i64).min(end);
                    let batch = (start..stop).map(|id| book::row(id, body)).collect();
                    table.insert_many(db, batch).await?;
                    start += (writers * per_transaction) as i64;
                }
                Ok::<(), cqrs_sync::Error>(())
            });
        }
        for r in futures_util::future::join_all(tasks).await {
            r?;
        }
        Ok(())
    }
}

/// One transport's figures.
#[derive(Debug, Default, serde::Serialize)]
struct Figures {
    transport: String,
    events: usize,
    row_bytes: usize,
    event_bytes: usize,
    batch: usize,
    consumers: usize,
    rounds: usize,
    broker_ceiling: f64,
    database_ceiling: f64,
    master_writes: f64,
    end_to_end: f64,
    ratio: f64,
    of_master_writes: f64,
    broker_ceiling_rounds: Vec<f64>,
    database_ceiling_rounds: Vec<f64>,
    master_writes_rounds: Vec<f64>,
    end_to_end_rounds: Vec<f64>,
    offered_rate: u32,
    achieved_rate: f64,
    lag_events: usize,
    lag_p50_ms: f64,
    lag_p95_ms: f64,
    lag_p99_ms: f64,
    lag_max_ms: f64,
    backlog: usize,
    backlog_publish_rate: f64,
    drain_rate: f64,
    replica_peak_rss_mib: f64,
}

fn median(runs: &[f64]) -> f64 {
    let mut sorted = runs.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn run(kind: Kind, args: &Args) -> BenchResult<Figures> {
    let names = Names::new(kind);
    let admin = connect(PG, 1).await?;
    for s in names.schemas() {
        admin
            .execute_unprepared(&format!("CREATE SCHEMA {s}"))
            .await?;
    }
    let config = CqrsConfig::default()
        .with_url(kind.url())
        .with_exchange(names.exchange.clone())
        .with_publish_window(u32::try_from(args.window)?);
    let (transport, teardown): (TransportHandle, Box<dyn FnOnce() -> _>) = match kind {
        Kind::RabbitMq => {
            let (t, addr) =
                RabbitMqTransport::connect(RabbitMqConfig::from_cqrs_config(&config)?).await?;
            let teardown = move || -> futures_util::future::BoxFuture<'static, ()> {
                Box::pin(async move {
                    use cqrs_sync::transports::rabbitmq::Teardown;
                    let _ = addr.send(Teardown { exchange: true }).await;
                })
            };
            (t, Box::new(teardown))
        }
        Kind::Redis => {
            let (t, addr) =
                RedisTransport::connect(RedisConfig::from_cqrs_config(&config)?).await?;
            let teardown = move || -> futures_util::future::BoxFuture<'static, ()> {
                Box::pin(async move {
                    use cqrs_sync::transports::redis::Teardown;
                    let _ = addr.send(Teardown).await;
                })
            };
            (t, Box::new(teardown))
        }
    };
    let result = measure(kind, args, &names, &config, &transport).await;
    teardown().await;
    for s in names.schemas() {
        admin
            .execute_unprepared(&format!("DROP SCHEMA IF EXISTS {s} CASCADE"))
            .await?;
    }
    result
}

async fn measure(
    kind: Kind,
    args: &Args,
    names: &Names,
    config: &CqrsConfig,
    transport: &TransportHandle,
) -> BenchResult<Figures> {
    let body = filler(args.row_bytes);
    let sample = book::event(1, &body)?;
    let mut f = Figures {
        transport: kind.name().to_owned(),
        events: args.events,
        row_bytes: args.row_bytes,
        event_bytes: sample.body.len(),
        batch: args.batch,
        consumers: args.consumers,
        rounds: args.rounds,
        offered_rate: args.rate,
        backlog: args.backlog(),
        ..Figures::default()
    };

    // The topology the replicas use, declared before the master publishes.
    transport
        .declare(Declare {
            queue: names.queue.clone(),
            dead_letter_queue: format!("dead_letter_{}", names.queue),
            cqrs_ids: vec!["book".into()],
        })
        .await?;
    let replica_db = connect(&pg_url(&names.replica_schema), 1).await?;
    replica_db
        .execute(&Schema::new(DbBackend::Postgres).create_table_from_entity(book::entity::Entity))
        .await?;
    let mut alone = Master::create(&names.writes_schema, &body, args.writers).await?;
    let held = alone
        .outbox
        .store()
        .lease("writes-alone", Duration::from_secs(86_400))
        .await?;
    assert!(held, "the writes-alone outbox's lease");
    let alone_system = CqrsSystem::builder()
        .config(config.clone())
        .master(&alone.table)
        .transport(transport.clone())
        .start()
        .await?;
    let mut master = Master::create(&names.master_schema, &body, args.writers).await?;
    let system = CqrsSystem::builder()
        .config(config.clone())
        .master(&master.table)
        .transport(transport.clone())
        .start()
        .await?;
    let patience = Duration::from_secs(600 + (args.events.max(args.backlog()) / 500) as u64);

    // 1. Lag at a fixed offered rate, first: the steady state of a master whose outbox has
    // not just deleted a burst of rows (see the README on bursts).
    let mut replicas = Replicas::start(kind, names, args, true).await?;
    let ticks = (args.lag_seconds * 100) as usize;
    let began = Instant::now();
    let mut written = 0;
    for tick in 1..=ticks {
        // Every 10 ms, one transaction of what the rate owes by then.
        let owed = args.rate as usize * tick / 100;
        if owed > written {
            master.write(owed - written, owed - written, 1).await?;
            written = owed;
        }
        let due = began + Duration::from_millis(10 * tick as u64);
        tokio::time::sleep_until(due.into()).await;
    }
    f.lag_events = written;
    f.achieved_rate = f.lag_events as f64 / began.elapsed().as_secs_f64();
    if written == 0 {
        return Err("--rate and --lag-seconds leave nothing to write".into());
    }
    replicas.wait_applied(f.lag_events as u64, patience).await?;
    let mut lags = replicas.stop().await?;
    lags.sort_unstable();
    f.lag_p50_ms = percentile(&lags, 0.50);
    f.lag_p95_ms = percentile(&lags, 0.95);
    f.lag_p99_ms = percentile(&lags, 0.99);
    f.lag_max_ms = lags.last().map_or(f64::NAN, |&v| v as f64 / 1000.0);
    eprintln!(
        "{}: lag p50 {:.1} ms, p99 {:.1} ms over {} events",
        kind.name(),
        f.lag_p50_ms,
        f.lag_p99_ms,
        lags.len()
    );

    // 2 and 3, alternating: the ceilings, the master's writes alone, the whole path.
    let n = args.events.min(CEILING_MAX);
    let bodies: Vec<Vec<u8>> = (1..=1000)
        .map(|id| Ok(book::event(id, &body)?.body))
        .collect::<BenchResult<_>>()?;
    for round in 0..args.rounds {
        let raw_queue = format!("{}_raw_{round}", names.queue);
        let broker = match kind {
            Kind::RabbitMq => rabbitmq_ceiling(n, &bodies, &raw_queue, args.window).await?,
            Kind::Redis => redis_ceiling(n, &bodies, &raw_queue).await?,
        };
        let database =
            database_ceiling(n, &body, args.batch, args.consumers, &names.ceiling_schema).await?;
        let writes = alone.writes_alone(args, n).await?;

        let mut replicas = Replicas::start(kind, names, args, false).await?;
        let started = now_us();
        master
            .write(args.events, args.write_batch, args.writers)
            .await?;
        let last = replicas.wait_applied(args.events as u64, patience).await?;
        replicas.stop().await?;
        let path = args.events as f64 / ((last - started) as f64 / 1e6);
        eprintln!(
            "{} round {}: broker alone {broker:.0} msg/s, database alone {database:.0} rows/s, \
             master writes alone {writes:.0} rows/s, end to end {path:.0} events/s ({:.0}%)",
            kind.name(),
            round + 1,
            100.0 * path / broker.min(database)
        );
        f.broker_ceiling_rounds.push(broker);
        f.database_ceiling_rounds.push(database);
        f.master_writes_rounds.push(writes);
        f.end_to_end_rounds.push(path);
    }
    f.broker_ceiling = median(&f.broker_ceiling_rounds);
    f.database_ceiling = median(&f.database_ceiling_rounds);
    f.master_writes = median(&f.master_writes_rounds);
    f.end_to_end = median(&f.end_to_end_rounds);
    f.ratio = f.end_to_end / f.broker_ceiling.min(f.database_ceiling);
    f.of_master_writes = f.end_to_end / f.master_writes;

    // 4. A backlog written while the replicas are stopped, then drained.
    let began = Instant::now();
    master
        .write(args.backlog(), args.write_batch, args.writers)
        .await?;
    system.flush().await?;
    f.backlog_publish_rate = args.backlog() as f64 / began.elapsed().as_secs_f64();
    let spawned = now_us();
    let mut replicas = Replicas::start(kind, names, args, false).await?;
    let last = replicas
        .wait_applied(args.backlog() as u64, patience)
        .await?;
    f.drain_rate = args.backlog() as f64 / ((last - spawned) as f64 / 1e6);
    f.replica_peak_rss_mib = replicas.peak_rss_kib() as f64 / 1024.0;
    replicas.stop().await?;
    eprintln!(
        "{}: backlog of {} events written and confirmed at {:.0} events/s, drained at {:.0} \
         events/s, peak RSS {:.1} MiB",
        kind.name(),
        args.backlog(),
        f.backlog_publish_rate,
        f.drain_rate,
        f.replica_peak_rss_mib
    );
    system.shutdown().await?;
    alone_system.shutdown().await?;
    Ok(f)
}

fn print(figures: &[Figures]) {
    let Some(first) = figures.first() else { return };
    println!(
        "\nend to end: {} events of {} bytes (rows of ~{} bytes), replica batch {}, {} \
         consumer(s), medians of {} rounds; lag at {} events/s offered; drain of {} events",
        first.events,
        first.event_bytes,
        first.row_bytes,
        first.batch,
        first.consumers,
        first.rounds,
        first.offered_rate,
        first.backlog
    );
    println!(
        "{:<9} {:>13} {:>13} {:>13} {:>13} {:>9} {:>25} {:>12} {:>11} {:>10}",
        "transport",
        "broker alone",
        "db alone",
        "master alone",
        "end to end",
        "of lower",
        "lag p50/p95/p99/max ms",
        "backlog ev/s",
        "drain ev/s",
        "peak RSS"
    );
    for f in figures {
        println!(
            "{:<9} {:>10.0} /s {:>10.0} /s {:>10.0} /s {:>10.0} /s {:>8.0}% {:>25} {:>12.0} {:>11.0} \
             {:>6.1} MiB",
            f.transport,
            f.broker_ceiling,
            f.database_ceiling,
            f.master_writes,
            f.end_to_end,
            100.0 * f.ratio,
            format!(
                "{:.1}/{:.1}/{:.1}/{:.1}",
                f.lag_p50_ms, f.lag_p95_ms, f.lag_p99_ms, f.lag_max_ms
            ),
            f.backlog_publish_rate,
            f.drain_rate,
            f.replica_peak_rss_mib
        );
    }
    println!(
        "targets: end to end >= 60% of the lower of broker alone and db alone; lag p99 < 50 ms \
         at 2,000 events/s; peak RSS < 100 MiB draining 1,000,000 events"
    );
}

fn main() -> BenchResult<()> {
    let runtime = actix_rt::System::new();
    if std::env::var_os(ROLE).is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_writer(std::io::stderr)
            .init();
        return runtime.block_on(replica_process());
    }
    let args = Args::parse()?;
    let figures = runtime.block_on(async {
        let mut all = Vec::new();
        for &kind in &args.transports {
            all.push(run(kind, &args).await?);
        }
        Ok::<_, Box<dyn std::error::Error>>(all)
    })?;
    print(&figures);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&figures)?)?;
        println!("figures written to {}", path.display());
    }
    Ok(())
}
