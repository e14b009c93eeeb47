//! [`ReplicaTable`]: a SeaORM entity as a replica model. Events are applied in batches, one
//! transaction per batch, under the revision rules of WIRE.md section 4, enforced in SQL.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use cqrs_actors::revision::{Decision, decide};
use cqrs_actors::{
    Applied, Error, JsonObject, ReplicaEvent, ReplicaHandler, Result, SignalType, Skip, values,
};
use futures_util::future::BoxFuture;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, EntityTrait, Iterable,
    PrimaryKeyToColumn, TransactionTrait, Value,
};
use serde_json::Value as Json;

use crate::columns::{Column, columns_of, to_json};
use crate::db_error;
use crate::sql::{Dialect, Query};
use crate::tombstones::Tombstones;

/// A user hook: runs inside the batch's transaction instead of the default write.
pub type Hook = Arc<
    dyn for<'a> Fn(&'a DatabaseTransaction, &'a RowChange) -> BoxFuture<'a, Result<()>>
        + Send
        + Sync,
>;

/// What a hook receives: one event, its data mapped to the replica's columns.
#[derive(Debug, Clone)]
pub struct RowChange {
    /// SAVE, SYNC or DELETE.
    pub signal: SignalType,
    /// The primary key, in its wire form.
    pub pk: Json,
    /// The incoming revision.
    pub revision: i64,
    /// The stored revision before this event (`None`: no row).
    pub stored_revision: Option<i64>,
    /// SAVE/SYNC: the row by replica column name (mapped, unknown keys dropped). DELETE: the
    /// master's `instance_data` (`id`, `cqrs_revision`, `cqrs_updated`, `custom`).
    pub data: JsonObject,
    /// The master's `previous_data`.
    pub previous_data: Option<JsonObject>,
    /// The message's `meta`.
    pub meta: Option<JsonObject>,
}

#[derive(Default, Clone)]
struct Hooks {
    create: Option<Hook>,
    update: Option<Hook>,
    delete: Option<Hook>,
}

impl Hooks {
    fn any(&self) -> bool {
        self.create.is_some() || self.update.is_some() || self.delete.is_some()
    }
}

/// A SeaORM entity applied as a replica model (the analogue of django-cqrs's `ReplicaMixin`).
///
/// The table needs a single-column primary key and the columns `cqrs_revision` (integer) and
/// `cqrs_updated` (timestamp). Register it with
/// [`ReplicaModel::new`](cqrs_actors::ReplicaModel::new); only-direct-syncs and the retry
/// policy are set there.
///
/// ```no_run
/// # mod book {
/// #     use sea_orm::entity::prelude::*;
/// #     #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
/// #     #[sea_orm(table_name = "book")]
/// #     pub struct Model {
/// #         #[sea_orm(primary_key, auto_increment = false)]
/// #         pub id: i64,
/// #         pub title: String,
/// #         pub cqrs_revision: i64,
/// #         pub cqrs_updated: ChronoDateTimeUtc,
/// #     }
/// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
/// #     pub enum Relation {}
/// #     impl ActiveModelBehavior for ActiveModel {}
/// # }
/// use cqrs_actors::ReplicaModel;
/// use cqrs_orm_adapters::ReplicaTable;
/// # fn run(db: sea_orm::DatabaseConnection) -> cqrs_actors::Result<()> {
/// let table = ReplicaTable::new(db, book::Entity)?
///     .with_mapping([("id", "id"), ("name", "title")])?
///     .with_select_for_update(true);
/// let model = ReplicaModel::new("book", table).with_only_direct_syncs(false);
/// # let _ = model; Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ReplicaTable {
    db: DatabaseConnection,
    dialect: Dialect,
    table: String,
    columns: Arc<Vec<Column>>,
    pk: usize,
    revision: usize,
    mapping: Option<Arc<Vec<(String, usize)>>>,
    select_for_update: bool,
    tombstones: Option<Tombstones>,
    hooks: Hooks,
}

impl fmt::Debug for ReplicaTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicaTable")
            .field("table", &self.table)
            .field("dialect", &self.dialect)
            .field("select_for_update", &self.select_for_update)
            .field("tombstones", &self.tombstones.is_some())
            .field("hooks", &self.hooks.any())
            .finish()
    }
}

