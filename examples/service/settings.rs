//! Where a service's settings come from: the file `CQRS_CONFIG` names (if any), then the
//! environment.
//!
//! | setting | variable | file key | default |
//! |---|---|---|---|
//! | broker | `CQRS_URL` | `url` | none: `amqp://...` or `redis://...` is required |
//! | exchange | `CQRS_EXCHANGE` | `exchange` | `cqrs` |
//! | replica queue | `CQRS_QUEUE` | `queue` | `replica` (the replica) |
//! | anything else of [`CqrsConfig`] | `CQRS_<KEY>`, `CQRS_<SECTION>__<KEY>` | `[replica]`, `[rabbitmq]`, ... | |
//! | database | `DATABASE_URL` | `database_url` | `sqlite://<service>.db?mode=rwc` |
//! | HTTP address | `HTTP_ADDR` | `http_addr` | `127.0.0.1:8000` (master), `127.0.0.1:8001` (replica) |
//!
//! The `CQRS_*` variables are read by [`CqrsConfig::from_sources`], the function behind
//! [`CqrsConfig::load`], given the file without the two keys that are the service's own
//! (`database_url`, `http_addr`) and the environment without `CQRS_CONFIG` (a file path, not
//! a setting: `load` would refuse it as an unknown key).

use std::error::Error;

use cqrs_sync::{CqrsConfig, SecretUrl};
use sea_orm::{ConnectOptions, Database, DatabaseConnection};

/// What a service starts from.
#[derive(Debug)]
pub struct Settings {
    /// The service configuration (broker URL, exchange, queue, ...).
    pub cqrs: CqrsConfig,
    /// The database; its password never reaches a log (`Debug` hides it).
    pub database_url: SecretUrl,
    /// Where the HTTP server listens.
    pub http_addr: String,
}

/// A service's defaults for the settings that are its own.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    /// `DATABASE_URL` when neither the environment nor the file gives one.
    pub database_url: &'static str,
    /// `HTTP_ADDR` likewise.
    pub http_addr: &'static str,
}

impl Settings {
    /// Reads the file `CQRS_CONFIG` names, then the environment over it. A broker of this
    /// process alone (`memory://`, the configuration's default) is refused: the master and the
    /// replica are two processes.
    pub fn load(defaults: Defaults) -> Result<Self, Box<dyn Error>> {
        let text = match std::env::var_os("CQRS_CONFIG") {
            Some(path) => std::fs::read_to_string(&path).map_err(|e| {
                format!(
                    "CQRS_CONFIG: {}: {e}",
                    std::path::Path::new(&path).display()
                )
            })?,
            None => String::new(),
        };
        let mut document: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| format!("CQRS_CONFIG: {}", e.message()))?;
        // The service's own keys leave the document either way: the configuration has none.
        let mut own = |key: &str, variable: &str, default: &str| -> Result<String, String> {
            let in_file = match document.remove(key) {
                Some(toml::Value::String(value)) => Some(value),
                Some(other) => {
                    return Err(format!(
                        "CQRS_CONFIG: {key} is a {}, not a string",
                        other.type_str()
                    ));
                }
                None => None,
            };
            Ok(std::env::var(variable)
                .ok()
                .or(in_file)
                .unwrap_or_else(|| default.to_owned()))
        };
        let database_url =
            SecretUrl::new(own("database_url", "DATABASE_URL", defaults.database_url)?);
        let http_addr = own("http_addr", "HTTP_ADDR", defaults.http_addr)?;
        let service = toml::to_string(&document)?;
        let environment = std::env::vars().filter(|(name, _)| name != "CQRS_CONFIG");
        let cqrs = CqrsConfig::from_sources(&service, environment)?;
        if cqrs.url().scheme() == "memory" {
            return Err(
                "CQRS_URL: give the broker both services use, amqp://... or redis://... \
                        (memory:// lives in one process)"
                    .into(),
            );
        }
        Ok(Self {
            cqrs,
            database_url,
            http_addr,
        })
    }

    /// Connects a pool of at most `size` connections to the database (one for SQLite, which
    /// takes one writer at a time). Statements are not logged.
    pub async fn connect(&self, size: u32) -> Result<DatabaseConnection, Box<dyn Error>> {
        let url = self.database_url.expose();
        let size = if url.starts_with("sqlite:") { 1 } else { size };
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .max_connections(size)
            .min_connections(1)
            .connect_timeout(std::time::Duration::from_secs(10))
            .sqlx_logging(false);
        Database::connect(options)
            .await
            .map_err(|e| format!("DATABASE_URL {}: {e}", self.database_url.redacted()).into())
    }
}

/// Starts the log on stderr, coloured on a terminal only: `RUST_LOG` filters it (default:
/// `info`, SQL drivers at `warn`).
pub fn init_tracing() {
    let stderr = std::io::stderr();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&stderr))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,sea_orm=warn".into()),
        )
        .init();
}
