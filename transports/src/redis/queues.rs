//! The operator's look at one replica queue's keys, and their deletion: its own stream and
//! its group on the streams of its CQRS ids, its dead-letter stream, its parked set and its
//! registry entries.

use ::redis::aio::ConnectionManager;
use actix::prelude::*;
use cqrs_actors::Result;
use cqrs_actors::transport::{DeleteQueue, DescribeQueue, TopologyObject, queue_not_empty};

use super::conn::redis_error;
use super::keys::Keys;
use super::{RedisTransport, lock, scripts};

/// A stream as one group sees it.
#[derive(Debug, Clone, Default)]
struct StreamState {
    key: String,
    /// The CQRS id of an id stream.
    cqrs_id: Option<String>,
    exists: bool,
    length: u64,
    /// Whether the group exists on it.
    group: bool,
    pending: u64,
    ready: u64,
}

/// What exists of a replica queue.
#[derive(Debug, Default)]
struct Survey {
    queue: String,
    dead_letter_queue: String,
    /// The dead-letter queue the registry names for the queue, if it is registered.
    registered: Option<String>,
    /// Its own stream first, then one per CQRS id of the registry.
    streams: Vec<StreamState>,
    dead: StreamState,
    parked_key: String,
    parked: Option<u64>,
    /// CQRS ids whose bindings set holds the queue.
    bound: Vec<String>,
}

impl Survey {
    async fn take(
        control: &mut ConnectionManager,
        keys: &Keys,
        queue: &str,
        dead_letter_queue: &str,
    ) -> ::redis::RedisResult<Self> {
        let own = keys.queue_stream(queue);
        let parked_key = keys.parked(&own);
        let (registered, mut ids, parked_exists, parked): (Option<String>, Vec<String>, bool, u64) =
            ::redis::pipe()
                .cmd("HGET")
                .arg(keys.queues())
                .arg(queue)
                .cmd("SMEMBERS")
                .arg(keys.queue_ids(queue))
                .cmd("EXISTS")
                .arg(&parked_key)
                .cmd("ZCARD")
                .arg(&parked_key)
                .query_async(control)
                .await?;
        ids.sort();
        let mut streams = vec![StreamState {
            key: own,
            ..StreamState::default()
        }];
        streams.extend(ids.iter().map(|id| StreamState {
            key: keys.id_stream(id),
            cqrs_id: Some(id.clone()),
            ..StreamState::default()
        }));
        describe(control, &mut streams, queue).await?;
        let mut dead = [StreamState {
            key: keys.queue_stream(dead_letter_queue),
            ..StreamState::default()
        }];
        describe(control, &mut dead, dead_letter_queue).await?;
        let mut bound = Vec::new();
        if !ids.is_empty() {
            let mut pipe = ::redis::pipe();
            for id in &ids {
                pipe.cmd("SISMEMBER").arg(keys.bindings(id)).arg(queue);
            }
            let members: Vec<bool> = pipe.query_async(control).await?;
            bound = ids
                .into_iter()
                .zip(members)
                .filter_map(|(id, member)| member.then_some(id))
                .collect();
        }
        let [dead] = dead;
        Ok(Self {
            queue: queue.to_owned(),
            dead_letter_queue: dead_letter_queue.to_owned(),
            registered,
            streams,
            dead,
            parked_key,
            parked: parked_exists.then_some(parked),
            bound,
        })
    }

