//! The brokers of a run and the faults injected into it on a seeded schedule.
//!
//! RabbitMQ runs in a virtual host of the run's own on the machine's node: its connections are
//! killed with `rabbitmqctl close_all_connections` in that host. The node itself is not
//! restarted: it is shared with everything else on the machine, and a virtual host cannot be
//! restarted alone while it runs (`rabbitmqctl restart_vhost` only restarts a failed one).
//! Redis runs as a `redis-server` of the run's own on a free port, with an append-only file
//! fsynced at every write, so it is killed (`SIGKILL`) and started again as a broker restart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cqrs_sync::CqrsConfig;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait};
use tokio::task::JoinHandle;

use crate::support::rabbitmq::Vhost;
use crate::{Plan, Transport};

/// The broker of a run.
pub enum Broker {
    RabbitMq(Vhost),
    Redis(RedisServer),
}

impl Broker {
    pub fn start(transport: Transport, name: &str, dir: &Path) -> Self {
        match transport {
            Transport::RabbitMq => Self::RabbitMq(Vhost::create(name)),
            Transport::Redis => Self::Redis(RedisServer::start(dir)),
        }
    }

    /// The service configuration of the run's processes.
    pub fn config(&self) -> CqrsConfig {
        match self {
            Self::RabbitMq(vhost) => vhost
                .service_config()
                .with_rabbitmq_options(options("reconnect_min = 0.05\nreconnect_max = 1")),
            Self::Redis(server) => CqrsConfig::default()
                .with_url(server.url())
                .with_exchange("chaos")
                .with_redis_options(options(
                    "reconnect_min = 0.05\nreconnect_max = 1\nblock = 0.5",
                )),
        }
    }

    /// The messages in `queue`'s dead-letter queue.
    pub async fn dead_letters(&self, queue: &str) -> u64 {
        match self {
            Self::RabbitMq(vhost) => vhost.ready(&format!("dead_letter_{queue}")),
            Self::Redis(server) => {
                let config =
                    cqrs_sync::transports::redis::RedisConfig::from_cqrs_config(&self.config())
                        .unwrap_or_else(|e| panic!("{e}"));
                let _ = server;
                match cqrs_sync::transports::redis::RedisTransport::connect(config).await {
                    Ok((transport, _addr)) => transport
                        .inspect(queue)
                        .await
                        .map_or(u64::MAX, |s| s.dead_letters),
                    Err(_) => u64::MAX,
                }
            }
        }
    }

    /// Removes everything the run left on the broker.
    pub fn stop(self) {
        match self {
            // The guard deletes the virtual host with its queues.
            Self::RabbitMq(vhost) => drop(vhost),
            Self::Redis(server) => server.stop(),
        }
    }
}

fn options(text: &str) -> toml::Table {
    text.parse().unwrap_or_else(|e| panic!("{e}"))
}

/// A `redis-server` of the run's own.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Mutex<Option<Child>>,
}

impl RedisServer {
    fn start(run_dir: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("a free port: {e}"));
        let dir = run_dir.join("redis");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let server = Self {
            port,
            dir,
            child: Mutex::new(None),
        };
        server.spawn();
        server
    }

    fn spawn(&self) {
        let log =
            std::fs::File::create(self.dir.join("redis.log")).unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server: {e}"));
        *self.lock() = Some(child);
        let until = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < until, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Loaded its append-only file: it answers PING rather than LOADING.
        while self.client().is_err_and(|_| Instant::now() < until) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn client(&self) -> redis::RedisResult<redis::Connection> {
        let mut conn = redis::Client::open(self.url())?.get_connection()?;
        redis::cmd("PING").query::<String>(&mut conn)?;
        Ok(conn)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn kill(&self) {
        if let Some(mut child) = self.lock().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `kill -9` and start again on the same files.
    fn restart(&self, pause: Duration) {
        self.kill();
        std::thread::sleep(pause);
        self.spawn();
    }

    fn kill_clients(&self) -> bool {
        self.client().is_ok_and(|mut c| {
            redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("normal")
                .query::<i64>(&mut c)
                .is_ok()
        })
    }

    fn stop(&self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fault of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    KillReplica,
    KillMaster,
    CloseConnections,
    RestartBroker,
    TerminateBackends,
    LockTable,
    RefuseWrites,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Self::KillReplica => "kill -9 replica",
            Self::KillMaster => "kill -9 master",
            Self::CloseConnections => "broker kills connections",
            Self::RestartBroker => "broker restart",
            Self::TerminateBackends => "PostgreSQL backends terminated",
            Self::LockTable => "replica table locked",
            Self::RefuseWrites => "replica table refuses writes",
        }
    }
}

/// The seeded schedule, and what it did.
pub struct Faults<'a> {
    rng: fastrand::Rng,
    every: (u64, u64),
    broker: &'a Broker,
    app: String,
    table: String,
    schema: String,
    /// Locks and refusals still holding, released in the background.
    holding: Vec<JoinHandle<()>>,
    pub counts: BTreeMap<&'static str, u32>,
    pub skipped: Vec<String>,
}

