//! The checks of the operator's tools: dead letters listed in place, retried once, purged;
//! a replica's topology described and deleted.

use std::sync::Arc;

use cqrs_actors::transport::{
    DeadLetter, DeleteQueue, DescribeQueue, HEADER_ERROR, HEADER_REASON, Headers, ListDeadLetters,
    PublishDeadLetter, PurgeDeadLetters, RetryDeadLetters, RetryReport, Rewrite, TopologyObject,
};
use cqrs_actors::{ErrorKind, Route, TransportHandle};

use super::{Names, body, collect, declare, message, wait_stats};

/// Dead-letters `body` to `<queue>_dlq`, of `cqrs_id` (unknown when `None`).
async fn dead_letter(t: &TransportHandle, queue: &str, cqrs_id: Option<&str>, body: &str) {
    let mut headers = Headers::new();
    headers.insert(HEADER_REASON.to_owned(), "retries_exhausted".to_owned());
    headers.insert(HEADER_ERROR.to_owned(), format!("handler: {body} failed"));
    t.dead_letter(PublishDeadLetter {
        dead_letter_queue: format!("{queue}_dlq"),
        cqrs_id: cqrs_id.map(str::to_owned),
        body: body.as_bytes().to_vec(),
        content_type: Some("text/plain".to_owned()),
        headers,
        ttl: None,
    })
    .await
    .unwrap_or_else(|e| panic!("dead letter {body}: {e}"));
}

async fn list(
    t: &TransportHandle,
    dead_letter_queue: &str,
    cqrs_id: Option<&str>,
    limit: usize,
) -> Vec<DeadLetter> {
    t.list_dead_letters(ListDeadLetters {
        dead_letter_queue: dead_letter_queue.to_owned(),
        cqrs_id: cqrs_id.map(str::to_owned),
        limit,
    })
    .await
    .unwrap_or_else(|e| panic!("list dead letters of {dead_letter_queue}: {e}"))
}

fn bodies(dead: &[DeadLetter]) -> Vec<String> {
    dead.iter()
        .map(|d| String::from_utf8_lossy(&d.body).into_owned())
        .collect()
}

/// Dead letters are listed oldest first with what they were dead-lettered with, filtered by
/// CQRS id and bounded by `limit`, and stay in the queue in their order; a dead-letter queue
/// that does not exist lists none.
pub async fn dead_letters_are_listed_in_place(t: &TransportHandle, names: &Names) {
    let (q, x, y) = (names.queue("q"), names.cqrs_id("x"), names.cqrs_id("y"));
    let dlq = format!("{q}_dlq");
    declare(t, &q, &[&x, &y]).await;
    let letters = [
        (Some(&x), "x0"),
        (Some(&y), "y0"),
        (Some(&x), "x1"),
        (None, "{not json"),
        (Some(&x), "x2"),
    ];
    for (id, text) in letters {
        dead_letter(t, &q, id.map(String::as_str), text).await;
    }
    let all = list(t, &dlq, None, usize::MAX).await;
    assert_eq!(bodies(&all), ["x0", "y0", "x1", "{not json", "x2"]);
    let ids: Vec<Option<&str>> = all.iter().map(DeadLetter::cqrs_id).collect();
    assert_eq!(
        ids,
        [Some(x.as_str()), Some(&y), Some(&x), None, Some(&x)],
        "routing keys {:?}",
        all.iter().map(|d| &d.routing_key).collect::<Vec<_>>()
    );
    assert_eq!(all[0].routing_key, format!("cqrs.{dlq}.{x}"));
    assert_eq!(
        all[3].routing_key, dlq,
        "an unknown id keeps the queue's name"
    );
    for d in &all {
        assert_eq!(d.content_type.as_deref(), Some("text/plain"));
        assert_eq!(
            d.headers.get(HEADER_REASON).map(String::as_str),
            Some("retries_exhausted")
        );
        assert!(d.headers.contains_key(HEADER_ERROR), "{d:?}");
    }
    let distinct: std::collections::BTreeSet<&str> = all.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(distinct.len(), all.len(), "each dead letter has its own id");
    assert_eq!(
        list(t, &dlq, None, usize::MAX).await,
        all,
        "listing takes nothing away and keeps the order"
    );
    assert_eq!(bodies(&list(t, &dlq, None, 2).await), ["x0", "y0"]);
    assert_eq!(
        bodies(&list(t, &dlq, Some(&x), usize::MAX).await),
        ["x0", "x1", "x2"]
    );
    assert_eq!(bodies(&list(t, &dlq, Some(&x), 2).await), ["x0", "x1"]);
    assert_eq!(
        bodies(&list(t, &dlq, Some(&y), 0).await),
        Vec::<String>::new()
    );
    assert!(
        list(t, &names.queue("never_declared"), None, 10)
            .await
            .is_empty()
    );
    wait_stats(t, &dlq, 5, 0).await;
    let c = collect(t, &dlq, 10, true).await;
    let seen = c.wait_for(5, "the dead letters after the listings").await;
    assert_eq!(
        seen.iter().map(body).collect::<Vec<_>>(),
        ["x0", "y0", "x1", "{not json", "x2"],
        "still in their order"
    );
}

