//! [`Outbox`]: events written in the same transaction as the rows they describe, encoded once,
//! relayed to the broker by the system that registered the tables writing them, and deleted
//! once confirmed.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use cqrs_actors::transport::Headers;
use cqrs_actors::{EncodedEvent, OutboxStore, Result, Route, StoredEvent};
use futures_util::future::BoxFuture;
use sea_orm::{ConnectionTrait, DatabaseConnection, Value};
use tokio::sync::Notify;

use crate::db_error;
use crate::sql::{Dialect, Query};

/// The outbox table (default `cqrs_outbox`) and its lease table (`<name>_lease`) on one
/// database, plus the in-process signal that wakes the relay when a writer commits.
///
/// Give clones of one value to the [`MasterTable`](crate::MasterTable)s that write to it: the
/// system relays each distinct outbox once, with the CQRS ids of the tables registered with it.
///
/// | column | type | holds |
/// |---|---|---|
/// | `id` | big integer, auto-increment | relay order |
/// | `cqrs_id` | `VARCHAR(191)` | the CQRS id |
/// | `queue` | `VARCHAR(191) NULL` | the replica queue of a directed SYNC, else NULL |
/// | `content_type` | `VARCHAR(64)` | `text/plain` (JSON) or `application/msgpack` |
/// | `expires_at` | `BIGINT NULL` | the envelope's `expires`, in Unix milliseconds |
/// | `body` | `BYTEA` / `LONGBLOB` / `BLOB` | the message body as published |
/// | `headers` | `TEXT NULL` | headers published with it, a JSON object of strings (the W3C trace context of the write, feature `otel`), else NULL |
///
/// `headers` came after the first release: [`create_table`](Self::create_table) adds it to an
/// outbox made before, and so does the migration
/// `migration::AddOutboxHeaders` (feature `migration`).
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Store>,
}

struct Store {
    db: DatabaseConnection,
    table: String,
    lease_table: String,
    wake: Arc<Notify>,
    /// Events this process committed and has not deleted yet, by id: the relay reads their
    /// ids from the table (its order, and other writers' rows) and takes the bodies from here.
    fresh: Mutex<BTreeMap<i64, EncodedEvent>>,
}

/// Most events kept in memory for the relay; beyond it the oldest are read from the table.
const FRESH_MAX: usize = 20_000;

impl fmt::Debug for Outbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox")
            .field("table", &self.inner.table)
            .finish()
    }
}

impl Outbox {
    /// The outbox `cqrs_outbox` on `db`.
    #[must_use]
    pub fn new(db: DatabaseConnection) -> Self {
        Self::with_table(db, "cqrs_outbox")
    }

