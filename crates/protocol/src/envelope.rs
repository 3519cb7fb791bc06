//! The envelope of SPEC §2 and the two message enums, with their decoders.
//!
//! Every frame is `{"type", "id"?, "data", "timestamp"}`. Each enum is written
//! once, in [`messages!`], which gives every variant its wire name, its data
//! type and its doc; the list of types, the decoder, the encoder and the
//! schemas all come from that one list.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

use crate::agent::{AgentStatus, SetAgentStatus};
use crate::chat::{ChatAck, ChatMessage, SendChat};
use crate::conversation::{
    AgentAssigned, ConversationClosed, ConversationRef, ConversationSnapshot, JoinConversation, OpenConversation,
    Queued, TransferConversation, Transferred,
};
use crate::error::{DecodeError, ErrorCode, ErrorData};
use crate::ids::RequestId;
use crate::list::{ConversationList, ListConversations};
use crate::notification::{Notification, NotificationRead};
use crate::ready::{Empty, RefreshSession, SessionReady, SessionRefreshed};
use crate::receipt::{Receipt, ReceiptUpTo};
use crate::time::Timestamp;
use crate::topic::{SubscribeTopic, TopicEvent, TopicRef, TopicSubscribed};
use crate::typing::{Presence, Typing};

/// Defines a message enum from `wire name => Variant(Data)` lines.
macro_rules! messages {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[doc = $doc:literal])* $wire:literal => $variant:ident($data:ty), )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum $name {
            $( $(#[doc = $doc])* #[doc = concat!("\n\nWire type `", $wire, "`.")] $variant($data), )*
        }

        impl $name {
            /// Every wire type of this direction, in the order of SPEC §3.
            pub const TYPES: &'static [&'static str] = &[$($wire),*];

            /// The wire name of the message (`chat.send`…).
            pub const fn wire_type(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => $wire,)*
                }
            }

            /// Reads the `data` of a message of type `wire_type`.
            fn from_data(wire_type: &str, data: Value) -> Result<Self, DecodeError> {
                match wire_type {
                    $($wire => serde_path_to_error::deserialize(data).map(Self::$variant).map_err(DecodeError::from_data),)*
                    other => Err(DecodeError::new(
                        ErrorCode::UnknownType,
                        Some("type".into()),
                        format!(concat!("type {:?} is not a ", stringify!($name), " of petchat.v1"), other),
                    )),
                }
            }

            fn serialize_data<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
                match self {
                    $(Self::$variant(data) => map.serialize_entry("data", data),)*
                }
            }

            /// Each message's wire type, Rust name, doc and the schema of its data.
            #[cfg(feature = "schema")]
            pub(crate) fn data_schemas(generator: &mut schemars::SchemaGenerator) -> Vec<crate::schema::MessageSchema> {
                vec![$(crate::schema::MessageSchema {
                    wire_type: $wire,
                    variant: stringify!($variant),
                    doc: concat!($($doc, "\n"),*),
                    data: generator.subschema_for::<$data>(),
                },)*]
            }
        }
    };
}

messages! {
    /// A message a client sends to the server.
    pub enum ClientMessage {
        /// Opens a conversation (customer), or returns the customer's open one;
        /// the reply is `conversation.opened`, and an agent is assigned now or later.
        "conversation.open" => ConversationOpen(OpenConversation),
        /// Subscribes this connection; the reply is `conversation.joined`, then the
        /// `chat.message`s with `seq > afterSeq` in order (at most `maxReplay`), then
        /// live traffic.
        "conversation.join" => ConversationJoin(JoinConversation),
        /// Unsubscribes this connection from the conversation.
        "conversation.leave" => ConversationLeave(ConversationRef),
        /// Ends the conversation for both sides; members get `conversation.closed`
        /// (`reason: "closed"`).
        "conversation.close" => ConversationClose(ConversationRef),
        /// The assigned agent ends the conversation as answered; members get
        /// `conversation.closed` (`reason: "resolved"`).
        "conversation.resolve" => ConversationResolve(ConversationRef),
        /// The assigned agent hands the conversation to another agent, or back to
        /// the queue; members get `conversation.transferred`.
        "conversation.transfer" => ConversationTransfer(TransferConversation),
        /// A page of the user's conversations (past ones included) or, for an
        /// agent, of the queue; the reply is `conversation.listed`.
        "conversation.list" => ConversationList(ListConversations),
        /// Posts a message; the reply is `chat.ack`, members get `chat.message`.
        "chat.send" => ChatSend(SendChat),
        /// The client has received the messages up to `upToSeq`; the authors get
        /// `message.delivered`.
        "message.delivered" => MessageDelivered(ReceiptUpTo),
        /// The user has seen the messages up to `upToSeq`; the authors get
        /// `message.read`.
        "message.read" => MessageRead(ReceiptUpTo),
        /// The user started typing; relayed to the other members.
        "typing.start" => TypingStart(ConversationRef),
        /// The user stopped typing; relayed to the other members.
        "typing.stop" => TypingStop(ConversationRef),
        /// An agent joins or leaves the pool of agents that can be assigned; the
        /// reply is `agent.status`.
        "agent.status" => AgentStatus(SetAgentStatus),
        /// Application heartbeat for browsers; the reply is `pong`.
        "ping" => Ping(Empty),
        /// Swaps a fresh token (same `sub` and `role`) into the live connection
        /// before its `tokenExpiresAt`; the reply is `session.refreshed`.
        "session.refresh" => SessionRefresh(RefreshSession),
        /// Live events of a topic (SPEC §11); the reply is `topic.subscribed`,
        /// then the stored events with `seq > afterSeq`, then live ones.
        "topic.subscribe" => TopicSubscribe(SubscribeTopic),
        /// Ends a topic subscription; the reply is `topic.unsubscribed`.
        "topic.unsubscribe" => TopicUnsubscribe(TopicRef),
        /// The user read its notifications up to `upToSeq` (SPEC §12); every
        /// connection of the user gets `notification.read`.
        "notification.read" => NotificationRead(NotificationRead),
    }
}

