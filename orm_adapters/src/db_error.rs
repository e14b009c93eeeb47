//! Database errors, classified by what they mean.
//!
//! An error about the data itself can never go away by waiting: the same row is refused on
//! every attempt, so the message goes to the dead-letter queue at once
//! ([`ErrorKind::InvalidData`]) instead of being retried for an hour. Everything else stays
//! [`ErrorKind::Database`] and is retried: a lost connection, a lock timeout, a deadlock, and
//! the integrity errors that can resolve by themselves (a foreign key whose parent row arrives
//! later, a unique value another row gives up later).
//!
//! | database | invalid data |
//! |---|---|
//! | all | NOT NULL and CHECK violations |
//! | PostgreSQL | SQLSTATE class 22 (data exception: a NUL byte in text or JSON, a number out of range, a value too long, a malformed date) |
//! | MySQL, MariaDB | SQLSTATE class 22, and errors 1265 (data truncated) and 1366 (incorrect value for the column, such as a 4-byte character in a `utf8mb3` column) |
//! | SQLite | `SQLITE_TOOBIG`, `SQLITE_MISMATCH` and `SQLITE_CONSTRAINT_DATATYPE` (`STRICT` tables) |

use cqrs_actors::{Error, ErrorKind};
use sea_orm::DbErr;

/// Turns a SeaORM error into a cqrs-sync error of the kind its cause calls for: invalid data
/// (dead-lettered at once) or a database failure (retried). `context` says what was being
/// done. Hooks that write with SeaORM can use it to classify their own errors the same way.
pub fn db_error(context: &str, err: DbErr) -> Error {
    let kind = if is_data_error(&err) {
        ErrorKind::InvalidData
    } else {
        ErrorKind::Database
    };
    Error::with_source(kind, format!("{context}: {err}"), err)
}

#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
fn is_data_error(err: &DbErr) -> bool {
    use sea_orm::RuntimeErr;
    use sea_orm::sqlx::error::ErrorKind as Kind;
    let (DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e))) = err
    else {
        return false;
    };
    let Some(db) = e.as_database_error() else {
        return false;
    };
    match db.kind() {
        Kind::NotNullViolation | Kind::CheckViolation => true,
        Kind::UniqueViolation | Kind::ForeignKeyViolation => false,
        _ => is_data_code(db),
    }
}

#[cfg(not(any(feature = "postgres", feature = "mysql", feature = "sqlite")))]
fn is_data_error(_: &DbErr) -> bool {
    false
}

/// The codes of data errors that `sqlx` files under no [`ErrorKind`](sea_orm::sqlx::error::ErrorKind).
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
fn is_data_code(db: &dyn sea_orm::sqlx::error::DatabaseError) -> bool {
    #[cfg(feature = "sqlite")]
    if db
        .try_downcast_ref::<sea_orm::sqlx::sqlite::SqliteError>()
        .is_some()
    {
        // SQLITE_TOOBIG, SQLITE_MISMATCH, SQLITE_CONSTRAINT_DATATYPE.
        return matches!(db.code().as_deref(), Some("18" | "20" | "3091"));
    }
    #[cfg(feature = "mysql")]
    if let Some(e) = db.try_downcast_ref::<sea_orm::sqlx::mysql::MySqlDatabaseError>() {
        // ER_WARN_DATA_TRUNCATED, ER_TRUNCATED_WRONG_VALUE_FOR_FIELD (SQLSTATE HY000/01000).
        return matches!(e.number(), 1265 | 1366) || e.code().is_some_and(|c| c.starts_with("22"));
    }
    // PostgreSQL's SQLSTATE class 22, "data exception".
    db.code().is_some_and(|c| c.starts_with("22"))
}
