//! Conversion between the wire forms of WIRE.md section 2 and SeaORM values, by column type.

use cqrs_actors::values;
use cqrs_actors::{Error, Result};
use sea_orm::sea_query::ColumnType;
use sea_orm::{ColumnTrait, EntityTrait, Iterable, QueryResult, Value};
use serde_json::Value as Json;

/// The SQL-facing kind of a column, reduced to the conversions the adapters perform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    SmallInt,
    Int,
    BigInt,
    Text,
    Bool,
    Float,
    Double,
    Decimal,
    Date,
    /// A datetime without time zone, stored in UTC.
    NaiveDateTime,
    DateTimeUtc,
    Time,
    Uuid,
    Json,
}

impl Kind {
    /// The kind of a SeaORM column type, or `None` when the adapters cannot convert it.
    pub(crate) fn of(ty: &ColumnType) -> Option<Kind> {
        Some(match ty {
            ColumnType::TinyInteger | ColumnType::SmallInteger => Kind::SmallInt,
            ColumnType::Integer => Kind::Int,
            ColumnType::BigInteger
            | ColumnType::TinyUnsigned
            | ColumnType::SmallUnsigned
            | ColumnType::Unsigned
            | ColumnType::BigUnsigned => Kind::BigInt,
            ColumnType::Char(_)
            | ColumnType::String(_)
            | ColumnType::Text
            | ColumnType::Enum { .. } => Kind::Text,
            ColumnType::Boolean => Kind::Bool,
            ColumnType::Float => Kind::Float,
            ColumnType::Double => Kind::Double,
            ColumnType::Decimal(_) | ColumnType::Money(_) => Kind::Decimal,
            ColumnType::Date => Kind::Date,
            ColumnType::DateTime | ColumnType::Timestamp => Kind::NaiveDateTime,
            ColumnType::TimestampWithTimeZone => Kind::DateTimeUtc,
            ColumnType::Time => Kind::Time,
            ColumnType::Uuid => Kind::Uuid,
            ColumnType::Json | ColumnType::JsonBinary => Kind::Json,
            _ => return None,
        })
    }

    /// A typed SQL NULL of this kind.
    fn null(self) -> Value {
        match self {
            Kind::SmallInt => Value::SmallInt(None),
            Kind::Int => Value::Int(None),
            Kind::BigInt => Value::BigInt(None),
            Kind::Text => Value::String(None),
            Kind::Bool => Value::Bool(None),
            Kind::Float => Value::Float(None),
            Kind::Double => Value::Double(None),
            Kind::Decimal => Value::Decimal(None),
            Kind::Date => Value::ChronoDate(None),
            Kind::NaiveDateTime => Value::ChronoDateTime(None),
            Kind::DateTimeUtc => Value::ChronoDateTimeUtc(None),
            Kind::Time => Value::ChronoTime(None),
            Kind::Uuid => Value::Uuid(None),
            Kind::Json => Value::Json(None),
        }
    }
}

/// One column of an entity as the adapters see it.
#[derive(Debug, Clone)]
pub(crate) struct Column {
    pub(crate) name: String,
    pub(crate) kind: Kind,
    pub(crate) nullable: bool,
    /// A database enum read as text: PostgreSQL assigns no text to it without a cast.
    pub(crate) enumerated: bool,
    /// The most characters a text column holds (`VARCHAR(n)`, `CHAR(n)`): a longer value is
    /// refused here, before it can fail the whole batch's statement in the database.
    pub(crate) max_chars: Option<u32>,
    /// Whether the database refuses a NUL character in text (PostgreSQL), checked here for
    /// the same reason.
    pub(crate) no_nul: bool,
}

