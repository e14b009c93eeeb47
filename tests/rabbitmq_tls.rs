//! `amqps://` against a real TLS listener (the RabbitMQ node of `.ci/tls-setup`, started by
//! `support::tls` when it is down): a master feeds a replica over TLS trusting the test CA;
//! a server certificate from another CA, or for another host than the URL's, is refused at
//! once as a configuration error; a client certificate is presented (and one from another CA
//! refused by the broker); TLS files that cannot be used are errors naming them.

mod support;

use std::time::{Duration, Instant};

use cqrs_sync::transports::rabbitmq::{RabbitMqConfig, RabbitMqTransport};
use cqrs_sync::{CqrsConfig, ErrorKind};
use support::rabbitmq::Vhost;
use support::tls::{self, AMQPS_PORT, RABBITMQ_NODE};

/// A service configuration for `vhost` on the TLS node, reached as `host`, with `[rabbitmq]`
/// options.
fn service(vhost: &Vhost, host: &str, options: &str) -> CqrsConfig {
    let text = format!(
        "url = \"amqps://guest:guest@{host}:{AMQPS_PORT}/{}?heartbeat=10\"\n[rabbitmq]\n{options}",
        vhost.name
    );
    CqrsConfig::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}"))
}

fn tls_vhost(prefix: &str) -> Vhost {
    tls::ensure();
    Vhost::create_on(Some(RABBITMQ_NODE), prefix)
}

/// Connects a transport to `service`, expecting a refusal: returns the error, which must come
/// at once rather than after the publish timeout.
async fn refused(service: &CqrsConfig) -> cqrs_sync::Error {
    let config = RabbitMqConfig::from_cqrs_config(service)
        .unwrap_or_else(|e| panic!("{e}"))
        .with_reconnect_backoff(Duration::from_millis(50), Duration::from_millis(200));
    let started = Instant::now();
    let err = RabbitMqTransport::connect(config)
        .await
        .map(|_| ())
        .expect_err("the connection should be refused");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "refused only after {:?}: {err}",
        started.elapsed()
    );
    err
}

#[actix_rt::test]
async fn a_master_feeds_a_replica_over_amqps_trusting_the_test_ca() {
    support::init_tracing();
    let vhost = tls_vhost("cqrs_tls_e2e");
    let ca = tls::file("ca.crt");
    let config = service(&vhost, "localhost", &format!("tls_ca_file = {ca:?}"));
    // Master and replica each connect by the URL, as a service configured by file does.
    support::round_trip(&config).await;
    // The same through the environment form of the option.
    let from_env = CqrsConfig::from_sources(
        &format!(
            "url = \"amqps://guest:guest@localhost:{AMQPS_PORT}/{}\"",
            vhost.name
        ),
        [("CQRS_RABBITMQ__TLS_CA_FILE".to_owned(), ca)],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (_transport, _addr) = RabbitMqTransport::connect(
        RabbitMqConfig::from_cqrs_config(&from_env).unwrap_or_else(|e| panic!("{e}")),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let ssl = vhost
        .ctl(&["list_connections", "-q", "-p", &vhost.name, "ssl"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        ssl.lines().any(|l| l.trim() == "true"),
        "the broker sees a TLS connection: {ssl:?}"
    );
}

#[actix_rt::test]
async fn a_server_certificate_from_another_ca_is_refused() {
    support::init_tracing();
    let vhost = tls_vhost("cqrs_tls_wrong_ca");
    let config = service(
        &vhost,
        "localhost",
        &format!("tls_ca_file = {:?}", tls::file("wrong-ca.crt")),
    );
    let err = refused(&config).await;
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("tls_ca_file"), "{err}");
    eprintln!("as expected: {err}");
}

#[actix_rt::test]
async fn a_url_host_the_certificate_does_not_name_is_refused() {
    support::init_tracing();
    let vhost = tls_vhost("cqrs_tls_wrong_host");
    // The server's certificate names `localhost` only; 127.0.0.1 is the same listener.
    let config = service(
        &vhost,
        "127.0.0.1",
        &format!("tls_ca_file = {:?}", tls::file("ca.crt")),
    );
    let err = refused(&config).await;
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    eprintln!("as expected: {err}");
}

#[actix_rt::test]
async fn a_client_certificate_is_presented_and_one_from_another_ca_refused() {
    support::init_tracing();
    let vhost = tls_vhost("cqrs_tls_client");
    let options = |cert: &str, key: &str| {
        format!(
            "tls_ca_file = {:?}\ntls_cert_file = {:?}\ntls_key_file = {:?}",
            tls::file("ca.crt"),
            tls::file(cert),
            tls::file(key)
        )
    };
    let config = service(&vhost, "localhost", &options("client.crt", "client.key"));
    let (_transport, _addr) = RabbitMqTransport::connect(
        RabbitMqConfig::from_cqrs_config(&config).unwrap_or_else(|e| panic!("{e}")),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let subjects = vhost
        .ctl(&[
            "list_connections",
            "-q",
            "-p",
            &vhost.name,
            "peer_cert_subject",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        subjects.contains("CN=cqrs-sync test client"),
        "the broker sees the client certificate: {subjects:?}"
    );

    let rogue = service(
        &vhost,
        "localhost",
        &options("rogue-client.crt", "rogue-client.key"),
    );
    let err = refused(&rogue).await;
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("tls_cert_file"), "{err}");
    eprintln!("as expected: {err}");
}

#[actix_rt::test]
async fn tls_files_that_cannot_be_used_fail_connect_naming_them() {
    support::init_tracing();
    let vhost = tls_vhost("cqrs_tls_files");
    let missing = tls::dir().join("no-such-ca.crt").display().to_string();
    for (options, setting, path) in [
        (
            format!("tls_ca_file = {missing:?}"),
            "tls_ca_file",
            missing.clone(),
        ),
        (
            // A certificate where the key should be.
            format!(
                "tls_cert_file = {:?}\ntls_key_file = {:?}",
                tls::file("client.crt"),
                tls::file("client.crt")
            ),
            "tls_key_file",
            tls::file("client.crt"),
        ),
        (
            // A key of another certificate.
            format!(
                "tls_cert_file = {:?}\ntls_key_file = {:?}",
                tls::file("client.crt"),
                tls::file("rogue-client.key")
            ),
            "tls_key_file",
            tls::file("rogue-client.key"),
        ),
    ] {
        let err = refused(&service(&vhost, "localhost", &options)).await;
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        let text = err.to_string();
        assert!(text.contains(&format!("rabbitmq.{setting}")), "{text}");
        assert!(text.contains(&path), "{text}");
        assert!(!text.contains("PRIVATE KEY"), "{text}");
    }
}