messages! {
    /// A message the server sends to a client.
    pub enum ServerMessage {
        /// The first message of every connection: who the user is, the limits, and
        /// the open conversations to rejoin.
        "session.ready" => SessionReady(SessionReady),
        /// The reply to `conversation.open`.
        "conversation.opened" => ConversationOpened(ConversationSnapshot),
        /// The reply to `conversation.join`, before the replayed messages.
        "conversation.joined" => ConversationJoined(ConversationSnapshot),
        /// No agent is free yet; `position` 1 is served next.
        "conversation.queued" => ConversationQueued(Queued),
        /// An agent was assigned; sent to the customer and to the agent, who are
        /// then both members and subscribed.
        "agent.assigned" => AgentAssigned(AgentAssigned),
        /// The conversation ended; it can be read but not written.
        "conversation.closed" => ConversationClosed(ConversationClosed),
        /// The conversation left its agent, for another agent or the queue.
        "conversation.transferred" => ConversationTransferred(Transferred),
        /// The reply to `conversation.list`.
        "conversation.listed" => ConversationListed(ConversationList),
        /// A message of a subscribed conversation, live or replayed.
        "chat.message" => ChatMessage(ChatMessage),
        /// The sender's message is stored durably.
        "chat.ack" => ChatAck(ChatAck),
        /// A member received the messages up to `upToSeq`.
        "message.delivered" => MessageDelivered(Receipt),
        /// A member saw the messages up to `upToSeq`.
        "message.read" => MessageRead(Receipt),
        /// Another member started typing; it expires after 6 s without a stop.
        "typing.start" => TypingStart(Typing),
        /// Another member stopped typing.
        "typing.stop" => TypingStop(Typing),
        /// A member came online or went offline.
        "presence" => Presence(Presence),
        /// The agent's state after its `agent.status`.
        "agent.status" => AgentStatus(AgentStatus),
        /// A message for one user, on all of its connections.
        "notification" => Notification(Notification),
        /// The user's notifications up to `upToSeq` are read (on one of its
        /// connections); sent to every connection of the user.
        "notification.read" => NotificationRead(NotificationRead),
        /// A request was refused or failed; `refId` names it.
        "error" => Error(ErrorData),
        /// The reply to `ping`.
        "pong" => Pong(Empty),
        /// The reply to `session.refresh`: the connection now lives until the new
        /// `tokenExpiresAt`.
        "session.refreshed" => SessionRefreshed(SessionRefreshed),
        /// The reply to `topic.subscribe`, before the replayed events.
        "topic.subscribed" => TopicSubscribed(TopicSubscribed),
        /// The reply to `topic.unsubscribe`.
        "topic.unsubscribed" => TopicUnsubscribed(TopicRef),
        /// An event of a subscribed topic, live or replayed.
        "topic.event" => TopicEvent(TopicEvent),
    }
}

/// A client frame: a [`ClientMessage`] in its envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientEnvelope {
    /// The request id the replies will carry back.
    pub id: Option<RequestId>,
    /// When the client sent it, if it says; the server does not rely on it.
    pub timestamp: Option<Timestamp>,
    /// The message.
    pub message: ClientMessage,
}

/// A server frame: a [`ServerMessage`] in its envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerEnvelope {
    /// The `id` of the request this answers, if any.
    pub id: Option<RequestId>,
    /// When the server sent it.
    pub timestamp: Timestamp,
    /// The message.
    pub message: ServerMessage,
}

impl ClientEnvelope {
    /// A frame without request id or timestamp.
    pub fn new(message: ClientMessage) -> Self {
        Self { id: None, timestamp: None, message }
    }

    /// Sets the request id.
    pub fn with_id(mut self, id: RequestId) -> Self {
        self.id = Some(id);
        self
    }

