//! [`MasterTable`]: a SeaORM entity this service owns. Writes through it keep `cqrs_revision`
//! and `cqrs_updated` right and record one event per changed row, in the same transaction
//! (outbox) or right after commit (direct).
//!
//! - this file: the table, its options and its registration with the system;
//! - `writes`: inserts, updates and deletes, and how their events leave;
//! - `events`: the events' `instance_data`, `previous_data`, meta and correlation id;
//! - `scan`: sync, bulk dump and the diff primitives;
//! - `source`: [`MasterSource`], what the command line's tools read, for this table;
//! - `view`: [`MasterView`], a master table of another service, read by name.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use cqrs_actors::{
    Error, JsonObject, MasterModel, MasterRegistration, MasterSlot, Result, SignalType,
};
use futures_util::future::BoxFuture;
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, DatabaseTransaction, EntityTrait, IntoActiveModel,
    Iterable, PrimaryKeyToColumn,
};
use serde_json::Value as Json;

use crate::outbox::Outbox;

mod events;
mod scan;
mod source;
mod sync_rows;
mod view;
mod writes;

pub use source::{MasterRow, MasterSource, RowPage, SyncPage};
pub use sync_rows::SyncRows;
pub use view::MasterView;

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
