//! The framework's own tables as SeaORM migrations (feature `migration`), for services that
//! keep their schema with a [`sea_orm_migration`] migrator rather than calling
//! [`Outbox::create_table`](crate::Outbox::create_table) and
//! [`Tombstones::create_table`](crate::Tombstones::create_table) at start-up.
//!
//! - [`CreateOutbox`]: the outbox (default `cqrs_outbox`) and its lease table
//!   (`<name>_lease`), recorded as `m20261130_000001_cqrs_outbox`.
//! - [`CreateTombstones`]: the tombstone table (default `cqrs_tombstones`), recorded as
//!   `m20261130_000002_cqrs_tombstones`.
//! - [`AddOutboxHeaders`]: the outbox's nullable `headers` column (the trace context of each
//!   event), recorded as `m20261201_000001_cqrs_outbox_headers`. List it after
//!   [`CreateOutbox`]: on an outbox `CreateOutbox` made with the column it does nothing, on one
//!   made by an earlier release it adds the column, which rows already there leave NULL.
//!
//! The first two run the statements `create_table` runs (`CREATE TABLE IF NOT EXISTS`, so a database
//! whose tables `create_table` made before takes them as they are) and drop their tables on the
//! way down. A migration for a table of another name is recorded under the default's name with
//! `_<table>` appended, so one migrator can hold several outboxes; keep the names you give them,
//! as the migrator refuses a database that recorded a migration it no longer lists.
//!
//! The migrator finds out which tables exist through the drivers this crate is built with: turn
//! on the features `postgres`, `mysql` or `sqlite` that match the service's databases.
//!
//! A service lists them with its own migrations:
//!
//! ```no_run
//! use cqrs_orm_adapters::migration::{AddOutboxHeaders, CreateOutbox, CreateTombstones};
//! use sea_orm_migration::prelude::*;
//!
//! /// The service's own first migration.
//! struct CreateOrders;
//!
//! impl MigrationName for CreateOrders {
//!     fn name(&self) -> &str {
//!         "m20261201_000001_create_orders"
//!     }
//! }
//!
//! #[async_trait::async_trait]
//! impl MigrationTrait for CreateOrders {
//!     async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
//!         manager
//!             .create_table(
//!                 Table::create()
//!                     .table(Alias::new("orders"))
//!                     .col(ColumnDef::new(Alias::new("id")).big_integer().primary_key())
//!                     .to_owned(),
//!             )
//!             .await
//!     }
//!
//!     async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
//!         manager
//!             .drop_table(Table::drop().table(Alias::new("orders")).to_owned())
//!             .await
//!     }
//! }
//!
//! /// The service's migrator.
//! struct Migrator;
//!
//! #[async_trait::async_trait]
//! impl MigratorTrait for Migrator {
//!     fn migrations() -> Vec<Box<dyn MigrationTrait>> {
//!         vec![
//!             Box::new(CreateOrders),
//!             Box::new(CreateOutbox::default()),
//!             Box::new(CreateTombstones::default()),
//!             Box::new(AddOutboxHeaders::default()),
//!         ]
//!     }
//! }
//!
//! # async fn migrate(db: &sea_orm::DatabaseConnection) -> Result<(), DbErr> {
//! Migrator::up(db, None).await
//! # }
//! ```

/// The `sea-orm-migration` whose traits these migrations implement, for a migrator that does
/// not depend on it itself (or wants the same version).
pub use sea_orm_migration;

use sea_orm::{ConnectionTrait, DbErr};
use sea_orm_migration::{MigrationName, MigrationTrait, SchemaManager, async_trait};

use crate::sql::Dialect;
use crate::{outbox, tombstones};

/// The name under which the default outbox's migration is recorded.
const OUTBOX: &str = "m20261130_000001_cqrs_outbox";
/// The name under which the default tombstone table's migration is recorded.
const TOMBSTONES: &str = "m20261130_000002_cqrs_tombstones";
/// The name under which the default outbox's `headers` column migration is recorded.
const OUTBOX_HEADERS: &str = "m20261201_000001_cqrs_outbox_headers";

/// A migration that creates the outbox and its lease table, as
/// [`Outbox::create_table`](crate::Outbox::create_table) does, and drops them on the way down.
///
/// Recorded as `m20261130_000001_cqrs_outbox` for the default table `cqrs_outbox`, and as
/// `m20261130_000001_cqrs_outbox_<table>` for another.
#[derive(Debug, Clone)]
pub struct CreateOutbox {
    table: String,
    name: String,
}

impl Default for CreateOutbox {
    fn default() -> Self {
        Self::new("cqrs_outbox")
    }
}

impl CreateOutbox {
    /// The migration of the outbox kept in `table` (the table of
    /// [`Outbox::with_table`](crate::Outbox::with_table)).
    #[must_use]
    pub fn new(table: impl Into<String>) -> Self {
        let table = table.into();
        Self {
            name: name(OUTBOX, "cqrs_outbox", &table),
            table,
        }
    }

    /// The outbox table's name.
    #[must_use]
    pub fn table(&self) -> &str {
        &self.table
    }
}

