//! The checks behind the fuzz targets in `fuzz_targets/`, one function per target. Each takes
//! the fuzzer's bytes, feeds them to a parser of untrusted input and asserts what must hold
//! whatever the input: no panic, and the properties named in each function's docs.

use std::time::Duration;

use chrono::{DateTime, Utc};
use cqrs_actors::{Codec, CqrsConfig, Envelope, SecretUrl, SignalType, values};
use cqrs_orm_adapters::fuzzing;
use cqrs_transports::rabbitmq::RabbitMqConfig;
use cqrs_transports::redis::RedisConfig;
use serde_json::Value;

/// The default TTL a replica decodes with (django-cqrs's one day).
const TTL: Option<Duration> = Some(Duration::from_secs(86_400));

/// Decodes a body as a replica does, reads what the router and the retry path read, and checks
/// that the envelope encodes, that its encoding decodes, and that encoding is then stable (a
/// parked retry copy is the same message).
///
/// # Panics
///
/// When one of those properties does not hold.
pub fn envelope(codec: Codec, body: &[u8]) {
    let Ok(envelope) = codec.decode(body, TTL) else {
        return;
    };
    let _ = envelope.validate();
    let _ = envelope.pk_text();
    let _ = envelope.require_updated();
    let _ = envelope.is_expired(Utc::now());
    let retry = envelope.next_retry();
    let once = encode(codec, &retry);
    let again = match codec.decode(&once, None) {
        Ok(e) => e,
        Err(e) => panic!("an encoded envelope does not decode: {e}"),
    };
    assert_eq!(again.retries, retry.retries);
    assert_eq!(
        encode(codec, &again),
        once,
        "encoding a decoded envelope is not stable"
    );
}

fn encode(codec: Codec, envelope: &Envelope) -> Vec<u8> {
    match codec.encode(envelope) {
        Ok(body) => body,
        Err(e) => panic!("a decoded envelope does not encode: {e}"),
    }
}

/// Feeds the text to every value parser of WIRE.md section 2, as a JSON string and, when it is
/// JSON, as the value it spells; every value read is written in its wire form, which must read
/// back to a value with the same wire form.
///
/// # Panics
///
/// When a wire form does not read back to itself.
pub fn values(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(dt) = values::parse_datetime(text) {
        datetime_round_trip(&dt);
    }
    let mut inputs = vec![Value::String(text.to_owned())];
    if let Ok(json) = serde_json::from_str::<Value>(text) {
        inputs.push(json);
    }
    for value in &inputs {
        value_round_trips(value);
    }
}

fn value_round_trips(value: &Value) {
    if let Ok(dt) = values::datetime_from_value(value) {
        datetime_round_trip(&dt);
    }
    if let Ok(date) = values::date_from_value(value) {
        let form = values::format_date(&date);
        let back = values::date_from_value(&Value::String(form.clone()));
        assert_eq!(back.ok(), Some(date), "date {form}");
    }
    if let Ok(time) = values::time_from_value(value) {
        let form = values::format_time(&time);
        let back = values::time_from_value(&Value::String(form.clone()))
            .unwrap_or_else(|e| panic!("time {form}: {e}"));
        assert_eq!(values::format_time(&back), form, "time {form}");
    }
    if let Ok(decimal) = values::decimal_from_value(value) {
        let form = values::decimal_to_value(&decimal);
        let back = values::decimal_from_value(&form);
        assert_eq!(back.ok(), Some(decimal), "decimal {form}");
    }
    if let Ok(uuid) = values::uuid_from_value(value) {
        let form = values::format_uuid(&uuid);
        let back = values::uuid_from_value(&Value::String(form.clone()));
        assert_eq!(back.ok(), Some(uuid), "uuid {form}");
    }
    if let Ok(duration) = values::duration_from_value(value) {
        let form = values::format_duration(&duration);
        let back = values::duration_from_value(&Value::String(form.clone()))
            .unwrap_or_else(|e| panic!("duration {form}: {e}"));
        assert_eq!(values::format_duration(&back), form, "duration {form}");
    }
    let _ = values::i64_from_value(value);
    let _ = values::pk_text(value);
}

fn datetime_round_trip(dt: &DateTime<Utc>) {
    for form in [values::format_datetime(dt), values::format_iso_datetime(dt)] {
        let back = values::parse_datetime(&form).unwrap_or_else(|e| panic!("datetime {form}: {e}"));
        assert_eq!(
            values::format_datetime(&back),
            values::format_datetime(dt),
            "datetime {form}"
        );
    }
}

