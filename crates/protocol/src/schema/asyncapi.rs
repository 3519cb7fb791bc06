//! The AsyncAPI 3.0.0 document of the `/v1/ws/chat` channel.

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::markdown::{close_code_table, error_code_table};
use super::{Direction, Example, GENERATED_NOTICE, envelope_schema, messages, yaml};
use crate::close::CloseCode;
use crate::error::ErrorCode;
use crate::handshake::{BEARER_PREFIX, PATH, SUBPROTOCOL, TOKEN_QUERY_PARAM};
use crate::ids::RequestId;
use crate::limits;
use crate::time::Timestamp;

const SCHEMAS: &str = "#/components/schemas/";

/// `asyncapi.yaml`, with the golden examples attached to their messages.
pub(super) fn document(examples: &[Example]) -> String {
    let mut generator = SchemaSettings::draft07()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .into_generator();
    generator.subschema_for::<RequestId>();
    generator.subschema_for::<Timestamp>();
    generator.subschema_for::<ErrorCode>();

    let mut channel_messages = Map::new();
    let mut component_messages = Map::new();
    let mut operation_refs = [Vec::new(), Vec::new()];
    for (side, direction) in [Direction::Client, Direction::Server].into_iter().enumerate() {
        for message in messages(direction, &mut generator) {
            let key = format!("{}{}", direction.as_str(), message.variant);
            let examples: Vec<Value> = examples
                .iter()
                .filter(|e| e.direction == direction && e.wire_type == message.wire_type)
                .map(|e| json!({ "name": e.name, "payload": e.value }))
                .collect();
            let mut body = into_object(json!({
                "name": message.wire_type,
                "title": format!("{} ({})", message.wire_type, direction.as_str()),
                "summary": message.description(),
                "contentType": "application/json",
                "payload": envelope_schema(direction, &message, SCHEMAS),
            }));
            if !examples.is_empty() {
                body.insert("examples".into(), Value::Array(examples));
            }
            component_messages.insert(key.clone(), Value::Object(body));
            channel_messages.insert(key.clone(), json!({ "$ref": format!("#/components/messages/{key}") }));
            operation_refs[side].push(json!({ "$ref": format!("#/channels/chat/messages/{key}") }));
        }
    }
    let [client_refs, server_refs] = operation_refs;
    let schemas = generator.take_definitions(true);

    let close_codes: Vec<Value> = CloseCode::ALL
        .iter()
        .map(|code| {
            json!({
                "code": code.code(),
                "name": code.name(),
                "reconnect": format!("{:?}", code.reconnect()),
                "description": code.description(),
            })
        })
        .collect();
    let error_codes: Vec<Value> =
        ErrorCode::ALL.iter().map(|code| json!({ "code": code.as_str(), "description": code.description() })).collect();

    let doc = json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "petchat",
            "version": env!("CARGO_PKG_VERSION"),
            "description": info_description(),
            "license": { "name": "MIT OR Apache-2.0" },
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "127.0.0.1:8080",
                "protocol": "ws",
                "description": "The server as `petchat-server --dev` runs it; behind TLS the protocol is wss.",
                "security": [
                    { "$ref": "#/components/securitySchemes/tokenQuery" },
                    { "$ref": "#/components/securitySchemes/bearerSubprotocol" },
                ],
            },
        },
        "channels": {
            "chat": {
                "address": PATH,
                "title": "Support chat",
                "description": channel_description(),
                "messages": channel_messages,
                "bindings": {
                    "ws": {
                        "method": "GET",
                        "query": {
                            "type": "object",
                            "properties": {
                                TOKEN_QUERY_PARAM: {
                                    "type": "string",
                                    "description": "The JWT (HS256; claims sub, role, name, exp). \
                                        Either this or the bearer subprotocol entry.",
                                },
                            },
                        },
                        "headers": {
                            "type": "object",
                            "properties": {
                                "Sec-WebSocket-Protocol": {
                                    "type": "string",
                                    "description": format!(
                                        "Offer `{SUBPROTOCOL}`; the server selects it. Browsers add \
                                         `{BEARER_PREFIX}<JWT>` to authenticate without a token in the URL \
                                         (`{SUBPROTOCOL}, {BEARER_PREFIX}<JWT>`); the server never selects that entry."
                                    ),
                                },
                            },
                        },
                        "bindingVersion": "0.1.0",
                    },
                },
                "x-close-codes": close_codes,
                "x-error-codes": error_codes,
            },
        },
        "operations": {
            "receiveClientMessages": {
                "action": "receive",
                "channel": { "$ref": "#/channels/chat" },
                "title": "Client messages",
                "summary": "Requests a client sends; each may carry an id that replies and errors echo.",
                "messages": client_refs,
            },
            "sendServerMessages": {
                "action": "send",
                "channel": { "$ref": "#/channels/chat" },
                "title": "Server messages",
                "summary": "Replies, relayed traffic and errors the server sends; every one carries a timestamp.",
                "messages": server_refs,
            },
        },
        "components": {
            "schemas": schemas,
            "messages": component_messages,
            "securitySchemes": {
                "tokenQuery": {
                    "type": "httpApiKey",
                    "name": TOKEN_QUERY_PARAM,
                    "in": "query",
                    "description": "The JWT in the query: /v1/ws/chat?token=<JWT>.",
                },
                "bearerSubprotocol": {
                    "type": "httpApiKey",
                    "name": "Sec-WebSocket-Protocol",
                    "in": "header",
                    "description": format!("The JWT as a subprotocol entry: `{SUBPROTOCOL}, {BEARER_PREFIX}<JWT>`."),
                },
            },
        },
    });
    yaml::to_yaml(GENERATED_NOTICE, &doc)
}

