//! Live updates (SPEC §11): topic names, the patterns that grant them, and
//! `topic.subscribe`, `topic.subscribed`, `topic.event`, `topic.unsubscribe`.

use std::borrow::Borrow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::bounded::bounded_string;
use crate::ids::{InvalidValue, LastSeq, Seq};
use crate::limits::{MAX_EVENT_NAME_CHARS, MAX_TOPIC_NAME_CHARS};
use crate::time::Timestamp;

/// The characters of a topic name (and of a pattern's prefix).
fn is_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '@' | '-')
}

/// The JSON Schema pattern of a topic name.
#[cfg(feature = "schema")]
pub(crate) const TOPIC_NAME_PATTERN: &str = "^[a-z][a-z0-9_-]*:[A-Za-z0-9_.:@-]+$";

/// A topic: a namespace (`[a-z][a-z0-9_-]*`), a colon and a non-empty key,
/// at most [`MAX_TOPIC_NAME_CHARS`] characters of `[A-Za-z0-9_.:@-]` in all
/// (`orders:1234`, `pets:42`, `support:stats`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TopicName(String);

impl TopicName {
    /// Checks and wraps a topic name.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidValue> {
        let name = name.into();
        crate::bounded::check(&name, 3, MAX_TOPIC_NAME_CHARS, is_topic_char)?;
        let Some((namespace, key)) = name.split_once(':') else {
            return Err(InvalidValue("must be namespace:key, as orders:1234".into()));
        };
        let mut chars = namespace.chars();
        let namespace_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !namespace_ok {
            return Err(InvalidValue(format!("namespace {namespace:?} must match [a-z][a-z0-9_-]*")));
        }
        if key.is_empty() {
            return Err(InvalidValue("must have a key after the colon".into()));
        }
        Ok(Self(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What comes before the first colon (`orders`).
    pub fn namespace(&self) -> &str {
        self.0.split_once(':').map_or("", |(namespace, _)| namespace)
    }
}

/// Maps keyed by topic are looked up by `&str` (the derived order and hash
/// are the name's own).
impl Borrow<str> for TopicName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TopicName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::new(String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for TopicName {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TopicName".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A topic: a namespace, a colon and a non-empty key (orders:1234).",
            "type": "string",
            "minLength": 3,
            "maxLength": MAX_TOPIC_NAME_CHARS,
            "pattern": TOPIC_NAME_PATTERN,
        })
    }
}

/// What grants topics: an exact topic name, or a prefix ending in `*`
/// (`pets:*`; `*` alone matches every topic). Used by the token's `topics`
/// claim, `--public-topics` and `--agent-topics`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TopicPattern(String);

impl TopicPattern {
    /// Checks and wraps a pattern.
    pub fn new(pattern: impl Into<String>) -> Result<Self, InvalidValue> {
        let pattern = pattern.into();
        match pattern.strip_suffix('*') {
            Some(prefix) => crate::bounded::check(prefix, 0, MAX_TOPIC_NAME_CHARS - 1, is_topic_char)
                .map_err(|e| InvalidValue(format!("the prefix before * {e}")))?,
            None => {
                TopicName::new(pattern.as_str())?;
            }
        }
        Ok(Self(pattern))
    }

    /// Whether the pattern grants `topic`.
    pub fn matches(&self, topic: &TopicName) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => topic.as_str().starts_with(prefix),
            None => topic.as_str() == self.0,
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for TopicPattern {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl<'de> Deserialize<'de> for TopicPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::new(String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

bounded_string! {
    /// A short name for what happened (`order.shipped`) or what a
    /// notification is about (`conversation.requeued`): 1 to
    /// `MAX_EVENT_NAME_CHARS` characters of `[A-Za-z0-9_.:-]`.
    EventName,
    chars: 1, MAX_EVENT_NAME_CHARS,
    allowed: |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'),
    pattern: Some("^[A-Za-z0-9_.:-]+$"),
}

/// `topic.subscribe`: live events of a topic from now on, after the stored
/// ones with `seq > afterSeq` when `afterSeq` is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SubscribeTopic {
    /// The topic.
    pub topic: TopicName,
    /// Replay the stored events with a greater `seq` first (0 replays every
    /// stored event); absent, the subscription starts with live events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_seq: Option<LastSeq>,
}

/// The data that names only a topic: `topic.unsubscribe` and `topic.unsubscribed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct TopicRef {
    /// The topic.
    pub topic: TopicName,
}

/// `topic.subscribed`: the subscription holds; the replayed events follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct TopicSubscribed {
    /// The topic.
    pub topic: TopicName,
    /// The `seq` of the topic's last event; 0 when it has none.
    pub last_seq: LastSeq,
    /// False when some events after `afterSeq` are no longer stored: the
    /// client reloads the state from the shop's backend. True without
    /// `afterSeq`.
    pub recovered: bool,
}

/// `topic.event`: one event of a subscribed topic, live or replayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct TopicEvent {
    /// The topic.
    pub topic: TopicName,
    /// Its position in the topic: 1 for the first, then without gaps.
    pub seq: Seq,
    /// What happened.
    pub event: EventName,
    /// The publisher's payload.
    pub data: serde_json::Map<String, serde_json::Value>,
    /// When the server stored it.
    pub published_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_are_a_namespace_a_colon_and_a_key() {
        for good in ["orders:1234", "pets:42", "support:stats", "a:b", "orders:eu:12@x.y-z_", "my-ns_2:K"] {
            assert!(TopicName::new(good).is_ok(), "{good}");
        }
        let long = format!("orders:{}", "9".repeat(MAX_TOPIC_NAME_CHARS - 7));
        assert!(TopicName::new(long.as_str()).is_ok());
        for bad in [
            "",
            "orders",
            "orders:",
            ":1234",
            "Orders:1",
            "1orders:1",
            "or ders:1",
            "orders:12 34",
            "orders:é",
            "or.ders:1",
            &format!("{long}9"),
        ] {
            assert!(TopicName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_pattern_is_an_exact_name_or_a_prefix_ending_in_a_star() {
        let topic = |name: &str| TopicName::new(name).expect("valid");
        let pattern = |p: &str| TopicPattern::new(p).expect("valid");
        assert!(pattern("orders:1234").matches(&topic("orders:1234")));
        assert!(!pattern("orders:1234").matches(&topic("orders:12345")));
        assert!(pattern("pets:*").matches(&topic("pets:42")));
        assert!(!pattern("pets:*").matches(&topic("petshop:1")));
        assert!(pattern("*").matches(&topic("support:stats")));
        for bad in ["orders", "pets:**", "pe ts:*", "Orders:1"] {
            assert!(TopicPattern::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn event_names_are_short_and_plain() {
        assert!(EventName::new("order.shipped").is_ok());
        assert!(EventName::new("").is_err());
        assert!(EventName::new("order shipped").is_err());
        assert!(EventName::new("x".repeat(MAX_EVENT_NAME_CHARS + 1)).is_err());
    }
}
