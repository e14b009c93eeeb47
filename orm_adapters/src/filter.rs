//! Row filters in django-cqrs's form: a JSON object of field lookups, as `cqrs_sync -f` and
//! `cqrs_diff_master -f` take them (`{"id__in": [1, 2]}`, `{"name": "x"}`, `{}` for all rows).
//!
//! A filter is parsed once ([`Filter::parse`]) and turned into a SeaORM [`Condition`] against a
//! table's columns, which checks the field names and converts each value to its column's type.
//! Values are always bound parameters, never spliced into SQL.

use std::fmt;
use std::str::FromStr;

use cqrs_actors::{Error, Result};
use sea_orm::Condition;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, LikeExpr};
use serde_json::Value as Json;

use crate::columns::{Column, Kind};

/// The lookups a filter may use, after a field name and `__` (none: `exact`).
const OPERATORS: [&str; 10] = [
    "exact",
    "gt",
    "gte",
    "lt",
    "lte",
    "in",
    "isnull",
    "contains",
    "startswith",
    "endswith",
];

/// The most values an `__in` lookup may carry (the databases' bound-parameter limits, with
/// room for the rest of the statement).
const MAX_IN_VALUES: usize = 30_000;

/// The escape character of `LIKE` patterns: one that needs no quoting in any dialect.
const LIKE_ESCAPE: char = '!';

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Exact,
    Gt,
    Gte,
    Lt,
    Lte,
    In,
    IsNull,
    Contains,
    StartsWith,
    EndsWith,
}

