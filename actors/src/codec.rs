//! Codecs: the JSON form of django-cqrs (the default) and MessagePack (opt-in), chosen on input
//! by the message's content type.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::envelope::{Envelope, JsonObject, SignalType};
use crate::error::{Error, ErrorKind};
use crate::values;

/// Content type of JSON bodies. django-cqrs's Kombu consumer dies on anything else, so JSON is
/// always published as `text/plain`.
pub const JSON_CONTENT_TYPE: &str = "text/plain";
/// Content type of MessagePack bodies.
pub const MSGPACK_CONTENT_TYPE: &str = "application/msgpack";

/// Why a body could not be turned into an [`Envelope`]. Every text in it that came from the
/// body is cut to [`values::EXCERPT_MAX`] bytes, and a parser's explanation to 256 bytes.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The content type names no codec this build knows.
    #[error("unsupported content type {0:?}")]
    UnsupportedContentType(String),
    /// The bytes are not a well-formed body of the codec, or a key has the wrong type.
    #[error("malformed {codec} body: {detail}")]
    Malformed {
        /// `"JSON"` or `"MessagePack"`.
        codec: &'static str,
        /// What the parser said.
        detail: String,
    },
    /// A required key (`signal_type`, `cqrs_id`, `instance_data`, `instance_pk`) is absent.
    #[error("required key {0:?} is missing")]
    MissingKey(&'static str),
    /// `signal_type` is not SAVE, DELETE or SYNC.
    #[error("unknown signal type {0:?} (expected SAVE, DELETE or SYNC)")]
    UnknownSignalType(String),
    /// `expires` is not a datetime.
    #[error("expires {0:?} is not a datetime")]
    InvalidExpires(String),
}

impl From<DecodeError> for Error {
    fn from(err: DecodeError) -> Self {
        Error::with_source(ErrorKind::Decode, err.to_string(), err)
    }
}

/// Encoding failed (a value that the codec cannot represent).
#[derive(Debug, thiserror::Error)]
#[error("cannot encode envelope as {codec}: {detail}")]
pub struct EncodeError {
    codec: &'static str,
    detail: String,
}

impl From<EncodeError> for Error {
    fn from(err: EncodeError) -> Self {
        Error::with_source(ErrorKind::InvalidData, err.to_string(), err)
    }
}

/// A body format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Codec {
    /// UTF-8 JSON, the form django-cqrs reads and writes.
    #[default]
    Json,
    /// MessagePack (struct as map), for meshes with no Python consumer.
    MessagePack,
}

impl Codec {
    /// Chooses the codec for a content type: none, `text/plain` and `application/json` mean
    /// JSON; `application/msgpack` (and `application/x-msgpack`) mean MessagePack.
    pub fn for_content_type(content_type: Option<&str>) -> Result<Self, DecodeError> {
        let Some(ct) = content_type else {
            return Ok(Codec::Json);
        };
        let base = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match base.as_str() {
            "" | "text/plain" | "application/json" => Ok(Codec::Json),
            "application/msgpack" | "application/x-msgpack" | "application/vnd.msgpack" => {
                Ok(Codec::MessagePack)
            }
            _ => Err(DecodeError::UnsupportedContentType(
                values::excerpt(ct).to_string(),
            )),
        }
    }

