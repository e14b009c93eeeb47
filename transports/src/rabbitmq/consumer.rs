//! Consuming: one channel per consumer with manual acks and a prefetch; deliveries go to the
//! framework in batches, the next batch only once the previous one was accepted.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::Recipient;
use actix::prelude::Message;
use cqrs_actors::Result;
use cqrs_actors::transport::{
    ConsumerTag, Deliveries, Delivery, DeliveryTag, Headers, MAX_DELIVERIES, Settlement,
};
use futures_util::{FutureExt, StreamExt};
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Consumer};
use tokio::sync::Mutex;

use super::confirm::{ConfirmPipeline, Outgoing};
use super::lapin_error;
use super::link::{Link, open_channel};
use super::topology::{self, HEADER_DUE, HEADER_TIER};

/// One consuming channel.
pub(crate) struct ChannelEntry {
    pub consumer: ConsumerTag,
    pub generation: u64,
    pub queue: String,
    pub channel: Channel,
    pub lapin_tag: lapin::types::ShortString,
    /// Delivery tags handed out and not yet settled, in order.
    pub unacked: Arc<Mutex<BTreeSet<u64>>>,
}

/// Tells the transport actor that a consuming channel ended.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ChannelGone {
    pub id: u64,
    /// The recipient refused deliveries: the consumer itself is gone.
    pub consumer_gone: bool,
}

/// Opens a channel on `link` and starts consuming `queue` on it.
pub(crate) async fn open(
    link: &Link,
    queue: &str,
    prefetch: u32,
    id: u64,
) -> Result<(Channel, Consumer)> {
    let channel = open_channel(&link.connection).await?;
    channel
        .basic_qos(
            u16::try_from(prefetch).unwrap_or(u16::MAX),
            BasicQosOptions::default(),
        )
        .await
        .map_err(|e| lapin_error("basic.qos", e))?;
    let consumer = channel
        .basic_consume(
            topology::short("queue", queue)?,
            topology::short("consumer tag", &format!("cqrs-sync-{id}"))?,
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| lapin_error("basic.consume", e))?;
    Ok((channel, consumer))
}

/// What a forwarding task needs besides its stream.
pub(crate) struct Forward {
    pub id: u64,
    pub queue: String,
    pub channel: Channel,
    pub unacked: Arc<Mutex<BTreeSet<u64>>>,
    pub recipient: Recipient<Deliveries>,
    pub gone: Recipient<ChannelGone>,
    pub publisher: ConfirmPipeline,
    pub tiers: Vec<Duration>,
}

/// Forwards the deliveries of one channel to its recipient until the channel ends.
pub(crate) fn forward(mut stream: Consumer, f: Forward) {
    tokio::spawn(async move {
        let mut consumer_gone = false;
        'outer: loop {
            let first = match stream.next().await {
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, channel = f.id, "consumer stream failed");
                    break;
                }
                None => break,
            };
            let mut raw = vec![first];
            let mut ended = false;
            while raw.len() < MAX_DELIVERIES {
                match stream.next().now_or_never() {
                    Some(Some(Ok(d))) => raw.push(d),
                    Some(Some(Err(_)) | None) => {
                        ended = true;
                        break;
                    }
                    None => break,
                }
            }
            let now = unix_ms();
            let mut batch = Vec::with_capacity(raw.len());
            {
                let mut unacked = f.unacked.lock().await;
                for d in raw {
                    unacked.insert(d.delivery_tag);
                    match header_u64(&d.properties, HEADER_DUE) {
                        Some(due) if due > now => {
                            repark(&f, d, Duration::from_millis(due - now));
                        }
                        _ => batch.push(convert(d, f.id, &f.queue)),
                    }
                }
            }
            if !batch.is_empty() && f.recipient.send(Deliveries(batch)).await.is_err() {
                tracing::warn!(
                    channel = f.id,
                    queue = %f.queue,
                    "consumer is gone; releasing its deliveries"
                );
                let _ = f.channel.close(200, "consumer gone".into()).await;
                consumer_gone = true;
                break 'outer;
            }
            if ended {
                break;
            }
        }
        let _ = f
            .gone
            .send(ChannelGone {
                id: f.id,
                consumer_gone,
            })
            .await;
    });
}

