//! Identifiers and sequence numbers: newtypes that cannot hold an invalid value.
//!
//! Each one validates when it is built or deserialized, so a value of these
//! types has already passed the contract's rules.

use std::fmt;
use std::num::NonZeroU64;

use serde::{Deserialize, Deserializer, Serialize};

use crate::limits::{MAX_ID_CHARS, MAX_SEQ};

/// Why a value was refused by one of the validated types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub(crate) String);

macro_rules! string_id {
    ($name:ident, $doc:literal) => {
        #[doc = $doc]
        ///
        /// Never empty, at most [`MAX_ID_CHARS`] characters.
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Checks and wraps an identifier.
            pub fn new(id: impl Into<String>) -> Result<Self, InvalidValue> {
                let id = id.into();
                check_id(&id)?;
                Ok(Self(id))
            }

            /// The identifier as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The identifier as an owned string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                Self::new(String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
            }
        }

        #[cfg(feature = "schema")]
        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                crate::schema::id_schema($doc)
            }
        }
    };
}

string_id!(ConversationId, "Identifies a conversation; chosen by the server.");
string_id!(MessageId, "Identifies a stored chat message; chosen by the server.");
string_id!(UserId, "Identifies a user: the `sub` claim of its token.");
string_id!(SessionId, "Identifies one connection's session; chosen by the server.");
string_id!(
    RequestId,
    "The optional `id` a client puts on a request; replies and errors carry it back (as `refId` inside `error`)."
);
string_id!(PetId, "A pet of the store's catalogue that a conversation is about.");
string_id!(OrderId, "An order of the store that a conversation is about.");
string_id!(NotificationId, "Identifies a stored notification; chosen by the server.");
string_id!(AttachmentId, "Identifies an uploaded attachment (a photo or a PDF); chosen by the server.");

impl UserId {
    /// The wire name of the server itself as the closer of a conversation
    /// (`conversation.closed.by`); no token may carry it as its `sub`.
    pub const SYSTEM: &'static str = "system";

    /// The server itself, as `conversation.closed.by` names it.
    pub fn system() -> Self {
        Self(Self::SYSTEM.to_owned())
    }

    /// Whether this is [`UserId::SYSTEM`].
    pub fn is_system(&self) -> bool {
        self.0 == Self::SYSTEM
    }
}

fn check_id(id: &str) -> Result<(), InvalidValue> {
    if id.is_empty() {
        return Err(InvalidValue("must not be empty".into()));
    }
    let chars = id.chars().count();
    if chars > MAX_ID_CHARS {
        return Err(InvalidValue(format!("has {chars} characters, at most {MAX_ID_CHARS} are allowed")));
    }
    Ok(())
}

/// The client's idempotency key of a `chat.send`: a UUID in its hyphenated
/// form (`8-4-4-4-12` hexadecimal digits, either case), kept exactly as sent
/// so that the `chat.ack` echoes it byte for byte.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ClientMessageId(String);

impl ClientMessageId {
    /// Checks and wraps a UUID string.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidValue> {
        let id = id.into();
        if !is_hyphenated_uuid(&id) {
            return Err(InvalidValue("must be a UUID such as 0b6f8a3e-5c1d-4f3a-9e2b-7d4c1a9f6e21".into()));
        }
        Ok(Self(id))
    }

    /// Builds the key from 16 random bytes (a version 4 UUID); the caller
    /// brings the randomness, so this crate stays free of I/O.
    pub fn from_random_bytes(mut bytes: [u8; 16]) -> Self {
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Self(format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32]))
    }

    /// The key as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientMessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for ClientMessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ClientMessageId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::new(String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for ClientMessageId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ClientMessageId".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "The client's idempotency key: a UUID in hyphenated form, echoed by chat.ack.",
            "type": "string",
            "format": "uuid",
            "pattern": UUID_PATTERN,
        })
    }
}

/// The pattern a [`ClientMessageId`] matches, for the JSON Schema.
#[cfg(feature = "schema")]
pub(crate) const UUID_PATTERN: &str = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

fn is_hyphenated_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// The position of a message in its conversation: 1 for the first, then
/// without gaps, at most [`MAX_SEQ`].
///
/// Positions "before the first message" (`afterSeq`, `lastSeq`) are plain
/// `u64`s where 0 means "nothing yet".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Seq(NonZeroU64);

