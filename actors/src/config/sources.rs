//! Where a configuration comes from: a TOML document and the `CQRS_*` environment variables
//! over it (see the [module docs](super) for the keys).

use std::path::Path;

use super::CqrsConfig;
use crate::error::{Error, Result};

/// The variable naming the configuration file `load` reads when given no path; not a key.
const CONFIG_VAR: &str = "CQRS_CONFIG";

impl CqrsConfig {
    /// Reads a TOML document (no environment), validated.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let config: Self =
            toml::from_str(text).map_err(|e| Error::config("config", e.message()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads the TOML file at `path` (without one: the file the variable `CQRS_CONFIG` names,
    /// if set), then the process's `CQRS_*` environment variables over it, and validates the
    /// result.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        Self::load_with(path, std::env::vars().collect())
    }

    fn load_with(path: Option<&Path>, env: Vec<(String, String)>) -> Result<Self> {
        let named = env
            .iter()
            .find(|(name, _)| name == CONFIG_VAR)
            .map(|(_, file)| Path::new(file));
        let (path, key) = match path {
            Some(p) => (Some(p), "config file"),
            None => (named, CONFIG_VAR),
        };
        let text = match path {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| Error::config(key, format!("{}: {e}", p.display())))?,
            None => String::new(),
        };
        Self::from_sources(&text, env)
    }

    /// Reads a TOML document and `CQRS_*` variables from `env` over it, validated.
    pub fn from_sources(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| Error::config("config", e.message()))?;
        for (name, raw) in env {
            let Some(rest) = name.strip_prefix("CQRS_") else {
                continue;
            };
            if name == CONFIG_VAR {
                continue; // the file's name, read by `load`
            }
            let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            if path.iter().any(String::is_empty) {
                return Err(Error::config(&name, "empty key segment"));
            }
            insert_path(&mut table, &path, parse_env_value(&raw))
                .map_err(|m| Error::config(&name, m))?;
        }
        let merged = toml::to_string(&table).map_err(|e| Error::config("config", e))?;
        let config: Self = toml::from_str(&merged).map_err(|e| {
            let key = e
                .span()
                .map_or_else(|| "config".to_owned(), |span| key_at(&merged, span.start));
            Error::config(&key, e.message())
        })?;
        config.validate()?;
        Ok(config)
    }
}

/// The dotted key (`section.key`) of the TOML line that holds byte `offset`.
fn key_at(doc: &str, offset: usize) -> String {
    let mut section = String::new();
    let mut consumed = 0;
    for line in doc.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            section = name.trim().to_owned();
        }
        let end = consumed + line.len();
        if offset <= end {
            if let Some((key, _)) = trimmed.split_once('=') {
                let key = key.trim().trim_matches('"');
                return if section.is_empty() {
                    key.to_owned()
                } else {
                    format!("{section}.{key}")
                };
            }
            return if section.is_empty() {
                "config".to_owned()
            } else {
                section
            };
        }
        consumed = end + 1;
    }
    "config".to_owned()
}

/// The TOML value an environment variable holds: a TOML literal (`5`, `0.5`, `"x"`,
/// `true`), else the raw text as a string.
fn parse_env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

