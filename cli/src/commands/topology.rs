//! `topology [--delete [--force]]`: what `consume` declares for this replica's queue, with the
//! counts the transport gives; or its deletion.

use cqrs_actors::transport::{DeleteQueue, DescribeQueue};

use crate::args::TopologyArgs;
use crate::error::CliResult;
use crate::io::{Output, note};
use crate::tools::Tools;

pub(super) async fn topology(args: TopologyArgs, tools: &Tools) -> CliResult {
    let (queue, dead_letter_queue) = tools.queues()?;
    let transport = tools.connect().await?;
    let mut out = Output::stdout();
    if args.delete {
        let deleted = transport
            .delete_queue(DeleteQueue {
                queue: queue.clone(),
                dead_letter_queue,
                force: args.force,
            })
            .await?;
        for name in &deleted {
            out.line(name)?;
        }
        out.flush()?;
        note(&format!(
            "Deleted {} object(s) of queue {queue}.",
            deleted.len()
        ));
        return Ok(());
    }
    let objects = transport
        .describe_queue(DescribeQueue {
            queue: queue.clone(),
            dead_letter_queue,
        })
        .await?;
    let width = |f: fn(&cqrs_actors::transport::TopologyObject) -> usize| {
        objects.iter().map(f).max().unwrap_or(0)
    };
    let (kind_w, name_w) = (
        width(|o| o.kind.len()).max(4),
        width(|o| o.name.len()).max(4),
    );
    out.line(&format!(
        "{:kind_w$}  {:name_w$}  {:>8}  DETAIL",
        "KIND", "NAME", "MESSAGES"
    ))?;
    for o in &objects {
        let messages = o.messages.map_or_else(|| "-".to_owned(), |m| m.to_string());
        out.line(&format!(
            "{:kind_w$}  {:name_w$}  {messages:>8}  {}",
            o.kind, o.name, o.detail
        ))?;
    }
    out.flush()?;
    note(&format!(
        "{} object(s) of queue {queue} on the {} transport (exchange {}).",
        objects.len(),
        transport.name(),
        tools.config().exchange()
    ));
    Ok(())
}
