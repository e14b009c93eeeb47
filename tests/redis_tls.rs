//! `rediss://` against a real TLS listener (the Redis server of `.ci/tls-setup`, started by
//! `support::tls` when it is down): a master feeds a replica over TLS trusting the test CA;
//! a server certificate from another CA, or for another host than the URL's, is refused at
//! once as a configuration error; a client certificate is presented (and one from another CA
//! refused by the server); TLS files that cannot be used are errors naming them.

mod support;

use std::time::{Duration, Instant};

use cqrs_sync::transports::redis::{RedisConfig, RedisTransport, Stop};
use cqrs_sync::{CqrsConfig, ErrorKind};
use support::redis::Space;
use support::tls::{self, REDISS_PORT};

/// A service configuration for `space` on the TLS server, reached as `host`, with `[redis]`
/// options.
fn service(space: &Space, host: &str, options: &str) -> CqrsConfig {
    let text = format!(
        "url = \"rediss://{host}:{REDISS_PORT}/0\"\nexchange = {:?}\n[redis]\n{options}",
        space.exchange
    );
    CqrsConfig::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}"))
}

fn tls_space(prefix: &str) -> Space {
    tls::ensure();
    Space::create_on(tls::redis_client, prefix)
}

/// Connects a transport to `service`: the transport's error, if any, which must come within
/// a few seconds.
async fn connect(service: &CqrsConfig) -> Result<(), cqrs_sync::Error> {
    let config = RedisConfig::from_cqrs_config(service).unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    let result = match RedisTransport::connect(config).await {
        Ok((_, addr)) => {
            let _ = addr.send(Stop).await;
            Ok(())
        }
        Err(e) => Err(e),
    };
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}: {result:?}",
        started.elapsed()
    );
    result
}

#[actix_rt::test]
async fn a_master_feeds_a_replica_over_rediss_trusting_the_test_ca() {
    support::init_tracing();
    let space = tls_space("cqrs_tls_e2e");
    let ca = tls::file("ca.crt");
    let config = service(&space, "localhost", &format!("tls_ca_file = {ca:?}"));
    // Master and replica each connect by the URL, as a service configured by file does.
    support::round_trip(&config).await;
    assert!(
        !space.keys().is_empty(),
        "the streams are on the TLS server"
    );
    // The same through the environment form of the option.
    let from_env = CqrsConfig::from_sources(
        &format!(
            "url = \"rediss://localhost:{REDISS_PORT}/0\"\nexchange = {:?}",
            space.exchange
        ),
        [("CQRS_REDIS__TLS_CA_FILE".to_owned(), ca)],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    connect(&from_env).await.unwrap_or_else(|e| panic!("{e}"));
}

#[actix_rt::test]
async fn a_server_certificate_from_another_ca_is_refused() {
    support::init_tracing();
    let space = tls_space("cqrs_tls_wrong_ca");
    let config = service(
        &space,
        "localhost",
        &format!("tls_ca_file = {:?}", tls::file("wrong-ca.crt")),
    );
    let err = connect(&config).await.expect_err("another CA");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("tls_ca_file"), "{err}");
    eprintln!("as expected: {err}");
}

#[actix_rt::test]
async fn a_url_host_the_certificate_does_not_name_is_refused() {
    support::init_tracing();
    let space = tls_space("cqrs_tls_wrong_host");
    // The server's certificate names `localhost` only; 127.0.0.1 is the same listener.
    let config = service(
        &space,
        "127.0.0.1",
        &format!("tls_ca_file = {:?}", tls::file("ca.crt")),
    );
    let err = connect(&config).await.expect_err("another host");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    eprintln!("as expected: {err}");
}

#[actix_rt::test]
async fn a_client_certificate_is_presented_and_one_from_another_ca_refused() {
    support::init_tracing();
    let space = tls_space("cqrs_tls_client");
    let options = |cert: &str, key: &str| {
        format!(
            "tls_ca_file = {:?}\ntls_cert_file = {:?}\ntls_key_file = {:?}",
            tls::file("ca.crt"),
            tls::file(cert),
            tls::file(key)
        )
    };
    let config = service(&space, "localhost", &options("client.crt", "client.key"));
    support::round_trip(&config).await;
    // The server checks a certificate a client presents: one it cannot trust is refused,
    // which shows the transport presents the one it is given.
    let rogue = service(
        &space,
        "localhost",
        &options("rogue-client.crt", "rogue-client.key"),
    );
    let err = connect(&rogue)
        .await
        .expect_err("a client certificate of another CA");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("tls_cert_file"), "{err}");
    eprintln!("as expected: {err}");
}

#[actix_rt::test]
async fn tls_files_that_cannot_be_used_fail_connect_naming_them() {
    support::init_tracing();
    let space = tls_space("cqrs_tls_files");
    let missing = tls::dir().join("no-such-ca.crt").display().to_string();
    for (options, setting, path) in [
        (
            format!("tls_ca_file = {missing:?}"),
            "tls_ca_file",
            missing.clone(),
        ),
        (
            // A key where the CA bundle should be.
            format!("tls_ca_file = {:?}", tls::file("client.key")),
            "tls_ca_file",
            tls::file("client.key"),
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
    ] {
        let err = connect(&service(&space, "localhost", &options))
            .await
            .expect_err(&options);
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        let text = err.to_string();
        assert!(text.contains(&format!("redis.{setting}")), "{text}");
        assert!(text.contains(&path), "{text}");
        assert!(!text.contains("PRIVATE KEY"), "{text}");
    }
}
