//! The consuming side of the transport actor: subscriptions, their channels (replaced after
//! a lost connection), settling and cancelling.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use cqrs_actors::transport::{Cancel, ConsumerTag, Declare, Deliveries, Settle, Subscribe};
use cqrs_actors::{Error, Result};
use futures_util::future::join_all;
use lapin::options::BasicCancelOptions;

use super::RabbitMqTransport;
use super::consumer::{self, ChannelEntry, ChannelGone, Forward};
use super::link::{Link, LinkUp, wait_link};

/// One subscription: what it consumes, who gets the deliveries, how many channels it waits for.
pub(super) struct ConsumerSpec {
    pub(super) queue: String,
    pub(super) prefetch: u32,
    pub(super) recipient: Recipient<Deliveries>,
    pub(super) active: bool,
    pub(super) pending: usize,
}

impl RabbitMqTransport {
    /// Opens the consuming channels `tag` is short of on the current connection.
    pub(super) fn ensure_consumers(&mut self, tag: ConsumerTag, ctx: &mut Context<Self>) {
        let Some(link) = self.link.borrow().clone() else {
            return;
        };
        let live = self
            .channels
            .values()
            .filter(|c| c.consumer == tag && c.generation == link.generation)
            .count();
        let wanted = self.config.consumers();
        let Some(spec) = self.consumers.get_mut(&tag) else {
            return;
        };
        if !spec.active {
            return;
        }
        let missing = wanted.saturating_sub(live + spec.pending);
        spec.pending += missing;
        let (queue, prefetch) = (spec.queue.clone(), spec.prefetch);
        for _ in 0..missing {
            self.next_channel += 1;
            let id = self.next_channel;
            let queue = queue.clone();
            let link = Arc::clone(&link);
            let open = async move {
                let opened = consumer::open(&link, &queue, prefetch, id).await;
                (link, queue, opened)
            };
            ctx.spawn(
                open.into_actor(self)
                    .map(move |(link, queue, opened), act, ctx| {
                        act.opened(tag, id, &link, queue, opened, ctx);
                    }),
            );
        }
    }

    fn opened(
        &mut self,
        tag: ConsumerTag,
        id: u64,
        link: &Link,
        queue: String,
        opened: Result<(lapin::Channel, lapin::Consumer)>,
        ctx: &mut Context<Self>,
    ) {
        let Some(spec) = self.consumers.get_mut(&tag) else {
            if let Ok((channel, _)) = opened {
                actix::spawn(async move {
                    let _ = channel.close(200, "consumer released".into()).await;
                });
            }
            return;
        };
        spec.pending = spec.pending.saturating_sub(1);
        match opened {
            Ok((channel, _)) if !spec.active => {
                actix::spawn(async move {
                    let _ = channel.close(200, "consumer cancelled".into()).await;
                });
            }
            Ok((channel, stream)) => {
                let entry = Arc::new(ChannelEntry {
                    consumer: tag,
                    generation: link.generation,
                    queue: queue.clone(),
                    channel: channel.clone(),
                    lapin_tag: stream.tag(),
                    unacked: Arc::default(),
                });
                consumer::forward(
                    stream,
                    Forward {
                        id,
                        queue,
                        channel,
                        unacked: Arc::clone(&entry.unacked),
                        recipient: spec.recipient.clone(),
                        gone: ctx.address().recipient(),
                        publisher: self.publisher.clone(),
                        tiers: self.config.park_tiers().to_vec(),
                    },
                );
                self.channels.insert(id, entry);
            }
            Err(e) => {
                // The queue may have been deleted under the running transport (the broker then
                // cancels its consumers): declare what this transport declared for it again.
                tracing::warn!(error = %e, queue = %queue, "consumer not started; declaring its queue again and trying again");
                let declares: Vec<Declare> = self
                    .topology
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .iter()
                    .filter(|d| d.queue == queue)
                    .cloned()
                    .collect();
                let me = ctx.address();
                let again = async move {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    for declare in declares {
                        if let Ok(Err(e)) = me.send(declare).await {
                            tracing::warn!(error = %e, queue = %queue, "declaring the queue again failed");
                        }
                    }
                };
                ctx.spawn(again.into_actor(self).map(move |(), act, ctx| {
                    act.ensure_consumers(tag, ctx);
                }));
            }
        }
    }
}

impl Handler<LinkUp> for RabbitMqTransport {
    type Result = ();

    fn handle(&mut self, LinkUp(link): LinkUp, ctx: &mut Context<Self>) {
        self.connections = link.generation;
        self.channels.retain(|_, c| c.generation == link.generation);
        let tags: Vec<ConsumerTag> = self.consumers.keys().copied().collect();
        for tag in tags {
            self.ensure_consumers(tag, ctx);
        }
    }
}

impl Handler<ChannelGone> for RabbitMqTransport {
    type Result = ();