impl Column {
    /// Converts a JSON value from `instance_data` into a value for this column. `null` is
    /// accepted for nullable columns only; anything that is not the column's form is an
    /// [`ErrorKind::InvalidData`](cqrs_actors::ErrorKind::InvalidData) error naming the column.
    pub(crate) fn to_db(&self, json: &Json) -> Result<Value> {
        if json.is_null() {
            if self.nullable {
                return Ok(self.kind.null());
            }
            return Err(Error::invalid_data(format!(
                "column {:?} is NOT NULL but the value is null",
                self.name
            )));
        }
        let mismatch = |expected: &str| {
            Error::invalid_data(format!(
                "column {:?} expects {expected}, got {}",
                self.name,
                values::abbreviate(&json.to_string(), 60)
            ))
        };
        let from_value_error =
            |e: values::ValueError| Error::invalid_data(format!("column {:?}: {e}", self.name));
        Ok(match self.kind {
            Kind::SmallInt => {
                let v = values::i64_from_value(json).map_err(from_value_error)?;
                Value::SmallInt(Some(
                    i16::try_from(v).map_err(|_| mismatch("a 16-bit integer"))?,
                ))
            }
            Kind::Int => {
                let v = values::i64_from_value(json).map_err(from_value_error)?;
                Value::Int(Some(
                    i32::try_from(v).map_err(|_| mismatch("a 32-bit integer"))?,
                ))
            }
            Kind::BigInt => Value::BigInt(Some(
                values::i64_from_value(json).map_err(from_value_error)?,
            )),
            Kind::Text => {
                let text = match json {
                    Json::String(s) => s.clone(),
                    // A master whose field is numeric feeding a text column: Django's
                    // CharField stores `str(value)`, and so do we.
                    Json::Number(n) => n.to_string(),
                    _ => return Err(mismatch("a string")),
                };
                self.check_text(&text)?;
                Value::String(Some(text))
            }
            Kind::Bool => match json {
                Json::Bool(b) => Value::Bool(Some(*b)),
                Json::Number(n) if n.as_i64() == Some(0) => Value::Bool(Some(false)),
                Json::Number(n) if n.as_i64() == Some(1) => Value::Bool(Some(true)),
                _ => return Err(mismatch("a boolean")),
            },
            Kind::Float | Kind::Double => {
                let v = match json {
                    Json::Number(n) => n.as_f64(),
                    Json::String(s) => s.trim().parse::<f64>().ok(),
                    _ => None,
                }
                .ok_or_else(|| mismatch("a number"))?;
                // NaN and the infinities have no JSON form (a master would send them as null),
                // and MySQL and SQLite cannot store them: they are never a row's value.
                if !v.is_finite() {
                    return Err(mismatch("a finite number"));
                }
                if self.kind == Kind::Float {
                    if v.abs() > f64::from(f32::MAX) {
                        return Err(mismatch("a number within single precision"));
                    }
                    #[allow(clippy::cast_possible_truncation)] // the column is single precision
                    let v = v as f32;
                    Value::Float(Some(v))
                } else {
                    Value::Double(Some(v))
                }
            }
            Kind::Decimal => Value::Decimal(Some(
                values::decimal_from_value(json).map_err(from_value_error)?,
            )),
            Kind::Date => Value::ChronoDate(Some(
                values::date_from_value(json).map_err(from_value_error)?,
            )),
            Kind::NaiveDateTime => Value::ChronoDateTime(Some(
                values::datetime_from_value(json)
                    .map_err(from_value_error)?
                    .naive_utc(),
            )),
            Kind::DateTimeUtc => Value::ChronoDateTimeUtc(Some(
                values::datetime_from_value(json).map_err(from_value_error)?,
            )),
            Kind::Time => Value::ChronoTime(Some(
                values::time_from_value(json).map_err(from_value_error)?,
            )),
            Kind::Uuid => Value::Uuid(Some(
                values::uuid_from_value(json).map_err(from_value_error)?,
            )),
            Kind::Json => Value::Json(Some(Box::new(json.clone()))),
        })
    }

    /// Reads this column from a result row, by position.
    pub(crate) fn read(&self, row: &QueryResult, index: usize) -> Result<Value> {
        let db = |e: sea_orm::DbErr| crate::db_error(&format!("reading column {:?}", self.name), e);
        Ok(match self.kind {
            Kind::SmallInt => Value::SmallInt(row.try_get_by_index(index).map_err(db)?),
            Kind::Int => Value::Int(row.try_get_by_index(index).map_err(db)?),
            Kind::BigInt => Value::BigInt(row.try_get_by_index(index).map_err(db)?),
            Kind::Text => Value::String(row.try_get_by_index(index).map_err(db)?),
            Kind::Bool => Value::Bool(row.try_get_by_index(index).map_err(db)?),
            Kind::Float => Value::Float(row.try_get_by_index(index).map_err(db)?),
            Kind::Double => Value::Double(row.try_get_by_index(index).map_err(db)?),
            // SQLite keeps a whole number in a NUMERIC column as an integer.
            Kind::Decimal => Value::Decimal(match row.try_get_by_index(index) {
                Ok(v) => v,
                Err(e) => row
                    .try_get_by_index::<Option<i64>>(index)
                    .map_err(|_| db(e))?
                    .map(rust_decimal::Decimal::from),
            }),
            Kind::Date => Value::ChronoDate(row.try_get_by_index(index).map_err(db)?),
            Kind::NaiveDateTime => Value::ChronoDateTime(row.try_get_by_index(index).map_err(db)?),
            Kind::DateTimeUtc => Value::ChronoDateTimeUtc(row.try_get_by_index(index).map_err(db)?),
            Kind::Time => Value::ChronoTime(row.try_get_by_index(index).map_err(db)?),
            Kind::Uuid => Value::Uuid(row.try_get_by_index(index).map_err(db)?),
            Kind::Json => Value::Json(
                row.try_get_by_index::<Option<Json>>(index)
                    .map_err(db)?
                    .map(Box::new),
            ),
        })
    }
}

