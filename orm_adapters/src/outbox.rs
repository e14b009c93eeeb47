//! [`Outbox`]: events written in the same transaction as the rows they describe, relayed to the
//! broker by the [`OutboxRelay`](crate::OutboxRelay) and deleted once confirmed.

use std::fmt;
use std::sync::Arc;

use cqrs_actors::{Codec, Envelope, Error, ErrorKind, Result, Route};
use sea_orm::{ConnectionTrait, Value};
use tokio::sync::Notify;

use crate::db_error;
use crate::sql::{Dialect, Query};

/// The outbox table (default `cqrs_outbox`) and its lease table (`<name>_lease`), plus the
/// in-process signal that wakes the relay when a writer commits.
///
/// Clones share the signal: give the relay and the [`MasterTable`](crate::MasterTable)s
/// clones of one value.
#[derive(Clone)]
pub struct Outbox {
    table: String,
    lease_table: String,
    wake: Arc<Notify>,
}

impl fmt::Debug for Outbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox")
            .field("table", &self.table)
            .finish()
    }
}

impl Default for Outbox {
    fn default() -> Self {
        Self::new("cqrs_outbox")
    }
}

/// One stored event, waiting to be relayed.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    /// Its position in the outbox.
    pub id: i64,
    /// The message.
    pub envelope: Envelope,
    /// Broadcast, or one replica queue.
    pub route: Route,
}

impl Outbox {
    /// An outbox kept in `table`.
    #[must_use]
    pub fn new(table: impl Into<String>) -> Self {
        let table = table.into();
        Self {
            lease_table: format!("{table}_lease"),
            table,
            wake: Arc::new(Notify::new()),
        }
    }

    /// The table's name.
    #[must_use]
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the outbox and lease tables if they do not exist (the migration, for services
    /// that do not manage their schema otherwise).
    pub async fn create_table(&self, db: &impl ConnectionTrait) -> Result<()> {
        let d = Dialect::of(db.get_database_backend())?;
        let (id, body) = match d {
            Dialect::Postgres => ("BIGSERIAL PRIMARY KEY", "TEXT"),
            Dialect::MySql => ("BIGINT AUTO_INCREMENT PRIMARY KEY", "MEDIUMTEXT"),
            Dialect::Sqlite => ("INTEGER PRIMARY KEY AUTOINCREMENT", "TEXT"),
        };
        let t = d.ident(&self.table);
        let l = d.ident(&self.lease_table);
        for sql in [
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (id {id}, cqrs_id VARCHAR(191) NOT NULL, \
                 queue VARCHAR(191) NULL, body {body} NOT NULL)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {l} (name VARCHAR(191) PRIMARY KEY, \
                 owner VARCHAR(191) NOT NULL, expires_at BIGINT NOT NULL)"
            ),
        ] {
            db.execute_unprepared(&sql)
                .await
                .map_err(|e| db_error("creating the outbox", e))?;
        }
        Ok(())
    }

    /// Wakes the relay: call it after committing a transaction of your own in which
    /// [`MasterTable`](crate::MasterTable) wrote events (its own transactions wake it already).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }

    /// Stores events inside the caller's transaction, in order.
    pub(crate) async fn write(
        &self,
        db: &impl ConnectionTrait,
        events: &[(Envelope, Route)],
    ) -> Result<()> {
        let d = Dialect::of(db.get_database_backend())?;
        for chunk in events.chunks(d.max_values() / 3) {
            let mut q = Query::new(d);
            q.push("INSERT INTO ")
                .ident(&self.table)
                .push(" (cqrs_id, queue, body) VALUES ");
            for (n, (envelope, route)) in chunk.iter().enumerate() {
                let body = Codec::Json.encode(envelope)?;
                let body = String::from_utf8(body)
                    .map_err(|e| Error::with_source(ErrorKind::Decode, "JSON body", e))?;
                let queue = match route {
                    Route::Queue { queue, .. } => Some(queue.clone()),
                    Route::Broadcast { .. } => None,
                };
                if n > 0 {
                    q.push(", ");
                }
                q.value_list([
                    Value::from(envelope.cqrs_id.as_str()),
                    Value::String(queue),
                    Value::from(body),
                ]);
            }
            db.execute_raw(q.build())
                .await
                .map_err(|e| db_error("writing the outbox", e))?;
        }
        Ok(())
    }

