//! Value forms of WIRE.md section 2: how dates, datetimes, decimals, UUIDs, times of day and
//! durations travel inside `instance_data`, in both directions.
//!
//! Producers here emit the forms a Python peer emits (datetimes in Python `str()` form,
//! decimals as strings); parsers accept every form a peer may send.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use uuid::Uuid;

/// A value in `instance_data` that does not have the expected form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected}, got {got}")]
pub struct ValueError {
    expected: &'static str,
    got: String,
}

impl ValueError {
    fn new(expected: &'static str, got: impl std::fmt::Display) -> Self {
        Self {
            expected,
            got: abbreviate(&got.to_string(), 80),
        }
    }

    /// The form that was expected, e.g. `"a datetime"`.
    #[must_use]
    pub fn expected(&self) -> &'static str {
        self.expected
    }
}

/// The most bytes of a text taken from a message (a CQRS id, a primary key, a signal type, a
/// routing key, a bad value) that an error, a log line or a header quotes. Messages are hostile
/// until checked: a 200,000-character id must not become a 200,000-character log line or an
/// AMQP header larger than the broker's frame.
pub const EXCERPT_MAX: usize = 128;

/// Cuts `text` to at most `max` bytes (on a character boundary), ending in `...` when cut, so
/// a bad value can be quoted in an error without flooding the log.
#[must_use]
pub fn abbreviate(text: &str, max: usize) -> String {
    match cut(text, max) {
        (shown, false) => shown.to_owned(),
        (shown, true) => format!("{shown}..."),
    }
}

/// The part of `text` shown in at most `max` bytes with room for `...`, and whether it was cut.
fn cut(text: &str, max: usize) -> (&str, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], true)
}

/// `text` cut to [`EXCERPT_MAX`] bytes: how errors and logs quote what a message carried.
/// It copies nothing; `Display` writes the cut text, `Debug` quotes it as `str` does.
#[must_use]
pub fn excerpt(text: &str) -> Excerpt<'_> {
    Excerpt(text)
}

/// A text shown cut to [`EXCERPT_MAX`] bytes, ending in `...` when cut (see [`excerpt`]).
#[derive(Clone, Copy)]
pub struct Excerpt<'a>(&'a str);

impl std::fmt::Display for Excerpt<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (shown, was_cut) = cut(self.0, EXCERPT_MAX);
        f.write_str(shown)?;
        if was_cut {
            f.write_str("...")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Excerpt<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match cut(self.0, EXCERPT_MAX) {
            (shown, false) => write!(f, "{shown:?}"),
            (shown, true) => write!(f, "{shown:?}..."),
        }
    }
}

fn as_str<'a>(value: &'a Value, expected: &'static str) -> Result<&'a str, ValueError> {
    value
        .as_str()
        .ok_or_else(|| ValueError::new(expected, value))
}

/// Formats a datetime the way Python's `str(datetime)` does for an aware UTC value:
/// `YYYY-MM-DD HH:MM:SS[.ffffff]+00:00`, microseconds only when not zero.
#[must_use]
pub fn format_datetime(dt: &DateTime<Utc>) -> String {
    python_datetime(dt, ' ')
}

/// Formats a datetime the way Python's `isoformat()` does (the form of `expires`):
/// `YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00`.
#[must_use]
pub fn format_iso_datetime(dt: &DateTime<Utc>) -> String {
    python_datetime(dt, 'T')
}