    /// Decodes and validates a text frame.
    pub fn decode(frame: &str) -> Result<Self, DecodeError> {
        let parts = Parts::read(frame, ClientMessage::TYPES)?;
        let ref_id = parts.id.clone();
        let timestamp = parts.timestamp.map_err(|e| e.with_ref_id(ref_id.clone()))?;
        let message = ClientMessage::from_data(&parts.wire_type, parts.data).map_err(|e| e.with_ref_id(ref_id))?;
        Ok(Self { id: parts.id, timestamp, message })
    }

    /// Encodes the frame as JSON text.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("an envelope always serializes: string keys, no fallible field")
    }
}

impl ServerEnvelope {
    /// A frame sent at `timestamp`, answering no request.
    pub fn new(message: ServerMessage, timestamp: Timestamp) -> Self {
        Self { id: None, timestamp, message }
    }

    /// Sets the id of the request this answers.
    pub fn with_id(mut self, id: Option<RequestId>) -> Self {
        self.id = id;
        self
    }

    /// Decodes and validates a text frame from the server.
    pub fn decode(frame: &str) -> Result<Self, DecodeError> {
        let parts = Parts::read(frame, ServerMessage::TYPES)?;
        let ref_id = parts.id.clone();
        let timestamp = parts.timestamp.map_err(|e| e.with_ref_id(ref_id.clone()))?.ok_or_else(|| {
            DecodeError::new(ErrorCode::InvalidMessage, Some("timestamp".into()), "timestamp is required")
                .with_ref_id(ref_id.clone())
        })?;
        let message = ServerMessage::from_data(&parts.wire_type, parts.data).map_err(|e| e.with_ref_id(ref_id))?;
        Ok(Self { id: parts.id, timestamp, message })
    }

    /// Encodes the frame as JSON text.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("an envelope always serializes: string keys, no fallible field")
    }
}

impl Serialize for ClientEnvelope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("type", self.message.wire_type())?;
        if let Some(id) = &self.id {
            map.serialize_entry("id", id)?;
        }
        self.message.serialize_data(&mut map)?;
        if let Some(timestamp) = &self.timestamp {
            map.serialize_entry("timestamp", timestamp)?;
        }
        map.end()
    }
}

impl Serialize for ServerEnvelope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("type", self.message.wire_type())?;
        if let Some(id) = &self.id {
            map.serialize_entry("id", id)?;
        }
        self.message.serialize_data(&mut map)?;
        map.serialize_entry("timestamp", &self.timestamp)?;
        map.end()
    }
}

/// The envelope's fields, read and checked in a fixed order so that the first
/// fault decides the error: JSON, object, `id`, `type`, `data`, `timestamp`.
struct Parts {
    id: Option<RequestId>,
    wire_type: String,
    data: Value,
    timestamp: Result<Option<Timestamp>, DecodeError>,
}

impl Parts {
    fn read(frame: &str, known_types: &[&str]) -> Result<Self, DecodeError> {
        let value: Value = serde_json::from_str(frame)
            .map_err(|e| DecodeError::new(ErrorCode::InvalidJson, None, format!("the frame is not JSON: {e}")))?;
        let Value::Object(mut object) = value else {
            return Err(invalid(None, "a message must be a JSON object"));
        };
        let id = match object.remove("id") {
            None => None,
            Some(Value::String(id)) => Some(RequestId::new(id).map_err(|e| invalid(Some("id"), &format!("id {e}")))?),
            Some(_) => return Err(invalid(Some("id"), "id must be a string")),
        };
        let in_reply = |e: DecodeError| e.with_ref_id(id.clone());
        let wire_type = match object.remove("type") {
            Some(Value::String(wire_type)) => wire_type,
            Some(_) => return Err(in_reply(invalid(Some("type"), "type must be a string"))),
            None => return Err(in_reply(invalid(Some("type"), "type is required"))),
        };
        if !known_types.contains(&wire_type.as_str()) {
            let message = format!("type {wire_type:?} is not known here; expected one of {}", known_types.join(", "));
            return Err(in_reply(DecodeError::new(ErrorCode::UnknownType, Some("type".into()), message)));
        }
        let data = match object.remove("data") {
            Some(data @ Value::Object(_)) => data,
            Some(_) => return Err(in_reply(invalid(Some("data"), "data must be an object"))),
            None => return Err(in_reply(invalid(Some("data"), "data is required (use {} when empty)"))),
        };
        let timestamp = match object.remove("timestamp") {
            None => Ok(None),
            Some(Value::String(ts)) => {
                ts.parse().map(Some).map_err(|e| invalid(Some("timestamp"), &format!("timestamp {e}")))
            }
            Some(_) => Err(invalid(Some("timestamp"), "timestamp must be a string")),
        };
        Ok(Self { id, wire_type, data, timestamp })
    }
}

fn invalid(field: Option<&str>, message: &str) -> DecodeError {
    DecodeError::new(ErrorCode::InvalidMessage, field.map(str::to_owned), message)
}