impl ReplicaTable {
    /// A replica of `entity`'s table on `db`. Fails with a configuration error when the table
    /// has no single-column primary key, lacks `cqrs_revision`/`cqrs_updated`, or has a column
    /// type the adapters cannot convert.
    pub fn new<E: EntityTrait>(db: DatabaseConnection, entity: E) -> Result<Self> {
        let dialect = Dialect::of(db.get_database_backend())?;
        let columns = columns_of::<E>()?;
        let table = entity.table_name().to_owned();
        let mut pks = E::PrimaryKey::iter().map(|p| p.into_column());
        let (Some(pk), None) = (pks.next(), pks.next()) else {
            return Err(Error::config(
                &table,
                "a replica table needs a single-column primary key",
            ));
        };
        let find = |name: &str| columns.iter().position(|c| c.name == name);
        let pk = find(sea_orm::IdenStatic::as_str(&pk))
            .ok_or_else(|| Error::config(&table, "primary key column not found"))?;
        let revision = find("cqrs_revision")
            .ok_or_else(|| Error::config(&table, "the table has no cqrs_revision column"))?;
        find("cqrs_updated")
            .ok_or_else(|| Error::config(&table, "the table has no cqrs_updated column"))?;
        Ok(Self {
            db,
            dialect,
            table,
            columns: Arc::new(columns),
            pk,
            revision,
            mapping: None,
            select_for_update: false,
            tombstones: None,
            hooks: Hooks::default(),
        })
    }

    /// Maps master keys to replica columns (django-cqrs `CQRS_MAPPING`). Only the mapped keys
    /// are kept (plus `cqrs_revision` and `cqrs_updated`), and every mapped key must be in each
    /// message, else the message is dead-lettered. A column that does not exist, or is named
    /// twice, is a configuration error.
    pub fn with_mapping<'a>(
        mut self,
        mapping: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self> {
        let mut out: Vec<(String, usize)> = Vec::new();
        for (key, column) in mapping {
            let index = self
                .columns
                .iter()
                .position(|c| c.name == column)
                .ok_or_else(|| {
                    Error::config(&self.table, format!("mapping names no column {column:?}"))
                })?;
            if out.iter().any(|(_, i)| *i == index) {
                return Err(Error::config(
                    &self.table,
                    format!("mapping names column {column:?} twice"),
                ));
            }
            out.push((key.to_owned(), index));
        }
        if !out.iter().any(|(_, i)| *i == self.pk) {
            return Err(Error::config(
                &self.table,
                "the mapping must include the primary key column",
            ));
        }
        self.mapping = Some(Arc::new(out));
        Ok(self)
    }

    /// Locks existing rows (`SELECT ... FOR UPDATE`) while a batch is applied, so replicas in
    /// several processes consuming one queue cannot interleave on a row (django-cqrs
    /// `CQRS_SELECT_FOR_UPDATE`). SQLite serialises writers anyway and ignores it.
    #[must_use]
    pub fn with_select_for_update(mut self, on: bool) -> Self {
        self.select_for_update = on;
        self
    }

    /// Remembers each DELETE's revision in `tombstones` (see
    /// [`Tombstones::create_table`]), so that an older SAVE or SYNC arriving after it does not
    /// bring the row back. Off by default: django-cqrs keeps no tombstone.
    #[must_use]
    pub fn with_tombstones(mut self, tombstones: Tombstones) -> Self {
        self.tombstones = Some(tombstones);
        self
    }

    /// Runs `hook` instead of the default insert when a SAVE or SYNC creates a row.
    #[must_use]
    pub fn on_create(mut self, hook: Hook) -> Self {
        self.hooks.create = Some(hook);
        self
    }

    /// Runs `hook` instead of the default update when a SAVE or SYNC changes a row.
    #[must_use]
    pub fn on_update(mut self, hook: Hook) -> Self {
        self.hooks.update = Some(hook);
        self
    }

    /// Runs `hook` instead of the default `DELETE` by id.
    #[must_use]
    pub fn on_delete(mut self, hook: Hook) -> Self {
        self.hooks.delete = Some(hook);
        self
    }