/// Python's forms of an aware UTC datetime, written digit by digit: every event a master
/// publishes carries one, and chrono's format strings are interpreted at each call. Years
/// outside 0..=9999 and leap seconds take chrono's formatter.
fn python_datetime(dt: &DateTime<Utc>, separator: char) -> String {
    use chrono::{Datelike, Timelike};
    let (year, nanos) = (dt.year(), dt.nanosecond());
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        let form = match (separator, dt.timestamp_subsec_micros() == 0) {
            (' ', true) => "%Y-%m-%d %H:%M:%S+00:00",
            (' ', false) => "%Y-%m-%d %H:%M:%S%.6f+00:00",
            (_, true) => "%Y-%m-%dT%H:%M:%S+00:00",
            (_, false) => "%Y-%m-%dT%H:%M:%S%.6f+00:00",
        };
        return dt.format(form).to_string();
    }
    fn digits(out: &mut String, value: u32, width: u32) {
        for place in (0..width).rev() {
            let digit = (value / 10u32.pow(place)) % 10;
            out.push(char::from(b'0' + digit as u8));
        }
    }
    let mut out = String::with_capacity(32);
    digits(&mut out, year.unsigned_abs(), 4);
    out.push('-');
    digits(&mut out, dt.month(), 2);
    out.push('-');
    digits(&mut out, dt.day(), 2);
    out.push(separator);
    digits(&mut out, dt.hour(), 2);
    out.push(':');
    digits(&mut out, dt.minute(), 2);
    out.push(':');
    digits(&mut out, dt.second(), 2);
    let micros = nanos / 1000;
    if micros != 0 {
        out.push('.');
        digits(&mut out, micros, 6);
    }
    out.push_str("+00:00");
    out
}

/// Parses a datetime in any form a peer sends: `T` or a space between date and time, with or
/// without fractional seconds, with `Z`, `+HH:MM`, `+HHMM` or no offset (taken as UTC).
pub fn parse_datetime(text: &str) -> Result<DateTime<Utc>, ValueError> {
    let s = text.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Ok(dt.with_timezone(&Utc));
    }
    let normalized = s.replacen(' ', "T", 1);
    // Python's `str()` form with its space made a `T`: RFC 3339, the fast parser.
    if let Ok(dt) = DateTime::parse_from_rfc3339(&normalized) {
        return Ok(dt.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%dT%H:%M:%S%.f%#z",
    ] {
        if let Ok(dt) = DateTime::<FixedOffset>::parse_from_str(&normalized, fmt) {
            return Ok(dt.with_timezone(&Utc));
        }
    }
    let naive = normalized.strip_suffix('Z').unwrap_or(&normalized);
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(naive, fmt) {
            return Ok(dt.and_utc());
        }
    }
    Err(ValueError::new("a datetime", text))
}

/// Reads a datetime from a JSON value (see [`parse_datetime`]).
pub fn datetime_from_value(value: &Value) -> Result<DateTime<Utc>, ValueError> {
    parse_datetime(as_str(value, "a datetime string")?)
}

/// Formats a date as `YYYY-MM-DD`.
#[must_use]
pub fn format_date(date: &NaiveDate) -> String {
    date.format("%Y-%m-%d").to_string()
}

/// Reads a `YYYY-MM-DD` date from a JSON value. A datetime string is accepted too (its date
/// part), since some serializers send dates that way.
pub fn date_from_value(value: &Value) -> Result<NaiveDate, ValueError> {
    let s = as_str(value, "a date string")?;
    // `FromStr` reads `YYYY-MM-DD` without interpreting a format string each time.
    s.parse::<NaiveDate>()
        .or_else(|_| NaiveDate::parse_from_str(s, "%Y-%m-%d"))
        .or_else(|_| parse_datetime(s).map(|dt| dt.date_naive()))
        .map_err(|_| ValueError::new("a date (YYYY-MM-DD)", value))
}

/// Formats a time of day as `HH:MM:SS[.ffffff]`, the fraction only when it has a microsecond,
/// as Python's `str(time)` does (a part below a microsecond is not shown, so it does not count).
#[must_use]
pub fn format_time(time: &NaiveTime) -> String {
    use chrono::Timelike;
    // A leap second counts its nanoseconds from 1,000,000,000.
    if time.nanosecond() % 1_000_000_000 < 1_000 {
        time.format("%H:%M:%S").to_string()
    } else {
        time.format("%H:%M:%S%.6f").to_string()
    }
}

