//! The `cqrs` command's figures, each next to what it is compared with in the same run:
//!
//! 1. `bulk-load` into PostgreSQL, in rows/s, against the database's own copy of the same rows
//!    (`INSERT INTO ... SELECT`, no client at all);
//! 2. `bulk-dump` of `CQRS_BENCH_DUMP_ROWS` rows (default 1,000,000): rows/s and the process's
//!    peak RSS, against a dump of a tenth of them (constant memory: the same peak);
//! 3. `cqrs consume` (the standalone replica: its own process, configured by file) draining a
//!    backlog of `CQRS_BENCH_EVENTS` SYNCs (default 100,000) over RabbitMQ into PostgreSQL,
//!    against the same replica built in code in this process, rounds alternating A B A B.
//!
//! ```text
//! cargo bench --bench cli --features cli
//! CQRS_BENCH_DUMP_ROWS=200000 CQRS_BENCH_EVENTS=20000 cargo bench --bench cli --features cli
//! ```
//!
//! Rows are Django-shaped books of about 150 bytes (text, decimal, date, JSON, foreign key).
//! The run works in a PostgreSQL schema and a RabbitMQ exchange of its own and removes them.

#![allow(clippy::print_stdout, clippy::unwrap_used)] // a bench prints its figures and may panic

#[path = "support/proc.rs"]
mod proc;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cqrs_sync::orm::ReplicaTable;
use cqrs_sync::transports::rabbitmq::{RabbitMqConfig, RabbitMqTransport, Teardown};
use cqrs_sync::{CqrsConfig, CqrsSystem, CqrsSystemBuilder, ReplicaModel};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};

mod book {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "replica")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub title: String,
        #[sea_orm(column_type = "Decimal(Some((10, 2)))")]
        pub price: Decimal,
        pub published: Option<Date>,
        pub extra: Option<Json>,
        pub author_id: Option<i32>,
        pub cqrs_revision: i32,
        pub cqrs_updated: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

const PG: &str = "postgres://postgres@127.0.0.1:5432/test";
const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Bench {
    schema: String,
    exchange: String,
    queue: String,
    dir: PathBuf,
    db: DatabaseConnection,
}

impl Bench {
    fn url(&self) -> String {
        format!("{PG}?options=-c%20search_path%3D{}", self.schema)
    }