    /// The table's name.
    #[must_use]
    pub fn table_name(&self) -> &str {
        &self.table
    }

    /// The database connection.
    #[must_use]
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// One page of the replica's primary keys after `after` (none: from the start), in order
    /// (django-cqrs `cqrs_deleted_diff_replica`).
    pub async fn pks_page(&self, after: Option<&Json>, limit: u64) -> Result<Vec<Json>> {
        let pk = &self.columns[self.pk];
        let mut q = Query::new(self.dialect);
        q.push("SELECT ")
            .ident(&pk.name)
            .push(" FROM ")
            .ident(&self.table);
        if let Some(after) = after {
            q.push(" WHERE ")
                .ident(&pk.name)
                .push(" > ")
                .value(pk.to_db(after)?);
        }
        q.push(" ORDER BY ")
            .ident(&pk.name)
            .push(&format!(" LIMIT {}", limit.max(1)));
        let rows = self
            .db
            .query_all_raw(q.build())
            .await
            .map_err(|e| db_error("reading primary keys", e))?;
        rows.iter().map(|r| to_json(&pk.read(r, 0)?)).collect()
    }

    /// Of the master's `[pk, revision]` pairs, the primary keys whose row is missing here or
    /// has another revision (django-cqrs `cqrs_diff_replica`).
    pub async fn diff(&self, master: &[(Json, i64)]) -> Result<Vec<Json>> {
        let pk = &self.columns[self.pk];
        let keys: Vec<Prepared> = master
            .iter()
            .map(|(k, rev)| {
                let value = pk.to_db(k)?;
                let json = to_json(&value)?;
                Ok(Prepared {
                    signal: SignalType::Sync,
                    pk_text: values::pk_text(&json),
                    pk_json: json,
                    pk: value,
                    revision: *rev,
                    data: JsonObject::new(),
                    row: Vec::new(),
                })
            })
            .collect::<Result<_>>()?;
        let txn = self.db.begin().await.map_err(|e| db_error("begin", e))?;
        let refs: Vec<&Prepared> = keys.iter().collect();
        let stored = self.stored_revisions_unlocked(&txn, &refs).await?;
        txn.commit().await.map_err(|e| db_error("commit", e))?;
        Ok(keys
            .into_iter()
            .filter(|k| stored.get(&k.pk_text) != Some(&k.revision))
            .map(|k| k.pk_json)
            .collect())
    }

    /// Deletes rows by primary key without hooks (django-cqrs `cqrs_deleted_sync_replica`).
    /// Returns how many rows went.
    pub async fn delete_pks(&self, pks: &[Json]) -> Result<u64> {
        let pk = &self.columns[self.pk];
        let mut deleted = 0;
        for chunk in pks.chunks(self.dialect.max_values()) {
            let values = chunk
                .iter()
                .map(|k| pk.to_db(k))
                .collect::<Result<Vec<_>>>()?;
            let mut q = Query::new(self.dialect);
            q.push("DELETE FROM ")
                .ident(&self.table)
                .push(" WHERE ")
                .ident(&pk.name)
                .push(" IN ")
                .value_list(values);
            deleted += self
                .db
                .execute_raw(q.build())
                .await
                .map_err(|e| db_error("deleting rows", e))?
                .rows_affected();
        }
        Ok(deleted)
    }

    /// Loads rows from a bulk dump (`instance_data` objects) as SAVEs, in one transaction per
    /// call, under the revision rules (django-cqrs `cqrs_bulk_load`).
    pub async fn load(&self, cqrs_id: &str, rows: Vec<JsonObject>) -> Vec<Result<Applied>> {
        let events: Vec<ReplicaEvent> = rows
            .into_iter()
            .map(|data| {
                ReplicaEvent::new(
                    cqrs_actors::Envelope::new(SignalType::Save, cqrs_id, data),
                    cqrs_id,
                    false,
                    false,
                )
            })
            .collect();
        self.apply_batch(&events).await
    }

