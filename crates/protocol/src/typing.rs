//! Typing indicators relayed to the other members, and presence of members.

use serde::{Deserialize, Serialize};

use crate::ids::{ConversationId, UserId};

/// `typing.start` / `typing.stop` to the other members; a start that no stop
/// follows expires after [`TYPING_EXPIRY_MS`](crate::limits::TYPING_EXPIRY_MS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Typing {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The member who is (or stopped) typing.
    pub user_id: UserId,
}

/// `presence`: a member came online (its first connection) or went offline
/// (its last connection closed); several connections count as one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Presence {
    /// The conversation both share.
    pub conversation_id: ConversationId,
    /// The member.
    pub user_id: UserId,
    /// Whether it is connected now.
    pub status: PresenceStatus,
}

/// Whether a member has at least one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum PresenceStatus {
    /// At least one connection is open.
    #[serde(rename = "online")]
    Online,
    /// No connection is open.
    #[serde(rename = "offline")]
    Offline,
}