    async fn sql(&self, sql: &str) {
        self.db
            .execute_unprepared(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    async fn count(&self, table: &str) -> i64 {
        let row = self
            .db
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                format!("SELECT count(*) FROM {table}"),
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get_by_index(0).unwrap()
    }

    async fn create(&self, table: &str) {
        self.sql(&format!(
            "CREATE TABLE {table} (id BIGINT PRIMARY KEY, title VARCHAR(200) NOT NULL, \
             price NUMERIC(10, 2) NOT NULL, published DATE NULL, extra JSONB NULL, \
             author_id INTEGER NULL, cqrs_revision INTEGER NOT NULL, \
             cqrs_updated TIMESTAMP WITH TIME ZONE NOT NULL)"
        ))
        .await;
    }

    async fn fill(&self, table: &str, rows: u64) {
        self.sql(&format!("TRUNCATE {table}")).await;
        self.sql(&format!(
            "INSERT INTO {table} SELECT g, 'The collected works, volume ' || g, g * 1.25, \
             DATE '2020-01-01' + (g % 1000)::int, jsonb_build_object('edition', g % 9), \
             NULLIF(g % 7, 0)::int, g % 5, now() FROM generate_series(1, {rows}) g"
        ))
        .await;
    }

    /// A configuration file for the command.
    fn config(&self, name: &str, tables: &str) -> PathBuf {
        let path = self.dir.join(name);
        let text = format!(
            "url = \"{AMQP}\"\nexchange = \"{}\"\nqueue = \"{}\"\ndatabase_url = \"{}\"\n{tables}",
            self.exchange,
            self.queue,
            self.url()
        );
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// Runs `cqrs` to the end; answers the wall time and the peak RSS (`VmHWM`, sampled).
fn timed(config: &Path, args: &[&str]) -> (Duration, u64) {
    let started = Instant::now();
    let child = command(config, args).spawn().unwrap();
    let (status, peak) = watch(child);
    assert!(status.success(), "cqrs {args:?} failed");
    (started.elapsed(), peak)
}

fn command(config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cqrs"));
    // The bench's own `CQRS_BENCH_*` settings are not the command's configuration.
    for (name, _) in std::env::vars() {
        if name.starts_with("CQRS_") {
            cmd.env_remove(name);
        }
    }
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    cmd
}

/// Waits for `child`, sampling its peak RSS in KiB every 10 ms (the high-water mark only
/// grows, so the last sample is the peak up to its last 10 ms).
fn watch(mut child: Child) -> (std::process::ExitStatus, u64) {
    let pid = child.id();
    let mut peak = 0;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, peak);
        }
        if let Some(kib) = proc::peak_rss_kib(pid) {
            peak = peak.max(kib);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[allow(clippy::cast_precision_loss)] // rates for people
fn rate(n: u64, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Waits until the replica holds `n` rows; answers the time since `started`.
async fn drained(bench: &Bench, n: u64, started: Instant) -> Duration {
    let deadline = started + Duration::from_secs(600);
    while u64::try_from(bench.count("replica").await).unwrap() < n {
        assert!(Instant::now() < deadline, "the replica did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

/// Publishes `n` SYNCs of the master's rows to the replica queue (the replica not running),
/// and empties the replica table.
async fn backlog(bench: &Bench, master: &Path, n: u64) {
    bench.sql("TRUNCATE replica").await;
    let (took, _) = timed(
        master,
        &["sync", "--cqrs-id", "book", "-f", "{}", "-q", &bench.queue],
    );
    println!("  (backlog of {n} SYNCs published in {took:.1?})");
}

async fn in_code_replica(
    bench: &Bench,
    config: &CqrsConfig,
    transport: &cqrs_sync::TransportHandle,
) -> CqrsSystem {
    let db = Database::connect(
        ConnectOptions::new(bench.url())
            .sqlx_logging(false)
            .to_owned(),
    )
    .await
    .unwrap();
    CqrsSystemBuilder::new()
        .config(config.clone())
        .transport(transport.clone())
        .replica(ReplicaModel::new(
            "book",
            ReplicaTable::new(db, book::Entity).unwrap(),
        ))
        .start()
        .await
        .unwrap()
}

#[actix_rt::main]
async fn main() {
    let dump_rows = env_or("CQRS_BENCH_DUMP_ROWS", 1_000_000);
    let events = env_or("CQRS_BENCH_EVENTS", 100_000);
    let id = std::process::id();
    let dir = std::env::temp_dir().join(format!("cqrs_bench_cli_{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let admin = Database::connect(ConnectOptions::new(PG).sqlx_logging(false).to_owned())
        .await
        .unwrap();
    let schema = format!("cqrs_bench_cli_{id}");
    admin
        .execute_unprepared(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let db = Database::connect(
        ConnectOptions::new(format!("{PG}?options=-c%20search_path%3D{schema}"))
            .sqlx_logging(false)
            .to_owned(),
    )
    .await
    .unwrap();
    let bench = Bench {
        schema: schema.clone(),
        exchange: format!("cqrs_bench_cli_{id}"),
        queue: format!("cqrs_bench_cli_{id}"),
        dir: dir.clone(),
        db,
    };
    for table in ["master", "replica", "copy"] {
        bench.create(table).await;
    }
    let master = bench.config(
        "master.toml",
        "[masters.book]\ntable = \"master\"\nkeys = { author = \"author_id\" }\n",
    );
    let replica = bench.config(
        "replica.toml",
        "[replicas.book]\ntable = \"replica\"\nkeys = { author = \"author_id\" }\n",
    );
    let file = dir.join("book.dump").display().to_string();

    println!("cqrs command, PostgreSQL 127.0.0.1:5432, RabbitMQ 127.0.0.1:5672");
    println!(
        "{:<44} {:>14} {:>14} {:>8}",
        "", "figure", "compared to", "ratio"
    );

    // 2. bulk-dump: a tenth, then all of it.
    let mut peaks = Vec::new();
    for rows in [dump_rows / 10, dump_rows] {
        bench.fill("master", rows).await;
        let (took, peak) = timed(
            &master,
            &["bulk-dump", "--cqrs-id", "book", "-o", &file, "--force"],
        );
        println!(
            "{:<44} {:>10.0} r/s {:>14} {:>8}",
            format!("bulk-dump {rows} rows ({took:.1?})"),
            rate(rows, took),
            "",
            ""
        );
        peaks.push(peak);
    }
    #[allow(clippy::cast_precision_loss)]
    let ratio = peaks[1] as f64 / peaks[0] as f64;
    println!(
        "{:<44} {:>10} KiB {:>10} KiB {:>8.2}",
        format!("bulk-dump peak RSS, {dump_rows} vs {} rows", dump_rows / 10),
        peaks[1],
        peaks[0],
        ratio
    );

    // 1. bulk-load of the full dump, against the database copying the same rows itself.
    let (took, _) = timed(&replica, &["bulk-load", "-i", &file, "--clear"]);
    assert_eq!(
        u64::try_from(bench.count("replica").await).unwrap(),
        dump_rows
    );
    let load = rate(dump_rows, took);
    bench.sql("TRUNCATE copy").await;
    let started = Instant::now();
    bench.sql("INSERT INTO copy SELECT * FROM master").await;
    let copy = rate(dump_rows, started.elapsed());
    println!(
        "{:<44} {:>10.0} r/s {:>10.0} r/s {:>8.2}",
        format!("bulk-load {dump_rows} rows into PostgreSQL"),
        load,
        copy,
        load / copy
    );

    // 3. consume: the standalone replica against the same one built in code.
    bench.fill("master", events).await;
    let config = CqrsConfig::default()
        .with_url(AMQP)
        .with_exchange(&bench.exchange)
        .with_queue(&bench.queue);
    let (transport, rabbit) =
        RabbitMqTransport::connect(RabbitMqConfig::from_cqrs_config(&config).unwrap())
            .await
            .unwrap();
    // Declares the queue the backlogs go to.
    in_code_replica(&bench, &config, &transport)
        .await
        .shutdown()
        .await
        .unwrap();
    let (mut standalone, mut in_code) = (Vec::new(), Vec::new());
    for round in 0..3 {
        backlog(&bench, &master, events).await;
        let started = Instant::now();
        let mut child = command(&replica, &["consume"]).spawn().unwrap();
        let took = drained(&bench, events, started).await;
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        child.wait().unwrap();
        standalone.push(rate(events, took));

        backlog(&bench, &master, events).await;
        let started = Instant::now();
        let system = in_code_replica(&bench, &config, &transport).await;
        let took = drained(&bench, events, started).await;
        system.shutdown().await.unwrap();
        in_code.push(rate(events, took));
        println!(
            "  round {}: standalone {:.0} ev/s, in code {:.0} ev/s",
            round + 1,
            standalone[round],
            in_code[round]
        );
    }
    let (a, b) = (median(standalone), median(in_code));
    println!(
        "{:<44} {:>9.0} ev/s {:>9.0} ev/s {:>8.2}",
        format!("consume {events} events, standalone vs in code"),
        a,
        b,
        a / b
    );

    // The queue, its dead-letter and parking queues and the exchange, as declared above.
    rabbit
        .send(Teardown { exchange: true })
        .await
        .unwrap()
        .unwrap();
    admin
        .execute_unprepared(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