    /// The content type a body of this codec is published with.
    #[must_use]
    pub fn content_type(self) -> &'static str {
        match self {
            Codec::Json => JSON_CONTENT_TYPE,
            Codec::MessagePack => MSGPACK_CONTENT_TYPE,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Codec::Json => "JSON",
            Codec::MessagePack => "MessagePack",
        }
    }

    /// Encodes an envelope. JSON is compact with the keys in django-cqrs's order.
    pub fn encode(self, envelope: &Envelope) -> Result<Vec<u8>, EncodeError> {
        let wire = WireOut::from(envelope);
        let fail = |detail: String| EncodeError {
            codec: self.name(),
            detail,
        };
        match self {
            Codec::Json => {
                // A SAVE of a few columns is some hundreds of bytes: start there rather than
                // at serde_json's 128 bytes, which grows (and copies) two or three times.
                let mut body = Vec::with_capacity(512);
                serde_json::to_writer(&mut body, &wire).map_err(|e| fail(e.to_string()))?;
                Ok(body)
            }
            Codec::MessagePack => encode_msgpack(&wire).map_err(fail),
        }
    }

    /// Decodes a body. Missing optional keys get the defaults of WIRE.md section 1, except a
    /// missing `expires`, which is `now + default_ttl` (pass `None` for "never").
    pub fn decode(
        self,
        body: &[u8],
        default_ttl: Option<std::time::Duration>,
    ) -> Result<Envelope, DecodeError> {
        let malformed = |detail: String| DecodeError::Malformed {
            codec: self.name(),
            detail,
        };
        let wire: WireIn = match self {
            Codec::Json => serde_json::from_slice(body).map_err(|e| malformed(json_detail(&e)))?,
            Codec::MessagePack => decode_msgpack(body)
                .map_err(|detail| malformed(values::abbreviate(&detail, DETAIL_MAX)))?,
        };
        wire.into_envelope(default_ttl)
    }

    /// Decodes a body, choosing the codec from its content type.
    pub fn decode_with_content_type(
        content_type: Option<&str>,
        body: &[u8],
        default_ttl: Option<std::time::Duration>,
    ) -> Result<Envelope, DecodeError> {
        Self::for_content_type(content_type)?.decode(body, default_ttl)
    }
}

/// The most bytes of a parser's explanation a [`DecodeError::Malformed`] keeps.
const DETAIL_MAX: usize = 256;

/// serde_json's explanation, cut to [`DETAIL_MAX`] bytes but keeping the position: its message
/// quotes the offending value (`invalid type: string "..."`), which may be any length.
fn json_detail(e: &serde_json::Error) -> String {
    let full = e.to_string();
    if full.len() <= DETAIL_MAX {
        return full;
    }
    let position = format!(" at line {} column {}", e.line(), e.column());
    let what = full.strip_suffix(&position).unwrap_or(&full);
    format!(
        "{}{position}",
        values::abbreviate(what, DETAIL_MAX - position.len())
    )
}

#[cfg(feature = "msgpack")]
fn encode_msgpack(wire: &WireOut<'_>) -> Result<Vec<u8>, String> {
    rmp_serde::to_vec_named(wire).map_err(|e| e.to_string())
}

#[cfg(not(feature = "msgpack"))]
fn encode_msgpack(_: &WireOut<'_>) -> Result<Vec<u8>, String> {
    Err("this build has no MessagePack support (feature `msgpack`)".to_owned())
}

#[cfg(feature = "msgpack")]
fn decode_msgpack(body: &[u8]) -> Result<WireIn, String> {
    rmp_serde::from_slice(body).map_err(|e| e.to_string())
}

#[cfg(not(feature = "msgpack"))]
fn decode_msgpack(_: &[u8]) -> Result<WireIn, String> {
    Err("this build has no MessagePack support (feature `msgpack`)".to_owned())
}

#[derive(Serialize)]
struct WireOut<'a> {
    signal_type: &'static str,
    cqrs_id: &'a str,
    instance_data: &'a JsonObject,
    previous_data: &'a Option<JsonObject>,
    instance_pk: &'a Value,
    correlation_id: &'a Option<String>,
    retries: u32,
    expires: Option<String>,
    meta: &'a Option<JsonObject>,
}

impl<'a> From<&'a Envelope> for WireOut<'a> {
    fn from(e: &'a Envelope) -> Self {
        Self {
            signal_type: e.signal_type.as_str(),
            cqrs_id: &e.cqrs_id,
            instance_data: &e.instance_data,
            previous_data: &e.previous_data,
            instance_pk: &e.instance_pk,
            correlation_id: &e.correlation_id,
            retries: e.retries,
            expires: e.expires.as_ref().map(values::format_iso_datetime),
            meta: &e.meta,
        }
    }
}

/// What a peer may send. `Option<Option<_>>` tells a missing key from an explicit null.
#[derive(Deserialize)]
struct WireIn {
    #[serde(default)]
    signal_type: Option<String>,
    #[serde(default)]
    cqrs_id: Option<String>,
    #[serde(default)]
    instance_data: Option<JsonObject>,
    #[serde(default, deserialize_with = "present")]
    instance_pk: Option<Value>,
    #[serde(default)]
    previous_data: Option<JsonObject>,
    #[serde(default)]
    correlation_id: Option<Value>,
    #[serde(default)]
    retries: Option<u32>,
    #[serde(default, deserialize_with = "present")]
    expires: Option<Option<String>>,
    #[serde(default)]
    meta: Option<JsonObject>,
}