    /// Up to `limit` waiting events with an id above `after`, in the order they are relayed.
    pub async fn read(
        &self,
        db: &impl ConnectionTrait,
        after: i64,
        limit: usize,
    ) -> Result<Vec<OutboxEvent>> {
        let d = Dialect::of(db.get_database_backend())?;
        let mut q = Query::new(d);
        q.push("SELECT id, queue, body FROM ")
            .ident(&self.table)
            .push(" WHERE id > ")
            .value(Value::from(after))
            .push(&format!(" ORDER BY id LIMIT {limit}"));
        let rows = db
            .query_all_raw(q.build())
            .await
            .map_err(|e| db_error("reading the outbox", e))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let get = |e| db_error("reading the outbox", e);
            let id: i64 = row.try_get_by_index(0).map_err(get)?;
            let queue: Option<String> = row.try_get_by_index(1).map_err(get)?;
            let body: String = row.try_get_by_index(2).map_err(get)?;
            let envelope = Codec::Json.decode(body.as_bytes(), None).map_err(|e| {
                Error::with_source(ErrorKind::Decode, format!("outbox row {id}"), e)
            })?;
            let route = match queue {
                Some(queue) => Route::queue(queue, envelope.cqrs_id.clone()),
                None => Route::broadcast(envelope.cqrs_id.clone()),
            };
            out.push(OutboxEvent {
                id,
                envelope,
                route,
            });
        }
        Ok(out)
    }

    /// Deletes relayed events.
    pub(crate) async fn delete(&self, db: &impl ConnectionTrait, ids: &[i64]) -> Result<()> {
        let d = Dialect::of(db.get_database_backend())?;
        for chunk in ids.chunks(d.max_values()) {
            let mut q = Query::new(d);
            q.push("DELETE FROM ")
                .ident(&self.table)
                .push(" WHERE id IN ")
                .value_list(chunk.iter().map(|&id| Value::from(id)));
            db.execute_raw(q.build())
                .await
                .map_err(|e| db_error("deleting relayed outbox rows", e))?;
        }
        Ok(())
    }

    /// Number of events waiting.
    pub async fn pending(&self, db: &impl ConnectionTrait) -> Result<u64> {
        let d = Dialect::of(db.get_database_backend())?;
        let mut q = Query::new(d);
        q.push("SELECT COUNT(*) FROM ").ident(&self.table);
        let row = db
            .query_one_raw(q.build())
            .await
            .map_err(|e| db_error("counting the outbox", e))?;
        let n: i64 = match row {
            Some(row) => row
                .try_get_by_index(0)
                .map_err(|e| db_error("counting the outbox", e))?,
            None => 0,
        };
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Takes or renews the relay lease for `owner` until `now_ms + ttl_ms`. Only the holder
    /// relays; another process takes over once the lease has expired.
    pub(crate) async fn lease(
        &self,
        db: &impl ConnectionTrait,
        owner: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool> {
        let d = Dialect::of(db.get_database_backend())?;
        let take = || {
            let mut q = Query::new(d);
            q.push("UPDATE ")
                .ident(&self.lease_table)
                .push(" SET owner = ")
                .value(Value::from(owner))
                .push(", expires_at = ")
                .value(Value::from(now_ms + ttl_ms))
                .push(" WHERE name = ")
                .value(Value::from(self.table.as_str()))
                .push(" AND (owner = ")
                .value(Value::from(owner))
                .push(" OR expires_at < ")
                .value(Value::from(now_ms))
                .push(")");
            q.build()
        };
        let fail = |e| db_error("taking the outbox lease", e);
        if db.execute_raw(take()).await.map_err(fail)?.rows_affected() == 1 {
            return Ok(true);
        }
        // No row matched: either another relay holds the lease, or the lease row does not
        // exist yet. Create it (a no-op when it exists) and try once more.
        let mut q = Query::new(d);
        q.push(match d {
            Dialect::MySql => "INSERT IGNORE INTO ",
            Dialect::Postgres | Dialect::Sqlite => "INSERT INTO ",
        })
        .ident(&self.lease_table)
        .push(" (name, owner, expires_at) VALUES ")
        .value_list([
            Value::from(self.table.as_str()),
            Value::from(owner),
            Value::from(0i64),
        ]);
        if d != Dialect::MySql {
            q.push(" ON CONFLICT (name) DO NOTHING");
        }
        db.execute_raw(q.build()).await.map_err(fail)?;
        Ok(db.execute_raw(take()).await.map_err(fail)?.rows_affected() == 1)
    }

    /// Gives the lease up, so another process can take over at once.
    pub(crate) async fn release(&self, db: &impl ConnectionTrait, owner: &str) -> Result<()> {
        let d = Dialect::of(db.get_database_backend())?;
        let mut q = Query::new(d);
        q.push("UPDATE ")
            .ident(&self.lease_table)
            .push(" SET expires_at = 0 WHERE name = ")
            .value(Value::from(self.table.as_str()))
            .push(" AND owner = ")
            .value(Value::from(owner));
        db.execute_raw(q.build())
            .await
            .map_err(|e| db_error("releasing the outbox lease", e))?;
        Ok(())
    }
}