impl Op {
    fn parse(name: &str) -> Option<Op> {
        Some(match name {
            "exact" => Op::Exact,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            "in" => Op::In,
            "isnull" => Op::IsNull,
            "contains" => Op::Contains,
            "startswith" => Op::StartsWith,
            "endswith" => Op::EndsWith,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Lookup {
    /// The key as written, for messages.
    key: String,
    field: String,
    op: Op,
    value: Json,
}

/// A row filter: lookups joined by AND, as Django's `filter(**kwargs)`.
///
/// Fields are column names, `pk` for the primary key, or a master's wire key that the table
/// maps to a column (`author` for `author_id`). Lookups: `exact` (the default), `gt`, `gte`,
/// `lt`, `lte`, `in`, `isnull`, `contains`, `startswith`, `endswith`.
///
/// ```
/// use cqrs_orm_adapters::Filter;
/// let f: Filter = r#"{"id__in": [1, 2], "name__startswith": "A"}"#.parse()?;
/// assert!(!f.is_all());
/// assert!(Filter::all().is_all());
/// assert!(r#"{"name__like": "x"}"#.parse::<Filter>().is_err());
/// # Ok::<(), cqrs_actors::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    lookups: Vec<Lookup>,
}

impl Filter {
    /// Every row (`{}`).
    #[must_use]
    pub fn all() -> Self {
        Self::default()
    }

    /// Rows whose primary key is one of `pks` (`{"pk__in": [...]}`).
    #[must_use]
    pub fn pk_in(pks: Vec<Json>) -> Self {
        Self {
            lookups: vec![Lookup {
                key: "pk__in".into(),
                field: "pk".into(),
                op: Op::In,
                value: Json::Array(pks),
            }],
        }
    }

    /// Whether the filter selects every row.
    #[must_use]
    pub fn is_all(&self) -> bool {
        self.lookups.is_empty()
    }

    /// A filter from a JSON object of lookups. Checks the form only; the fields and the value
    /// types are checked against a table by [`condition`](Self::condition).
    pub fn from_json(json: &Json) -> Result<Self> {
        let Json::Object(object) = json else {
            return Err(filter_error(format!(
                "a filter is a JSON object of lookups, like {{\"id__in\": [1, 2]}}; got {}",
                kind_of(json)
            )));
        };
        let mut lookups = Vec::with_capacity(object.len());
        for (key, value) in object {
            let mut parts: Vec<&str> = key.split("__").collect();
            let op = match parts.as_slice() {
                [_] => Op::Exact,
                [_, op] => Op::parse(op).ok_or_else(|| {
                    filter_error(format!(
                        "{key:?}: unknown lookup {op:?}; the lookups are {}",
                        OPERATORS.join(", ")
                    ))
                })?,
                _ => {
                    return Err(filter_error(format!(
                        "{key:?}: lookups across relations are not supported; filter on the \
                         table's own columns"
                    )));
                }
            };
            parts.truncate(1);
            let field = parts[0];
            if field.is_empty() {
                return Err(filter_error(format!("{key:?}: the field name is empty")));
            }
            check_value(key, op, value)?;
            lookups.push(Lookup {
                key: key.clone(),
                field: field.to_owned(),
                op,
                value: value.clone(),
            });
        }
        Ok(Self { lookups })
    }

    /// The condition against a table's columns. `resolve` names the column of a field that is
    /// not a column name (a wire key), `pk` is the primary key's position. Unknown fields and
    /// values that are not their column's type are errors naming the lookup.
    pub(crate) fn condition(
        &self,
        columns: &[Column],
        pk: usize,
        resolve: &dyn Fn(&str) -> Option<usize>,
    ) -> Result<Condition> {
        let mut condition = Condition::all();
        for lookup in &self.lookups {
            let index = if lookup.field == "pk" {
                Some(pk)
            } else {
                columns
                    .iter()
                    .position(|c| c.name == lookup.field)
                    .or_else(|| resolve(&lookup.field))
            };
            let Some(index) = index else {
                let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
                return Err(filter_error(format!(
                    "{:?}: no column {:?}; the columns are pk, {}",
                    lookup.key,
                    lookup.field,
                    names.join(", ")
                )));
            };
            condition = condition.add(lookup.expr(&columns[index])?);
        }
        Ok(condition)
    }
}

impl Lookup {
    fn expr(&self, column: &Column) -> Result<Expr> {
        let col = || Expr::col(Alias::new(&column.name));
        let value = |json: &Json| {
            column
                .to_db(json)
                .map_err(|e| filter_error(format!("{:?}: {}", self.key, e.message())))
        };
        Ok(match self.op {
            Op::Exact if Json::is_null(&self.value) => col().is_null(),
            Op::Exact => col().eq(value(&self.value)?),
            Op::Gt => col().gt(value(&self.value)?),
            Op::Gte => col().gte(value(&self.value)?),
            Op::Lt => col().lt(value(&self.value)?),
            Op::Lte => col().lte(value(&self.value)?),
            Op::In => {
                let items = self.value.as_array().map_or(&[][..], Vec::as_slice);
                if items.is_empty() {
                    // `IN ()` is not SQL; an empty list matches nothing, as in Django.
                    return Ok(Expr::val(1).eq(0));
                }
                let values = items.iter().map(value).collect::<Result<Vec<_>>>()?;
                col().is_in(values)
            }
            Op::IsNull if self.value == Json::Bool(true) => col().is_null(),
            Op::IsNull => col().is_not_null(),
            Op::Contains | Op::StartsWith | Op::EndsWith => {
                if column.kind != Kind::Text {
                    return Err(filter_error(format!(
                        "{:?}: {} works on text columns; {:?} is not one",
                        self.key,
                        op_name(self.op),
                        column.name
                    )));
                }
                let text = escape_like(self.value.as_str().unwrap_or_default());
                let pattern = match self.op {
                    Op::Contains => format!("%{text}%"),
                    Op::StartsWith => format!("{text}%"),
                    _ => format!("%{text}"),
                };
                col().like(LikeExpr::new(pattern).escape(LIKE_ESCAPE))
            }
        })
    }
}

impl FromStr for Filter {
    type Err = Error;

    /// Parses the JSON text of a filter (`{}` for all rows).
    fn from_str(text: &str) -> Result<Self> {
        let json: Json = serde_json::from_str(text)
            .map_err(|e| filter_error(format!("the filter is not valid JSON: {e}")))?;
        Self::from_json(&json)
    }
}

impl fmt::Display for Filter {
    /// The filter as a JSON object.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let object: serde_json::Map<String, Json> = self
            .lookups
            .iter()
            .map(|l| (l.key.clone(), l.value.clone()))
            .collect();
        write!(f, "{}", Json::Object(object))
    }
}

fn check_value(key: &str, op: Op, value: &Json) -> Result<()> {
    let scalar = |v: &Json| !matches!(v, Json::Array(_) | Json::Object(_));
    let ok = match op {
        Op::Exact => scalar(value),
        Op::Gt | Op::Gte | Op::Lt | Op::Lte => scalar(value) && !value.is_null(),
        Op::In => value
            .as_array()
            .is_some_and(|items| items.iter().all(|v| scalar(v) && !v.is_null())),
        Op::IsNull => value.is_boolean(),
        Op::Contains | Op::StartsWith | Op::EndsWith => value.is_string(),
    };
    if !ok {
        let expected = match op {
            Op::Exact => "a value (not a list or an object)",
            Op::Gt | Op::Gte | Op::Lt | Op::Lte => "a value (not null, a list or an object)",
            Op::In => "a list of values",
            Op::IsNull => "true or false",
            Op::Contains | Op::StartsWith | Op::EndsWith => "a string",
        };
        return Err(filter_error(format!(
            "{key:?}: {} expects {expected}, got {}",
            op_name(op),
            kind_of(value)
        )));
    }
    if let Some(items) = value.as_array()
        && items.len() > MAX_IN_VALUES
    {
        return Err(filter_error(format!(
            "{key:?}: at most {MAX_IN_VALUES} values in one list, got {}",
            items.len()
        )));
    }
    Ok(())
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Exact => "exact",
        Op::Gt => "gt",
        Op::Gte => "gte",
        Op::Lt => "lt",
        Op::Lte => "lte",
        Op::In => "in",
        Op::IsNull => "isnull",
        Op::Contains => "contains",
        Op::StartsWith => "startswith",
        Op::EndsWith => "endswith",
    }
}

fn kind_of(json: &Json) -> &'static str {
    match json {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "an object",
    }
}

