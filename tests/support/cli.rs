//! Running the `cqrs` binary as a user does: configuration files in a directory of the test's
//! own, commands with their stdin, exit code, stdout and stderr, and `consume` as a child
//! process stopped by a signal.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sea_orm::ConnectionTrait;

use super::db::{Backend, TestDb};

/// A directory for one test's files, removed on drop.
pub struct Dir(pub PathBuf);

impl Dir {
    pub fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(super::unique(&format!("cqrs_cli_{name}")));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Self(path)
    }

    /// Writes `text` to `name` and answers its path.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a command did.
#[derive(Debug)]
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    fn of(out: Output) -> Self {
        Self {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Panics with the output unless the command exited 0.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "the command failed: {self:#?}");
        self
    }

    /// Panics unless the command exited `code` with `text` in stderr.
    #[track_caller]
    pub fn fails(self, code: i32, text: &str) -> Self {
        assert_eq!(self.code, code, "{self:#?}");
        assert!(self.stderr.contains(text), "expected {text:?} in {self:#?}");
        self
    }

    /// stdout's lines.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

fn command(config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cqrs"));
    // The test's environment must not configure the command behind its back.
    for (name, _) in std::env::vars() {
        if name.starts_with("CQRS_") {
            cmd.env_remove(name);
        }
    }
    cmd.arg("--config").arg(config).args(args);
    cmd
}

/// Runs `cqrs --config <config> <args>` with `stdin`, on a thread (the test's runtime goes on).
pub async fn run(config: &Path, args: &[&str], stdin: &[u8]) -> Ran {
    let mut cmd = command(config, args);
    let input = stdin.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cqrs: {e}"));
        let mut pipe = child.stdin.take().unwrap_or_else(|| panic!("stdin"));
        let writer = std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("cqrs: {e}"));
        let _ = writer.join();
        Ran::of(out)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// A shell pipeline of `cqrs` commands (`a | b | c`), each with its own configuration.
