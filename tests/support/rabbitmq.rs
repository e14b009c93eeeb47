//! RabbitMQ helpers: every test runs in a virtual host of its own on 127.0.0.1:5672 (or on
//! another node, such as the TLS one of `support::tls`), deleted (with every queue and
//! exchange in it) when the guard drops.

use std::process::Command;
use std::time::Duration;

use actix::Addr;
use cqrs_sync::TransportHandle;
use cqrs_sync::transports::rabbitmq::{RabbitMqConfig, RabbitMqTransport};

fn rabbitmqctl(args: &[&str]) -> Result<String, String> {
    rabbitmqctl_on(None, args)
}

/// `rabbitmqctl` against `node` (`-n`), or the default node.
pub fn rabbitmqctl_on(node: Option<&str>, args: &[&str]) -> Result<String, String> {
    let node_args = node.map(|n| ["-n", n]);
    let out = Command::new("rabbitmqctl")
        .args(node_args.iter().flatten())
        .args(args)
        .output()
        .map_err(|e| {
            format!("rabbitmqctl {args:?}: {e} (is RabbitMQ installed? .ci/run starts it)")
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "rabbitmqctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A virtual host for one test.
pub struct Vhost {
    pub name: String,
    /// The node it lives on (`None`: the default one).
    pub node: Option<String>,
}

impl Vhost {
    /// Creates `<prefix>_<unique>` and lets `guest` use it.
    pub fn create(prefix: &str) -> Self {
        Self::create_on(None, prefix)
    }

    /// Creates `<prefix>_<unique>` on `node` (the default node if `None`) and lets `guest`
    /// use it.
    pub fn create_on(node: Option<&str>, prefix: &str) -> Self {
        let name = super::unique(prefix);
        rabbitmqctl_on(node, &["add_vhost", &name]).unwrap_or_else(|e| panic!("{e}"));
        let vhost = Self {
            name,
            node: node.map(str::to_owned),
        };
        vhost
            .ctl(&[
                "set_permissions",
                "-p",
                &vhost.name,
                "guest",
                ".*",
                ".*",
                ".*",
            ])
            .unwrap_or_else(|e| panic!("{e}"));
        vhost
    }

    /// `rabbitmqctl` against this virtual host's node.
    pub fn ctl(&self, args: &[&str]) -> Result<String, String> {
        rabbitmqctl_on(self.node.as_deref(), args)
    }

    /// The URL of this virtual host, with a connection name.
    pub fn url(&self) -> String {
        format!(
            "amqp://guest:guest@127.0.0.1:5672/{}?heartbeat=10&connection_name=cqrs-test",
            self.name
        )
    }

    /// Its transport configuration.
    pub fn config(&self) -> RabbitMqConfig {
        RabbitMqConfig::from_cqrs_config(&self.service_config()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A service configuration whose `url` is this virtual host.
    pub fn service_config(&self) -> cqrs_sync::CqrsConfig {
        cqrs_sync::CqrsConfig::default().with_url(self.url())
    }

    /// Sets what `guest` may configure here (a regular expression); writing and reading stay
    /// open.
    pub fn allow_configure(&self, pattern: &str) {
        self.ctl(&[
            "set_permissions",
            "-p",
            &self.name,
            "guest",
            pattern,
            ".*",
            ".*",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Takes every permission of `guest` here away: its connections are refused until
    /// [`allow_configure`](Self::allow_configure) gives them back.
    pub fn deny_guest(&self) {
        self.ctl(&["clear_permissions", "-p", &self.name, "guest"])
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Deletes `queue` from this virtual host, as an operator would.
    pub async fn delete_queue(&self, queue: &str) {
        let url = format!("amqp://guest:guest@127.0.0.1:5672/{}", self.name);
        let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let channel = conn
            .create_channel()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        channel
            .queue_delete(queue.into(), lapin::options::QueueDeleteOptions::default())
            .await
            .unwrap_or_else(|e| panic!("delete {queue}: {e}"));
        let _ = conn.close(200, "deleted".into()).await;
    }

    /// Closes every connection to this virtual host from the broker side.
    pub async fn close_all_connections(&self) {
        close_all_connections(self.name.clone()).await;
    }

    /// The names of the topic exchanges declared here (the broker's own `amq.*` and default
    /// ones and the replicas' `<queue>.park` exchanges left out).
    pub fn exchanges(&self) -> Vec<String> {
        let out = self
            .ctl(&["list_exchanges", "-q", "-p", &self.name, "name"])
            .unwrap_or_else(|e| panic!("{e}"));
        out.lines()
            .map(str::trim)
            .filter(|n| {
                !n.is_empty() && !n.starts_with("amq.") && !n.ends_with(".park") && *n != "name"
            })
            .map(str::to_owned)
            .collect()
    }

    /// Ready message count of `queue`, as the broker tells it.
    pub fn ready(&self, queue: &str) -> u64 {
        let out = self
            .ctl(&[
                "list_queues",
                "-q",
                "-p",
                &self.name,
                "name",
                "messages_ready",
            ])
            .unwrap_or_else(|e| panic!("{e}"));
        out.lines()
            .filter_map(|l| l.split_once('\t'))
            .find(|(n, _)| *n == queue)
            .and_then(|(_, c)| c.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        if let Err(e) = self.ctl(&["delete_vhost", &self.name]) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// A broker user for one test, allowed everything in `vhost`; deleted when dropped.
pub struct User {
    pub name: String,
}

impl User {
    /// Creates `<prefix>_<unique>` with `password` (any characters).
    pub fn create(prefix: &str, password: &str, vhost: &Vhost) -> Self {
        let name = super::unique(prefix);
        rabbitmqctl(&["add_user", &name, password]).unwrap_or_else(|e| panic!("{e}"));
        let user = Self { name };
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            &vhost.name,
            &user.name,
            ".*",
            ".*",
            ".*",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        user
    }
}

impl Drop for User {
    fn drop(&mut self) {
        if let Err(e) = rabbitmqctl(&["delete_user", &self.name]) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// Connects a transport.
pub async fn connect(config: RabbitMqConfig) -> (TransportHandle, Addr<RabbitMqTransport>) {
    let config = config.with_reconnect_backoff(Duration::from_millis(50), Duration::from_secs(1));
    RabbitMqTransport::connect(config)
        .await
        .unwrap_or_else(|e| panic!("RabbitMQ on 127.0.0.1:5672: {e}"))
}

/// Closes every connection to virtual host `vhost` from the broker side, off the runtime.
pub async fn close_all_connections(vhost: String) {
    tokio::task::spawn_blocking(move || {
        rabbitmqctl(&["close_all_connections", "--vhost", &vhost, "fault test"])
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
    .unwrap_or_else(|e| panic!("{e}"));
}
