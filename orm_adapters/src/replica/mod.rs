//! [`ReplicaTable`]: a SeaORM entity as a replica model. Events are applied in batches, one
//! transaction per batch, under the revision rules of WIRE.md section 4, enforced in SQL.

use std::fmt;
use std::sync::Arc;

use cqrs_actors::{
    Applied, Error, JsonObject, ReplicaEvent, ReplicaHandler, Result, SignalType, values,
};
use futures_util::future::BoxFuture;
use sea_orm::{
    DatabaseConnection, DatabaseTransaction, EntityTrait, Iterable, PrimaryKeyToColumn, Value,
};
use serde_json::Value as Json;

use crate::columns::{Column, columns_of, to_json};
use crate::introspect::TableInfo;
use crate::sql::Dialect;
use crate::tombstones::Tombstones;

mod apply;
pub(crate) mod pg_arrays;
mod tools;

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
    renames: Option<Arc<Vec<(String, usize)>>>,
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
        let pk = columns
            .iter()
            .position(|c| c.name == sea_orm::IdenStatic::as_str(&pk))
            .ok_or_else(|| Error::config(&table, "primary key column not found"))?;
        Self::from_parts(
            db,
            TableInfo {
                table,
                dialect,
                columns,
                pk,
            },
        )
    }

    /// A replica of the table named `table`, its columns read from the database (PostgreSQL,
    /// MySQL/MariaDB, SQLite): no SeaORM entity needed. The same rules as [`new`](Self::new)
    /// apply; a column type the adapters cannot convert is a configuration error naming it.
    ///
    /// ```no_run
    /// use cqrs_actors::ReplicaModel;
    /// use cqrs_orm_adapters::ReplicaTable;
    /// # async fn run(db: sea_orm::DatabaseConnection) -> cqrs_actors::Result<()> {
    /// let table = ReplicaTable::introspect(db, "replica_app_book")
    ///     .await?
    ///     .with_renames([("author", "author_id")])?;
    /// let model = ReplicaModel::new("book", table);
    /// # let _ = model; Ok(())
    /// # }
    /// ```
    pub async fn introspect(db: DatabaseConnection, table: &str) -> Result<Self> {
        let info = crate::introspect::describe(&db, table).await?;
        Self::from_parts(db, info)
    }

    pub(crate) fn from_parts(db: DatabaseConnection, info: TableInfo) -> Result<Self> {
        let TableInfo {
            table,
            dialect,
            mut columns,
            pk,
        } = info;
        for column in &mut columns {
            // SQLite stores any length; PostgreSQL no NUL in text.
            if dialect == Dialect::Sqlite {
                column.max_chars = None;
            }
            column.no_nul = dialect == Dialect::Postgres;
        }
        let find = |name: &str| columns.iter().position(|c| c.name == name);
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
            renames: None,
            select_for_update: false,
            tombstones: None,
            hooks: Hooks::default(),
        })
    }

    /// Reads master key `key` into column `column` (`("author", "author_id")`: a Django
    /// foreign key arrives under its field name); the other keys keep going to the column of
    /// their name, and a renamed column still takes its own name when the key is absent.
    /// Unlike [`with_mapping`](Self::with_mapping) nothing becomes required. A column that
    /// does not exist, or is named twice, is a configuration error.
    pub fn with_renames<'a>(
        mut self,
        renames: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self> {
        let mut out: Vec<(String, usize)> = Vec::new();
        for (key, column) in renames {
            let index = self.column_index(column)?;
            if out.iter().any(|(_, i)| *i == index) {
                return Err(Error::config(
                    &self.table,
                    format!("renames name column {column:?} twice"),
                ));
            }
            out.push((key.to_owned(), index));
        }
        self.renames = Some(Arc::new(out));
        Ok(self)
    }

    fn column_index(&self, column: &str) -> Result<usize> {
        self.columns
            .iter()
            .position(|c| c.name == column)
            .ok_or_else(|| {
                Error::config(&self.table, format!("the table has no column {column:?}"))
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
    ///
    /// Each batch then locks its keys before it reads them, so that replicas in several
    /// processes on one queue see each other's deletes: PostgreSQL takes transaction-scoped
    /// advisory locks; MySQL/MariaDB lock a row per key in the tombstone table, written with
    /// revision -1 the first time (so that table holds a row for every key ever applied, not
    /// only the deleted ones); SQLite has one writer at a time.
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

    /// Checks one event and converts its data: the primary key, the revision and, for SAVE and
    /// SYNC, the row's values by column. Every failure here is a data problem (dead letter).
    pub(crate) fn prepare(&self, event: &ReplicaEvent) -> Result<Prepared> {
        let envelope = event.envelope();
        let revision = envelope.require_revision()?;
        // Checked here; stored below in the form its column has.
        envelope.require_updated()?;
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
        let found = self.column_values(&envelope.instance_data)?;
        let mut row = Vec::with_capacity(found.len());
        let mut missing = Vec::new();
        for (i, (column, value)) in self.columns.iter().zip(&found).enumerate() {
            match value {
                Some(v) => row.push((i, column.to_db(v)?)),
                None if column.nullable => {}
                None => missing.push(column.name.as_str()),
            }
        }
        // Only hooks see the mapped data: the default write needs the converted row alone.
        let data = if self.hooks.any() {
            self.columns
                .iter()
                .zip(&found)
                .filter_map(|(c, v)| v.map(|v| (c.name.clone(), v.clone())))
                .collect()
        } else {
            JsonObject::new()
        };
        if found[self.pk].is_none_or(Json::is_null) {
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
        let pk = row
            .iter()
            .find(|(i, _)| *i == self.pk)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| Error::invalid_data("CQRS PK is not provided"))?;
        // The router shards by `instance_pk`; a row written under another key would escape
        // the per-row order.
        if !envelope.instance_pk.is_null()
            && pk_column.to_db(&envelope.instance_pk).ok().as_ref() != Some(&pk)
        {
            return Err(Error::invalid_data(format!(
                "instance_pk {} does not match {:?} in instance_data",
                values::excerpt(&envelope.instance_pk.to_string()),
                pk_column.name
            )));
        }
        base(pk, data, row)
    }

    /// Each column's value in `instance_data`: through the mapping (every mapped key
    /// required), or by renamed key or column name.
    fn column_values<'a>(&self, data: &'a JsonObject) -> Result<Vec<Option<&'a Json>>> {
        let mut out: Vec<Option<&Json>> = vec![None; self.columns.len()];
        match &self.mapping {
            Some(mapping) => {
                for (key, index) in mapping.iter() {
                    let value = data.get(key).ok_or_else(|| {
                        Error::invalid_data(format!(
                            "bad master-replica mapping: master key {key:?} is missing"
                        ))
                    })?;
                    out[*index] = Some(value);
                }
                for (i, column) in self.columns.iter().enumerate() {
                    if matches!(column.name.as_str(), "cqrs_revision" | "cqrs_updated") {
                        out[i] = data.get(&column.name);
                    }
                }
            }
            None => {
                for (i, column) in self.columns.iter().enumerate() {
                    let renamed = self
                        .renames
                        .as_ref()
                        .and_then(|r| r.iter().find(|(_, c)| *c == i))
                        .and_then(|(key, _)| data.get(key));
                    out[i] = renamed.or_else(|| data.get(&column.name));
                }
            }
        }
        Ok(out)
    }
}

