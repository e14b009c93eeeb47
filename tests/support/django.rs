//! The real django-cqrs 3.1.0 from PyPI as a peer: the Django project in `tests/django_wire/`,
//! run with the virtualenv `target/django-venv` that `tests/django_wire/setup-venv.sh` creates
//! on first use; its tables read back through Django (`wire_dump`), normalised; and the
//! RabbitMQ objects of a test in the virtual host `/` (django-cqrs 3.1.0 always uses it), so
//! each test has its own exchange and queues there and deletes them at the end.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use actix::Addr;
use cqrs_sync::transport::Declare;
use cqrs_sync::transports::rabbitmq::{RabbitMqConfig, RabbitMqTransport, Teardown};
use cqrs_sync::{CqrsConfig, TransportHandle};
use serde_json::Value;

/// How long a replica may take to converge.
pub const PATIENCE: Duration = Duration::from_secs(90);
/// The broker, without a virtual host (django-cqrs 3.1.0 ignores it).
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The virtualenv's python, created on first use by `tests/django_wire/setup-venv.sh` (once per
/// process; the script's lock file queues other test processes behind the one that builds it),
/// or `CQRS_DJANGO_PYTHON` when set.
fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            if let Some(python) = std::env::var_os("CQRS_DJANGO_PYTHON") {
                return PathBuf::from(python);
            }
            let script = root().join("tests/django_wire/setup-venv.sh");
            let out = Command::new("bash")
                .arg(&script)
                .env("CQRS_DJANGO_VENV", root().join("target/django-venv"))
                .output()
                .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
            assert!(
                out.status.success(),
                "{} could not create the virtualenv with django-cqrs 3.1.0 (it needs python3 \
                 and the PyPI registry): {}{}",
                script.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            root().join("target/django-venv/bin/python")
        })
        .clone()
}

/// One Django process configuration: a role, its database, the exchange and queue.
pub struct Django {
    python: PathBuf,
    role: &'static str,
    db: PathBuf,
    exchange: String,
    queue: String,
}

impl Django {
    /// A `role` (`master` or `replica`) with the database `<dir>/<role>.sqlite3`, migrated.
    pub fn new(role: &'static str, dir: &Path, exchange: &str, queue: &str) -> Self {
        Self::with_db(role, dir.join(format!("{role}.sqlite3")), exchange, queue)
    }

    /// A `role` with the database `db`, migrated (`migrate --run-syncdb` creates the role's
    /// tables: `master_app_author` or `replica_app_author`).
    pub fn with_db(role: &'static str, db: PathBuf, exchange: &str, queue: &str) -> Self {
        let django = Self {
            python: python(),
            role,
            db,
            exchange: exchange.to_owned(),
            queue: queue.to_owned(),
        };
        django.run(&["migrate", "--run-syncdb", "-v", "0"]);
        django
    }

    /// The SQLite file.
    pub fn db(&self) -> &Path {
        &self.db
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.python);
        cmd.arg(root().join("tests/django_wire/manage.py"))
            .args(args)
            .env("WIRE_ROLE", self.role)
            .env("WIRE_DB", &self.db)
            .env("WIRE_AMQP_URL", AMQP_URL)
            .env("WIRE_EXCHANGE", &self.exchange)
            .env("WIRE_QUEUE", &self.queue)
            .env("PYTHONDONTWRITEBYTECODE", "1");
        cmd
    }

    /// Runs a management command and returns its standard output.
    pub fn run(&self, args: &[&str]) -> String {
        self.output(args, b"").0
    }

    /// Runs a management command with `stdin` and returns its standard output and error;
    /// panics with them unless it exits 0.
    pub fn output(&self, args: &[&str], stdin: &[u8]) -> (String, String) {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("manage.py {args:?}: {e}"));
        let mut pipe = child.stdin.take().unwrap_or_else(|| panic!("stdin"));
        let input = stdin.to_vec();
        // On a thread: a command that writes before it has read everything cannot block us.
        let writer = std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("manage.py {args:?}: {e}"));
        let _ = writer.join();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(
            out.status.success(),
            "manage.py {args:?} ({}) failed: {stderr}",
            self.role
        );
        (stdout, stderr)
    }

    /// The author table, normalised.
    pub fn table(&self) -> Table {
        self.dump(&[])
            .iter()
            .map(|r| normalise(r, r["cqrs_revision"].as_i64().unwrap_or(-1)))
            .collect()
    }

    /// The author table with each row's `cqrs_updated`, normalised: what a replica or a bulk
    /// load must keep exactly.
    pub fn rows(&self) -> Rows {
        self.dump(&["--updated"])
            .iter()
            .map(|r| {
                let (id, row) = normalise(r, r["cqrs_revision"].as_i64().unwrap_or(-1));
                let updated = r["cqrs_updated"].as_str().unwrap_or_default();
                let updated = chrono::DateTime::parse_from_rfc3339(updated)
                    .unwrap_or_else(|e| panic!("cqrs_updated {updated:?}: {e}"))
                    .with_timezone(&chrono::Utc)
                    .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                    .to_string();
                (id, (row, updated))
            })
            .collect()
    }

    fn dump(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["wire_dump"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.run(&all)).unwrap_or_else(|e| panic!("wire_dump output: {e}"))
    }

    /// Starts `cqrs_consume` in a process group of its own (it forks workers).
    pub fn consume(&self) -> DjangoConsumer {
        let child = self
            .command(&["cqrs_consume", "-w", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cqrs_consume: {e}"));
        DjangoConsumer(child)
    }
}

/// A running `cqrs_consume`, stopped with its workers on drop.
pub struct DjangoConsumer(Child);

impl Drop for DjangoConsumer {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.wait();
    }
}

