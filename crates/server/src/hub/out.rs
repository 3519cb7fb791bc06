//! What the hub says: frames to one connection or to a topic's connections,
//! counted by type, and the answers every part of the hub gives alike.

use std::sync::Arc;

use petchat_protocol::{
    ChatAck, ClientMessageId, Conversation, ConversationId, ConversationState, ConversationStatus, ConversationSummary,
    ErrorCode, ErrorData, LastMessage, NotificationsState, RequestId, ServerMessage, SessionId, SessionLimits,
    SessionReady, Timestamp, User, UserId,
};
use tracing::warn;

use super::frames::frame;
use super::remote::Remote;
use crate::bus::{Bus, ConnId, Skip, Topic};
use crate::config::Limits;
use crate::store::{ConversationRecord, MessageRecord, Store, SummaryRecord};

/// Sends and publishes through the bus (and, in a cluster, to the other
/// nodes), counting what goes out.
#[derive(Clone)]
pub(super) struct Out {
    pub(super) bus: Arc<dyn Bus>,
    /// The other nodes, in a cluster.
    pub(super) remote: Option<Arc<Remote>>,
}

impl Out {
    /// One frame to every connection of a topic on every node, less `skip`.
    pub(super) fn publish(&self, topic: &Topic, message: ServerMessage, skip: Skip<'_>) {
        let kind = message.wire_type();
        let frame = frame(message, None);
        let delivered = self.bus.publish(topic, &frame, skip);
        count_out(kind, delivered);
        if let Some(remote) = &self.remote {
            remote.frame(topic, &frame, skip);
        }
    }

    /// One frame to every connection of a topic on this node only: what each
    /// node says for itself of a fact all of them hear.
    pub(super) fn publish_local(&self, topic: &Topic, message: ServerMessage, skip: Skip<'_>) {
        let kind = message.wire_type();
        let delivered = self.bus.publish(topic, &frame(message, None), skip);
        count_out(kind, delivered);
    }

    /// A serialized frame of type `kind` to the conversation's connections on this node.
    pub(super) fn publish_frame_local(
        &self,
        conversation: &ConversationId,
        frame: &axum::extract::ws::Utf8Bytes,
        kind: &'static str,
        skip: Skip<'_>,
    ) {
        let delivered = self.bus.publish(&Topic::Conversation(conversation.clone()), frame, skip);
        count_out(kind, delivered);
    }

    /// One frame to the user's connections on this node only.
    pub(super) fn to_user_local(&self, user: &UserId, message: ServerMessage) {
        self.publish_local(&Topic::User(user.clone()), message, Skip::Nobody);
    }

    /// One frame to every connection of the conversation, less `skip`.
    pub(super) fn to_conversation(&self, conversation: &ConversationId, message: ServerMessage, skip: Skip<'_>) {
        self.publish(&Topic::Conversation(conversation.clone()), message, skip);
    }

    /// One frame to every connection of a user.
    pub(super) fn to_user(&self, user: &UserId, message: ServerMessage, skip: Skip<'_>) {
        self.publish(&Topic::User(user.clone()), message, skip);
    }

    /// One frame to one connection, answering request `id` if any.
    pub(super) fn send_to(&self, conn: ConnId, message: ServerMessage, id: Option<RequestId>) {
        let kind = message.wire_type();
        self.bus.send_to(conn, &frame(message, id));
        count_out(kind, 1);
    }

    /// An `error` answering request `id`.
    pub(super) fn error(&self, conn: ConnId, id: Option<RequestId>, code: ErrorCode, message: &str) {
        if code == ErrorCode::Internal {
            warn!(conn, %code, message, "request failed");
        }
        self.bus.send_to(conn, &error_frame(code, message, id));
        count_error(code);
    }

    /// Answers a request about a conversation this part of the hub does not
    /// hold, closed or unknown, reading the store off the caller's loop. A
    /// `chat.send` retry (`retry`: its clientMessageId) of a message stored
    /// before the conversation closed gets its original `chat.ack` (SPEC §5,
    /// exactly once).
    pub(super) fn answer_not_open(
        &self,
        store: &Arc<dyn Store>,
        conn: ConnId,
        user: &User,
        id: Option<RequestId>,
        conversation: &ConversationId,
        retry: Option<ClientMessageId>,
    ) {
        let (conversation, user, store, out) = (conversation.clone(), user.clone(), store.clone(), self.clone());
        tokio::spawn(async move {
            let (code, message) = match store.conversation(&conversation).await {
                Ok(Some(rec)) if !is_member(&user, &rec) => (ErrorCode::Forbidden, "this conversation is not yours"),
                Ok(Some(_)) => {
                    let original = match retry {
                        Some(key) => store.stored_message(&conversation, &user.id, &key).await,
                        None => Ok(None),
                    };
                    match original {
                        Ok(Some(original)) => return out.send_to(conn, ServerMessage::ChatAck(ack(&original)), id),
                        Ok(None) => (ErrorCode::ConversationClosed, "the conversation is closed"),
                        // Internal is retried by clients; closed would drop a stored message's retry.
                        Err(_) => (ErrorCode::Internal, "the conversation could not be read"),
                    }
                }
                Ok(None) => (ErrorCode::NotFound, "no such conversation"),
                Err(_) => (ErrorCode::Internal, "the conversation could not be read"),
            };
            out.error(conn, id, code, message);
        });
    }
}

