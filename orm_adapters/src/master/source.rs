//! [`MasterSource`]: what the command line's master-side tools (bulk dump, sync, the diff
//! pipelines) read and publish, whether the table is a [`MasterTable`] of this service or a
//! [`MasterView`](super::MasterView) of a table another service writes.

use std::sync::Arc;

use cqrs_actors::{JsonObject, Publisher, Result, SignalType};
use futures_util::future::BoxFuture;
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, ColumnTrait, Condition, DatabaseConnection, EntityTrait,
    IntoActiveModel, ModelTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};
use serde_json::Value as Json;

use super::MasterTable;
use crate::columns::{columns_of, revision_of, to_json};
use crate::db_error;
use crate::filter::Filter;

/// One master row as the tools read it.
#[derive(Debug, Clone, PartialEq)]
pub struct MasterRow {
    /// The primary key, in its wire form.
    pub pk: Json,
    /// `cqrs_revision`.
    pub revision: i64,
    /// `instance_data` (with `cqrs_revision` and `cqrs_updated`), when asked for.
    pub data: Option<JsonObject>,
}

/// One page of rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowPage {
    /// The rows the table replicates, in primary-key order.
    pub rows: Vec<MasterRow>,
    /// The last primary key read (replicated or not): pass it back as `after` (`None`: no
    /// more rows).
    pub last: Option<Json>,
}

/// One page of a SYNC run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncPage {
    /// Rows read.
    pub processed: u64,
    /// SYNCs sent (rows the table filters out, or that produce nothing, are not).
    pub synced: u64,
    /// The last primary key read: pass it back as `after` (`None`: no more rows).
    pub last: Option<Json>,
}

/// A master table as the command line's tools see it: rows in primary-key order, and SYNCs.
pub trait MasterSource: Send + Sync {
    /// The CQRS id.
    fn cqrs_id(&self) -> &str;

    /// Up to `limit` rows matching `filter` after primary key `after` (none: from the start),
    /// in primary-key order, with their `instance_data` when `with_data`. Rows the table does
    /// not replicate (`is_sync_instance`) are left out of `rows`; read on until `last` is
    /// `None`.
    fn rows<'a>(
        &'a self,
        filter: &'a Filter,
        after: Option<Json>,
        limit: u64,
        with_data: bool,
    ) -> BoxFuture<'a, Result<RowPage>>;

    /// How many rows match `filter` (for progress).
    fn count<'a>(&'a self, filter: &'a Filter) -> BoxFuture<'a, Result<u64>>;

    /// Of these primary keys, the ones with no row here.
    fn missing(&self, pks: Vec<Json>) -> BoxFuture<'_, Result<Vec<Json>>>;

    /// Sends a SYNC of up to `limit` rows matching `filter` after `after`, to every replica or
    /// to one replica `queue`, and resolves once the broker confirmed them all (a master
    /// table with an outbox: once they are in it; flush the system to wait for the broker).
    fn sync_page<'a>(
        &'a self,
        filter: &'a Filter,
        after: Option<Json>,
        limit: u64,
        queue: Option<&'a str>,
        publisher: &'a Publisher,
    ) -> BoxFuture<'a, Result<SyncPage>>;
}

/// A [`MasterTable`] on a connection, as a [`MasterSource`] (see [`MasterTable::source`]).
struct TableSource<E: EntityTrait> {
    table: MasterTable<E>,
    db: DatabaseConnection,
}