    /// Checks one event and converts its data: the primary key, the revision and, for SAVE and
    /// SYNC, the row's values by column. Every failure here is a data problem (dead letter).
    fn prepare(&self, event: &ReplicaEvent) -> Result<Prepared> {
        let envelope = event.envelope();
        let revision = envelope.require_revision()?;
        let updated = envelope.require_updated()?;
        let pk_column = &self.columns[self.pk];
        let base = |pk: Value, data: JsonObject, row: Vec<(usize, Value)>| -> Result<Prepared> {
            let pk_json = to_json(&pk)?;
            Ok(Prepared {
                signal: envelope.signal_type,
                pk_text: values::pk_text(&pk_json),
                pk_json,
                pk,
                revision,
                data,
                row,
            })
        };
        if envelope.signal_type == SignalType::Delete {
            let id = envelope
                .instance_data
                .get("id")
                .filter(|v| !v.is_null())
                .ok_or_else(|| Error::invalid_data("CQRS PK is not provided: `id` is missing"))?;
            let pk = pk_column.to_db(id)?;
            return base(pk, envelope.instance_data.clone(), Vec::new());
        }
        let data = self.map(&envelope.instance_data)?;
        let mut row = Vec::with_capacity(data.len());
        let mut missing = Vec::new();
        for (i, column) in self.columns.iter().enumerate() {
            match data.get(&column.name) {
                Some(v) => row.push((i, column.to_db(v)?)),
                None if column.nullable => {}
                None => missing.push(column.name.as_str()),
            }
        }
        if data.get(&pk_column.name).is_none_or(Json::is_null) {
            return Err(Error::invalid_data(format!(
                "CQRS PK is not provided: {:?} is missing",
                pk_column.name
            )));
        }
        if !missing.is_empty() {
            return Err(Error::invalid_data(format!(
                "required fields are missing: {}",
                missing.join(", ")
            )));
        }
        // cqrs_updated is stored in the form the column has; it was validated above.
        let _ = updated;
        let pk = row
            .iter()
            .find(|(i, _)| *i == self.pk)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| Error::invalid_data("CQRS PK is not provided"))?;
        base(pk, data, row)
    }

    /// `instance_data` by replica column: mapped, or filtered to known columns.
    fn map(&self, data: &JsonObject) -> Result<JsonObject> {
        let mut out = JsonObject::new();
        match &self.mapping {
            Some(mapping) => {
                for (key, index) in mapping.iter() {
                    let value = data.get(key).ok_or_else(|| {
                        Error::invalid_data(format!(
                            "bad master-replica mapping: master key {key:?} is missing"
                        ))
                    })?;
                    out.insert(self.columns[*index].name.clone(), value.clone());
                }
                for key in ["cqrs_revision", "cqrs_updated"] {
                    if let Some(v) = data.get(key) {
                        out.insert(key.to_owned(), v.clone());
                    }
                }
            }
            None => {
                for column in self.columns.iter() {
                    if let Some(v) = data.get(&column.name) {
                        out.insert(column.name.clone(), v.clone());
                    }
                }
            }
        }
        Ok(out)
    }

    /// Applies prepared events in one transaction and commits.
    async fn apply_in_transaction(
        &self,
        items: &[(&ReplicaEvent, &Prepared)],
    ) -> Result<Vec<Applied>> {
        let txn = crate::begin_write(&self.db).await?;
        let outcome = self.apply_items(&txn, items).await?;
        txn.commit().await.map_err(|e| db_error("commit", e))?;
        Ok(outcome)
    }

    async fn apply_items(
        &self,
        txn: &DatabaseTransaction,
        items: &[(&ReplicaEvent, &Prepared)],
    ) -> Result<Vec<Applied>> {
        let mut keys: Vec<&Prepared> = Vec::new();
        let mut seen = HashMap::new();
        for (_, p) in items {
            if seen.insert(p.pk_text.as_str(), ()).is_none() {
                keys.push(p);
            }
        }
        let mut stored = self.stored_revisions(txn, &keys).await?;
        let existing: HashSet<String> = stored.keys().cloned().collect();
        let mut buried = match &self.tombstones {
            Some(t) => {
                let keys: Vec<&str> = keys.iter().map(|p| p.pk_text.as_str()).collect();
                t.load(txn, &self.table, &keys).await?
            }
            None => HashMap::new(),
        };
        if self.hooks.any() {
            return self
                .apply_with_hooks(txn, items, &mut stored, &mut buried)
                .await;
        }
        let mut plan = Plan::default();
        let mut outcome = Vec::with_capacity(items.len());
        for (i, (event, p)) in items.iter().enumerate() {
            let current = stored.get(&p.pk_text).copied();
            if p.signal == SignalType::Delete {
                if self.tombstones.is_some() {
                    let t = buried.entry(p.pk_text.clone()).or_insert(p.revision);
                    *t = (*t).max(p.revision);
                }
                stored.remove(&p.pk_text);
                plan.delete(&p.pk_text, i);
                outcome.push(if current.is_some() {
                    Applied::Deleted
                } else {
                    Applied::Skipped(Skip::Missing)
                });
                continue;
            }
            let decision = decide(
                p.signal,
                current,
                p.revision,
                buried.get(&p.pk_text).copied(),
            );
            log_decision(event, p, current, decision);
            if decision.writes() {
                stored.insert(p.pk_text.clone(), p.revision);
                plan.write(&p.pk_text, i, p.signal == SignalType::Sync);
            }
            outcome.push(applied(decision));
        }
        self.execute(txn, items, &plan, &existing).await?;
        if let Some(t) = &self.tombstones {
            let dead: Vec<(&str, i64)> = plan
                .deleted()
                .filter_map(|i| {
                    let p = items[i].1;
                    buried.get(&p.pk_text).map(|r| (p.pk_text.as_str(), *r))
                })
                .collect();
            t.store(txn, &self.table, &dead).await?;
        }
        Ok(outcome)
    }

    /// One event at a time, in order, calling the hooks where they are set.
    async fn apply_with_hooks(
        &self,
        txn: &DatabaseTransaction,
        items: &[(&ReplicaEvent, &Prepared)],
        stored: &mut HashMap<String, i64>,
        buried: &mut HashMap<String, i64>,
    ) -> Result<Vec<Applied>> {
        let mut outcome = Vec::with_capacity(items.len());
        for (event, p) in items {
            let current = stored.get(&p.pk_text).copied();
            let change = || RowChange {
                signal: p.signal,
                pk: p.pk_json.clone(),
                revision: p.revision,
                stored_revision: current,
                data: p.data.clone(),
                previous_data: event.envelope().previous_data.clone(),
                meta: event.envelope().meta.clone(),
            };
            let single = [(*event, *p)];
            if p.signal == SignalType::Delete {
                match &self.hooks.delete {
                    Some(hook) => hook(txn, &change()).await?,
                    None => {
                        let mut plan = Plan::default();
                        plan.delete(&p.pk_text, 0);
                        self.execute(txn, &single, &plan, &HashSet::new()).await?;
                    }
                }
                stored.remove(&p.pk_text);
                if let Some(t) = &self.tombstones {
                    let r = buried.entry(p.pk_text.clone()).or_insert(p.revision);
                    *r = (*r).max(p.revision);
                    t.store(txn, &self.table, &[(p.pk_text.as_str(), *r)])
                        .await?;
                }
                outcome.push(if current.is_some() {
                    Applied::Deleted
                } else {
                    Applied::Skipped(Skip::Missing)
                });
                continue;
            }
            let decision = decide(
                p.signal,
                current,
                p.revision,
                buried.get(&p.pk_text).copied(),
            );
            log_decision(event, p, current, decision);
            if decision.writes() {
                let hook = if current.is_none() {
                    &self.hooks.create
                } else {
                    &self.hooks.update
                };
                match hook {
                    Some(hook) => hook(txn, &change()).await?,
                    None => {
                        let mut plan = Plan::default();
                        plan.write(&p.pk_text, 0, true);
                        let existing: HashSet<String> =
                            current.map(|_| p.pk_text.clone()).into_iter().collect();
                        self.execute(txn, &single, &plan, &existing).await?;
                    }
                }
                stored.insert(p.pk_text.clone(), p.revision);
            }
            outcome.push(applied(decision));
        }
        Ok(outcome)
    }

    /// The stored revision of each key, locked when `select_for_update` is on.
    async fn stored_revisions(
        &self,
        txn: &DatabaseTransaction,
        keys: &[&Prepared],
    ) -> Result<HashMap<String, i64>> {
        self.read_revisions(txn, keys, self.select_for_update).await
    }

    async fn stored_revisions_unlocked(
        &self,
        txn: &DatabaseTransaction,
        keys: &[&Prepared],
    ) -> Result<HashMap<String, i64>> {
        self.read_revisions(txn, keys, false).await
    }

    async fn read_revisions(
        &self,
        txn: &DatabaseTransaction,
        keys: &[&Prepared],
        lock: bool,
    ) -> Result<HashMap<String, i64>> {
        let pk = &self.columns[self.pk];
        let mut out = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(self.dialect.max_values()) {
            let mut q = Query::new(self.dialect);
            q.push("SELECT ")
                .ident(&pk.name)
                .push(", ")
                .ident("cqrs_revision")
                .push(" FROM ")
                .ident(&self.table)
                .push(" WHERE ")
                .ident(&pk.name)
                .push(" IN ")
                .value_list(chunk.iter().map(|p| p.pk.clone()));
            if lock && self.dialect.has_row_locks() {
                q.push(" FOR UPDATE");
            }
            let rows = txn
                .query_all_raw(q.build())
                .await
                .map_err(|e| db_error("reading stored revisions", e))?;
            for row in rows {
                let key = values::pk_text(&to_json(&pk.read(&row, 0)?)?);
                let revision: i64 = read_revision(&row, 1, &self.columns[self.revision])?;
                out.insert(key, revision);
            }
        }
        Ok(out)
    }

    /// Runs the planned deletes, then the planned upserts, grouped by column set and by whether
    /// the revision guard applies. `existing` holds the keys that had a row before the plan.
    ///
    /// On MySQL/MariaDB, rows that did not exist are written with a plain `INSERT`: its
    /// `ON DUPLICATE KEY UPDATE` fires on any unique key, so an insert that collides with
    /// another row's unique column would silently update nothing instead of failing.
    async fn execute(
        &self,
        txn: &DatabaseTransaction,
        items: &[(&ReplicaEvent, &Prepared)],
        plan: &Plan,
        existing: &HashSet<String>,
    ) -> Result<()> {
        let pk = &self.columns[self.pk];
        let deletes: Vec<Value> = plan.deleted().map(|i| items[i].1.pk.clone()).collect();
        for chunk in deletes.chunks(self.dialect.max_values()) {
            let mut q = Query::new(self.dialect);
            q.push("DELETE FROM ")
                .ident(&self.table)
                .push(" WHERE ")
                .ident(&pk.name)
                .push(" IN ")
                .value_list(chunk.iter().cloned());
            txn.execute_raw(q.build())
                .await
                .map_err(|e| db_error("deleting rows", e))?;
        }
        let mut groups: HashMap<(Vec<usize>, Write), Vec<&Prepared>> = HashMap::new();
        for (i, guarded) in plan.written() {
            let p = items[i].1;
            let shape: Vec<usize> = p.row.iter().map(|(c, _)| *c).collect();
            let fresh = !existing.contains(&p.pk_text) || plan.deletes(&p.pk_text);
            let write = match (self.dialect, fresh, guarded) {
                (Dialect::MySql, true, _) => Write::Insert,
                (_, _, true) => Write::GuardedUpsert,
                (_, _, false) => Write::Upsert,
            };
            groups.entry((shape, write)).or_default().push(p);
        }
        for ((shape, write), rows) in groups {
            let per_statement = (self.dialect.max_values() / shape.len()).max(1);
            for chunk in rows.chunks(per_statement) {
                let stmt = self.upsert(&shape, write, chunk);
                txn.execute_raw(stmt)
                    .await
                    .map_err(|e| db_error("writing rows", e))?;
            }
        }
        Ok(())
    }

    /// `INSERT ... ON CONFLICT/DUPLICATE KEY UPDATE`, with the SAVE guard
    /// `stored cqrs_revision < incoming` for [`Write::GuardedUpsert`].
    fn upsert(&self, shape: &[usize], write: Write, rows: &[&Prepared]) -> sea_orm::Statement {
        let d = self.dialect;
        let names: Vec<&str> = shape
            .iter()
            .map(|&i| self.columns[i].name.as_str())
            .collect();
        let mut q = Query::new(d);
        q.push("INSERT INTO ")
            .ident(&self.table)
            .push(" ")
            .ident_list(names.iter().copied())
            .push(" VALUES ");
        for (n, p) in rows.iter().enumerate() {
            if n > 0 {
                q.push(", ");
            }
            q.value_list(p.row.iter().map(|(_, v)| v.clone()));
        }
        if write == Write::Insert {
            return q.build();
        }
        let guarded = write == Write::GuardedUpsert;
        let pk = self.columns[self.pk].name.as_str();
        // The revision is assigned last: MySQL evaluates assignments left to right, so the
        // guard must still see the old revision while the other columns are assigned.
        let mut updated: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| *n != pk && *n != "cqrs_revision")
            .collect();
        updated.push("cqrs_revision");
        let rev = d.ident("cqrs_revision");
        match d {
            Dialect::Postgres | Dialect::Sqlite => {
                q.push(" ON CONFLICT (").ident(pk).push(") DO UPDATE SET ");
                for (n, col) in updated.iter().enumerate() {
                    let c = d.ident(col);
                    q.push(&format!(
                        "{}{c} = excluded.{c}",
                        if n > 0 { ", " } else { "" }
                    ));
                }
                if guarded {
                    let t = d.ident(&self.table);
                    q.push(&format!(" WHERE {t}.{rev} < excluded.{rev}"));
                }
            }
            Dialect::MySql => {
                q.push(" ON DUPLICATE KEY UPDATE ");
                for (n, col) in updated.iter().enumerate() {
                    let c = d.ident(col);
                    let sep = if n > 0 { ", " } else { "" };
                    if guarded {
                        q.push(&format!(
                            "{sep}{c} = IF({rev} < VALUES({rev}), VALUES({c}), {c})"
                        ));
                    } else {
                        q.push(&format!("{sep}{c} = VALUES({c})"));
                    }
                }
            }
        }
        q.build()
    }
}

