//! The golden examples of `schemas/examples`, shared with every other side:
//! each valid one decodes and round-trips, each invalid one is refused with
//! the error code its file name starts with.

use std::fs;
use std::path::{Path, PathBuf};

use petchat_protocol::{ClientEnvelope, ErrorCode, ServerEnvelope};
use serde_json::Value;

fn examples(kind: &str) -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/examples").join(kind);
    let mut files: Vec<PathBuf> =
        fs::read_dir(&dir).expect("examples folder").map(|e| e.expect("entry").path()).collect();
    files.sort();
    assert!(!files.is_empty(), "no examples in {}", dir.display());
    files
        .into_iter()
        .map(|path| {
            let name = path.file_name().expect("file name").to_string_lossy().into_owned();
            let text = fs::read_to_string(&path).expect("example readable");
            (name, text.trim_end_matches('\n').to_owned())
        })
        .collect()
}

/// `client.chat.send--4000-chars.json` → (`client`, `chat.send`).
fn direction_and_type(name: &str) -> (&str, &str) {
    let stem = name.strip_suffix(".json").expect(".json");
    let base = stem.split_once("--").map_or(stem, |(base, _)| base);
    base.split_once('.').expect("<direction>.<type>")
}

#[test]
fn every_valid_example_decodes_and_round_trips() {
    for (name, text) in examples("valid") {
        let original: Value = serde_json::from_str(&text).expect("valid examples are JSON");
        let (direction, wire_type) = direction_and_type(&name);
        let (decoded_type, encoded) = match direction {
            "client" => {
                let envelope = ClientEnvelope::decode(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
                (envelope.message.wire_type(), envelope.encode())
            }
            "server" => {
                let envelope = ServerEnvelope::decode(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
                (envelope.message.wire_type(), envelope.encode())
            }
            other => panic!("{name}: unknown direction {other}"),
        };
        assert_eq!(decoded_type, wire_type, "{name}");
        let reencoded: Value = serde_json::from_str(&encoded).expect("encoder writes JSON");
        // Timestamps are written in UTC; an example may use another offset.
        let normalize = |mut v: Value| {
            if let Some(ts) = v.get_mut("timestamp") {
                *ts = Value::Null;
            }
            v
        };
        assert_eq!(normalize(reencoded.clone()), normalize(original.clone()), "{name} does not round-trip");
        if original["timestamp"].as_str().is_some_and(|ts| ts.ends_with('Z')) {
            assert_eq!(reencoded["timestamp"], original["timestamp"], "{name}: timestamp");
        }
    }
}

#[test]
fn every_invalid_example_is_refused_with_its_code() {
    for (name, text) in examples("invalid") {
        let code_name = name.split_once("--").map(|(code, _)| code).expect("<code>--<description>.json");
        let expected = ErrorCode::from_wire(code_name).unwrap_or_else(|| panic!("{name}: unknown code {code_name}"));
        match ClientEnvelope::decode(&text) {
            Ok(decoded) => panic!("{name} was accepted as {decoded:?}"),
            Err(err) => assert_eq!(err.code(), expected, "{name}: {err}"),
        }
    }
}

#[test]
fn every_error_code_a_decoder_can_produce_has_an_invalid_example() {
    let names: Vec<String> = examples("invalid").into_iter().map(|(name, _)| name).collect();
    for code in [ErrorCode::InvalidJson, ErrorCode::InvalidMessage, ErrorCode::UnknownType, ErrorCode::TextTooLong] {
        assert!(names.iter().any(|n| n.starts_with(&format!("{code}--"))), "no invalid example for {code}");
    }
}
