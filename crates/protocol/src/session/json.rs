//! Session events as JSON lines: server messages as received, the client's own
//! events as `client.*` messages (SPEC §9). The CLI prints them; the browser
//! client hands them to JavaScript.

use serde_json::{Value, json};

use super::{ConnectionState, Event};
use crate::time::Timestamp;

impl Event {
    /// The event as one JSON object, stamped `now` when it is the client's own.
    pub fn to_json(&self, now: Timestamp) -> Value {
        let client = |kind: &str, data: Value| json!({"type": kind, "data": data, "timestamp": now});
        match self {
            Event::Message(envelope) => serde_json::to_value(envelope).expect("an envelope serializes"),
            Event::State(state) => client("client.state", state.to_json()),
            Event::Queued { conversation_id, client_message_id } => client(
                "client.queued",
                json!({"conversationId": conversation_id, "clientMessageId": client_message_id}),
            ),
            Event::Sent(ack) => client("client.sent", serde_json::to_value(ack).expect("wire types serialize")),
            Event::Failed { client_message_id, error } => {
                client("client.failed", json!({"clientMessageId": client_message_id, "error": error}))
            }
            Event::Dropped { client_message_id } => {
                client("client.dropped", json!({"clientMessageId": client_message_id}))
            }
            Event::OutboxFull => {
                client("client.error", json!({"code": "outbox_full", "message": "the outbox is full"}))
            }
            Event::Gap { conversation_id, expected, got } => {
                client("client.gap", json!({"conversationId": conversation_id, "expected": expected, "got": got}))
            }
            Event::TokenNeeded { close_code } => client("client.token_needed", json!({"closeCode": close_code.code()})),
            Event::Invalid(error) => client("client.invalid", json!({"message": error.to_string()})),
        }
    }
}

impl ConnectionState {
    /// `{state, retryInMs?, closeCode?, reason?}`, the data of `client.state`.
    pub fn to_json(&self) -> Value {
        let (state, retry, code, reason) = match self {
            ConnectionState::Connecting => ("connecting", None, None, ""),
            ConnectionState::Connected => ("connected", None, None, ""),
            ConnectionState::Reconnecting { retry_in_ms, close_code, reason } => {
                ("reconnecting", Some(*retry_in_ms), *close_code, reason.as_str())
            }
            ConnectionState::Stopped { close_code } => ("stopped", None, *close_code, ""),
        };
        let mut data = json!({"state": state});
        if let Some(retry) = retry {
            data["retryInMs"] = json!(retry);
        }
        if let Some(code) = code {
            data["closeCode"] = json!(code.code());
        }
        if !reason.is_empty() {
            data["reason"] = json!(reason);
        }
        data
    }
}

