//! One chaos run: the databases, the broker, the processes, the fault schedule, the comparison
//! and the report.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cqrs_sync::CqrsConfig;
use cqrs_sync::orm::{Outbox, Tombstones};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement,
};
use serde_json::Value;

use crate::Plan;
use crate::faults::{Broker, Fault, Faults};

/// The variable that makes this binary a process of a run, and what it is given.
pub const ROLE: &str = "CQRS_CHAOS_ROLE";
pub const DB: &str = "CQRS_CHAOS_DB";
pub const CONFIG: &str = "CQRS_CHAOS_CONFIG";
pub const EVENTS: &str = "CQRS_CHAOS_EVENTS";
pub const SEED: &str = "CQRS_CHAOS_SEED";
pub const STATS: &str = "CQRS_CHAOS_STATS";

/// The replicated table's CQRS id, the replica queue and the master's outbox.
pub const CQRS_ID: &str = "chaos";
pub const QUEUE: &str = "chaos";
pub const OUTBOX: &str = "chaos_outbox";
pub const TOMBSTONES: &str = "chaos_tombstones";

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const REPLICAS: usize = 3;

/// The table both sides hold (in a schema each).
pub mod row {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "chaos_row")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub name: String,
        pub n: i64,
        pub payload: Option<Json>,
        pub cqrs_revision: i64,
        pub cqrs_updated: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A child process's setting.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

/// A pool to `url`.
pub async fn connect(url: &str, pool: u32) -> DatabaseConnection {
    let mut o = ConnectOptions::new(url.to_owned());
    o.max_connections(pool)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(10))
        .sqlx_logging(false);
    Database::connect(o)
        .await
        .unwrap_or_else(|e| panic!("connecting to PostgreSQL: {e}"))
}