/// A rewrite that sends a dead letter back to its replica queue, marked, as `Route::queue`.
fn back_to(queue: &str) -> Rewrite {
    let queue = queue.to_owned();
    Arc::new(move |d: &DeadLetter| {
        let id = d.cqrs_id()?;
        let text = String::from_utf8_lossy(&d.body);
        Some(message(Route::queue(&queue, id), &format!("again-{text}")))
    })
}

async fn retry(
    t: &TransportHandle,
    dlq: &str,
    cqrs_id: Option<&str>,
    limit: usize,
    rewrite: Rewrite,
) -> cqrs_actors::Result<RetryReport> {
    t.retry_dead_letters(RetryDeadLetters {
        dead_letter_queue: dlq.to_owned(),
        cqrs_id: cqrs_id.map(str::to_owned),
        limit,
        rewrite,
    })
    .await
}

/// Retried dead letters reach the replica queue as rewritten and leave the dead-letter queue;
/// the ones not selected, beyond the limit or skipped by the rewrite stay, in order; a copy no
/// queue takes fails `Unroutable` and its dead letter stays.
pub async fn dead_letters_are_retried_once_after_their_republish(
    t: &TransportHandle,
    names: &Names,
) {
    let (q, x, y) = (names.queue("q"), names.cqrs_id("x"), names.cqrs_id("y"));
    let dlq = format!("{q}_dlq");
    declare(t, &q, &[&x, &y]).await;
    for (id, text) in [(&x, "x0"), (&y, "y0"), (&x, "x1"), (&x, "x2")] {
        dead_letter(t, &q, Some(id), text).await;
    }
    let c = collect(t, &q, 10, true).await;
    let report = retry(t, &dlq, Some(&x), 2, back_to(&q))
        .await
        .unwrap_or_else(|e| panic!("retry: {e}"));
    assert_eq!(
        report,
        RetryReport {
            retried: 2,
            skipped: 0
        }
    );
    let seen = c.wait_for(2, "the retried copies").await;
    assert_eq!(
        seen.iter().map(body).collect::<Vec<_>>(),
        ["again-x0", "again-x1"]
    );
    assert_eq!(seen[0].routing_key, format!("cqrs.{q}.{x}"));
    assert_eq!(bodies(&list(t, &dlq, None, usize::MAX).await), ["y0", "x2"]);

    let skip_y = {
        let (retry_to, y) = (back_to(&q), y.clone());
        Arc::new(move |d: &DeadLetter| {
            if d.cqrs_id() == Some(y.as_str()) {
                None
            } else {
                retry_to(d)
            }
        }) as Rewrite
    };
    let report = retry(t, &dlq, None, usize::MAX, skip_y)
        .await
        .unwrap_or_else(|e| panic!("retry: {e}"));
    assert_eq!(
        report,
        RetryReport {
            retried: 1,
            skipped: 1
        }
    );
    c.wait_for(3, "the third retried copy").await;
    assert_eq!(bodies(&list(t, &dlq, None, usize::MAX).await), ["y0"]);

    let nowhere = names.cqrs_id("nobody");
    let unroutable: Rewrite =
        Arc::new(move |_: &DeadLetter| Some(message(Route::broadcast(&nowhere), "lost?")));
    let err = retry(t, &dlq, None, usize::MAX, unroutable)
        .await
        .expect_err("a copy no queue takes");
    assert_eq!(err.kind(), ErrorKind::Unroutable, "{err}");
    assert_eq!(
        bodies(&list(t, &dlq, None, usize::MAX).await),
        ["y0"],
        "a dead letter whose copy failed stays"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        c.seen().iter().map(body).collect::<Vec<_>>(),
        ["again-x0", "again-x1", "again-x2"],
        "each dead letter retried once"
    );

    // A copy sent back to the dead-letter queue itself is not taken again by the same retry.
    let dlq_again = dlq.clone();
    let to_itself: Rewrite = Arc::new(move |d: &DeadLetter| {
        let text = String::from_utf8_lossy(&d.body);
        Some(message(
            Route::queue(&dlq_again, d.cqrs_id()?),
            &format!("again-{text}"),
        ))
    });
    let report = retry(t, &dlq, None, usize::MAX, to_itself)
        .await
        .unwrap_or_else(|e| panic!("retry into the dead-letter queue: {e}"));
    assert_eq!(
        report,
        RetryReport {
            retried: 1,
            skipped: 0
        }
    );
    assert_eq!(bodies(&list(t, &dlq, None, usize::MAX).await), ["again-y0"]);
}

