//! The envelope: the in-memory form of one message body (WIRE.md section 1).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::values;

/// A JSON object, as carried in `instance_data`, `previous_data` and `meta`.
pub type JsonObject = Map<String, Value>;

/// The kind of change a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignalType {
    /// A committed create or update of a master row.
    Save,
    /// A committed delete of a master row.
    Delete,
    /// A re-publication of a master row; it overwrites a replica whatever the revisions.
    Sync,
}

impl SignalType {
    /// The wire name: `SAVE`, `DELETE` or `SYNC`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            SignalType::Save => "SAVE",
            SignalType::Delete => "DELETE",
            SignalType::Sync => "SYNC",
        }
    }
}

impl fmt::Display for SignalType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A signal type name that is not `SAVE`, `DELETE` or `SYNC` (an excerpt of it, at most
/// [`values::EXCERPT_MAX`] bytes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown signal type {0:?} (expected SAVE, DELETE or SYNC)")]
pub struct UnknownSignalType(pub String);

impl FromStr for SignalType {
    type Err = UnknownSignalType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "SAVE" => Ok(SignalType::Save),
            "DELETE" => Ok(SignalType::Delete),
            "SYNC" => Ok(SignalType::Sync),
            other => Err(UnknownSignalType(values::excerpt(other).to_string())),
        }
    }
}

/// One message body: the nine keys of WIRE.md section 1.
///
/// Fields are public because an envelope is plain data with no invariant beyond its types;
/// [`Envelope::new`] fills the defaults a master sends.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// `SAVE`, `DELETE` or `SYNC`.
    pub signal_type: SignalType,
    /// The model's CQRS id; also the routing key of a broadcast.
    pub cqrs_id: String,
    /// The row (WIRE.md section 2).
    pub instance_data: JsonObject,
    /// Old values of the tracked fields; `None` when nothing is tracked.
    pub previous_data: Option<JsonObject>,
    /// The master's primary key, a JSON scalar (may be null).
    pub instance_pk: Value,
    /// Opaque id for logs and tracing.
    pub correlation_id: Option<String>,
    /// 0 from the master; +1 each time a replica parks a retry copy.
    pub retries: u32,
    /// When the message stops being worth applying; `None` means never.
    pub expires: Option<DateTime<Utc>>,
    /// Free metadata; `Some({})` by default.
    pub meta: Option<JsonObject>,
}

impl Envelope {
    /// An envelope as a master sends it: no previous data, no correlation id, zero retries,
    /// no expiry and empty meta. Set the rest with the `with_*` methods.
    #[must_use]
    pub fn new(
        signal_type: SignalType,
        cqrs_id: impl Into<String>,
        instance_data: JsonObject,
    ) -> Self {
        let instance_pk = instance_data.get("id").cloned().unwrap_or(Value::Null);
        Self {
            signal_type,
            cqrs_id: cqrs_id.into(),
            instance_data,
            previous_data: None,
            instance_pk,
            correlation_id: None,
            retries: 0,
            expires: None,
            meta: Some(JsonObject::new()),
        }
    }

    /// Sets the primary key (by default `instance_data["id"]`).
    #[must_use]
    pub fn with_pk(mut self, pk: Value) -> Self {
        self.instance_pk = pk;
        self
    }

    /// Sets `previous_data`.
    #[must_use]
    pub fn with_previous_data(mut self, previous: Option<JsonObject>) -> Self {
        self.previous_data = previous;
        self
    }

    /// Sets the correlation id.
    #[must_use]
    pub fn with_correlation_id(mut self, id: Option<String>) -> Self {
        self.correlation_id = id;
        self
    }

    /// Sets `expires`.
    #[must_use]
    pub fn with_expires(mut self, expires: Option<DateTime<Utc>>) -> Self {
        self.expires = expires;
        self
    }

    /// Sets `meta`.
    #[must_use]
    pub fn with_meta(mut self, meta: Option<JsonObject>) -> Self {
        self.meta = meta;
        self
    }