/// A pool to `url`, tried until it answers (the run may have just terminated every backend).
pub async fn connect_patiently(url: &str, pool: u32) -> DatabaseConnection {
    loop {
        let mut o = ConnectOptions::new(url.to_owned());
        o.max_connections(pool)
            .min_connections(1)
            .connect_timeout(Duration::from_secs(10))
            .sqlx_logging(false);
        match Database::connect(o).await {
            Ok(db) => return db,
            Err(e) => {
                eprintln!("connecting to PostgreSQL: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// The URL of `schema` for the run's processes, named `app` in `pg_stat_activity`.
fn schema_url(schema: &str, app: &str) -> String {
    format!("{ADMIN_URL}?options=-c%20search_path%3D{schema}&application_name={app}")
}

pub async fn exec(db: &impl ConnectionTrait, sql: &str) {
    db.execute_unprepared(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A process of the run: this binary started again with a role, killed on drop.
pub struct Proc {
    pub name: String,
    envs: Vec<(&'static str, String)>,
    log: PathBuf,
    child: Option<Child>,
    pub starts: u32,
}

impl Proc {
    fn new(name: &str, envs: Vec<(&'static str, String)>, dir: &Path) -> Self {
        let mut proc = Self {
            name: name.to_owned(),
            envs,
            log: dir.join(format!("{name}.log")),
            child: None,
            starts: 0,
        };
        proc.start();
        proc
    }

    pub fn start(&mut self) {
        let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("{}: {e}", self.log.display()));
        let err = log.try_clone().unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new(exe)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.name));
        self.child = Some(child);
        self.starts += 1;
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process died by itself (a panic: the run fails).
    pub fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(format!("{} exited: {status}", self.name)),
            _ => None,
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The figures of one run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub transport: &'static str,
    pub seed: u64,
    pub events: u64,
    pub faults: BTreeMap<&'static str, u32>,
    pub skipped_faults: Vec<String>,
    pub rows: usize,
    pub received: u64,
    pub applied: u64,
    pub ignored_stale: u64,
    pub ignored_duplicate: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    pub dead_letters_left: u64,
    pub lost: usize,
    pub stale: usize,
    pub examples: Vec<String>,
    pub write_time: Duration,
    pub converge_time: Option<Duration>,
    pub crashed: Vec<String>,
}

impl Report {
    /// Nothing lost, nothing stale, converged, no process died by itself.
    pub fn holds(&self) -> bool {
        self.lost == 0 && self.stale == 0 && self.converge_time.is_some() && self.crashed.is_empty()
    }

    fn fault_count(&self) -> u32 {
        self.faults.values().sum()
    }

    /// The runs as a Markdown table.
    pub fn table(reports: &[Self]) -> String {
        let mut out = String::from(
            "| transport | seed | events | faults | applied | stale ign. | dup. ign. | retried | dead-lettered | lost | stale rows | writes | converged in |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for r in reports {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} s | {} |\n",
                r.transport,
                r.seed,
                r.events,
                r.fault_count(),
                r.applied,
                r.ignored_stale,
                r.ignored_duplicate,
                r.retried,
                r.dead_lettered,
                r.lost,
                r.stale,
                r.write_time.as_secs_f64(),
                r.converge_time
                    .map_or("no".to_owned(), |t| format!("{:.1} s", t.as_secs_f64())),
            ));
        }
        out
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "chaos {} seed {}: {} events published, {} rows at the end",
            self.transport, self.seed, self.events, self.rows
        )?;
        writeln!(f, "  faults: {} {:?}", self.fault_count(), self.faults)?;
        for s in &self.skipped_faults {
            writeln!(f, "  not injected: {s}")?;
        }
        writeln!(
            f,
            "  replicas (as of each process's last figures): received {}, applied {}, ignored stale {}, ignored duplicate {}, retried {}, dead-lettered {}; dead letters in the queue {}",
            self.received,
            self.applied,
            self.ignored_stale,
            self.ignored_duplicate,
            self.retried,
            self.dead_lettered,
            self.dead_letters_left
        )?;
        writeln!(
            f,
            "  lost {}, stale rows {}, writes took {:.1} s, converged {}",
            self.lost,
            self.stale,
            self.write_time.as_secs_f64(),
            self.converge_time.map_or("NOT".to_owned(), |t| format!(
                "{:.1} s after the last write",
                t.as_secs_f64()
            ))
        )?;
        for e in &self.examples {
            writeln!(f, "  {e}")?;
        }
        for c in &self.crashed {
            writeln!(f, "  crashed: {c}")?;
        }
        Ok(())
    }
}

/// A row as compared: name, n, payload, revision, updated.
type Compared = (String, i64, Option<Value>, i64, String);

async fn rows_of(db: &DatabaseConnection, schema: &str) -> BTreeMap<i64, Compared> {
    let sql = format!(
        "SELECT id, name, n, payload::text AS payload, cqrs_revision, \
         to_char(cqrs_updated AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') AS updated \
         FROM {schema}.chaos_row"
    );
    let rows = db
        .query_all_raw(Statement::from_string(DbBackend::Postgres, sql))
        .await
        .unwrap_or_else(|e| panic!("reading {schema}: {e}"));
    rows.into_iter()
        .map(|r| {
            let get_i = |c: &str| {
                r.try_get::<i64>("", c)
                    .unwrap_or_else(|e| panic!("{c}: {e}"))
            };
            let payload: Option<String> = r.try_get("", "payload").unwrap_or(None);
            (
                get_i("id"),
                (
                    r.try_get("", "name").unwrap_or_default(),
                    get_i("n"),
                    payload.and_then(|p| serde_json::from_str(&p).ok()),
                    get_i("cqrs_revision"),
                    r.try_get("", "updated").unwrap_or_default(),
                ),
            )
        })
        .collect()
}

/// Lost rows (missing on one side) and stale rows (different), with a few examples.
fn compare(
    master: &BTreeMap<i64, Compared>,
    replica: &BTreeMap<i64, Compared>,
) -> (usize, usize, Vec<String>) {
    let (mut lost, mut stale, mut examples) = (0, 0, Vec::new());
    for (id, m) in master {
        match replica.get(id) {
            None => {
                lost += 1;
                if examples.len() < 5 {
                    examples.push(format!("row {id} missing on the replica (master {m:?})"));
                }
            }
            Some(r) if r != m => {
                stale += 1;
                if examples.len() < 5 {
                    examples.push(format!("row {id}: master {m:?}, replica {r:?}"));
                }
            }
            Some(_) => {}
        }
    }
    for (id, r) in replica {
        if !master.contains_key(id) {
            lost += 1;
            if examples.len() < 5 {
                examples.push(format!(
                    "row {id} deleted on the master, still on the replica {r:?}"
                ));
            }
        }
    }
    (lost, stale, examples)
}

/// The replica processes' last figures, summed over every process that ran.
fn replica_figures(dir: &Path, report: &mut Report) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("stats-") || !name.ends_with(".txt") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let n: Vec<u64> = text
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        if let [received, applied, stale, dup, retried, dead] = n[..] {
            report.received += received;
            report.applied += applied;
            report.ignored_stale += stale;
            report.ignored_duplicate += dup;
            report.retried += retried;
            report.dead_lettered += dead;
        }
    }
}

/// Runs `plan` and reports; every process, table, queue and stream of the run is gone after.
pub fn run(plan: &Plan) -> Report {
    actix_rt::System::new().block_on(run_async(plan))
}

async fn run_async(plan: &Plan) -> Report {
    let name = crate::support::unique("cqrs_chaos").to_lowercase();
    let dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let (master_schema, replica_schema) = (format!("{name}_m"), format!("{name}_r"));
    let admin = connect(ADMIN_URL, 2).await;
    let schemas = Schemas {
        admin: admin.clone(),
        names: vec![master_schema.clone(), replica_schema.clone()],
    };
    for schema in &schemas.names {
        exec(&admin, &format!("CREATE SCHEMA {schema}")).await;
        exec(
            &admin,
            &format!(
                "CREATE TABLE {schema}.chaos_row (id BIGINT PRIMARY KEY, name TEXT NOT NULL, \
                 n BIGINT NOT NULL, payload JSON, cqrs_revision BIGINT NOT NULL, \
                 cqrs_updated TIMESTAMPTZ NOT NULL)"
            ),
        )
        .await;
    }
    exec(
        &admin,
        &format!(
            "CREATE TABLE {master_schema}.chaos_progress (writer BIGINT PRIMARY KEY, \
             next_op BIGINT NOT NULL, next_k BIGINT NOT NULL); \
             INSERT INTO {master_schema}.chaos_progress SELECT w, 0, 0 FROM generate_series(0, 3) w"
        ),
    )
    .await;
    let app = name.clone();
    let master_url = schema_url(&master_schema, &app);
    let replica_url = schema_url(&replica_schema, &app);
    {
        let m = connect(&master_url, 1).await;
        Outbox::with_table(m.clone(), OUTBOX)
            .create_table()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let r = connect(&replica_url, 1).await;
        Tombstones::new(TOMBSTONES)
            .create_table(&r)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let _ = m.close().await;
        let _ = r.close().await;
    }

    let broker = Broker::start(plan.transport, &name, &dir);
    let master_config = broker.config();
    let replica_config = broker
        .config()
        .with_queue(QUEUE)
        .with_workers(2)
        .with_max_retries(None)
        .with_retry_delay(Duration::from_millis(200));
    let toml = |c: &CqrsConfig| toml::to_string(c).unwrap_or_else(|e| panic!("{e}"));
    let mut master = Proc::new(
        "master",
        vec![
            (ROLE, "master".into()),
            (DB, master_url.clone()),
            (CONFIG, toml(&master_config)),
            (EVENTS, plan.events.to_string()),
            (SEED, plan.seed.to_string()),
        ],
        &dir,
    );
    let mut replicas: Vec<Proc> = (1..=REPLICAS)
        .map(|i| {
            Proc::new(
                &format!("replica{i}"),
                vec![
                    (ROLE, "replica".into()),
                    (DB, replica_url.clone()),
                    (CONFIG, toml(&replica_config)),
                    (STATS, dir.display().to_string()),
                ],
                &dir,
            )
        })
        .collect();

    let mut report = Report {
        transport: plan.transport.name(),
        seed: plan.seed,
        events: plan.events,
        ..Report::default()
    };
    let started = Instant::now();
    let mut faults = Faults::new(plan, &broker, &app, &replica_schema);
    let progress =
        format!("SELECT sum(next_op)::BIGINT AS next_op FROM {master_schema}.chaos_progress");
    let done = |admin: DatabaseConnection, sql: String, events: u64| async move {
        admin
            .query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
            .await
            .ok()
            .flatten()
            .and_then(|r| r.try_get::<i64>("", "next_op").ok())
            .is_some_and(|n| n as u64 >= events)
    };
    let deadline = started + plan.patience * 10;
    while !done(admin.clone(), progress.clone(), plan.events).await {
        if Instant::now() > deadline {
            report
                .crashed
                .push("the master did not finish its writes".into());
            break;
        }
        for p in std::iter::once(&mut master).chain(replicas.iter_mut()) {
            if let Some(why) = p.exited() {
                report.crashed.push(why);
                p.start();
            }
        }
        tokio::time::sleep(faults.pause()).await;
        match faults.next() {
            Fault::KillReplica => {
                let i = faults.pick(replicas.len());
                replicas[i].kill();
                tokio::time::sleep(faults.restart_pause()).await;
                replicas[i].start();
            }
            Fault::KillMaster => {
                master.kill();
                tokio::time::sleep(faults.restart_pause()).await;
                master.start();
            }
            other => faults.inject(other, &admin).await,
        }
    }
    report.write_time = started.elapsed();
    faults.settle().await;
    report.faults = faults.counts.clone();
    report.skipped_faults = faults.skipped.clone();

    // Quiescence: the outbox relayed and the replica equal to the master.
    let last_write = Instant::now();
    let mut last = (0, 0, Vec::new());
    while last_write.elapsed() < plan.patience {
        let m = rows_of(&admin, &master_schema).await;
        let r = rows_of(&admin, &replica_schema).await;
        last = compare(&m, &r);
        report.rows = m.len();
        if last.0 == 0 && last.1 == 0 {
            report.converge_time = Some(last_write.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if report.converge_time.is_some() {
        // Anything late (a redelivered old event) must not undo it.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let m = rows_of(&admin, &master_schema).await;
        let r = rows_of(&admin, &replica_schema).await;
        last = compare(&m, &r);
    }
    (report.lost, report.stale, report.examples) = last;
    for p in std::iter::once(&mut master).chain(replicas.iter_mut()) {
        if let Some(why) = p.exited() {
            report.crashed.push(why);
        }
    }
    // The replica processes write their figures every 250 ms.
    tokio::time::sleep(Duration::from_millis(600)).await;
    replica_figures(&dir, &mut report);
    report.dead_letters_left = broker.dead_letters(QUEUE).await;

    drop(replicas);
    drop(master);
    broker.stop();
    schemas.drop_all().await;
    if report.holds() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("the processes' logs are in {}", dir.display());
    }
    report
}

/// The run's schemas, dropped at the end, or on drop when the run panicked.
struct Schemas {
    admin: DatabaseConnection,
    names: Vec<String>,
}

impl Schemas {
    async fn drop_all(mut self) {
        for schema in std::mem::take(&mut self.names) {
            exec(
                &self.admin,
                &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
            )
            .await;
        }
    }
}

impl Drop for Schemas {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.names);
        if names.is_empty() {
            return;
        }
        crate::support::db::cleanup_detached(async move {
            if let Ok(admin) = Database::connect(ADMIN_URL).await {
                for schema in names {
                    let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
                    let _ = admin.execute_unprepared(&sql).await;
                }
            }
        });
    }
}