async fn purge(t: &TransportHandle, dlq: &str, cqrs_id: Option<&str>) -> u64 {
    t.purge_dead_letters(PurgeDeadLetters {
        dead_letter_queue: dlq.to_owned(),
        cqrs_id: cqrs_id.map(str::to_owned),
    })
    .await
    .unwrap_or_else(|e| panic!("purge {dlq}: {e}"))
}

/// Purging one CQRS id's dead letters leaves the others in order; purging all empties the
/// queue; a dead-letter queue that does not exist purges none.
pub async fn dead_letters_are_purged_by_cqrs_id_or_all(t: &TransportHandle, names: &Names) {
    let (q, x, y) = (names.queue("q"), names.cqrs_id("x"), names.cqrs_id("y"));
    let dlq = format!("{q}_dlq");
    declare(t, &q, &[&x, &y]).await;
    for (id, text) in [
        (Some(&x), "x0"),
        (Some(&y), "y0"),
        (Some(&x), "x1"),
        (None, "raw"),
    ] {
        dead_letter(t, &q, id.map(String::as_str), text).await;
    }
    assert_eq!(purge(t, &dlq, Some(&y)).await, 1);
    assert_eq!(
        bodies(&list(t, &dlq, None, usize::MAX).await),
        ["x0", "x1", "raw"]
    );
    assert_eq!(purge(t, &dlq, Some(&y)).await, 0);
    assert_eq!(purge(t, &dlq, None).await, 3);
    assert!(list(t, &dlq, None, usize::MAX).await.is_empty());
    wait_stats(t, &dlq, 0, 0).await;
    assert_eq!(purge(t, &names.queue("never_declared"), None).await, 0);
}

async fn describe(t: &TransportHandle, queue: &str) -> Vec<TopologyObject> {
    t.describe_queue(DescribeQueue {
        queue: queue.to_owned(),
        dead_letter_queue: format!("{queue}_dlq"),
    })
    .await
    .unwrap_or_else(|e| panic!("describe {queue}: {e}"))
}

