//! The server API for the shop's backend (SPEC §13) and the SSE ticket
//! (SPEC §14): the JSON bodies of `/v1/api/*` and `/v1/sse/tickets`, from
//! which the OpenAPI document is generated.

use serde::{Deserialize, Serialize};

use crate::bounded::bounded_string;
use crate::ids::{NotificationId, Seq, UserId};
use crate::limits::MAX_IDEMPOTENCY_KEY_CHARS;
use crate::notification::{Link, NotificationBody, NotificationTitle};
use crate::time::Timestamp;
use crate::topic::{EventName, TopicName};

bounded_string! {
    /// The caller's key for a call that must happen once: the same key on the
    /// same topic (publish) or user (notify) within 24 h returns the first
    /// result and does nothing more. 1 to `MAX_IDEMPOTENCY_KEY_CHARS`
    /// printable characters.
    IdempotencyKey,
    chars: 1, MAX_IDEMPOTENCY_KEY_CHARS,
    allowed: |c: char| !c.is_control(),
    pattern: None,
}

/// `POST /v1/api/publish`: an event for a topic's subscribers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PublishRequest {
    /// The topic.
    pub topic: TopicName,
    /// What happened (`order.shipped`).
    pub event: EventName,
    /// The payload subscribers get, at most `MAX_EVENT_DATA_BYTES` bytes of JSON.
    pub data: serde_json::Map<String, serde_json::Value>,
    /// Publish once, however often the call is retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<IdempotencyKey>,
}

/// The answer of `POST /v1/api/publish`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Published {
    /// The topic.
    pub topic: TopicName,
    /// The event's `seq` in the topic (the first call's, for a repeated key).
    pub seq: Seq,
}

/// `POST /v1/api/notify`: a notification for one user, on all of its devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotifyRequest {
    /// Whom it is for (the `sub` of the user's tokens).
    pub user_id: UserId,
    /// What it is about (`order.shipped`).
    pub kind: EventName,
    /// One line.
    pub title: NotificationTitle,
    /// The text.
    pub body: NotificationBody,
    /// Where to read more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<Link>,
    /// Notify once, however often the call is retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<IdempotencyKey>,
}

/// The answer of `POST /v1/api/notify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Notified {
    /// Whom it is for.
    pub user_id: UserId,
    /// The notification (the first call's, for a repeated key).
    pub id: NotificationId,
    /// Its `seq` among the user's notifications.
    pub seq: Seq,
}

/// The answer of `GET /v1/api/presence/{userId}`, across every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct PresenceAnswer {
    /// The user.
    pub user_id: UserId,
    /// Whether it has a connection (socket or SSE stream) on some node.
    pub online: bool,
    /// How many.
    pub connections: u64,
}

/// The answer of `GET /v1/api/stats`, across every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Open sockets and SSE streams.
    pub connections: u64,
    /// The queue of conversations waiting for an agent.
    pub queue: QueueStats,
    /// The agents.
    pub agents: AgentStats,
    /// The conversations.
    pub conversations: ConversationStats,
}

/// The data of the `support.stats` events the server publishes on the
/// `support:stats` topic (for the agents' dashboard): [`Stats`] and the
/// first-response time of the last hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SupportStats {
    /// What `/v1/api/stats` answers.
    #[serde(flatten)]
    pub stats: Stats,
    /// How long customers waited for an agent's first message.
    pub first_response: FirstResponse,
}

/// First-response time: from a conversation's opening to its agent's first
/// message, over the conversations opened in the last hour that an agent
/// answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct FirstResponse {
    /// How many conversations it covers.
    pub conversations: u64,
    /// The median, in milliseconds (0 when it covers none).
    pub median_ms: u64,
    /// The 90th percentile, in milliseconds (0 when it covers none).
    pub p90_ms: u64,
}

