//! The registry of master and replica models by CQRS id.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::handler::{ReplicaHandler, SharedHandler};
use crate::retry::RetryPolicy;

/// A model this service owns and publishes (the analogue of django-cqrs's `MasterMixin`).
#[derive(Debug, Clone, PartialEq)]
pub struct MasterModel {
    cqrs_id: String,
    produce: bool,
    message_ttl: Option<Option<Duration>>,
}

impl MasterModel {
    /// A master model publishing under `cqrs_id`.
    #[must_use]
    pub fn new(cqrs_id: impl Into<String>) -> Self {
        Self {
            cqrs_id: cqrs_id.into(),
            produce: true,
            message_ttl: None,
        }
    }

    /// Whether anything is published (django-cqrs `CQRS_PRODUCE`); on by default.
    #[must_use]
    pub fn with_produce(mut self, produce: bool) -> Self {
        self.produce = produce;
        self
    }

    /// Overrides the configured message TTL for this model (`None` = never expires).
    #[must_use]
    pub fn with_message_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.message_ttl = Some(ttl);
        self
    }

    /// The CQRS id.
    #[must_use]
    pub fn cqrs_id(&self) -> &str {
        &self.cqrs_id
    }

    /// Whether messages are published.
    #[must_use]
    pub fn produces(&self) -> bool {
        self.produce
    }

    /// The model's own TTL, if it overrides the configured one.
    #[must_use]
    pub fn message_ttl(&self) -> Option<Option<Duration>> {
        self.message_ttl
    }
}

/// A model this service replicates (the analogue of django-cqrs's `ReplicaMixin` and
/// `RawReplicaMixin`).
#[derive(Clone)]
pub struct ReplicaModel {
    cqrs_id: String,
    handler: SharedHandler,
    retry: Option<RetryPolicy>,
    only_direct_syncs: bool,
    gap_repair: Option<bool>,
}

impl fmt::Debug for ReplicaModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicaModel")
            .field("cqrs_id", &self.cqrs_id)
            .field("retry", &self.retry)
            .field("only_direct_syncs", &self.only_direct_syncs)
            .field("gap_repair", &self.gap_repair)
            .finish()
    }
}

impl ReplicaModel {
    /// A replica model for `cqrs_id` whose events go to `handler`.
    pub fn new(cqrs_id: impl Into<String>, handler: impl ReplicaHandler) -> Self {
        Self {
            cqrs_id: cqrs_id.into(),
            handler: Arc::new(handler),
            retry: None,
            only_direct_syncs: false,
            gap_repair: None,
        }
    }

    /// A retry policy for this model, overriding the configured one.
    #[must_use]
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Accept only SYNCs sent to this replica's queue (`cqrs.<queue>.X`); broadcast SYNCs are
    /// acknowledged and ignored (django-cqrs `CQRS_ONLY_DIRECT_SYNCS`, decided by routing key).
    #[must_use]
    pub fn with_only_direct_syncs(mut self, only: bool) -> Self {
        self.only_direct_syncs = only;
        self
    }

    /// Turns gap repair on or off for this model, over `[models.<id>] gap_repair` (off by
    /// default): after a revision gap ([`Applied::UpdatedAfterGap`](crate::Applied)) or a SAVE
    /// ignored as older than a tombstone, the replica asks the master for the row's current
    /// state, which the master answers with a SYNC to this replica's queue. The master side
    /// must answer: see [`CqrsSystemBuilder::answer_sync_requests`](crate::CqrsSystemBuilder::answer_sync_requests).
    #[must_use]
    pub fn with_gap_repair(mut self, on: bool) -> Self {
        self.gap_repair = Some(on);
        self
    }

    /// Whether the model itself turns gap repair on or off (`None`: the configuration decides).
    #[must_use]
    pub fn gap_repair(&self) -> Option<bool> {
        self.gap_repair
    }

    /// The CQRS id.
    #[must_use]
    pub fn cqrs_id(&self) -> &str {
        &self.cqrs_id
    }

    /// The model's own retry policy, if any.
    #[must_use]
    pub fn retry_policy(&self) -> Option<&RetryPolicy> {
        self.retry.as_ref()
    }

    /// Whether broadcast SYNCs are ignored.
    #[must_use]
    pub fn only_direct_syncs(&self) -> bool {
        self.only_direct_syncs
    }

    pub(crate) fn handler(&self) -> &SharedHandler {
        &self.handler
    }
}