    /// Whether the message has expired at `now` (`expires <= now`).
    #[must_use]
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }

    /// The primary key used for ordering: `instance_pk`, or `instance_data["id"]` when the
    /// producer sent a null pk.
    #[must_use]
    pub fn pk(&self) -> &Value {
        match &self.instance_pk {
            Value::Null => self.instance_data.get("id").unwrap_or(&Value::Null),
            pk => pk,
        }
    }

    /// The primary key as text (see [`values::pk_text`]).
    #[must_use]
    pub fn pk_text(&self) -> String {
        values::pk_text(self.pk())
    }

    /// `instance_data["cqrs_revision"]`, if present and an integer.
    #[must_use]
    pub fn revision(&self) -> Option<i64> {
        self.instance_data
            .get("cqrs_revision")
            .and_then(Value::as_i64)
    }

    /// `instance_data["cqrs_revision"]`, or an [`ErrorKind::InvalidData`] error saying it is
    /// missing (django-cqrs requires it), not an integer, or negative (a master counts from 0).
    ///
    /// [`ErrorKind::InvalidData`]: crate::ErrorKind::InvalidData
    pub fn require_revision(&self) -> Result<i64> {
        match self.instance_data.get("cqrs_revision") {
            Some(v) => match values::i64_from_value(v) {
                Ok(r) if r >= 0 => Ok(r),
                Ok(r) => Err(Error::invalid_data(format!(
                    "cqrs_revision must not be negative, got {r}"
                ))),
                Err(e) => Err(Error::invalid_data(format!("cqrs_revision: {e}"))),
            },
            None => Err(Error::invalid_data(
                "CQRS sync fields are not provided: cqrs_revision is missing",
            )),
        }
    }

    /// Checks what holds for every message whatever the replica model, before it is routed:
    /// `instance_pk` and `instance_data["id"]` name the same row when both are given (the
    /// router shards by one and a table writes by the other), and `cqrs_revision`, when
    /// given, is an integer of at least 0. A failure is an [`ErrorKind::InvalidData`] error.
    ///
    /// [`ErrorKind::InvalidData`]: crate::ErrorKind::InvalidData
    pub fn validate(&self) -> Result<()> {
        if let Some(id) = self.instance_data.get("id").filter(|v| !v.is_null())
            && !self.instance_pk.is_null()
            && !same_pk(id, &self.instance_pk)
        {
            return Err(Error::invalid_data(format!(
                "instance_pk {} and instance_data id {} differ",
                values::excerpt(&self.instance_pk.to_string()),
                values::excerpt(&id.to_string())
            )));
        }
        if self.instance_data.contains_key("cqrs_revision") {
            self.require_revision()?;
        }
        Ok(())
    }

    /// `instance_data["cqrs_updated"]`, parsed, or an [`ErrorKind::InvalidData`](crate::ErrorKind::InvalidData) error.
    pub fn require_updated(&self) -> Result<DateTime<Utc>> {
        match self.instance_data.get("cqrs_updated") {
            Some(v) => values::datetime_from_value(v)
                .map_err(|e| Error::invalid_data(format!("cqrs_updated: {e}"))),
            None => Err(Error::invalid_data(
                "CQRS sync fields are not provided: cqrs_updated is missing",
            )),
        }
    }

    /// The same message, one retry later (the body of a parked retry copy).
    #[must_use]
    pub fn next_retry(&self) -> Self {
        let mut copy = self.clone();
        copy.retries = copy.retries.saturating_add(1);
        copy
    }
}

/// Whether two primary keys name the same row, as the router shards them (by their text):
/// `1` and `"1"` do. Equal kinds compare without building their text.
fn same_pk(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Number(x), Value::Number(y)) => x == y,
        _ => values::pk_text(a) == values::pk_text(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use serde_json::json;

    fn envelope(data: Value, pk: Value) -> Envelope {
        let Value::Object(data) = data else {
            unreachable!("an object")
        };
        Envelope::new(SignalType::Save, "a", data).with_pk(pk)
    }

    #[test]
    fn pk_and_revision_are_checked_before_routing() {
        let ok = envelope(json!({"id": 1, "cqrs_revision": 0}), json!(1));
        assert!(ok.validate().is_ok());
        assert!(envelope(json!({"id": "1"}), json!(1)).validate().is_ok());
        assert!(
            envelope(json!({"uuid": "x"}), json!("y"))
                .validate()
                .is_ok()
        );
        assert!(envelope(json!({"id": 1}), Value::Null).validate().is_ok());
        for bad in [
            envelope(json!({"id": 2, "cqrs_revision": 0}), json!(1)),
            envelope(json!({"id": 1, "cqrs_revision": -1}), json!(1)),
            envelope(json!({"id": 1, "cqrs_revision": "many"}), json!(1)),
        ] {
            let err = bad.validate().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
        }
        let long = envelope(json!({"id": "x".repeat(100_000)}), json!("y"));
        assert!(long.validate().unwrap_err().message().len() < 400);
        let negative = envelope(json!({"id": 1, "cqrs_revision": -5}), json!(1));
        assert_eq!(
            negative.require_revision().unwrap_err().kind(),
            ErrorKind::InvalidData
        );
    }
}