/// Reads the bytes as `instance_data` (a JSON object after one byte that picks the signal and
/// whether `instance_pk` is given) and checks it as the SeaORM replica adapter does.
pub fn instance_data(data: &[u8]) {
    let Some((&head, json)) = data.split_first() else {
        return;
    };
    let Ok(instance_data) = serde_json::from_slice::<serde_json::Map<String, Value>>(json) else {
        return;
    };
    let signal = match head % 3 {
        0 => SignalType::Save,
        1 => SignalType::Sync,
        _ => SignalType::Delete,
    };
    let pk = match head / 3 % 3 {
        0 => Value::Null,
        1 => instance_data.get("id").cloned().unwrap_or(Value::Null),
        _ => Value::String("1".to_owned()),
    };
    let envelope = Envelope::new(signal, "author", instance_data).with_pk(pk);
    let _ = fuzzing::replica_prepare(envelope);
}

/// Parses the text as a command line's `--filter` and renders it against the fixed table.
pub fn filter(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = fuzzing::filter_sql(text);
    }
}

/// Parses the text as a broker URL of every transport, and checks that no password leaks:
/// what the parsed configurations print (`redacted_url()` and `Debug`), what `SecretUrl`
/// prints, and what a failed parse says are the same whatever the password.
///
/// # Panics
///
/// When the password, or anything that depends on it, appears in one of those texts.
pub fn broker_url(data: &[u8]) {
    let Ok(url) = std::str::from_utf8(data) else {
        return;
    };
    let Some(password) = Password::find(url).filter(|p| !p.raw(url).is_empty()) else {
        // No password to leak (Redis reads an empty one as none); the parsers must still not
        // panic.
        let _ = printed(url);
        return;
    };
    let other = password.replaced(url, "pw");
    let shown = printed(url);
    let shown_other = printed(&other);
    for (what, (text, text_other)) in LABELS.iter().zip(shown.iter().zip(&shown_other)) {
        // A parse may fail for the password itself (a bad escape) or for another part of the
        // URL: only the texts of two successes are compared, errors only for the password.
        if text.0 && text_other.0 {
            assert_eq!(text.1, text_other.1, "{what} depends on the password");
        }
        if password.is_telling(url, &text_other.1) {
            assert!(
                !text.1.contains(password.raw(url)),
                "{what} shows the password: {}",
                text.1
            );
        }
    }
}

const LABELS: [&str; 8] = [
    "SecretUrl::redacted",
    "SecretUrl Debug",
    "CqrsConfig Debug",
    "CqrsConfig::validate",
    "RabbitMqConfig::redacted_url",
    "RabbitMqConfig Debug",
    "RedisConfig::redacted_url",
    "RedisConfig Debug",
];

/// Whether each parse succeeded and what it printed, in the order of [`LABELS`].
type Printed = [(bool, String); 8];

fn printed(url: &str) -> Printed {
    let secret = SecretUrl::new(url);
    let config = CqrsConfig::default().with_url(url);
    let outcome = |r: Result<(String, String), cqrs_actors::Error>| match r {
        Ok((redacted, debug)) => [(true, redacted), (true, debug)],
        Err(e) => [(false, e.to_string()), (false, format!("{e:?}"))],
    };
    let [rabbit_url, rabbit_debug] = outcome(
        RabbitMqConfig::from_cqrs_config(&config).map(|c| (c.redacted_url(), format!("{c:?}"))),
    );
    let [redis_url, redis_debug] = outcome(
        RedisConfig::from_cqrs_config(&config).map(|c| (c.redacted_url(), format!("{c:?}"))),
    );
    [
        (true, secret.redacted()),
        (true, format!("{secret:?}")),
        (true, format!("{config:?}")),
        match config.validate() {
            Ok(()) => (true, String::new()),
            Err(e) => (false, e.to_string()),
        },
        rabbit_url,
        rabbit_debug,
        redis_url,
        redis_debug,
    ]
}

/// Where the password of a URL is, as the parsers read it: after the first `:` of the user
/// information, which ends at the last `@` before the first `/` or `?` of the authority.
struct Password {
    start: usize,
    end: usize,
}

impl Password {
    fn find(url: &str) -> Option<Self> {
        let after_scheme = url.find("://")? + 3;
        let rest = &url[after_scheme..];
        let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
        let at = authority.rfind('@')?;
        let colon = authority[..at].find(':')?;
        Some(Self {
            start: after_scheme + colon + 1,
            end: after_scheme + at,
        })
    }

    fn raw<'a>(&self, url: &'a str) -> &'a str {
        &url[self.start..self.end]
    }

    /// The URL with the password replaced by `with` (which holds no `:`, `@`, `/` or `?`).
    fn replaced(&self, url: &str, with: &str) -> String {
        format!("{}{with}{}", &url[..self.start], &url[self.end..])
    }

    /// Whether finding the password in a text would prove a leak: it is long enough not to
    /// occur by chance, and occurs neither in the rest of the URL nor in what is printed when
    /// the URL has another password.
    fn is_telling(&self, url: &str, printed_without: &str) -> bool {
        let raw = self.raw(url);
        let rest = self.replaced(url, "");
        raw.chars().count() >= 4 && !rest.contains(raw) && !printed_without.contains(raw)
    }
}
