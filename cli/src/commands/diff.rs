//! The pipelines of WIRE.md section 7, interchangeable with django-cqrs's commands:
//! `diff-master | diff-replica | diff-sync` resyncs rows whose revision differs, and
//! `deleted-diff-replica | deleted-diff-master | deleted-sync-replica` deletes rows the master
//! no longer has.

use serde_json::Value as Json;

use super::sync::{Syncer, conclude};
use super::{bad_line, parse_filter};
use crate::args::{BatchArgs, DiffMasterArgs, DiffSyncArgs};
use crate::error::{CliError, CliResult};
use crate::io::{Lines, Output, note};
use crate::progress::Progress;
use crate::tools::Tools;

/// Line 1 of `diff-master` and `deleted-diff-replica`: `<cqrs id>,<now>`.
fn header(cqrs_id: &str) -> String {
    let now = cqrs_actors::values::format_datetime(&chrono::Utc::now());
    format!("{cqrs_id},{now}")
}

/// Reads line 1 of a pipeline: its comma-separated fields (at least the CQRS id).
async fn read_header(lines: &mut Lines) -> CliResult<(String, Vec<String>)> {
    let Some(first) = lines.next().await? else {
        return Err(CliError::usage(
            "the input is empty: line 1 must be `<cqrs id>,<timestamp>[,<queue>]`",
        ));
    };
    let fields: Vec<String> = first.split(',').map(|f| f.trim().to_owned()).collect();
    if fields[0].is_empty() {
        return Err(CliError::usage(format!(
            "line 1 {first:?} names no CQRS id: it must be `<cqrs id>,<timestamp>[,<queue>]`"
        )));
    }
    Ok((first, fields))
}

/// A line of primary keys: a JSON array of scalars.
fn pk_line(number: u64, line: &str) -> CliResult<Vec<Json>> {
    match serde_json::from_str::<Json>(line) {
        Ok(Json::Array(items))
            if items
                .iter()
                .all(|v| matches!(v, Json::Number(_) | Json::String(_))) =>
        {
            Ok(items)
        }
        Ok(_) => Err(bad_line(number, "expected a JSON array of primary keys")),
        Err(e) => Err(bad_line(number, format!("not JSON: {e}"))),
    }
}

/// A line of `[pk, revision]` pairs.
fn pair_line(number: u64, line: &str) -> CliResult<Vec<(Json, i64)>> {
    let bad = || bad_line(number, "expected a JSON array of [pk, revision] pairs");
    let Json::Array(items) = serde_json::from_str::<Json>(line)
        .map_err(|e| bad_line(number, format!("not JSON: {e}")))?
    else {
        return Err(bad());
    };
    items
        .into_iter()
        .map(|item| match item {
            Json::Array(pair) if pair.len() == 2 => {
                let revision = pair[1].as_i64().ok_or_else(bad)?;
                match &pair[0] {
                    pk @ (Json::Number(_) | Json::String(_)) => Ok((pk.clone(), revision)),
                    _ => Err(bad()),
                }
            }
            _ => Err(bad()),
        })
        .collect()
}

/// `diff-master`: line 1 `<cqrs id>,<now>`, then one line of `[pk, revision]` pairs per page.
pub(super) async fn diff_master(args: DiffMasterArgs, tools: &Tools) -> CliResult {
    let source = tools.master_source(&args.cqrs_id)?;
    let filter = parse_filter(args.filter.as_deref())?;
    let total = source.count(&filter).await.ok();
    let mut out = Output::stdout();
    out.line(&header(&args.cqrs_id))?;
    let mut progress = Progress::new(format!("diff-master {}", args.cqrs_id), "rows", total);
    let (mut after, mut rows) = (None, 0u64);
    loop {
        let page = source
            .rows(&filter, after.take(), args.batch, false)
            .await?;
        if !page.rows.is_empty() {
            let pairs: Vec<Json> = page
                .rows
                .iter()
                .map(|r| Json::Array(vec![r.pk.clone(), Json::from(r.revision)]))
                .collect();
            out.line(&Json::Array(pairs).to_string())?;
            out.flush()?;
        }
        rows += page.rows.len() as u64;
        progress.add(page.rows.len() as u64);
        match page.last {
            Some(last) => after = Some(last),
            None => break,
        }
    }
    progress.finish();
    if rows == 0 {
        note("No objects found for filter!");
    }
    Ok(())
}

/// `diff-replica`: echoes line 1 with `,<queue>`, then for each line the pks missing here or
/// at another revision.
///
/// Without a configured queue line 1 ends with `None`, as django-cqrs writes it: `diff-sync`
/// then broadcasts, but django-cqrs 3.1.0's `cqrs_diff_sync` syncs nothing (it runs
/// `cqrs_sync` without a `queue` option, and every row fails with `KeyError: 'queue'` while the
/// command exits 0), so the command says so on stderr.
pub(super) async fn diff_replica(args: BatchArgs, tools: &Tools) -> CliResult {
    let mut lines = Lines::stdin();
    let (first, fields) = read_header(&mut lines).await?;
    let table = tools.replica_table(&fields[0])?;
    let queue = tools.config().queue().unwrap_or_else(|| {
        note(
            "no queue is configured: line 1 ends with `None`, a broadcast for `cqrs diff-sync`; \
             django-cqrs 3.1.0's cqrs_diff_sync syncs nothing for it (KeyError: 'queue' on \
             every row), so for it configure this replica's `queue`",
        );
        "None"
    });
    let mut out = Output::stdout();
    out.line(&format!("{first},{queue}"))?;
    let mut progress = Progress::new(format!("diff-replica {}", fields[0]), "rows", None);
    let mut to_resync = 0u64;
    let chunk = usize::try_from(args.batch).unwrap_or(usize::MAX);
    while let Some(line) = lines.next().await? {
        if line.trim().is_empty() {
            continue;
        }
        let pairs = pair_line(lines.number, &line)?;
        let mut differ = Vec::new();
        for part in pairs.chunks(chunk) {
            differ.extend(table.diff(part).await?);
        }
        progress.add(pairs.len() as u64);
        if !differ.is_empty() {
            to_resync += differ.len() as u64;
            out.line(&Json::Array(differ).to_string())?;
            out.flush()?;
        }
    }
    progress.finish();
    note(&format!("{to_resync} pk(s) to resync."));
    Ok(())
}

