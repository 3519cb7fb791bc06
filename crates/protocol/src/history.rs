//! The history endpoint's answer (SPEC §7): a page of a conversation's messages.

use serde::{Deserialize, Serialize};

use crate::chat::ChatMessage;
use crate::ids::ConversationId;

/// `GET /v1/conversations/{id}/messages?afterSeq=&limit=`: messages in `seq`
/// order; `hasMore` says that a next page starts after the last one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct HistoryPage {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The messages, in `seq` order, as `chat.message` carries them.
    pub messages: Vec<ChatMessage>,
    /// Whether more messages follow the last one.
    pub has_more: bool,
}
