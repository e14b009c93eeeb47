//! [`MasterView`]: a master table that another service writes (a Django master, say), read by
//! table name for the tools: bulk dump, SYNC and the diff pipelines. It never writes.

use std::fmt;
use std::sync::Arc;

use cqrs_actors::{Error, JsonObject, Publisher, Result, Route, SignalType};
use futures_util::future::{BoxFuture, try_join_all};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Order, Query, SelectStatement};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use serde_json::Value as Json;

use super::source::{MasterRow, MasterSource, RowPage, SyncPage};
use crate::columns::{revision_of, to_json};
use crate::db_error;
use crate::filter::Filter;
use crate::introspect::{TableInfo, describe};

/// A master table read by name, its columns from the database: what the command line uses
/// for a master it does not own.
///
/// `instance_data` is built the way django-cqrs's default serializer builds it: one key per
/// column (or per [`with_fields`](Self::with_fields) column), named by the column unless
/// [`with_wire_keys`](Self::with_wire_keys) says otherwise, plus `cqrs_revision` and
/// `cqrs_updated`. SYNCs are published directly and confirmed by the broker.
///
/// ```no_run
/// use cqrs_orm_adapters::MasterView;
/// # async fn run(db: sea_orm::DatabaseConnection) -> cqrs_actors::Result<()> {
/// let books = MasterView::introspect("book", db, "master_app_book")
///     .await?
///     .with_wire_keys([("author_id", "author")])?;
/// # let _ = books; Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct MasterView {
    cqrs_id: String,
    db: DatabaseConnection,
    info: Arc<TableInfo>,
    revision: usize,
    updated: usize,
    /// The columns `instance_data` carries, in order.
    fields: Vec<usize>,
    /// The wire key of each column, by position.
    keys: Vec<String>,
}

impl fmt::Debug for MasterView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterView")
            .field("cqrs_id", &self.cqrs_id)
            .field("table", &self.info.table)
            .finish()
    }
}

impl MasterView {
    /// The table named `table` on `db` as the master of `cqrs_id`. It needs a single-column
    /// primary key, `cqrs_revision` and `cqrs_updated`, and only column types the adapters
    /// convert; anything else is a configuration error naming the table.
    pub async fn introspect(
        cqrs_id: impl Into<String>,
        db: DatabaseConnection,
        table: &str,
    ) -> Result<Self> {
        let info = describe(&db, table).await?;
        let revision = info.find("cqrs_revision").unwrap_or_default();
        let updated = info.find("cqrs_updated").unwrap_or_default();
        let fields = (0..info.columns.len())
            .filter(|i| *i != revision && *i != updated)
            .collect();
        let keys = info.columns.iter().map(|c| c.name.clone()).collect();
        Ok(Self {
            cqrs_id: cqrs_id.into(),
            db,
            info: Arc::new(info),
            revision,
            updated,
            fields,
            keys,
        })
    }

    /// Sends `column` under `key` (`("author_id", "author")`: Django's foreign keys travel
    /// under the field name); filters may use either name.
    pub fn with_wire_keys<'a>(
        mut self,
        keys: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self> {
        for (column, key) in keys {
            let index = self.column(column)?;
            self.keys[index] = key.to_owned();
        }
        Ok(self)
    }

    /// Sends only these columns (django-cqrs `CQRS_FIELDS`); the primary key always goes.
    pub fn with_fields<'a>(mut self, columns: impl IntoIterator<Item = &'a str>) -> Result<Self> {
        let mut fields = vec![self.info.pk];
        for column in columns {
            let index = self.column(column)?;
            if !fields.contains(&index) && index != self.revision && index != self.updated {
                fields.push(index);
            }
        }
        self.fields = fields;
        Ok(self)
    }

    /// The table's name.
    #[must_use]
    pub fn table_name(&self) -> &str {
        &self.info.table
    }

    /// The column names, in the table's order.
    #[must_use]
    pub fn column_names(&self) -> Vec<&str> {
        self.info.columns.iter().map(|c| c.name.as_str()).collect()
    }

    fn column(&self, name: &str) -> Result<usize> {
        self.info.find(name).ok_or_else(|| {
            Error::config(
                &self.info.table,
                format!("the table has no column {name:?}"),
            )
        })
    }

    /// `SELECT <columns> FROM t WHERE <filter> AND pk > after ORDER BY pk LIMIT n`.
    fn select(
        &self,
        columns: &[usize],
        filter: &Filter,
        after: Option<&Json>,
        limit: u64,
    ) -> Result<SelectStatement> {
        let info = &self.info;
        let resolve = |field: &str| self.keys.iter().position(|k| k == field);
        let pk = Alias::new(&info.columns[info.pk].name);
        let mut select = Query::select();
        select
            .columns(columns.iter().map(|i| Alias::new(&info.columns[*i].name)))
            .from(Alias::new(&info.table))
            .cond_where(filter.condition(&info.columns, info.pk, &resolve)?)
            .order_by(pk.clone(), Order::Asc)
            .limit(Ord::max(limit, 1));
        if let Some(after) = after {
            select.and_where(Expr::col(pk).gt(info.columns[info.pk].to_db(after)?));
        }
        Ok(select)
    }

    async fn read(
        &self,
        filter: &Filter,
        after: Option<&Json>,
        limit: u64,
        with_data: bool,
    ) -> Result<Vec<MasterRow>> {
        let info = &self.info;
        let mut wanted = vec![info.pk, self.revision];
        if with_data {
            wanted.push(self.updated);
            wanted.extend(self.fields.iter().filter(|i| **i != info.pk));
        }
        let select = self.select(&wanted, filter, after, limit)?;
        let stmt = self.db.get_database_backend().build(&select);
        let rows = self
            .db
            .query_all_raw(stmt)
            .await
            .map_err(|e| db_error("reading master rows", e))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let pk = to_json(&info.columns[info.pk].read(row, 0)?)?;
            let revision = revision_of(&info.columns[self.revision].read(row, 1)?)?;
            let data = if with_data {
                let mut data = JsonObject::new();
                for (position, index) in wanted.iter().enumerate().skip(3) {
                    let value = to_json(&info.columns[*index].read(row, position)?)?;
                    data.insert(self.keys[*index].clone(), value);
                }
                data.insert(self.keys[info.pk].clone(), pk.clone());
                data.insert("cqrs_revision".into(), Json::from(revision));
                let updated = to_json(&info.columns[self.updated].read(row, 2)?)?;
                data.insert("cqrs_updated".into(), updated);
                Some(data)
            } else {
                None
            };
            out.push(MasterRow { pk, revision, data });
        }
        Ok(out)
    }
}

