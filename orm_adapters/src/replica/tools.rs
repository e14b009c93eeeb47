//! The replica's side of the repair tools (WIRE.md section 7): primary-key pages, the
//! revision diff against the master, deletes by key and bulk load.

use cqrs_actors::{Applied, JsonObject, ReplicaEvent, ReplicaHandler, Result, SignalType, values};
use sea_orm::ConnectionTrait;
use serde_json::Value as Json;

use super::ReplicaTable;
use crate::columns::to_json;
use crate::db_error;
use crate::sql::Query;

impl ReplicaTable {
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