/// Reads a time of day `HH:MM[:SS[.ffffff]]` from a JSON value.
pub fn time_from_value(value: &Value) -> Result<NaiveTime, ValueError> {
    let s = as_str(value, "a time string")?;
    NaiveTime::parse_from_str(s, "%H:%M:%S%.f")
        .or_else(|_| NaiveTime::parse_from_str(s, "%H:%M"))
        .map_err(|_| ValueError::new("a time (HH:MM:SS[.ffffff])", value))
}

/// Formats a decimal as a JSON string (`"9.99"`): exact, and accepted by Python replicas.
#[must_use]
pub fn decimal_to_value(decimal: &Decimal) -> Value {
    Value::String(decimal.to_string())
}

/// Reads a decimal from a JSON string (`"9.99"`) or number (`9.99`, as django-cqrs sends it).
/// A number is read from its shortest textual form, so `9.99` gives exactly `9.99`.
pub fn decimal_from_value(value: &Value) -> Result<Decimal, ValueError> {
    let text = match value {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        other => return Err(ValueError::new("a decimal (string or number)", other)),
    };
    text.parse::<Decimal>()
        .or_else(|_| Decimal::from_scientific(&text))
        .map_err(|_| ValueError::new("a decimal (string or number)", value))
}

/// Formats a UUID lowercase and hyphenated.
#[must_use]
pub fn format_uuid(uuid: &Uuid) -> String {
    uuid.hyphenated().to_string()
}

/// Reads a UUID from a JSON string in any of the usual forms.
pub fn uuid_from_value(value: &Value) -> Result<Uuid, ValueError> {
    Uuid::parse_str(as_str(value, "a UUID string")?).map_err(|_| ValueError::new("a UUID", value))
}

/// Formats a duration as ISO 8601 (`P1DT2H3M4.5S`, `-PT1S`, `PT0S`).
#[must_use]
pub fn format_duration(duration: &TimeDelta) -> String {
    let negative = *duration < TimeDelta::zero();
    let abs = duration.abs();
    let days = abs.num_days();
    let rest = abs - TimeDelta::days(days);
    let hours = rest.num_hours();
    let minutes = (rest - TimeDelta::hours(hours)).num_minutes();
    let secs_delta = rest - TimeDelta::hours(hours) - TimeDelta::minutes(minutes);
    let secs = secs_delta.num_seconds();
    let micros = secs_delta.subsec_nanos() / 1_000;
    let mut out = String::from(if negative { "-P" } else { "P" });
    if days > 0 {
        out.push_str(&format!("{days}D"));
    }
    if hours > 0 || minutes > 0 || secs > 0 || micros > 0 || days == 0 {
        out.push('T');
        if hours > 0 {
            out.push_str(&format!("{hours}H"));
        }
        if minutes > 0 {
            out.push_str(&format!("{minutes}M"));
        }
        if secs > 0 || micros > 0 || (hours == 0 && minutes == 0) {
            if micros > 0 {
                let frac = format!("{micros:06}");
                out.push_str(&format!("{secs}.{}S", frac.trim_end_matches('0')));
            } else {
                out.push_str(&format!("{secs}S"));
            }
        }
    }
    out
}