impl MasterSource for MasterView {
    fn cqrs_id(&self) -> &str {
        &self.cqrs_id
    }

    fn rows<'a>(
        &'a self,
        filter: &'a Filter,
        after: Option<Json>,
        limit: u64,
        with_data: bool,
    ) -> BoxFuture<'a, Result<RowPage>> {
        Box::pin(async move {
            let rows = self.read(filter, after.as_ref(), limit, with_data).await?;
            let last = rows.last().map(|r| r.pk.clone());
            Ok(RowPage { rows, last })
        })
    }

    fn count<'a>(&'a self, filter: &'a Filter) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let info = &self.info;
            let resolve = |field: &str| self.keys.iter().position(|k| k == field);
            let mut select = Query::select();
            select
                .expr(Expr::col(Alias::new(&info.columns[info.pk].name)).count())
                .from(Alias::new(&info.table))
                .cond_where(filter.condition(&info.columns, info.pk, &resolve)?);
            let stmt = self.db.get_database_backend().build(&select);
            let row = self
                .db
                .query_one_raw(stmt)
                .await
                .map_err(|e| db_error("counting master rows", e))?;
            let count: i64 = match row {
                Some(r) => r
                    .try_get_by_index(0)
                    .map_err(|e| db_error("counting master rows", e))?,
                None => 0,
            };
            Ok(u64::try_from(count).unwrap_or_default())
        })
    }

    fn missing(&self, pks: Vec<Json>) -> BoxFuture<'_, Result<Vec<Json>>> {
        Box::pin(async move {
            if pks.is_empty() {
                return Ok(Vec::new());
            }
            let mut present = std::collections::HashSet::new();
            for chunk in pks.chunks(10_000) {
                let found = self
                    .read(
                        &Filter::pk_in(chunk.to_vec()),
                        None,
                        chunk.len() as u64,
                        false,
                    )
                    .await?;
                present.extend(found.iter().map(|r| cqrs_actors::values::pk_text(&r.pk)));
            }
            // Compared in the column's form: `"7"` and `7` are one integer key.
            let pk = &self.info.columns[self.info.pk];
            let mut out = Vec::new();
            for key in pks {
                let canonical = to_json(&pk.to_db(&key)?)?;
                if !present.contains(&cqrs_actors::values::pk_text(&canonical)) {
                    out.push(canonical);
                }
            }
            Ok(out)
        })
    }

    fn sync_page<'a>(
        &'a self,
        filter: &'a Filter,
        after: Option<Json>,
        limit: u64,
        queue: Option<&'a str>,
        publisher: &'a Publisher,
    ) -> BoxFuture<'a, Result<SyncPage>> {
        Box::pin(async move {
            let rows = self.read(filter, after.as_ref(), limit, true).await?;
            let page = SyncPage {
                processed: rows.len() as u64,
                synced: rows.len() as u64,
                last: rows.last().map(|r| r.pk.clone()),
            };
            let confirms = rows.into_iter().map(|row| {
                let data = row.data.unwrap_or_default();
                let envelope = cqrs_actors::Envelope::new(SignalType::Sync, &self.cqrs_id, data)
                    .with_pk(row.pk);
                let route = match queue {
                    Some(q) => Route::queue(q, &self.cqrs_id),
                    None => Route::broadcast(&self.cqrs_id),
                };
                publisher.publish(envelope, route)
            });
            try_join_all(confirms).await?;
            Ok(page)
        })
    }
}