/// The client's own events as the generators see them (feature `schema`):
/// wire type, name, doc and the schema of the `data` that [`Event::to_json`]
/// writes, for the browser package's TypeScript declarations. Server messages
/// are not listed: they come from the `messages!` list.
#[cfg(feature = "schema")]
pub(crate) fn event_schemas(generator: &mut schemars::SchemaGenerator) -> Vec<crate::schema::MessageSchema> {
    use crate::schema::MessageSchema;
    use crate::{ChatAck, ClientMessageId, ConversationId, ErrorData};

    let conversation_id = generator.subschema_for::<ConversationId>();
    let client_message_id = generator.subschema_for::<ClientMessageId>();
    // The codes whose rule is "a new token", as `CloseCode` says.
    let token_codes: Vec<u16> = crate::close::CloseCode::ALL
        .iter()
        .filter(|code| code.reconnect() == crate::close::Reconnect::NewToken)
        .map(|code| code.code())
        .collect();
    let event = |wire_type, variant, doc, data| MessageSchema { wire_type, variant, doc, data };
    vec![
        event("client.state", "State", "The connection state changed.", generator.subschema_for::<ConnectionState>()),
        event(
            "client.queued",
            "Queued",
            "A `chat.send` entered the outbox.",
            schemars::json_schema!({
                "type": "object",
                "properties": {
                    "conversationId": with_doc(&conversation_id, "Its conversation."),
                    "clientMessageId": with_doc(&client_message_id, "Its idempotency key."),
                },
                "required": ["conversationId", "clientMessageId"],
            }),
        ),
        event(
            "client.sent",
            "Sent",
            "A queued message is stored: its `chat.ack`.",
            generator.subschema_for::<ChatAck>(),
        ),
        event(
            "client.failed",
            "Failed",
            "The server refused a queued message for good; it left the outbox.",
            schemars::json_schema!({
                "type": "object",
                "properties": {
                    "clientMessageId": with_doc(&client_message_id, "Its idempotency key."),
                    "error": with_doc(&generator.subschema_for::<ErrorData>(), "Why."),
                },
                "required": ["clientMessageId", "error"],
            }),
        ),
        event(
            "client.dropped",
            "Dropped",
            "A message was dropped from the outbox after the server closed with 1009, or because it is \
             bigger than the `maxMessageBytes` of a later `session.ready`.",
            schemars::json_schema!({
                "type": "object",
                "properties": { "clientMessageId": with_doc(&client_message_id, "Its idempotency key.") },
                "required": ["clientMessageId"],
            }),
        ),
        event(
            "client.error",
            "Error",
            "The outbox is full; the message was not queued.",
            schemars::json_schema!({
                "type": "object",
                "properties": {
                    "code": { "const": "outbox_full", "description": "What went wrong." },
                    "message": { "type": "string", "description": "For people." },
                },
                "required": ["code", "message"],
            }),
        ),
        event(
            "client.gap",
            "Gap",
            "A `seq` was skipped: the session rejoins from the last contiguous one.",
            schemars::json_schema!({
                "type": "object",
                "properties": {
                    "conversationId": with_doc(&conversation_id, "The conversation."),
                    "expected": { "type": "integer", "minimum": 1, "description": "The `seq` expected." },
                    "got": { "type": "integer", "minimum": 1, "description": "The `seq` received." },
                },
                "required": ["conversationId", "expected", "got"],
            }),
        ),
        event(
            "client.token_needed",
            "TokenNeeded",
            "The server refused the token (4500, 4501); the client asks `getToken(true)` for a new one.",
            schemars::json_schema!({
                "type": "object",
                "properties": {
                    "closeCode": {
                        "enum": token_codes,
                        "description": "The close code: 4500 (bad token) or 4501 (expired).",
                    },
                },
                "required": ["closeCode"],
            }),
        ),
        event(
            "client.invalid",
            "Invalid",
            "A server frame did not decode (a newer server?); it was ignored.",
            schemars::json_schema!({
                "type": "object",
                "properties": { "message": { "type": "string", "description": "Why it did not decode." } },
                "required": ["message"],
            }),
        ),
    ]
}

/// A property's schema: `schema` (a `$ref`) with the property's own doc beside it.
#[cfg(feature = "schema")]
fn with_doc(schema: &schemars::Schema, description: &str) -> serde_json::Value {
    let mut value = schema.as_value().clone();
    if let Value::Object(object) = &mut value {
        object.insert("description".into(), json!(description));
    }
    value
}

/// The schema of `client.state`'s data, which [`ConnectionState::to_json`]
/// writes by hand.
#[cfg(feature = "schema")]
impl schemars::JsonSchema for ConnectionState {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ConnectionState".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Where the connection stands: the data of `client.state`, and what `state()` returns.",
            "type": "object",
            "properties": {
                "state": {
                    "oneOf": [
                        { "const": "connecting", "description": "Opening a socket, or waiting for `session.ready`." },
                        { "const": "connected", "description": "`session.ready` arrived; traffic flows." },
                        { "const": "reconnecting", "description": "Down; a reconnect is set for `retryInMs` from now." },
                        { "const": "stopped", "description": "Down for good, until the application acts." },
                    ],
                    "description": "Where it stands.",
                },
                "retryInMs": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "With `reconnecting`: milliseconds until the next attempt.",
                },
                "closeCode": {
                    "type": "integer",
                    "minimum": 1000,
                    "maximum": 4999,
                    "description": "The close that caused `reconnecting` or `stopped`, when there was one.",
                },
                "reason": {
                    "type": "string",
                    "description": "Why a reconnect is needed: the close frame's reason, or why the connection failed.",
                },
            },
            "required": ["state"],
        })
    }
}

