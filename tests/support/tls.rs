//! The TLS brokers of `.ci/tls-setup`, started by it when they are not up (the script takes a
//! lock, so test binaries running side by side wait for one another): Redis on
//! 127.0.0.1:6390 and the RabbitMQ node `cqrs-tls@localhost` with amqps on 127.0.0.1:5671,
//! both serving a certificate for `localhost` only, signed by the test CA of
//! `/tmp/cqrs-sync-tls` (`CQRS_TLS_DIR`). `.ci/tls-teardown` stops them.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The RabbitMQ node with the TLS listener.
pub const RABBITMQ_NODE: &str = "cqrs-tls@localhost";
/// Its amqps port.
pub const AMQPS_PORT: u16 = 5671;
/// The TLS port of the Redis server.
pub const REDISS_PORT: u16 = 6390;

/// The directory of the certificates.
pub fn dir() -> PathBuf {
    std::env::var_os("CQRS_TLS_DIR")
        .map_or_else(|| PathBuf::from("/tmp/cqrs-sync-tls"), PathBuf::from)
}

/// The path of one of the files `.ci/tls-setup` makes (`ca.crt`, `wrong-ca.crt`, `client.crt`,
/// `client.key`, `rogue-client.crt`, `rogue-client.key`), once the brokers are up.
pub fn file(name: &str) -> String {
    ensure();
    dir().join(name).display().to_string()
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Runs `.ci/tls-setup` unless the certificates are there and both ports answer; once per
/// test binary.
pub fn ensure() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        if dir().join("client.crt").exists() && port_open(AMQPS_PORT) && port_open(REDISS_PORT) {
            return;
        }
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".ci/tls-setup");
        let out = Command::new(&script)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed:\n{}{}",
            script.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

#[cfg(feature = "redis-tls")]
/// A plain (non-transport) connection to the TLS Redis server, trusting the test CA: for what
/// the tests do behind the transport's back, such as cleaning up.
pub fn redis_client() -> ::redis::Connection {
    let ca = std::fs::read(file("ca.crt")).unwrap_or_else(|e| panic!("ca.crt: {e}"));
    let url = format!("rediss://localhost:{REDISS_PORT}/0");
    let certificates = ::redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(ca),
    };
    ::redis::Client::build_with_tls(url.as_str(), certificates)
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| panic!("Redis on {url}: {e} (.ci/tls-setup starts it)"))
}