fn read_revision(row: &sea_orm::QueryResult, index: usize, column: &Column) -> Result<i64> {
    match column.read(row, index)? {
        Value::BigInt(Some(v)) => Ok(v),
        Value::Int(Some(v)) => Ok(i64::from(v)),
        Value::SmallInt(Some(v)) => Ok(i64::from(v)),
        other => Err(Error::invalid_data(format!(
            "stored cqrs_revision is not an integer: {other:?}"
        ))),
    }
}

/// How a planned row is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Write {
    /// A row known not to exist (MySQL/MariaDB).
    Insert,
    /// Insert or overwrite (SYNC, or after a delete in the same batch).
    Upsert,
    /// Insert, or overwrite only an older revision (SAVE).
    GuardedUpsert,
}

/// One event, checked and converted.
#[derive(Debug)]
struct Prepared {
    signal: SignalType,
    pk: Value,
    pk_json: Json,
    pk_text: String,
    revision: i64,
    data: JsonObject,
    row: Vec<(usize, Value)>,
}

/// The net effect of a batch: per key, at most one delete and then at most one write.
#[derive(Debug, Default)]
struct Plan {
    by_key: HashMap<String, KeyPlan>,
}

#[derive(Debug, Default)]
struct KeyPlan {
    delete: Option<usize>,
    write: Option<usize>,
    guarded: bool,
}

