//! [`MasterTable`]: a SeaORM entity this service owns. Writes through it keep `cqrs_revision`
//! and `cqrs_updated` right and record one event per changed row, in the same transaction
//! (outbox) or right after commit (direct).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use cqrs_actors::{
    EncodedEvent, Envelope, Error, ErrorKind, JsonObject, MasterModel, MasterRegistration,
    MasterSlot, Result, Route, SignalType,
};
use futures_util::future::BoxFuture;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait,
    DatabaseTransaction, EntityTrait, IntoActiveModel, Iterable, ModelTrait, PrimaryKeyToColumn,
    QueryFilter, QueryOrder, QuerySelect, TransactionTrait, Value,
};
use serde_json::Value as Json;

use crate::db_error;
use crate::outbox::Outbox;

mod events;
mod scan;

/// Builds `instance_data` from a row (django-cqrs `CQRS_SERIALIZER`); `cqrs_revision` and
/// `cqrs_updated` are added after it. It runs inside the write's transaction.
pub type Serializer<M> = Arc<
    dyn for<'a> Fn(&'a M, &'a DatabaseTransaction) -> BoxFuture<'a, Result<JsonObject>>
        + Send
        + Sync,
>;

/// What the meta function sees (django-cqrs `get_cqrs_meta`).
#[derive(Debug)]
pub struct MetaInput<'a> {
    /// SAVE, SYNC or DELETE.
    pub signal: SignalType,
    /// The event's `instance_data`.
    pub instance_data: &'a JsonObject,
    /// The event's `previous_data`.
    pub previous_data: Option<&'a JsonObject>,
}

