//! SeaORM adapters of cqrs-sync: master bookkeeping (`cqrs_revision`, `cqrs_updated`) with a
//! transactional outbox, and revision-guarded batched replica apply, for PostgreSQL,
//! MySQL/MariaDB and SQLite.
//!
//! - [`ReplicaTable`]: a SeaORM entity as a replica model; register it with
//!   [`cqrs_actors::ReplicaModel::new`]. Batches are applied in one transaction with the
//!   revision rules enforced in SQL.
//! - [`MasterTable`]: a SeaORM entity this service owns; writes through it bump
//!   `cqrs_revision`, set `cqrs_updated` and record the event, encoded once, in the same
//!   transaction, into the [`Outbox`] that the system it is registered with relays in order (or
//!   publish it after commit).
//! - [`MasterView`]: a master table another service writes, read by table name (columns from
//!   the database) for the tools; [`MasterSource`] is what the tools read, from either kind.
//! - [`Filter`]: django-cqrs's JSON row filters (`{"id__in": [1, 2]}`), as bound parameters.
//! - [`Tombstones`]: opt-in memory of deletes, so a stale SAVE cannot resurrect a row.
//! - [`db_error`]: database errors classified by meaning: bad data is dead-lettered at once,
//!   what can pass (a lost connection, a parent row that arrives later) is retried.
//! - `migration` (feature `migration`): the outbox and tombstone tables as SeaORM migrations,
//!   for a service's own migrator.
//!
//! Enable the drivers with the features `postgres`, `mysql` and `sqlite`.

mod columns;
mod db_error;
mod filter;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod introspect;
mod master;
#[cfg(feature = "migration")]
pub mod migration;
mod outbox;
mod replica;
mod sql;
mod tombstones;

pub use columns::to_json;
pub use db_error::db_error;
pub use filter::Filter;
pub use master::{
    Dispatch, MasterRow, MasterSource, MasterTable, MasterView, MetaInput, RowPage, Serializer,
    SyncPage, SyncRows,
};
pub use outbox::Outbox;
pub use replica::{Hook, ReplicaTable, RowChange};
pub use tombstones::Tombstones;

/// Begins a transaction that will write. On SQLite it takes the write lock at once
/// (`BEGIN IMMEDIATE`): a deferred transaction that reads and then writes fails with "database
/// is locked" when another connection writes in between, without waiting.
pub(crate) async fn begin_write<C>(db: &C) -> cqrs_actors::Result<C::Transaction>
where
    C: sea_orm::TransactionTrait,
{
    let options = sea_orm::TransactionOptions {
        sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
        ..Default::default()
    };
    db.begin_with_options(options)
        .await
        .map_err(|e| db_error("begin", e))
}