    fn objects(&self, keys: &Keys) -> Vec<TopologyObject> {
        let queue = &self.queue;
        let mut objects = Vec::new();
        for (i, s) in self.streams.iter().enumerate().filter(|(_, s)| s.exists) {
            let detail = match &s.cqrs_id {
                Some(id) => format!("the stream of CQRS id {id}"),
                None if i == 0 => "the queue's own stream: directed messages, retry copies".into(),
                None => String::new(),
            };
            objects.push(TopologyObject::new(
                "stream",
                &s.key,
                Some(s.length),
                detail,
            ));
            if s.group {
                objects.push(group(queue, s));
            }
        }
        for id in &self.bound {
            objects.push(TopologyObject::new(
                "binding",
                id,
                None,
                format!("{} holds {queue}", keys.bindings(id)),
            ));
        }
        if self.dead.exists {
            objects.push(TopologyObject::new(
                "stream",
                &self.dead.key,
                Some(self.dead.length),
                "dead letters",
            ));
            if self.dead.group {
                objects.push(group(&self.dead_letter_queue, &self.dead));
            }
        }
        if let Some(parked) = self.parked {
            objects.push(TopologyObject::new(
                "parked set",
                &self.parked_key,
                Some(parked),
                "retry copies waiting for their delay",
            ));
        }
        if let Some(dlq) = &self.registered {
            objects.push(TopologyObject::new(
                "registry",
                keys.queues(),
                None,
                format!("{queue} -> {dlq}"),
            ));
        }
        let ids: Vec<&str> = self
            .streams
            .iter()
            .filter_map(|s| s.cqrs_id.as_deref())
            .collect();
        if !ids.is_empty() {
            objects.push(TopologyObject::new(
                "registry",
                keys.queue_ids(queue),
                None,
                format!("CQRS ids: {}", ids.join(", ")),
            ));
        }
        objects
    }

    /// `(what, count)` of the messages it holds.
    fn counts(&self) -> [(&'static str, u64); 4] {
        let own = self.streams.iter().filter(|s| s.group);
        let (ready, pending) = own.fold((0, 0), |(r, p), s| (r + s.ready, p + s.pending));
        [
            ("ready", ready),
            ("unacked", pending),
            ("dead letters", self.dead.length),
            ("parked", self.parked.unwrap_or(0)),
        ]
    }
}

fn group(name: &str, s: &StreamState) -> TopologyObject {
    TopologyObject::new(
        "group",
        name,
        Some(s.ready + s.pending),
        format!(
            "on {}: {} not yet delivered, {} pending",
            s.key, s.ready, s.pending
        ),
    )
}

/// Fills in the state of `streams` for `group`.
async fn describe(
    control: &mut ConnectionManager,
    streams: &mut [StreamState],
    group: &str,
) -> ::redis::RedisResult<()> {
    let mut invocation = scripts::DESCRIBE.prepare_invoke();
    for s in streams.iter() {
        invocation.key(&s.key);
    }
    invocation.arg(group);
    let states: Vec<Vec<u64>> = invocation.invoke_async(control).await?;
    for (s, state) in streams.iter_mut().zip(states) {
        if let [exists, length, found, pending, ready] = state[..] {
            s.exists = exists == 1;
            s.length = length;
            s.group = found == 1;
            s.pending = pending;
            s.ready = ready;
        }
    }
    Ok(())
}

impl Handler<DescribeQueue> for RedisTransport {
    type Result = ResponseFuture<Result<Vec<TopologyObject>>>;

    /// The queue's streams with their lengths and its group on each (not yet delivered plus
    /// pending), the bindings of its CQRS ids, the dead-letter stream, the parked set and the
    /// registry entries, from the registry on the server.
    fn handle(&mut self, msg: DescribeQueue, _: &mut Context<Self>) -> Self::Result {
        let (mut control, keys) = (self.control.clone(), self.keys.clone());
        Box::pin(async move {
            let survey = Survey::take(&mut control, &keys, &msg.queue, &msg.dead_letter_queue)
                .await
                .map_err(|e| redis_error(&format!("describing queue {}", msg.queue), e))?;
            Ok(survey.objects(&keys))
        })
    }
}

impl Handler<DeleteQueue> for RedisTransport {
    type Result = ResponseActFuture<Self, Result<Vec<String>>>;

