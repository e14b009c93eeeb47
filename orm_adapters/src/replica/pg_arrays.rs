//! PostgreSQL writes of many rows as one array per column: `INSERT ... SELECT * FROM
//! unnest($1::text::int8[], $2::text::text[], ...)`. A statement carries a handful of
//! parameters whatever the row count, where rows past the size of one `VALUES` statement
//! (30,000 placeholders) would take several, each parsed and planned again: bulk loads of
//! 10,000-row batches are about 12 % faster this way. Below that size `VALUES` is faster. Each
//! array travels as the text of an array literal, so NULLs need no typed binding (SeaORM's
//! array values cannot hold NULLs).

use sea_orm::Value;

use crate::columns::{Column, Kind};

/// The element type of a column's array.
pub(super) fn element_type(kind: Kind) -> &'static str {
    match kind {
        Kind::SmallInt => "int2",
        Kind::Int => "int4",
        Kind::BigInt => "int8",
        Kind::Text => "text",
        Kind::Bool => "bool",
        Kind::Float => "float4",
        Kind::Double => "float8",
        Kind::Decimal => "numeric",
        Kind::Date => "date",
        Kind::NaiveDateTime => "timestamp",
        Kind::DateTimeUtc => "timestamptz",
        Kind::Time => "time",
        Kind::Uuid => "uuid",
        Kind::Json => "jsonb",
    }
}

/// Whether rows of these columns can go as arrays (a database enum cannot: PostgreSQL
/// assigns no text to it).
pub(super) fn fits(columns: &[&Column]) -> bool {
    columns.iter().all(|c| !c.enumerated)
}

/// One array literal per column (`{"1","2",NULL}`), or `None` when a value has no text form
/// here (the caller writes a `VALUES` list instead).
pub(crate) fn literals<'a>(
    width: usize,
    rows: impl Iterator<Item = impl Iterator<Item = &'a Value>>,
) -> Option<Vec<String>> {
    let mut out: Vec<String> = (0..width).map(|_| String::from("{")).collect();
    for (n, row) in rows.enumerate() {
        let mut count = 0;
        for (literal, value) in out.iter_mut().zip(row) {
            if n > 0 {
                literal.push(',');
            }
            element(literal, value)?;
            count += 1;
        }
        if count != width {
            return None;
        }
    }
    for literal in &mut out {
        literal.push('}');
    }
    Some(out)
}

/// Appends one element: `NULL`, a number as it is, or any other value's text in double
/// quotes with `"` and `\` escaped. Written in place: a bulk load formats millions of them.
fn element(out: &mut String, value: &Value) -> Option<()> {
    use chrono::{Datelike, Timelike};
    use std::fmt::Write as _;
    let date = |out: &mut String, d: &chrono::NaiveDate| {
        let _ = write!(out, "{:04}-{:02}-{:02}", d.year(), d.month(), d.day());
    };
    let time = |out: &mut String, t: &chrono::NaiveTime| {
        let _ = write!(out, "{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second());
        let micros = t.nanosecond() / 1_000;
        if micros > 0 {
            let _ = write!(out, ".{micros:06}");
        }
    };
    let null = |out: &mut String| out.push_str("NULL");
    match value {
        Value::Bool(v) => match v {
            Some(b) => out.push(if *b { 't' } else { 'f' }),
            None => null(out),
        },
        Value::SmallInt(v) => number(out, v.as_ref()),
        Value::Int(v) => number(out, v.as_ref()),
        Value::BigInt(v) => number(out, v.as_ref()),
        Value::Decimal(v) => number(out, v.as_ref()),
        Value::Float(v) => match v {
            Some(f) => out.push_str(&float(f64::from(*f))),
            None => null(out),
        },
        Value::Double(v) => match v {
            Some(f) => out.push_str(&float(*f)),
            None => null(out),
        },
        Value::String(v) => match v {
            Some(text) => quoted(out, text),
            None => null(out),
        },
        Value::Json(v) => match v {
            Some(json) => quoted(out, &json.to_string()),
            None => null(out),
        },
        Value::Uuid(v) => match v {
            Some(u) => {
                let _ = write!(out, "{}", u.hyphenated());
            }
            None => null(out),
        },
        Value::ChronoDate(v) => match v {
            Some(d) => date(out, d),
            None => null(out),
        },
        Value::ChronoTime(v) => match v {
            Some(t) => time(out, t),
            None => null(out),
        },
        Value::ChronoDateTime(v) => match v {
            Some(d) => {
                out.push('"');
                date(out, &d.date());
                out.push(' ');
                time(out, &d.time());
                out.push('"');
            }
            None => null(out),
        },
        Value::ChronoDateTimeUtc(v) => match v {
            Some(d) => {
                let d = d.naive_utc();
                out.push('"');
                date(out, &d.date());
                out.push(' ');
                time(out, &d.time());
                out.push_str("+00\"");
            }
            None => null(out),
        },
        _ => return None,
    }
    Some(())
}

fn number(out: &mut String, value: Option<&impl std::fmt::Display>) {
    use std::fmt::Write as _;
    match value {
        Some(v) => {
            let _ = write!(out, "{v}");
        }
        None => out.push_str("NULL"),
    }
}

fn quoted(out: &mut String, text: &str) {
    out.reserve(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// A float as PostgreSQL reads it back exactly (`NaN`, `Infinity`, `-Infinity`).
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        format!("{v:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn array_literals_quote_escape_and_null() {
        let rows: Vec<Vec<Value>> = vec![
            vec![
                Value::BigInt(Some(1)),
                Value::String(Some("a \"quoted\" \\ back,slash {x}".into())),
                Value::Json(Some(Box::new(json!({"k": "v\"w"})))),
            ],
            vec![
                Value::BigInt(Some(2)),
                Value::String(None),
                Value::Json(None),
            ],
        ];
        let out = literals(3, rows.iter().map(|r| r.iter())).unwrap();
        assert_eq!(out[0], "{1,2}");
        assert_eq!(out[1], r#"{"a \"quoted\" \\ back,slash {x}",NULL}"#);
        assert_eq!(out[2], r#"{"{\"k\":\"v\\\"w\"}",NULL}"#);
        assert_eq!(float(f64::NAN), "NaN");
        assert_eq!(float(f64::NEG_INFINITY), "-Infinity");
        assert_eq!(float(0.1), "0.1");
        assert!(literals(1, [[Value::Bytes(Some(vec![1]))].iter()].into_iter()).is_none());
    }
}