/// The columns of an entity, in declaration order; an unsupported column type is a
/// configuration error naming the column.
/// A `cqrs_revision` read from a row or a model, whichever integer type the column has: the
/// one reader of the master and replica sides.
pub(crate) fn revision_of(value: &Value) -> Result<i64> {
    match value {
        Value::BigInt(Some(v)) => Ok(*v),
        Value::Int(Some(v)) => Ok(i64::from(*v)),
        Value::SmallInt(Some(v)) => Ok(i64::from(*v)),
        other => Err(Error::invalid_data(format!(
            "cqrs_revision is not an integer: {other:?}"
        ))),
    }
}

impl Column {
    /// Refuses text this column's database would refuse: too long, or with a NUL.
    fn check_text(&self, text: &str) -> Result<()> {
        if self.no_nul && text.contains('\0') {
            return Err(Error::invalid_data(format!(
                "column {:?}: the text has a NUL character, which the database cannot store",
                self.name
            )));
        }
        if let Some(max) = self.max_chars {
            // Bytes are never fewer than characters: count only when it can matter.
            if text.len() > max as usize {
                let chars = text.chars().count();
                if chars > max as usize {
                    return Err(Error::invalid_data(format!(
                        "column {:?} holds at most {max} characters, got {chars}",
                        self.name
                    )));
                }
            }
        }
        Ok(())
    }
}

/// The declared length of a text column type, if it has one.
fn max_chars(ty: &ColumnType) -> Option<u32> {
    match ty {
        ColumnType::String(sea_orm::sea_query::StringLen::N(n)) | ColumnType::Char(Some(n)) => {
            Some(*n)
        }
        _ => None,
    }
}

pub(crate) fn columns_of<E: EntityTrait>() -> Result<Vec<Column>> {
    E::Column::iter()
        .map(|c| {
            let def = c.def();
            let name = sea_orm::IdenStatic::as_str(&c).to_owned();
            let kind = Kind::of(def.get_column_type()).ok_or_else(|| {
                Error::config(
                    &name,
                    format!(
                        "column type {:?} is not supported by the cqrs-sync adapters",
                        def.get_column_type()
                    ),
                )
            })?;
            Ok(Column {
                name,
                kind,
                nullable: def.is_null(),
                enumerated: matches!(def.get_column_type(), ColumnType::Enum { .. }),
                max_chars: max_chars(def.get_column_type()),
                no_nul: false,
            })
        })
        .collect()
}

/// The wire form of a SeaORM value (WIRE.md section 2): Python `str()` datetimes, decimal
/// strings, lowercase UUIDs, dates as `YYYY-MM-DD`.
pub fn to_json(value: &Value) -> Result<Json> {
    Ok(match value {
        Value::Bool(v) => v.map_or(Json::Null, Json::Bool),
        Value::TinyInt(v) => v.map_or(Json::Null, Json::from),
        Value::SmallInt(v) => v.map_or(Json::Null, Json::from),
        Value::Int(v) => v.map_or(Json::Null, Json::from),
        Value::BigInt(v) => v.map_or(Json::Null, Json::from),
        Value::TinyUnsigned(v) => v.map_or(Json::Null, Json::from),
        Value::SmallUnsigned(v) => v.map_or(Json::Null, Json::from),
        Value::Unsigned(v) => v.map_or(Json::Null, Json::from),
        Value::BigUnsigned(v) => v.map_or(Json::Null, Json::from),
        Value::Float(v) => v.map_or(Json::Null, |f| Json::from(f64::from(f))),
        Value::Double(v) => v.map_or(Json::Null, Json::from),
        Value::String(v) => v.as_ref().map_or(Json::Null, |s| Json::String(s.clone())),
        Value::Char(v) => v.map_or(Json::Null, |c| Json::String(c.to_string())),
        Value::Json(v) => v.as_deref().cloned().unwrap_or(Json::Null),
        Value::ChronoDate(v) => v
            .as_ref()
            .map_or(Json::Null, |d| Json::String(values::format_date(d))),
        Value::ChronoTime(v) => v
            .as_ref()
            .map_or(Json::Null, |t| Json::String(values::format_time(t))),
        Value::ChronoDateTime(v) => v.as_ref().map_or(Json::Null, |d| {
            Json::String(values::format_datetime(&d.and_utc()))
        }),
        Value::ChronoDateTimeUtc(v) => v
            .as_ref()
            .map_or(Json::Null, |d| Json::String(values::format_datetime(d))),
        Value::ChronoDateTimeLocal(v) => v.as_ref().map_or(Json::Null, |d| {
            Json::String(values::format_datetime(&d.to_utc()))
        }),
        Value::ChronoDateTimeWithTimeZone(v) => v.as_ref().map_or(Json::Null, |d| {
            Json::String(values::format_datetime(&d.to_utc()))
        }),
        Value::Decimal(v) => v.as_ref().map_or(Json::Null, values::decimal_to_value),
        Value::Uuid(v) => v
            .as_ref()
            .map_or(Json::Null, |u| Json::String(values::format_uuid(u))),
        other => {
            return Err(Error::invalid_data(format!(
                "a value of type {} has no wire form",
                value_type_name(other)
            )));
        }
    })
}