/// Deserializes a key that is present (even when null) as `Some`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

impl WireIn {
    fn into_envelope(
        self,
        default_ttl: Option<std::time::Duration>,
    ) -> Result<Envelope, DecodeError> {
        let signal = self
            .signal_type
            .ok_or(DecodeError::MissingKey("signal_type"))?;
        let signal_type: SignalType = signal
            .parse()
            .map_err(|_| DecodeError::UnknownSignalType(values::excerpt(&signal).to_string()))?;
        let cqrs_id = self.cqrs_id.ok_or(DecodeError::MissingKey("cqrs_id"))?;
        let instance_data = self
            .instance_data
            .ok_or(DecodeError::MissingKey("instance_data"))?;
        let instance_pk = self
            .instance_pk
            .ok_or(DecodeError::MissingKey("instance_pk"))?;
        let expires = match self.expires {
            None => default_ttl.map(expiry_after),
            Some(None) => None,
            Some(Some(text)) => Some(
                values::parse_datetime(&text)
                    .map_err(|_| DecodeError::InvalidExpires(values::excerpt(&text).to_string()))?,
            ),
        };
        let correlation_id = match self.correlation_id {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(other) => Some(other.to_string()),
        };
        Ok(Envelope {
            signal_type,
            cqrs_id,
            instance_data,
            previous_data: self.previous_data,
            instance_pk,
            correlation_id,
            retries: self.retries.unwrap_or(0),
            expires,
            meta: self.meta,
        })
    }
}

