//! `session.ready`, the first message of every connection, and `notification`.

use serde::{Deserialize, Serialize};

use crate::conversation::ConversationStatus;
use crate::ids::{ConversationId, LastSeq, SessionId};
use crate::user::User;

/// `session.ready`: the connection is authenticated; here is what to rejoin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SessionReady {
    /// This connection's session.
    pub session_id: SessionId,
    /// The authenticated user.
    pub user: User,
    /// The server pings this often; a client that hears nothing for two
    /// intervals treats the link as dead.
    pub heartbeat_interval_ms: u64,
    /// The limits this connection must respect.
    pub limits: SessionLimits,
    /// The user's open conversations, with their last `seq`.
    pub conversations: Vec<ConversationState>,
}

/// The limits of `session.ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SessionLimits {
    /// Largest text frame, in bytes; bigger closes with 1009.
    pub max_message_bytes: u32,
    /// Longest chat text, in characters after trimming.
    pub max_text_chars: u32,
    /// Client messages (all but `ping`) per second, with a burst of twice that.
    pub messages_per_second: u32,
}

/// One of the user's open conversations in `session.ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ConversationState {
    /// The conversation.
    pub id: ConversationId,
    /// Where it stands.
    pub status: ConversationStatus,
    /// The `seq` of its last message; 0 while it has none.
    pub last_seq: LastSeq,
}

/// `notification`: a message for one user, on all of its connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// What it is about, for the client to choose an icon or a sound
    /// (`order.shipped`, `conversation.reassigned`…).
    pub kind: String,
    /// One line.
    pub title: String,
    /// The text.
    pub body: String,
    /// Where to read more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// The data of `ping` and `pong`: always `{}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Empty {}
