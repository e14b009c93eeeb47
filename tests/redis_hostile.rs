//! Hostile input against a replica on the real Redis server and PostgreSQL: the messages of
//! every class the RabbitMQ replica faces, and entries written into the streams by hand
//! (missing fields, binary garbage, an oversized body), must each end in the dead-letter
//! stream with a reason while the good ones behind them are applied.

#![cfg(all(feature = "redis", feature = "postgres"))]

mod support;

use cqrs_sync::transport::HEADER_REASON;
use support::db::{Backend, TestDb};
use support::hostile::{
    every_hostile_message_is_dead_lettered, message_of, replica_system, rows, save, tables,
};
use support::redis::{PATIENCE, Space, client, connect};
use support::wait_until;

#[actix_rt::test]
async fn every_hostile_message_is_dead_lettered_and_the_good_ones_behind_it_applied() {
    support::init_tracing();
    let space = Space::create("cqrs_redis_hostile");
    let db = TestDb::new(Backend::Postgres, "redis_hostile").await;
    tables(&db).await;
    let (transport, _addr) = connect(space.config()).await;
    let system = replica_system(space.service_config(), transport, &db, "hostile").await;
    every_hostile_message_is_dead_lettered(&system, &db, "dead_letter_hostile").await;
    system.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    db.cleanup().await;
}

#[actix_rt::test]
async fn entries_written_into_the_stream_by_hand_are_dead_lettered_not_fatal() {
    support::init_tracing();
    let space = Space::create("cqrs_redis_by_hand");
    let db = TestDb::new(Backend::Postgres, "redis_by_hand").await;
    tables(&db).await;
    let (transport, _addr) = connect(space.config()).await;
    let system = replica_system(space.service_config(), transport.clone(), &db, "by_hand").await;
    let stream = format!("cqrs:{{{}}}:x:child", space.exchange);
    let huge = vec![b'{'; 16 << 20];
    let bad: Vec<Vec<(&[u8], &[u8])>> = vec![
        // No body, no content type, no routing key.
        vec![(b"junk", b"1")],
        // Binary garbage with NUL bytes and invalid UTF-8, in the body and the field names.
        vec![
            (b"body", b"\x00\xff\xfe{\"signal_type\x00"),
            (b"\xff\x00name", b"\x00"),
            (b"expires_at", b"not a number"),
        ],
        // A content type nobody knows, with a NUL in it.
        vec![
            (b"body", b"{}"),
            (b"content_type", b"text/\x00evil"),
            (b"routing_key", b"child"),
        ],
        // A 16 MiB body that is not JSON.
        vec![(b"body", huge.as_slice()), (b"content_type", b"text/plain")],
    ];
    {
        let mut conn = client();
        for fields in &bad {
            let mut cmd = redis::cmd("XADD");
            cmd.arg(&stream).arg("*");
            for (k, v) in fields {
                cmd.arg(*k).arg(*v);
            }
            let _: String = cmd.query(&mut conn).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    transport
        .publish(message_of(save(1, |_| {})))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_until("the good entry is applied", PATIENCE, || async {
        rows(&db).await == 1
    })
    .await;
    wait_until("every bad entry is dead-lettered", PATIENCE, || async {
        transport
            .inspect("by_hand")
            .await
            .is_ok_and(|s| s.dead_letters == bad.len() as u64)
    })
    .await;
    system.wait_idle().await.unwrap_or_else(|e| panic!("{e}"));
    let dead =
        cqrs_transports::conformance::collect(&transport, "dead_letter_by_hand", 10, true).await;
    let letters = dead.wait_for(bad.len(), "dead letters").await;
    for letter in &letters {
        assert_eq!(
            letter.headers.get(HEADER_REASON).map(String::as_str),
            Some("decode"),
            "{letter:?}"
        );
    }
    assert_eq!(
        letters[3].body.len(),
        16 << 20,
        "the body is kept as received"
    );
    let m = system.metrics();
    assert_eq!((m.retried, m.dead_lettered), (0, bad.len() as u64));
    system.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    db.cleanup().await;
}