/// `now + ttl`, whole seconds, as django-cqrs computes `expires`.
#[must_use]
pub fn expiry_after(ttl: std::time::Duration) -> DateTime<Utc> {
    let now = Utc::now();
    let secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2);
    let at = now.timestamp().saturating_add(secs);
    DateTime::from_timestamp(at, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const DAY: Option<Duration> = Some(Duration::from_secs(86_400));

    #[test]
    fn content_types_choose_the_codec() {
        assert_eq!(Codec::for_content_type(None).unwrap(), Codec::Json);
        assert_eq!(
            Codec::for_content_type(Some("text/plain")).unwrap(),
            Codec::Json
        );
        assert_eq!(
            Codec::for_content_type(Some("application/json; charset=utf-8")).unwrap(),
            Codec::Json
        );
        assert_eq!(
            Codec::for_content_type(Some("application/msgpack")).unwrap(),
            Codec::MessagePack
        );
        assert!(matches!(
            Codec::for_content_type(Some("application/xml")),
            Err(DecodeError::UnsupportedContentType(_))
        ));
    }

    #[test]
    fn sloppy_producers_are_accepted() {
        let body = br#"{"signal_type":"SAVE","cqrs_id":"a","instance_data":{"id":1},"instance_pk":null,"x":1}"#;
        let e = Codec::Json.decode(body, DAY).unwrap();
        assert_eq!(e.retries, 0);
        assert_eq!(e.previous_data, None);
        assert_eq!(e.meta, None);
        assert!(e.expires.unwrap() > Utc::now() + chrono::TimeDelta::hours(23));
        assert_eq!(e.pk(), &serde_json::json!(1));
        let never = br#"{"signal_type":"SYNC","cqrs_id":"a","instance_data":{},"instance_pk":"x","expires":null,"retries":null}"#;
        let e = Codec::Json.decode(never, DAY).unwrap();
        assert_eq!(e.expires, None);
        for form in [
            "2026-11-28 17:08:25",
            "2026-11-28T17:08:25.5Z",
            "2026-11-28T17:08:25+00:00",
        ] {
            let body = format!(
                r#"{{"signal_type":"DELETE","cqrs_id":"a","instance_data":{{}},"instance_pk":1,"expires":"{form}"}}"#
            );
            assert!(
                Codec::Json
                    .decode(body.as_bytes(), DAY)
                    .unwrap()
                    .expires
                    .is_some(),
                "{form}"
            );
        }
    }

    #[test]
    fn undecodable_bodies_say_why() {
        let cases: [(&[u8], DecodeError); 4] = [
            (
                b"{not json",
                DecodeError::Malformed {
                    codec: "JSON",
                    detail: String::new(),
                },
            ),
            (
                br#"{"cqrs_id":"a","instance_data":{},"instance_pk":1}"#,
                DecodeError::MissingKey("signal_type"),
            ),
            (
                br#"{"signal_type":"SAVE","cqrs_id":"a","instance_data":{}}"#,
                DecodeError::MissingKey("instance_pk"),
            ),
            (
                br#"{"signal_type":"UPSERT","cqrs_id":"a","instance_data":{},"instance_pk":1}"#,
                DecodeError::UnknownSignalType("UPSERT".into()),
            ),
        ];
        for (body, expected) in cases {
            let err = Codec::Json.decode(body, DAY).unwrap_err();
            match (&err, &expected) {
                (DecodeError::Malformed { .. }, DecodeError::Malformed { .. }) => {}
                _ => assert_eq!(err, expected),
            }
            assert_eq!(Error::from(err).kind(), ErrorKind::Decode);
        }
        let bad_expires = br#"{"signal_type":"SAVE","cqrs_id":"a","instance_data":{},"instance_pk":1,"expires":"soon"}"#;
        assert!(matches!(
            Codec::Json.decode(bad_expires, DAY),
            Err(DecodeError::InvalidExpires(_))
        ));
        let wrong_type =
            br#"{"signal_type":"SAVE","cqrs_id":"a","instance_data":[],"instance_pk":1}"#;
        assert!(matches!(
            Codec::Json.decode(wrong_type, DAY),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn a_retry_copy_carries_the_same_numbers() {
        // Found by the envelope_json fuzz target: a long mantissa was parsed one step off, and
        // its shortest form then parsed to yet another double.
        let body = br#"{"signal_type":"SAVE","cqrs_id":"author","instance_data":{"rating":-1111000000000000000000000000000000000000000000000004099276460824344804.5,"x":2.2250738585072011e-308,"y":0.30000000000000000000000000000000000001},"instance_pk":4}"#;
        for codec in [Codec::Json, Codec::MessagePack] {
            let decoded = Codec::Json.decode(body, None).unwrap();
            let copy = codec
                .decode(&codec.encode(&decoded).unwrap(), None)
                .unwrap();
            assert_eq!(copy.instance_data, decoded.instance_data, "{codec:?}");
        }
        let decoded = Codec::Json.decode(body, None).unwrap();
        assert_eq!(
            decoded.instance_data["rating"],
            serde_json::json!(-1.111e69)
        );
    }

    #[test]
    fn errors_quote_at_most_an_excerpt_of_the_body() {
        let long = "x".repeat(200_000);
        let bodies = [
            format!(
                r#"{{"signal_type":"{long}","cqrs_id":"a","instance_data":{{}},"instance_pk":1}}"#
            ),
            format!(
                r#"{{"signal_type":"SAVE","cqrs_id":"a","instance_data":{{}},"instance_pk":1,"expires":"{long}"}}"#
            ),
            format!(
                r#"{{"signal_type":"SAVE","cqrs_id":"a","instance_data":{{}},"instance_pk":1,"retries":"{long}"}}"#
            ),
            format!(
                r#"{{"signal_type":"SAVE","cqrs_id":"a","instance_data":{{}},"instance_pk":1,"previous_data":"{long}"}}"#
            ),
            format!(
                r#"{{"signal_type":"SAVE","cqrs_id":{{"{long}":1}},"instance_data":{{}},"instance_pk":1}}"#
            ),
        ];
        for body in &bodies {
            let err = Codec::Json.decode(body.as_bytes(), DAY).unwrap_err();
            let text = err.to_string();
            assert!(text.len() < 400, "{} bytes: {}", text.len(), &text[..400]);
            assert!(Error::from(err).to_string().len() < 400);
        }
        let err = Codec::Json.decode(bodies[2].as_bytes(), DAY).unwrap_err();
        assert!(err.to_string().contains(" at line 1 column "), "{err}");
        let err = Codec::for_content_type(Some(&long)).unwrap_err();
        assert!(err.to_string().len() < 200, "{err}");
    }
}