fn value_type_name(value: &Value) -> String {
    let debug = format!("{value:?}");
    debug.split('(').next().unwrap_or("?").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_actors::ErrorKind;
    use serde_json::json;

    fn col(kind: Kind, nullable: bool) -> Column {
        Column {
            name: "c".into(),
            kind,
            nullable,
            enumerated: false,
            max_chars: None,
            no_nul: false,
        }
    }

    #[test]
    fn text_the_database_would_refuse_is_refused_before_the_batch() {
        let bounded = Column {
            max_chars: Some(3),
            no_nul: true,
            ..col(Kind::Text, false)
        };
        // Characters, not bytes, count.
        assert_eq!(
            bounded.to_db(&json!("\u{e9}\u{e9}\u{e9}")).unwrap(),
            Value::String(Some("\u{e9}\u{e9}\u{e9}".into()))
        );
        for bad in [json!("abcd"), json!(12345), json!("a\u{0}")] {
            let err = bounded.to_db(&bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidData, "{bad}");
            assert!(err.to_string().contains("\"c\""), "{err}");
        }
        // Without the limits (SQLite, MySQL for NUL) the same text passes.
        let open = col(Kind::Text, false);
        assert!(open.to_db(&json!("abcd\u{0}")).is_ok());
    }

    #[test]
    fn wire_forms_convert_both_ways() {
        let cases = [
            (Kind::BigInt, json!(7), json!(7)),
            (Kind::Int, json!("12"), json!(12)),
            (Kind::Text, json!("x"), json!("x")),
            (Kind::Text, json!(5), json!("5")),
            (Kind::Bool, json!(true), json!(true)),
            (Kind::Bool, json!(0), json!(false)),
            (Kind::Decimal, json!("9.99"), json!("9.99")),
            (Kind::Decimal, json!(12.5), json!("12.5")),
            (Kind::Date, json!("2026-11-27"), json!("2026-11-27")),
            (
                Kind::DateTimeUtc,
                json!("2026-11-27T18:29:46.788133Z"),
                json!("2026-11-27 18:29:46.788133+00:00"),
            ),
            (
                Kind::NaiveDateTime,
                json!("2026-11-27 17:08:25+00:00"),
                json!("2026-11-27 17:08:25+00:00"),
            ),
            (Kind::Time, json!("10:20:30"), json!("10:20:30")),
            (
                Kind::Uuid,
                json!("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"),
                json!("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            ),
            (Kind::Json, json!({"a": [1]}), json!({"a": [1]})),
            (Kind::Double, json!(1.5), json!(1.5)),
        ];
        for (kind, input, wire) in cases {
            let value = col(kind, false).to_db(&input).unwrap();
            assert_eq!(to_json(&value).unwrap(), wire, "{kind:?} {input}");
        }
    }

    #[test]
    fn floats_without_a_wire_form_are_refused() {
        // Found with the instance_data fuzz target's check that every accepted value has a wire
        // form: "NaN" and "inf" parsed as floats, and 1e39 became infinity in a REAL column;
        // all three went out again as null.
        for (kind, bad) in [
            (Kind::Float, json!("NaN")),
            (Kind::Double, json!("NaN")),
            (Kind::Double, json!("-inf")),
            (Kind::Double, json!("infinity")),
            (Kind::Float, json!(1e39)),
            (Kind::Float, json!("-3.5e38")),
        ] {
            let err = col(kind, true).to_db(&bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidData, "{kind:?} {bad}");
        }
        let largest = col(Kind::Float, false)
            .to_db(&json!(f64::from(f32::MAX)))
            .unwrap();
        assert_eq!(largest, Value::Float(Some(f32::MAX)));
        assert_eq!(
            col(Kind::Double, false).to_db(&json!(1e39)).unwrap(),
            Value::Double(Some(1e39))
        );
    }

    #[test]
    fn mismatches_and_nulls_name_the_column() {
        let err = col(Kind::Int, false).to_db(&json!("abc")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert!(err.message().contains("\"c\""), "{err}");
        let err = col(Kind::SmallInt, false).to_db(&json!(70000)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        let err = col(Kind::Text, false).to_db(&Json::Null).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert_eq!(
            col(Kind::Text, true).to_db(&Json::Null).unwrap(),
            Value::String(None)
        );
        assert_eq!(
            col(Kind::Uuid, false)
                .to_db(&json!("nope"))
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidData
        );
    }
}
