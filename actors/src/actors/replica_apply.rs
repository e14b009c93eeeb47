//! ReplicaApply: one shard's worker. Applies batches through the model's handler, acknowledges
//! only after the handler succeeded, sends failures to the Retrier, and survives a panicking
//! handler: the worker restarts (it is supervised) and the message is delivered again.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use futures_util::future::join_all;
use tokio::sync::oneshot;
use tracing::Instrument;

use super::{Delivered, Drain, IdleWaiters, Incoming, ReplicaShared, Retrier, RetryRequest};
use crate::envelope::SignalType;
use crate::error::{Error, ErrorKind};
use crate::handler::{Applied, ReplicaEvent, Skip};
use crate::stats::{IdMetrics, Outcome};
use crate::transport::Settlement;

/// Events for this worker, in delivery order.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Apply(pub Vec<Incoming>);

pub(crate) struct ReplicaApply {
    shared: Arc<ReplicaShared>,
    retrier: Addr<Retrier>,
    pending: VecDeque<Incoming>,
    busy: bool,
    capacity: usize,
    room: Vec<oneshot::Sender<()>>,
    idle: IdleWaiters,
}

/// How a batch ended.
enum BatchEnd {
    Done,
    Panicked,
}

impl ReplicaApply {
    pub fn new(shared: Arc<ReplicaShared>, retrier: Addr<Retrier>) -> Self {
        let capacity = shared.config.replica().batch_size() * 2;
        Self {
            shared,
            retrier,
            pending: VecDeque::new(),
            busy: false,
            capacity,
            room: Vec::new(),
            idle: IdleWaiters::default(),
        }
    }

    /// Starts the next batch if the worker is free.
    fn kick(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        if self.pending.is_empty() {
            self.idle.notify();
            return;
        }
        let linger = self.shared.config.replica().batch_linger();
        let size = self.shared.config.replica().batch_size();
        if !linger.is_zero() && self.pending.len() < size {
            self.busy = true;
            ctx.run_later(linger, |act, ctx| {
                act.busy = false;
                act.start_batch(ctx);
            });
            return;
        }
        self.start_batch(ctx);
    }

    fn start_batch(&mut self, ctx: &mut Context<Self>) {
        if self.busy || self.pending.is_empty() {
            return;
        }
        self.busy = true;
        let size = self.shared.config.replica().batch_size();
        let n = size.min(self.pending.len());
        let batch: Vec<Incoming> = self.pending.drain(..n).collect();
        if self.pending.len() < self.capacity {
            for tx in self.room.drain(..) {
                let _ = tx.send(());
            }
        }
        let fut = apply_batch(Arc::clone(&self.shared), self.retrier.clone(), batch);
        ctx.spawn(fut.into_actor(self).map(|end, act, ctx| {
            act.busy = false;
            match end {
                BatchEnd::Done => act.kick(ctx),
                BatchEnd::Panicked => ctx.stop(),
            }
        }));
    }
}

impl Actor for ReplicaApply {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.kick(ctx);
    }
}

impl Supervised for ReplicaApply {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.busy = false;
        self.shared.metrics.add_restarts(1);
        tracing::warn!(
            event = "worker_restarted",
            pending = self.pending.len(),
            "replica worker restarted after a panic"
        );
    }
}

impl Handler<Apply> for ReplicaApply {
    type Result = ResponseFuture<()>;

