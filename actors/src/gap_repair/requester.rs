//! The replica side: after an event applied with a revision gap, or a SAVE ignored as older
//! than a tombstone, ask the master for the row, within the limits of `[gap_repair]`.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use serde_json::Value;

use super::limiter::{Admit, Limiter};
use super::request::SyncRequest;
use crate::config::CqrsConfig;
use crate::envelope::SignalType;
use crate::error::ErrorKind;
use crate::handler::{Applied, ReplicaEvent, Skip};
use crate::registry::Registry;
use crate::transport::TransportHandle;
use crate::values;

/// Sends sync requests for the replica models that have gap repair on.
pub(crate) struct GapRequester {
    models: HashSet<String>,
    queue: String,
    transport: TransportHandle,
    limiter: Mutex<Limiter>,
}

impl GapRequester {
    /// A requester for the replica models with gap repair on (the model's own setting, else
    /// `[models.<id>] gap_repair`), or `None` when no model has it: then nothing is ever
    /// requested.
    pub fn for_replicas(
        registry: &Registry,
        config: &CqrsConfig,
        transport: TransportHandle,
        queue: &str,
    ) -> Option<Self> {
        let models: HashSet<String> = registry
            .replica_ids()
            .into_iter()
            .filter(|id| {
                registry
                    .replica(id)
                    .and_then(|m| m.gap_repair())
                    .unwrap_or_else(|| config.gap_repair_enabled(id))
            })
            .collect();
        if models.is_empty() {
            return None;
        }
        tracing::info!(models = ?models, queue, "gap repair on: rows are asked for after a revision gap");
        Some(Self {
            models,
            queue: queue.to_owned(),
            transport,
            limiter: Mutex::new(Limiter::new(config.gap_repair(), Instant::now())),
        })
    }

    /// Looks at how an event was applied and asks for its row when it tells of lost events.
    ///
    /// The request is a hint: it is published in the background and the event's delivery is
    /// acknowledged without waiting for it, because the event itself was applied. A request
    /// that cannot go (no master answers, the broker is away) is logged and forgotten; the
    /// row is asked for again at its next gap once the window has passed.
    pub fn observe(&self, event: &ReplicaEvent, applied: Applied) {
        let reason = match applied {
            Applied::UpdatedAfterGap { .. } => "revision_gap",
            Applied::Skipped(Skip::Deleted) => "older_than_delete",
            _ => return,
        };
        // A SYNC carries the master's current state already: asking again would only loop.
        if event.signal() == SignalType::Sync || !self.models.contains(event.cqrs_id()) {
            return;
        }
        let pk = event.pk();
        if pk.is_null() {
            return;
        }
        let cqrs_id = event.cqrs_id();
        let pk_text = values::pk_text(pk);
        let admit = self
            .limiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit(cqrs_id, &pk_text, Instant::now());
        match admit {
            Admit::Go => {}
            Admit::Outstanding => {
                tracing::debug!(event = "sync_request_outstanding", cqrs_id = %values::excerpt(cqrs_id), pk = %values::excerpt(&pk_text), reason, "row asked for already within the window");
                return;
            }
            Admit::RateLimited => {
                tracing::info!(event = "sync_request_rate_limited", cqrs_id = %values::excerpt(cqrs_id), pk = %values::excerpt(&pk_text), reason, "sync request not sent: gap_repair rate limit reached");
                return;
            }
        }
        self.send(cqrs_id, pk.clone(), reason);
    }

    fn send(&self, cqrs_id: &str, pk: Value, reason: &'static str) {
        let request = SyncRequest {
            cqrs_id: cqrs_id.to_owned(),
            instance_pk: pk,
            queue: self.queue.clone(),
        };
        let pk_text = values::pk_text(&request.instance_pk);
        let message = match request.to_message() {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "sync request could not be encoded");
                return;
            }
        };
        let publish = self.transport.publish(message);
        let cqrs_id = values::abbreviate(cqrs_id, 200);
        let pk_text = values::abbreviate(&pk_text, 200);
        actix::spawn(async move {
            match publish.await {
                Ok(()) => tracing::info!(
                    event = "sync_requested",
                    cqrs_id,
                    pk = pk_text,
                    reason,
                    "asked the master for the row's current state"
                ),
                Err(e) if e.kind() == ErrorKind::Unroutable => tracing::warn!(
                    event = "sync_request_unroutable",
                    cqrs_id,
                    pk = pk_text,
                    "no master answers sync requests for this CQRS id (turn answering on in the master service)"
                ),
                Err(e) => {
                    tracing::warn!(event = "sync_request_failed", cqrs_id, pk = pk_text, error = %e, "sync request could not be published")
                }
            }
        });
    }
}
