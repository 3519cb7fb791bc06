//! `session.ready`, the first message of every connection, and
//! the token refresh of a live connection (`session.refresh`, `session.refreshed`).

use serde::{Deserialize, Serialize};

use crate::conversation::ConversationStatus;
use crate::ids::{ConversationId, LastSeq, SessionId};
use crate::list::ConversationSummary;
use crate::notification::NotificationsState;
use crate::time::Timestamp;
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
    /// The user's most recent closed conversations, newest first, at most
    /// `PAST_CONVERSATIONS_IN_READY`: a customer's, or the ones an agent was
    /// assigned. Older ones come from `conversation.list` (`status: "closed"`).
    /// The server always sends it; a client reads its absence (an older
    /// server) as none.
    #[serde(default)]
    pub past_conversations: Vec<ConversationSummary>,
    /// When the connection's token expires (its `exp`): send `session.refresh`
    /// with a fresh token before then, or the server closes the connection
    /// with 4501 once this plus its clock leeway has passed.
    pub token_expires_at: Timestamp,
    /// The user's notifications: how many are unread (they follow, oldest
    /// first, at most `maxReplay`) and the `seq` of the last one.
    pub notifications: NotificationsState,
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

/// The data of `ping` and `pong`: always `{}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Empty {}

/// `session.refresh`: swaps a fresh token into the live connection, for the
/// same `sub` and `role`; the reply is `session.refreshed`, or an `error` with
/// `unauthorized` or `token_expired` (the connection keeps its old expiry).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct RefreshSession {
    /// The fresh JWT.
    pub token: String,
}

/// Tokens never appear in a log line, not even through `{:?}`.
impl std::fmt::Debug for RefreshSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshSession").field("token", &"<redacted>").finish()
    }
}

/// `session.refreshed`: the token of `session.refresh` is the connection's now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SessionRefreshed {
    /// When the new token expires (its `exp`); the connection is closed with
    /// 4501 once this plus the server's clock leeway has passed.
    pub token_expires_at: Timestamp,
}