    /// Queues the events; answers once there is room again, so a slow database slows the
    /// consumer instead of growing memory.
    fn handle(&mut self, msg: Apply, ctx: &mut Context<Self>) -> Self::Result {
        self.pending.extend(msg.0);
        self.kick(ctx);
        if self.pending.len() <= self.capacity {
            return Box::pin(async {});
        }
        let (tx, rx) = oneshot::channel();
        self.room.push(tx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

impl Handler<Drain> for ReplicaApply {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, _: &mut Context<Self>) -> Self::Result {
        self.idle.wait(!self.busy && self.pending.is_empty())
    }
}

/// Applies one batch: per model, in delivery order; acknowledges successes after the handler
/// returned, hands failures to the Retrier.
async fn apply_batch(
    shared: Arc<ReplicaShared>,
    retrier: Addr<Retrier>,
    batch: Vec<Incoming>,
) -> BatchEnd {
    let mut groups: Vec<(String, Vec<Incoming>)> = Vec::new();
    for incoming in batch {
        let id = incoming.event.cqrs_id();
        match groups.iter_mut().find(|(g, _)| g == id) {
            Some((_, v)) => v.push(incoming),
            None => groups.push((id.to_owned(), vec![incoming])),
        }
    }
    let mut acks = Vec::new();
    let mut failures: Vec<(Incoming, Error)> = Vec::new();
    let mut panicked: Vec<Incoming> = Vec::new();
    for (cqrs_id, group) in groups {
        if !panicked.is_empty() {
            panicked.extend(group);
            continue;
        }
        let Some(model) = shared.registry.replica(&cqrs_id) else {
            for incoming in group {
                let err = Error::new(
                    ErrorKind::UnknownCqrsId,
                    format!("no replica model {cqrs_id:?}"),
                );
                failures.push((incoming, err));
            }
            continue;
        };
        let handler = Arc::clone(model.handler());
        // Lend the events to the handler without copying them; rejoin them afterwards.
        let (events, delivered): (Vec<ReplicaEvent>, Vec<Delivered>) =
            group.into_iter().map(|i| (i.event, i.delivered)).unzip();
        let started = Instant::now();
        // One span per batch: what the handler records goes in it, and it times the apply.
        let batch_span =
            tracing::info_span!("cqrs.batch", cqrs_id = %cqrs_id, events = events.len());
        let outcome = AssertUnwindSafe(handler.apply_batch(&events))
            .catch_unwind()
            .instrument(batch_span)
            .await;
        let count = events.len();
        let figures = shared.metrics.id(&cqrs_id);
        figures.record_batch(count, started.elapsed().as_secs_f64());
        let committed = Utc::now();
        let group = events
            .into_iter()
            .zip(delivered)
            .map(|(event, delivered)| Incoming { event, delivered });
        match outcome {
            Ok(results) if results.len() == count => {
                for (incoming, result) in group.zip(results) {
                    match result {
                        Ok(applied) => {
                            log_applied(&figures, &incoming, applied);
                            if writes(applied) {
                                record_lag(&figures, &incoming.event, committed);
                            }
                            if let Some(gap_repair) = &shared.gap_repair {
                                gap_repair.observe(&incoming.event, applied);
                            }
                            acks.push(incoming.delivered.tag);
                        }
                        Err(e) => failures.push((incoming, e)),
                    }
                }
            }
            Ok(results) => {
                let n = results.len();
                for incoming in group {
                    let err = Error::handler(format!(
                        "apply_batch returned {n} results for {count} events"
                    ));
                    failures.push((incoming, err));
                }
            }
            Err(_) => {
                tracing::error!(event = "panicked", cqrs_id = %cqrs_id, events = count, "replica handler panicked");
                panicked.extend(group);
            }
        }
    }
    if let Err(e) = shared.transport.settle(acks, Settlement::Ack).await {
        tracing::warn!(error = %e, "ack failed; the deliveries will come again and apply idempotently");
    }
    let mut requeue = Vec::new();
    let requeued = super::id_counts(
        panicked
            .iter()
            .filter(|i| !i.event.is_redelivered())
            .map(|i| i.event.cqrs_id()),
    );
    for incoming in panicked.drain(..) {
        if incoming.event.is_redelivered() {
            let err = Error::new(
                ErrorKind::Panic,
                "the replica handler panicked on a redelivered message",
            );
            failures.push((incoming, err));
        } else {
            requeue.push(incoming.delivered.tag);
        }
    }
    let panicked =
        !requeue.is_empty() || failures.iter().any(|(_, e)| e.kind() == ErrorKind::Panic);
    for (id, n) in requeued {
        shared.metrics.count(&id, Outcome::Requeued, n);
    }
    if let Err(e) = shared.transport.settle(requeue, Settlement::Requeue).await {
        tracing::warn!(error = %e, "requeue failed; the deliveries come back when the consumer is released");
    }
    let sends: Vec<_> = failures
        .into_iter()
        .map(|(incoming, error)| {
            incoming
                .span()
                .in_scope(|| tracing::warn!(event = "failed", error = %error, "CQRS is failed"));
            let tag = incoming.delivered.tag;
            let ids = super::id_counts([incoming.event.cqrs_id()]);
            ((tag, ids), retrier.send(RetryRequest { incoming, error }))
        })
        .collect();
    let (tags, requests): (Vec<_>, Vec<_>) = sends.into_iter().unzip();
    for ((tag, ids), sent) in tags.into_iter().zip(join_all(requests).await) {
        shared
            .hand_back_if_gone(vec![tag], ids, sent, "retrier")
            .await;
    }
    if panicked {
        BatchEnd::Panicked
    } else {
        BatchEnd::Done
    }
}

/// Whether the handler wrote a row.
fn writes(applied: Applied) -> bool {
    !matches!(applied, Applied::Skipped(_))
}

/// The replication lag of a SAVE or DELETE just committed: now minus the master's
/// `cqrs_updated`. A SYNC re-sends a row as it was last changed, long ago maybe: no lag.
fn record_lag(figures: &IdMetrics, event: &ReplicaEvent, committed: DateTime<Utc>) {
    let envelope = event.envelope();
    if envelope.signal_type == SignalType::Sync {
        return;
    }
    if let Ok(updated) = envelope.require_updated() {
        let lag = (committed - updated).num_microseconds().unwrap_or(i64::MAX);
        #[allow(clippy::cast_precision_loss)] // microseconds of a lag, far below 2^52
        figures.record_lag(lag as f64 / 1e6);
    }
}

fn log_applied(figures: &IdMetrics, incoming: &Incoming, applied: Applied) {
    if let Applied::Created | Applied::Updated | Applied::Deleted = applied {
        figures.count(Outcome::Applied, 1);
        // The common case: make and enter the span only when its event is recorded.
        if tracing::enabled!(tracing::Level::DEBUG) {
            incoming.span().in_scope(
                || tracing::debug!(event = "applied", outcome = ?applied, "CQRS is applied"),
            );
        }
        return;
    }
    let _enter = incoming.span().enter();
    match applied {
        Applied::Created | Applied::Updated | Applied::Deleted => {}
        Applied::UpdatedAfterGap { missing } => {
            figures.count(Outcome::Applied, 1);
            figures.count(Outcome::Gap, 1);
            tracing::debug!(
                event = "applied",
                missing,
                "CQRS is applied after a revision gap"
            );
        }
        Applied::Skipped(skip) => match skip {
            Skip::Stale => {
                figures.count(Outcome::Stale, 1);
                tracing::warn!(event = "ignored_stale", "Wrong CQRS sync order");
            }
            Skip::Duplicate => {
                figures.count(Outcome::Duplicate, 1);
                tracing::warn!(event = "ignored_duplicate", "Received duplicate CQRS data");
            }
            Skip::Deleted => {
                figures.count(Outcome::Skipped, 1);
                tracing::info!(
                    event = "ignored_deleted",
                    "CQRS data older than the row's delete"
                );
            }
            Skip::BroadcastSync => {
                figures.count(Outcome::Skipped, 1);
                tracing::info!(event = "skipped", "CQRS broadcast sync ignored");
            }
            Skip::Missing => {
                figures.count(Outcome::Skipped, 1);
                tracing::debug!(event = "skipped", "CQRS delete of a missing row");
            }
        },
    }
}
