//! Chat messages: `chat.send`, its `chat.ack`, and the `chat.message` members get.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::attachment::{Attachment, AttachmentIds};
use crate::ids::{ClientMessageId, ConversationId, MessageId, Seq};
use crate::limits::MAX_TEXT_CHARS;
use crate::time::Timestamp;
use crate::user::User;

/// `chat.send`: a member posts a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SendChat {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The client's idempotency key: sending the same key again gets the
    /// original `chat.ack` and no second message.
    pub client_message_id: ClientMessageId,
    /// The message (with attachments: their caption).
    pub text: MessageText,
    /// Attachments to send with it: ids the sender uploaded to this
    /// conversation and has not sent yet (see docs/protocol.md, "Attachments").
    #[serde(default, skip_serializing_if = "AttachmentIds::is_empty")]
    pub attachments: AttachmentIds,
}

/// `chat.ack`: the message is stored durably; sent to the connection that
/// sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ChatAck {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The key the client sent.
    pub client_message_id: ClientMessageId,
    /// The stored message's id.
    pub message_id: MessageId,
    /// The message's position in the conversation.
    pub seq: Seq,
    /// When the server stored it.
    pub sent_at: Timestamp,
}

/// `chat.message`: a message of a conversation, live or replayed after a join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ChatMessage {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The stored message's id.
    pub message_id: MessageId,
    /// The message's position in the conversation.
    pub seq: Seq,
    /// The author.
    pub from: User,
    /// The message, trimmed.
    pub text: MessageText,
    /// The photos and PDFs sent with it, in order (absent when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
    /// When the server stored it.
    pub sent_at: Timestamp,
}

/// The text of a chat message: 1..=[`MAX_TEXT_CHARS`] characters once leading
/// and trailing white space is trimmed. It holds the trimmed text.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct MessageText(String);

/// Why a text is not a valid [`MessageText`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// Nothing but white space.
    #[error("must contain something besides white space")]
    Empty,
    /// Longer than [`MAX_TEXT_CHARS`] once trimmed.
    #[error("has {chars} characters after trimming, at most {MAX_TEXT_CHARS} are allowed")]
    TooLong {
        /// Characters after trimming.
        chars: usize,
    },
}

impl MessageText {
    /// Trims and checks a text.
    pub fn new(text: &str) -> Result<Self, TextError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(TextError::Empty);
        }
        // Counting stops early: a megabyte of text costs no more than the limit.
        let chars = trimmed.chars().take(MAX_TEXT_CHARS + 1).count();
        if chars > MAX_TEXT_CHARS {
            return Err(TextError::TooLong { chars: trimmed.chars().count() });
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The trimmed text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for MessageText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for MessageText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for MessageText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::new(&text).map_err(|e| match e {
            // The decoder maps this marker to `text_too_long` (see error.rs).
            TextError::TooLong { .. } => {
                serde::de::Error::custom(format_args!("{}{e}", crate::error::TEXT_TOO_LONG_MARKER))
            }
            TextError::Empty => serde::de::Error::custom(e),
        })
    }
}

/// White space as `str::trim` knows it (Unicode `White_Space`), as a regex
/// class for the JSON Schema.
#[cfg(feature = "schema")]
const WHITE_SPACE_CLASS: &str = r"\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

/// The pattern of a [`MessageText`]: 1..=[`MAX_TEXT_CHARS`] characters between
/// the first and the last character that is not white space.
#[cfg(feature = "schema")]
pub(crate) fn text_pattern() -> String {
    let ws = WHITE_SPACE_CLASS;
    let inner = MAX_TEXT_CHARS - 2;
    format!(r"^[{ws}]*[^{ws}](?:[\s\S]{{0,{inner}}}[^{ws}])?[{ws}]*$")
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for MessageText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "MessageText".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": format!(
                "A chat message: 1 to {MAX_TEXT_CHARS} characters once leading and trailing white space \
                 (Unicode White_Space) is trimmed; the server stores and relays the trimmed text."
            ),
            "type": "string",
            "pattern": text_pattern(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_then_counted() {
        assert_eq!(MessageText::new("  hi \n").map(|t| t.as_str().to_owned()), Ok("hi".into()));
        let padded = format!("\u{3000}{}\u{85}", "x".repeat(MAX_TEXT_CHARS));
        assert!(MessageText::new(&padded).is_ok());
        assert_eq!(
            MessageText::new(&"x".repeat(MAX_TEXT_CHARS + 1)),
            Err(TextError::TooLong { chars: MAX_TEXT_CHARS + 1 })
        );
        assert_eq!(MessageText::new(" \t\u{2028} "), Err(TextError::Empty));
        assert_eq!(MessageText::new(""), Err(TextError::Empty));
    }

    #[test]
    fn characters_are_unicode_scalar_values_not_bytes() {
        assert!(MessageText::new(&"🐈".repeat(MAX_TEXT_CHARS)).is_ok());
        assert!(MessageText::new(&"🐈".repeat(MAX_TEXT_CHARS + 1)).is_err());
    }
}