    /// An outbox kept in `table` on `db`.
    #[must_use]
    pub fn with_table(db: DatabaseConnection, table: impl Into<String>) -> Self {
        let table = table.into();
        Self {
            inner: Arc::new(Store {
                db,
                lease_table: lease_table(&table),
                table,
                wake: Arc::new(Notify::new()),
                fresh: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// The table's name.
    #[must_use]
    pub fn table(&self) -> &str {
        &self.inner.table
    }

    /// The port the system relays (the same value for every clone of this outbox).
    #[must_use]
    pub fn store(&self) -> Arc<dyn OutboxStore> {
        Arc::clone(&self.inner) as Arc<dyn OutboxStore>
    }

    /// Creates the outbox and lease tables if they do not exist, and adds the `headers`
    /// column to an outbox made before it existed (the migration, for services that do not
    /// manage their schema otherwise; feature `migration` has it as SeaORM migrations).
    pub async fn create_table(&self) -> Result<()> {
        let db = &self.inner.db;
        let d = Dialect::of(db.get_database_backend())?;
        for sql in create_statements(d, &self.inner.table, &self.inner.lease_table) {
            db.execute_unprepared(&sql)
                .await
                .map_err(|e| db_error("creating the outbox", e))?;
        }
        // Asking for the column is the one check all three databases answer alike (no
        // `ADD COLUMN IF NOT EXISTS` in MySQL or SQLite, a different catalogue in each).
        if db
            .execute_unprepared(&headers_probe(d, &self.inner.table))
            .await
            .is_err()
        {
            db.execute_unprepared(&add_headers_statement(d, &self.inner.table))
                .await
                .map_err(|e| db_error("adding the headers column to the outbox", e))?;
        }
        Ok(())
    }

    /// Wakes the relay: call it after committing a transaction of your own in which
    /// [`MasterTable`](crate::MasterTable) wrote events (its own transactions wake it already;
    /// otherwise the relay finds them at its next poll, `master.outbox_poll_interval`).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Number of events waiting, of every CQRS id.
    pub async fn pending(&self) -> Result<u64> {
        Ok(self.inner.count().await?.values().sum())
    }

    /// Up to `limit` waiting events with an id above `after`, whatever their CQRS id, in relay
    /// order.
    pub async fn read(&self, after: i64, limit: usize) -> Result<Vec<StoredEvent>> {
        self.inner.select(after, limit).await
    }

    /// Stores events inside the caller's transaction, in order. Returns their ids where the
    /// database tells them (`RETURNING`: PostgreSQL, SQLite), in the events' order.
    pub(crate) async fn write(
        &self,
        db: &impl ConnectionTrait,
        events: &[EncodedEvent],
    ) -> Result<Option<Vec<i64>>> {
        let d = Dialect::of(db.get_database_backend())?;
        let returning = d != Dialect::MySql;
        let mut ids = Vec::with_capacity(if returning { events.len() } else { 0 });
        for chunk in events.chunks(d.max_values() / 6) {
            let mut q = Query::new(d);
            q.push("INSERT INTO ")
                .ident(&self.inner.table)
                .push(" (cqrs_id, queue, content_type, expires_at, body, headers) VALUES ");
            for (n, event) in chunk.iter().enumerate() {
                let queue = match &event.route {
                    Route::Queue { queue, .. } => Some(queue.clone()),
                    Route::Broadcast { .. } => None,
                };
                if n > 0 {
                    q.push(", ");
                }
                q.value_list([
                    Value::from(event.cqrs_id()),
                    Value::String(queue),
                    Value::from(event.content_type.as_str()),
                    Value::BigInt(event.expires.map(|t| t.timestamp_millis())),
                    Value::Bytes(Some(event.body.clone())),
                    Value::String(headers_text(&event.headers)),
                ]);
            }
            let fail = |e| db_error("writing the outbox", e);
            if returning {
                q.push(" RETURNING id");
                let rows = db.query_all_raw(q.build()).await.map_err(fail)?;
                let mut chunk_ids = rows
                    .iter()
                    .map(|row| row.try_get_by_index::<i64>(0).map_err(fail))
                    .collect::<Result<Vec<i64>>>()?;
                // The ids are handed out in the order of the VALUES rows; RETURNING need not
                // list them in that order.
                chunk_ids.sort_unstable();
                ids.extend(chunk_ids);
            } else {
                db.execute_raw(q.build()).await.map_err(fail)?;
            }
        }
        Ok((returning && ids.len() == events.len()).then_some(ids))
    }

    /// Hands committed events to the relay of this process, so that it need not read their
    /// bodies back from the table.
    pub(crate) fn committed(&self, ids: Vec<i64>, events: Vec<EncodedEvent>) {
        let mut fresh = self.inner.fresh();
        fresh.extend(ids.into_iter().zip(events));
        while fresh.len() > FRESH_MAX {
            fresh.pop_first();
        }
    }
}

/// The name of the lease table of the outbox `table`.
pub(crate) fn lease_table(table: &str) -> String {
    format!("{table}_lease")
}

/// A statement that fails when the outbox `table` has no `headers` column.
pub(crate) fn headers_probe(d: Dialect, table: &str) -> String {
    format!("SELECT headers FROM {} WHERE 1 = 0", d.ident(table))
}

/// The statement that adds the `headers` column to an outbox made before it existed.
pub(crate) fn add_headers_statement(d: Dialect, table: &str) -> String {
    format!(
        "ALTER TABLE {} ADD COLUMN headers TEXT NULL",
        d.ident(table)
    )
}

/// Headers as the `headers` column holds them: NULL when there are none.
fn headers_text(headers: &Headers) -> Option<String> {
    if headers.is_empty() {
        return None;
    }
    serde_json::to_string(headers).ok()
}

/// The `headers` column read back. Text that is not a JSON object of strings (written by
/// hand?) gives no headers: the event is still published, without them.
fn headers_from(text: Option<String>) -> Headers {
    let Some(text) = text else {
        return Headers::new();
    };
    serde_json::from_str(&text).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "outbox headers are not a JSON object of strings; publishing without them");
        Headers::new()
    })
}

/// The statements that create the outbox and its lease table.
pub(crate) fn create_statements(d: Dialect, table: &str, lease_table: &str) -> [String; 2] {
    let (id, body) = match d {
        Dialect::Postgres => ("BIGSERIAL PRIMARY KEY", "BYTEA"),
        Dialect::MySql => ("BIGINT AUTO_INCREMENT PRIMARY KEY", "LONGBLOB"),
        Dialect::Sqlite => ("INTEGER PRIMARY KEY AUTOINCREMENT", "BLOB"),
    };
    let (t, l) = (d.ident(table), d.ident(lease_table));
    [
        format!(
            "CREATE TABLE IF NOT EXISTS {t} (id {id}, cqrs_id VARCHAR(191) NOT NULL, \
             queue VARCHAR(191) NULL, content_type VARCHAR(64) NOT NULL, \
             expires_at BIGINT NULL, body {body} NOT NULL, headers TEXT NULL)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {l} (name VARCHAR(191) PRIMARY KEY, \
             owner VARCHAR(191) NOT NULL, expires_at BIGINT NOT NULL)"
        ),
    ]
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

impl Store {
    fn dialect(&self) -> Result<Dialect> {
        Dialect::of(self.db.get_database_backend())
    }

    fn fresh(&self) -> std::sync::MutexGuard<'_, BTreeMap<i64, EncodedEvent>> {
        self.fresh.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The relay's read: the ids in the table's order, the bodies from memory where this
    /// process committed them, from the table otherwise.
    ///
    /// The SQL is a plain range of the primary key (`id > after ORDER BY id LIMIT n`) and rows
    /// of other CQRS ids are left out here, not in the query: with `cqrs_id IN (...)` in it,
    /// PostgreSQL estimates that filter from statistics taken while the table was small and,
    /// once a backlog of a million rows has built up (a broker outage), scans the whole table
    /// for every page (350 ms a page measured), just when the relay has the most to catch up.
    /// Rows of other ids only move the cursor on; the answer is still the first `limit`
    /// events of our ids after `after`.
    async fn next(
        &self,
        after: i64,
        limit: usize,
        cqrs_ids: &[String],
    ) -> Result<Vec<StoredEvent>> {
        if cqrs_ids.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let ours = |cqrs_id: &str| cqrs_ids.iter().any(|c| c == cqrs_id);
        let mut out = Vec::new();
        let mut cursor = after;
        loop {
            // At least a hundred rows a query, so that `limit = 1` (the flush's probe) does
            // not walk past other ids one row at a time. Events past `limit` are dropped: the
            // relay's cursor is the last event it was given.
            let size = (limit - out.len()).max(100);
            let page = if self.fresh().is_empty() {
                let rows = self.select(cursor, size).await?;
                let last = rows.last().map(|e| e.id);
                let n = rows.len();
                let own = rows
                    .into_iter()
                    .filter(|e| ours(e.event.cqrs_id()))
                    .collect();
                Some((n, last, own))
            } else {
                // None: rows were deleted between the two queries (the relay deleting while
                // a flush reads); read again rather than answer with a gap.
                self.next_fresh(cursor, size, cqrs_ids).await?
            };
            let Some((n, last, own)) = page else { continue };
            let room = limit - out.len();
            out.extend(own.into_iter().take(room));
            match last {
                Some(last) if out.len() < limit && n == size => cursor = last,
                _ => return Ok(out),
            }
        }
    }

    /// One page of `limit` rows from `after`: its length, its last id and the events of our
    /// CQRS ids, bodies from memory where this process committed them.
    async fn next_fresh(
        &self,
        after: i64,
        limit: usize,
        cqrs_ids: &[String],
    ) -> Result<Option<(usize, Option<i64>, Vec<StoredEvent>)>> {
        let d = self.dialect()?;
        let mut q = Query::new(d);
        q.push("SELECT id, cqrs_id FROM ")
            .ident(&self.table)
            .push(" WHERE id > ")
            .value(Value::from(after))
            .push(&format!(" ORDER BY id LIMIT {limit}"));
        let fail = |e| db_error("reading the outbox", e);
        let rows = self.db.query_all_raw(q.build()).await.map_err(fail)?;
        let mut ids = Vec::with_capacity(rows.len());
        let mut last = None;
        for row in &rows {
            let id = row.try_get_by_index::<i64>(0).map_err(fail)?;
            let cqrs_id = row.try_get_by_index::<String>(1).map_err(fail)?;
            last = Some(id);
            if cqrs_ids.contains(&cqrs_id) {
                ids.push(id);
            }
        }
        let mut out: Vec<StoredEvent> = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        {
            let fresh = self.fresh();
            for &id in &ids {
                match fresh.get(&id) {
                    Some(event) => out.push(StoredEvent {
                        id,
                        event: event.clone(),
                    }),
                    None => missing.push(id),
                }
            }
        }
        if !missing.is_empty() {
            let found = self.select_ids(&missing).await?;
            if found.len() < missing.len() {
                return Ok(None);
            }
            out.extend(found);
            out.sort_unstable_by_key(|e| e.id);
        }
        Ok(Some((rows.len(), last, out)))
    }

    /// The events with these ids.
    async fn select_ids(&self, ids: &[i64]) -> Result<Vec<StoredEvent>> {
        let d = self.dialect()?;
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(d.max_values()) {
            let mut q = Query::new(d);
            q.push("SELECT id, cqrs_id, queue, content_type, expires_at, body, headers FROM ")
                .ident(&self.table)
                .push(" WHERE id IN ")
                .value_list(chunk.iter().map(|&id| Value::from(id)));
            out.extend(self.events(q).await?);
        }
        Ok(out)
    }

    /// Up to `limit` events after `after`, of every CQRS id, in id order.
    async fn select(&self, after: i64, limit: usize) -> Result<Vec<StoredEvent>> {
        let d = self.dialect()?;
        let mut q = Query::new(d);
        q.push("SELECT id, cqrs_id, queue, content_type, expires_at, body, headers FROM ")
            .ident(&self.table)
            .push(" WHERE id > ")
            .value(Value::from(after))
            .push(&format!(" ORDER BY id LIMIT {limit}"));
        self.events(q).await
    }

    /// Runs a query of `id, cqrs_id, queue, content_type, expires_at, body, headers`.
    async fn events(&self, q: Query) -> Result<Vec<StoredEvent>> {
        let rows = self
            .db
            .query_all_raw(q.build())
            .await
            .map_err(|e| db_error("reading the outbox", e))?;
        let mut out = Vec::with_capacity(rows.len());
        let get = |e| db_error("reading the outbox", e);
        for row in rows {
            let id: i64 = row.try_get_by_index(0).map_err(get)?;
            let cqrs_id: String = row.try_get_by_index(1).map_err(get)?;
            let queue: Option<String> = row.try_get_by_index(2).map_err(get)?;
            let content_type: String = row.try_get_by_index(3).map_err(get)?;
            let expires_at: Option<i64> = row.try_get_by_index(4).map_err(get)?;
            let body: Vec<u8> = row.try_get_by_index(5).map_err(get)?;
            let headers: Option<String> = row.try_get_by_index(6).map_err(get)?;
            let route = match queue {
                Some(queue) => Route::queue(queue, cqrs_id),
                None => Route::broadcast(cqrs_id),
            };
            out.push(StoredEvent {
                id,
                event: EncodedEvent {
                    route,
                    body,
                    content_type,
                    expires: expires_at.and_then(DateTime::from_timestamp_millis),
                    headers: headers_from(headers),
                },
            });
        }
        Ok(out)
    }

    async fn count(&self) -> Result<BTreeMap<String, u64>> {
        let d = self.dialect()?;
        let mut q = Query::new(d);
        q.push("SELECT cqrs_id, COUNT(*) FROM ")
            .ident(&self.table)
            .push(" GROUP BY cqrs_id");
        let rows = self
            .db
            .query_all_raw(q.build())
            .await
            .map_err(|e| db_error("counting the outbox", e))?;
        let get = |e| db_error("counting the outbox", e);
        let mut out = BTreeMap::new();
        for row in rows {
            let id: String = row.try_get_by_index(0).map_err(get)?;
            let n: i64 = row.try_get_by_index(1).map_err(get)?;
            out.insert(id, u64::try_from(n).unwrap_or(0));
        }
        Ok(out)
    }

    async fn take_lease(&self, owner: &str, ttl: Duration) -> Result<bool> {
        let d = self.dialect()?;
        let now = now_ms();
        let ttl = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
        let take = || {
            let mut q = Query::new(d);
            q.push("UPDATE ")
                .ident(&self.lease_table)
                .push(" SET owner = ")
                .value(Value::from(owner))
                .push(", expires_at = ")
                .value(Value::from(now.saturating_add(ttl)))
                .push(" WHERE name = ")
                .value(Value::from(self.table.as_str()))
                .push(" AND (owner = ")
                .value(Value::from(owner))
                .push(" OR expires_at < ")
                .value(Value::from(now))
                .push(")");
            q.build()
        };
        let fail = |e| db_error("taking the outbox lease", e);
        if self
            .db
            .execute_raw(take())
            .await
            .map_err(fail)?
            .rows_affected()
            == 1
        {
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
        self.db.execute_raw(q.build()).await.map_err(fail)?;
        Ok(self
            .db
            .execute_raw(take())
            .await
            .map_err(fail)?
            .rows_affected()
            == 1)
    }

    async fn give_up_lease(&self, owner: &str) -> Result<()> {
        let mut q = Query::new(self.dialect()?);
        q.push("UPDATE ")
            .ident(&self.lease_table)
            .push(" SET expires_at = 0 WHERE name = ")
            .value(Value::from(self.table.as_str()))
            .push(" AND owner = ")
            .value(Value::from(owner));
        self.db
            .execute_raw(q.build())
            .await
            .map_err(|e| db_error("releasing the outbox lease", e))?;
        Ok(())
    }

    async fn remove(&self, ids: &[i64]) -> Result<()> {
        let d = self.dialect()?;
        if d == Dialect::Postgres {
            self.remove_unsynced(ids).await?;
        } else {
            self.remove_each(d, ids).await?;
        }
        // Dropped from memory once gone from the table, so that a reader never finds an id
        // in the table whose body is in neither.
        let mut fresh = self.fresh();
        if !fresh.is_empty() {
            for id in ids {
                fresh.remove(id);
            }
        }
        Ok(())
    }

    /// PostgreSQL: one statement of integers, committed without waiting for the disk. The
    /// events were confirmed by the broker already; should the server lose this commit in a
    /// crash, the rows come back and are relayed again, as after a relay that stops between
    /// the confirm and the delete, and replicas drop the copies by their revision. The next
    /// durable commit on the server (any master write) makes it durable too.
    async fn remove_unsynced(&self, ids: &[i64]) -> Result<()> {
        use std::fmt::Write as _;
        if ids.is_empty() {
            return Ok(());
        }
        let mut sql = String::with_capacity(80 + ids.len() * 8);
        sql.push_str("SET LOCAL synchronous_commit = off; DELETE FROM ");
        sql.push_str(&Dialect::Postgres.ident(&self.table));
        sql.push_str(" WHERE id = ANY('{");
        for (n, id) in ids.iter().enumerate() {
            if n > 0 {
                sql.push(',');
            }
            let _ = write!(sql, "{id}");
        }
        sql.push_str("}'::int8[])");
        self.db
            .execute_unprepared(&sql)
            .await
            .map_err(|e| db_error("deleting relayed outbox rows", e))?;
        Ok(())
    }

    async fn remove_each(&self, d: Dialect, ids: &[i64]) -> Result<()> {
        for chunk in ids.chunks(d.max_values()) {
            let mut q = Query::new(d);
            q.push("DELETE FROM ")
                .ident(&self.table)
                .push(" WHERE id IN ")
                .value_list(chunk.iter().map(|&id| Value::from(id)));
            self.db
                .execute_raw(q.build())
                .await
                .map_err(|e| db_error("deleting relayed outbox rows", e))?;
        }
        Ok(())
    }

    async fn newest(&self) -> Result<Option<i64>> {
        let mut q = Query::new(self.dialect()?);
        q.push("SELECT MAX(id) FROM ").ident(&self.table);
        let row = self
            .db
            .query_one_raw(q.build())
            .await
            .map_err(|e| db_error("reading the outbox", e))?;
        match row {
            Some(row) => row
                .try_get_by_index::<Option<i64>>(0)
                .map_err(|e| db_error("reading the outbox", e)),
            None => Ok(None),
        }
    }
}

impl OutboxStore for Store {
    fn name(&self) -> &str {
        &self.table
    }

    fn lease<'a>(&'a self, owner: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.take_lease(owner, ttl))
    }

    fn release<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.give_up_lease(owner))
    }

    fn read<'a>(
        &'a self,
        after: i64,
        limit: usize,
        cqrs_ids: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<StoredEvent>>> {
        Box::pin(self.next(after, limit, cqrs_ids))
    }

    fn delete<'a>(&'a self, ids: &'a [i64]) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.remove(ids))
    }

    fn waiting(&self) -> BoxFuture<'_, Result<BTreeMap<String, u64>>> {
        Box::pin(self.count())
    }

    fn last_id(&self) -> BoxFuture<'_, Result<Option<i64>>> {
        Box::pin(self.newest())
    }

    fn wake_signal(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }
}
