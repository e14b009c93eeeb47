//! [`MemoryTable`]: a replica model with no database, keeping rows in memory by primary key
//! under the rules of WIRE.md section 4. Useful as a cache, in tests and in the quick start.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};

use crate::envelope::{JsonObject, SignalType};
use crate::error::{Error, Result};
use crate::handler::{Applied, ReplicaEvent, ReplicaHandler, Skip};
use crate::revision::{Decision, decide};

/// One replicated row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The row's data as the master sent it (minus nothing).
    pub data: JsonObject,
    /// Its `cqrs_revision`.
    pub revision: i64,
    /// Its `cqrs_updated`.
    pub updated: DateTime<Utc>,
}

#[derive(Debug, Default)]
struct State {
    rows: HashMap<String, Row>,
    tombstones: HashMap<String, i64>,
}

/// An in-memory replica table. Clones share the same rows.
#[derive(Debug, Clone, Default)]
pub struct MemoryTable {
    state: Arc<Mutex<State>>,
    tombstones: bool,
}

impl MemoryTable {
    /// An empty table, without tombstones (django-cqrs behaviour: a stale SAVE after a DELETE
    /// re-creates the row).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Remembers the revision of each DELETE so that an older SAVE or SYNC arriving later does
    /// not bring the row back. A master that re-creates a deleted primary key (revision 0 again)
    /// is then ignored, which is why this is opt-in.
    #[must_use]
    pub fn with_tombstones(mut self, on: bool) -> Self {
        self.tombstones = on;
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A copy of every row, by primary key text, sorted.
    #[must_use]
    pub fn snapshot(&self) -> BTreeMap<String, Row> {
        self.lock()
            .rows
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// One row.
    #[must_use]
    pub fn get(&self, pk: &str) -> Option<Row> {
        self.lock().rows.get(pk).cloned()
    }

    /// Number of rows.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().rows.len()
    }

    /// Whether the table is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies one event under the replica rules; what [`ReplicaHandler::apply`] does.
    pub fn apply_event(&self, event: &ReplicaEvent) -> Result<Applied> {
        let envelope = event.envelope();
        let revision = envelope.require_revision()?;
        let updated = envelope.require_updated()?;
        let pk = match envelope.signal_type {
            SignalType::Delete => envelope.instance_data.get("id"),
            _ => Some(envelope.pk()),
        };
        let pk = match pk {
            Some(v) if !v.is_null() => crate::values::pk_text(v),
            _ => return Err(Error::invalid_data("CQRS PK is not provided")),
        };
        let mut state = self.lock();
        if envelope.signal_type == SignalType::Delete {
            if self.tombstones {
                let t = state.tombstones.entry(pk.clone()).or_insert(revision);
                *t = (*t).max(revision);
            }
            return Ok(match state.rows.remove(&pk) {
                Some(_) => Applied::Deleted,
                None => Applied::Skipped(Skip::Missing),
            });
        }
        let stored = state.rows.get(&pk).map(|r| r.revision);
        let tombstone = if self.tombstones {
            state.tombstones.get(&pk).copied()
        } else {
            None
        };
        let decision = decide(envelope.signal_type, stored, revision, tombstone);
        let row = Row {
            data: envelope.instance_data.clone(),
            revision,
            updated,
        };
        Ok(match decision {
            Decision::Create => {
                state.rows.insert(pk, row);
                Applied::Created
            }
            Decision::Apply | Decision::ApplyDowngrade => {
                state.rows.insert(pk, row);
                Applied::Updated
            }
            Decision::ApplyAfterGap { missing } => {
                state.rows.insert(pk, row);
                Applied::UpdatedAfterGap { missing }
            }
            Decision::IgnoreStale => Applied::Skipped(Skip::Stale),
            Decision::IgnoreDuplicate => Applied::Skipped(Skip::Duplicate),
            Decision::IgnoreDeleted => Applied::Skipped(Skip::Deleted),
        })
    }
}

impl ReplicaHandler for MemoryTable {
    async fn apply(&self, event: &ReplicaEvent) -> Result<Applied> {
        self.apply_event(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Envelope;
    use crate::error::ErrorKind;
    use serde_json::json;

    fn event(signal: SignalType, id: i64, rev: i64) -> ReplicaEvent {
        let data = json!({"id": id, "cqrs_revision": rev, "cqrs_updated": "2026-11-27 17:08:25+00:00", "v": rev});
        let data = data.as_object().cloned().unwrap_or_default();
        ReplicaEvent::new(Envelope::new(signal, "t", data), "t", false, false)
    }

    #[test]
    fn rules_and_tombstones() {
        let t = MemoryTable::new();
        assert_eq!(
            t.apply_event(&event(SignalType::Save, 1, 0)).unwrap(),
            Applied::Created
        );
        assert_eq!(
            t.apply_event(&event(SignalType::Save, 1, 0)).unwrap(),
            Applied::Skipped(Skip::Duplicate)
        );
        assert_eq!(
            t.apply_event(&event(SignalType::Save, 1, 3)).unwrap(),
            Applied::UpdatedAfterGap { missing: 2 }
        );
        assert_eq!(
            t.apply_event(&event(SignalType::Save, 1, 2)).unwrap(),
            Applied::Skipped(Skip::Stale)
        );
        assert_eq!(
            t.apply_event(&event(SignalType::Sync, 1, 2)).unwrap(),
            Applied::Updated
        );
        assert_eq!(t.get("1").unwrap().revision, 2);
        assert_eq!(
            t.apply_event(&event(SignalType::Delete, 1, 4)).unwrap(),
            Applied::Deleted
        );
        assert_eq!(
            t.apply_event(&event(SignalType::Delete, 1, 4)).unwrap(),
            Applied::Skipped(Skip::Missing)
        );
        assert_eq!(
            t.apply_event(&event(SignalType::Save, 1, 3)).unwrap(),
            Applied::Created,
            "django resurrects"
        );

        let t = MemoryTable::new().with_tombstones(true);
        t.apply_event(&event(SignalType::Save, 1, 0)).unwrap();
        t.apply_event(&event(SignalType::Delete, 1, 1)).unwrap();
        assert_eq!(
            t.apply_event(&event(SignalType::Save, 1, 0)).unwrap(),
            Applied::Skipped(Skip::Deleted)
        );
        assert!(t.is_empty());
    }

    #[test]
    fn missing_sync_fields_are_invalid_data() {
        let e = ReplicaEvent::new(
            Envelope::new(SignalType::Save, "t", JsonObject::new()),
            "t",
            false,
            false,
        );
        assert_eq!(
            MemoryTable::new().apply_event(&e).unwrap_err().kind(),
            ErrorKind::InvalidData
        );
    }
}
