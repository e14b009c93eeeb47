//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`): the conversions a replica
//! table and a command-line filter perform on hostile input, against a fixed table with a
//! column of every kind the adapters support, without a database.
//!
//! Not an API for applications: it exists so that the fuzz crate can reach crate-private
//! code, and its items may change with that code.

use cqrs_actors::{Envelope, ReplicaEvent, Result};
use sea_orm::DatabaseConnection;
use sea_orm::sea_query::{
    Alias, MysqlQueryBuilder, PostgresQueryBuilder, Query, SqliteQueryBuilder,
};

use crate::columns::{Column, Kind, to_json};
use crate::filter::Filter;
use crate::introspect::TableInfo;
use crate::replica::{ReplicaTable, pg_arrays};
use crate::sql::Dialect;

/// Every kind, nullable and not, named after the models of django-cqrs's captured messages
/// where one fits (`author`, `book`, `publisher`), plus the two sync columns.
const COLUMNS: [(&str, Kind, bool); 28] = [
    ("id", Kind::BigInt, false),
    ("cqrs_revision", Kind::Int, false),
    ("cqrs_updated", Kind::DateTimeUtc, false),
    ("name", Kind::Text, false),
    ("email", Kind::Text, true),
    ("birth_date", Kind::Date, true),
    ("rating", Kind::Decimal, false),
    ("publisher_id", Kind::Int, true),
    ("tags", Kind::Json, false),
    ("title", Kind::Text, true),
    ("author_id", Kind::BigInt, true),
    ("price", Kind::Decimal, true),
    ("published", Kind::Date, false),
    ("extra", Kind::Json, true),
    ("small", Kind::SmallInt, false),
    ("small_null", Kind::SmallInt, true),
    ("flag", Kind::Bool, false),
    ("flag_null", Kind::Bool, true),
    ("ratio", Kind::Float, false),
    ("ratio_null", Kind::Float, true),
    ("score", Kind::Double, false),
    ("score_null", Kind::Double, true),
    ("seen", Kind::NaiveDateTime, false),
    ("seen_null", Kind::NaiveDateTime, true),
    ("at_null", Kind::DateTimeUtc, true),
    ("opens", Kind::Time, false),
    ("opens_null", Kind::Time, true),
    ("uid", Kind::Uuid, true),
];

/// The names of the fixed table's columns, in order, for building inputs.
#[must_use]
pub fn column_names() -> Vec<&'static str> {
    COLUMNS.iter().map(|(name, _, _)| *name).collect()
}

fn columns() -> Vec<Column> {
    let mut columns: Vec<Column> = COLUMNS
        .iter()
        .map(|&(name, kind, nullable)| Column {
            name: name.to_owned(),
            kind,
            nullable,
            enumerated: false,
            max_chars: None,
            no_nul: false,
        })
        .collect();
    columns.push(Column {
        name: "status".to_owned(),
        kind: Kind::Text,
        nullable: true,
        enumerated: true,
        // A VARCHAR(20): the length check is fuzzed too.
        max_chars: Some(20),
        no_nul: false,
    });
    columns
}

/// The fixed table as a PostgreSQL replica whose `publisher` and `author` keys feed
/// `publisher_id` and `author_id` (Django's foreign keys), on a connection that is never used.
fn replica() -> Result<ReplicaTable> {
    ReplicaTable::from_parts(
        DatabaseConnection::default(),
        TableInfo {
            table: "fuzz_replica".to_owned(),
            dialect: Dialect::Postgres,
            columns: columns(),
            pk: 0,
        },
    )?
    .with_renames([("publisher", "publisher_id"), ("author", "author_id")])
}

/// Checks an envelope as the replica table does before it writes (its revision, its
/// `cqrs_updated`, its primary key and each `instance_data` value converted by column type),
/// then renders every converted value back to its wire form and as a PostgreSQL array
/// element. An error is what the replica would dead-letter.
///
/// # Panics
///
/// When a value the replica accepted has no wire form or no array form: that is the bug
/// the fuzz target looks for.
pub fn replica_prepare(envelope: Envelope) -> Result<()> {
    let table = replica()?;
    let event = ReplicaEvent::new(envelope, "fuzz", false, false);
    let prepared = table.prepare(&event)?;
    let columns = columns();
    for (index, value) in &prepared.row {
        let json = to_json(value)
            .unwrap_or_else(|e| panic!("column {:?}: no wire form: {e}", columns[*index].name));
        // The wire form of an accepted value is accepted again.
        columns[*index].to_db(&json).unwrap_or_else(|e| {
            panic!("column {:?}: {json} is refused: {e}", columns[*index].name)
        });
    }
    to_json(&prepared.pk).unwrap_or_else(|e| panic!("primary key: no wire form: {e}"));
    let rows = [prepared.row.iter().map(|(_, v)| v)];
    pg_arrays::literals(prepared.row.len(), rows.into_iter())
        .unwrap_or_else(|| panic!("no array literal for {:?}", prepared.row));
    Ok(())
}

/// Parses a filter's JSON text as the command line does, turns it into a condition on the
/// fixed table (`publisher` and `author` name their `_id` columns) and renders the statement in every dialect.
///
/// # Panics
///
/// When the filter's text form does not parse back to the same filter.
pub fn filter_sql(text: &str) -> Result<[String; 3]> {
    let filter: Filter = text.parse()?;
    let columns = columns();
    let resolve = |field: &str| match field {
        "publisher" | "author" => {
            let column = format!("{field}_id");
            columns.iter().position(|c| c.name == column)
        }
        _ => None,
    };
    let condition = filter.condition(&columns, 0, &resolve)?;
    let mut select = Query::select();
    select
        .column(Alias::new("id"))
        .from(Alias::new("fuzz_master"))
        .cond_where(condition);
    // The filter's text form parses back to the same filter.
    let again: Filter = filter.to_string().parse()?;
    assert_eq!(again, filter, "a filter's text does not parse back to it");
    Ok([
        select.to_string(PostgresQueryBuilder),
        select.to_string(MysqlQueryBuilder),
        select.to_string(SqliteQueryBuilder),
    ])
}
