//! One configuration for a RabbitMQ service: the URL picks the transport, and the exchange
//! given once in the configuration is the one declared on the broker, whichever way the
//! transport is built.

#![cfg(feature = "rabbitmq")]
// A failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use cqrs_sync::transports::rabbitmq::{RabbitMqConfig, RabbitMqTransport};
use cqrs_sync::{CqrsConfig, CqrsSystem, CqrsSystemExt, ErrorKind, MemoryTable, ReplicaModel};
use support::rabbitmq::Vhost;
use support::unique;

#[actix_rt::test]
async fn the_url_picks_rabbitmq_and_the_configured_exchange_is_declared() {
    support::init_tracing();
    let vhost = Vhost::create("cqrs_url");
    // The file and the environment, as a service reads them: the exchange is said once.
    let file = format!(
        "url = \"{}\"\nexchange = \"billing_events\"\n[rabbitmq]\nconsumers = 2\n",
        vhost.url()
    );
    let env = [("CQRS_RABBITMQ__PUBLISH_ATTEMPTS".to_owned(), "5".to_owned())];
    let config = CqrsConfig::from_sources(&file, env).unwrap();
    let transport = support::round_trip(&config).await;
    assert_eq!(transport.name(), "rabbitmq");
    assert_eq!(transport.exchange(), Some("billing_events"));
    assert_eq!(
        vhost.exchanges(),
        ["billing_events"],
        "and no `cqrs` exchange"
    );
}

#[actix_rt::test]
async fn a_transport_built_from_the_configuration_declares_its_exchange() {
    support::init_tracing();
    let vhost = Vhost::create("cqrs_built");
    let config = vhost.service_config().with_exchange("billing_built");
    let (transport, _addr) =
        RabbitMqTransport::connect(RabbitMqConfig::from_cqrs_config(&config).unwrap())
            .await
            .unwrap();
    let system = CqrsSystem::builder()
        .config(config.with_queue(unique("built")))
        .replica(ReplicaModel::new("author", MemoryTable::new()))
        .transport(transport)
        .start()
        .await
        .unwrap();
    system.shutdown().await.unwrap();
    assert_eq!(vhost.exchanges(), ["billing_built"]);
}

#[actix_rt::test]
async fn a_transport_built_for_another_exchange_fails_at_start() {
    support::init_tracing();
    let vhost = Vhost::create("cqrs_mismatch");
    let built_for = vhost.service_config().with_exchange("one");
    let (transport, _addr) =
        RabbitMqTransport::connect(RabbitMqConfig::from_cqrs_config(&built_for).unwrap())
            .await
            .unwrap();
    let err = CqrsSystem::builder()
        .config(
            vhost
                .service_config()
                .with_exchange("other")
                .with_queue(unique("mismatch")),
        )
        .replica(ReplicaModel::new("author", MemoryTable::new()))
        .transport(transport)
        .start()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    let text = err.to_string();
    assert!(
        text.starts_with("config: exchange")
            && text.contains("\"one\"")
            && text.contains("\"other\""),
        "{text}"
    );
    assert_eq!(
        vhost.exchanges(),
        ["one"],
        "nothing was declared on `other`"
    );
}

#[actix_rt::test]
async fn an_unknown_rabbitmq_option_is_an_error_naming_it() {
    let config = CqrsConfig::from_toml_str(
        "url = \"amqp://guest:guest@127.0.0.1:5672/%2f\"\n[rabbitmq]\nconsumer = 2\n",
    )
    .unwrap();
    let err = CqrsSystem::builder()
        .config(config)
        .start()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(
        err.to_string().starts_with("config: rabbitmq.consumer"),
        "{err}"
    );
    let config = CqrsConfig::from_toml_str("[rabbitmq]\nqueue_type = \"stream\"\n").unwrap();
    let err = RabbitMqConfig::from_cqrs_config(&config.with_url("amqp://h/")).unwrap_err();
    assert!(
        err.to_string().starts_with("config: rabbitmq.queue_type"),
        "{err}"
    );
}
