//! SeaORM adapters of cqrs-sync: master bookkeeping (`cqrs_revision`, `cqrs_updated`) with a
//! transactional outbox, and revision-guarded batched replica apply, for PostgreSQL,
//! MySQL/MariaDB and SQLite.
//!
//! - [`ReplicaTable`]: a SeaORM entity as a replica model; register it with
//!   [`cqrs_actors::ReplicaModel::new`]. Batches are applied in one transaction with the
//!   revision rules enforced in SQL.
//! - [`Tombstones`]: opt-in memory of deletes, so a stale SAVE cannot resurrect a row.
//!
//! Enable the drivers with the features `postgres`, `mysql` and `sqlite`.

mod columns;
mod replica;
mod sql;
mod tombstones;

pub use columns::to_json;
pub use replica::{Hook, ReplicaTable, RowChange};
pub use tombstones::Tombstones;

use cqrs_actors::{Error, ErrorKind};

/// A database error, retryable: the message is parked and tried again.
pub(crate) fn db_error(context: &str, err: sea_orm::DbErr) -> Error {
    Error::with_source(ErrorKind::Database, format!("{context}: {err}"), err)
}
