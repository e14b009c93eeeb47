//! Encode and decode of a ~1 KB row, JSON and MessagePack (criterion), then a one-core
//! throughput figure printed next to the target.

#![allow(clippy::print_stdout, clippy::unwrap_used)] // a bench prints its figures and may panic

use std::hint::black_box;
use std::time::{Duration, Instant};

use cqrs_sync::{Codec, Envelope, JsonObject, SignalType};
use criterion::{Criterion, Throughput, criterion_group};
use serde_json::{Value, json};

/// A row of about 1 KB, shaped like a real table: ids, text, decimals as strings, dates, JSON.
fn envelope() -> Envelope {
    let data = json!({
        "id": 123_456,
        "cqrs_revision": 17,
        "cqrs_updated": "2026-11-27 17:08:25.074040+00:00",
        "name": "Ada King, Countess of Lovelace",
        "email": "ada.lovelace@analytical-engine.example.com",
        "birth_date": "1815-12-10",
        "rating": "9999.99",
        "balance": "123456789.01",
        "publisher": 42,
        "uuid": "9b5a5bcc-ebc2-4f92-984b-066b9c03521d",
        "active": true,
        "created_at": "2024-01-02 03:04:05.123456+00:00",
        "tags": ["math", "computing", "poetry", "engines", "notes"],
        "address": {"street": "12 St James's Square", "city": "London", "postcode": "SW1Y 4JH", "country": "GB"},
        "bio": "Mathematician and writer, chiefly known for her work on Charles Babbage's proposed mechanical general-purpose computer, the Analytical Engine. She was the first to recognise that the machine had applications beyond pure calculation, and published the first algorithm intended to be carried out by such a machine.",
        "notes": "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua.",
        "score": 0.875,
        "visits": 1_234_567,
    });
    let Value::Object(map) = data else {
        unreachable!()
    };
    let previous: JsonObject = [("name".to_owned(), json!("Ada Lovelace"))]
        .into_iter()
        .collect();
    Envelope::new(SignalType::Save, "author", map).with_previous_data(Some(previous))
}

fn bench(c: &mut Criterion) {
    let env = envelope();
    let json_body = Codec::Json.encode(&env).unwrap();
    let msgpack_body = Codec::MessagePack.encode(&env).unwrap();
    let mut group = c.benchmark_group("codec_1kb_row");
    group.throughput(Throughput::Elements(1));
    group.bench_function("json_encode", |b| {
        b.iter(|| Codec::Json.encode(black_box(&env)).unwrap())
    });
    group.bench_function("json_decode", |b| {
        b.iter(|| Codec::Json.decode(black_box(&json_body), None).unwrap())
    });
    group.bench_function("msgpack_encode", |b| {
        b.iter(|| Codec::MessagePack.encode(black_box(&env)).unwrap())
    });
    group.bench_function("msgpack_decode", |b| {
        b.iter(|| {
            Codec::MessagePack
                .decode(black_box(&msgpack_body), None)
                .unwrap()
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}

/// Operations per second of `f` on this thread, over about a second.
fn rate(mut f: impl FnMut()) -> f64 {
    for _ in 0..10_000 {
        f();
    }
    let start = Instant::now();
    let mut n = 0_u64;
    while start.elapsed() < Duration::from_secs(1) {
        for _ in 0..1_000 {
            f();
        }
        n += 1_000;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    benches();
    let env = envelope();
    let json_body = Codec::Json.encode(&env).unwrap();
    let msgpack_body = Codec::MessagePack.encode(&env).unwrap();
    println!(
        "\nrow body: {} bytes JSON, {} bytes MessagePack (one core)",
        json_body.len(),
        msgpack_body.len()
    );
    let figures = [
        (
            "JSON decode",
            rate(|| drop(black_box(Codec::Json.decode(&json_body, None).unwrap()))),
            Some(300_000.0),
        ),
        (
            "JSON encode",
            rate(|| drop(black_box(Codec::Json.encode(&env).unwrap()))),
            None,
        ),
        (
            "MessagePack decode",
            rate(|| {
                drop(black_box(
                    Codec::MessagePack.decode(&msgpack_body, None).unwrap(),
                ))
            }),
            None,
        ),
        (
            "MessagePack encode",
            rate(|| drop(black_box(Codec::MessagePack.encode(&env).unwrap()))),
            None,
        ),
    ];
    for (name, per_sec, target) in figures {
        match target {
            Some(t) => println!(
                "{name:<20} {:>10.0} /s   target >= {t:.0} /s   {}",
                per_sec,
                if per_sec >= t { "ok" } else { "BELOW TARGET" }
            ),
            None => println!("{name:<20} {:>10.0} /s", per_sec),
        }
    }
}