/// An `error` frame answering request `id`.
pub(crate) fn error_frame(code: ErrorCode, message: &str, id: Option<RequestId>) -> axum::extract::ws::Utf8Bytes {
    let data = ErrorData { code, message: message.to_owned(), ref_id: id.clone(), retry_after_ms: None };
    frame(ServerMessage::Error(data), id)
}

/// Counts an `error` sent, by code.
pub(crate) fn count_error(code: ErrorCode) {
    metrics::counter!("petchat_errors_total", "code" => code.as_str()).increment(1);
    count_out("error", 1);
}

/// Counts `n` frames of type `kind` sent.
pub(super) fn count_out(kind: &'static str, n: usize) {
    if n > 0 {
        metrics::counter!("petchat_messages_out_total", "type" => kind).increment(n as u64);
    }
}

/// The `session.ready` of a new connection of `user`, listing its open conversations.
pub(super) fn session_ready(
    user: &User,
    token_expires_at: Timestamp,
    conversations: &[ConversationRecord],
    past: Vec<SummaryRecord>,
    notifications: NotificationsState,
    limits: &Limits,
) -> SessionReady {
    SessionReady {
        session_id: SessionId::new(uuid::Uuid::new_v4().to_string()).expect("a UUID is a valid id"),
        user: user.clone(),
        heartbeat_interval_ms: limits.heartbeat_interval_ms,
        limits: SessionLimits {
            max_message_bytes: u32::try_from(limits.max_message_bytes).unwrap_or(u32::MAX),
            max_text_chars: u32::try_from(limits.max_text_chars).unwrap_or(u32::MAX),
            messages_per_second: limits.messages_per_second,
        },
        conversations: conversations
            .iter()
            .map(|c| ConversationState { id: c.id.clone(), status: c.status, last_seq: c.last_seq })
            .collect(),
        past_conversations: past.into_iter().map(summary).collect(),
        token_expires_at,
        notifications,
    }
}

/// Whether `user` may see and write to the conversation.
pub(super) fn is_member(user: &User, rec: &ConversationRecord) -> bool {
    rec.has_member(&user.id, user.role)
}

/// The conversation's members other than `me`.
pub(super) fn other_members(rec: &ConversationRecord, me: &UserId) -> Vec<UserId> {
    [Some(rec.customer.id.clone()), rec.agent.as_ref().map(|a| a.id.clone())]
        .into_iter()
        .flatten()
        .filter(|id| id != me)
        .collect()
}

/// The wire form of a stored conversation.
pub(super) fn snapshot(rec: &ConversationRecord) -> Conversation {
    Conversation {
        id: rec.id.clone(),
        customer: rec.customer.clone(),
        agent: rec.agent.clone(),
        status: rec.status,
        last_seq: rec.last_seq,
        created_at: rec.created_at,
        topic: rec.topic.clone(),
        pet_id: rec.pet_id.clone(),
        order_id: rec.order_id.clone(),
        queued_at: rec.queued_at.filter(|_| rec.status == ConversationStatus::Queued),
        closed: rec.closed.clone(),
    }
}

/// The wire form of a conversation in a list.
pub(super) fn summary(record: SummaryRecord) -> ConversationSummary {
    let last_message = record.last_message.map(|m| LastMessage::preview(m.seq, m.author, &m.text, m.sent_at));
    ConversationSummary { conversation: snapshot(&record.conversation), last_message }
}

/// The `chat.ack` of a stored message.
pub(super) fn ack(record: &MessageRecord) -> ChatAck {
    ChatAck {
        conversation_id: record.conversation_id.clone(),
        client_message_id: record.client_message_id.clone(),
        message_id: record.id.clone(),
        seq: record.seq,
        sent_at: record.sent_at,
    }
}
