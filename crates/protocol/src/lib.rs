//! The petchat wire contract: every message, error code, close code and limit
//! of the support chat's WebSocket protocol (`/v1/ws/chat`, subprotocol
//! `petchat.v1`), and the rules both sides validate with.
//!
//! The crate does no I/O and reads no clock, so the server, the native client
//! and the browser client (wasm32) all share it. Decode a client frame with
//! [`ClientEnvelope::decode`]: it yields a typed [`ClientMessage`] or a
//! [`DecodeError`] that maps to exactly one [`ErrorCode`] and names the field
//! that was wrong.
//!
//! ```
//! use petchat_protocol::{ClientEnvelope, ClientMessage, ErrorCode};
//!
//! let frame = r#"{"type":"ping","id":"r1","data":{}}"#;
//! let envelope = ClientEnvelope::decode(frame).unwrap();
//! assert!(matches!(envelope.message, ClientMessage::Ping(_)));
//!
//! let err = ClientEnvelope::decode(r#"{"type":"chat.send","id":"r2","data":{}}"#).unwrap_err();
//! assert_eq!(err.code(), ErrorCode::InvalidMessage);
//! assert_eq!(err.field(), Some("data.conversationId"));
//! assert_eq!(err.ref_id().map(|id| id.as_str()), Some("r2"));
//! ```
//!
//! With the `schema` feature, [`schema`] generates the JSON Schemas and the
//! AsyncAPI document that `cargo xtask schemas` writes into `schemas/`.

mod agent;
pub mod api;
mod attachment;
mod bounded;
mod chat;
pub mod close;
mod conversation;
mod envelope;
mod error;
pub mod handshake;
mod history;
mod ids;
pub mod limits;
mod list;
mod notification;
mod ready;
mod receipt;
#[cfg(feature = "schema")]
pub mod schema;
pub mod session;
mod time;
pub mod token;
mod topic;
mod typing;
mod user;

pub use agent::{AgentStatus, SetAgentStatus};
pub use attachment::{Attachment, AttachmentIds, AttachmentName, AttachmentType};
pub use chat::{ChatAck, ChatMessage, MessageText, SendChat, TextError};
pub use close::{CloseCode, Reconnect};
pub use conversation::{
    AgentAssigned, CloseReason, Closure, Conversation, ConversationClosed, ConversationRef, ConversationSnapshot,
    ConversationStatus, JoinConversation, OpenConversation, Queued, Topic, TransferConversation, Transferred,
};
pub use envelope::{ClientEnvelope, ClientMessage, ServerEnvelope, ServerMessage};
pub use error::{DecodeError, ErrorCode, ErrorData};
pub use history::HistoryPage;
pub use ids::{
    AttachmentId, ClientMessageId, ConversationId, InvalidValue, LastSeq, MessageId, NotificationId, OrderId, PetId,
    RequestId, Seq, SessionId, UserId,
};
pub use list::{
    ConversationList, ConversationSummary, LastMessage, ListConversations, ListScope, PageSize, SearchQuery,
};
pub use notification::{Link, Notification, NotificationBody, NotificationRead, NotificationTitle, NotificationsState};
pub use ready::{ConversationState, Empty, RefreshSession, SessionLimits, SessionReady, SessionRefreshed};
pub use receipt::{Receipt, ReceiptUpTo};
pub use time::Timestamp;
pub use topic::{EventName, SubscribeTopic, TopicEvent, TopicName, TopicPattern, TopicRef, TopicSubscribed};
pub use typing::{Presence, PresenceStatus, Typing};
pub use user::{Participant, Role, User};

/// The protocol version this crate speaks; its subprotocol is
/// [`handshake::SUBPROTOCOL`].
pub const PROTOCOL_VERSION: u32 = 1;
