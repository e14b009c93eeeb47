//! The replica's side of the repair tools (WIRE.md section 7): primary-key pages, the
//! revision diff against the master, deletes by key and bulk load.

use cqrs_actors::{Applied, JsonObject, ReplicaEvent, ReplicaHandler, Result, SignalType, values};
use sea_orm::ConnectionTrait;
use serde_json::Value as Json;

use super::ReplicaTable;
use crate::columns::to_json;
use crate::db_error;
use crate::filter::Filter;
use crate::sql::Query;
use sea_orm::sea_query::{self, Alias, Expr, ExprTrait, Order};

impl ReplicaTable {
    /// One page of the replica's primary keys after `after` (none: from the start), in order
    /// (django-cqrs `cqrs_deleted_diff_replica`).
    /// Only rows matching `filter` are listed (fields are column names, `pk`, or renamed keys).
    pub async fn pks_page(
        &self,
        filter: &Filter,
        after: Option<&Json>,
        limit: u64,
    ) -> Result<Vec<Json>> {
        let pk = &self.columns[self.pk];
        let resolve = |field: &str| {
            self.renames
                .iter()
                .chain(&self.mapping)
                .flat_map(|m| m.iter())
                .find(|(key, _)| key == field)
                .map(|(_, index)| *index)
        };
        let mut select = sea_query::Query::select();
        select
            .column(Alias::new(&pk.name))
            .from(Alias::new(&self.table))
            .cond_where(filter.condition(&self.columns, self.pk, &resolve)?)
            .order_by(Alias::new(&pk.name), Order::Asc)
            .limit(Ord::max(limit, 1));
        if let Some(after) = after {
            select.and_where(Expr::col(Alias::new(&pk.name)).gt(pk.to_db(after)?));
        }
        let stmt = self.db.get_database_backend().build(&select);
        let rows = self
            .db
            .query_all_raw(stmt)
            .await
            .map_err(|e| db_error("reading primary keys", e))?;
        rows.iter().map(|r| to_json(&pk.read(r, 0)?)).collect()
    }

    /// Of the master's `[pk, revision]` pairs, the primary keys whose row is missing here or
    /// has another revision (django-cqrs `cqrs_diff_replica`).
    pub async fn diff(&self, master: &[(Json, i64)]) -> Result<Vec<Json>> {
        let pk = &self.columns[self.pk];
        let keys = master
            .iter()
            .map(|(k, _)| pk.to_db(k))
            .collect::<Result<Vec<_>>>()?;
        let stored = self.read_revisions(&self.db, &keys, false).await?;
        let mut out = Vec::new();
        for (key, (_, revision)) in keys.iter().zip(master) {
            let json = to_json(key)?;
            if stored.get(&values::pk_text(&json)) != Some(revision) {
                out.push(json);
            }
        }
        Ok(out)
    }

    /// Deletes rows by primary key without hooks (django-cqrs `cqrs_deleted_sync_replica`).
    /// Returns how many rows went.
    pub async fn delete_pks(&self, pks: &[Json]) -> Result<u64> {
        let pk = &self.columns[self.pk];
        let keys = pks
            .iter()
            .map(|k| pk.to_db(k))
            .collect::<Result<Vec<_>>>()?;
        self.delete_keys(&self.db, &keys).await
    }

    /// Deletes every row (django-cqrs `cqrs_bulk_load --clear`). Returns how many went.
    pub async fn clear(&self) -> Result<u64> {
        let mut q = Query::new(self.dialect);
        q.push("DELETE FROM ").ident(&self.table);
        let done = self
            .db
            .execute_raw(q.build())
            .await
            .map_err(|e| db_error("clearing the table", e))?;
        Ok(done.rows_affected())
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
}
