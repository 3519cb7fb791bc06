//! The TypeScript declarations of the browser package: every message and the
//! client's own events as discriminated unions, converted from the schemas.
//!
//! The types come from the same place as the JSON Schemas: the `messages!`
//! list (through [`envelope_schema`]), the schemars schemas of the data types,
//! and the client events of `session/json.rs`. A small converter turns the
//! subset of JSON Schema this crate emits (`object` with `properties` and
//! `required`, the scalar types, `const`, `enum`, `oneOf`/`anyOf`, `$ref`,
//! arrays, `null`) into TypeScript. A keyword outside that subset panics, so a
//! new kind of schema fails the tests instead of turning into `unknown`.

use std::collections::BTreeSet;

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::json::DEFS;
use super::{Direction, GENERATED_NOTICE, MessageSchema, envelope_schema, messages};
use crate::ids::RequestId;
use crate::time::Timestamp;

/// `crates/web/src/protocol.d.ts`: the unions `PetchatEvent`, `ServerMessage`,
/// `ClientMessage` and `ClientEvent`, one interface per message and event, and
/// one declaration per type of the schemas' definitions.
pub fn typescript_declarations() -> String {
    let mut generator = SchemaSettings::draft2020_12().into_generator();
    generator.subschema_for::<RequestId>();
    generator.subschema_for::<Timestamp>();
    let client = messages(Direction::Client, &mut generator);
    let server = messages(Direction::Server, &mut generator);
    let events = crate::session::event_schemas(&mut generator);
    let definitions = generator.take_definitions(true);

    let client_names: Vec<String> = client.iter().map(|m| format!("Client{}", m.variant)).collect();
    let server_names: Vec<String> = server.iter().map(|m| format!("Server{}", m.variant)).collect();
    let event_names: Vec<String> = events.iter().map(|e| format!("Client{}Event", e.variant)).collect();

    let mut out = Writer { out: String::new(), definitions: &definitions };
    out.line(0, &format!("// {GENERATED_NOTICE}"));
    out.line(0, "//");
    out.line(0, "// The petchat.v1 messages (docs/protocol.md) and the browser client's own events, told apart");
    out.line(0, "// by `type`. Field names are as on the wire; an optional field is left out, never null.");
    out.blank();
    out.union(
        "PetchatEvent",
        "What `onEvent` hears: a server message as received, or one of the client's own `client.*` events.",
        &["ServerMessage".to_owned(), "ClientEvent".to_owned()],
    );
    out.union("ServerMessage", "Any message the server sends to a client.", &server_names);
    out.union("ClientMessage", "Any message a client sends to the server.", &client_names);
    out.union("ClientEvent", "The browser client's own events, stamped when it noticed them.", &event_names);
    for (name, message) in server_names.iter().zip(&server) {
        let doc = format!("`{}`, server to client: {}", message.wire_type, message.description());
        out.declaration(name, Some(&doc), &envelope_schema(Direction::Server, message, DEFS));
    }
    for (name, message) in client_names.iter().zip(&client) {
        let doc = format!("`{}`, client to server: {}", message.wire_type, message.description());
        out.declaration(name, Some(&doc), &envelope_schema(Direction::Client, message, DEFS));
    }
    for (name, event) in event_names.iter().zip(&events) {
        let doc = format!("`{}`, the client's own: {}", event.wire_type, event.description());
        out.declaration(name, Some(&doc), &event_envelope(event));
    }
    let mut names: Vec<&String> = definitions.keys().collect();
    names.sort();
    for name in names {
        let schema = &definitions[name];
        out.declaration(name, schema.get("description").and_then(Value::as_str), schema);
    }
    let mut text = out.out;
    text.truncate(text.trim_end().len());
    text.push('\n');
    text
}

/// A client event in its envelope: `{type, data, timestamp}`, no `id`.
fn event_envelope(event: &MessageSchema) -> Value {
    json!({
        "type": "object",
        "properties": {
            "type": { "const": event.wire_type },
            "data": event.data.as_value(),
            "timestamp": { "$ref": format!("{DEFS}Timestamp"), "description": "When the client noticed it (UTC)." },
        },
        "required": ["type", "data", "timestamp"],
    })
}

/// Keywords that narrow a value without changing its TypeScript type.
const ANNOTATIONS: &[&str] = &[
    "$comment",
    "default",
    "deprecated",
    "description",
    "examples",
    "exclusiveMaximum",
    "exclusiveMinimum",
    "format",
    "maxItems",
    "maxLength",
    "maximum",
    "minItems",
    "minLength",
    "minimum",
    "multipleOf",
    "pattern",
    "readOnly",
    "title",
    "uniqueItems",
    "writeOnly",
];

