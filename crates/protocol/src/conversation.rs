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
/// `conversation.leave`, `conversation.close`, `conversation.resolve`,
/// `typing.start` and `typing.stop`.
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
    /// Ended (by a member or by the server); it can be read, not written.
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
    /// While queued: since when it waits for an agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_at: Option<Timestamp>,
    /// Once closed: when, by whom and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed: Option<Closure>,
}

/// How a conversation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Closure {
    /// When it was closed.
    pub at: Timestamp,
    /// Who closed it: the member's user id, or `"system"` for the server.
    pub by: UserId,
    /// Why.
    pub reason: CloseReason,
}

/// Why a conversation was closed (`conversation.closed.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum CloseReason {
    /// A member sent `conversation.close`.
    #[serde(rename = "closed")]
    Closed,
    /// The agent sent `conversation.resolve`: the customer's question is answered.
    #[serde(rename = "resolved")]
    Resolved,
    /// The server closed it: the customer had no connection for `--customer-away-ms`.
    #[serde(rename = "customer_away")]
    CustomerAway,
    /// The server closed it: no message for `--conversation-idle-ms`.
    #[serde(rename = "idle")]
    Idle,
}

impl CloseReason {
    /// Every reason.
    pub const ALL: [Self; 4] = [Self::Closed, Self::Resolved, Self::CustomerAway, Self::Idle];

    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Resolved => "resolved",
            Self::CustomerAway => "customer_away",
            Self::Idle => "idle",
        }
    }

    /// The reason of a wire name.
    pub fn from_wire(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|reason| reason.as_str() == name)
    }
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

/// `conversation.closed`: the conversation ended, for both sides; it can be
/// read (joined, its history fetched) but not written (`conversation_closed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ConversationClosed {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// Who closed it: the user id of the member who sent `conversation.close`
    /// or `conversation.resolve`, or `"system"` when the server did.
    pub by: UserId,
    /// Why.
    pub reason: CloseReason,
}

/// `conversation.transfer` (the assigned agent): hands the conversation to
/// another agent, or back to the queue when `toAgentId` is absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct TransferConversation {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The agent to hand it to: online, available and below its cap. Absent:
    /// the conversation goes to the front of the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_agent_id: Option<UserId>,
}

/// `conversation.transferred`: the conversation left its agent; sent to every
/// connection of the customer, the former agent and the new one. The new agent
/// then gets `agent.assigned`; without one the customer gets `conversation.queued`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Transferred {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The agent who handed it on; it is no longer a member.
    pub from: Participant,
    /// The agent it was handed to; absent when it went back to the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Participant>,
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