    /// A cancelled consumer's channel stays open (its deliveries can still be settled) until
    /// the consumer is released; any other ended channel is replaced.
    fn handle(&mut self, msg: ChannelGone, ctx: &mut Context<Self>) {
        let Some(entry) = self.channels.get(&msg.id) else {
            return;
        };
        let tag = entry.consumer;
        if msg.consumer_gone {
            self.channels.remove(&msg.id);
            self.consumers.remove(&tag);
            return;
        }
        let active = self.consumers.get(&tag).is_some_and(|c| c.active);
        if !active && entry.channel.status().connected() {
            return;
        }
        self.channels.remove(&msg.id);
        if active {
            ctx.run_later(Duration::from_millis(200), move |act, ctx| {
                act.ensure_consumers(tag, ctx);
            });
        }
    }
}

impl Handler<Subscribe> for RabbitMqTransport {
    type Result = ResponseActFuture<Self, Result<ConsumerTag>>;

    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) -> Self::Result {
        self.next_consumer += 1;
        let tag = ConsumerTag(self.next_consumer);
        let count = self.config.consumers();
        let ids: Vec<u64> = (0..count)
            .map(|_| {
                self.next_channel += 1;
                self.next_channel
            })
            .collect();
        self.consumers.insert(
            tag,
            ConsumerSpec {
                queue: msg.queue.clone(),
                prefetch: msg.prefetch,
                recipient: msg.consumer,
                active: true,
                pending: count,
            },
        );
        let (mut link, deadline, queue, prefetch) =
            (self.link.clone(), self.deadline(), msg.queue, msg.prefetch);
        let open = async move {
            let l = wait_link(&mut link, None, deadline).await?;
            let mut opened = Vec::new();
            for id in ids {
                opened.push((id, consumer::open(&l, &queue, prefetch, id).await));
            }
            Ok::<_, Error>((l, queue, opened))
        };
        Box::pin(open.into_actor(self).map(move |result, act, ctx| {
            let (link, queue, opened) = match result {
                Ok(ok) => ok,
                Err(e) => {
                    act.consumers.remove(&tag);
                    return Err(e);
                }
            };
            if let Some((_, Err(_))) = opened.iter().find(|(_, o)| o.is_err()) {
                act.consumers.remove(&tag);
                let mut first_error = None;
                for (_, o) in opened {
                    match o {
                        Ok((channel, _)) => {
                            actix::spawn(async move {
                                let _ = channel.close(200, "subscribe failed".into()).await;
                            });
                        }
                        Err(e) => first_error = first_error.or(Some(e)),
                    }
                }
                return Err(
                    first_error.unwrap_or_else(|| Error::transport("RabbitMQ subscribe failed"))
                );
            }
            for (id, o) in opened {
                act.opened(tag, id, &link, queue.clone(), o, ctx);
            }
            Ok(tag)
        }))
    }
}

impl Handler<Settle> for RabbitMqTransport {
    type Result = ResponseFuture<Result<()>>;

    fn handle(&mut self, msg: Settle, _: &mut Context<Self>) -> Self::Result {
        let mut per_channel: HashMap<u64, Vec<u64>> = HashMap::new();
        for tag in msg.tags {
            per_channel.entry(tag.channel).or_default().push(tag.tag);
        }
        let work: Vec<_> = per_channel
            .into_iter()
            .filter_map(|(id, tags)| self.channels.get(&id).map(|e| (Arc::clone(e), tags)))
            .collect();
        let settlement = msg.settlement;
        Box::pin(async move {
            join_all(work.into_iter().map(|(entry, tags)| async move {
                consumer::settle(&entry.channel, &entry.unacked, tags, settlement).await;
            }))
            .await;
            Ok(())
        })
    }
}

impl Handler<Cancel> for RabbitMqTransport {
    type Result = ResponseFuture<Result<()>>;

    fn handle(&mut self, msg: Cancel, _: &mut Context<Self>) -> Self::Result {
        let entries: Vec<Arc<ChannelEntry>> = if msg.release {
            self.consumers.remove(&msg.consumer);
            let ids: Vec<u64> = self
                .channels
                .iter()
                .filter(|(_, c)| c.consumer == msg.consumer)
                .map(|(id, _)| *id)
                .collect();
            ids.iter()
                .filter_map(|id| self.channels.remove(id))
                .collect()
        } else {
            if let Some(spec) = self.consumers.get_mut(&msg.consumer) {
                spec.active = false;
            }
            self.channels
                .values()
                .filter(|c| c.consumer == msg.consumer)
                .cloned()
                .collect()
        };
        let release = msg.release;
        Box::pin(async move {
            for entry in entries {
                let result = if release {
                    entry.channel.close(200, "consumer released".into()).await
                } else {
                    entry
                        .channel
                        .basic_cancel(entry.lapin_tag.clone(), BasicCancelOptions::default())
                        .await
                };
                if let Err(e) = result {
                    tracing::debug!(error = %e, "cancel on a lost channel ignored");
                }
            }
            Ok(())
        })
    }
}
