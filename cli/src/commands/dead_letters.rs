//! `dead-letters dump|retry|purge` (django-cqrs `cqrs_dead_letters`), for every transport.

use std::sync::Arc;
use std::time::Duration;

use cqrs_actors::transport::{
    DeadLetter, HEADER_ERROR, HEADER_REASON, ListDeadLetters, OutgoingMessage, PurgeDeadLetters,
    RetryDeadLetters,
};
use cqrs_actors::{Codec, Route};
use serde_json::{Value as Json, json};

use crate::args::{DeadLetterAction, DeadLettersArgs};
use crate::error::CliResult;
use crate::io::{Output, note};
use crate::tools::Tools;

/// How long a retried message lives when it had an expiry and the configuration sets none
/// (django-cqrs's one day).
const DEFAULT_RETRY_TTL: Duration = Duration::from_secs(86_400);

pub(super) async fn dead_letters(args: DeadLettersArgs, tools: &Tools) -> CliResult {
    let (queue, dead_letter_queue) = tools.queues()?;
    let transport = tools.connect().await?;
    match args.action {
        DeadLetterAction::Dump(which) => {
            let letters = transport
                .list_dead_letters(ListDeadLetters {
                    dead_letter_queue,
                    cqrs_id: which.cqrs_id,
                    limit: limit(which.limit),
                })
                .await?;
            let mut out = Output::stdout();
            for letter in &letters {
                out.line(&describe(letter).to_string())?;
            }
            out.flush()?;
            note(&format!("Total dead letters: {}", letters.len()));
        }
        DeadLetterAction::Retry(which) => {
            let ttl = tools
                .config()
                .master()
                .message_ttl()
                .unwrap_or(DEFAULT_RETRY_TTL);
            let target = queue.clone();
            let report = transport
                .retry_dead_letters(RetryDeadLetters {
                    dead_letter_queue,
                    cqrs_id: which.cqrs_id,
                    limit: limit(which.limit),
                    rewrite: Arc::new(move |letter| rewrite(letter, &target, ttl)),
                })
                .await?;
            note(&format!(
                "Retried: {} (to queue {queue}).\nLeft in place: {} (not a CQRS message this \
                 tool can rewrite).",
                report.retried, report.skipped
            ));
        }
        DeadLetterAction::Purge(which) => {
            let purged = transport
                .purge_dead_letters(PurgeDeadLetters {
                    dead_letter_queue,
                    cqrs_id: which.cqrs_id,
                })
                .await?;
            note(&format!("Purged: {purged}"));
        }
    }
    Ok(())
}

fn limit(limit: Option<u64>) -> usize {
    limit.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX))
}

/// One line of `dump`: where it was, why, and the message.
fn describe(letter: &DeadLetter) -> Json {
    let body = decoded(letter);
    let retries = body
        .as_ref()
        .and_then(|b| b.get("retries"))
        .cloned()
        .unwrap_or(Json::Null);
    let mut line = json!({
        "id": letter.id,
        "routing_key": letter.routing_key,
        "cqrs_id": letter.cqrs_id(),
        "reason": letter.headers.get(HEADER_REASON),
        "error": letter.headers.get(HEADER_ERROR),
        "retries": retries,
        "content_type": letter.content_type,
        "headers": letter.headers,
    });
    match body {
        Some(body) => line["body"] = body,
        None => line["body_text"] = Json::String(String::from_utf8_lossy(&letter.body).into()),
    }
    line
}

/// The body as JSON: JSON bodies as they are, MessagePack ones decoded.
fn decoded(letter: &DeadLetter) -> Option<Json> {
    if let Ok(json) = serde_json::from_slice::<Json>(&letter.body) {
        return Some(json);
    }
    let codec = Codec::for_content_type(letter.content_type.as_deref()).ok()?;
    let envelope = codec.decode(&letter.body, None).ok()?;
    serde_json::from_slice(&Codec::Json.encode(&envelope).ok()?).ok()
}

/// The copy to publish: `retries` reset to 0 and, when the message had an expiry, a fresh one
/// (now + the master's TTL), routed to this replica's queue. `None` for a body that is not a
/// CQRS message or names no CQRS id: it stays a dead letter.
fn rewrite(letter: &DeadLetter, queue: &str, ttl: Duration) -> Option<OutgoingMessage> {
    let codec = Codec::for_content_type(letter.content_type.as_deref()).ok()?;
    let mut envelope = codec.decode(&letter.body, None).ok()?;
    if envelope.cqrs_id.is_empty() {
        return None;
    }
    envelope.retries = 0;
    if envelope.expires.is_some() {
        envelope.expires = Some(cqrs_actors::expiry_after(ttl));
    }
    let body = codec.encode(&envelope).ok()?;
    let mut headers = letter.headers.clone();
    headers.remove(HEADER_REASON);
    headers.remove(HEADER_ERROR);
    Some(OutgoingMessage {
        route: Route::queue(queue, envelope.cqrs_id.clone()),
        body,
        content_type: codec.content_type().to_owned(),
        headers,
        expiration: None,
    })
}
