//! The writes of a [`MasterTable`]: each bumps `cqrs_revision`, sets `cqrs_updated` and
//! records one event per changed row, then commits and hands the events over.

use chrono::Utc;
use cqrs_actors::{EncodedEvent, Envelope, Error, ErrorKind, Result, Route, SignalType};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait,
    DatabaseTransaction, EntityTrait, IntoActiveModel, ModelTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait, Value,
};

use super::{Dispatch, MasterTable};
use crate::columns::revision_of;
use crate::db_error;

impl<E> MasterTable<E>
where
    E: EntityTrait,
    E::Model: IntoActiveModel<E::ActiveModel> + Sync,
    E::ActiveModel: ActiveModelTrait<Entity = E> + ActiveModelBehavior + Send,
{
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
        let old = self
            .locked_rows(&txn, filter, "selecting rows to delete")
            .await?;
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
        let before = self
            .locked_rows(&txn, filter, "selecting rows to update")
            .await?;
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

    /// The row with primary key `pk`, locked until the transaction ends.
    pub(super) async fn locked(&self, txn: &DatabaseTransaction, pk: Value) -> Result<E::Model> {
        let filter = Condition::all().add(self.pk.eq(pk.clone()));
        self.locked_rows(txn, filter, "reading a master row")
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| Error::invalid_data(format!("no row with primary key {pk:?}")))
    }

    /// The rows matching `filter` in primary-key order, locked until the transaction ends
    /// (SQLite has no row locks: its write transaction holds the whole database).
    async fn locked_rows(
        &self,
        txn: &DatabaseTransaction,
        filter: Condition,
        what: &str,
    ) -> Result<Vec<E::Model>> {
        let mut select = E::find().filter(filter).order_by_asc(self.pk);
        if txn.get_database_backend() != sea_orm::DbBackend::Sqlite {
            select = select.lock_exclusive();
        }
        select.all(txn).await.map_err(|e| db_error(what, e))
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
                if events.is_empty() {
                    txn.commit().await.map_err(|e| db_error("commit", e))?;
                    return Ok(());
                }
                let ids = outbox.write(&txn, &events).await?;
                txn.commit().await.map_err(|e| db_error("commit", e))?;
                // Given the caller's transaction, this commit was a savepoint and the events
                // are not visible until the caller commits (or never, after a rollback); the
                // relay only takes ids it reads from the table, so handing them over is safe.
                if let Some(ids) = ids {
                    outbox.committed(ids, events);
                }
                outbox.wake();
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