/// Keywords the converter turns into TypeScript.
const SHAPES: &[&str] =
    &["$ref", "additionalProperties", "anyOf", "const", "enum", "items", "oneOf", "properties", "required", "type"];

/// Longest line of a doc comment before it wraps.
const DOC_WIDTH: usize = 100;

/// The output, and the definitions a `$ref` may name.
struct Writer<'a> {
    out: String,
    definitions: &'a Map<String, Value>,
}

impl Writer<'_> {
    fn line(&mut self, indent: usize, text: &str) {
        self.out.push_str(&"  ".repeat(indent));
        self.out.push_str(text);
        self.out.push('\n');
    }

    fn blank(&mut self) {
        self.out.push('\n');
    }

    /// `export type NAME = | A | B;`, one member a line.
    fn union(&mut self, name: &str, doc: &str, members: &[String]) {
        self.doc(0, doc);
        self.line(0, &format!("export type {name} ="));
        for (i, member) in members.iter().enumerate() {
            let end = if i + 1 == members.len() { ";" } else { "" };
            self.line(1, &format!("| {member}{end}"));
        }
        self.blank();
    }

    /// `export interface NAME {…}` for an object with properties, else
    /// `export type NAME = …;`.
    fn declaration(&mut self, name: &str, doc: Option<&str>, schema: &Value) {
        assert!(is_identifier(name), "{name} is not a TypeScript identifier");
        if let Some(doc) = doc {
            self.doc(0, doc);
        }
        if schema.get("properties").is_some() {
            let body = self.object(schema, 0);
            self.line(0, &format!("export interface {name} {body}"));
        } else if let Some(literals) = documented_literals(schema) {
            // A string enum: one member a line, each with its doc.
            self.line(0, &format!("export type {name} ="));
            for (i, (literal, doc)) in literals.iter().enumerate() {
                if let Some(doc) = doc {
                    self.doc(1, doc);
                }
                let end = if i + 1 == literals.len() { ";" } else { "" };
                self.line(1, &format!("| {literal}{end}"));
            }
        } else {
            let members = self.members(schema, 0);
            self.line(0, &format!("export type {name} = {};", members.join(" | ")));
        }
        self.blank();
    }

    /// A `/** … */` comment, wrapped at [`DOC_WIDTH`].
    fn doc(&mut self, indent: usize, text: &str) {
        let text = text.trim().replace("*/", "*\\/");
        if text.is_empty() {
            return;
        }
        let width = DOC_WIDTH.saturating_sub(indent * 2 + 3);
        let lines: Vec<String> = text.lines().flat_map(|line| wrap(line.trim_end(), width)).collect();
        if let [line] = lines.as_slice()
            && line.len() + 7 <= width
        {
            self.line(indent, &format!("/** {line} */"));
            return;
        }
        self.line(indent, "/**");
        for line in lines {
            self.line(indent, if line.is_empty() { " *".to_owned() } else { format!(" * {line}") }.as_str());
        }
        self.line(indent, " */");
    }

    /// The members of the union a schema stands for (one member for most).
    fn members(&self, schema: &Value, indent: usize) -> Vec<String> {
        let object = match schema {
            Value::Bool(true) => return vec!["unknown".into()],
            Value::Bool(false) => return vec!["never".into()],
            Value::Object(object) => object,
            other => panic!("not a JSON Schema: {other}"),
        };
        if let Some(keyword) =
            object.keys().find(|k| !ANNOTATIONS.contains(&k.as_str()) && !SHAPES.contains(&k.as_str()))
        {
            panic!("typescript.rs does not convert the keyword {keyword:?} (in {schema})");
        }
        if let Some(reference) = object.get("$ref").and_then(Value::as_str) {
            let name = reference.strip_prefix(DEFS).unwrap_or_else(|| panic!("$ref {reference} is not under {DEFS}"));
            assert!(self.definitions.contains_key(name), "$ref {reference} names no definition");
            return vec![name.to_owned()];
        }
        if let Some(value) = object.get("const") {
            return vec![literal(value)];
        }
        if let Some(values) = object.get("enum").and_then(Value::as_array) {
            return values.iter().map(literal).collect();
        }
        if let Some(alternatives) = object.get("oneOf").or_else(|| object.get("anyOf")).and_then(Value::as_array) {
            assert!(object.get("properties").is_none(), "typescript.rs does not convert properties beside oneOf/anyOf");
            let mut members = Vec::new();
            for alternative in alternatives {
                for member in self.members(alternative, indent) {
                    if !members.contains(&member) {
                        members.push(member);
                    }
                }
            }
            return members;
        }
        let types: Vec<&str> = match object.get("type") {
            None => return vec!["unknown".into()],
            Some(Value::String(one)) => vec![one.as_str()],
            Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
            Some(other) => panic!("type must be a string or an array: {other}"),
        };
        types
            .into_iter()
            .map(|kind| match kind {
                "string" => "string".to_owned(),
                "integer" | "number" => "number".to_owned(),
                "boolean" => "boolean".to_owned(),
                "null" => "null".to_owned(),
                "array" => {
                    let items = self.members(object.get("items").unwrap_or(&Value::Bool(true)), indent);
                    match items.as_slice() {
                        [one] if !one.contains(' ') => format!("{one}[]"),
                        _ => format!("({})[]", items.join(" | ")),
                    }
                }
                "object" => self.object(schema, indent),
                other => panic!("unknown JSON Schema type {other:?}"),
            })
            .collect()
    }

    /// An object type: `{ … }` over several lines, or a `Record`.
    fn object(&self, schema: &Value, indent: usize) -> String {
        let additional = schema.get("additionalProperties");
        let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
            return match additional {
                Some(Value::Bool(false)) => "Record<string, never>".into(),
                Some(value @ Value::Object(_)) => {
                    format!("Record<string, {}>", self.members(value, indent).join(" | "))
                }
                _ => "Record<string, unknown>".into(),
            };
        };
        let required: BTreeSet<&str> =
            schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        let mut body = Writer { out: String::new(), definitions: self.definitions };
        body.out.push_str("{\n");
        for (name, property) in properties {
            if let Some(doc) = property.get("description").and_then(Value::as_str) {
                body.doc(indent + 1, doc);
            }
            let optional = !required.contains(name.as_str());
            let mut members = self.members(property, indent + 1);
            // Optional fields are left out rather than sent as null.
            if optional && members.len() > 1 {
                members.retain(|m| m != "null");
            }
            let key = if is_identifier(name) { name.clone() } else { Value::String(name.clone()).to_string() };
            body.line(indent + 1, &format!("{key}{}: {};", if optional { "?" } else { "" }, members.join(" | ")));
        }
        match additional {
            Some(Value::Bool(true)) => body.line(indent + 1, "[key: string]: unknown;"),
            None | Some(Value::Bool(false)) => {}
            Some(other) => panic!("typescript.rs does not convert additionalProperties {other} beside properties"),
        }
        body.out.push_str(&"  ".repeat(indent));
        body.out.push('}');
        body.out
    }
}