/// One event, checked and converted.
#[derive(Debug)]
pub(crate) struct Prepared {
    signal: SignalType,
    pub(crate) pk: Value,
    pk_json: Json,
    pk_text: String,
    revision: i64,
    data: JsonObject,
    /// The converted values, by column position.
    pub(crate) row: Vec<(usize, Value)>,
}

impl ReplicaTable {
    /// Applies `items` in one transaction; when it fails, each half the same way, down to
    /// single events. A few failing events among many cost a few transactions each (about
    /// `2·k·log2(n/k)` for `k` of `n`), where applying every event alone would cost `n`; the
    /// order of the events is kept.
    fn apply_split<'a>(
        &'a self,
        items: &'a [(&'a ReplicaEvent, &'a Prepared)],
        top: bool,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<Result<Applied>>> + Send + 'a>>
    {
        Box::pin(async move {
            match self.apply_in_transaction(items).await {
                Ok(done) => done.into_iter().map(Ok).collect(),
                Err(e) if items.len() <= 1 => vec![Err(e)],
                Err(e) => {
                    if top {
                        tracing::warn!(
                            table = %self.table, events = items.len(), error = %e,
                            "batch failed; applying its halves apart to find the failing events"
                        );
                    }
                    let (left, right) = items.split_at(items.len() / 2);
                    let mut out = self.apply_split(left, false).await;
                    out.extend(self.apply_split(right, false).await);
                    out
                }
            }
        })
    }
}

impl ReplicaHandler for ReplicaTable {
    /// The database answers a ping.
    async fn check(&self) -> Result<()> {
        self.db.ping().await.map_err(|e| {
            Error::with_source(
                cqrs_actors::ErrorKind::Database,
                format!(
                    "the database of table {} does not answer",
                    self.table_name()
                ),
                e,
            )
        })
    }

    async fn apply(&self, event: &ReplicaEvent) -> Result<Applied> {
        let mut results = self.apply_batch(std::slice::from_ref(event)).await;
        results
            .pop()
            .unwrap_or_else(|| Err(Error::handler("no result for the event")))
    }

    /// Applies the batch in one transaction. Events that fail their checks get their error at
    /// once; if the transaction fails, each half of the batch is applied the same way, down to
    /// single events, so only the failing ones are retried or dead-lettered.
    async fn apply_batch(&self, events: &[ReplicaEvent]) -> Vec<Result<Applied>> {
        let prepared: Vec<Result<Prepared>> = events.iter().map(|e| self.prepare(e)).collect();
        let good: Vec<(&ReplicaEvent, &Prepared)> = events
            .iter()
            .zip(&prepared)
            .filter_map(|(e, p)| p.as_ref().ok().map(|p| (e, p)))
            .collect();
        let mut applied_all = self.apply_split(&good, true).await.into_iter();
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