impl FirstResponse {
    /// The figures of a set of waits, in milliseconds.
    pub fn of(mut waits: Vec<u64>) -> Self {
        waits.sort_unstable();
        let at = |q: f64| waits.get(((waits.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0);
        Self { conversations: waits.len() as u64, median_ms: at(0.5), p90_ms: at(0.9) }
    }
}

/// The queue of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct QueueStats {
    /// Conversations waiting.
    pub length: u64,
    /// How long the first has waited, in milliseconds; 0 when none waits.
    pub oldest_wait_ms: u64,
}

/// The agents of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct AgentStats {
    /// Online agents in the pool with room for another conversation.
    pub available: u64,
    /// Online agents with at least one open conversation.
    pub busy: u64,
}

/// The conversations of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ConversationStats {
    /// Conversations queued or active.
    pub open: u64,
}

/// The answer of `POST /v1/sse/tickets`: a single-use pass for one
/// `GET /v1/sse?ticket=…`, for browsers' `EventSource`, which cannot send
/// an `Authorization` header.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SseTicket {
    /// The ticket.
    pub ticket: String,
    /// It is refused after this (60 s), and after its first use.
    pub expires_at: Timestamp,
}

/// Tickets are credentials: never in a log line, not even through `{:?}`.
impl std::fmt::Debug for SseTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseTicket").field("ticket", &"<redacted>").field("expires_at", &self.expires_at).finish()
    }
}

/// The body of every error of the server API and of the HTTP endpoints
/// around the socket: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ApiError {
    /// What went wrong.
    pub error: ApiErrorBody,
}

/// The `error` of an [`ApiError`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ApiErrorBody {
    /// The code, one per HTTP status.
    pub code: ApiErrorCode,
    /// For people: what was wrong, naming the field.
    pub message: String,
}

impl ApiError {
    /// An error with this code and message.
    pub fn new(code: ApiErrorCode, message: impl Into<String>) -> Self {
        Self { error: ApiErrorBody { code, message: message.into() } }
    }
}

/// The `code` of an [`ApiError`], each with its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum ApiErrorCode {
    /// 400: the body is not JSON or breaks the schema; `message` names the field.
    #[serde(rename = "invalid_request")]
    InvalidRequest,
    /// 401: no key, a wrong key, or (SSE) a bad token or ticket.
    #[serde(rename = "unauthorized")]
    Unauthorized,
    /// 403: the token does not grant a topic of the stream.
    #[serde(rename = "forbidden")]
    Forbidden,
    /// 404: no such endpoint.
    #[serde(rename = "not_found")]
    NotFound,
    /// 409: the `idempotencyKey` was used within 24 h for a different request.
    #[serde(rename = "idempotency_conflict")]
    IdempotencyConflict,
    /// 413: the body, or an event's `data`, is larger than allowed.
    #[serde(rename = "too_large")]
    TooLarge,
    /// 429: too many requests, or too many streams for this user.
    #[serde(rename = "rate_limited")]
    RateLimited,
    /// 503: the store (or, on several nodes, Redis) does not answer; retry later.
    #[serde(rename = "unavailable")]
    Unavailable,
}

impl ApiErrorCode {
    /// Every code, by status.
    pub const ALL: [Self; 8] = [
        Self::InvalidRequest,
        Self::Unauthorized,
        Self::Forbidden,
        Self::NotFound,
        Self::IdempotencyConflict,
        Self::TooLarge,
        Self::RateLimited,
        Self::Unavailable,
    ];

    /// The HTTP status that carries it.
    pub const fn status(self) -> u16 {
        match self {
            Self::InvalidRequest => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::IdempotencyConflict => 409,
            Self::TooLarge => 413,
            Self::RateLimited => 429,
            Self::Unavailable => 503,
        }
    }

    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::IdempotencyConflict => "idempotency_conflict",
            Self::TooLarge => "too_large",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_response_figures_are_the_median_and_the_90th_percentile() {
        assert_eq!(FirstResponse::of(Vec::new()), FirstResponse::default());
        let figures = FirstResponse::of(vec![900, 100, 500, 300, 700, 200, 400, 600, 800, 1000, 50]);
        assert_eq!((figures.conversations, figures.median_ms, figures.p90_ms), (11, 500, 900));
        assert_eq!(FirstResponse::of(vec![42]).median_ms, 42);
    }
}
