//! The key layout and the fields of a stream entry.
//!
//! Every key of exchange `E` starts with `<prefix>:{E}:`, so all of them hash to one slot of a
//! Redis Cluster: a consumer reads its CQRS id streams and its queue stream in one
//! `XREADGROUP`, and the scripts that move parked retries or dead-letter a poison entry touch
//! two keys of the same slot. A cluster spreads exchanges, not the keys of one exchange.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::redis::Value;
use cqrs_actors::transport::{Delivery, DeliveryTag, Headers, OutgoingMessage, Route};

/// The field holding the body.
pub(crate) const F_BODY: &str = "body";
/// The field holding the content type.
pub(crate) const F_CONTENT_TYPE: &str = "content_type";
/// The field holding the routing key (`X` or `cqrs.Q.X`).
pub(crate) const F_ROUTING_KEY: &str = "routing_key";
/// The field holding the expiry, in milliseconds since the Unix epoch.
pub(crate) const F_EXPIRES_AT: &str = "expires_at";
/// The prefix of header fields: `header:<name>`.
pub(crate) const F_HEADER: &str = "header:";
/// The header carrying how many times an entry was delivered before (as RabbitMQ's quorum
/// queues say it).
pub const HEADER_DELIVERY_COUNT: &str = "x-delivery-count";