/// `diff-sync`: SYNCs the pks of each line, to the queue line 1 names (its last field; the
/// string `None`: every replica) unless `-q` says otherwise.
pub(super) async fn diff_sync(args: DiffSyncArgs, tools: &Tools) -> CliResult {
    let mut lines = Lines::stdin();
    let (_, fields) = read_header(&mut lines).await?;
    let source = tools.master_source(&fields[0])?.clone();
    let queue = args.queue.clone().or_else(|| {
        (fields.len() >= 3)
            .then(|| fields[fields.len() - 1].clone())
            .filter(|q| q != "None" && !q.is_empty())
    });
    let system = tools.start_system(tools.config().clone(), &[]).await?;
    let mut progress = Progress::new(format!("diff-sync {}", fields[0]), "rows", None);
    let result = async {
        let syncer = Syncer::new(&source, &system, queue.as_deref(), args.batch);
        let (mut synced, mut processed) = (0, 0);
        while let Some(line) = lines.next().await? {
            if line.trim().is_empty() {
                continue;
            }
            let pks = pk_line(lines.number, &line)?;
            for part in pks.chunks(30_000) {
                let filter = cqrs_orm_adapters::Filter::pk_in(part.to_vec());
                let (s, p) = syncer.run(&filter, &mut progress).await?;
                synced += s;
                processed += p;
            }
        }
        Ok::<_, CliError>((synced, processed))
    }
    .await;
    conclude(system, &progress, result).await
}

/// `deleted-diff-replica`: line 1 `<cqrs id>,<now>`, then one line of this replica's pks per
/// page.
pub(super) async fn deleted_diff_replica(args: DiffMasterArgs, tools: &Tools) -> CliResult {
    let table = tools.replica_table(&args.cqrs_id)?;
    let filter = parse_filter(args.filter.as_deref())?;
    let mut out = Output::stdout();
    out.line(&header(&args.cqrs_id))?;
    let mut progress = Progress::new(
        format!("deleted-diff-replica {}", args.cqrs_id),
        "rows",
        None,
    );
    let mut after: Option<Json> = None;
    loop {
        let pks = table.pks_page(&filter, after.as_ref(), args.batch).await?;
        let Some(last) = pks.last().cloned() else {
            break;
        };
        progress.add(pks.len() as u64);
        out.line(&Json::Array(pks).to_string())?;
        out.flush()?;
        after = Some(last);
    }
    progress.finish();
    Ok(())
}

/// `deleted-diff-master`: echoes line 1, then for each line the pks the master lacks.
pub(super) async fn deleted_diff_master(args: BatchArgs, tools: &Tools) -> CliResult {
    let mut lines = Lines::stdin();
    let (first, fields) = read_header(&mut lines).await?;
    let source = tools.master_source(&fields[0])?;
    let mut out = Output::stdout();
    out.line(&first)?;
    let mut progress = Progress::new(format!("deleted-diff-master {}", fields[0]), "rows", None);
    let mut gone = 0u64;
    let chunk = usize::try_from(args.batch).unwrap_or(usize::MAX);
    while let Some(line) = lines.next().await? {
        if line.trim().is_empty() {
            continue;
        }
        let pks = pk_line(lines.number, &line)?;
        let mut missing = Vec::new();
        for part in pks.chunks(chunk) {
            missing.extend(source.missing(part.to_vec()).await?);
        }
        progress.add(pks.len() as u64);
        if !missing.is_empty() {
            gone += missing.len() as u64;
            out.line(&Json::Array(missing).to_string())?;
            out.flush()?;
        }
    }
    progress.finish();
    note(&format!("{gone} pk(s) to delete."));
    Ok(())
}

/// `deleted-sync-replica`: deletes the pks of each line from the replica (no hooks, as
/// django-cqrs).
pub(super) async fn deleted_sync_replica(args: BatchArgs, tools: &Tools) -> CliResult {
    let mut lines = Lines::stdin();
    let (_, fields) = read_header(&mut lines).await?;
    let table = tools.replica_table(&fields[0])?;
    let mut progress = Progress::new(format!("deleted-sync-replica {}", fields[0]), "rows", None);
    let mut deleted = 0u64;
    let chunk = usize::try_from(args.batch).unwrap_or(usize::MAX);
    while let Some(line) = lines.next().await? {
        if line.trim().is_empty() {
            continue;
        }
        let pks = pk_line(lines.number, &line)?;
        for part in pks.chunks(chunk) {
            deleted += table.delete_pks(part).await?;
        }
        progress.add(pks.len() as u64);
    }
    progress.finish();
    note(&format!("Done!\n{deleted} instance(s) deleted."));
    Ok(())
}
