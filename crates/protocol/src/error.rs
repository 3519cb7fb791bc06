//! Error codes of the `error` message, and decode errors that map to them.
//!
//! Decoding a frame either yields a typed message or a [`DecodeError`] that
//! names exactly one [`ErrorCode`] and the field that was wrong; the server
//! answers it with an `error` message, so every side refuses identical frames.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::RequestId;

/// The `code` of an `error` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum ErrorCode {
    /// The frame is not JSON (or not UTF-8 JSON the decoder can read).
    #[serde(rename = "invalid_json")]
    InvalidJson,
    /// The message breaks the schema; `message` names the field.
    #[serde(rename = "invalid_message")]
    InvalidMessage,
    /// The `type` is not a client message of this protocol version.
    #[serde(rename = "unknown_type")]
    UnknownType,
    /// The user may not do this (e.g. a customer touching another customer's
    /// conversation, or a customer sending `agent.status`).
    #[serde(rename = "forbidden")]
    Forbidden,
    /// The conversation (or other target) does not exist.
    #[serde(rename = "not_found")]
    NotFound,
    /// The conversation is closed; nothing more can be sent to it.
    #[serde(rename = "conversation_closed")]
    ConversationClosed,
    /// Too many messages; `retryAfterMs` says when to send again.
    #[serde(rename = "rate_limited")]
    RateLimited,
    /// The chat text is longer than `maxTextChars` after trimming.
    #[serde(rename = "text_too_long")]
    TextTooLong,
    /// A `session.refresh` was refused: its token is malformed, wrongly signed,
    /// not yet valid, or names another user or role.
    #[serde(rename = "unauthorized")]
    Unauthorized,
    /// A `session.refresh` was refused: its token has expired.
    #[serde(rename = "token_expired")]
    TokenExpired,
    /// A per-connection limit is reached (the topics one connection may
    /// subscribe to); `message` names it.
    #[serde(rename = "limit_reached")]
    LimitReached,
    /// The server failed; the request may be retried.
    #[serde(rename = "internal")]
    Internal,
}

impl ErrorCode {
    /// Every code, in the order of SPEC §3.
    pub const ALL: [Self; 12] = [
        Self::InvalidJson,
        Self::InvalidMessage,
        Self::UnknownType,
        Self::Forbidden,
        Self::NotFound,
        Self::ConversationClosed,
        Self::RateLimited,
        Self::TextTooLong,
        Self::Unauthorized,
        Self::TokenExpired,
        Self::LimitReached,
        Self::Internal,
    ];

    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::InvalidMessage => "invalid_message",
            Self::UnknownType => "unknown_type",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::ConversationClosed => "conversation_closed",
            Self::RateLimited => "rate_limited",
            Self::TextTooLong => "text_too_long",
            Self::Unauthorized => "unauthorized",
            Self::TokenExpired => "token_expired",
            Self::LimitReached => "limit_reached",
            Self::Internal => "internal",
        }
    }

    /// The code of a wire name.
    pub fn from_wire(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|code| code.as_str() == name)
    }

    /// One sentence on when the server sends the code.
    pub const fn description(self) -> &'static str {
        match self {
            Self::InvalidJson => "The frame is not JSON.",
            Self::InvalidMessage => "The message breaks the schema; the message names the field.",
            Self::UnknownType => "The type is not a client message of this protocol version.",
            Self::Forbidden => "The user may not do this, e.g. a customer touching another customer's conversation.",
            Self::NotFound => "The conversation (or other target) does not exist.",
            Self::ConversationClosed => "The conversation is closed; nothing more can be sent to it.",
            Self::RateLimited => "Too many messages; retryAfterMs says when to send again.",
            Self::TextTooLong => "The chat text is longer than maxTextChars after trimming.",
            Self::Unauthorized => {
                "A session.refresh was refused: its token is malformed, wrongly signed, not yet valid, or names another user or role."
            }
            Self::TokenExpired => "A session.refresh was refused: its token has expired.",
            Self::LimitReached => {
                "A per-connection limit is reached, e.g. the topics one connection may subscribe to; the message names it."
            }
            Self::Internal => "The server failed; the request may be retried.",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `error`: a request was refused, or something failed. It never closes the
/// connection by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ErrorData {
    /// What went wrong.
    pub code: ErrorCode,
    /// For people: what was wrong, naming the field.
    pub message: String,
    /// The `id` of the request that caused it, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_id: Option<RequestId>,
    /// With `rate_limited`: wait this long before sending again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// A frame that is not a valid message, with the one code it maps to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DecodeError {
    code: ErrorCode,
    field: Option<String>,
    message: String,
    ref_id: Option<RequestId>,
}

impl DecodeError {
    pub(crate) fn new(code: ErrorCode, field: Option<String>, message: impl Into<String>) -> Self {
        Self { code, field, message: message.into(), ref_id: None }
    }

    pub(crate) fn with_ref_id(mut self, ref_id: Option<RequestId>) -> Self {
        self.ref_id = ref_id;
        self
    }

    /// The error code the server answers with.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The field that was wrong, as a path (`data.text`), when one was.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// For people: what was wrong, naming the field.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The `id` of the refused frame, when it could be read.
    pub fn ref_id(&self) -> Option<&RequestId> {
        self.ref_id.as_ref()
    }

    /// The data of the `error` message that answers this frame.
    pub fn to_error_data(&self) -> ErrorData {
        ErrorData { code: self.code, message: self.message.clone(), ref_id: self.ref_id.clone(), retry_after_ms: None }
    }

    /// Maps a failure to deserialize a message's `data` to its code and field.
    pub(crate) fn from_data(err: serde_path_to_error::Error<serde_json::Error>) -> Self {
        let inner = err.inner().to_string();
        let path = err.path().to_string();
        let mut field = if path == "." { "data".to_owned() } else { format!("data.{path}") };
        if let Some(missing) = inner.strip_prefix("missing field `").and_then(|rest| rest.strip_suffix('`')) {
            field = format!("{field}.{missing}");
            return Self::new(ErrorCode::InvalidMessage, Some(field.clone()), format!("{field} is required"));
        }
        if let Some(detail) = inner.strip_prefix(TEXT_TOO_LONG_MARKER) {
            return Self::new(ErrorCode::TextTooLong, Some(field.clone()), format!("{field} {detail}"));
        }
        Self::new(ErrorCode::InvalidMessage, Some(field.clone()), format!("{field}: {inner}"))
    }
}

/// Starts the deserialization error of a text that is too long, so that the
/// decoder can tell it from the other violations of `data`.
pub(crate) const TEXT_TOO_LONG_MARKER: &str = "text_too_long: ";
