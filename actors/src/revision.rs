//! The replica rules of WIRE.md section 4 as one pure function, shared by every replica
//! implementation (the in-memory table, user handlers, the SeaORM adapter).

use crate::envelope::SignalType;

/// What a replica does with an incoming SAVE or SYNC, given the stored revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// No row: create it.
    Create,
    /// The next revision (or any SYNC with `old <= new`): apply.
    Apply,
    /// `new > old + 1` on a SAVE: apply, and log that `missing` revisions were lost or filtered.
    ApplyAfterGap {
        /// How many revisions were skipped.
        missing: i64,
    },
    /// A SYNC with `old > new`: apply, and log a downgrade warning.
    ApplyDowngrade,
    /// A SAVE with `old > new`: ignore (out of order), acknowledge.
    IgnoreStale,
    /// A SAVE with `old == new`: ignore (duplicate), acknowledge.
    IgnoreDuplicate,
    /// The row was deleted at a revision not older than the incoming one (opt-in tombstones).
    IgnoreDeleted,
}

impl Decision {
    /// Whether the row is written.
    #[must_use]
    pub fn writes(self) -> bool {
        matches!(
            self,
            Decision::Create
                | Decision::Apply
                | Decision::ApplyAfterGap { .. }
                | Decision::ApplyDowngrade
        )
    }
}

/// Decides a SAVE or SYNC (a DELETE always deletes). `stored` is the replica's revision,
/// `None` when there is no row; `tombstone` is the revision of a remembered DELETE, if
/// tombstones are on and the row is gone.
#[must_use]
pub fn decide(
    signal: SignalType,
    stored: Option<i64>,
    incoming: i64,
    tombstone: Option<i64>,
) -> Decision {
    let Some(old) = stored else {
        return match tombstone {
            Some(deleted_at) if incoming < deleted_at => Decision::IgnoreDeleted,
            _ => Decision::Create,
        };
    };
    match signal {
        SignalType::Sync if old > incoming => Decision::ApplyDowngrade,
        SignalType::Sync | SignalType::Delete => Decision::Apply,
        SignalType::Save if old > incoming => Decision::IgnoreStale,
        SignalType::Save if old == incoming => Decision::IgnoreDuplicate,
        SignalType::Save if incoming > old + 1 => Decision::ApplyAfterGap {
            missing: incoming - old - 1,
        },
        SignalType::Save => Decision::Apply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SignalType::{Save, Sync};

    #[test]
    fn the_wire_table() {
        assert_eq!(decide(Save, None, 7, None), Decision::Create);
        assert_eq!(decide(Sync, None, 7, None), Decision::Create);
        assert_eq!(decide(Save, Some(5), 4, None), Decision::IgnoreStale);
        assert_eq!(decide(Sync, Some(5), 4, None), Decision::ApplyDowngrade);
        assert_eq!(decide(Save, Some(5), 5, None), Decision::IgnoreDuplicate);
        assert_eq!(decide(Sync, Some(5), 5, None), Decision::Apply);
        assert_eq!(
            decide(Save, Some(5), 8, None),
            Decision::ApplyAfterGap { missing: 2 }
        );
        assert_eq!(decide(Sync, Some(5), 8, None), Decision::Apply);
        assert_eq!(decide(Save, Some(5), 6, None), Decision::Apply);
        assert_eq!(decide(Sync, Some(5), 6, None), Decision::Apply);
    }

    #[test]
    fn tombstones_stop_stale_resurrection() {
        assert_eq!(decide(Save, None, 3, Some(4)), Decision::IgnoreDeleted);
        assert_eq!(decide(Sync, None, 3, Some(4)), Decision::IgnoreDeleted);
        assert_eq!(decide(Save, None, 4, Some(4)), Decision::Create);
        assert!(!Decision::IgnoreDeleted.writes());
    }
}