/// A row: `(name, rating with two decimals, birth date, revision)`.
pub type Row = (String, String, Option<String>, i64);
/// `id -> row`.
pub type Table = BTreeMap<i64, Row>;
/// `id -> (row, cqrs_updated in UTC with microseconds)`.
pub type Rows = BTreeMap<i64, (Row, String)>;

/// A row of `wire_dump` or of an `instance_data`, as `(id, row)` with `revision`.
pub fn normalise(row: &Value, revision: i64) -> (i64, Row) {
    let rating = match &row["rating"] {
        Value::String(s) => s.parse::<f64>().unwrap_or(f64::NAN),
        other => other.as_f64().unwrap_or(f64::NAN),
    };
    (
        row["id"].as_i64().unwrap_or(-1),
        (
            row["name"].as_str().unwrap_or_default().to_owned(),
            format!("{rating:.2}"),
            row["birth_date"].as_str().map(str::to_owned),
            revision,
        ),
    )
}

/// Polls a Django table (off the runtime) until it equals `expected`.
pub async fn wait_django(django: &Django, expected: &Table) {
    wait_equal("the Django table", expected, || django.table()).await;
}

/// Polls a Django table with its `cqrs_updated` until it equals `expected`.
pub async fn wait_rows(what: &str, django: &Django, expected: &Rows) {
    wait_equal(what, expected, || django.rows()).await;
}

async fn wait_equal<T: PartialEq + std::fmt::Debug>(
    what: &str,
    expected: &T,
    mut read: impl FnMut() -> T,
) {
    let end = Instant::now() + PATIENCE;
    loop {
        let got = read();
        if &got == expected {
            return;
        }
        assert!(
            Instant::now() < end,
            "{what} did not converge within {PATIENCE:?}:\n got {got:?}\nwant {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A Rust service's configuration: the test's exchange in the virtual host `/`.
pub fn service(exchange: &str) -> CqrsConfig {
    CqrsConfig::default()
        .with_url(format!("{AMQP_URL}/%2f?connection_name=cqrs-wire"))
        .with_exchange(exchange)
}

/// A Rust transport on the test's exchange in the virtual host `/`.
pub async fn transport(exchange: &str) -> (TransportHandle, Addr<RabbitMqTransport>) {
    let config =
        RabbitMqConfig::from_cqrs_config(&service(exchange)).unwrap_or_else(|e| panic!("{e}"));
    RabbitMqTransport::connect(config)
        .await
        .unwrap_or_else(|e| panic!("RabbitMQ on 127.0.0.1:5672: {e}"))
}

/// Declares a replica's queue of `author` as django-cqrs and the Rust replicas do (same
/// arguments, so the declarations agree), so that it exists before anything is published and
/// is deleted by [`teardown`].
pub async fn declare_queue(transport: &TransportHandle, queue: &str) {
    transport
        .declare(Declare {
            queue: queue.to_owned(),
            dead_letter_queue: format!("dead_letter_{queue}"),
            cqrs_ids: vec!["author".into()],
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Deletes the queues declared through the transport and the exchange.
pub async fn teardown(addr: &Addr<RabbitMqTransport>) {
    addr.send(Teardown { exchange: true })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("teardown: {e}"));
}

/// A new temporary directory (the caller removes it).
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(super::unique(name));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    dir
}