type MetaFn = Arc<dyn Fn(&MetaInput<'_>) -> Option<JsonObject> + Send + Sync>;
type CorrelationFn =
    Arc<dyn Fn(SignalType, &str, &Json, Option<&str>) -> Option<String> + Send + Sync>;
type FilterFn<M> = Arc<dyn Fn(&M) -> bool + Send + Sync>;
type DeleteDataFn<M> = Arc<dyn Fn(&M) -> Option<Json> + Send + Sync>;

/// How a master table's events leave: through an outbox (the default) or published after
/// commit.
#[derive(Clone, Debug)]
pub enum Dispatch {
    /// Into the outbox, in the write's transaction; the system relays it. Nothing is lost when
    /// the process dies after commit.
    Outbox(Outbox),
    /// Published right after commit, like django-cqrs: an event is lost if the process dies
    /// between commit and publish, or if the publish fails (it is logged). Given a
    /// transaction of yours, the adapter's commit is a savepoint release, so the event goes out
    /// before your commit: use the outbox there.
    AfterCommit,
}

impl From<Outbox> for Dispatch {
    fn from(outbox: Outbox) -> Self {
        Dispatch::Outbox(outbox)
    }
}

impl From<&Outbox> for Dispatch {
    fn from(outbox: &Outbox) -> Self {
        Dispatch::Outbox(outbox.clone())
    }
}

/// A SeaORM entity as a master model (the analogue of django-cqrs's `MasterMixin`).
///
/// The table needs a single-column primary key, an integer `cqrs_revision` and a timestamp
/// `cqrs_updated`. Create, update and delete rows through [`insert`](Self::insert),
/// [`update`](Self::update), [`delete`](Self::delete) and the bulk methods: each bumps the
/// revision and records the event in the same transaction.
///
/// ```no_run
/// # mod author {
/// #     use sea_orm::entity::prelude::*;
/// #     #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
/// #     #[sea_orm(table_name = "author")]
/// #     pub struct Model {
/// #         #[sea_orm(primary_key)]
/// #         pub id: i64,
/// #         pub name: String,
/// #         pub cqrs_revision: i64,
/// #         pub cqrs_updated: ChronoDateTimeUtc,
/// #     }
/// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
/// #     pub enum Relation {}
/// #     impl ActiveModelBehavior for ActiveModel {}
/// # }
/// use cqrs_actors::CqrsSystemBuilder;
/// use cqrs_orm_adapters::{MasterTable, Outbox};
/// use sea_orm::ActiveValue::Set;
/// # async fn run(db: sea_orm::DatabaseConnection, transport: cqrs_actors::TransportHandle) -> cqrs_actors::Result<()> {
/// let outbox = Outbox::new(db.clone());
/// outbox.create_table().await?;
/// let authors = MasterTable::new("author", author::Entity, &outbox)?
///     .with_tracked_fields([author::Column::Name]);
/// // The system relays the outbox; writes fail until a started system registered the table.
/// let system = CqrsSystemBuilder::new().master(&authors).transport(transport).start().await?;
/// let created = authors
///     .insert(&db, author::ActiveModel { name: Set("Le Guin".into()), ..Default::default() })
///     .await?;
/// assert_eq!(created.cqrs_revision, 0);
/// # Ok(()) }
/// ```
pub struct MasterTable<E: EntityTrait> {
    /// The CQRS id, produce flag and TTL, as the system registers them.
    model: MasterModel,
    fields: Vec<E::Column>,
    pk: E::Column,
    revision: E::Column,
    updated: E::Column,
    serializer: Option<Serializer<E::Model>>,
    tracked: Vec<E::Column>,
    is_sync_instance: Option<FilterFn<E::Model>>,
    delete_data: Option<DeleteDataFn<E::Model>>,
    meta: Option<MetaFn>,
    correlation: Option<CorrelationFn>,
    /// Column name → key in `instance_data` and `previous_data`, where they differ.
    wire_keys: Vec<(E::Column, String)>,
    dispatch: Dispatch,
    slot: MasterSlot,
}

impl<E: EntityTrait> Clone for MasterTable<E> {
    fn clone(&self) -> Self {
        Self {
            model: self.model.clone(),
            fields: self.fields.clone(),
            pk: self.pk,
            revision: self.revision,
            updated: self.updated,
            serializer: self.serializer.clone(),
            tracked: self.tracked.clone(),
            is_sync_instance: self.is_sync_instance.clone(),
            delete_data: self.delete_data.clone(),
            meta: self.meta.clone(),
            correlation: self.correlation.clone(),
            wire_keys: self.wire_keys.clone(),
            dispatch: self.dispatch.clone(),
            slot: self.slot.clone(),
        }
    }
}

impl<E: EntityTrait> fmt::Debug for MasterTable<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterTable")
            .field("cqrs_id", &self.model.cqrs_id())
            .field("produce", &self.model.produces())
            .field("dispatch", &self.dispatch)
            .finish()
    }
}

fn column_named<E: EntityTrait>(name: &str) -> Option<E::Column> {
    E::Column::iter().find(|c| sea_orm::IdenStatic::as_str(c) == name)
}

