//! Every message captured from django-cqrs 3.1.0 (`tests/fixtures/django-cqrs/`, described in
//! its README) decodes; re-encoding gives the same JSON value; MessagePack round-trips it.

use std::path::PathBuf;

use cqrs_sync::{Codec, SignalType};
use serde_json::Value;

fn fixtures() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/django-cqrs");
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    for file in files {
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let record: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}:{}: {e}", file.display(), n + 1));
            out.push((
                format!(
                    "{}:{}",
                    file.file_name()
                        .map_or_else(String::new, |f| f.to_string_lossy().into_owned()),
                    n + 1
                ),
                record,
            ));
        }
    }
    assert!(
        out.len() >= 21,
        "expected the 21 captured messages, found {}",
        out.len()
    );
    out
}

#[test]
fn every_fixture_decodes_and_reencodes_to_the_same_value() {
    for (place, record) in fixtures() {
        let body = record["body"]
            .as_str()
            .unwrap_or_else(|| panic!("{place}: no body"));
        let content_type = record["properties"]["content_type"].as_str();
        let envelope = Codec::decode_with_content_type(content_type, body.as_bytes(), None)
            .unwrap_or_else(|e| panic!("{place}: {e}"));
        let routing_key = record["routing_key"].as_str().unwrap_or_default();
        assert!(
            routing_key.ends_with(&envelope.cqrs_id),
            "{place}: routing key {routing_key} vs {}",
            envelope.cqrs_id
        );
        let original: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{place}: {e}"));
        let reencoded: Value = serde_json::from_slice(
            &Codec::Json
                .encode(&envelope)
                .unwrap_or_else(|e| panic!("{place}: {e}")),
        )
        .unwrap_or_else(|e| panic!("{place}: {e}"));
        assert_eq!(reencoded, original, "{place}: JSON re-encoding differs");

        let packed = Codec::MessagePack
            .encode(&envelope)
            .unwrap_or_else(|e| panic!("{place}: {e}"));
        let unpacked = Codec::MessagePack
            .decode(&packed, None)
            .unwrap_or_else(|e| panic!("{place}: {e}"));
        assert_eq!(
            unpacked, envelope,
            "{place}: MessagePack round trip differs"
        );
    }
}

#[test]
fn fixture_details_survive_decoding() {
    let all = fixtures();
    let find = |file: &'static str| {
        all.iter()
            .filter(move |(p, _)| p.starts_with(file))
            .map(|(_, r)| r)
    };
    let decode = |r: &Value| {
        Codec::Json
            .decode(r["body"].as_str().unwrap_or_default().as_bytes(), None)
            .unwrap_or_else(|e| panic!("{e}"))
    };

    let delete = decode(
        find("delete.jsonl")
            .next()
            .unwrap_or_else(|| panic!("no delete fixture")),
    );
    assert_eq!(delete.signal_type, SignalType::Delete);
    assert_eq!(
        delete
            .instance_data
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["cqrs_revision", "cqrs_updated", "id"]
    );
    assert_eq!(delete.revision(), Some(1));
    assert!(delete.require_updated().is_ok());

    let create: Vec<_> = find("save_create.jsonl").map(decode).collect();
    let gallimard = create
        .iter()
        .find(|e| e.instance_pk == 2 && e.cqrs_id == "publisher")
        .unwrap_or_else(|| panic!("no publisher 2"));
    assert_eq!(
        gallimard.instance_data["name"], "Éditions Gallimard / Paris",
        "\\u and \\/ escapes decode"
    );
    let ada = create
        .iter()
        .find(|e| e.cqrs_id == "author" && e.instance_pk == 1)
        .unwrap_or_else(|| panic!("no author 1"));
    let rating = cqrs_sync::values::decimal_from_value(&ada.instance_data["rating"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rating.to_string(), "9999.99", "decimal floats read exactly");
    assert_eq!(
        ada.instance_data["publisher"], 1,
        "FK travels as the raw id under the field name"
    );

    let dead: Vec<_> = find("retry_and_dead_letter.jsonl").collect();
    let retries: Vec<u32> = dead.iter().map(|r| decode(r).retries).collect();
    assert_eq!(retries, [0, 1, 2, 2]);
    assert_eq!(dead[3]["properties"]["expiration"], "864000000");
    let sync = decode(
        find("sync_directed.jsonl")
            .next()
            .unwrap_or_else(|| panic!("no sync fixture")),
    );
    assert_eq!(sync.signal_type, SignalType::Sync);
}