/// `%`, `_` and the escape character itself, escaped for a `LIKE` pattern.
fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        if matches!(c, '%' | '_' | LIKE_ESCAPE) {
            out.push(LIKE_ESCAPE);
        }
        out.push(c);
    }
    out
}

fn filter_error(message: String) -> Error {
    Error::config("filter", message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::sea_query::{PostgresQueryBuilder, Query};
    use serde_json::json;

    fn columns() -> Vec<Column> {
        let col = |name: &str, kind, nullable| Column {
            name: name.into(),
            kind,
            nullable,
            enumerated: false,
            max_chars: None,
            no_nul: false,
        };
        vec![
            col("id", Kind::BigInt, false),
            col("name", Kind::Text, false),
            col("author_id", Kind::Int, true),
            col("rating", Kind::Decimal, false),
        ]
    }

    fn sql(filter: &str) -> Result<String> {
        let f: Filter = filter.parse()?;
        let resolve = |field: &str| (field == "author").then_some(2);
        let cond = f.condition(&columns(), 0, &resolve)?;
        Ok(Query::select()
            .column(Alias::new("id"))
            .from(Alias::new("t"))
            .cond_where(cond)
            .to_string(PostgresQueryBuilder))
    }

    #[test]
    fn lookups_become_conditions() {
        assert_eq!(sql("{}").unwrap(), r#"SELECT "id" FROM "t" WHERE TRUE"#);
        assert_eq!(
            sql(r#"{"id__in": [1, "2"], "name": "x"}"#).unwrap(),
            r#"SELECT "id" FROM "t" WHERE "id" IN (1, 2) AND "name" = 'x'"#
        );
        assert_eq!(
            sql(r#"{"pk__gte": 3, "author": null, "rating__lt": "9.5"}"#).unwrap(),
            r#"SELECT "id" FROM "t" WHERE "author_id" IS NULL AND "id" >= 3 AND "rating" < 9.5"#
        );
        assert_eq!(
            sql(r#"{"author__isnull": false, "id__in": []}"#).unwrap(),
            r#"SELECT "id" FROM "t" WHERE "author_id" IS NOT NULL AND 1 = 0"#
        );
        assert_eq!(
            sql(r#"{"name__contains": "50%_off!"}"#).unwrap(),
            r#"SELECT "id" FROM "t" WHERE "name" LIKE '%50!%!_off!!%' ESCAPE '!'"#
        );
        assert_eq!(
            sql(r#"{"name__startswith": "A", "name__endswith": "z"}"#).unwrap(),
            r#"SELECT "id" FROM "t" WHERE "name" LIKE '%z' ESCAPE '!' AND "name" LIKE 'A%' ESCAPE '!'"#
        );
    }

    #[test]
    fn bad_filters_are_rejected_with_the_reason() {
        let cases = [
            ("[1]", "JSON object"),
            ("{", "not valid JSON"),
            (r#"{"nope": 1}"#, "no column \"nope\""),
            (
                r#"{"name__icontains": "x"}"#,
                "unknown lookup \"icontains\"",
            ),
            (r#"{"author__name": "x"}"#, "unknown lookup \"name\""),
            (r#"{"author__name__in": ["x"]}"#, "across relations"),
            (r#"{"id__in": 1}"#, "a list of values"),
            (r#"{"id__in": [null]}"#, "a list of values"),
            (r#"{"id__isnull": "yes"}"#, "true or false"),
            (r#"{"id__gt": null}"#, "not null"),
            (r#"{"id": [1]}"#, "not a list"),
            (r#"{"id": "abc"}"#, "\"id\""),
            (r#"{"rating__contains": "1"}"#, "text columns"),
            (r#"{"__in": [1]}"#, "empty"),
            (r#"{"id": "1; DROP TABLE t"}"#, "\"id\""),
        ];
        for (filter, expected) in cases {
            let err = sql(filter).unwrap_err();
            assert!(
                err.to_string().contains(expected),
                "{filter}: {err} (expected {expected:?})"
            );
        }
        let many = json!({ "id__in": vec![1; MAX_IN_VALUES + 1] });
        assert!(Filter::from_json(&many).is_err());
    }

    #[test]
    fn text_values_are_bound_not_spliced() {
        let f: Filter = r#"{"name": "x' OR '1'='1"}"#.parse().unwrap();
        let cond = f.condition(&columns(), 0, &|_| None).unwrap();
        let (sql, values) = Query::select()
            .column(Alias::new("id"))
            .from(Alias::new("t"))
            .cond_where(cond)
            .build(PostgresQueryBuilder);
        assert_eq!(sql, r#"SELECT "id" FROM "t" WHERE "name" = $1"#);
        assert_eq!(values.0.len(), 1);
    }

    #[test]
    fn a_filter_prints_as_its_json() {
        let f: Filter = r#"{"id__in": [1, 2]}"#.parse().unwrap();
        assert_eq!(f.to_string(), r#"{"id__in":[1,2]}"#);
        assert_eq!(
            Filter::pk_in(vec![json!(3)]).to_string(),
            r#"{"pk__in":[3]}"#
        );
    }
}