/// Reads an ISO 8601 duration (`P[nW][nD][T[nH][nM][n[.f]S]]`, optionally signed) from a JSON
/// string, or a number of seconds (to the millisecond). A duration must fit in a signed 64-bit
/// count of microseconds (about 292,000 years either way); a longer one is an error, not
/// another duration.
pub fn duration_from_value(value: &Value) -> Result<TimeDelta, ValueError> {
    let err = || ValueError::new("an ISO 8601 duration", value);
    if let Some(secs) = value.as_f64() {
        return whole(secs * 1000.0)
            .filter(|ms| ms.checked_mul(1000).is_some())
            .map(TimeDelta::milliseconds)
            .ok_or_else(err);
    }
    let s = as_str(value, "an ISO 8601 duration")?;
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let s = s.strip_prefix('P').ok_or_else(err)?;
    let mut micros: i64 = 0;
    let mut in_time = false;
    let mut number = String::new();
    let mut seen_unit = false;
    for c in s.chars() {
        match c {
            'T' if !in_time && number.is_empty() => in_time = true,
            '0'..='9' | '.' | ',' => number.push(if c == ',' { '.' } else { c }),
            unit => {
                let per_unit: i64 = match (in_time, unit) {
                    (false, 'W') => 604_800_000_000,
                    (false, 'D') => 86_400_000_000,
                    (true, 'H') => 3_600_000_000,
                    (true, 'M') => 60_000_000,
                    (true, 'S') => 1_000_000,
                    _ => return Err(err()),
                };
                let part = duration_part(&number, per_unit).ok_or_else(err)?;
                micros = micros.checked_add(part).ok_or_else(err)?;
                number.clear();
                seen_unit = true;
            }
        }
    }
    if !number.is_empty() || !seen_unit {
        return Err(err());
    }
    let total = TimeDelta::microseconds(micros);
    Ok(if negative { -total } else { total })
}

/// `number` (digits with at most one `.`) units of `per_unit` microseconds, in microseconds:
/// the whole part exactly, the fraction rounded; `None` past the range of an `i64`.
fn duration_part(number: &str, per_unit: i64) -> Option<i64> {
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        return None;
    }
    let int: i64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let frac = if frac.is_empty() {
        0
    } else {
        whole(format!("0.{frac}").parse::<f64>().ok()? * per_unit as f64)?
    };
    int.checked_mul(per_unit)?.checked_add(frac)
}

/// `x` rounded to a whole number, if that fits in an `i64` (an `as` cast would saturate).
fn whole(x: f64) -> Option<i64> {
    // -2^63 and 2^63 are exact in an f64; every rounded value between them fits.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    let x = x.round();
    (x.is_finite() && (-LIMIT..LIMIT).contains(&x)).then_some(x as i64)
}

/// Reads an integer from a JSON number or a string of digits.
pub fn i64_from_value(value: &Value) -> Result<i64, ValueError> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| ValueError::new("an integer", value)),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| ValueError::new("an integer", value)),
        other => Err(ValueError::new("an integer", other)),
    }
}

