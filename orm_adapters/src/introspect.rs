//! A table's columns read from the database itself (PostgreSQL, MySQL/MariaDB, SQLite), for
//! replicas and master views configured by table name, without a SeaORM entity.

use cqrs_actors::{Error, Result};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement, Value};

use crate::columns::{Column, Kind};
use crate::db_error;
use crate::sql::Dialect;

/// A table as the database describes it.
#[derive(Debug, Clone)]
pub(crate) struct TableInfo {
    pub(crate) table: String,
    pub(crate) dialect: Dialect,
    pub(crate) columns: Vec<Column>,
    /// The single-column primary key's position.
    pub(crate) pk: usize,
}

impl TableInfo {
    /// The position of a column.
    pub(crate) fn find(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// One column as the catalog lists it.
struct Described {
    name: String,
    /// The declared type, lower case (`character varying`, `varchar(200)`, `tinyint(1)`).
    ty: String,
    nullable: bool,
    primary: bool,
    /// A JSON column stored as text (MariaDB `longtext`, SQLite `text`) with a `json_valid`
    /// check, as Django declares `JSONField` there.
    json_checked: bool,
}

/// Reads `table`'s columns. The table must exist, have a single-column primary key and only
/// column types the adapters convert; each failure is a configuration error naming the table
/// and the column.
pub(crate) async fn describe(db: &DatabaseConnection, table: &str) -> Result<TableInfo> {
    let dialect = Dialect::of(db.get_database_backend())?;
    if table.is_empty() || table.contains('\0') {
        return Err(Error::config(
            "table",
            "a table name is not empty and has no NUL",
        ));
    }
    let described = match dialect {
        Dialect::Postgres => postgres(db, table).await?,
        Dialect::MySql => mysql(db, table).await?,
        Dialect::Sqlite => sqlite(db, table).await?,
    };
    if described.is_empty() {
        return Err(Error::config(
            table,
            "no such table (or it has no columns) in the database",
        ));
    }
    let mut columns = Vec::with_capacity(described.len());
    let mut pks = Vec::new();
    for (i, d) in described.iter().enumerate() {
        let kind = kind_of(dialect, d).ok_or_else(|| {
            Error::config(
                table,
                format!(
                    "column {:?} has type {:?}, which the cqrs-sync adapters do not convert",
                    d.name, d.ty
                ),
            )
        })?;
        if d.primary {
            pks.push(i);
        }
        columns.push(Column {
            name: d.name.clone(),
            kind,
            nullable: d.nullable && !d.primary,
            enumerated: d.ty == "enum" || d.ty.starts_with("enum("),
            max_chars: None,
            no_nul: false,
        });
    }
    let pk = match pks.as_slice() {
        [pk] => *pk,
        [] => return Err(Error::config(table, "the table has no primary key")),
        _ => {
            return Err(Error::config(
                table,
                "a cqrs-sync table needs a single-column primary key",
            ));
        }
    };
    for required in ["cqrs_revision", "cqrs_updated"] {
        if !columns.iter().any(|c| c.name == required) {
            return Err(Error::config(
                table,
                format!("the table has no {required} column"),
            ));
        }
    }
    Ok(TableInfo {
        table: table.to_owned(),
        dialect,
        columns,
        pk,
    })
}

async fn query(
    db: &DatabaseConnection,
    sql: &str,
    values: Vec<Value>,
) -> Result<Vec<sea_orm::QueryResult>> {
    let stmt = Statement::from_sql_and_values(db.get_database_backend(), sql, values);
    db.query_all_raw(stmt)
        .await
        .map_err(|e| db_error("reading the table's columns", e))
}

fn get<T: sea_orm::TryGetable>(row: &sea_orm::QueryResult, index: usize) -> Result<T> {
    row.try_get_by_index(index)
        .map_err(|e| db_error("reading the table's columns", e))
}

async fn postgres(db: &DatabaseConnection, table: &str) -> Result<Vec<Described>> {
    let rows = query(
        db,
        "SELECT c.column_name::text, \
                CASE WHEN c.data_type = 'USER-DEFINED' THEN c.udt_name::text \
                     ELSE c.data_type::text END, \
                c.is_nullable = 'YES', \
                EXISTS (SELECT 1 FROM information_schema.table_constraints t \
                        JOIN information_schema.key_column_usage k \
                          ON k.constraint_name = t.constraint_name \
                         AND k.constraint_schema = t.constraint_schema \
                         AND k.table_name = t.table_name \
                        WHERE t.constraint_type = 'PRIMARY KEY' \
                          AND t.table_schema = c.table_schema \
                          AND t.table_name = c.table_name \
                          AND k.column_name = c.column_name) \
         FROM information_schema.columns c \
         WHERE c.table_schema = current_schema() AND c.table_name = $1 \
         ORDER BY c.ordinal_position",
        vec![table.into()],
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Described {
                name: get(r, 0)?,
                ty: get::<String>(r, 1)?.to_ascii_lowercase(),
                nullable: get(r, 2)?,
                primary: get(r, 3)?,
                json_checked: false,
            })
        })
        .collect()
}

