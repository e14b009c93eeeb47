//! The broker-side topology: WIRE.md section 3 plus the parking queues.
//!
//! For a replica queue `Q` and each CQRS id `X`:
//! - the durable topic exchange (default `cqrs`);
//! - queue `Q` bound by `X` and `cqrs.Q.X`; queue `dead_letter_Q` bound by
//!   `cqrs.dead_letter_Q.X`;
//! - parking: a durable headers exchange `Q.park` and one queue per tier,
//!   `Q.park.<ms>ms`, bound to it by the header `cqrs-park-tier = <ms>`. Each tier queue has
//!   `x-message-ttl = <ms>` and the main exchange as its `x-dead-letter-exchange`, with no
//!   dead-letter routing key, so an expired copy goes back by its own routing key
//!   `cqrs.Q.X` to `Q` only. One TTL per queue means the head always expires first: no
//!   message waits behind a longer one, and no broker plugin is needed.

use std::collections::BTreeSet;
use std::time::Duration;

use cqrs_actors::transport::Declare;
use cqrs_actors::{Error, Result};
use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use super::config::{QueueType, RabbitMqConfig};
use super::lapin_error;

/// Header naming the parking tier of a parked copy (milliseconds, as a string). No `x-`
/// prefix: a headers exchange ignores such headers when it matches with `x-match = all`.
pub(crate) const HEADER_TIER: &str = "cqrs-park-tier";
/// Header with the time (Unix milliseconds) a parked copy is due, set when its delay is longer
/// than the top tier: the transport parks it again until then.
pub(crate) const HEADER_DUE: &str = "cqrs-park-due";

/// The parking exchange of replica queue `queue`.
pub(crate) fn park_exchange(queue: &str) -> String {
    format!("{queue}.park")
}

/// The parking queue of one tier.
pub(crate) fn tier_queue(queue: &str, tier: Duration) -> String {
    format!("{queue}.park.{}ms", tier.as_millis())
}

/// The tier to park for `delay`: the smallest one that is not shorter, or the top tier when
/// `delay` is longer than all (the copy is then parked again until due).
pub(crate) fn tier_for(tiers: &[Duration], delay: Duration) -> Duration {
    tiers
        .iter()
        .copied()
        .find(|t| *t >= delay)
        .or_else(|| tiers.last().copied())
        .unwrap_or(delay)
}

/// A string the AMQP protocol carries as a short string (at most 255 bytes).
pub(crate) fn short(what: &str, s: &str) -> Result<ShortString> {
    ShortString::try_new(s).map_err(|e| {
        Error::config(
            what,
            format!(
                "{:?} ({} bytes): {e}",
                cqrs_actors::values::excerpt(s),
                s.len()
            ),
        )
    })
}

pub(crate) fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

fn queue_args(kind: QueueType) -> FieldTable {
    let mut args = FieldTable::default();
    if kind == QueueType::Quorum {
        args.insert("x-queue-type".into(), text("quorum"));
    }
    args
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// Declares the main exchange (durable topic, no arguments, as django-cqrs does).
pub(crate) async fn declare_exchange(channel: &Channel, config: &RabbitMqConfig) -> Result<()> {
    channel
        .exchange_declare(
            short("exchange", config.exchange())?,
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| lapin_error("declare exchange", e))
}

/// The CQRS ids to bind for `declare`, after the `bind_only` filter.
pub(crate) fn bound_ids(config: &RabbitMqConfig, declare: &Declare) -> Vec<String> {
    match config.bind_only() {
        Some(only) => declare
            .cqrs_ids
            .iter()
            .filter(|id| only.contains(id))
            .cloned()
            .collect(),
        None => declare.cqrs_ids.clone(),
    }
}

/// Routing keys this topology binds: what a publish may use and expect a queue for.
pub(crate) fn bound_keys(config: &RabbitMqConfig, declare: &Declare) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for id in bound_ids(config, declare) {
        keys.insert(format!("cqrs.{}.{id}", declare.queue));
        keys.insert(format!("cqrs.{}.{id}", declare.dead_letter_queue));
    }
    keys
}

