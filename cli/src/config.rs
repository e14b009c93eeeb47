//! The standalone command's configuration file: the service configuration (`url`, `exchange`,
//! `queue`, `[replica]`, `[rabbitmq]`, ...) plus the database and the tables by CQRS id.
//!
//! ```toml
//! url = "amqp://guest:guest@127.0.0.1:5672/"
//! exchange = "cqrs"
//! queue = "reports"
//! database_url = "postgres://postgres@127.0.0.1/reports"
//!
//! [replicas.author]                    # CQRS id
//! table = "replica_app_author"         # columns are read from the database
//! keys = { publisher = "publisher_id" } # master key = column (default: same name)
//! only_direct_syncs = false
//! select_for_update = false
//!
//! [masters.book]                       # for bulk-dump, sync and the diff tools
//! table = "master_app_book"
//! keys = { author = "author_id" }
//! fields = ["id", "title", "author_id"] # default: every column
//! ```
//!
//! `CQRS_DATABASE_URL` overrides `database_url`; the other `CQRS_*` variables override the
//! service configuration as usual.

use std::collections::BTreeMap;
use std::path::Path;

use cqrs_actors::{CqrsConfig, ReplicaModel, SecretUrl};
use cqrs_orm_adapters::{MasterView, ReplicaTable};
use serde::Deserialize;

use crate::error::{CliError, CliResult};
use crate::tools::Tools;

/// The keys of the file that are the command's own, not the service configuration's.
const OWN_KEYS: [&str; 3] = ["database_url", "replicas", "masters"];

/// The tables part of the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TablesFile {
    database_url: Option<SecretUrl>,
    #[serde(default)]
    replicas: BTreeMap<String, ReplicaEntry>,
    #[serde(default)]
    masters: BTreeMap<String, MasterEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplicaEntry {
    table: String,
    #[serde(default)]
    keys: BTreeMap<String, String>,
    #[serde(default)]
    only_direct_syncs: bool,
    #[serde(default)]
    select_for_update: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MasterEntry {
    table: String,
    #[serde(default)]
    keys: BTreeMap<String, String>,
    fields: Option<Vec<String>>,
}

impl Tools {
    /// Reads the configuration file at `path` (none: the environment alone) and the `CQRS_*`
    /// variables, connects the database it names and reads each table's columns from it.
    pub async fn from_file(path: Option<&Path>) -> CliResult<Self> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| CliError::usage(format!("configuration file {}: {e}", p.display())))?,
            None => String::new(),
        };
        Self::from_sources(&text, std::env::vars()).await
    }

    /// [`from_file`](Self::from_file) over a TOML text and an environment.
    pub async fn from_sources(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> CliResult<Self> {
        let mut document: toml::Table = toml::from_str(text)
            .map_err(|e| CliError::usage(format!("configuration: {}", e.message())))?;
        let mut own = toml::Table::new();
        for key in OWN_KEYS {
            if let Some(v) = document.remove(key) {
                own.insert(key.to_owned(), v);
            }
        }
        let mut service_env = Vec::new();
        for (name, value) in env {
            if name == "CQRS_DATABASE_URL" {
                own.insert("database_url".into(), toml::Value::String(value));
            } else if name != "CQRS_CONFIG" {
                service_env.push((name, value));
            }
        }
        let tables: TablesFile = own.try_into().map_err(|e: toml::de::Error| {
            CliError::usage(format!("configuration: {}", e.message()))
        })?;
        let service = toml::to_string(&document)
            .map_err(|e| CliError::usage(format!("configuration: {e}")))?;
        let config = CqrsConfig::from_sources(&service, service_env)?;
        let connector = cqrs_transports::UrlConnector;
        let mut tools = Tools::new(config, connector);
        if tables.replicas.is_empty() && tables.masters.is_empty() {
            return Ok(tools);
        }
        let Some(url) = &tables.database_url else {
            return Err(CliError::usage(
                "the configuration names tables but no database_url (or CQRS_DATABASE_URL)",
            ));
        };
        let db = connect(url).await?;
        for (cqrs_id, entry) in tables.replicas {
            let renames: Vec<(&str, &str)> = entry
                .keys
                .iter()
                .map(|(k, c)| (k.as_str(), c.as_str()))
                .collect();
            let table = ReplicaTable::introspect(db.clone(), &entry.table)
                .await
                .map_err(|e| table_error(&cqrs_id, e))?
                .with_renames(renames)
                .map_err(|e| table_error(&cqrs_id, e))?
                .with_select_for_update(entry.select_for_update);
            let (id, t, direct) = (cqrs_id.clone(), table.clone(), entry.only_direct_syncs);
            tools = tools.replica_with(cqrs_id, table, move || {
                ReplicaModel::new(id.clone(), t.clone()).with_only_direct_syncs(direct)
            });
        }
        for (cqrs_id, entry) in tables.masters {
            let mut view = MasterView::introspect(cqrs_id.clone(), db.clone(), &entry.table)
                .await
                .map_err(|e| table_error(&cqrs_id, e))?
                .with_wire_keys(entry.keys.iter().map(|(k, c)| (c.as_str(), k.as_str())))
                .map_err(|e| table_error(&cqrs_id, e))?;
            if let Some(fields) = &entry.fields {
                view = view
                    .with_fields(fields.iter().map(String::as_str))
                    .map_err(|e| table_error(&cqrs_id, e))?;
            }
            tools = tools.master(view);
        }
        Ok(tools)
    }
}

/// Connects the database; the error names the URL without its password.
async fn connect(url: &SecretUrl) -> CliResult<sea_orm::DatabaseConnection> {
    let mut options = sea_orm::ConnectOptions::new(url.expose().to_owned());
    options.max_connections(8).sqlx_logging(false);
    sea_orm::Database::connect(options).await.map_err(|e| {
        let redacted = url.redacted();
        let message = e.to_string().replace(url.expose(), &redacted);
        CliError::Runtime(cqrs_actors::Error::new(
            cqrs_actors::ErrorKind::Unavailable,
            format!("database {redacted}: {message}"),
        ))
    })
}

fn table_error(cqrs_id: &str, e: cqrs_actors::Error) -> CliError {
    let message = format!("[{cqrs_id}]: {e}");
    if e.kind() == cqrs_actors::ErrorKind::Config {
        CliError::Usage(message)
    } else {
        CliError::Runtime(cqrs_actors::Error::new(e.kind(), message))
    }
}