pub async fn pipeline(stages: &[(&Path, &[&str])]) -> Ran {
    let line = stages
        .iter()
        .map(|(config, args)| {
            let mut words = vec![
                env!("CARGO_BIN_EXE_cqrs").to_owned(),
                "--config".into(),
                config.display().to_string(),
            ];
            words.extend(args.iter().map(|a| (*a).to_owned()));
            words
                .iter()
                .map(|w| format!("'{}'", w.replace('\'', "'\\''")))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join(" | ");
    let mut cmd = Command::new("bash");
    cmd.arg("-o").arg("pipefail").arg("-c").arg(line);
    for (name, _) in std::env::vars() {
        if name.starts_with("CQRS_") {
            cmd.env_remove(name);
        }
    }
    tokio::task::spawn_blocking(move || Ran::of(cmd.output().unwrap_or_else(|e| panic!("{e}"))))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `cqrs consume` in the background; killed on drop unless stopped.
pub struct Consumer {
    child: Option<Child>,
    stderr: PathBuf,
}

impl Consumer {
    /// Starts `cqrs --config <config> consume <args>` and waits until it says it consumes.
    pub async fn start(config: &Path, args: &[&str], dir: &Dir) -> Self {
        let stderr = dir.path(&super::unique("consume.err"));
        let file = std::fs::File::create(&stderr).unwrap_or_else(|e| panic!("{e}"));
        let mut all = vec!["consume"];
        all.extend_from_slice(args);
        let child = command(config, &all)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cqrs consume: {e}"));
        let consumer = Self {
            child: Some(child),
            stderr,
        };
        let end = Instant::now() + Duration::from_secs(30);
        while !consumer.log().contains("consuming ") {
            assert!(
                Instant::now() < end,
                "consume did not start: {}",
                consumer.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        consumer
    }

    /// What it wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Sends `signal` (`-TERM`, `-INT`) and waits for the exit code.
    pub async fn stop(mut self, signal: &str) -> (i32, String) {
        let child = self.child.take().unwrap_or_else(|| panic!("stopped twice"));
        let pid = child.id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill {signal} {pid}");
        (exit_code(child).await, self.log())
    }
}

impl Consumer {
    /// Sends SIGINT twice in a row and waits for the exit code.
    pub async fn stop_twice(mut self) -> (i32, String) {
        let child = self.child.take().unwrap_or_else(|| panic!("stopped twice"));
        let pid = child.id().to_string();
        for _ in 0..2 {
            let status = Command::new("kill").args(["-INT", &pid]).status();
            assert!(status.is_ok_and(|s| s.success()), "kill -INT {pid}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (exit_code(child).await, self.log())
    }
}

/// Waits for `child` on a thread (the test's runtime goes on) and answers its exit code.
async fn exit_code(mut child: Child) -> i32 {
    tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"))
        .code()
        .unwrap_or(-1)
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The column types of a Django-shaped `book` table on each database.
fn book_ddl(backend: Backend, table: &str, title_null: bool) -> String {
    let (updated, json) = match backend {
        Backend::Postgres => ("TIMESTAMP WITH TIME ZONE", "JSONB NULL"),
        Backend::MySql => ("DATETIME(6)", "LONGTEXT NULL CHECK (json_valid(`extra`))"),
        Backend::Sqlite => (
            "datetime",
            "text NULL CHECK (JSON_VALID(\"extra\") OR \"extra\" IS NULL)",
        ),
    };
    let title = if title_null { "NULL" } else { "NOT NULL" };
    format!(
        "CREATE TABLE {table} (id BIGINT PRIMARY KEY, title VARCHAR(200) {title}, \
         price DECIMAL(10, 2) NOT NULL, published DATE NULL, extra {json}, \
         author_id INTEGER NULL, cqrs_revision INTEGER NOT NULL, cqrs_updated {updated} NOT NULL)"
    )
}

/// Creates a `book` table.
pub async fn create_book(db: &TestDb, table: &str, title_null: bool) {
    let ddl = book_ddl(db.backend, table, title_null);
    db.db
        .execute_unprepared(&ddl)
        .await
        .unwrap_or_else(|e| panic!("{ddl}: {e}"));
}

/// Fills `table` with books `1..=rows`, in one statement: a title, a price, every third
/// without a publication date, some JSON, an author for most.
pub async fn fill_books(db: &TestDb, table: &str, rows: u64) {
    let sql = match db.backend {
        Backend::Postgres => format!(
            "INSERT INTO {table} SELECT g, 'Book ' || g, g * 1.25, \
             CASE WHEN g % 3 = 0 THEN NULL ELSE DATE '2020-01-01' + (g % 1000)::int END, \
             jsonb_build_object('n', g), NULLIF(g % 7, 0), g % 5, \
             TIMESTAMP WITH TIME ZONE '2026-11-30 10:00:00.5+00' + g * INTERVAL '1 second' \
             FROM generate_series(1, {rows}) g"
        ),
        Backend::MySql => format!(
            "INSERT INTO {table} SELECT seq, CONCAT('Book ', seq), seq * 1.25, \
             IF(seq % 3 = 0, NULL, DATE '2020-01-01' + INTERVAL (seq % 1000) DAY), \
             JSON_OBJECT('n', seq), NULLIF(seq % 7, 0), seq % 5, \
             TIMESTAMP '2026-11-30 10:00:00.5' + INTERVAL seq SECOND \
             FROM seq_1_to_{rows}"
        ),
        Backend::Sqlite => format!(
            "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {rows}) \
             INSERT INTO {table} SELECT n, 'Book ' || n, n * 1.25, \
             CASE WHEN n % 3 = 0 THEN NULL ELSE date('2020-01-01', '+' || (n % 1000) || ' days') END, \
             json_object('n', n), NULLIF(n % 7, 0), n % 5, \
             strftime('%Y-%m-%d %H:%M:%f', '2026-11-30 10:00:00.5', '+' || n || ' seconds') \
             FROM g"
        ),
    };
    db.db
        .execute_unprepared(&sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A configuration file: the broker `url`/`exchange`/`queue` lines, the database, then
/// `tables` (the `[replicas.*]` / `[masters.*]` sections).
pub fn config_text(broker: &str, db: &TestDb, tables: &str) -> String {
    format!("{broker}\ndatabase_url = \"{}\"\n{tables}\n", db.url())
}