/// Renders a primary key (any JSON scalar) as the text used for sharding, logs and tombstones:
/// strings as they are, numbers and booleans in JSON form, null as `null`.
#[must_use]
pub fn pk_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn python_forms_are_chrono_forms() {
        let chrono_form = |dt: &DateTime<Utc>, t: &str| {
            if dt.timestamp_subsec_micros() == 0 {
                dt.format(&format!("%Y-%m-%d{t}%H:%M:%S+00:00")).to_string()
            } else {
                dt.format(&format!("%Y-%m-%d{t}%H:%M:%S%.6f+00:00"))
                    .to_string()
            }
        };
        let mut rng = fastrand::Rng::with_seed(11);
        let mut cases: Vec<DateTime<Utc>> = (0..20_000)
            .map(|_| {
                let secs = rng.i64(-62_135_596_800..253_402_300_799); // years 1 to 9999
                let nanos = match rng.u8(0..4) {
                    0 => 0,
                    1 => rng.u32(0..1000), // below a microsecond: not shown
                    2 => rng.u32(0..1_000) * 1000,
                    _ => rng.u32(0..1_000_000_000),
                };
                DateTime::from_timestamp(secs, nanos).expect("in range")
            })
            .collect();
        cases.extend(
            [
                "0000-01-01T00:00:00Z",
                "9999-12-31T23:59:59.999999999Z",
                "2026-11-30T12:00:00.000001Z",
                "1970-01-01T00:00:00Z",
            ]
            .map(|s| DateTime::parse_from_rfc3339(s).expect("valid").to_utc()),
        );
        // Past Python's range, below a microsecond past it, and a leap second: chrono's form.
        cases.push(DateTime::from_timestamp(253_402_300_800, 5000).expect("year 10000"));
        cases.push(DateTime::from_timestamp(253_402_300_800, 500).expect("year 10000"));
        cases.push(DateTime::from_timestamp(-62_167_219_201, 0).expect("year -1"));
        cases.push(DateTime::from_timestamp(1_483_228_799, 1_500_000_000).expect("leap second"));
        for dt in &cases {
            assert_eq!(format_datetime(dt), chrono_form(dt, " "), "{dt:?}");
            assert_eq!(format_iso_datetime(dt), chrono_form(dt, "T"), "{dt:?}");
        }
    }

    #[test]
    fn abbreviate_cuts_on_a_character_boundary() {
        assert_eq!(abbreviate("short", 10), "short");
        assert_eq!(abbreviate("abcdefghijkl", 10), "abcdefg...");
        // 'é' is two bytes; byte 7 falls inside the fourth one.
        assert_eq!(abbreviate("éééééééé", 10), "ééé...");
        let long = "é".repeat(100_000);
        assert!(excerpt(&long).to_string().len() <= EXCERPT_MAX);
        assert!(excerpt(&long).to_string().ends_with("..."));
        assert_eq!(excerpt("id").to_string(), "id");
        assert_eq!(format!("{:?}", excerpt("a\"b")), "\"a\\\"b\"");
    }

    #[test]
    fn datetimes_in_every_peer_form_parse_to_the_same_instant() {
        let expected = parse_datetime("2026-11-27 17:08:25.074040+00:00").unwrap();
        for form in [
            "2026-11-27T17:08:25.074040+00:00",
            "2026-11-27T17:08:25.074040Z",
            "2026-11-27 17:08:25.07404Z",
            "2026-11-27T18:08:25.074040+01:00",
            "2026-11-27T18:08:25.074040+0100",
            "2026-11-27 17:08:25.074040",
        ] {
            assert_eq!(parse_datetime(form).unwrap(), expected, "{form}");
        }
        assert_eq!(
            format_datetime(&expected),
            "2026-11-27 17:08:25.074040+00:00"
        );
        let whole = parse_datetime("2026-11-28T17:08:25+00:00").unwrap();
        assert_eq!(format_datetime(&whole), "2026-11-28 17:08:25+00:00");
        assert_eq!(format_iso_datetime(&whole), "2026-11-28T17:08:25+00:00");
        assert!(parse_datetime("yesterday").is_err());
    }

    #[test]
    fn decimals_from_strings_and_floats_are_exact() {
        assert_eq!(
            decimal_from_value(&json!("12.34")).unwrap().to_string(),
            "12.34"
        );
        assert_eq!(
            decimal_from_value(&json!(9999.99)).unwrap().to_string(),
            "9999.99"
        );
        assert_eq!(decimal_from_value(&json!(0.1)).unwrap().to_string(), "0.1");
        assert_eq!(
            decimal_from_value(&json!(1.2345678901234567e19))
                .unwrap()
                .to_string(),
            "12345678901234567000"
        );
        assert_eq!(decimal_to_value(&Decimal::new(999, 2)), json!("9.99"));
        let err = decimal_from_value(&json!(true)).unwrap_err();
        assert_eq!(err.expected(), "a decimal (string or number)");
    }

    #[test]
    fn dates_times_uuids() {
        let d = date_from_value(&json!("1815-12-10")).unwrap();
        assert_eq!(format_date(&d), "1815-12-10");
        assert!(date_from_value(&json!("10/12/1815")).is_err());
        let t = time_from_value(&json!("03:04:05.120000")).unwrap();
        assert_eq!(format_time(&t), "03:04:05.120000");
        assert_eq!(
            format_time(&time_from_value(&json!("03:04")).unwrap()),
            "03:04:00"
        );
        let u = uuid_from_value(&json!("9B5A5BCC-EBC2-4F92-984B-066B9C03521D")).unwrap();
        assert_eq!(format_uuid(&u), "9b5a5bcc-ebc2-4f92-984b-066b9c03521d");
        assert!(uuid_from_value(&json!(12)).is_err());
    }

    #[test]
    fn times_below_a_microsecond_show_no_fraction() {
        // Found by the values fuzz target: 20 ns after a whole second was written
        // `01:00:45.000000`, which read back as a time written `01:00:45`.
        let t = time_from_value(&json!("01:00:45.000000020")).unwrap();
        assert_eq!(format_time(&t), "01:00:45");
        let t = time_from_value(&json!("01:00:45.000001020")).unwrap();
        assert_eq!(format_time(&t), "01:00:45.000001");
        let leap = NaiveTime::from_hms_nano_opt(23, 59, 59, 1_000_000_500).unwrap();
        assert_eq!(format_time(&leap), "23:59:60");
        let leap = NaiveTime::from_hms_micro_opt(23, 59, 59, 1_250_000).unwrap();
        assert_eq!(format_time(&leap), "23:59:60.250000");
    }

    #[test]
    fn durations_round_trip() {
        for (text, delta) in [
            (
                "P1DT2H3M4.5S",
                TimeDelta::days(1)
                    + TimeDelta::hours(2)
                    + TimeDelta::minutes(3)
                    + TimeDelta::milliseconds(4500),
            ),
            ("PT0S", TimeDelta::zero()),
            ("-PT1S", TimeDelta::seconds(-1)),
            ("P2D", TimeDelta::days(2)),
        ] {
            assert_eq!(duration_from_value(&json!(text)).unwrap(), delta, "{text}");
            assert_eq!(format_duration(&delta), text);
        }
        assert_eq!(
            duration_from_value(&json!("P1W")).unwrap(),
            TimeDelta::days(7)
        );
        assert!(duration_from_value(&json!("P")).is_err());
        assert!(duration_from_value(&json!("PT5X")).is_err());
    }

    #[test]
    fn durations_past_the_range_are_errors_not_other_durations() {
        // Found by the `values` fuzz target: 1e300 seconds became the largest duration, whose
        // ISO form then read back as another one; a sum of parts could overflow and panic.
        for too_long in [
            json!(1e300),
            json!(-1e300),
            json!(1e16),
            json!("P106751991167DT7H12M55.807S"),
            json!("P9999999999999999999W"),
            json!("P15250000W15250000W"),
            json!("PT9223372036854775807S"),
        ] {
            let err = duration_from_value(&too_long).unwrap_err();
            assert_eq!(err.expected(), "an ISO 8601 duration", "{too_long}");
        }
        let longest = TimeDelta::microseconds(i64::MAX);
        let form = format_duration(&longest);
        assert_eq!(
            duration_from_value(&json!(form)).unwrap(),
            longest,
            "{form}"
        );
        assert_eq!(
            duration_from_value(&json!(format!("-{form}"))).unwrap(),
            -longest
        );
        assert_eq!(
            duration_from_value(&json!(86_400.5)).unwrap(),
            TimeDelta::milliseconds(86_400_500)
        );
        assert_eq!(
            duration_from_value(&json!("PT.5S")).unwrap(),
            TimeDelta::milliseconds(500)
        );
        assert!(duration_from_value(&json!("PT.S")).is_err());
        assert!(duration_from_value(&json!("PT1.2.3S")).is_err());
    }

    #[test]
    fn pk_text_is_stable() {
        assert_eq!(pk_text(&json!(12)), "12");
        assert_eq!(pk_text(&json!("ab")), "ab");
        assert_eq!(i64_from_value(&json!("42")).unwrap(), 42);
    }
}