/// Whether some object is named after `name` (its name ends with it) and holds `messages`.
fn holds(objects: &[TopologyObject], name: &str, messages: u64) -> bool {
    objects
        .iter()
        .any(|o| o.name.ends_with(name) && o.messages == Some(messages))
}

/// Describing a declared queue shows its objects with their counts: the messages waiting for
/// the replica and the dead letters; an undeclared queue shows none of its own.
pub async fn describe_queue_shows_what_declare_made(t: &TransportHandle, names: &Names) {
    let (q, x) = (names.queue("q"), names.cqrs_id("x"));
    let dlq = format!("{q}_dlq");
    declare(t, &q, &[&x]).await;
    for i in 0..2 {
        t.publish(message(Route::broadcast(&x), &format!("{i}")))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    dead_letter(t, &q, Some(&x), "dead").await;
    wait_stats(t, &q, 2, 0).await;
    let objects = describe(t, &q).await;
    assert!(
        holds(&objects, &q, 2),
        "the queue's 2 messages: {objects:#?}"
    );
    assert!(holds(&objects, &dlq, 1), "the dead letter: {objects:#?}");
    for o in &objects {
        assert!(!o.kind.is_empty() && !o.name.is_empty(), "{o:?}");
    }
    let unknown = names.queue("never_declared");
    let objects = describe(t, &unknown).await;
    assert!(
        !objects.iter().any(|o| o.name.contains(&unknown)),
        "nothing of an undeclared queue: {objects:#?}"
    );
}

async fn delete(t: &TransportHandle, queue: &str, force: bool) -> cqrs_actors::Result<Vec<String>> {
    t.delete_queue(DeleteQueue {
        queue: queue.to_owned(),
        dead_letter_queue: format!("{queue}_dlq"),
        force,
    })
    .await
}

/// Deleting a queue that holds dead letters is refused with an error naming it, unless
/// forced; the deleted queue takes no more messages, and deleting it again deletes nothing. An
/// empty queue is deleted without force.
pub async fn delete_queue_refuses_while_messages_remain(t: &TransportHandle, names: &Names) {
    let (q, x) = (names.queue("q"), names.cqrs_id("x"));
    let dlq = format!("{q}_dlq");
    declare(t, &q, &[&x]).await;
    dead_letter(t, &q, Some(&x), "dead").await;
    let err = delete(t, &q, false)
        .await
        .expect_err("a dead letter is left");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.message().contains(&q), "{err}");
    assert_eq!(
        list(t, &dlq, None, 10).await.len(),
        1,
        "a refused delete deletes nothing"
    );
    let deleted = delete(t, &q, true)
        .await
        .unwrap_or_else(|e| panic!("forced delete: {e}"));
    assert!(deleted.iter().any(|n| n.ends_with(&q)), "{deleted:?}");
    assert!(deleted.iter().any(|n| n.ends_with(&dlq)), "{deleted:?}");
    let err = t
        .publish(message(Route::broadcast(&x), "{}"))
        .await
        .expect_err("no queue is bound any more");
    assert_eq!(err.kind(), ErrorKind::Unroutable, "{err}");
    let objects = describe(t, &q).await;
    assert!(
        !objects.iter().any(|o| o.name.contains(&q)),
        "all of it is gone: {objects:#?}"
    );
    assert_eq!(
        delete(t, &q, false).await.unwrap_or_else(|e| panic!("{e}")),
        Vec::<String>::new()
    );
    let empty = names.queue("empty");
    declare(t, &empty, &[&x]).await;
    let deleted = delete(t, &empty, false)
        .await
        .unwrap_or_else(|e| panic!("an empty queue: {e}"));
    assert!(deleted.iter().any(|n| n.ends_with(&empty)), "{deleted:?}");
}