impl<E> MasterTable<E>
where
    E: EntityTrait,
    E::Model: IntoActiveModel<E::ActiveModel> + Sync,
    E::ActiveModel: ActiveModelTrait<Entity = E> + ActiveModelBehavior + Send,
{
    /// A master model publishing `entity`'s rows under `cqrs_id`, every column by default,
    /// through `dispatch` (an [`Outbox`], or [`Dispatch::AfterCommit`]). Register it with
    /// [`CqrsSystemBuilder::master`](cqrs_actors::CqrsSystemBuilder::master) before writing.
    pub fn new(
        cqrs_id: impl Into<String>,
        entity: E,
        dispatch: impl Into<Dispatch>,
    ) -> Result<Self> {
        let table = sea_orm::EntityName::table_name(&entity).to_owned();
        crate::columns::columns_of::<E>()?;
        let mut pks = E::PrimaryKey::iter().map(|p| p.into_column());
        let (Some(pk), None) = (pks.next(), pks.next()) else {
            return Err(Error::config(
                &table,
                "a master table needs a single-column primary key",
            ));
        };
        let revision = column_named::<E>("cqrs_revision")
            .ok_or_else(|| Error::config(&table, "the table has no cqrs_revision column"))?;
        let updated = column_named::<E>("cqrs_updated")
            .ok_or_else(|| Error::config(&table, "the table has no cqrs_updated column"))?;
        Ok(Self {
            model: MasterModel::new(cqrs_id),
            fields: E::Column::iter().collect(),
            pk,
            revision,
            updated,
            serializer: None,
            tracked: Vec::new(),
            is_sync_instance: None,
            delete_data: None,
            meta: None,
            correlation: None,
            wire_keys: Vec::new(),
            dispatch: dispatch.into(),
            slot: MasterSlot::default(),
        })
    }

    /// Publishes only these columns (django-cqrs `CQRS_FIELDS`); the primary key is added
    /// when missing.
    #[must_use]
    pub fn with_fields(mut self, fields: impl IntoIterator<Item = E::Column>) -> Self {
        let mut fields: Vec<E::Column> = fields.into_iter().collect();
        let pk = sea_orm::IdenStatic::as_str(&self.pk);
        if !fields.iter().any(|c| sea_orm::IdenStatic::as_str(c) == pk) {
            fields.insert(0, self.pk);
        }
        self.fields = fields;
        self
    }

    /// Publishes these columns under other keys in `instance_data` and `previous_data`, e.g.
    /// `(book::Column::AuthorId, "author")`: a Django master sends a foreign key under the
    /// field's name, not the column's (`author`, not `author_id`).
    #[must_use]
    pub fn with_wire_keys<K: Into<String>>(
        mut self,
        keys: impl IntoIterator<Item = (E::Column, K)>,
    ) -> Self {
        for (column, key) in keys {
            let name = sea_orm::IdenStatic::as_str(&column);
            self.wire_keys
                .retain(|(c, _)| sea_orm::IdenStatic::as_str(c) != name);
            self.wire_keys.push((column, key.into()));
        }
        self
    }

    /// The key a column is published under.
    pub(super) fn wire_key(&self, column: &E::Column) -> String {
        let name = sea_orm::IdenStatic::as_str(column);
        self.wire_keys
            .iter()
            .find(|(c, _)| sea_orm::IdenStatic::as_str(c) == name)
            .map_or_else(|| name.to_owned(), |(_, key)| key.clone())
    }

    /// Builds `instance_data` with this function instead of the columns (django-cqrs
    /// `CQRS_SERIALIZER`); it may query related rows through the transaction it is given.
    #[must_use]
    pub fn with_serializer(mut self, serializer: Serializer<E::Model>) -> Self {
        self.serializer = Some(serializer);
        self
    }

    /// Sends the previous values of these columns as `previous_data` (django-cqrs
    /// `CQRS_TRACKED_FIELDS`).
    #[must_use]
    pub fn with_tracked_fields(mut self, fields: impl IntoIterator<Item = E::Column>) -> Self {
        self.tracked = fields.into_iter().collect();
        self
    }

    /// Publishes only rows for which `filter` holds (django-cqrs `is_sync_instance`); the
    /// revision is bumped for every row.
    #[must_use]
    pub fn with_is_sync_instance(
        mut self,
        filter: impl Fn(&E::Model) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.is_sync_instance = Some(Arc::new(filter));
        self
    }

    /// Adds `"custom": <value>` to DELETE data (django-cqrs `get_custom_cqrs_delete_data`).
    #[must_use]
    pub fn with_delete_data(
        mut self,
        data: impl Fn(&E::Model) -> Option<Json> + Send + Sync + 'static,
    ) -> Self {
        self.delete_data = Some(Arc::new(data));
        self
    }

    /// Fills `meta` (django-cqrs `meta_function`); `{}` without it.
    #[must_use]
    pub fn with_meta(
        mut self,
        meta: impl Fn(&MetaInput<'_>) -> Option<JsonObject> + Send + Sync + 'static,
    ) -> Self {
        self.meta = Some(Arc::new(meta));
        self
    }

    /// Fills `correlation_id` from `(signal, cqrs_id, pk, queue)` (django-cqrs
    /// `correlation_function`).
    #[must_use]
    pub fn with_correlation(
        mut self,
        f: impl Fn(SignalType, &str, &Json, Option<&str>) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.correlation = Some(Arc::new(f));
        self
    }

    /// Whether events are recorded at all (django-cqrs `CQRS_PRODUCE`); revisions are kept
    /// either way.
    #[must_use]
    pub fn with_produce(mut self, produce: bool) -> Self {
        self.model = self.model.with_produce(produce);
        self
    }

    /// Stamps `expires` at write time with this TTL (`None`: never expires). Without it the
    /// system's `master.message_ttl` applies from the moment of publishing.
    #[must_use]
    pub fn with_message_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.model = self.model.with_message_ttl(ttl);
        self
    }

    /// The CQRS id.
    #[must_use]
    pub fn cqrs_id(&self) -> &str {
        self.model.cqrs_id()
    }

    /// Inserts a row at revision 0 and records a SAVE.
    pub async fn insert<C>(&self, db: &C, row: E::ActiveModel) -> Result<E::Model>
    where
        C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
    {
        let mut rows = self.insert_many(db, vec![row]).await?;
        rows.pop()
            .ok_or_else(|| Error::new(ErrorKind::Database, "insert returned no row"))
    }

    /// Inserts rows at revision 0 in one transaction and records one SAVE per row.
    pub async fn insert_many<C>(&self, db: &C, rows: Vec<E::ActiveModel>) -> Result<Vec<E::Model>>
    where
        C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
    {
        let txn = crate::begin_write(db).await?;
        let now = Utc::now();
        let mut models = Vec::with_capacity(rows.len());
        let mut pending = Vec::with_capacity(rows.len());
        for mut row in rows {
            set_revision(&mut row, self.revision, 0)?;
            set_updated(&mut row, self.updated, now)?;
            pending.push(row);
        }
        if txn.support_returning() && pending.len() > 1 {
            // One multi-row INSERT ... RETURNING per chunk (PostgreSQL, SQLite).
            let mut rows = pending.into_iter().peekable();
            while rows.peek().is_some() {
                let chunk: Vec<E::ActiveModel> = rows.by_ref().take(500).collect();
                let inserted = E::insert_many(chunk)
                    .exec_with_returning(&txn)
                    .await
                    .map_err(|e| db_error("inserting master rows", e))?;
                models.extend(inserted);
            }
        } else {
            // MySQL/MariaDB have no RETURNING here: one INSERT per row gives each its id.
            for row in pending {
                let model = row
                    .insert(&txn)
                    .await
                    .map_err(|e| db_error("inserting a master row", e))?;
                models.push(model);
            }
        }
        let mut events = Vec::with_capacity(models.len());
        for model in &models {
            let previous = self.created_tracked(model);
            if let Some(e) = self
                .save_event(&txn, model, previous, SignalType::Save, None)
                .await?
            {
                events.push(e);
            }
        }
        self.finish(txn, events).await?;
        Ok(models)
    }

    /// Updates a row (the active model carries its primary key and the changed columns), bumps
    /// its revision and records a SAVE with the tracked fields' previous values. The row is
    /// locked while this runs.
    pub async fn update<C>(&self, db: &C, mut row: E::ActiveModel) -> Result<E::Model>
    where
        C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
    {
        let pk = match row.get(self.pk) {
            sea_orm::ActiveValue::Set(v) | sea_orm::ActiveValue::Unchanged(v) => v,
            sea_orm::ActiveValue::NotSet => {
                return Err(Error::invalid_data("update needs the primary key"));
            }
        };
        let txn = crate::begin_write(db).await?;
        let old = self.locked(&txn, pk).await?;
        let revision = revision_of(&old.get(self.revision))? + 1;
        set_revision(&mut row, self.revision, revision)?;
        set_updated(&mut row, self.updated, Utc::now())?;
        let model = row
            .update(&txn)
            .await
            .map_err(|e| db_error("updating a master row", e))?;
        let previous = self.changed_tracked(&old, &model)?;
        let events = self
            .save_event(&txn, &model, previous, SignalType::Save, None)
            .await?
            .into_iter()
            .collect();
        self.finish(txn, events).await?;
        Ok(model)
    }

    /// Deletes the row with this primary key and records a DELETE carrying `revision + 1`.
    /// Returns whether a row was deleted.
    pub async fn delete<C>(&self, db: &C, pk: impl Into<Value>) -> Result<bool>
    where
        C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
    {
        let filter = Condition::all().add(self.pk.eq(pk.into()));
        Ok(self.delete_many(db, filter).await? > 0)
    }

    /// Deletes every row matching `filter` and records one DELETE per row, in primary-key
    /// order; returns the row count. Rows a database `ON DELETE CASCADE` removes publish
    /// nothing: delete the children through their own table first, in the same transaction
    /// (pass yours), so that every deleted row has its DELETE.
    pub async fn delete_many<C>(&self, db: &C, filter: Condition) -> Result<u64>
    where
        C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
    {
        let txn = crate::begin_write(db).await?;
        let mut select = E::find().filter(filter).order_by_asc(self.pk);
        if txn.get_database_backend() != sea_orm::DbBackend::Sqlite {
            select = select.lock_exclusive();
        }
        let old = select
            .all(&txn)
            .await
            .map_err(|e| db_error("selecting rows to delete", e))?;
        if old.is_empty() {
            txn.commit().await.map_err(|e| db_error("commit", e))?;
            return Ok(0);
        }
        for chunk in old.chunks(1000) {
            E::delete_many()
                .filter(self.pk.is_in(chunk.iter().map(|m| m.get(self.pk))))
                .exec(&txn)
                .await
                .map_err(|e| db_error("deleting master rows", e))?;
        }
        let mut events = Vec::with_capacity(old.len());
        for row in &old {
            events.extend(self.delete_event(row)?);
        }
        self.finish(txn, events).await?;
        Ok(old.len() as u64)
    }

    /// Updates every row matching `filter` in one statement, setting `set`, bumping each row's
    /// revision in SQL and recording one SAVE per row (django-cqrs `cqrs.bulk_update`). The
    /// tracked fields' values before the update go in `previous_data`. Returns the row count.
    pub async fn update_many<C>(
        &self,
        db: &C,
        filter: Condition,
        set: Vec<(E::Column, Value)>,
    ) -> Result<u64>
    where
        C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
    {
        let txn = crate::begin_write(db).await?;
        let mut select = E::find().filter(filter).order_by_asc(self.pk);
        if txn.get_database_backend() != sea_orm::DbBackend::Sqlite {
            select = select.lock_exclusive();
        }
        let before = select
            .all(&txn)
            .await
            .map_err(|e| db_error("selecting rows to update", e))?;
        if before.is_empty() {
            txn.commit().await.map_err(|e| db_error("commit", e))?;
            return Ok(0);
        }
        let pks: Vec<Value> = before.iter().map(|m| m.get(self.pk)).collect();
        let mut update = E::update_many()
            .col_expr(
                self.revision,
                sea_orm::sea_query::ExprTrait::add(Expr::col(self.revision), 1),
            )
            .col_expr(self.updated, Expr::value(Value::from(Utc::now())));
        for (column, value) in set {
            update = update.col_expr(column, Expr::value(value));
        }
        update
            .filter(self.pk.is_in(pks.clone()))
            .exec(&txn)
            .await
            .map_err(|e| db_error("bulk update", e))?;
        let after = E::find()
            .filter(self.pk.is_in(pks))
            .order_by_asc(self.pk)
            .all(&txn)
            .await
            .map_err(|e| db_error("re-reading updated rows", e))?;
        let mut events = Vec::with_capacity(after.len());
        for (old, model) in before.iter().zip(&after) {
            let previous = self.all_tracked(old)?;
            if let Some(e) = self
                .save_event(&txn, model, previous, SignalType::Save, None)
                .await?
            {
                events.push(e);
            }
        }
        self.finish(txn, events).await?;
        Ok(after.len() as u64)
    }

    pub(super) async fn locked(&self, txn: &DatabaseTransaction, pk: Value) -> Result<E::Model> {
        let mut select = E::find().filter(self.pk.eq(pk.clone()));
        if txn.get_database_backend() != sea_orm::DbBackend::Sqlite {
            select = select.lock_exclusive();
        }
        select
            .one(txn)
            .await
            .map_err(|e| db_error("reading a master row", e))?
            .ok_or_else(|| Error::invalid_data(format!("no row with primary key {pk:?}")))
    }

    pub(super) fn is_synced(&self, model: &E::Model) -> bool {
        self.is_sync_instance.as_ref().is_none_or(|f| f(model))
    }

    /// Encodes the events as the system said, writes them (outbox) and commits, then wakes
    /// the relay or publishes (after commit). Fails before anything is committed when no
    /// started system registered the table.
    pub(super) async fn finish(
        &self,
        txn: DatabaseTransaction,
        events: Vec<(Envelope, Route)>,
    ) -> Result<()> {
        let binding = self.slot.get(self.model.cqrs_id())?;
        let events = events
            .into_iter()
            .map(|(envelope, route)| {
                EncodedEvent::encode(envelope, route, binding.codec, binding.message_ttl)
            })
            .collect::<Result<Vec<_>>>()?;
        match &self.dispatch {
            Dispatch::Outbox(outbox) => {
                if !events.is_empty() {
                    outbox.write(&txn, &events).await?;
                }
                txn.commit().await.map_err(|e| db_error("commit", e))?;
                if !events.is_empty() {
                    outbox.wake();
                }
            }
            Dispatch::AfterCommit => {
                txn.commit().await.map_err(|e| db_error("commit", e))?;
                let pending: Vec<_> = events
                    .into_iter()
                    .map(|event| binding.publisher.publish_encoded(event))
                    .collect();
                for result in futures_util::future::join_all(pending).await {
                    if let Err(e) = result {
                        tracing::error!(cqrs_id = %self.model.cqrs_id(), error = %e, "CQRS couldn't be published");
                    }
                }
            }
        }
        Ok(())
    }
}

