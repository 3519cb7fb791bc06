//! The rows both stores read, decoded once: a stored value that breaks the
//! protocol's rules is [`StoreError::Corrupt`], never a panic. Each driver
//! only says how to read one column ([`Columns`]).

use petchat_protocol::{
    Attachment, AttachmentId, AttachmentName, AttachmentType, ClientMessageId, CloseReason, Closure, ConversationId,
    ConversationStatus, EventName, LastSeq, MessageId, MessageText, OrderId, Participant, PetId, Role, Seq, Timestamp,
    Topic, User, UserId,
};

use super::{
    AgentRecord, AttachmentRecord, ConversationRecord, FeedItem, MessageRecord, ReceiptKind, ReceiptRecord, StoreError,
};

/// The columns of a conversation row, in the order both schemas name them.
pub(super) const CONVERSATION_COLUMNS: &str = "id, customer_id, customer_name, agent_id, agent_name, status, \
     last_seq, created_at, queued_at, topic, pet_id, order_id, closed_at, closed_by, close_reason, customer_away_since, declined_by";
/// The columns of a message row.
pub(super) const MESSAGE_COLUMNS: &str =
    "conversation_id, id, seq, author_id, author_role, author_name, client_message_id, text, sent_at, attachments";
/// The columns of an attachment row.
pub(super) const ATTACHMENT_COLUMNS: &str = "id, conversation_id, uploader_id, uploader_role, name, content_type, \
     size, width, height, sha256, created_at, message_id";

/// The columns of an agent row of the shared pool (PostgreSQL), `online` derived from its connections.
pub(super) const AGENT_COLUMNS: &str = "id, name, available, idle_since, offline_since, \
     EXISTS (SELECT 1 FROM agent_connections c WHERE c.agent_id = agents.id) AS online";

/// One row of a query, read by column name.
pub(super) trait Columns {
    /// A TEXT column that may not be NULL.
    fn text(&self, name: &str) -> Result<String, StoreError>;
    /// A TEXT column that may be NULL.
    fn optional_text(&self, name: &str) -> Result<Option<String>, StoreError>;
    /// An integer column that may not be NULL.
    fn int(&self, name: &str) -> Result<i64, StoreError>;
    /// An integer column that may be NULL.
    fn optional_int(&self, name: &str) -> Result<Option<i64>, StoreError>;
    /// A boolean column that may not be NULL.
    fn flag(&self, name: &str) -> Result<bool, StoreError>;
}

/// The column that names a member of this role.
pub(super) fn member_column(role: Role) -> &'static str {
    match role {
        Role::Customer => "customer_id",
        Role::Agent => "agent_id",
    }
}

/// The name a status is stored under.
pub(super) fn status_name(status: ConversationStatus) -> &'static str {
    match status {
        ConversationStatus::Queued => "queued",
        ConversationStatus::Active => "active",
        ConversationStatus::Closed => "closed",
    }
}

/// A conversation row ([`CONVERSATION_COLUMNS`]).
pub(super) fn conversation(row: &impl Columns) -> Result<ConversationRecord, StoreError> {
    let status = status(&row.text("status")?)?;
    let agent = match (row.optional_text("agent_id")?, row.optional_text("agent_name")?) {
        (Some(id), Some(name)) => Some(Participant { id: user_id(id)?, name }),
        _ => None,
    };
    Ok(ConversationRecord {
        id: ConversationId::new(row.text("id")?).map_err(corrupt("conversation id"))?,
        customer: Participant { id: user_id(row.text("customer_id")?)?, name: row.text("customer_name")? },
        agent,
        status,
        last_seq: LastSeq::new(row.int("last_seq")?.max(0) as u64).map_err(corrupt("last_seq"))?,
        created_at: time(row.int("created_at")?)?,
        queued_at: row.optional_int("queued_at")?.map(time).transpose()?,
        topic: row.optional_text("topic")?.map(Topic::new).transpose().map_err(corrupt("topic"))?,
        pet_id: row.optional_text("pet_id")?.map(PetId::new).transpose().map_err(corrupt("pet_id"))?,
        order_id: row.optional_text("order_id")?.map(OrderId::new).transpose().map_err(corrupt("order_id"))?,
        customer_away_since: row.optional_int("customer_away_since")?.map(time).transpose()?,
        closed: closure(row, status)?,
        declined_by: row.optional_text("declined_by")?.map(user_id).transpose()?,
    })
}

/// How a closed conversation ended. Rows closed before reasons were stored
/// (and the migration gave them `closed`) read as closed by a member.
fn closure(row: &impl Columns, status: ConversationStatus) -> Result<Option<Closure>, StoreError> {
    if status != ConversationStatus::Closed {
        return Ok(None);
    }
    let (Some(at), Some(by)) = (row.optional_int("closed_at")?, row.optional_text("closed_by")?) else {
        return Err(StoreError::Corrupt("a closed conversation without closed_at or closed_by".into()));
    };
    let reason = match row.optional_text("close_reason")? {
        None => CloseReason::Closed,
        Some(name) => {
            CloseReason::from_wire(&name).ok_or_else(|| StoreError::Corrupt(format!("close reason {name:?}")))?
        }
    };
    Ok(Some(Closure { at: time(at)?, by: user_id(by)?, reason }))
}

