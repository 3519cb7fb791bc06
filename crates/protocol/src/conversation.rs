//! Conversation lifecycle: open, join, leave, close, queueing and assignment.

use serde::{Deserialize, Serialize};

use crate::ids::{ConversationId, LastSeq, OrderId, PetId, UserId};
use crate::time::Timestamp;
use crate::user::Participant;

/// `conversation.open` (customer): opens a conversation, or returns the
/// customer's conversation that is still open.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct OpenConversation {
    /// What the customer needs help with, shown to the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<Topic>,
    /// The pet the conversation is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pet_id: Option<PetId>,
    /// The order the conversation is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<OrderId>,
}

/// `conversation.join`: subscribes this connection to a conversation and
/// replays the messages after `afterSeq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct JoinConversation {
    /// The conversation to join.
    pub conversation_id: ConversationId,
    /// Replay the messages with a greater `seq`; 0 or absent replays from the
    /// first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_seq: Option<LastSeq>,
}

/// The data of the requests that name only a conversation:
/// `conversation.leave`, `conversation.close`, `typing.start` and `typing.stop`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ConversationRef {
    /// The conversation.
    pub conversation_id: ConversationId,
}

/// Where a conversation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum ConversationStatus {
    /// Open, waiting for an agent.
    #[serde(rename = "queued")]
    Queued,
    /// Open, with an agent assigned.
    #[serde(rename = "active")]
    Active,
    /// Ended by a member; no more messages.
    #[serde(rename = "closed")]
    Closed,
}

/// A conversation as `conversation.opened` and `conversation.joined` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Conversation {
    /// The conversation's id.
    pub id: ConversationId,
    /// The customer who opened it.
    pub customer: Participant,
    /// The agent assigned to it, once there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<Participant>,
    /// Where it stands.
    pub status: ConversationStatus,
    /// The `seq` of its last message; 0 while it has none.
    pub last_seq: LastSeq,
    /// When it was opened.
    pub created_at: Timestamp,
    /// What the customer needs help with, as given to `conversation.open`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<Topic>,
    /// The pet it is about, as given to `conversation.open`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pet_id: Option<PetId>,
    /// The order it is about, as given to `conversation.open`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<OrderId>,
}

/// `conversation.opened` and `conversation.joined`: the conversation, and for a
/// join whether more replay remains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ConversationSnapshot {
    /// The conversation.
    pub conversation: Conversation,
    /// On `conversation.joined`: true when more than `maxReplay` messages
    /// were missed; the client joins again from the last `seq` it got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_more: Option<bool>,
}

/// `conversation.queued`: no agent is free yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Queued {
    /// The conversation waiting.
    pub conversation_id: ConversationId,
    /// Its place in the queue; 1 is served next.
    pub position: std::num::NonZeroU32,
}

/// `agent.assigned`: sent to the customer and to the agent, who are then both
/// members and subscribed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct AgentAssigned {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The agent now serving it.
    pub agent: Participant,
}

/// `conversation.closed`: the conversation ended, for both sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ConversationClosed {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// Who closed it: the user id of the member who sent `conversation.close`.
    pub by: UserId,
}

/// A conversation topic: 1..=[`MAX_TOPIC_CHARS`](crate::limits::MAX_TOPIC_CHARS)
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Topic(String);

impl Topic {
    /// Checks and wraps a topic.
    pub fn new(topic: impl Into<String>) -> Result<Self, crate::ids::InvalidValue> {
        let topic = topic.into();
        let chars = topic.chars().count();
        if !(1..=crate::limits::MAX_TOPIC_CHARS).contains(&chars) {
            return Err(crate::ids::InvalidValue(format!(
                "has {chars} characters, 1 to {} are allowed",
                crate::limits::MAX_TOPIC_CHARS
            )));
        }
        Ok(Self(topic))
    }

    /// The topic.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Topic {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::new(String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for Topic {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Topic".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "What a conversation is about, in the customer's words.",
            "type": "string",
            "minLength": 1,
            "maxLength": crate::limits::MAX_TOPIC_CHARS,
        })
    }
}