impl Plan {
    fn delete(&mut self, key: &str, item: usize) {
        let k = self.by_key.entry(key.to_owned()).or_default();
        k.write = None;
        k.delete.get_or_insert(item);
    }

    fn write(&mut self, key: &str, item: usize, sync: bool) {
        let k = self.by_key.entry(key.to_owned()).or_default();
        // The guard holds only while every write of the key in this batch is a SAVE applied on
        // top of the stored row; a SYNC or a delete before it means the last write must win.
        let first = k.write.is_none() && k.delete.is_none();
        k.guarded = if first {
            !sync
        } else {
            k.guarded && !sync && k.delete.is_none()
        };
        k.write = Some(item);
    }

    /// Whether the plan deletes `key`.
    fn deletes(&self, key: &str) -> bool {
        self.by_key.get(key).is_some_and(|k| k.delete.is_some())
    }

    /// Items whose key is deleted (once per key).
    fn deleted(&self) -> impl Iterator<Item = usize> + '_ {
        self.by_key.values().filter_map(|k| k.delete)
    }

    /// Items written last for their key, and whether the SAVE guard applies.
    fn written(&self) -> impl Iterator<Item = (usize, bool)> + '_ {
        self.by_key
            .values()
            .filter_map(|k| k.write.map(|w| (w, k.guarded)))
    }
}