/// Sets `value` at `path` (section names, then the key) in `table`, creating missing sections.
fn insert_path(
    table: &mut toml::Table,
    path: &[String],
    value: toml::Value,
) -> std::result::Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty key")?;
    let mut current = table;
    for key in parents {
        let entry = current
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| format!("{key} is not a section"))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::error::ErrorKind;
    use crate::retry::{Backoff, RetryPolicy};

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn file_then_environment() {
        let file = r#"
            url = "amqp://guest:guest@127.0.0.1:5672/%2f"
            queue = "billing"
            [master]
            message_ttl = "never"
            [replica]
            max_retries = 3
            retry_delay = 0.5
            [models.author]
            max_retries = "forever"
            backoff = "exponential"
        "#;
        let c = CqrsConfig::from_sources(
            file,
            env(&[
                ("CQRS_QUEUE", "orders"),
                ("CQRS_REPLICA__WORKERS", "8"),
                ("HOME", "/root"),
                ("CQRS_MODELS__BOOK__RETRY_DELAY", "1.5"),
            ]),
        )
        .unwrap();
        assert_eq!(c.queue(), Some("orders"));
        assert_eq!(c.replica().workers(), 8);
        assert_eq!(c.master().message_ttl(), None);
        assert_eq!(
            c.retry_policy("other"),
            RetryPolicy::constant(3, Duration::from_millis(500))
        );
        assert_eq!(c.retry_policy("author").max_retries(), None);
        assert!(matches!(
            c.retry_policy("author").backoff(),
            Backoff::Exponential { .. }
        ));
        assert_eq!(
            c.retry_policy("book"),
            RetryPolicy::constant(3, Duration::from_millis(1500))
        );
    }

    #[test]
    fn the_file_cqrs_config_names() {
        let dir = std::env::temp_dir().join(format!("cqrs-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("service.toml");
        std::fs::write(&file, "queue = \"billing\"\n[replica]\nworkers = 2\n").unwrap();
        let named = file.display().to_string();
        let vars = env(&[
            ("CQRS_CONFIG", named.as_str()),
            ("CQRS_REPLICA__WORKERS", "3"),
        ]);
        let c = CqrsConfig::load_with(None, vars.clone()).unwrap();
        assert_eq!((c.queue(), c.replica().workers()), (Some("billing"), 3));
        // A path given wins over the variable; the variable is never taken for a key.
        let other = dir.join("other.toml");
        std::fs::write(&other, "queue = \"orders\"\n").unwrap();
        let c = CqrsConfig::load_with(Some(&other), vars).unwrap();
        assert_eq!(c.queue(), Some("orders"));
        let c = CqrsConfig::from_sources("", env(&[("CQRS_CONFIG", "/nowhere")])).unwrap();
        assert_eq!(c.queue(), None);
        let missing = dir.join("missing.toml").display().to_string();
        let err =
            CqrsConfig::load_with(None, env(&[("CQRS_CONFIG", missing.as_str())])).unwrap_err();
        assert!(err.to_string().contains("CQRS_CONFIG"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn errors_name_the_key() {
        let err = CqrsConfig::from_sources("", env(&[("CQRS_REPLICA__WORKRES", "2")])).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("workres"), "{err}");
        let err = CqrsConfig::from_toml_str("[replica]\nworkers = 0").unwrap_err();
        assert!(err.to_string().contains("replica.workers"), "{err}");
        let err = CqrsConfig::from_toml_str("[replica]\nmax_retries = \"often\"").unwrap_err();
        assert!(
            err.to_string().contains("max_retries") || err.to_string().contains("often"),
            "{err}"
        );
        let err = CqrsConfig::from_toml_str("url = \"http://x\"").unwrap_err();
        assert!(err.to_string().starts_with("config: url"), "{err}");
        let err = CqrsConfig::from_toml_str("[models.a]\njitter = 2.0").unwrap_err();
        assert!(err.to_string().contains("models.a.jitter"), "{err}");
        let err = CqrsConfig::from_toml_str("[observability]\nsample_interval = 0").unwrap_err();
        assert!(
            err.to_string().contains("observability.sample_interval"),
            "{err}"
        );
    }

    #[test]
    fn observability_from_file_and_environment() {
        let c = CqrsConfig::from_sources(
            "[observability]\nprobe_timeout = 0.5\ncrash_loop_restarts = 3\n",
            env(&[("CQRS_OBSERVABILITY__RELAY_STUCK_AFTER", "5")]),
        )
        .unwrap();
        let o = c.observability();
        assert_eq!(o.probe_timeout(), Duration::from_millis(500));
        assert_eq!(o.relay_stuck_after(), Duration::from_secs(5));
        assert_eq!(o.crash_loop_restarts(), 3);
        assert_eq!(o.sample_interval(), Duration::from_secs(10));
    }
}
