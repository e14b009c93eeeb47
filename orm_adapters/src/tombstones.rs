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

    /// Locks `keys` of `table` until `txn` ends, before anything about them is read: every
    /// replica transaction with tombstones takes the same locks, so two processes applying
    /// events of one row (a DELETE of a row not there yet and its SAVE, on competing
    /// consumers) run one after the other, and the second sees the first's row or tombstone.
    /// Without it, a SAVE that read no tombstone could insert the row after a concurrent
    /// DELETE found nothing to delete and stored its tombstone, bringing the row back.
    ///
    /// PostgreSQL: transaction-scoped advisory locks, in one order. MySQL/MariaDB: the keys'
    /// rows in the tombstone table, written with revision -1 when they have none (no lock on
    /// a missing row holds there otherwise). SQLite: nothing, it has one writer at a time.
    pub(crate) async fn lock(
        &self,
        txn: &DatabaseTransaction,
        table: &str,
        keys: &[&str],
    ) -> Result<()> {
        match Dialect::of(txn.get_database_backend())? {
            Dialect::Postgres => {
                let mut ids: Vec<i64> = keys.iter().map(|k| lock_id(table, k)).collect();
                ids.sort_unstable();
                ids.dedup();
                for chunk in ids.chunks(10_000) {
                    let mut sql =
                        String::from("SELECT pg_advisory_xact_lock(h) FROM unnest(ARRAY[");
                    for (n, id) in chunk.iter().enumerate() {
                        if n > 0 {
                            sql.push(',');
                        }
                        sql.push_str(&id.to_string());
                    }
                    sql.push_str("]::BIGINT[]) WITH ORDINALITY AS t(h, i) ORDER BY i");
                    txn.query_all_raw(sea_orm::Statement::from_string(
                        sea_orm::DbBackend::Postgres,
                        sql,
                    ))
                    .await
                    .map_err(|e| db_error("locking the keys", e))?;
                }
                Ok(())
            }
            Dialect::MySql => {
                let mut sorted = keys.to_vec();
                sorted.sort_unstable();
                sorted.dedup();
                let placeholders: Vec<(&str, i64)> = sorted.into_iter().map(|k| (k, -1)).collect();
                self.store(txn, table, &placeholders).await
            }
            Dialect::Sqlite => Ok(()),
        }
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
                .value_list(chunk.iter().map(|k| Value::from(*k)))
                // Revision -1: a lock of `lock`, not a delete.
                .push(" AND revision >= 0");
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

/// The advisory lock of a key: FNV-1a over the table's name and the key, the same in every
/// process.
fn lock_id(table: &str, key: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in table.bytes().chain([0]).chain(key.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
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