impl MigrationName for CreateOutbox {
    fn name(&self) -> &str {
        &self.name
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateOutbox {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let d = dialect(manager)?;
        let lease = outbox::lease_table(&self.table);
        for sql in outbox::create_statements(d, &self.table, &lease) {
            manager.get_connection().execute_unprepared(&sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let d = dialect(manager)?;
        for table in [outbox::lease_table(&self.table), self.table.clone()] {
            drop_table(manager, d, &table).await?;
        }
        Ok(())
    }
}

/// A migration that creates the tombstone table, as
/// [`Tombstones::create_table`](crate::Tombstones::create_table) does, and drops it on the way
/// down.
///
/// Recorded as `m20261130_000002_cqrs_tombstones` for the default table `cqrs_tombstones`, and as
/// `m20261130_000002_cqrs_tombstones_<table>` for another.
#[derive(Debug, Clone)]
pub struct CreateTombstones {
    table: String,
    name: String,
}

impl Default for CreateTombstones {
    fn default() -> Self {
        Self::new("cqrs_tombstones")
    }
}

impl CreateTombstones {
    /// The migration of the tombstones kept in `table` (the table of
    /// [`Tombstones::new`](crate::Tombstones::new)).
    #[must_use]
    pub fn new(table: impl Into<String>) -> Self {
        let table = table.into();
        Self {
            name: name(TOMBSTONES, "cqrs_tombstones", &table),
            table,
        }
    }

    /// The tombstone table's name.
    #[must_use]
    pub fn table(&self) -> &str {
        &self.table
    }
}

impl MigrationName for CreateTombstones {
    fn name(&self) -> &str {
        &self.name
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateTombstones {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let d = dialect(manager)?;
        manager
            .get_connection()
            .execute_unprepared(&tombstones::create_statement(d, &self.table))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_table(manager, dialect(manager)?, &self.table).await
    }
}

/// A migration that adds the nullable `headers` column to an outbox that lacks it (one made by
/// a release before the column existed), and drops it on the way down.
///
/// Recorded as `m20261201_000001_cqrs_outbox_headers` for the default table `cqrs_outbox`, and
/// as `m20261201_000001_cqrs_outbox_headers_<table>` for another. Code of this release reads
/// and writes the column, so run it before the new code writes to an old outbox (or call
/// [`Outbox::create_table`](crate::Outbox::create_table), which adds it too).
#[derive(Debug, Clone)]
pub struct AddOutboxHeaders {
    table: String,
    name: String,
}

impl Default for AddOutboxHeaders {
    fn default() -> Self {
        Self::new("cqrs_outbox")
    }
}

impl AddOutboxHeaders {
    /// The migration of the outbox kept in `table`.
    #[must_use]
    pub fn new(table: impl Into<String>) -> Self {
        let table = table.into();
        Self {
            name: name(OUTBOX_HEADERS, "cqrs_outbox", &table),
            table,
        }
    }

    /// The outbox table's name.
    #[must_use]
    pub fn table(&self) -> &str {
        &self.table
    }
}

impl MigrationName for AddOutboxHeaders {
    fn name(&self) -> &str {
        &self.name
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddOutboxHeaders {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let d = dialect(manager)?;
        if !manager.has_column(&self.table, "headers").await? {
            manager
                .get_connection()
                .execute_unprepared(&outbox::add_headers_statement(d, &self.table))
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The column goes with the table when `CreateOutbox` is rolled back first.
        if manager.has_table(&self.table).await?
            && manager.has_column(&self.table, "headers").await?
        {
            let d = dialect(manager)?;
            let sql = format!("ALTER TABLE {} DROP COLUMN headers", d.ident(&self.table));
            manager.get_connection().execute_unprepared(&sql).await?;
        }
        Ok(())
    }
}

/// The recorded name of a migration of `table`: `base` for the default table, else
/// `base_<table>`.
fn name(base: &str, default_table: &str, table: &str) -> String {
    if table == default_table {
        base.to_owned()
    } else {
        format!("{base}_{table}")
    }
}

fn dialect(manager: &SchemaManager) -> Result<Dialect, DbErr> {
    Dialect::of(manager.get_database_backend()).map_err(|e| DbErr::Migration(e.to_string()))
}

async fn drop_table(manager: &SchemaManager<'_>, d: Dialect, table: &str) -> Result<(), DbErr> {
    let sql = format!("DROP TABLE IF EXISTS {}", d.ident(table));
    manager.get_connection().execute_unprepared(&sql).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_follow_the_table() {
        assert_eq!(
            CreateOutbox::default().name(),
            "m20261130_000001_cqrs_outbox"
        );
        assert_eq!(
            CreateTombstones::default().name(),
            "m20261130_000002_cqrs_tombstones"
        );
        assert_eq!(
            CreateOutbox::new("cqrs_outbox").name(),
            CreateOutbox::default().name()
        );
        assert_eq!(
            CreateOutbox::new("orders_outbox").name(),
            "m20261130_000001_cqrs_outbox_orders_outbox"
        );
        assert_eq!(
            CreateTombstones::new("tomb").name(),
            "m20261130_000002_cqrs_tombstones_tomb"
        );
        assert_eq!(CreateTombstones::new("tomb").table(), "tomb");
        assert_eq!(
            AddOutboxHeaders::default().name(),
            "m20261201_000001_cqrs_outbox_headers"
        );
        assert_eq!(
            AddOutboxHeaders::new("orders_outbox").name(),
            "m20261201_000001_cqrs_outbox_headers_orders_outbox"
        );
    }
}