/// The `LIKE` pattern of a search: the text anywhere, `%`, `_` and `\` taken literally (`ESCAPE '\'`).
pub(super) fn like_pattern(query: &str) -> String {
    let mut pattern = String::with_capacity(query.len() + 2);
    pattern.push('%');
    for c in query.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// A message row ([`MESSAGE_COLUMNS`]).
pub(super) fn message(row: &impl Columns) -> Result<MessageRecord, StoreError> {
    let role = role(&row.text("author_role")?)?;
    Ok(MessageRecord {
        conversation_id: ConversationId::new(row.text("conversation_id")?).map_err(corrupt("conversation id"))?,
        id: MessageId::new(row.text("id")?).map_err(corrupt("message id"))?,
        seq: seq(row.int("seq")?)?,
        author: User { id: user_id(row.text("author_id")?)?, role, name: row.text("author_name")? },
        client_message_id: ClientMessageId::new(row.text("client_message_id")?)
            .map_err(corrupt("client message id"))?,
        text: MessageText::new(&row.text("text")?).map_err(corrupt("text"))?,
        attachments: match row.optional_text("attachments")? {
            None => Vec::new(),
            Some(json) => serde_json::from_str(&json).map_err(corrupt("attachments"))?,
        },
        sent_at: time(row.int("sent_at")?)?,
    })
}

/// A message's attachments as its `attachments` column stores them: the JSON
/// of `chat.message.attachments`, or NULL when there are none.
pub(super) fn attachments_json(attachments: &[Attachment]) -> Option<String> {
    (!attachments.is_empty()).then(|| serde_json::to_string(attachments).expect("attachments serialize"))
}

/// An attachment row ([`ATTACHMENT_COLUMNS`]).
pub(super) fn attachment(row: &impl Columns) -> Result<AttachmentRecord, StoreError> {
    let content_type = row.text("content_type")?;
    let dimension = |name: &str| -> Result<Option<u32>, StoreError> {
        row.optional_int(name)?.map(|n| u32::try_from(n).map_err(corrupt("dimension"))).transpose()
    };
    Ok(AttachmentRecord {
        attachment: Attachment {
            id: AttachmentId::new(row.text("id")?).map_err(corrupt("attachment id"))?,
            name: AttachmentName::new(row.text("name")?).map_err(corrupt("attachment name"))?,
            content_type: AttachmentType::from_wire(&content_type)
                .ok_or_else(|| StoreError::Corrupt(format!("attachment type {content_type:?}")))?,
            size: u64::try_from(row.int("size")?).map_err(corrupt("attachment size"))?,
            width: dimension("width")?,
            height: dimension("height")?,
        },
        conversation_id: ConversationId::new(row.text("conversation_id")?).map_err(corrupt("conversation id"))?,
        uploader: user_id(row.text("uploader_id")?)?,
        uploader_role: role(&row.text("uploader_role")?)?,
        sha256: row.text("sha256")?,
        created_at: time(row.int("created_at")?)?,
        message_id: row.optional_text("message_id")?.map(MessageId::new).transpose().map_err(corrupt("message id"))?,
    })
}

fn role(name: &str) -> Result<Role, StoreError> {
    match name {
        "customer" => Ok(Role::Customer),
        "agent" => Ok(Role::Agent),
        other => Err(StoreError::Corrupt(format!("role {other:?}"))),
    }
}

/// A receipt row (`user_id, kind, up_to_seq, at`).
pub(super) fn receipt(row: &impl Columns) -> Result<ReceiptRecord, StoreError> {
    let kind = match row.text("kind")?.as_str() {
        "delivered" => ReceiptKind::Delivered,
        "read" => ReceiptKind::Read,
        other => return Err(StoreError::Corrupt(format!("receipt kind {other:?}"))),
    };
    Ok(ReceiptRecord {
        user_id: user_id(row.text("user_id")?)?,
        kind,
        up_to_seq: seq(row.int("up_to_seq")?)?,
        at: time(row.int("at")?)?,
    })
}

/// An agent row ([`AGENT_COLUMNS`]).
pub(super) fn agent(row: &impl Columns) -> Result<AgentRecord, StoreError> {
    Ok(AgentRecord {
        id: user_id(row.text("id")?)?,
        name: row.text("name")?,
        available: row.flag("available")?,
        online: row.flag("online")?,
        idle_since: time(row.int("idle_since")?)?,
        offline_since: row.optional_int("offline_since")?.map(time).transpose()?,
    })
}

/// A stored status name.
pub(super) fn status(name: &str) -> Result<ConversationStatus, StoreError> {
    match name {
        "queued" => Ok(ConversationStatus::Queued),
        "active" => Ok(ConversationStatus::Active),
        "closed" => Ok(ConversationStatus::Closed),
        other => Err(StoreError::Corrupt(format!("conversation status {other:?}"))),
    }
}

/// The columns of a feed item row.
pub(super) const FEED_ITEM_COLUMNS: &str = "seq, id, name, body, at";

/// A feed item row ([`FEED_ITEM_COLUMNS`]).
pub(super) fn feed_item(row: &impl Columns) -> Result<FeedItem, StoreError> {
    Ok(FeedItem {
        seq: seq(row.int("seq")?)?,
        id: row.text("id")?,
        name: EventName::new(row.text("name")?).map_err(corrupt("feed item name"))?,
        body: row.text("body")?,
        at: time(row.int("at")?)?,
    })
}

/// A stored last or read seq.
pub(super) fn last_seq(n: i64) -> Result<LastSeq, StoreError> {
    LastSeq::new(n.max(0) as u64).map_err(corrupt("last seq"))
}

/// A stored seq.
pub(super) fn seq(n: i64) -> Result<Seq, StoreError> {
    Seq::new(n.max(0) as u64).map_err(corrupt("seq"))
}

fn user_id(id: String) -> Result<UserId, StoreError> {
    UserId::new(id).map_err(corrupt("user id"))
}

fn time(ms: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_unix_ms(ms).ok_or_else(|| StoreError::Corrupt(format!("time {ms}")))
}

fn corrupt<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> StoreError {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}
