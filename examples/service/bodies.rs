//! What a client may send the master: the request bodies, read strictly (an unknown field,
//! a wrong type or a `null` where none is allowed is a 400 naming it), and the checks of
//! their values against the columns.

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::http::ApiError;

/// Which write a request body is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// `POST`: the whole row; optional fields take their defaults.
    Create,
    /// `PUT`: the whole row again (the key comes from the path).
    Replace,
    /// `PATCH`: the fields to change.
    Patch,
}

impl Write {
    /// A required field: fails when a whole row is expected and the field is absent.
    pub fn required<T>(self, value: Option<T>, field: &str) -> Result<Option<T>, ApiError> {
        match value {
            None if self != Write::Patch => {
                Err(ApiError::bad_request(format!("{field} is required")))
            }
            v => Ok(v),
        }
    }

    /// An optional field: its default when a whole row is expected and the field is absent.
    pub fn optional<T>(self, value: Option<T>, default: impl FnOnce() -> T) -> Option<T> {
        match value {
            None if self != Write::Patch => Some(default()),
            v => v,
        }
    }
}

/// `POST /publishers`: a name; the database gives the id.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublisherBody {
    /// The name.
    #[serde(default, deserialize_with = "not_null")]
    pub name: Option<String>,
}

/// `POST /authors`: `id`, `name` and `rating` required.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorBody {
    /// The primary key (on `POST`; elsewhere the path's, if given).
    #[serde(default, deserialize_with = "not_null")]
    pub id: Option<i64>,
    /// The name, not blank, at most 200 characters.
    #[serde(default, deserialize_with = "not_null")]
    pub name: Option<String>,
    /// The e-mail address, or `null`.
    #[serde(default, deserialize_with = "nullable")]
    pub email: Option<Option<String>>,
    /// `"YYYY-MM-DD"`, or `null`.
    #[serde(default, deserialize_with = "nullable")]
    pub birth_date: Option<Option<chrono::NaiveDate>>,
    /// At most 4 digits before the point and 2 after.
    #[serde(default, deserialize_with = "decimal")]
    pub rating: Option<Decimal>,
    /// An existing publisher's id, or `null`.
    #[serde(default, deserialize_with = "nullable")]
    pub publisher_id: Option<Option<i64>>,
    /// A list of strings (default `[]`).
    #[serde(default, deserialize_with = "not_null")]
    pub tags: Option<Vec<String>>,
}

/// `POST /books`: `title`, `author_id` and `price` required; `id` a new UUID if absent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BookBody {
    /// The primary key (on `POST`: a new UUID if absent).
    #[serde(default, deserialize_with = "not_null")]
    pub id: Option<uuid::Uuid>,
    /// The title, not blank, at most 200 characters.
    #[serde(default, deserialize_with = "not_null")]
    pub title: Option<String>,
    /// An existing author's id.
    #[serde(default, deserialize_with = "not_null")]
    pub author_id: Option<i64>,
    /// At most 8 digits before the point and 2 after.
    #[serde(default, deserialize_with = "decimal")]
    pub price: Option<Decimal>,
    /// `"YYYY-MM-DD"`, or `null`.
    #[serde(default, deserialize_with = "nullable")]
    pub published: Option<Option<chrono::NaiveDate>>,
    /// A JSON object (default `{}`).
    #[serde(default, deserialize_with = "not_null")]
    pub extra: Option<serde_json::Map<String, Value>>,
}

/// A field that may be absent but not `null`.
fn not_null<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A field that may be absent (`None`), `null` (`Some(None)`) or given.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A decimal given as a string (`"4.50"`, as the wire carries it) or a number.
fn decimal<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    let text = match Value::deserialize(d)? {
        Value::String(s) => s,
        Value::Number(n) => n.to_string(),
        other => {
            return Err(serde::de::Error::custom(format!(
                "expected a decimal as a string or a number, got {other}"
            )));
        }
    };
    text.parse::<Decimal>()
        .or_else(|_| Decimal::from_scientific(&text))
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a decimal: {e}")))
}

/// A decimal that fits `numeric(precision, scale)` as it is (no rounding), with `scale`
/// decimal places (`4.5` becomes `4.50`, as Django's `DecimalField` keeps it).
pub fn decimal_within(
    field: &str,
    value: Decimal,
    precision: u32,
    scale: u32,
) -> Result<Decimal, ApiError> {
    let mut value = value.normalize();
    let limit = Decimal::from(10_i64.pow(precision - scale));
    if value.scale() > scale || value.abs() >= limit {
        return Err(ApiError::bad_request(format!(
            "{field}: {value} does not fit {precision} digits with {scale} decimal places"
        )));
    }
    value.rescale(scale);
    Ok(value)
}

/// A text that is not blank and has at most `max` characters.
pub fn text(field: &str, value: String, max: usize) -> Result<String, ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::bad_request(format!("{field} is blank")));
    }
    if value.chars().count() > max {
        return Err(ApiError::bad_request(format!(
            "{field}: at most {max} characters"
        )));
    }
    Ok(value)
}

/// A random (version 4) UUID.
pub fn new_uuid() -> uuid::Uuid {
    uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid()
}

/// `POST /sync`: the body of django-cqrs's admin action "sync selected".
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncBody {
    /// Which table.
    pub cqrs_id: String,
    /// django-cqrs's lookups: `{"id__in": [1, 2]}`; `{}` selects every row.
    pub filter: Value,
    /// One replica's queue; none: every replica.
    #[serde(default)]
    pub queue: Option<String>,
}
