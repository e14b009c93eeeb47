//! The operator's tools: dead letters listed without taking them, retried and purged; a
//! replica queue's topology described and deleted. The framework never sends these; the
//! command line does, through [`TransportHandle`](super::TransportHandle).
//! The rules they share are in the module docs of `transport`.

use std::fmt;
use std::sync::Arc;

use actix::prelude::*;

use super::messages::{Headers, OutgoingMessage};
use crate::error::Result;

/// A dead letter as the dead-letter queue holds it.
#[derive(Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The transport's own id for it: the entry id on Redis, its sequence number on the memory
    /// transport, and on RabbitMQ (which has no ids) its position in the queue when it was
    /// listed, from `"1"`.
    pub id: String,
    /// The routing key as dead-lettered: `cqrs.<dead-letter queue>.<cqrs id>`, or the queue's
    /// own name when the CQRS id was unknown.
    pub routing_key: String,
    /// The body as it was dead-lettered.
    pub body: Vec<u8>,
    /// Its content type.
    pub content_type: Option<String>,
    /// Its headers ([`HEADER_REASON`](super::HEADER_REASON),
    /// [`HEADER_ERROR`](super::HEADER_ERROR), ...).
    pub headers: Headers,
}

impl DeadLetter {
    /// The CQRS id its routing key names: the last dot-separated part of a
    /// `cqrs.<queue>.<id>` key; `None` for any other key (a dead letter whose id was unknown).
    #[must_use]
    pub fn cqrs_id(&self) -> Option<&str> {
        let rest = self.routing_key.strip_prefix("cqrs.")?;
        let (queue, id) = rest.rsplit_once('.')?;
        (!queue.is_empty() && !id.is_empty()).then_some(id)
    }

    /// Whether a `cqrs_id` filter selects it (`None` selects every dead letter).
    #[must_use]
    pub fn matches(&self, cqrs_id: Option<&str>) -> bool {
        cqrs_id.is_none_or(|id| self.cqrs_id() == Some(id))
    }
}

impl fmt::Debug for DeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetter")
            .field("id", &self.id)
            .field("routing_key", &self.routing_key)
            .field("body_len", &self.body.len())
            .field("content_type", &self.content_type)
            .field("headers", &self.headers)
            .finish()
    }
}

/// Lists dead letters without taking them: they stay in the dead-letter queue, in order.
/// Answers at most `limit` of them (of one CQRS id when `cqrs_id` is given), oldest first.
///
/// RabbitMQ cannot browse a queue: it takes the messages there were when the listing began and
/// hands them all back, which marks them redelivered.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Vec<DeadLetter>>")]
pub struct ListDeadLetters {
    /// The dead-letter queue.
    pub dead_letter_queue: String,
    /// Only the dead letters of this CQRS id.
    pub cqrs_id: Option<String>,
    /// At most this many (`usize::MAX` for all).
    pub limit: usize,
}

/// What to republish for a dead letter: usually its body with `retries` reset and a new
/// `expires`, routed to the replica queue (`Route::queue`). `None` leaves the dead letter
/// where it is.
pub type Rewrite = Arc<dyn Fn(&DeadLetter) -> Option<OutgoingMessage> + Send + Sync>;

/// Republishes dead letters as `rewrite` makes them: of the first `limit` dead letters (of one
/// CQRS id when `cqrs_id` is given), oldest first, each one `rewrite` answers for is published
/// and, only once the broker confirmed that publish, removed from the dead-letter queue. A
/// dead letter is thus never lost nor left twice; one whose rewrite is `None` stays.
///
/// The first publish that fails ends the retry with its error (an
/// [`ErrorKind::Unroutable`](crate::ErrorKind) when no queue takes the copy): the dead letters
/// retried before it are gone from the queue, that one and the rest stay.
#[derive(Message)]
#[rtype(result = "Result<RetryReport>")]
pub struct RetryDeadLetters {
    /// The dead-letter queue.
    pub dead_letter_queue: String,
    /// Only the dead letters of this CQRS id.
    pub cqrs_id: Option<String>,
    /// At most this many dead letters are looked at, retried or skipped (`usize::MAX` for all).
    pub limit: usize,
    /// What to publish for each.
    pub rewrite: Rewrite,
}

impl fmt::Debug for RetryDeadLetters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryDeadLetters")
            .field("dead_letter_queue", &self.dead_letter_queue)
            .field("cqrs_id", &self.cqrs_id)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