#[cfg(all(test, feature = "schema"))]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::{Map, Value};

    use super::*;
    use crate::close::CloseCode;
    use crate::error::{DecodeError, ErrorCode, ErrorData};
    use crate::{ChatAck, ClientMessageId, ConversationId, MessageId, Seq};

    /// One event of every kind `to_json` writes as `client.*`. The match makes
    /// a new `Event` variant fail to compile here until it has a sample.
    fn samples() -> Vec<Event> {
        let conversation_id = ConversationId::new("c-1").expect("valid");
        let client_message_id = ClientMessageId::from_random_bytes([7; 16]);
        let stamp = Timestamp::from_unix_ms(0).expect("in range");
        let events = vec![
            Event::State(ConnectionState::Connecting),
            Event::State(ConnectionState::Connected),
            Event::State(ConnectionState::Reconnecting {
                retry_in_ms: 500,
                close_code: Some(CloseCode::GOING_AWAY),
                reason: "restart".into(),
            }),
            Event::State(ConnectionState::Stopped { close_code: Some(CloseCode::UNAUTHORIZED) }),
            Event::Queued { conversation_id: conversation_id.clone(), client_message_id: client_message_id.clone() },
            Event::Sent(ChatAck {
                conversation_id: conversation_id.clone(),
                client_message_id: client_message_id.clone(),
                message_id: MessageId::new("m-1").expect("valid"),
                seq: Seq::new(1).expect("valid"),
                sent_at: stamp,
            }),
            Event::Failed {
                client_message_id: client_message_id.clone(),
                error: ErrorData {
                    code: ErrorCode::RateLimited,
                    message: "slow down".into(),
                    ref_id: None,
                    retry_after_ms: Some(100),
                },
            },
            Event::Dropped { client_message_id },
            Event::OutboxFull,
            Event::Gap { conversation_id, expected: 3, got: 5 },
            Event::TokenNeeded { close_code: CloseCode::TOKEN_EXPIRED },
            Event::Invalid(DecodeError::new(ErrorCode::InvalidMessage, None, "bad")),
        ];
        for event in &events {
            match event {
                Event::State(_)
                | Event::Message(_)
                | Event::Queued { .. }
                | Event::Sent(_)
                | Event::Failed { .. }
                | Event::Dropped { .. }
                | Event::OutboxFull
                | Event::Gap { .. }
                | Event::TokenNeeded { .. }
                | Event::Invalid(_) => {}
            }
        }
        events
    }

    /// The object schema `schema` is, following a `$ref` into `definitions`.
    fn resolve<'a>(schema: &'a Value, definitions: &'a Map<String, Value>) -> &'a Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(reference) => &definitions[reference.trim_start_matches("#/$defs/")],
            None => schema,
        }
    }

    /// What the TypeScript declarations say of the client events is what
    /// `to_json` writes: every event's type is listed, every field it writes
    /// is declared, every required field is written, and a `const` or `enum`
    /// holds.
    #[test]
    fn the_event_schemas_describe_to_json() {
        let mut generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
        let schemas = event_schemas(&mut generator);
        let definitions = generator.take_definitions(true);
        let mut seen = BTreeSet::new();
        for event in samples() {
            let json = event.to_json(Timestamp::from_unix_ms(0).expect("in range"));
            let wire_type = json["type"].as_str().expect("a type");
            let schema = schemas.iter().find(|s| s.wire_type == wire_type).unwrap_or_else(|| panic!("{wire_type}"));
            seen.insert(wire_type.to_owned());
            let schema = resolve(schema.data.as_value(), &definitions);
            let properties = schema["properties"].as_object().expect("an object schema");
            let data = json["data"].as_object().expect("data is an object");
            for (key, value) in data {
                let property = properties.get(key).unwrap_or_else(|| panic!("{wire_type}: {key} is not declared"));
                if let Some(constant) = property.get("const") {
                    assert_eq!(value, constant, "{wire_type}.{key}");
                }
                if let Some(values) = property.get("enum").and_then(Value::as_array) {
                    assert!(values.contains(value), "{wire_type}.{key}: {value}");
                }
                if let Some(alternatives) = property.get("oneOf").and_then(Value::as_array) {
                    assert!(alternatives.iter().any(|a| a.get("const") == Some(value)), "{wire_type}.{key}: {value}");
                }
            }
            for required in schema["required"].as_array().into_iter().flatten() {
                let required = required.as_str().expect("a name");
                assert!(data.contains_key(required), "{wire_type}: {required} is required");
            }
        }
        let listed: BTreeSet<String> = schemas.iter().map(|s| s.wire_type.to_owned()).collect();
        assert_eq!(seen, listed);
    }
}