/// The literals of a string enum with the doc of each, when every member of
/// its `oneOf` is a `const`.
fn documented_literals(schema: &Value) -> Option<Vec<(String, Option<&str>)>> {
    let alternatives = schema.get("oneOf").or_else(|| schema.get("anyOf"))?.as_array()?;
    alternatives
        .iter()
        .map(|alternative| {
            let value = alternative.get("const")?;
            Some((literal(value), alternative.get("description").and_then(Value::as_str)))
        })
        .collect()
}

/// A JSON scalar as a TypeScript literal type.
fn literal(value: &Value) -> String {
    match value {
        Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null => value.to_string(),
        other => panic!("typescript.rs does not convert the literal {other}"),
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

/// Splits a line at spaces so that each piece fits `width` (a longer word stays whole).
fn wrap(line: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in line.split(' ') {
        let current = lines.last_mut().expect("never empty");
        if !current.is_empty() && current.len() + 1 + word.len() > width {
            lines.push(word.to_owned());
        } else {
            if !current.is_empty() {
                current.push(' ');
            }
            current.push_str(word);
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{ClientMessage, ServerMessage};

    /// The block of `export interface NAME {…}` in `ts`.
    fn interface<'a>(ts: &'a str, name: &str) -> &'a str {
        let start = ts.find(&format!("export interface {name} {{")).unwrap_or_else(|| panic!("no interface {name}"));
        let end = ts[start..].find("\n}\n").expect("an interface ends") + start + 1;
        &ts[start..end]
    }

    /// The members of `export type NAME = | A | B;` in `ts`.
    fn union_members(ts: &str, name: &str) -> Vec<String> {
        let start = ts.find(&format!("export type {name} =\n")).unwrap_or_else(|| panic!("no union {name}"));
        let end = ts[start..].find(";\n").expect("a union ends") + start;
        ts[start..end].lines().skip(1).map(|line| line.trim().trim_start_matches("| ").to_owned()).collect()
    }

    #[test]
    fn every_wire_type_is_a_member_of_its_union() {
        let ts = typescript_declarations();
        for (union, prefix, types) in
            [("ClientMessage", "Client", ClientMessage::TYPES), ("ServerMessage", "Server", ServerMessage::TYPES)]
        {
            let members = union_members(&ts, union);
            assert_eq!(members.len(), types.len(), "{union}: {members:?}");
            for wire_type in types {
                let member = members
                    .iter()
                    .find(|m| interface(&ts, m).contains(&format!("\n  type: \"{wire_type}\";\n")))
                    .unwrap_or_else(|| panic!("{union} has no member with type {wire_type:?}"));
                assert!(member.starts_with(prefix), "{member}");
            }
        }
        assert_eq!(union_members(&ts, "PetchatEvent"), ["ServerMessage", "ClientEvent"]);
    }

    #[test]
    fn every_client_event_is_a_member_of_client_event() {
        let ts = typescript_declarations();
        let members = union_members(&ts, "ClientEvent");
        let mut generator = SchemaSettings::draft2020_12().into_generator();
        let events = crate::session::event_schemas(&mut generator);
        assert_eq!(members.len(), events.len());
        for (member, event) in members.iter().zip(&events) {
            assert!(event.wire_type.starts_with("client."), "{}", event.wire_type);
            let body = interface(&ts, member);
            assert!(body.contains(&format!("\n  type: \"{}\";\n", event.wire_type)), "{body}");
            assert!(body.contains("\n  timestamp: Timestamp;\n") && !body.contains("\n  id?"), "{body}");
        }
    }

    #[test]
    fn envelopes_follow_the_direction() {
        let ts = typescript_declarations();
        let message = interface(&ts, "ServerChatMessage");
        for line in
            ["  type: \"chat.message\";", "  id?: RequestId;", "  data: ChatMessage;", "  timestamp: Timestamp;"]
        {
            assert!(message.contains(&format!("\n{line}\n")), "{line} missing in {message}");
        }
        let send = interface(&ts, "ClientChatSend");
        for line in ["  type: \"chat.send\";", "  id?: RequestId;", "  data: SendChat;", "  timestamp?: Timestamp;"] {
            assert!(send.contains(&format!("\n{line}\n")), "{line} missing in {send}");
        }
    }

    #[test]
    fn fields_are_camel_case_optional_without_null_and_documented() {
        let ts = typescript_declarations();
        let message = interface(&ts, "ChatMessage");
        assert!(message.contains("\n  /** The message's position in the conversation. */\n  seq: Seq;\n"), "{message}");
        assert!(message.contains("\n  sentAt: Timestamp;\n"), "{message}");
        let error = interface(&ts, "ErrorData");
        assert!(
            error.contains("\n  refId?: RequestId;\n") && error.contains("\n  retryAfterMs?: number;\n"),
            "{error}"
        );
        assert!(ts.contains("export type Seq = number;\n"));
        assert!(ts.contains(
            "export type Role =\n  /** A customer of the pet store, who opens conversations. */\n  | \"customer\"\n"
        ));
        assert!(interface(&ts, "TopicEvent").contains("\n  data: Record<string, unknown>;\n"));
        assert!(
            interface(&ts, "ConnectionState")
                .contains("\n  state: \"connecting\" | \"connected\" | \"reconnecting\" | \"stopped\";\n")
        );
        let loose = ts.lines().find(|line| line.ends_with(": unknown;") && !line.trim().starts_with("[key"));
        assert_eq!(loose, None, "a field typed unknown");
    }

    #[test]
    fn output_is_stable() {
        assert_eq!(typescript_declarations(), typescript_declarations());
        assert!(typescript_declarations().starts_with(&format!("// {GENERATED_NOTICE}\n")));
    }

    #[test]
    fn the_converter_reads_the_subset_and_refuses_the_rest() {
        let definitions = Map::new();
        let writer = Writer { out: String::new(), definitions: &definitions };
        let convert = |schema: Value| writer.members(&schema, 0).join(" | ");
        assert_eq!(convert(json!({"type": ["integer", "null"]})), "number | null");
        assert_eq!(convert(json!({"enum": ["a", 1, true]})), "\"a\" | 1 | true");
        assert_eq!(convert(json!({"type": "array", "items": {"type": "string"}})), "string[]");
        assert_eq!(convert(json!({"type": "array", "items": {"type": ["string", "null"]}})), "(string | null)[]");
        assert_eq!(convert(json!({"type": "object", "additionalProperties": false})), "Record<string, never>");
        assert_eq!(
            convert(json!({"type": "object", "properties": {"a-b": {"type": "boolean"}}, "required": ["a-b"]})),
            "{\n  \"a-b\": boolean;\n}"
        );
        let refused = std::panic::catch_unwind(|| convert(json!({"allOf": [{"type": "string"}]})));
        assert!(refused.is_err());
    }
}