impl<E> MasterTable<E>
where
    E: EntityTrait + Sync,
    E::Model: IntoActiveModel<E::ActiveModel> + Sync,
    E::ActiveModel: ActiveModelTrait<Entity = E> + ActiveModelBehavior + Send,
{
    /// This table on `db`, for the command line's tools: dumps and SYNCs use the table's
    /// serializer, field list, wire keys, `is_sync_instance`, meta and dispatch.
    #[must_use]
    pub fn source(&self, db: DatabaseConnection) -> Arc<dyn MasterSource> {
        Arc::new(TableSource {
            table: self.clone(),
            db,
        })
    }

    /// `filter` against this table's columns; wire keys name their columns too.
    pub(super) fn condition(&self, filter: &Filter) -> Result<Condition> {
        let columns = columns_of::<E>()?;
        let pk_name = sea_orm::IdenStatic::as_str(&self.pk);
        let pk = columns.iter().position(|c| c.name == pk_name).unwrap_or(0);
        let resolve = |field: &str| {
            self.wire_keys
                .iter()
                .find(|(_, key)| key == field)
                .and_then(|(c, _)| {
                    let name = sea_orm::IdenStatic::as_str(c);
                    columns.iter().position(|col| col.name == name)
                })
        };
        filter.condition(&columns, pk, &resolve)
    }

    async fn read_models(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        filter: &Filter,
        after: Option<Json>,
        limit: u64,
    ) -> Result<Vec<E::Model>> {
        let mut select = E::find()
            .filter(self.condition(filter)?)
            .order_by_asc(self.pk)
            .limit(limit.max(1));
        if let Some(after) = after {
            let columns = columns_of::<E>()?;
            let pk_name = sea_orm::IdenStatic::as_str(&self.pk);
            let column = columns
                .iter()
                .find(|c| c.name == pk_name)
                .ok_or_else(|| cqrs_actors::Error::handler("primary key column not found"))?;
            select = select.filter(self.pk.gt(column.to_db(&after)?));
        }
        select
            .all(txn)
            .await
            .map_err(|e| db_error("reading master rows", e))
    }
}

impl<E> MasterSource for TableSource<E>
where
    E: EntityTrait + Sync,
    E::Model: IntoActiveModel<E::ActiveModel> + Sync,
    E::ActiveModel: ActiveModelTrait<Entity = E> + ActiveModelBehavior + Send,
{
    fn cqrs_id(&self) -> &str {
        self.table.model.cqrs_id()
    }

    fn rows<'a>(
        &'a self,
        filter: &'a Filter,
        after: Option<Json>,
        limit: u64,
        with_data: bool,
    ) -> BoxFuture<'a, Result<RowPage>> {
        Box::pin(async move {
            let t = &self.table;
            let txn = crate::begin_write(&self.db).await?;
            let models = t.read_models(&txn, filter, after, limit).await?;
            let last = models.last().map(|m| to_json(&m.get(t.pk))).transpose()?;
            let mut out = Vec::with_capacity(models.len());
            for model in models.iter().filter(|m| t.is_synced(m)) {
                out.push(MasterRow {
                    pk: to_json(&model.get(t.pk))?,
                    revision: revision_of(&model.get(t.revision))?,
                    data: if with_data {
                        Some(t.instance_data(&txn, model).await?)
                    } else {
                        None
                    },
                });
            }
            txn.commit().await.map_err(|e| db_error("commit", e))?;
            Ok(RowPage { rows: out, last })
        })
    }

    fn count<'a>(&'a self, filter: &'a Filter) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            E::find()
                .filter(self.table.condition(filter)?)
                .count(&self.db)
                .await
                .map_err(|e| db_error("counting master rows", e))
        })
    }

    fn missing(&self, pks: Vec<Json>) -> BoxFuture<'_, Result<Vec<Json>>> {
        Box::pin(async move {
            let columns = columns_of::<E>()?;
            let pk_name = sea_orm::IdenStatic::as_str(&self.table.pk);
            let column = columns
                .iter()
                .find(|c| c.name == pk_name)
                .ok_or_else(|| cqrs_actors::Error::handler("primary key column not found"))?;
            let keys = pks
                .iter()
                .map(|k| column.to_db(k))
                .collect::<Result<Vec<_>>>()?;
            self.table.missing(&self.db, keys).await
        })
    }

    fn sync_page<'a>(
        &'a self,
        filter: &'a Filter,
        after: Option<Json>,
        limit: u64,
        queue: Option<&'a str>,
        _publisher: &'a Publisher,
    ) -> BoxFuture<'a, Result<SyncPage>> {
        Box::pin(async move {
            let t = &self.table;
            let txn = crate::begin_write(&self.db).await?;
            let models = t.read_models(&txn, filter, after, limit).await?;
            let mut page = SyncPage {
                processed: models.len() as u64,
                synced: 0,
                last: models.last().map(|m| to_json(&m.get(t.pk))).transpose()?,
            };
            let mut events = Vec::with_capacity(models.len());
            for model in &models {
                if let Some(e) = t
                    .save_event(&txn, model, None, SignalType::Sync, queue)
                    .await?
                {
                    events.push(e);
                    page.synced += 1;
                }
            }
            t.finish(txn, events).await?;
            Ok(page)
        })
    }
}
