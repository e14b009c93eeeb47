//! Applying a batch in one transaction: the stored revisions, the decisions of WIRE.md
//! section 4, and the net writes (deletes, then revision-guarded multi-row upserts).

use std::collections::{HashMap, HashSet};

use cqrs_actors::revision::{Decision, decide};
use cqrs_actors::{Applied, ReplicaEvent, Result, SignalType, Skip, values};
use sea_orm::{ConnectionTrait, DatabaseTransaction, Value};

use super::pg_arrays;
use super::{Prepared, ReplicaTable, RowChange};
use crate::columns::{Column, to_json};
use crate::db_error;
use crate::sql::{Dialect, Query};

impl ReplicaTable {
    /// Applies prepared events in one transaction and commits.
    pub(super) async fn apply_in_transaction(
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
        let mut seen = HashSet::new();
        for (_, p) in items {
            if seen.insert(p.pk_text.as_str()) {
                keys.push(p);
            }
        }
        // With tombstones the keys are locked first, so that what is read below is what a
        // concurrent transaction on the same rows committed.
        let buried = match &self.tombstones {
            Some(t) => {
                let keys: Vec<&str> = keys.iter().map(|p| p.pk_text.as_str()).collect();
                t.lock(txn, &self.table, &keys).await?;
                t.load(txn, &self.table, &keys).await?
            }
            None => HashMap::new(),
        };
        let values: Vec<Value> = keys.iter().map(|p| p.pk.clone()).collect();
        let stored = self
            .read_revisions(txn, &values, self.select_for_update)
            .await?;
        let existing: HashSet<String> = stored.keys().cloned().collect();
        let mut ledger = Ledger {
            stored,
            buried,
            tombstones: self.tombstones.is_some(),
        };
        if self.hooks.any() {
            return self.apply_with_hooks(txn, items, &mut ledger).await;
        }
        let mut plan = Plan::default();
        let mut outcome = Vec::with_capacity(items.len());
        for (i, (event, p)) in items.iter().enumerate() {
            let step = ledger.step(event, p);
            match step.effect {
                Effect::Delete => plan.delete(&p.pk_text, i),
                Effect::Write => plan.write(&p.pk_text, i, p.signal == SignalType::Sync),
                Effect::Nothing => {}
            }
            outcome.push(step.applied);
        }
        self.execute(txn, items, &plan, &existing).await?;
        if let Some(t) = &self.tombstones {
            let dead: Vec<(&str, i64)> = plan
                .deleted()
                .filter_map(|i| ledger.tombstone(items[i].1))
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
        ledger: &mut Ledger,
    ) -> Result<Vec<Applied>> {
        let mut outcome = Vec::with_capacity(items.len());
        for (event, p) in items {
            let step = ledger.step(event, p);
            let change = || RowChange {
                signal: p.signal,
                pk: p.pk_json.clone(),
                revision: p.revision,
                stored_revision: step.current,
                data: p.data.clone(),
                previous_data: event.envelope().previous_data.clone(),
                meta: event.envelope().meta.clone(),
            };
            let single = [(*event, *p)];
            match step.effect {
                Effect::Delete => {
                    match &self.hooks.delete {
                        Some(hook) => hook(txn, &change()).await?,
                        None => {
                            let mut plan = Plan::default();
                            plan.delete(&p.pk_text, 0);
                            self.execute(txn, &single, &plan, &HashSet::new()).await?;
                        }
                    }
                    if let (Some(t), Some(dead)) = (&self.tombstones, ledger.tombstone(p)) {
                        t.store(txn, &self.table, &[dead]).await?;
                    }
                }
                Effect::Write => {
                    let hook = if step.current.is_none() {
                        &self.hooks.create
                    } else {
                        &self.hooks.update
                    };
                    match hook {
                        Some(hook) => hook(txn, &change()).await?,
                        None => {
                            let mut plan = Plan::default();
                            plan.write(&p.pk_text, 0, true);
                            let existing: HashSet<String> = step
                                .current
                                .map(|_| p.pk_text.clone())
                                .into_iter()
                                .collect();
                            self.execute(txn, &single, &plan, &existing).await?;
                        }
                    }
                }
                Effect::Nothing => {}
            }
            outcome.push(step.applied);
        }
        Ok(outcome)
    }

    /// The stored revision of each key (by its text form), the rows locked when `lock` is set
    /// and the database has row locks.
    pub(super) async fn read_revisions(
        &self,
        db: &impl ConnectionTrait,
        keys: &[Value],
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
                .value_list(chunk.iter().cloned());
            if lock && self.dialect.has_row_locks() {
                q.push(" FOR UPDATE");
            }
            let rows = db
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
        let deletes: Vec<Value> = plan.deleted().map(|i| items[i].1.pk.clone()).collect();
        self.delete_keys(txn, &deletes).await?;
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
            if let Some(stmt) = self.upsert_unnest(&shape, write, &rows) {
                txn.execute_raw(stmt)
                    .await
                    .map_err(|e| db_error("writing rows", e))?;
                continue;
            }
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

    /// `DELETE ... WHERE pk IN (...)`, chunked; returns how many rows went.
    pub(super) async fn delete_keys(
        &self,
        db: &impl ConnectionTrait,
        keys: &[Value],
    ) -> Result<u64> {
        let pk = &self.columns[self.pk];
        let mut deleted = 0;
        for chunk in keys.chunks(self.dialect.max_values()) {
            let mut q = Query::new(self.dialect);
            q.push("DELETE FROM ")
                .ident(&self.table)
                .push(" WHERE ")
                .ident(&pk.name)
                .push(" IN ")
                .value_list(chunk.iter().cloned());
            deleted += db
                .execute_raw(q.build())
                .await
                .map_err(|e| db_error("deleting rows", e))?
                .rows_affected();
        }
        Ok(deleted)
    }

    /// `INSERT ... ON CONFLICT/DUPLICATE KEY UPDATE`, with the SAVE guard
    /// `stored cqrs_revision < incoming` for [`Write::GuardedUpsert`].
    fn upsert(&self, shape: &[usize], write: Write, rows: &[&Prepared]) -> sea_orm::Statement {
        let names: Vec<&str> = shape
            .iter()
            .map(|&i| self.columns[i].name.as_str())
            .collect();
        let mut q = Query::new(self.dialect);
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
        self.on_conflict(&mut q, &names, write);
        q.build()
    }

    /// PostgreSQL, rows too many for one `VALUES` statement: all of them in one statement, one
    /// array per column (see `pg_arrays`); `None` where that does not apply.
    fn upsert_unnest(
        &self,
        shape: &[usize],
        write: Write,
        rows: &[&Prepared],
    ) -> Option<sea_orm::Statement> {
        let columns: Vec<&Column> = shape.iter().map(|&i| &self.columns[i]).collect();
        // One `VALUES` statement is faster up to its size; past it, one array statement beats
        // several `VALUES` ones (`benches/sea_orm.rs` at batch 1000, `benches/cli.rs` at 10,000).
        let fits_values = rows.len() * shape.len() <= self.dialect.max_values();
        if self.dialect != Dialect::Postgres || fits_values || !pg_arrays::fits(&columns) {
            return None;
        }
        let arrays = pg_arrays::literals(
            shape.len(),
            rows.iter().map(|p| p.row.iter().map(|(_, v)| v)),
        )?;
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        let mut q = Query::new(self.dialect);
        q.push("INSERT INTO ")
            .ident(&self.table)
            .push(" ")
            .ident_list(names.iter().copied())
            .push(" SELECT * FROM unnest(");
        for (i, (column, array)) in columns.iter().zip(arrays).enumerate() {
            if i > 0 {
                q.push(", ");
            }
            q.value(Value::String(Some(array)))
                .push("::text::")
                .push(pg_arrays::element_type(column.kind))
                .push("[]");
        }
        q.push(")");
        self.on_conflict(&mut q, &names, write);
        Some(q.build())
    }

    /// The conflict clause of a write: none for [`Write::Insert`], an update of every column
    /// for [`Write::Upsert`], and one guarded by `stored cqrs_revision < incoming` for
    /// [`Write::GuardedUpsert`].
    fn on_conflict(&self, q: &mut Query, names: &[&str], write: Write) {
        let d = self.dialect;
        if write == Write::Insert {
            return;
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
    }
}

fn read_revision(row: &sea_orm::QueryResult, index: usize, column: &Column) -> Result<i64> {
    crate::columns::revision_of(&column.read(row, index)?)
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

/// The revisions of a batch's keys as the batch goes: read from the database, then moved by
/// each event in order. Both apply paths decide through it.
struct Ledger {
    stored: HashMap<String, i64>,
    buried: HashMap<String, i64>,
    tombstones: bool,
}

/// What one event does to its row.
enum Effect {
    Delete,
    Write,
    Nothing,
}

struct Step {
    /// The stored revision before the event.
    current: Option<i64>,
    applied: Applied,
    effect: Effect,
}

impl Ledger {
    /// Decides one event (WIRE.md section 4), logs the notable cases and moves the key's state.
    fn step(&mut self, event: &ReplicaEvent, p: &Prepared) -> Step {
        let current = self.stored.get(&p.pk_text).copied();
        if p.signal == SignalType::Delete {
            if self.tombstones {
                let t = self.buried.entry(p.pk_text.clone()).or_insert(p.revision);
                *t = (*t).max(p.revision);
            }
            self.stored.remove(&p.pk_text);
            let applied = if current.is_some() {
                Applied::Deleted
            } else {
                Applied::Skipped(Skip::Missing)
            };
            return Step {
                current,
                applied,
                effect: Effect::Delete,
            };
        }
        let decision = decide(
            p.signal,
            current,
            p.revision,
            self.buried.get(&p.pk_text).copied(),
        );
        log_decision(event, p, current, decision);
        let effect = if decision.writes() {
            self.stored.insert(p.pk_text.clone(), p.revision);
            Effect::Write
        } else {
            Effect::Nothing
        };
        Step {
            current,
            applied: applied(decision),
            effect,
        }
    }

    /// The tombstone to store for a deleted key.
    fn tombstone<'a>(&self, p: &'a Prepared) -> Option<(&'a str, i64)> {
        self.buried
            .get(&p.pk_text)
            .map(|r| (p.pk_text.as_str(), *r))
    }
}

fn applied(decision: Decision) -> Applied {
    match decision {
        Decision::Create => Applied::Created,
        Decision::Apply | Decision::ApplyDowngrade => Applied::Updated,
        Decision::ApplyAfterGap { missing } => Applied::UpdatedAfterGap { missing },
        Decision::IgnoreStale => Applied::Skipped(Skip::Stale),
        Decision::IgnoreDuplicate => Applied::Skipped(Skip::Duplicate),
        Decision::IgnoreDeleted => Applied::Skipped(Skip::Deleted),
    }
}

fn log_decision(event: &ReplicaEvent, p: &Prepared, stored: Option<i64>, decision: Decision) {
    let pk = tracing::field::display(values::excerpt(&p.pk_text));
    let (cqrs_id, incoming) = (event.cqrs_id(), p.revision);
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