async fn mysql(db: &DatabaseConnection, table: &str) -> Result<Vec<Described>> {
    let rows = query(
        db,
        "SELECT CAST(column_name AS CHAR), CAST(column_type AS CHAR), \
                CAST(is_nullable = 'YES' AS SIGNED), CAST(column_key = 'PRI' AS SIGNED) \
         FROM information_schema.columns \
         WHERE table_schema = DATABASE() AND table_name = ? \
         ORDER BY ordinal_position",
        vec![table.into()],
    )
    .await?;
    // MariaDB stores JSON as LONGTEXT with a `json_valid` check; MySQL has a JSON type.
    let checks = query(
        db,
        "SELECT CAST(check_clause AS CHAR) FROM information_schema.check_constraints \
         WHERE constraint_schema = DATABASE() AND table_name = ?",
        vec![table.into()],
    )
    .await
    .unwrap_or_default();
    let checks: Vec<String> = checks
        .iter()
        .filter_map(|r| get::<String>(r, 0).ok())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    rows.iter()
        .map(|r| {
            let name: String = get(r, 0)?;
            let json_checked = checks
                .iter()
                .any(|c| c.contains(&format!("json_valid(`{}`)", name.to_ascii_lowercase())));
            Ok(Described {
                ty: get::<String>(r, 1)?.to_ascii_lowercase(),
                nullable: get::<i64>(r, 2)? == 1,
                primary: get::<i64>(r, 3)? == 1,
                json_checked,
                name,
            })
        })
        .collect()
}

async fn sqlite(db: &DatabaseConnection, table: &str) -> Result<Vec<Described>> {
    let rows = query(
        db,
        "SELECT name, type, \"notnull\", pk FROM pragma_table_info(?) ORDER BY cid",
        vec![table.into()],
    )
    .await?;
    let create = query(
        db,
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
        vec![table.into()],
    )
    .await?;
    let create: String = match create.first() {
        Some(r) => get::<Option<String>>(r, 0)?.unwrap_or_default(),
        None => String::new(),
    }
    .to_ascii_lowercase();
    rows.iter()
        .map(|r| {
            let name: String = get(r, 0)?;
            let lower = name.to_ascii_lowercase();
            let json_checked = [
                format!("json_valid(\"{lower}\")"),
                format!("json_valid({lower})"),
            ]
            .iter()
            .any(|c| create.contains(c.as_str()));
            Ok(Described {
                ty: get::<String>(r, 1)?.to_ascii_lowercase(),
                nullable: get::<i64>(r, 2)? == 0,
                primary: get::<i64>(r, 3)? > 0,
                json_checked,
                name,
            })
        })
        .collect()
}

/// The kind of a declared column type, or `None` when the adapters cannot convert it.
fn kind_of(dialect: Dialect, d: &Described) -> Option<Kind> {
    let ty = d.ty.as_str();
    let base = ty.split('(').next().unwrap_or(ty).trim();
    let base = base.strip_suffix(" unsigned").unwrap_or(base).trim();
    if d.json_checked {
        return Some(Kind::Json);
    }
    Some(match base {
        // MySQL's and Django's boolean.
        "tinyint" if ty.starts_with("tinyint(1)") => Kind::Bool,
        "bool" | "boolean" => Kind::Bool,
        // SQLite integers are 64-bit whatever they are declared as.
        "integer" | "int" | "smallint" | "tinyint" | "bigint" | "mediumint" | "int2" | "int4"
        | "int8"
            if dialect == Dialect::Sqlite =>
        {
            Kind::BigInt
        }
        "smallint" | "int2" | "tinyint" => Kind::SmallInt,
        "integer" | "int" | "int4" | "mediumint" if !ty.contains("unsigned") => Kind::Int,
        "integer" | "int" | "int4" | "mediumint" | "bigint" | "int8" => Kind::BigInt,
        "character varying" | "varchar" | "character" | "char" | "text" | "tinytext"
        | "mediumtext" | "longtext" | "citext" | "enum" | "nvarchar" | "nchar" | "clob" => {
            Kind::Text
        }
        "real" | "float4" if dialect != Dialect::Sqlite => Kind::Float,
        "float" if dialect == Dialect::MySql => Kind::Float,
        "real" | "float" | "double" | "double precision" | "float8" => Kind::Double,
        "numeric" | "decimal" => Kind::Decimal,
        "date" => Kind::Date,
        "timestamp with time zone" | "timestamptz" => Kind::DateTimeUtc,
        "datetime" | "timestamp" | "timestamp without time zone" => Kind::NaiveDateTime,
        "time" | "time without time zone" => Kind::Time,
        "uuid" => Kind::Uuid,
        "json" | "jsonb" => Kind::Json,
        _ => return None,
    })
}