fn info_description() -> String {
    format!(
        "The real-time customer-support chat of a pet store: customers talk to support agents over one \
WebSocket endpoint.\n\
\n\
Every frame is a JSON text frame `{{\"type\", \"id\"?, \"data\", \"timestamp\"}}`: `data` is always an object, \
the server sets `timestamp` on everything it sends, and every reply or error caused by a request carries the \
request's `id` (as `refId` inside `error`). Unknown fields are ignored.\n\
\n\
Limits: frames up to {} bytes (1009 beyond), chat text up to {} characters after trimming, {} messages per \
second per connection with a burst of twice that, at most {} messages replayed per join.\n\
\n\
Conversation lifecycle: a conversation is queued, active or closed, and closes once. A closed conversation can be \
read (joined, its history fetched, listed by `conversation.list`) but not written (`conversation_closed`), and its \
customer can open a new one at once. `conversation.closed` says `by` (the member's user id, or `system` for the \
server; no token may carry `sub: system`) and `reason`: `closed` (a member's `conversation.close`), `resolved` \
(the agent's `conversation.resolve`), `customer_away` (the customer had no connection for `--customer-away-ms`, \
default {} ms) or `idle` (no message for `--conversation-idle-ms`, default {} ms). A queued conversation whose \
customer has no connection is never assigned and is not counted in other customers' positions. The assigned \
agent hands a conversation to another agent (online, available, below its cap) or to the front of the queue, \
where it is never offered back to that agent, with `conversation.transfer`; every member gets \
`conversation.transferred`. `session.ready.pastConversations` lists the user's {} most recent closed \
conversations; `conversation.list` pages through the rest, and through the queue for agents.",
        limits::MAX_MESSAGE_BYTES,
        limits::MAX_TEXT_CHARS,
        limits::DEFAULT_MESSAGES_PER_SECOND,
        limits::MAX_REPLAY,
        limits::DEFAULT_CUSTOMER_AWAY_MS,
        limits::DEFAULT_CONVERSATION_IDLE_MS,
        limits::PAST_CONVERSATIONS_IN_READY,
    )
}

fn channel_description() -> String {
    format!(
        "Authenticate with `?{TOKEN_QUERY_PARAM}=<JWT>` or the `{BEARER_PREFIX}<JWT>` subprotocol entry, not both \
(both is refused with 4500). A refused handshake still completes the upgrade and is closed at once, so browsers \
can read why; when several things are wrong the first decides: Origin (1008), protocol version (4505), token \
(4500, or 4501 when expired). The first server message is `session.ready`; its `tokenExpiresAt` says when the \
token expires. A live connection is closed with 4501 once that instant plus the server's clock leeway (at most \
60 s) has passed, unless `session.refresh` swapped in a fresh token for the same user first.\n\
\n\
Close codes (4000-4499 reconnect, 4500-4999 do not reconnect without something new):\n\
\n\
{}\n\
Error codes of the `error` message (an error never closes the connection by itself):\n\
\n\
{}",
        close_code_table(),
        error_code_table(),
    )
}

fn into_object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(object) => object,
        _ => unreachable!("built from a json! object literal"),
    }
}
