//! Reading a master table in primary-key order: SYNC of selected rows, bulk dump pages and
//! the master's side of the diff tools (WIRE.md section 7).

use cqrs_actors::{JsonObject, Result, SignalType, values};
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait,
    DatabaseTransaction, EntityTrait, IntoActiveModel, ModelTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait, Value,
};
use serde_json::Value as Json;

use super::MasterTable;
use crate::columns::revision_of;
use crate::columns::to_json;
use crate::db_error;

impl<E> MasterTable<E>
where
    E: EntityTrait,
    E::Model: IntoActiveModel<E::ActiveModel> + Sync,
    E::ActiveModel: ActiveModelTrait<Entity = E> + ActiveModelBehavior + Send,
{
    /// Records a SYNC of every row matching `filter`, in primary-key order and in batches of
    /// `batch` rows, to every replica or to one replica `queue` (django-cqrs `cqrs_sync`).
    /// Returns how many rows were synced.
    pub async fn sync<C>(
        &self,
        db: &C,
        filter: Condition,
        queue: Option<&str>,
        batch: u64,
    ) -> Result<u64>
    where
        C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
    {
        let mut after: Option<Value> = None;
        let mut synced = 0;
        loop {
            let mut select = E::find()
                .filter(filter.clone())
                .order_by_asc(self.pk)
                .limit(batch.max(1));
            if let Some(last) = after.take() {
                select = select.filter(self.pk.gt(last));
            }
            let txn = crate::begin_write(db).await?;
            let rows = select
                .all(&txn)
                .await
                .map_err(|e| db_error("reading rows to sync", e))?;
            let Some(last) = rows.last() else {
                txn.commit().await.map_err(|e| db_error("commit", e))?;
                return Ok(synced);
            };
            after = Some(last.get(self.pk));
            let mut events = Vec::with_capacity(rows.len());
            for model in &rows {
                if let Some(e) = self
                    .save_event(&txn, model, None, SignalType::Sync, queue)
                    .await?
                {
                    events.push(e);
                    synced += 1;
                }
            }
            self.finish(txn, events).await?;
        }
    }

    /// One page of a bulk dump: up to `limit` rows after primary key `after` (none: from the
    /// start), in primary-key order, as `instance_data` objects (django-cqrs `cqrs_bulk_dump`
    /// lines). Pass the last row's `id` back as `after` for the next page.
    pub async fn dump_page<C>(
        &self,
        db: &C,
        after: Option<Value>,
        limit: u64,
    ) -> Result<Vec<(Value, JsonObject)>>
    where
        C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
    {
        let txn = crate::begin_write(db).await?;
        let mut select = E::find().order_by_asc(self.pk).limit(limit.max(1));
        if let Some(after) = after {
            select = select.filter(self.pk.gt(after));
        }
        let rows = select
            .all(&txn)
            .await
            .map_err(|e| db_error("reading rows to dump", e))?;
        let mut out = Vec::with_capacity(rows.len());
        for model in &rows {
            if self.is_synced(model) {
                out.push((model.get(self.pk), self.instance_data(&txn, model).await?));
            }
        }
        txn.commit().await.map_err(|e| db_error("commit", e))?;
        Ok(out)
    }

    /// One page of the master's side of a diff: `[pk, revision]` pairs in primary-key order
    /// (django-cqrs `cqrs_diff_master`), skipping rows `is_sync_instance` filters out.
    pub async fn revisions_page<C>(
        &self,
        db: &C,
        after: Option<Value>,
        limit: u64,
    ) -> Result<Vec<(Json, i64)>>
    where
        C: ConnectionTrait,
    {
        let mut select = E::find().order_by_asc(self.pk).limit(limit.max(1));
        if let Some(after) = after {
            select = select.filter(self.pk.gt(after));
        }
        let rows = select
            .all(db)
            .await
            .map_err(|e| db_error("reading revisions", e))?;
        rows.iter()
            .filter(|m| self.is_synced(m))
            .map(|m| {
                Ok((
                    to_json(&m.get(self.pk))?,
                    revision_of(&m.get(self.revision))?,
                ))
            })
            .collect()
    }

    /// Of these primary keys, the ones with no row on the master (django-cqrs
    /// `cqrs_deleted_diff_master`).
    pub async fn missing<C>(&self, db: &C, pks: Vec<Value>) -> Result<Vec<Json>>
    where
        C: ConnectionTrait,
    {
        let rows = E::find()
            .filter(self.pk.is_in(pks.clone()))
            .all(db)
            .await
            .map_err(|e| db_error("reading primary keys", e))?;
        let present: std::collections::HashSet<String> = rows
            .iter()
            .map(|m| to_json(&m.get(self.pk)).map(|j| values::pk_text(&j)))
            .collect::<Result<_>>()?;
        pks.iter()
            .map(to_json)
            .filter(|j| {
                j.as_ref()
                    .map_or(true, |j| !present.contains(&values::pk_text(j)))
            })
            .collect()
    }
}
