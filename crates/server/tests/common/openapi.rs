//! Every HTTP answer the tests read from an endpoint of schemas/openapi.json
//! is checked against the schema the document gives for its status: the
//! generated contract and the server agree, or the test fails.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde_json::{Value, json};

fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/openapi.json");
        serde_json::from_str(&std::fs::read_to_string(path).expect("schemas/openapi.json")).expect("JSON")
    })
}

/// The operation of `method` on the path template matching `path`, if the document has one.
fn operation(method: &str, path: &str) -> Option<(&'static str, &'static Value)> {
    let path = path.split('?').next().unwrap_or(path);
    let paths = document()["paths"].as_object()?;
    paths.iter().find_map(|(template, item)| {
        let matches = template.split('/').count() == path.split('/').count()
            && template.split('/').zip(path.split('/')).all(|(t, p)| t == p || (t.starts_with('{') && !p.is_empty()));
        let op = item.get(method.to_ascii_lowercase())?;
        matches.then_some((template.as_str(), op))
    })
}

/// A validator of the component schema `reference` (`#/components/schemas/X`).
fn validator(reference: &str) -> &'static jsonschema::Validator {
    static CACHE: OnceLock<Mutex<HashMap<String, &'static jsonschema::Validator>>> = OnceLock::new();
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    cache.entry(reference.to_owned()).or_insert_with(|| {
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$ref": reference,
            "components": document()["components"],
        });
        Box::leak(Box::new(jsonschema::validator_for(&schema).expect("an OpenAPI component compiles")))
    })
}

/// Checks an answer against the document when the document describes the
/// endpoint: its status must be one the operation lists, and a JSON body must
/// match that response's schema.
pub fn check(method: &str, path: &str, status: u16, body: &str) {
    let Some((template, op)) = operation(method, path) else { return };
    let response = op["responses"]
        .get(status.to_string())
        .unwrap_or_else(|| panic!("openapi.json: {method} {template} does not list status {status} (body {body})"));
    let Some(reference) = response.pointer("/content/application~1json/schema/$ref").and_then(Value::as_str) else {
        return;
    };
    let value: Value = serde_json::from_str(body.trim())
        .unwrap_or_else(|e| panic!("openapi.json: {method} {path} {status} should be JSON: {e}\n{body}"));
    if let Err(e) = validator(reference).validate(&value) {
        panic!("openapi.json: {method} {path} {status} breaks {reference}: {e}\n{value}");
    }
}
