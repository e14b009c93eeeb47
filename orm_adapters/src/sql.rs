//! A small SQL text builder that knows the three dialects' quoting and placeholders, so the
//! adapters can write the statements SeaORM's query builder does not express (revision-guarded
//! upserts, the outbox relay) once for PostgreSQL, MySQL/MariaDB and SQLite.

use cqrs_actors::{Error, Result};
use sea_orm::{DbBackend, Statement, Value};

/// Which dialect a statement is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Postgres,
    MySql,
    Sqlite,
}

impl Dialect {
    pub(crate) fn of(backend: DbBackend) -> Result<Self> {
        match backend {
            DbBackend::Postgres => Ok(Dialect::Postgres),
            DbBackend::MySql => Ok(Dialect::MySql),
            DbBackend::Sqlite => Ok(Dialect::Sqlite),
            #[allow(unreachable_patterns)] // the enum is non-exhaustive
            other => Err(Error::config(
                "database",
                format!("{other:?} is not supported by the cqrs-sync adapters"),
            )),
        }
    }

    pub(crate) fn backend(self) -> DbBackend {
        match self {
            Dialect::Postgres => DbBackend::Postgres,
            Dialect::MySql => DbBackend::MySql,
            Dialect::Sqlite => DbBackend::Sqlite,
        }
    }

    /// A quoted identifier.
    pub(crate) fn ident(self, name: &str) -> String {
        match self {
            Dialect::MySql => format!("`{}`", name.replace('`', "``")),
            Dialect::Postgres | Dialect::Sqlite => format!("\"{}\"", name.replace('"', "\"\"")),
        }
    }

    /// Whether `SELECT ... FOR UPDATE` (and `SKIP LOCKED`) exist.
    pub(crate) fn has_row_locks(self) -> bool {
        !matches!(self, Dialect::Sqlite)
    }

    /// How many bound values one statement may carry, with room to spare (SQLite's default
    /// limit is 32,766; PostgreSQL's and MySQL's 65,535).
    pub(crate) fn max_values(self) -> usize {
        30_000
    }
}

/// A statement under construction: SQL text with placeholders and the values they bind.
#[derive(Debug)]
pub(crate) struct Query {
    dialect: Dialect,
    sql: String,
    values: Vec<Value>,
}

impl Query {
    pub(crate) fn new(dialect: Dialect) -> Self {
        Self {
            dialect,
            sql: String::with_capacity(256),
            values: Vec::new(),
        }
    }

    /// Appends SQL text.
    pub(crate) fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Appends a quoted identifier.
    pub(crate) fn ident(&mut self, name: &str) -> &mut Self {
        let quoted = self.dialect.ident(name);
        self.sql.push_str(&quoted);
        self
    }

    /// Appends a placeholder bound to `value`.
    pub(crate) fn value(&mut self, value: Value) -> &mut Self {
        self.values.push(value);
        match self.dialect {
            Dialect::Postgres => {
                use std::fmt::Write as _;
                let _ = write!(self.sql, "${}", self.values.len());
            }
            Dialect::MySql | Dialect::Sqlite => self.sql.push('?'),
        }
        self
    }

    /// Appends `(v1, v2, ...)`.
    pub(crate) fn value_list(&mut self, values: impl IntoIterator<Item = Value>) -> &mut Self {
        self.sql.push('(');
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                self.sql.push_str(", ");
            }
            self.value(v);
        }
        self.sql.push(')');
        self
    }

    /// Appends `(a, b, ...)` of quoted identifiers.
    pub(crate) fn ident_list<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) -> &mut Self {
        self.sql.push('(');
        for (i, n) in names.into_iter().enumerate() {
            if i > 0 {
                self.sql.push_str(", ");
            }
            self.ident(n);
        }
        self.sql.push(')');
        self
    }

    pub(crate) fn build(self) -> Statement {
        Statement::from_sql_and_values(self.dialect.backend(), self.sql, self.values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_quoting_follow_the_dialect() {
        let mut q = Query::new(Dialect::Postgres);
        q.push("SELECT * FROM ")
            .ident("my\"t")
            .push(" WHERE id IN ")
            .value_list([Value::from(1), Value::from(2)]);
        let stmt = q.build();
        assert_eq!(stmt.sql, "SELECT * FROM \"my\"\"t\" WHERE id IN ($1, $2)");
        let mut q = Query::new(Dialect::MySql);
        q.ident("t").push(" ").value(Value::from(1));
        assert_eq!(q.build().sql, "`t` ?");
    }
}