/// What a [`RetryDeadLetters`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryReport {
    /// Dead letters republished and removed.
    pub retried: u64,
    /// Dead letters left in place because the rewrite answered `None`.
    pub skipped: u64,
}

/// Deletes dead letters: those of one CQRS id when `cqrs_id` is given, all otherwise. Answers
/// how many were deleted.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<u64>")]
pub struct PurgeDeadLetters {
    /// The dead-letter queue.
    pub dead_letter_queue: String,
    /// Only the dead letters of this CQRS id.
    pub cqrs_id: Option<String>,
}

/// Describes what [`Declare`](super::Declare) created for a replica queue, with message
/// counts: an operator's first look. Objects that do not exist are left out.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Vec<TopologyObject>>")]
pub struct DescribeQueue {
    /// The replica queue.
    pub queue: String,
    /// Its dead-letter queue.
    pub dead_letter_queue: String,
}

/// One broker object of a replica's topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyObject {
    /// What it is: `"exchange"`, `"queue"`, `"binding"`, `"stream"`, `"group"`,
    /// `"parked set"`, `"registry"`.
    pub kind: String,
    /// Its name on the broker (for a binding, its routing key or header match).
    pub name: String,
    /// The messages it holds, where that means something and the broker tells.
    pub messages: Option<u64>,
    /// A short description: its arguments, what it is bound to.
    pub detail: String,
}

impl TopologyObject {
    /// An object of `kind` named `name`.
    pub fn new(
        kind: impl Into<String>,
        name: impl Into<String>,
        messages: Option<u64>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            kind: kind.into(),
            name: name.into(),
            messages,
            detail: detail.into(),
        }
    }
}

/// Deletes one replica queue's objects: on RabbitMQ the queue, its dead-letter queue, its
/// parking exchange and parking queues; on Redis its streams, its groups, its parked set and
/// its registry entries; on the memory transport its queues and their bindings.
///
/// While any of them holds messages (ready or unacknowledged in the queue, dead letters,
/// parked copies) it is refused with an [`ErrorKind::Config`](crate::ErrorKind) error naming
/// the queue and the counts, unless `force`. Answers the names of the objects deleted; objects
/// that did not exist are not named.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Vec<String>>")]
pub struct DeleteQueue {
    /// The replica queue.
    pub queue: String,
    /// Its dead-letter queue.
    pub dead_letter_queue: String,
    /// Delete also when messages would be lost.
    pub force: bool,
}

/// The error of a [`DeleteQueue`] refused because `queue` still holds messages; `counts`
/// names where they are (`("dead letters", 3)`, ...), zero counts left out.
#[must_use]
pub fn queue_not_empty(queue: &str, counts: &[(&str, u64)]) -> crate::Error {
    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    let parts: Vec<String> = counts
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(what, n)| format!("{what}: {n}"))
        .collect();
    crate::Error::config(
        "force",
        format!(
            "queue {queue:?} still holds {total} messages ({}); delete it with force to lose them",
            parts.join(", ")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dead(routing_key: &str) -> DeadLetter {
        DeadLetter {
            id: "1".into(),
            routing_key: routing_key.into(),
            body: b"secret".to_vec(),
            content_type: None,
            headers: Headers::new(),
        }
    }

    #[test]
    fn the_cqrs_id_is_the_last_part_of_a_directed_key() {
        assert_eq!(dead("cqrs.dead_letter_q.book").cqrs_id(), Some("book"));
        assert_eq!(dead("cqrs.a.b.book").cqrs_id(), Some("book"));
        assert_eq!(dead("dead_letter_q").cqrs_id(), None);
        assert_eq!(dead("cqrs.book").cqrs_id(), None);
        assert_eq!(dead("cqrs.q.").cqrs_id(), None);
        assert!(dead("cqrs.q.book").matches(Some("book")));
        assert!(!dead("cqrs.q.author").matches(Some("book")));
        assert!(dead("q").matches(None));
    }

    #[test]
    fn debug_never_prints_the_body() {
        let text = format!("{:?}", dead("cqrs.q.book"));
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("body_len: 6"), "{text}");
    }

    #[test]
    fn a_refused_delete_names_the_queue_and_its_counts() {
        let err = queue_not_empty(
            "billing",
            &[("ready", 2), ("dead letters", 1), ("parked", 0)],
        );
        assert_eq!(err.kind(), crate::ErrorKind::Config);
        assert!(err.message().contains("\"billing\""), "{err}");
        assert!(
            err.message()
                .contains("3 messages (ready: 2, dead letters: 1)"),
            "{err}"
        );
    }
}