/// Parks a copy whose delay was longer than the top tier again, then acknowledges it.
fn repark(f: &Forward, d: lapin::message::Delivery, remaining: Duration) {
    let tier = topology::tier_for(&f.tiers, remaining);
    let mut headers = d.properties.headers().clone().unwrap_or_default();
    headers.insert(
        HEADER_TIER.into(),
        topology::text(&tier.as_millis().to_string()),
    );
    let mut inner = headers.inner().clone();
    if remaining <= tier {
        inner.remove(HEADER_DUE);
    }
    let properties = d.properties.clone().with_headers(FieldTable::from(inner));
    let out =
        topology::short("park exchange", &topology::park_exchange(&f.queue)).map(|exchange| {
            Outgoing {
                exchange,
                routing_key: d.routing_key.clone(),
                body: d.data,
                properties,
            }
        });
    let (channel, unacked, tag) = (f.channel.clone(), Arc::clone(&f.unacked), d.delivery_tag);
    let publisher = f.publisher.clone();
    tokio::spawn(async move {
        let parked = match out {
            Ok(out) => publisher.publish(out).await,
            Err(e) => Err(e),
        };
        let settlement = match parked {
            Ok(()) => Settlement::Ack,
            Err(e) => {
                tracing::warn!(error = %e, "parking a copy again failed; it will be delivered again");
                Settlement::Requeue
            }
        };
        settle(&channel, &unacked, vec![tag], settlement).await;
    });
}

/// Settles `tags` on one channel. A run of acks that covers the oldest unacknowledged
/// deliveries goes as one `multiple` ack. Tags the channel no longer holds are ignored, and so
/// are failures of a lost channel: its deliveries come back anyway.
pub(crate) async fn settle(
    channel: &Channel,
    unacked: &Mutex<BTreeSet<u64>>,
    tags: Vec<u64>,
    settlement: Settlement,
) {
    let mut unacked = unacked.lock().await;
    let mut tags: Vec<u64> = tags.into_iter().filter(|t| unacked.contains(t)).collect();
    tags.sort_unstable();
    tags.dedup();
    if tags.is_empty() {
        return;
    }
    for t in &tags {
        unacked.remove(t);
    }
    let result = match settlement {
        Settlement::Ack => {
            // The tags still unacknowledged all come after the covered run when the smallest
            // remaining one is larger than the run's last tag.
            let run_end = tags
                .iter()
                .take_while(|t| unacked.first().is_none_or(|first| *t < first))
                .count();
            let mut result = Ok(());
            if run_end > 1 {
                result = channel
                    .basic_ack(tags[run_end - 1], BasicAckOptions { multiple: true })
                    .await;
            }
            let single = if run_end > 1 {
                &tags[run_end..]
            } else {
                &tags[..]
            };
            for t in single {
                if result.is_err() {
                    break;
                }
                result = channel.basic_ack(*t, BasicAckOptions::default()).await;
            }
            result
        }
        Settlement::Requeue => {
            let mut result = Ok(());
            for t in &tags {
                result = channel
                    .basic_nack(
                        *t,
                        BasicNackOptions {
                            multiple: false,
                            requeue: true,
                        },
                    )
                    .await;
                if result.is_err() {
                    break;
                }
            }
            result
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "settle on a lost channel ignored; the broker redelivers");
    }
}

fn convert(d: lapin::message::Delivery, channel: u64, queue: &str) -> Delivery {
    Delivery {
        tag: DeliveryTag {
            channel,
            tag: d.delivery_tag,
        },
        queue: queue.to_owned(),
        routing_key: d.routing_key.to_string(),
        content_type: d.properties.content_type().as_ref().map(|c| c.to_string()),
        headers: headers(d.properties.headers().as_ref()),
        redelivered: d.redelivered,
        body: d.data,
    }
}

/// String and integer headers as text; tables and arrays (such as `x-death`) are left out.
pub(crate) fn headers(table: Option<&FieldTable>) -> Headers {
    let mut out = Headers::new();
    for (k, v) in table.map(FieldTable::inner).into_iter().flatten() {
        if let Some(text) = value_text(v) {
            out.insert(k.to_string(), text);
        }
    }
    out
}

fn value_text(v: &AMQPValue) -> Option<String> {
    Some(match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.to_string(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        _ => return None,
    })
}

fn header_u64(properties: &lapin::BasicProperties, key: &str) -> Option<u64> {
    let table = properties.headers().as_ref()?;
    value_text(table.inner().get(key)?)?.parse().ok()
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_and_integer_headers_become_text() {
        let mut table = FieldTable::default();
        table.insert("x-cqrs-reason".into(), topology::text("handler"));
        table.insert("n".into(), AMQPValue::LongLongInt(7));
        table.insert(
            "x-death".into(),
            AMQPValue::FieldTable(FieldTable::default()),
        );
        let h = headers(Some(&table));
        assert_eq!(h.get("x-cqrs-reason").map(String::as_str), Some("handler"));
        assert_eq!(h.get("n").map(String::as_str), Some("7"));
        assert!(!h.contains_key("x-death"));
    }
}