fn applied(decision: Decision) -> Applied {
    match decision {
        Decision::Create => Applied::Created,
        Decision::Apply | Decision::ApplyAfterGap { .. } | Decision::ApplyDowngrade => {
            Applied::Updated
        }
        Decision::IgnoreStale => Applied::Skipped(Skip::Stale),
        Decision::IgnoreDuplicate => Applied::Skipped(Skip::Duplicate),
        Decision::IgnoreDeleted => Applied::Skipped(Skip::Deleted),
    }
}

fn log_decision(event: &ReplicaEvent, p: &Prepared, stored: Option<i64>, decision: Decision) {
    let (cqrs_id, pk, incoming) = (event.cqrs_id(), p.pk_text.as_str(), p.revision);
    match decision {
        Decision::IgnoreStale => tracing::error!(
            cqrs_id,
            pk,
            stored,
            incoming,
            "Wrong CQRS sync order: stale SAVE ignored"
        ),
        Decision::IgnoreDuplicate => {
            tracing::error!(
                cqrs_id,
                pk,
                stored,
                incoming,
                "Received duplicate CQRS data"
            );
            if incoming == 0 {
                tracing::warn!(cqrs_id, pk, "CQRS potential creation race condition");
            }
        }
        Decision::ApplyAfterGap { missing } => tracing::warn!(
            cqrs_id,
            pk,
            stored,
            incoming,
            missing,
            "Lost or filtered out {missing} CQRS packages"
        ),
        Decision::ApplyDowngrade => tracing::warn!(
            cqrs_id,
            pk,
            stored,
            incoming,
            "CQRS revision downgrade on sync"
        ),
        Decision::IgnoreDeleted => tracing::warn!(
            cqrs_id,
            pk,
            incoming,
            "CQRS row was deleted at a newer revision; ignored"
        ),
        Decision::Create | Decision::Apply => {}
    }
}