/// The keys of one exchange.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    base: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str, exchange: &str) -> Self {
        Self {
            base: format!("{prefix}:{{{exchange}}}:"),
        }
    }

    /// The stream masters append the broadcasts of CQRS id `X` to.
    pub(crate) fn id_stream(&self, cqrs_id: &str) -> String {
        format!("{}x:{cqrs_id}", self.base)
    }

    /// The stream of queue `Q`: directed SYNCs and retry copies; for a dead-letter queue, its
    /// dead letters.
    pub(crate) fn queue_stream(&self, queue: &str) -> String {
        format!("{}q:{queue}", self.base)
    }

    /// The sorted set of copies parked for `stream`, scored by due time.
    pub(crate) fn parked(&self, stream: &str) -> String {
        let name = stream.strip_prefix(&self.base).unwrap_or(stream);
        format!("{}parked:{name}", self.base)
    }

    /// The set of queues bound to CQRS id `X`.
    pub(crate) fn bindings(&self, cqrs_id: &str) -> String {
        format!("{}bind:{cqrs_id}", self.base)
    }

    /// The hash of declared queues: queue → its dead-letter queue.
    pub(crate) fn queues(&self) -> String {
        format!("{}queues", self.base)
    }

    /// The set of CQRS ids queue `Q` replicates.
    pub(crate) fn queue_ids(&self, queue: &str) -> String {
        format!("{}ids:{queue}", self.base)
    }

    /// The set of every stream of the exchange (what the trimmer walks).
    pub(crate) fn streams(&self) -> String {
        format!("{}streams", self.base)
    }

    /// The stream a route's messages go to.
    pub(crate) fn route_stream(&self, route: &Route) -> String {
        match route {
            Route::Broadcast { cqrs_id } => self.id_stream(cqrs_id),
            Route::Queue { queue, .. } => self.queue_stream(queue),
        }
    }

    /// Writes the stream a route's messages go to into `buf` (cleared first).
    pub(crate) fn write_route_stream(&self, buf: &mut String, route: &Route) {
        buf.clear();
        buf.push_str(&self.base);
        match route {
            Route::Broadcast { cqrs_id } => {
                buf.push_str("x:");
                buf.push_str(cqrs_id);
            }
            Route::Queue { queue, .. } => {
                buf.push_str("q:");
                buf.push_str(queue);
            }
        }
    }

    /// The key's prefix of every key of the exchange (for tools that clean up).
    pub(crate) fn base(&self) -> &str {
        &self.base
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The field/value pairs of an entry to write.
pub(crate) type Fields = Vec<(Cow<'static, str>, Vec<u8>)>;

/// The field/value pairs of an entry; the body is moved in, not copied.
pub(crate) fn entry_fields(
    body: Vec<u8>,
    content_type: Option<&str>,
    routing_key: String,
    headers: &Headers,
    expiration: Option<Duration>,
) -> Fields {
    let mut fields: Fields = Vec::with_capacity(4 + headers.len());
    fields.push((Cow::Borrowed(F_BODY), body));
    if let Some(ct) = content_type {
        fields.push((Cow::Borrowed(F_CONTENT_TYPE), ct.as_bytes().to_vec()));
    }
    fields.push((Cow::Borrowed(F_ROUTING_KEY), routing_key.into_bytes()));
    if let Some(ttl) = expiration {
        let at = now_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        fields.push((Cow::Borrowed(F_EXPIRES_AT), at.to_string().into_bytes()));
    }
    for (name, value) in headers {
        fields.push((
            Cow::Owned(format!("{F_HEADER}{name}")),
            value.as_bytes().to_vec(),
        ));
    }
    fields
}

/// The fields of an outgoing message.
pub(crate) fn message_fields(msg: OutgoingMessage) -> Fields {
    let routing_key = msg.route.routing_key();
    entry_fields(
        msg.body,
        Some(&msg.content_type),
        routing_key,
        &msg.headers,
        msg.expiration,
    )
}

/// A stream entry as read.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The index of its stream in the consumer's stream list.
    pub stream: usize,
    /// Its id.
    pub id: StreamId,
    /// Its fields, `None` when the entry is gone (deleted while pending).
    pub fields: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

impl Entry {
    fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .as_ref()?
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// Whether the entry's expiry has passed.
    pub(crate) fn expired(&self, now_ms: u64) -> bool {
        self.field(F_EXPIRES_AT)
            .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok())
            .is_some_and(|at| at <= now_ms)
    }

    /// The delivery of this entry.
    pub(crate) fn into_delivery(
        self,
        tag: DeliveryTag,
        queue: &str,
        redelivered: bool,
        delivery_count: Option<u64>,
    ) -> Delivery {
        let mut body = Vec::new();
        let mut content_type = None;
        let mut routing_key = String::new();
        let mut headers = Headers::new();
        for (k, v) in self.fields.unwrap_or_default() {
            match k.as_slice() {
                b"body" => body = v,
                b"content_type" => content_type = Some(String::from_utf8_lossy(&v).into_owned()),
                b"routing_key" => routing_key = String::from_utf8_lossy(&v).into_owned(),
                other => {
                    if let Some(name) = other.strip_prefix(F_HEADER.as_bytes()) {
                        headers.insert(
                            String::from_utf8_lossy(name).into_owned(),
                            String::from_utf8_lossy(&v).into_owned(),
                        );
                    }
                }
            }
        }
        if let Some(n) = delivery_count {
            headers.insert(HEADER_DELIVERY_COUNT.to_owned(), n.to_string());
        }
        Delivery {
            tag,
            queue: queue.to_owned(),
            routing_key,
            body,
            content_type,
            headers,
            redelivered,
        }
    }
}

/// A stream entry id, `<ms>-<seq>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    pub(crate) fn parse(text: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(text).ok()?;
        let (ms, seq) = text.split_once('-')?;
        Some(Self {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// The bytes of a bulk or simple string reply.
pub(crate) fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes()),
        _ => None,
    }
}

/// An integer reply (or an integer in a string).
pub(crate) fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        other => std::str::from_utf8(bytes(other)?).ok()?.parse().ok(),
    }
}

/// The entries of an `XRANGE`/`XCLAIM` reply (`[[id, [f, v, ...]], ...]`); a missing field
/// list (an entry deleted while pending) gives `fields: None`.
pub(crate) fn parse_entries(stream: usize, reply: &Value) -> Vec<Entry> {
    let Value::Array(items) = reply else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let Value::Array(pair) = item else {
                return None;
            };
            let id = StreamId::parse(bytes(pair.first()?)?)?;
            let fields = match pair.get(1) {
                Some(Value::Array(kv)) => Some(
                    kv.chunks_exact(2)
                        .filter_map(|c| Some((bytes(&c[0])?.to_vec(), bytes(&c[1])?.to_vec())))
                        .collect(),
                ),
                _ => None,
            };
            Some(Entry { stream, id, fields })
        })
        .collect()
}