    /// Stops this process's consumers of the queue (a consumer would create its group again),
    /// then deletes, in one transaction, the queue's and the dead-letter queue's streams, the
    /// queue's group on each id stream (the id streams stay: masters and other replicas use
    /// them), the parked set and the registry entries.
    fn handle(&mut self, msg: DeleteQueue, _: &mut Context<Self>) -> Self::Result {
        let (mut control, keys) = (self.control.clone(), self.keys.clone());
        let surveyed = async move {
            let survey = Survey::take(&mut control, &keys, &msg.queue, &msg.dead_letter_queue)
                .await
                .map_err(|e| redis_error(&format!("looking at queue {}", msg.queue), e))?;
            let counts = survey.counts();
            if !msg.force && counts.iter().any(|(_, n)| *n > 0) {
                return Err(queue_not_empty(&msg.queue, &counts));
            }
            Ok(survey)
        };
        Box::pin(surveyed.into_actor(self).then(|survey, this, _| {
            if let Ok(survey) = &survey {
                this.forget_queue(&survey.queue, &survey.dead_letter_queue);
            }
            let (mut control, keys) = (this.control.clone(), this.keys.clone());
            async move { delete(&mut control, &keys, &survey?).await }.into_actor(this)
        }))
    }
}

impl RedisTransport {
    /// Stops the consumers of a queue being deleted and forgets it here.
    fn forget_queue(&mut self, queue: &str, dead_letter_queue: &str) {
        self.stop_consumers_of(queue);
        self.stop_consumers_of(dead_letter_queue);
        self.queues.remove(queue);
        self.queues.remove(dead_letter_queue);
        self.registered_dead_letters.remove(dead_letter_queue);
        let own = self.keys.queue_stream(queue);
        lock(&self.maintenance.movers).remove(&(self.keys.parked(&own), own));
    }
}

/// Deletes what the survey found, in one transaction, and answers the names.
async fn delete(
    control: &mut ConnectionManager,
    keys: &Keys,
    survey: &Survey,
) -> Result<Vec<String>> {
    let queue = &survey.queue;
    let mut pipe = ::redis::pipe();
    pipe.atomic();
    let mut deleted = Vec::new();
    for (i, s) in survey.streams.iter().enumerate() {
        if i == 0 && s.exists {
            pipe.cmd("DEL").arg(&s.key).ignore();
            deleted.push(s.key.clone());
        } else if s.group {
            pipe.cmd("XGROUP")
                .arg("DESTROY")
                .arg(&s.key)
                .arg(queue)
                .ignore();
            deleted.push(format!("group {queue} on {}", s.key));
        }
    }
    for id in &survey.bound {
        pipe.cmd("SREM").arg(keys.bindings(id)).arg(queue).ignore();
        deleted.push(format!("{} member {queue}", keys.bindings(id)));
    }
    if survey.dead.exists && survey.dead_letter_queue != *queue {
        pipe.cmd("DEL").arg(&survey.dead.key).ignore();
        deleted.push(survey.dead.key.clone());
    }
    if survey.parked.is_some() {
        pipe.cmd("DEL").arg(&survey.parked_key).ignore();
        deleted.push(survey.parked_key.clone());
    }
    if survey.registered.is_some() {
        pipe.cmd("HDEL").arg(keys.queues()).arg(queue).ignore();
        deleted.push(format!("{} field {queue}", keys.queues()));
    }
    if survey.streams.len() > 1 {
        pipe.cmd("DEL").arg(keys.queue_ids(queue)).ignore();
        deleted.push(keys.queue_ids(queue));
    }
    // Registered as a queue of its own by its Declare; and both streams leave the trimmer.
    pipe.cmd("HDEL")
        .arg(keys.queues())
        .arg(&survey.dead_letter_queue)
        .ignore();
    pipe.cmd("SREM")
        .arg(keys.streams())
        .arg(&survey.streams[0].key)
        .arg(&survey.dead.key)
        .ignore();
    pipe.query_async::<()>(control)
        .await
        .map_err(|e| redis_error(&format!("deleting queue {queue}"), e))?;
    Ok(deleted)
}
