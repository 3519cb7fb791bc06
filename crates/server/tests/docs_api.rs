//! docs/api.md runs as written: every `sh` block is run in order with `bash`
//! against a real server (`$PETCHAT`, `$KEY`, `$TOKEN`), and when a `json`
//! block follows, the answer must equal it but for the values that differ on
//! every run (ids, tickets, times).

mod common;

use common::TestServer;
use petchat_protocol::Role;
use serde_json::Value;

const KEY: &str = "docs-key";
/// Fields whose value differs from run to run: only their type is compared.
const VOLATILE: &[&str] = &["id", "ticket", "expiresAt", "oldestWaitMs"];

/// The fenced blocks of a markdown file: (language, body).
fn blocks(markdown: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut lines = markdown.lines();
    while let Some(line) = lines.next() {
        let Some(language) = line.strip_prefix("```") else { continue };
        let body: Vec<&str> = lines.by_ref().take_while(|l| !l.starts_with("```")).collect();
        blocks.push((language.trim().to_owned(), body.join("\n")));
    }
    blocks
}

/// Whether `got` matches `expected`: equal, but volatile fields need only have the same type.
fn matches(expected: &Value, got: &Value, key: Option<&str>) -> Result<(), String> {
    match (expected, got) {
        (Value::Object(e), Value::Object(g)) => {
            let (mut ek, mut gk): (Vec<_>, Vec<_>) = (e.keys().collect(), g.keys().collect());
            ek.sort();
            gk.sort();
            if ek != gk {
                return Err(format!("fields {gk:?}, the docs show {ek:?}"));
            }
            e.iter().try_for_each(|(k, v)| matches(v, &g[k], Some(k)).map_err(|why| format!("{k}: {why}")))
        }
        (e, g) if key.is_some_and(|k| VOLATILE.contains(&k)) => {
            if std::mem::discriminant(e) == std::mem::discriminant(g) {
                Ok(())
            } else {
                Err(format!("{g} is not of the type of {e}"))
            }
        }
        (e, g) if e == g => Ok(()),
        (e, g) => Err(format!("{g}, the docs show {e}")),
    }
}

#[tokio::test]
async fn every_example_of_the_api_guide_runs_and_answers_what_it_shows() {
    let server = TestServer::start_with(|config| config.api_keys = vec![KEY.into()]).await;
    let token = server.token("cust-1", Role::Customer);
    let guide = include_str!("../../../docs/api.md");
    let blocks = blocks(guide);
    let mut ran = 0;
    for (index, (language, script)) in blocks.iter().enumerate() {
        if language != "sh" {
            continue;
        }
        let output = tokio::time::timeout(
            common::WAIT,
            tokio::process::Command::new("bash")
                .args(["-euo", "pipefail", "-c", script])
                .env("PETCHAT", format!("http://{}", server.addr))
                .env("KEY", KEY)
                .env("TOKEN", &token)
                .output(),
        )
        .await
        .expect("the example ends in time")
        .expect("bash runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "docs/api.md example failed:\n{script}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        ran += 1;
        let Some((next, expected)) = blocks.get(index + 1) else { continue };
        if next != "json" {
            continue;
        }
        let expected: Value = serde_json::from_str(expected).expect("the docs' JSON parses");
        let got: Value = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("docs/api.md example answered no JSON ({e}):\n{script}\n{stdout}"));
        if let Err(why) = matches(&expected, &got, None) {
            panic!("docs/api.md example answers otherwise than shown: {why}\n{script}\ngot {got}");
        }
    }
    assert!(ran >= 7, "the guide's examples were found ({ran})");
}

#[test]
fn the_comparison_refuses_a_missing_field_and_a_changed_value() {
    let shown: Value = serde_json::json!({"topic": "orders:1", "seq": 1, "id": "x"});
    assert!(matches(&shown, &serde_json::json!({"topic": "orders:1", "seq": 1, "id": "y"}), None).is_ok());
    assert!(matches(&shown, &serde_json::json!({"topic": "orders:1", "seq": 2, "id": "x"}), None).is_err());
    assert!(matches(&shown, &serde_json::json!({"topic": "orders:1", "seq": 1}), None).is_err());
    assert!(matches(&shown, &serde_json::json!({"topic": "orders:1", "seq": 1, "id": 5}), None).is_err());
}
