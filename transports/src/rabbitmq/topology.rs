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

use cqrs_actors::transport::{Declare, TopologyObject, queue_not_empty};
use cqrs_actors::{Error, Result};
use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ExchangeKind};

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

/// Whether the broker answered that the queue or exchange does not exist (it then closed the
/// channel).
fn is_not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp)
        if matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)))
}

/// A queue's ready messages and consumers, `None` when it does not exist. On a channel of its
/// own: a passive declare of a missing queue closes its channel.
pub(crate) async fn probe_queue(
    connection: &Connection,
    queue: &str,
) -> Result<Option<(u64, u64)>> {
    let channel = super::link::open_channel(connection).await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    match channel
        .queue_declare(short("queue", queue)?, passive, FieldTable::default())
        .await
    {
        Ok(q) => {
            let _ = channel.close(200, "probed".into()).await;
            Ok(Some((
                u64::from(q.message_count()),
                u64::from(q.consumer_count()),
            )))
        }
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(lapin_error("inspect queue", e)),
    }
}

/// Whether an exchange exists (on a channel of its own, as [`probe_queue`]).
pub(crate) async fn exchange_exists(connection: &Connection, name: &str) -> Result<bool> {
    let channel = super::link::open_channel(connection).await?;
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..ExchangeDeclareOptions::default()
    };
    match channel
        .exchange_declare(
            short("exchange", name)?,
            ExchangeKind::Topic,
            passive,
            FieldTable::default(),
        )
        .await
    {
        Ok(()) => {
            let _ = channel.close(200, "probed".into()).await;
            Ok(true)
        }
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(lapin_error("inspect exchange", e)),
    }
}

/// A replica's queue, its dead-letter queue, once when they are the same.
fn replica_queues<'a>(queue: &'a str, dead_letter_queue: &'a str) -> Vec<&'a str> {
    if queue == dead_letter_queue {
        vec![queue]
    } else {
        vec![queue, dead_letter_queue]
    }
}

/// The objects of a replica that exist, with their counts. AMQP cannot list bindings: the
/// routing-key bindings shown are those of the CQRS ids in `cqrs_ids` (what this transport
/// declared); the parking bindings follow from the tiers.
pub(crate) async fn describe_replica(
    connection: &Connection,
    config: &RabbitMqConfig,
    queue: &str,
    dead_letter_queue: &str,
    cqrs_ids: &[String],
) -> Result<Vec<TopologyObject>> {
    let exchange = config.exchange();
    let mut objects = Vec::new();
    if exchange_exists(connection, exchange).await? {
        objects.push(TopologyObject::new(
            "exchange",
            exchange,
            None,
            "topic, durable",
        ));
    }
    for (i, name) in replica_queues(queue, dead_letter_queue)
        .into_iter()
        .enumerate()
    {
        let Some((ready, consumers)) = probe_queue(connection, name).await? else {
            continue;
        };
        objects.push(TopologyObject::new(
            "queue",
            name,
            Some(ready),
            format!("durable, consumers={consumers}"),
        ));
        for id in cqrs_ids {
            let mut keys = vec![format!("cqrs.{name}.{id}")];
            if i == 0 {
                keys.insert(0, id.clone());
            }
            for key in keys {
                objects.push(TopologyObject::new(
                    "binding",
                    key,
                    None,
                    format!("{exchange} -> {name}"),
                ));
            }
        }
    }
    let park = park_exchange(queue);
    let park_exists = exchange_exists(connection, &park).await?;
    if park_exists {
        objects.push(TopologyObject::new(
            "exchange",
            &park,
            None,
            "headers, durable",
        ));
    }
    for tier in config.park_tiers() {
        let name = tier_queue(queue, *tier);
        let Some((parked, _)) = probe_queue(connection, &name).await? else {
            continue;
        };
        let ms = tier.as_millis();
        objects.push(TopologyObject::new(
            "queue",
            &name,
            Some(parked),
            format!("x-message-ttl={ms}, x-dead-letter-exchange={exchange}"),
        ));
        if park_exists {
            objects.push(TopologyObject::new(
                "binding",
                format!("{HEADER_TIER}={ms}"),
                None,
                format!("{park} -> {name}"),
            ));
        }
    }
    Ok(objects)
}

/// Deletes a replica's queue, dead-letter queue, parking queues and parking exchange, those
/// that exist, and answers their names. Refused while they hold messages unless `force`;
/// deliveries a consumer holds unacknowledged are not counted (AMQP does not tell them).
pub(crate) async fn delete_replica_objects(
    connection: &Connection,
    config: &RabbitMqConfig,
    queue: &str,
    dead_letter_queue: &str,
    force: bool,
) -> Result<Vec<String>> {
    let mut queues: Vec<(String, u64)> = Vec::new();
    let mut counts = [("ready", 0), ("dead letters", 0), ("parked", 0)];
    let own = replica_queues(queue, dead_letter_queue);
    let tiers = config.park_tiers().iter().map(|t| tier_queue(queue, *t));
    for (i, name) in own.iter().map(|q| (*q).to_owned()).chain(tiers).enumerate() {
        if let Some((ready, _)) = probe_queue(connection, &name).await? {
            counts[if i < own.len() { i } else { 2 }].1 += ready;
            queues.push((name, ready));
        }
    }
    if !force && counts.iter().any(|(_, n)| *n > 0) {
        return Err(queue_not_empty(queue, &counts));
    }
    let park = park_exchange(queue);
    let park_exists = exchange_exists(connection, &park).await?;
    let channel = super::link::open_channel(connection).await?;
    let mut deleted = Vec::new();
    for (name, _) in queues {
        channel
            .queue_delete(short("queue", &name)?, QueueDeleteOptions::default())
            .await
            .map_err(|e| lapin_error("delete queue", e))?;
        deleted.push(name);
    }
    if park_exists {
        delete_exchange(&channel, &park).await?;
        deleted.push(park);
    }
    let _ = channel.close(200, "deleted".into()).await;
    Ok(deleted)
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
