//! The value forms of the configuration: how TTLs, retry limits, codecs and backoff kinds are
//! written in files and variables.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::Codec;

/// A time to live: seconds, or `"never"` in files (`None` here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl(pub Option<Duration>);

impl Serialize for Ttl {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self.0 {
            Some(d) => s.serialize_u64(d.as_secs()),
            None => s.serialize_str("never"),
        }
    }
}

impl<'de> Deserialize<'de> for Ttl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Word(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(0) => Err(serde::de::Error::custom(
                "a TTL must be at least 1 second, or \"never\"",
            )),
            Raw::Secs(n) => Ok(Ttl(Some(Duration::from_secs(n)))),
            Raw::Word(w) if w.eq_ignore_ascii_case("never") || w.eq_ignore_ascii_case("none") => {
                Ok(Ttl(None))
            }
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "expected seconds or \"never\", got {w:?}"
            ))),
        }
    }
}

/// A retry limit: a count, or `"forever"` in files (`None` here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxRetries(pub Option<u32>);

impl Serialize for MaxRetries {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self.0 {
            Some(n) => s.serialize_u32(n),
            None => s.serialize_str("forever"),
        }
    }
}

impl<'de> Deserialize<'de> for MaxRetries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(u32),
            Word(String),
        }
        match Raw::deserialize(d)? {
            Raw::Count(n) => Ok(MaxRetries(Some(n))),
            Raw::Word(w) if w.eq_ignore_ascii_case("forever") || w.eq_ignore_ascii_case("none") => {
                Ok(MaxRetries(None))
            }
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "expected a count or \"forever\", got {w:?}"
            ))),
        }
    }
}

/// The body format masters publish with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CodecName {
    /// JSON, readable by django-cqrs.
    #[default]
    Json,
    /// MessagePack, for meshes without Python consumers.
    Msgpack,
}

impl From<CodecName> for Codec {
    fn from(c: CodecName) -> Self {
        match c {
            CodecName::Json => Codec::Json,
            CodecName::Msgpack => Codec::MessagePack,
        }
    }
}

/// How the retry delay grows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackoffKind {
    /// `retry_delay` every time.
    #[default]
    Constant,
    /// `retry_delay`, doubling, capped at `retry_delay_max`, with `jitter`.
    Exponential,
}
