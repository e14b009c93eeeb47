//! [`Tombstones`]: the revisions of deleted rows, for replicas that must not let a stale SAVE
//! bring a deleted row back (opt-in; django-cqrs keeps none).

use std::collections::HashMap;

use cqrs_actors::Result;
use sea_orm::{ConnectionTrait, DatabaseTransaction, Value};

use crate::db_error;
use crate::sql::{Dialect, Query};

/// A tombstone table shared by the replica tables of one database: `(table_name, pk)` →
/// revision of the last DELETE.
#[derive(Debug, Clone)]
pub struct Tombstones {
    table: String,
}

impl Default for Tombstones {
    fn default() -> Self {
        Self::new("cqrs_tombstones")
    }
}

impl Tombstones {
    /// Tombstones kept in `table`.
    #[must_use]
    pub fn new(table: impl Into<String>) -> Self {
        Self {
            table: table.into(),
        }
    }

    /// The table's name.
    #[must_use]
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table if it does not exist (the migration, for services that do not manage
    /// their schema otherwise; feature `migration` has it as a SeaORM migration).
    pub async fn create_table(&self, db: &impl ConnectionTrait) -> Result<()> {
        let d = Dialect::of(db.get_database_backend())?;
        db.execute_unprepared(&create_statement(d, &self.table))
            .await
            .map_err(|e| db_error("creating the tombstone table", e))?;
        Ok(())
    }

    pub(crate) async fn load(
        &self,
        txn: &DatabaseTransaction,
        table: &str,
        keys: &[&str],
    ) -> Result<HashMap<String, i64>> {
        let d = Dialect::of(txn.get_database_backend())?;
        let mut out = HashMap::new();
        for chunk in keys.chunks(d.max_values() - 1) {
            let mut q = Query::new(d);
            q.push("SELECT pk, revision FROM ")
                .ident(&self.table)
                .push(" WHERE table_name = ")
                .value(Value::from(table))
                .push(" AND pk IN ")
                .value_list(chunk.iter().map(|k| Value::from(*k)));
            let rows = txn
                .query_all_raw(q.build())
                .await
                .map_err(|e| db_error("reading tombstones", e))?;
            for row in rows {
                let pk: String = row
                    .try_get_by_index(0)
                    .map_err(|e| db_error("reading tombstones", e))?;
                let revision: i64 = row
                    .try_get_by_index(1)
                    .map_err(|e| db_error("reading tombstones", e))?;
                out.insert(pk, revision);
            }
        }
        Ok(out)
    }

    pub(crate) async fn store(
        &self,
        txn: &DatabaseTransaction,
        table: &str,
        dead: &[(&str, i64)],
    ) -> Result<()> {
        if dead.is_empty() {
            return Ok(());
        }
        let d = Dialect::of(txn.get_database_backend())?;
        for chunk in dead.chunks(d.max_values() / 3) {
            let mut q = Query::new(d);
            q.push("INSERT INTO ")
                .ident(&self.table)
                .push(" (table_name, pk, revision) VALUES ");
            for (n, (key, revision)) in chunk.iter().enumerate() {
                if n > 0 {
                    q.push(", ");
                }
                q.value_list([
                    Value::from(table),
                    Value::from(*key),
                    Value::from(*revision),
                ]);
            }
            let t = d.ident(&self.table);
            let pg = format!(
                " ON CONFLICT (table_name, pk) DO UPDATE SET revision = \
                 GREATEST({t}.revision, excluded.revision)"
            );
            q.push(match d {
                Dialect::MySql => {
                    " ON DUPLICATE KEY UPDATE revision = GREATEST(revision, VALUES(revision))"
                }
                Dialect::Postgres => &pg,
                Dialect::Sqlite => {
                    " ON CONFLICT (table_name, pk) DO UPDATE SET revision = \
                     MAX(revision, excluded.revision)"
                }
            });
            txn.execute_raw(q.build())
                .await
                .map_err(|e| db_error("writing tombstones", e))?;
        }
        Ok(())
    }
}

/// The statement that creates the tombstone table.
pub(crate) fn create_statement(d: Dialect, table: &str) -> String {
    let t = d.ident(table);
    format!(
        "CREATE TABLE IF NOT EXISTS {t} (table_name VARCHAR(191) NOT NULL, \
         pk VARCHAR(191) NOT NULL, revision BIGINT NOT NULL, \
         PRIMARY KEY (table_name, pk))"
    )
}