/// The models of one service, by CQRS id. Built once; read by every actor.
#[derive(Debug, Default)]
pub struct Registry {
    masters: HashMap<String, MasterModel>,
    replicas: HashMap<String, ReplicaModel>,
}

impl Registry {
    /// Starts a registry.
    #[must_use]
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder::default()
    }

    /// The master model of `cqrs_id`.
    #[must_use]
    pub fn master(&self, cqrs_id: &str) -> Option<&MasterModel> {
        self.masters.get(cqrs_id)
    }

    /// The replica model of `cqrs_id`.
    #[must_use]
    pub fn replica(&self, cqrs_id: &str) -> Option<&ReplicaModel> {
        self.replicas.get(cqrs_id)
    }

    /// CQRS ids of the replica models, sorted.
    #[must_use]
    pub fn replica_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.replicas.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// CQRS ids of the master models, sorted.
    #[must_use]
    pub fn master_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.masters.keys().cloned().collect();
        ids.sort();
        ids
    }
}

/// Collects models; [`build`](Self::build) rejects duplicate CQRS ids.
#[derive(Debug, Default)]
pub struct RegistryBuilder {
    masters: Vec<MasterModel>,
    replicas: Vec<ReplicaModel>,
}

impl RegistryBuilder {
    /// Adds a master model.
    #[must_use]
    pub fn master(mut self, model: MasterModel) -> Self {
        self.masters.push(model);
        self
    }

    /// Adds a replica model.
    #[must_use]
    pub fn replica(mut self, model: ReplicaModel) -> Self {
        self.replicas.push(model);
        self
    }

    /// Builds the registry. A CQRS id registered twice on the same side is an
    /// [`ErrorKind::DuplicateCqrsId`] error; an empty CQRS id is a configuration error. A service
    /// may be master and replica of the same id.
    pub fn build(self) -> Result<Registry> {
        let mut registry = Registry::default();
        for model in self.masters {
            check_id(model.cqrs_id())?;
            let id = model.cqrs_id.clone();
            if registry.masters.insert(id.clone(), model).is_some() {
                return Err(duplicate("master", &id));
            }
        }
        for model in self.replicas {
            check_id(model.cqrs_id())?;
            let id = model.cqrs_id.clone();
            if registry.replicas.insert(id.clone(), model).is_some() {
                return Err(duplicate("replica", &id));
            }
        }
        Ok(registry)
    }
}

fn check_id(id: &str) -> Result<()> {
    if id.is_empty() || id.contains(['*', '#', ' ']) {
        return Err(Error::config(
            "cqrs_id",
            format!("{id:?} must be non-empty, without spaces, `*` or `#`"),
        ));
    }
    // Gap repair's requests travel under this prefix; a model named so would receive them.
    if id.starts_with(crate::gap_repair::SYNC_REQUEST_PREFIX) {
        return Err(Error::config(
            "cqrs_id",
            format!(
                "{id:?} must not start with {:?}, reserved for gap repair's sync requests",
                crate::gap_repair::SYNC_REQUEST_PREFIX
            ),
        ));
    }
    Ok(())
}

fn duplicate(side: &str, id: &str) -> Error {
    Error::new(
        ErrorKind::DuplicateCqrsId,
        format!("{side} model {id:?} is registered twice"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::{Applied, ReplicaEvent, handler_fn};

    fn noop() -> impl ReplicaHandler {
        handler_fn(|_: ReplicaEvent| async { Ok(Applied::Updated) })
    }

    #[test]
    fn duplicate_ids_are_an_error() {
        let err = Registry::builder()
            .replica(ReplicaModel::new("book", noop()))
            .replica(ReplicaModel::new("book", noop()))
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DuplicateCqrsId);
        let err = Registry::builder()
            .master(MasterModel::new("a"))
            .master(MasterModel::new("a"))
            .build();
        assert_eq!(err.unwrap_err().kind(), ErrorKind::DuplicateCqrsId);
        let both = Registry::builder()
            .master(MasterModel::new("book"))
            .replica(ReplicaModel::new("book", noop()))
            .build()
            .unwrap();
        assert!(both.master("book").is_some() && both.replica("book").is_some());
        assert_eq!(
            Registry::builder()
                .master(MasterModel::new("cqrs_sync_request.book"))
                .build()
                .unwrap_err()
                .kind(),
            ErrorKind::Config
        );
        assert_eq!(
            Registry::builder()
                .master(MasterModel::new("a#"))
                .build()
                .unwrap_err()
                .kind(),
            ErrorKind::Config
        );
    }
}