impl ReplicaHandler for ReplicaTable {
    async fn apply(&self, event: &ReplicaEvent) -> Result<Applied> {
        let mut results = self.apply_batch(std::slice::from_ref(event)).await;
        results
            .pop()
            .unwrap_or_else(|| Err(Error::handler("no result for the event")))
    }

    /// Applies the batch in one transaction. Events that fail their checks get their error at
    /// once; if the transaction fails, each event is applied in its own transaction, so only the
    /// failing one is retried.
    async fn apply_batch(&self, events: &[ReplicaEvent]) -> Vec<Result<Applied>> {
        let prepared: Vec<Result<Prepared>> = events.iter().map(|e| self.prepare(e)).collect();
        let good: Vec<(&ReplicaEvent, &Prepared)> = events
            .iter()
            .zip(&prepared)
            .filter_map(|(e, p)| p.as_ref().ok().map(|p| (e, p)))
            .collect();
        let mut applied_all = match self.apply_in_transaction(&good).await {
            Ok(done) => done.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(e) if good.len() <= 1 => vec![Err(e)],
            Err(e) => {
                tracing::warn!(
                    table = %self.table, events = good.len(), error = %e,
                    "batch failed; applying its events one by one"
                );
                let mut out = Vec::with_capacity(good.len());
                for item in &good {
                    out.push(
                        self.apply_in_transaction(std::slice::from_ref(item))
                            .await
                            .and_then(|mut v| {
                                v.pop()
                                    .ok_or_else(|| Error::handler("no result for the event"))
                            }),
                    );
                }
                out
            }
        }
        .into_iter();
        prepared
            .into_iter()
            .map(|p| match p {
                Ok(_) => applied_all
                    .next()
                    .unwrap_or_else(|| Err(Error::handler("no result for the event"))),
                Err(e) => Err(e),
            })
            .collect()
    }
}
