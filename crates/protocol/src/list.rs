//! `conversation.list`: a user's conversations, past ones included, page by
//! page, and the queue as agents see it; and the summaries `session.ready`
//! lists the user's past conversations with.

use serde::{Deserialize, Serialize};

use crate::bounded::bounded_string;
use crate::chat::MessageText;
use crate::conversation::{Conversation, ConversationStatus};
use crate::ids::{ConversationId, Seq};
use crate::limits::{DEFAULT_LIST_PAGE, MAX_LIST_PAGE, MAX_PREVIEW_CHARS, MAX_QUERY_CHARS};
use crate::time::Timestamp;
use crate::user::User;

bounded_string! {
    /// Search text of `conversation.list`: 1 to `MAX_QUERY_CHARS` characters,
    /// matched case-insensitively anywhere in the customer's name or id, or the topic.
    SearchQuery,
    chars: 1, MAX_QUERY_CHARS,
    allowed: |c: char| !c.is_control(),
    pattern: None,
}

/// Which conversations `conversation.list` lists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum ListScope {
    /// The user's own: a customer's conversations, the ones an agent was
    /// assigned (a transferred one moves to the new agent's list); newest first.
    #[default]
    #[serde(rename = "mine")]
    Mine,
    /// Agents only: the queue, in the order it is served (the conversations of
    /// customers who are away are left out: they are not served until they return).
    #[serde(rename = "queue")]
    Queue,
}

/// The page size of `conversation.list`: 1 to `MAX_LIST_PAGE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct PageSize(u32);

impl PageSize {
    /// Checks and wraps a page size.
    pub fn new(size: u32) -> Result<Self, crate::ids::InvalidValue> {
        if !(1..=MAX_LIST_PAGE).contains(&size) {
            return Err(crate::ids::InvalidValue(format!("is {size}, 1 to {MAX_LIST_PAGE} are allowed")));
        }
        Ok(Self(size))
    }

    /// The size.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for PageSize {
    fn default() -> Self {
        Self(DEFAULT_LIST_PAGE)
    }
}

impl<'de> Deserialize<'de> for PageSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::new(u32::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for PageSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "PageSize".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "How many conversations one page holds.",
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_LIST_PAGE,
            "default": DEFAULT_LIST_PAGE,
        })
    }
}

/// `conversation.list`: a page of conversations; the reply is `conversation.listed`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ListConversations {
    /// The user's own (default) or, for an agent, the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<ListScope>,
    /// Only conversations in this state (scope `mine`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ConversationStatus>,
    /// Only conversations whose customer's name or id, or topic, contains this,
    /// ignoring case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<SearchQuery>,
    /// The next page: the conversations listed after this one (the last of the
    /// previous page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<ConversationId>,
    /// How many (default `DEFAULT_LIST_PAGE`, at most `MAX_LIST_PAGE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<PageSize>,
}

/// `conversation.listed`: the reply to `conversation.list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ConversationList {
    /// The page, in the scope's order.
    pub conversations: Vec<ConversationSummary>,
    /// Whether more follow: ask again with `after` set to the last one's id.
    pub has_more: bool,
}

/// A conversation in a list: what it is about, where it stands and its last message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ConversationSummary {
    /// The conversation, as `conversation.joined` shows it.
    pub conversation: Conversation,
    /// Its last message, its text cut to `MAX_PREVIEW_CHARS` characters;
    /// absent while it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message: Option<LastMessage>,
}

/// The last message of a conversation, as a list previews it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct LastMessage {
    /// Its seq (the conversation's `lastSeq`).
    pub seq: Seq,
    /// Its author.
    pub from: User,
    /// Its text, at most `MAX_PREVIEW_CHARS` characters of it.
    pub text: MessageText,
    /// When it was stored.
    pub sent_at: Timestamp,
}

impl LastMessage {
    /// The preview of a message: its text cut to `MAX_PREVIEW_CHARS` characters.
    pub fn preview(seq: Seq, from: User, text: &MessageText, sent_at: Timestamp) -> Self {
        let text = match text.as_str().char_indices().nth(MAX_PREVIEW_CHARS) {
            None => text.clone(),
            // A cut text is never empty: it keeps the first, non-blank, characters.
            Some((end, _)) => MessageText::new(&text.as_str()[..end]).unwrap_or_else(|_| text.clone()),
        };
        Self { seq, from, text, sent_at }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::UserId;
    use crate::user::Role;

    #[test]
    fn a_preview_keeps_at_most_the_first_preview_chars_characters() {
        let from = User { id: UserId::new("u").expect("id"), role: Role::Customer, name: "U".into() };
        let at = Timestamp::from_unix_ms(0).expect("time");
        let long = MessageText::new(&"é".repeat(MAX_PREVIEW_CHARS + 5)).expect("text");
        let cut = LastMessage::preview(Seq::new(1).expect("seq"), from.clone(), &long, at);
        assert_eq!(cut.text.as_str().chars().count(), MAX_PREVIEW_CHARS);
        let short = MessageText::new("Miso stopped eating").expect("text");
        assert_eq!(LastMessage::preview(Seq::new(1).expect("seq"), from, &short, at).text, short);
    }

    #[test]
    fn a_page_size_outside_one_to_max_list_page_is_refused() {
        assert!(PageSize::new(0).is_err());
        assert!(PageSize::new(MAX_LIST_PAGE + 1).is_err());
        assert_eq!(PageSize::new(MAX_LIST_PAGE).map(PageSize::get), Ok(MAX_LIST_PAGE));
        assert_eq!(PageSize::default().get(), DEFAULT_LIST_PAGE);
    }
}
