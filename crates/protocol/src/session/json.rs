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
