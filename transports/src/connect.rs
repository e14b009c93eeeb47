//! [`UrlConnector`]: connects the transport a configuration's `url` names, among those compiled
//! in.

use cqrs_actors::{Connect, CqrsConfig, Error, Result, TransportHandle};
use futures_util::future::LocalBoxFuture;

/// Connects `memory://`, `amqp://`, `amqps://`, `redis://` and `rediss://` (with the features
/// `memory`, `rabbitmq`, `rabbitmq-tls`, `redis` and `redis-tls`); any other scheme, or one
/// whose feature is off, is a configuration error naming it. `cqrs_sync::CqrsSystem::builder()` comes with it.
#[derive(Debug, Clone, Copy, Default)]
pub struct UrlConnector;

impl Connect for UrlConnector {
    fn connect<'a>(
        &'a self,
        config: &'a CqrsConfig,
    ) -> LocalBoxFuture<'a, Result<TransportHandle>> {
        Box::pin(connect(config))
    }
}

async fn connect(config: &CqrsConfig) -> Result<TransportHandle> {
    let scheme = config.url().scheme();
    match scheme.as_str() {
        #[cfg(feature = "memory")]
        "memory" => Ok(crate::memory::shared(config.url().expose())),
        #[cfg(feature = "rabbitmq")]
        "amqp" | "amqps" => {
            let rabbitmq = crate::rabbitmq::RabbitMqConfig::from_cqrs_config(config)?;
            Ok(crate::rabbitmq::RabbitMqTransport::connect(rabbitmq)
                .await?
                .0)
        }
        #[cfg(feature = "redis")]
        "redis" | "rediss" => {
            let redis = crate::redis::RedisConfig::from_cqrs_config(config)?;
            Ok(crate::redis::RedisTransport::connect(redis).await?.0)
        }
        _ => Err(Error::config(
            "url",
            format!(
                "no transport for {} is compiled in (features: memory, rabbitmq, rabbitmq-tls, redis, redis-tls)",
                config.url()
            ),
        )),
    }
}
