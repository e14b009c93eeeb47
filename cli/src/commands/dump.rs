//! `bulk-dump` and `bulk-load` (django-cqrs `cqrs_bulk_dump`, `cqrs_bulk_load`).

use std::collections::VecDeque;

use cqrs_actors::{Applied, JsonObject};
use cqrs_orm_adapters::Filter;
use cqrs_orm_adapters::ReplicaTable;
use serde_json::Value as Json;

use crate::args::{BulkDumpArgs, BulkLoadArgs};
use crate::error::{CliError, CliResult};
use crate::io::{Lines, Output, note};
use crate::progress::Progress;
use crate::tools::Tools;

/// Writes line 1 the CQRS id, then one `instance_data` per row in primary-key order, a page
/// at a time: memory stays flat whatever the table's size.
pub(super) async fn bulk_dump(args: BulkDumpArgs, tools: &Tools) -> CliResult {
    let source = tools.master_source(&args.cqrs_id)?;
    let path = args
        .output
        .unwrap_or_else(|| format!("{}.dump", args.cqrs_id));
    let mut out = Output::create(&path, args.force)?;
    let all = Filter::all();
    let total = source.count(&all).await.ok();
    let mut progress = Progress::new(format!("bulk-dump {}", args.cqrs_id), "rows", total);
    out.line(&args.cqrs_id)?;
    let (mut saved, mut after) = (0u64, None);
    loop {
        let page = source.rows(&all, after.take(), args.batch, true).await?;
        for row in &page.rows {
            let data = row
                .data
                .as_ref()
                .map_or(Json::Null, |d| Json::Object(d.clone()));
            out.line(&data.to_string())?;
        }
        saved += page.rows.len() as u64;
        progress.add(page.rows.len() as u64);
        match page.last {
            Some(last) => after = Some(last),
            None => break,
        }
    }
    out.flush()?;
    progress.finish();
    note(&format!("Done!\n{saved} instance(s) saved."));
    Ok(())
}

/// Applies each line after the first as a SAVE under the revision rules, one transaction per
/// batch. A line that is not a JSON object, or that the table refuses, is reported with its
/// number and counted as failed; the command then exits 1.
pub(super) async fn bulk_load(args: BulkLoadArgs, tools: &Tools) -> CliResult {
    let mut lines = Lines::open(&args.input).await?;
    let Some(first) = lines.next().await? else {
        return Err(CliError::usage(format!("file {} is empty!", args.input)));
    };
    let cqrs_id = first.trim();
    let table = tools.replica_table(cqrs_id)?;
    if args.clear {
        let gone = table.clear().await?;
        note(&format!("{gone} instance(s) deleted first (--clear)."));
    }
    let mut progress = Progress::new(format!("bulk-load {cqrs_id}"), "rows", None);
    let mut counts = LoadCounts::default();
    let mut batch: Vec<(u64, JsonObject)> = Vec::new();
    let batch_size = usize::try_from(args.batch).unwrap_or(usize::MAX);
    // Batches apply in their own transactions while the next ones are read: the database
    // and the parsing overlap. A dump holds each row once; rows repeated across batches in
    // flight still end at the highest revision (the upsert is guarded in SQL).
    let mut in_flight: VecDeque<Loading> = VecDeque::new();
    while let Some(line) = lines.next().await? {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Json>(&line) {
            Ok(Json::Object(data)) => batch.push((lines.number, data)),
            Ok(_) => counts.failed(lines.number, "dump line can't be parsed: not a JSON object"),
            Err(e) => counts.failed(lines.number, &format!("dump line can't be parsed: {e}")),
        }
        if batch.len() >= batch_size {
            if in_flight.len() >= IN_FLIGHT {
                finish(&mut in_flight, &mut counts, &mut progress).await?;
            }
            in_flight.push_back(start(table, cqrs_id, std::mem::take(&mut batch)));
        }
    }
    if !batch.is_empty() {
        in_flight.push_back(start(table, cqrs_id, batch));
    }
    while !in_flight.is_empty() {
        finish(&mut in_flight, &mut counts, &mut progress).await?;
    }
    progress.finish();
    note(&format!(
        "Done!\n{} instance(s) loaded.\n{} instance(s) skipped (not newer than the stored row).\n{} line(s) failed.",
        counts.loaded, counts.skipped, counts.failed
    ));
    if counts.failed > 0 {
        return Err(CliError::Runtime(cqrs_actors::Error::invalid_data(
            format!(
                "{} line(s) of {} were not loaded (see above)",
                counts.failed, args.input
            ),
        )));
    }
    Ok(())
}

#[derive(Debug, Default)]
struct LoadCounts {
    loaded: u64,
    skipped: u64,
    failed: u64,
}

impl LoadCounts {
    fn failed(&mut self, line: u64, why: &str) {
        self.failed += 1;
        note(&format!("line {line}: {why}"));
    }
}

/// Batches applying at once (each holds a connection of the pool).
const IN_FLIGHT: usize = 3;

/// A batch on its way: its line numbers and the task applying it.
type Loading = (
    Vec<u64>,
    tokio::task::JoinHandle<Vec<cqrs_actors::Result<Applied>>>,
);

fn start(table: &ReplicaTable, cqrs_id: &str, batch: Vec<(u64, JsonObject)>) -> Loading {
    let (numbers, rows): (Vec<u64>, Vec<JsonObject>) = batch.into_iter().unzip();
    let (table, cqrs_id) = (table.clone(), cqrs_id.to_owned());
    let task = actix_rt::spawn(async move { table.load(&cqrs_id, rows).await });
    (numbers, task)
}

/// Waits for the oldest batch and counts its rows.
async fn finish(
    in_flight: &mut VecDeque<Loading>,
    counts: &mut LoadCounts,
    progress: &mut Progress,
) -> CliResult {
    let Some((numbers, task)) = in_flight.pop_front() else {
        return Ok(());
    };
    let results = task.await.map_err(|e| {
        CliError::Runtime(cqrs_actors::Error::handler(format!("loading a batch: {e}")))
    })?;
    progress.add(numbers.len() as u64);
    for (line, result) in numbers.into_iter().zip(results) {
        match result {
            Ok(Applied::Skipped(_)) => counts.skipped += 1,
            Ok(_) => counts.loaded += 1,
            Err(e) => counts.failed(line, &format!("instance can't be saved: {e}")),
        }
    }
    Ok(())
}