impl<E: EntityTrait> From<&MasterTable<E>> for MasterRegistration {
    fn from(table: &MasterTable<E>) -> Self {
        let registration =
            MasterRegistration::new(table.model.clone()).with_slot(table.slot.clone());
        match &table.dispatch {
            Dispatch::Outbox(outbox) => registration.with_outbox(outbox.store()),
            Dispatch::AfterCommit => registration,
        }
    }
}

pub(super) fn revision_of(value: &Value) -> Result<i64> {
    match value {
        Value::BigInt(Some(v)) => Ok(*v),
        Value::Int(Some(v)) => Ok(i64::from(*v)),
        Value::SmallInt(Some(v)) => Ok(i64::from(*v)),
        other => Err(Error::invalid_data(format!(
            "cqrs_revision is not an integer: {other:?}"
        ))),
    }
}

/// Sets the revision in whichever integer type the model's field has.
fn set_revision<A: ActiveModelTrait>(
    row: &mut A,
    column: <A::Entity as EntityTrait>::Column,
    revision: i64,
) -> Result<()> {
    let candidates = [
        Value::BigInt(Some(revision)),
        Value::Int(i32::try_from(revision).ok()),
        Value::SmallInt(i16::try_from(revision).ok()),
    ];
    set_first(row, column, candidates, "cqrs_revision")
}

/// Sets `cqrs_updated` in whichever datetime type the model's field has.
fn set_updated<A: ActiveModelTrait>(
    row: &mut A,
    column: <A::Entity as EntityTrait>::Column,
    now: chrono::DateTime<Utc>,
) -> Result<()> {
    let candidates = [
        Value::ChronoDateTimeUtc(Some(now)),
        Value::ChronoDateTimeWithTimeZone(Some(now.fixed_offset())),
        Value::ChronoDateTime(Some(now.naive_utc())),
    ];
    set_first(row, column, candidates, "cqrs_updated")
}

fn set_first<A: ActiveModelTrait>(
    row: &mut A,
    column: <A::Entity as EntityTrait>::Column,
    candidates: impl IntoIterator<Item = Value>,
    name: &str,
) -> Result<()> {
    for value in candidates {
        if row.try_set(column, value).is_ok() {
            return Ok(());
        }
    }
    Err(Error::config(
        name,
        "the model's field has a type the adapters cannot set",
    ))
}