impl<'a> Faults<'a> {
    pub fn new(plan: &Plan, broker: &'a Broker, app: &str, replica_schema: &str) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(plan.seed),
            every: plan.fault_every,
            broker,
            app: app.to_owned(),
            table: format!("{replica_schema}.chaos_row"),
            schema: replica_schema.to_owned(),
            holding: Vec::new(),
            counts: BTreeMap::new(),
            skipped: Vec::new(),
        }
    }

    /// How long until the next fault.
    pub fn pause(&mut self) -> Duration {
        Duration::from_millis(self.rng.u64(self.every.0..=self.every.1))
    }

    /// How long a killed process stays down.
    pub fn restart_pause(&mut self) -> Duration {
        Duration::from_millis(self.rng.u64(0..=1_000))
    }

    pub fn pick(&mut self, n: usize) -> usize {
        self.rng.usize(0..n)
    }

    /// The next fault, counted.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Fault {
        let roll = self.rng.u32(0..100);
        let mut fault = match roll {
            0..25 => Fault::KillReplica,
            25..35 => Fault::KillMaster,
            35..50 => Fault::CloseConnections,
            50..58 => Fault::RestartBroker,
            58..72 => Fault::TerminateBackends,
            72..86 => Fault::LockTable,
            _ => Fault::RefuseWrites,
        };
        if fault == Fault::RestartBroker && !matches!(self.broker, Broker::Redis(_)) {
            let why = "broker restart (RabbitMQ): the node is shared with the machine's other \
                       users and a running virtual host cannot be restarted alone; connection \
                       kills instead";
            if self.skipped.is_empty() {
                self.skipped.push(why.to_owned());
            }
            fault = Fault::CloseConnections;
        }
        *self.counts.entry(fault.name()).or_default() += 1;
        fault
    }

    /// Injects a fault that is not a process kill.
    pub async fn inject(&mut self, fault: Fault, admin: &DatabaseConnection) {
        match fault {
            Fault::CloseConnections => match self.broker {
                Broker::RabbitMq(vhost) => vhost.close_all_connections().await,
                Broker::Redis(server) => {
                    server.kill_clients();
                }
            },
            Fault::RestartBroker => {
                if let Broker::Redis(server) = self.broker {
                    let pause = Duration::from_millis(self.rng.u64(100..=1_500));
                    server.restart(pause);
                }
            }
            Fault::TerminateBackends => {
                let sql = format!(
                    "SELECT count(pg_terminate_backend(pid))::BIGINT AS n FROM pg_stat_activity \
                     WHERE application_name = '{}'",
                    self.app
                );
                if let Err(e) = admin
                    .query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
                    .await
                {
                    eprintln!("terminating backends: {e}");
                }
            }
            Fault::LockTable => {
                let hold = Duration::from_millis(self.rng.u64(500..=3_000));
                let (admin, table) = (admin.clone(), self.table.clone());
                self.holding.push(tokio::spawn(async move {
                    let Ok(txn) = admin.begin().await else { return };
                    let lock = format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE");
                    if txn.execute_unprepared(&lock).await.is_ok() {
                        tokio::time::sleep(hold).await;
                    }
                    let _ = txn.commit().await;
                }));
            }
            Fault::RefuseWrites => {
                let hold = Duration::from_millis(self.rng.u64(500..=3_000));
                let (admin, table, schema) =
                    (admin.clone(), self.table.clone(), self.schema.clone());
                self.holding.push(tokio::spawn(async move {
                    let create = format!(
                        "CREATE OR REPLACE FUNCTION {schema}.chaos_refuse() RETURNS trigger \
                         LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'writes refused for a \
                         while' USING ERRCODE = '55006'; END $$; \
                         CREATE OR REPLACE TRIGGER chaos_refuse BEFORE INSERT OR UPDATE OR DELETE ON {table} \
                         FOR EACH ROW EXECUTE FUNCTION {schema}.chaos_refuse()"
                    );
                    if let Err(e) = admin.execute_unprepared(&create).await {
                        eprintln!("refusing writes: {e}");
                        return;
                    }
                    tokio::time::sleep(hold).await;
                    let drop = format!("DROP TRIGGER IF EXISTS chaos_refuse ON {table}");
                    while let Err(e) = admin.execute_unprepared(&drop).await {
                        eprintln!("{drop}: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }));
            }
            Fault::KillReplica | Fault::KillMaster => unreachable!("the run kills processes"),
        }
    }

    /// Waits until every lock and refusal is released.
    pub async fn settle(&mut self) {
        for h in self.holding.drain(..) {
            let _ = h.await;
        }
    }
}
