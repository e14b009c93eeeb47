//! `sync` (django-cqrs `cqrs_sync`): SYNC of the rows a filter selects, confirmed by the broker.

use std::sync::Arc;

use cqrs_actors::{CqrsSystem, Publisher};
use cqrs_orm_adapters::{Filter, MasterSource};
use serde_json::Value as Json;

use super::parse_filter;
use crate::args::SyncArgs;
use crate::error::{CliError, CliResult};
use crate::io::note;
use crate::progress::Progress;
use crate::tools::Tools;

/// Re-publishes the matching rows as SYNC, a page at a time, to every replica or one queue.
/// Without `-f` nothing is synced (as django-cqrs): `-f '{}'` selects every row.
pub(super) async fn sync(args: SyncArgs, tools: &Tools) -> CliResult {
    let source = tools.master_source(&args.cqrs_id)?.clone();
    let Some(filter) = args.filter.as_deref() else {
        return Err(CliError::usage(
            "no filter given: -f '{\"id__in\": [1, 2]}' syncs those rows, -f '{}' every row",
        ));
    };
    let filter = parse_filter(Some(filter))?;
    let total = source.count(&filter).await?;
    if total == 0 {
        note("No objects found for filter!");
        return Ok(());
    }
    let system = tools.start_system(tools.config().clone(), &[]).await?;
    let mut progress = Progress::new(format!("sync {}", args.cqrs_id), "rows", Some(total));
    let result = Syncer::new(&source, &system, args.queue.as_deref(), args.batch)
        .run(&filter, &mut progress)
        .await;
    conclude(system, &progress, result).await
}

/// Ends a SYNC run: waits until the broker confirmed every SYNC (those of a master table with
/// an outbox are confirmed once its relay sent them), shuts the system down, prints the
/// summary.
pub(super) async fn conclude(
    system: CqrsSystem,
    progress: &Progress,
    result: CliResult<(u64, u64)>,
) -> CliResult {
    let flushed = match &result {
        Ok(_) => system.flush().await.map_err(CliError::from),
        Err(_) => Ok(()),
    };
    progress.finish();
    let shutdown = system.shutdown().await;
    let (synced, processed) = result?;
    flushed?;
    shutdown?;
    note(&format!(
        "Done!\n{synced} instance(s) synced.\n{processed} instance(s) processed."
    ));
    Ok(())
}

/// Pages through a filter, publishing SYNCs ([`conclude`] waits for the broker).
pub(super) struct Syncer<'a> {
    source: &'a Arc<dyn MasterSource>,
    publisher: Publisher,
    queue: Option<&'a str>,
    batch: u64,
}

impl<'a> Syncer<'a> {
    pub(super) fn new(
        source: &'a Arc<dyn MasterSource>,
        system: &'a CqrsSystem,
        queue: Option<&'a str>,
        batch: u64,
    ) -> Self {
        Self {
            source,
            publisher: system.publisher(),
            queue,
            batch,
        }
    }

    /// Syncs every row `filter` selects; answers (synced, processed). The SYNCs of a master
    /// view are confirmed page by page; those through an outbox at [`conclude`].
    pub(super) async fn run(
        &self,
        filter: &Filter,
        progress: &mut Progress,
    ) -> CliResult<(u64, u64)> {
        let (mut synced, mut processed, mut after): (u64, u64, Option<Json>) = (0, 0, None);
        loop {
            let page = self
                .source
                .sync_page(
                    filter,
                    after.take(),
                    self.batch,
                    self.queue,
                    &self.publisher,
                )
                .await?;
            synced += page.synced;
            processed += page.processed;
            progress.add(page.processed);
            match page.last {
                Some(last) => after = Some(last),
                None => break,
            }
        }
        Ok((synced, processed))
    }
}
