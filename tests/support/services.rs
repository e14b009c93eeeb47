//! The example services (`examples/master.rs`, `examples/replica.rs`) as child processes:
//! the built binaries found next to the test's, started with an environment of the test's own
//! on a free port, called over HTTP, stopped by SIGTERM, killed on drop (their log printed
//! when a test fails).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::http::{Response, request};

/// How long a service may take to start, stop or show a change.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A directory of the run's own (the services' logs, SQLite files), removed on drop.
pub struct RunDir(pub PathBuf);

impl RunDir {
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(super::unique("cqrs_svc"));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Self(path)
    }

    /// The URL of a SQLite file here, created on first connection.
    pub fn sqlite(&self, name: &str) -> String {
        format!(
            "sqlite://{}?mode=rwc",
            self.0.join(format!("{name}.sqlite3")).display()
        )
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A built example binary next to this test's (`target/<profile>/examples/<name>`).
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    // target/<profile>/deps/example_services-<hash>
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("no target directory above {}", exe.display()));
    let path = profile
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is not built: run `cargo build --all-features --examples` first \
         (`cargo test --workspace --all-features` builds it too)",
        path.display()
    );
    path
}

/// A free port on 127.0.0.1 (taken by the child right after).
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("a free port: {e}"))
}

/// An example service running as a child process; killed on drop unless stopped.
pub struct Service {
    pub name: &'static str,
    child: Option<Child>,
    addr: SocketAddr,
    log: PathBuf,
}

impl Service {
    /// Starts `examples/<name>` with `env` (and nothing of this process's configuration) on
    /// a free port and waits until `GET /health` answers 200.
    pub async fn start(name: &'static str, env: &[(&str, String)], dir: &RunDir) -> Self {
        let addr = free_addr();
        let log = dir.0.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
        let err = file.try_clone().unwrap_or_else(|e| panic!("{e}"));
        let mut cmd = Command::new(example_binary(name));
        for (var, _) in std::env::vars() {
            if var.starts_with("CQRS_")
                || ["DATABASE_URL", "HTTP_ADDR", "RUST_LOG"].contains(&var.as_str())
            {
                cmd.env_remove(var);
            }
        }
        cmd.envs(env.iter().map(|(k, v)| (*k, v)))
            .env("HTTP_ADDR", addr.to_string())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut service = Self {
            name,
            child: Some(child),
            addr,
            log,
        };
        let end = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = service
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("{name} exited at start ({status}):\n{}", service.log());
            }
            if service
                .try_call("GET", "/health", None)
                .await
                .is_ok_and(|r| r.status == 200)
            {
                return service;
            }
            assert!(
                Instant::now() < end,
                "{name} did not start:\n{}",
                service.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `method path` with these body bytes, on a blocking thread (the test's runtime goes on).
    pub async fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> std::io::Result<Response> {
        let (addr, method, path) = (self.addr, method.to_owned(), path.to_owned());
        tokio::task::spawn_blocking(move || request(addr, &method, &path, body.as_deref()))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `method path` with a JSON body; panics (with the service's log) when it cannot connect.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Response {
        let body = body.map(|b| b.to_string().into_bytes());
        self.try_call(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{} {method} {path}: {e}\n{}", self.name, self.log()))
    }

    /// `method path` with these bytes as the body.
    pub async fn call_raw(&self, method: &str, path: &str, body: &[u8]) -> Response {
        self.try_call(method, path, Some(body.to_vec()))
            .await
            .unwrap_or_else(|e| panic!("{} {method} {path}: {e}\n{}", self.name, self.log()))
    }

    /// Polls `GET path` until `check` holds; panics after [`PATIENCE`] with the last answer.
    pub async fn eventually(
        &self,
        path: &str,
        what: &str,
        check: impl Fn(&Response) -> bool,
    ) -> Response {
        let end = Instant::now() + PATIENCE;
        loop {
            let answer = self.call("GET", path, None).await;
            if check(&answer) {
                return answer;
            }
            assert!(
                Instant::now() < end,
                "timed out waiting for {what} ({path}); last answer {} {}\n{}",
                answer.status,
                answer.body,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM and waits up to [`PATIENCE`] for the exit: the exit code (`None`: killed
    /// by a signal) and the log.
    pub async fn stop(mut self) -> (Option<i32>, String) {
        let mut child = self.child.take().unwrap_or_else(|| panic!("stopped twice"));
        let pid = child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        let end = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = child.try_wait().unwrap_or_else(|e| panic!("{e}")) {
                return (status.code(), self.log());
            }
            if Instant::now() >= end {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} still running {PATIENCE:?} after SIGTERM:\n{}",
                    self.name,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!("--- {} log ---\n{}", self.name, self.log());
            }
        }
    }
}