/// Declares a replica's queues, bindings and parking tiers.
pub(crate) async fn declare_replica(
    channel: &Channel,
    config: &RabbitMqConfig,
    declare: &Declare,
) -> Result<()> {
    let exchange = short("exchange", config.exchange())?;
    let kind = config.queue_type();
    for queue in [&declare.queue, &declare.dead_letter_queue] {
        channel
            .queue_declare(short("queue", queue)?, durable(), queue_args(kind))
            .await
            .map_err(|e| lapin_error("declare queue", e))?;
    }
    let bind = |queue: String, key: String, args: FieldTable, exchange: ShortString| async move {
        channel
            .queue_bind(
                short("queue", &queue)?,
                exchange,
                short("routing key", &key)?,
                QueueBindOptions::default(),
                args,
            )
            .await
            .map_err(|e| lapin_error("bind queue", e))
    };
    for id in bound_ids(config, declare) {
        let q = &declare.queue;
        let dlq = &declare.dead_letter_queue;
        bind(
            q.clone(),
            id.clone(),
            FieldTable::default(),
            exchange.clone(),
        )
        .await?;
        bind(
            q.clone(),
            format!("cqrs.{q}.{id}"),
            FieldTable::default(),
            exchange.clone(),
        )
        .await?;
        bind(
            dlq.clone(),
            format!("cqrs.{dlq}.{id}"),
            FieldTable::default(),
            exchange.clone(),
        )
        .await?;
    }
    let park = short("park exchange", &park_exchange(&declare.queue))?;
    channel
        .exchange_declare(
            park.clone(),
            ExchangeKind::Headers,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| lapin_error("declare park exchange", e))?;
    for tier in config.park_tiers() {
        let name = tier_queue(&declare.queue, *tier);
        let mut args = queue_args(kind);
        let ttl = i64::try_from(tier.as_millis()).unwrap_or(i64::MAX);
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
        args.insert("x-dead-letter-exchange".into(), text(config.exchange()));
        channel
            .queue_declare(short("park queue", &name)?, durable(), args)
            .await
            .map_err(|e| lapin_error("declare park queue", e))?;
        let mut bind_args = FieldTable::default();
        bind_args.insert("x-match".into(), text("all"));
        bind_args.insert(HEADER_TIER.into(), text(&tier.as_millis().to_string()));
        bind(name, String::new(), bind_args, park.clone()).await?;
    }
    Ok(())
}

/// Deletes a replica's queues and parking exchange (tests and tools).
pub(crate) async fn delete_replica(
    channel: &Channel,
    config: &RabbitMqConfig,
    declare: &Declare,
) -> Result<()> {
    let mut queues = vec![declare.queue.clone(), declare.dead_letter_queue.clone()];
    queues.extend(
        config
            .park_tiers()
            .iter()
            .map(|t| tier_queue(&declare.queue, *t)),
    );
    for q in queues {
        channel
            .queue_delete(short("queue", &q)?, QueueDeleteOptions::default())
            .await
            .map_err(|e| lapin_error("delete queue", e))?;
    }
    delete_exchange(channel, &park_exchange(&declare.queue)).await
}

/// Deletes an exchange.
pub(crate) async fn delete_exchange(channel: &Channel, name: &str) -> Result<()> {
    channel
        .exchange_delete(short("exchange", name)?, ExchangeDeleteOptions::default())
        .await
        .map_err(|e| lapin_error("delete exchange", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_round_up_to_a_tier_and_long_ones_take_the_top() {
        let tiers = [
            Duration::from_millis(500),
            Duration::from_secs(2),
            Duration::from_secs(30),
        ];
        assert_eq!(tier_for(&tiers, Duration::from_millis(400)), tiers[0]);
        assert_eq!(tier_for(&tiers, Duration::from_secs(2)), tiers[1]);
        assert_eq!(tier_for(&tiers, Duration::from_secs(3)), tiers[2]);
        assert_eq!(tier_for(&tiers, Duration::from_secs(90)), tiers[2]);
        assert_eq!(tier_queue("billing", tiers[1]), "billing.park.2000ms");
        assert_eq!(park_exchange("billing"), "billing.park");
    }
}
