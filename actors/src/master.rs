//! What the system hands the master tables registered with it: the codec and TTL their events
//! are encoded with at write time, and the publisher of direct mode.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::outbox::OutboxStore;
use crate::registry::MasterModel;
use crate::system::Publisher;

/// What a registered master table writes its events with, set by
/// [`CqrsSystemBuilder::start`](crate::CqrsSystemBuilder::start).
#[derive(Clone)]
pub struct MasterBinding {
    /// The configured codec (`codec`).
    pub codec: Codec,
    /// The model's message TTL, else `master.message_ttl` (`None`: never expires).
    pub message_ttl: Option<Duration>,
    /// The system's publisher, for tables that publish after commit.
    pub publisher: Publisher,
}

impl fmt::Debug for MasterBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterBinding")
            .field("codec", &self.codec)
            .field("message_ttl", &self.message_ttl)
            .finish_non_exhaustive()
    }
}

/// Where a master table finds its [`MasterBinding`] once a system started with it. Clones share
/// the slot.
#[derive(Clone, Default)]
pub struct MasterSlot(Arc<RwLock<Option<MasterBinding>>>);

impl fmt::Debug for MasterSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("MasterSlot")
            .field(
                &self
                    .0
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .is_some(),
            )
            .finish()
    }
}

impl MasterSlot {
    /// The binding, or an error naming `cqrs_id` when no started system registered the table.
    pub fn get(&self, cqrs_id: &str) -> Result<MasterBinding> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| {
                Error::config(
                    cqrs_id,
                    "this master table is not registered with a started CqrsSystem: pass it \
                     to CqrsSystemBuilder::master before writing through it",
                )
            })
    }

    pub(crate) fn bind(&self, binding: MasterBinding) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Some(binding);
    }
}

/// A master model as registered with [`CqrsSystemBuilder::master`](crate::CqrsSystemBuilder::master):
/// the model, the outbox its events are written to (relayed by the system) and the slot it
/// reads its binding from. A bare [`MasterModel`] converts into one (events published by hand
/// through [`Publisher`]); the SeaORM `MasterTable` converts with its outbox and slot.
#[derive(Clone)]
pub struct MasterRegistration {
    pub(crate) model: MasterModel,
    pub(crate) outbox: Option<Arc<dyn OutboxStore>>,
    pub(crate) slot: Option<MasterSlot>,
}

impl fmt::Debug for MasterRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterRegistration")
            .field("model", &self.model)
            .field("outbox", &self.outbox.as_ref().map(|o| o.name().to_owned()))
            .finish_non_exhaustive()
    }
}

impl MasterRegistration {
    /// Registers `model` alone.
    #[must_use]
    pub fn new(model: MasterModel) -> Self {
        Self {
            model,
            outbox: None,
            slot: None,
        }
    }

    /// Events of the model are written to `outbox`, which the system relays. Registrations
    /// that share one outbox (the same `Arc`) share its relay.
    #[must_use]
    pub fn with_outbox(mut self, outbox: Arc<dyn OutboxStore>) -> Self {
        self.outbox = Some(outbox);
        self
    }

    /// The system binds this slot at start.
    #[must_use]
    pub fn with_slot(mut self, slot: MasterSlot) -> Self {
        self.slot = Some(slot);
        self
    }
}

impl From<MasterModel> for MasterRegistration {
    fn from(model: MasterModel) -> Self {
        Self::new(model)
    }
}
