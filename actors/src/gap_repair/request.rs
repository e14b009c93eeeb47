//! The sync request on the wire: its JSON body, the routing key it is published with and the
//! master-side queue that receives it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};
use crate::transport::{Declare, Headers, OutgoingMessage, Route};
use crate::values;

/// The prefix of a sync request's routing key and of the master-side queue that receives it:
/// a request about CQRS id `X` is published with routing key `cqrs_sync_request.X` to queue
/// `cqrs_sync_request.X`.
///
/// Why no django-cqrs peer ever sees one: a django-cqrs replica binds exactly `X`,
/// `cqrs.<its queue>.X` and `cqrs.<its dead-letter queue>.X` for each CQRS id `X` it
/// replicates (WIRE.md section 3), all literal keys. `cqrs_sync_request.X` does not start with
/// `cqrs.`, so it matches neither directed form, and it matches a plain `X` binding only if a
/// Python model's `CQRS_ID` were literally `cqrs_sync_request.<something>`, which this prefix
/// reserves. A django-cqrs master declares no queues and consumes nothing. The answer is an
/// ordinary directed SYNC (`cqrs.<queue>.X`), the same message `cqrs_sync --queue` sends.
pub const SYNC_REQUEST_PREFIX: &str = "cqrs_sync_request.";

/// Longest replica queue name a request may carry; RabbitMQ's own limit is 255 bytes.
const MAX_QUEUE_LEN: usize = 200;

/// Longest primary key a request may carry, as text.
const MAX_PK_LEN: usize = 1000;

/// The routing key, and the name of the master-side queue, of sync requests about `cqrs_id`.
#[must_use]
pub fn sync_request_key(cqrs_id: &str) -> String {
    format!("{SYNC_REQUEST_PREFIX}{cqrs_id}")
}

/// The master-side topology for requests about `cqrs_id`: queue `cqrs_sync_request.X` bound to
/// that routing key, and its dead-letter queue for malformed requests. One queue per CQRS id,
/// so every process of the master service that owns `X` shares it (competing consumers), and
/// a model moved to another service takes its queue along without configuration.
pub(crate) fn request_topology(cqrs_id: &str) -> Declare {
    let key = sync_request_key(cqrs_id);
    Declare {
        queue: key.clone(),
        dead_letter_queue: format!("dead_letter_{key}"),
        // Declare binds each "id" as a routing key: binding the request key alone (plus the
        // directed and dead-letter forms of it, which nobody else publishes).
        cqrs_ids: vec![key],
    }
}

/// A replica's request for the current state of one row, answered by the master with a SYNC
/// published to `queue` (`cqrs.<queue>.<cqrs_id>`).
///
/// On the wire, a JSON object (`content_type = text/plain`), unknown keys ignored:
/// `{"cqrs_id": "book", "instance_pk": 42, "queue": "billing"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// The CQRS id of the row.
    pub cqrs_id: String,
    /// The row's primary key, as the master sends it in `instance_pk` (a string or a number).
    pub instance_pk: Value,
    /// The asking replica's queue, where the SYNC goes.
    pub queue: String,
}

impl SyncRequest {
    /// The message that carries it, to the request key of its CQRS id.
    pub(crate) fn to_message(&self) -> Result<OutgoingMessage> {
        let body = serde_json::to_vec(self)
            .map_err(|e| Error::invalid_data(format!("sync request: {e}")))?;
        Ok(OutgoingMessage {
            route: Route::broadcast(sync_request_key(&self.cqrs_id)),
            body,
            // What django-cqrs sends too: harmless to any consumer that might see it.
            content_type: crate::codec::JSON_CONTENT_TYPE.to_owned(),
            headers: Headers::new(),
            expiration: None,
        })
    }

    /// Decodes and checks a request body: JSON, a non-empty CQRS id, a string or number
    /// primary key, a queue name a broker accepts. Everything else is
    /// [`ErrorKind::Decode`] or [`ErrorKind::InvalidData`]: never worth a retry.
    pub fn decode(body: &[u8]) -> Result<Self> {
        let request: SyncRequest = serde_json::from_slice(body).map_err(|e| {
            Error::new(
                ErrorKind::Decode,
                format!("sync request is not the expected JSON: {e}"),
            )
        })?;
        if request.cqrs_id.is_empty() {
            return Err(Error::invalid_data("sync request without a cqrs_id"));
        }
        let pk_ok = match &request.instance_pk {
            Value::String(s) => !s.is_empty() && s.len() <= MAX_PK_LEN,
            Value::Number(_) => true,
            _ => false,
        };
        if !pk_ok {
            return Err(Error::invalid_data(format!(
                "sync request instance_pk must be a non-empty string or a number, got {}",
                values::excerpt(&request.instance_pk.to_string())
            )));
        }
        let q = &request.queue;
        if q.is_empty()
            || q.len() > MAX_QUEUE_LEN
            || q.contains(|c: char| c.is_whitespace() || c.is_control() || c == '*' || c == '#')
        {
            return Err(Error::invalid_data(format!(
                "sync request queue {:?} is not a queue name",
                values::excerpt(q)
            )));
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_round_trips_and_goes_to_its_own_key() {
        let r = SyncRequest {
            cqrs_id: "book".into(),
            instance_pk: Value::from(42),
            queue: "billing".into(),
        };
        let m = r.to_message().unwrap();
        assert_eq!(m.route.routing_key(), "cqrs_sync_request.book");
        assert_eq!(
            String::from_utf8(m.body.clone()).unwrap(),
            r#"{"cqrs_id":"book","instance_pk":42,"queue":"billing"}"#
        );
        assert_eq!(SyncRequest::decode(&m.body).unwrap(), r);
        let t = request_topology("book");
        assert_eq!(t.queue, "cqrs_sync_request.book");
        assert_eq!(t.cqrs_ids, vec!["cqrs_sync_request.book".to_owned()]);
    }

    #[test]
    fn malformed_requests_are_never_retryable() {
        for body in [
            &b"not json"[..],
            br#"{"cqrs_id":"book","queue":"q"}"#,
            br#"{"cqrs_id":"","instance_pk":1,"queue":"q"}"#,
            br#"{"cqrs_id":"book","instance_pk":{"a":1},"queue":"q"}"#,
            br#"{"cqrs_id":"book","instance_pk":null,"queue":"q"}"#,
            br#"{"cqrs_id":"book","instance_pk":1,"queue":"a b"}"#,
        ] {
            let err = SyncRequest::decode(body).unwrap_err();
            assert!(
                !err.is_retryable(),
                "{}: {err}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