impl Seq {
    /// The first message of a conversation.
    pub const FIRST: Self = Self(NonZeroU64::MIN);

    /// Checks and wraps a sequence number.
    pub fn new(seq: u64) -> Result<Self, InvalidValue> {
        match NonZeroU64::new(seq) {
            Some(seq) if seq.get() <= MAX_SEQ => Ok(Self(seq)),
            Some(_) => Err(InvalidValue(format!("must be at most {MAX_SEQ}"))),
            None => Err(InvalidValue("must be at least 1".into())),
        }
    }

    /// The number.
    pub const fn get(self) -> u64 {
        self.0.get()
    }

    /// The next position, or `None` past [`MAX_SEQ`].
    pub fn next(self) -> Option<Self> {
        Self::new(self.get() + 1).ok()
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for Seq {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::new(u64::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for Seq {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Seq".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Position of a message in its conversation: 1 for the first, then without gaps.",
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_SEQ,
        })
    }
}

/// The `seq` of the last message a side has, 0 when it has none: a
/// conversation's `lastSeq`, a join's `afterSeq`. At most [`MAX_SEQ`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct LastSeq(u64);

impl LastSeq {
    /// No message yet.
    pub const NONE: Self = Self(0);

    /// Checks and wraps a position.
    pub fn new(seq: u64) -> Result<Self, InvalidValue> {
        if seq > MAX_SEQ {
            return Err(InvalidValue(format!("must be at most {MAX_SEQ}")));
        }
        Ok(Self(seq))
    }

    /// The number; 0 when there is no message.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The last message's `seq`, if there is one.
    pub fn seq(self) -> Option<Seq> {
        Seq::new(self.0).ok()
    }
}

impl From<Seq> for LastSeq {
    fn from(seq: Seq) -> Self {
        Self(seq.get())
    }
}

impl fmt::Display for LastSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for LastSeq {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::new(u64::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for LastSeq {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "LastSeq".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "The seq of the last message a side has; 0 when it has none.",
            "type": "integer",
            "minimum": 0,
            "maximum": MAX_SEQ,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_non_empty_and_bounded() {
        assert!(ConversationId::new("c-1").is_ok());
        assert!(ConversationId::new("").is_err());
        assert!(ConversationId::new("é".repeat(MAX_ID_CHARS)).is_ok());
        assert!(ConversationId::new("é".repeat(MAX_ID_CHARS + 1)).is_err());
    }

    #[test]
    fn client_message_ids_are_hyphenated_uuids() {
        assert!(ClientMessageId::new("0b6f8a3e-5c1d-4f3a-9e2b-7d4c1a9f6e21").is_ok());
        assert!(ClientMessageId::new("0B6F8A3E-5C1D-4F3A-9E2B-7D4C1A9F6E21").is_ok());
        for bad in [
            "",
            "0b6f8a3e5c1d4f3a9e2b7d4c1a9f6e21",
            "{0b6f8a3e-5c1d-4f3a-9e2b-7d4c1a9f6e21}",
            "urn:uuid:0b6f8a3e-5c1d-4f3a-9e2b-7d4c1a9f6e21",
            "0b6f8a3e-5c1d-4f3a-9e2b-7d4c1a9f6e2g",
        ] {
            assert!(ClientMessageId::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn random_client_message_ids_are_valid_v4_uuids() {
        let id = ClientMessageId::from_random_bytes([0xff; 16]);
        assert_eq!(id.as_str(), "ffffffff-ffff-4fff-bfff-ffffffffffff");
        assert!(ClientMessageId::new(id.as_str()).is_ok());
    }

    #[test]
    fn seq_starts_at_one_and_stays_exact_in_javascript() {
        assert!(Seq::new(0).is_err());
        assert_eq!(Seq::new(1).ok(), Some(Seq::FIRST));
        assert!(Seq::new(MAX_SEQ).is_ok());
        assert!(Seq::new(MAX_SEQ + 1).is_err());
        assert_eq!(Seq::new(MAX_SEQ).ok().and_then(Seq::next), None);
    }
}
