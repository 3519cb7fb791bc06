//! Delivery and read receipts: `message.delivered` and `message.read`, both ways.

use serde::{Deserialize, Serialize};

use crate::ids::{ConversationId, Seq, UserId};
use crate::time::Timestamp;

/// `message.delivered` / `message.read` from a client: it has received (or
/// displayed) the conversation's messages up to `upToSeq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ReceiptUpTo {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The highest `seq` received (or displayed), at least 1.
    pub up_to_seq: Seq,
}

/// `message.delivered` / `message.read` to the authors: a member has received
/// (or displayed) the messages up to `upToSeq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The highest `seq` received (or displayed).
    pub up_to_seq: Seq,
    /// The member who received (or displayed) them.
    pub by: UserId,
    /// When the server recorded the receipt.
    pub at: Timestamp,
}