/// The `[key, entries]` pairs of an `XREADGROUP` reply (nil on timeout).
pub(crate) fn stream_replies(reply: &Value) -> Vec<(&[u8], &Value)> {
    match reply {
        Value::Array(streams) => streams
            .iter()
            .filter_map(|s| match s {
                Value::Array(pair) if pair.len() == 2 => Some((bytes(&pair[0])?, &pair[1])),
                _ => None,
            })
            .collect(),
        Value::Map(pairs) => pairs
            .iter()
            .filter_map(|(k, v)| Some((bytes(k)?, v)))
            .collect(),
        _ => Vec::new(),
    }
}

/// The `(id, consumer, deliveries)` of an extended `XPENDING` reply.
pub(crate) fn pending_entries(reply: &Value) -> Vec<(StreamId, String, u64)> {
    let Value::Array(items) = reply else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let Value::Array(f) = item else { return None };
            let id = StreamId::parse(bytes(f.first()?)?)?;
            let owner = String::from_utf8_lossy(bytes(f.get(1)?)?).into_owned();
            let count = u64::try_from(int(f.get(3)?)?).ok()?;
            Some((id, owner, count))
        })
        .collect()
}

/// Encodes a list of byte strings as a MessagePack array of strings (what the mover script
/// unpacks with `cmsgpack`), first a unique nonce so that two equal copies stay two members.
pub(crate) fn pack_member(nonce: &[u8], fields: &[(Cow<'static, str>, Vec<u8>)]) -> Vec<u8> {
    let n = 1 + 2 * fields.len();
    let mut out = Vec::with_capacity(
        16 + fields
            .iter()
            .map(|(k, v)| k.len() + v.len() + 10)
            .sum::<usize>(),
    );
    if n < 16 {
        out.push(0x90 | n as u8);
    } else if let Ok(n) = u16::try_from(n) {
        out.push(0xdc);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    // Strings of the original format (fixraw, raw16, raw32): the `cmsgpack` of Redis
    // predates the binary types, and its strings are byte strings all the same.
    let mut bin = |b: &[u8]| {
        if b.len() < 32 {
            out.push(0xa0 | b.len() as u8);
        } else if let Ok(len) = u16::try_from(b.len()) {
            out.push(0xda);
            out.extend_from_slice(&len.to_be_bytes());
        } else {
            out.push(0xdb);
            out.extend_from_slice(&(b.len() as u32).to_be_bytes());
        }
        out.extend_from_slice(b);
    };
    bin(nonce);
    for (k, v) in fields {
        bin(k.as_bytes());
        bin(v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_an_exchange_shares_one_hash_tag() {
        let keys = Keys::new("cqrs", "shop");
        for key in [
            keys.id_stream("book"),
            keys.queue_stream("replica"),
            keys.parked(&keys.queue_stream("replica")),
            keys.bindings("book"),
            keys.queues(),
            keys.queue_ids("replica"),
            keys.streams(),
        ] {
            assert!(key.starts_with("cqrs:{shop}:"), "{key}");
        }
        assert_eq!(
            keys.parked(&keys.queue_stream("r")),
            "cqrs:{shop}:parked:q:r"
        );
    }

    #[test]
    fn ids_order_by_time_then_sequence() {
        let a = StreamId::parse(b"1700000000000-5").unwrap_or_else(|| panic!("parse"));
        let b = StreamId::parse(b"1700000000001-0").unwrap_or_else(|| panic!("parse"));
        assert!(a < b);
        assert_eq!(a.to_string(), "1700000000000-5");
        assert_eq!(StreamId::parse(b"nope"), None);
    }

    #[test]
    fn members_pack_as_messagepack_strings() {
        let fields = vec![(Cow::Borrowed("body"), vec![0u8; 300])];
        let packed = pack_member(b"n1", &fields);
        assert_eq!(packed[0], 0x93);
        assert_eq!(&packed[1..4], &[0xa2, b'n', b'1']);
        assert_eq!(packed[4], 0xa4);
        assert_eq!(&packed[9..12], &[0xda, 1, 44]);
        assert_eq!(packed.len(), 12 + 300);
    }
}
