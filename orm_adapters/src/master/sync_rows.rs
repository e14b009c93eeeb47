//! [`SyncRows`]: a master table answering gap-repair sync requests with its own SYNC.

use std::sync::Arc;

use cqrs_actors::{Publisher, Result, RowSynced, SyncSource};
use futures_util::future::LocalBoxFuture;
use serde_json::Value as Json;

use super::MasterSource;
use crate::filter::Filter;

/// A [`MasterSource`] (a [`MasterTable`](super::MasterTable) on a connection, or a
/// [`MasterView`](super::MasterView)) as the [`SyncSource`] a master service passes to
/// `CqrsSystemBuilder::answer_sync_requests`.
///
/// The answer is the SYNC the command line's `sync --queue` sends for the row, so it uses the
/// table's serializer, field list, `is_sync_instance`, meta and dispatch (with an outbox, it
/// is written there and relayed). A row that is not there, or that the table does not
/// replicate, is answered with [`RowSynced::Absent`]; a primary key the column cannot hold
/// fails and the request is dead-lettered. In a master service:
/// `builder.answer_sync_requests(SyncRows::new(table.source(db)))`.
#[derive(Clone)]
pub struct SyncRows(Arc<dyn MasterSource>);

impl std::fmt::Debug for SyncRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SyncRows").field(&self.0.cqrs_id()).finish()
    }
}

impl SyncRows {
    /// Answers sync requests from `source`.
    #[must_use]
    pub fn new(source: Arc<dyn MasterSource>) -> Self {
        Self(source)
    }
}

impl SyncSource for SyncRows {
    fn cqrs_id(&self) -> &str {
        self.0.cqrs_id()
    }

    fn sync_row<'a>(
        &'a self,
        pk: &'a Json,
        queue: &'a str,
        publisher: &'a Publisher,
    ) -> LocalBoxFuture<'a, Result<RowSynced>> {
        Box::pin(async move {
            let filter = Filter::pk_in(vec![pk.clone()]);
            let page = self
                .0
                .sync_page(&filter, None, 1, Some(queue), publisher)
                .await?;
            Ok(if page.synced > 0 {
                RowSynced::Sent
            } else {
                RowSynced::Absent
            })
        })
    }
}
