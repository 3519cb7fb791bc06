//! The JSON Schemas (draft 2020-12): one per message and the two unions.

use std::collections::BTreeSet;

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::{Direction, GENERATED_NOTICE, GeneratedFile, envelope_schema, messages};
use crate::ids::RequestId;
use crate::time::Timestamp;

/// Where the schemas keep their shared definitions.
pub(super) const DEFS: &str = "#/$defs/";
const ID_BASE: &str = "urn:petchat:v1:schema:";

/// `client/<type>.schema.json`, `server/<type>.schema.json`,
/// `client-message.schema.json` and `server-message.schema.json`.
pub(super) fn schema_files() -> Vec<GeneratedFile> {
    let mut files = Vec::new();
    for direction in [Direction::Client, Direction::Server] {
        let mut generator = SchemaSettings::draft2020_12().into_generator();
        generator.subschema_for::<RequestId>();
        generator.subschema_for::<Timestamp>();
        let messages = messages(direction, &mut generator);
        let definitions = generator.take_definitions(true);

        let mut union_defs = definitions.clone();
        let mut one_of = Vec::new();
        for message in &messages {
            let envelope = envelope_schema(direction, message, DEFS);
            let name = format!("{}{}", capitalized(direction.as_str()), message.variant);
            one_of.push(json!({ "$ref": format!("{DEFS}{name}") }));
            union_defs.insert(name, envelope.clone());

            let mut root = root_header(&format!("{}.{}", direction.as_str(), message.wire_type));
            root.extend(into_object(envelope));
            root.insert("$defs".into(), Value::Object(referenced(&root, &definitions)));
            files.push(file(format!("{}/{}.schema.json", direction.as_str(), message.wire_type), root));
        }

        let mut union = root_header(&format!("{}-message", direction.as_str()));
        union.insert(
            "title".into(),
            json!(match direction {
                Direction::Client => "Any message a client sends to the server",
                Direction::Server => "Any message the server sends to a client",
            }),
        );
        union.insert("description".into(), json!("Exactly one of the messages, told apart by `type`."));
        union.insert("oneOf".into(), Value::Array(one_of));
        union.insert("$defs".into(), Value::Object(union_defs));
        files.push(file(format!("{}-message.schema.json", direction.as_str()), union));
    }
    files
}

fn root_header(id: &str) -> Map<String, Value> {
    into_object(json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("{ID_BASE}{id}"),
        "$comment": GENERATED_NOTICE,
    }))
}

fn file(path: String, schema: Map<String, Value>) -> GeneratedFile {
    let mut contents = serde_json::to_string_pretty(&Value::Object(schema)).expect("a JSON value always serializes");
    contents.push('\n');
    GeneratedFile { path, contents }
}

/// The definitions `schema` refers to, directly or through other definitions.
fn referenced(schema: &Map<String, Value>, definitions: &Map<String, Value>) -> Map<String, Value> {
    let mut names = BTreeSet::new();
    let mut pending: Vec<&Value> = schema.values().collect();
    while let Some(value) = pending.pop() {
        match value {
            Value::Object(object) => {
                if let Some(name) = object.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix(DEFS))
                    && names.insert(name.to_owned())
                    && let Some(definition) = definitions.get(name)
                {
                    pending.push(definition);
                }
                pending.extend(object.values());
            }
            Value::Array(items) => pending.extend(items),
            _ => {}
        }
    }
    definitions.iter().filter(|(name, _)| names.contains(*name)).map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn into_object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(object) => object,
        _ => unreachable!("built from a json! object literal"),
    }
}

pub(super) fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|first| first.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
}
