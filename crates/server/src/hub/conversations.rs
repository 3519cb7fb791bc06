//! A shard's conversations: adoption of new ones, joins and their replay,
//! assignment announcements, presence, and closes.

use std::num::NonZeroU32;

use petchat_protocol::{
    AgentAssigned, CloseReason, ConversationClosed, ConversationId, ConversationSnapshot, ConversationStatus,
    ErrorCode, JoinConversation, LastSeq, Participant, Presence, PresenceStatus, Queued, Receipt, RequestId,
    ServerMessage, Transferred, Typing, User, UserId,
};
use tracing::error;

use super::batch::{Batch, Outcome};
use super::frames::now;
use super::out::Out;
use super::out::{is_member, other_members, snapshot};
use super::pool::PoolCommand;
use super::remote::What;
use super::shard::{Conv, Shard, ShardCommand};
use crate::bus::{ConnId, Skip, Topic};
use crate::store::{ConversationRecord, MessageRecord, ReceiptKind, ReceiptRecord, Write};

/// A join's reads, done off the shard's loop and handed back to it.
#[derive(Debug)]
pub(super) struct JoinRead {
    pub(super) conn: ConnId,
    user: User,
    id: Option<RequestId>,
    conversation: ConversationId,
    after: LastSeq,
    /// The messages read so far, after `after`.
    messages: Vec<MessageRecord>,
    /// What the reads found, or the error to answer with.
    found: Result<Found, (ErrorCode, &'static str)>,
}

#[derive(Debug)]
struct Found {
    rec: ConversationRecord,
    receipts: Vec<ReceiptRecord>,
    /// More messages than one replay sends.
    has_more: bool,
}

impl Shard {
    /// `conversation.join`: reads the conversation, its messages after
    /// `afterSeq` and its receipts off the loop; [`Self::finish_join`] answers.
    pub(super) fn join(&mut self, conn: ConnId, user: &User, id: Option<RequestId>, join: JoinConversation) {
        self.hold_behind_join(conn);
        let after = join.after_seq.unwrap_or_default();
        self.read_for_join(conn, user.clone(), id, join.conversation_id, after, Vec::new());
    }

    fn read_for_join(
        &self,
        conn: ConnId,
        user: User,
        id: Option<RequestId>,
        conversation: ConversationId,
        after: LastSeq,
        mut messages: Vec<MessageRecord>,
    ) {
        let cached = self.conversations.get(&conversation).map(|c| c.rec.clone());
        let (store, internal, limit) = (self.store.clone(), self.internal.clone(), self.limits.max_replay);
        tokio::spawn(async move {
            let found = async {
                let rec = match cached {
                    Some(rec) => rec,
                    None => match store.conversation(&conversation).await {
                        Ok(Some(rec)) => rec,
                        Ok(None) => return Err((ErrorCode::NotFound, "no such conversation")),
                        Err(e) => {
                            error!(error = %e, "reading a conversation failed");
                            return Err((ErrorCode::Internal, "the conversation could not be read"));
                        }
                    },
                };
                if !is_member(&user, &rec) {
                    return Err((ErrorCode::Forbidden, "this conversation is not yours"));
                }
                let from = messages.last().map_or(after, |m| m.seq.into());
                let wanted = (limit + 1).saturating_sub(messages.len());
                match tokio::try_join!(store.messages_after(&conversation, from, wanted), store.receipts(&conversation))
                {
                    Ok((more, receipts)) => {
                        messages.extend(more);
                        let has_more = messages.len() > limit;
                        messages.truncate(limit);
                        Ok(Found { rec, receipts, has_more })
                    }
                    Err(e) => {
                        error!(error = %e, "reading a conversation's messages failed");
                        Err((ErrorCode::Internal, "the messages could not be read"))
                    }
                }
            }
            .await;
            let read = JoinRead { conn, user, id, conversation, after, messages, found };
            if let Some(internal) = internal.upgrade() {
                let _ = internal.send(ShardCommand::Joined(Box::new(read)));
            }
        });
    }

    /// Answers a join whose reads are done, unless messages were committed
    /// since: then it reads those too and returns false (still joining).
    /// From the answer on the connection is subscribed, so it misses nothing
    /// and gets nothing twice.
    pub(super) fn finish_join(&mut self, read: JoinRead) -> bool {
        let JoinRead { conn, user, id, conversation, after, messages, found } = read;
        let Found { rec, receipts, has_more } = match found {
            Ok(found) => found,
            Err((code, message)) => {
                self.out.error(conn, id, code, message);
                return true;
            }
        };
        let mut messages = messages;
        let read_to = messages.last().map_or(after, |m| m.seq.into());
        let held = self.conversations.get(&conversation).map(|c| (c.rec.clone(), c.seq.delivered()));
        if let Some((_, delivered)) = &held
            && !has_more
            && delivered.get() > read_to.get()
        {
            self.read_for_join(conn, user, id, conversation, after, messages);
            return false;
        }
        // Read beyond what was delivered here (stored by another node, on its
        // way): the subscription delivers those, in order.
        if let Some((_, delivered)) = &held {
            messages.retain(|m| m.seq.get() <= delivered.get());
        }
        let held = held.map(|(rec, _)| rec);
        // The shard's record is the fresher one while the conversation is open.
        let rec = held.unwrap_or(rec);
        let open = rec.status != ConversationStatus::Closed;
        if open {
            self.out.bus.subscribe(conn, &conversation);
        }
        let snapshot = ConversationSnapshot { conversation: snapshot(&rec), has_more: Some(has_more) };
        self.out.send_to(conn, ServerMessage::ConversationJoined(snapshot), id);
        for message in messages {
            self.out.send_to(conn, ServerMessage::ChatMessage(message.into()), None);
        }
        for r in receipts.into_iter().filter(|r| r.user_id != user.id) {
            let receipt =
                Receipt { conversation_id: conversation.clone(), up_to_seq: r.up_to_seq, by: r.user_id, at: r.at };
            let message = match r.kind {
                ReceiptKind::Delivered => ServerMessage::MessageDelivered(receipt),
                ReceiptKind::Read => ServerMessage::MessageRead(receipt),
            };
            self.out.send_to(conn, message, None);
        }
        if open {
            for other in other_members(&rec, &user.id) {
                self.send_presence_of(vec![conn], &conversation, &other);
            }
            if rec.status == ConversationStatus::Queued {
                self.tell_pool(PoolCommand::Position { conn, conversation });
            }
        }
        true
    }

    /// Holds a conversation the pool just stored and answers its `conversation.open`.
    pub(super) fn adopt(
        &mut self,
        rec: ConversationRecord,
        conn: ConnId,
        id: Option<RequestId>,
        position: Option<NonZeroU32>,
    ) {
        let conversation = rec.id.clone();
        let agent = rec.agent.clone();
        self.conversations.insert(conversation.clone(), Conv::new(rec));
        if let Some(remote) = &self.remote {
            remote.hold_conversation(&conversation);
            // Until Redis confirms, another node's message is not heard here:
            // the customer is told at once, and the store is read after.
            let (subscribed, internal, conversation) =
                (remote.subscribed(), self.internal.clone(), conversation.clone());
            tokio::spawn(async move {
                subscribed.await;
                if let Some(internal) = internal.upgrade() {
                    let _ = internal.send(ShardCommand::Heard { conversation });
                }
            });
        }
        // A new assignment tells presence itself, after `agent.assigned`.
        self.send_opened(conn, id, &conversation, agent.is_none(), position);
        if let Some(agent) = agent {
            self.announce_assignment(&conversation);
            self.tell_others(
                &conversation,
                What::Assigned { conversation: conversation.clone(), agent: agent.clone(), seq: 0 },
                &[agent.id],
            );
        }
    }

    /// `conversation.opened` to the customer's connection, which is now
    /// subscribed, then where the conversation stands: its queue position, or
    /// (with `with_presence`) whether its agent is online.
    pub(super) fn send_opened(
        &mut self,
        conn: ConnId,
        id: Option<RequestId>,
        conversation: &ConversationId,
        with_presence: bool,
        position: Option<NonZeroU32>,
    ) {
        let Some(conv) = self.conversations.get(conversation) else {
            return self.out.error(conn, id, ErrorCode::NotFound, "the conversation is gone");
        };
        let snapshot = ConversationSnapshot { conversation: snapshot(&conv.rec), has_more: None };
        let agent = conv.rec.agent.clone();
        self.out.bus.subscribe(conn, conversation);
        self.out.send_to(conn, ServerMessage::ConversationOpened(snapshot), id);
        match (agent, position) {
            (Some(agent), _) if with_presence => self.send_presence_of(vec![conn], conversation, &agent.id),
            (Some(_), _) | (None, None) => {}
            (None, Some(position)) => {
                let queued = Queued { conversation_id: conversation.clone(), position };
                self.out.send_to(conn, ServerMessage::ConversationQueued(queued), None);
            }
        }
    }

    /// An assignment was stored (by this node's pool: `here`): the agent's
    /// connections hear the conversation from now on.
    pub(super) fn assigned(&mut self, conversation: &ConversationId, agent: Participant, here: bool) {
        let Some(conv) = self.conversations.get_mut(conversation) else { return };
        conv.rec.agent = Some(agent.clone());
        conv.rec.status = ConversationStatus::Active;
        conv.rec.queued_at = None;
        // What this node delivered: at most the seq at the assignment, which
        // the pool stored before telling the shard.
        let seq = conv.seq.delivered().get();
        self.announce_assignment(conversation);
        if here {
            let agent_id = agent.id.clone();
            let what = What::Assigned { conversation: conversation.clone(), agent, seq };
            self.tell_others(conversation, what, &[agent_id]);
        }
    }

    /// The conversation was re-queued (by this node's pool: `here`): its
    /// former agent no longer hears it.
    pub(super) fn requeued(&mut self, conversation: &ConversationId, agent: &UserId, here: bool) {
        if here {
            // Told whether this node holds it or not: the nodes that do must hear.
            let what = What::Requeued { conversation: conversation.clone(), agent: agent.clone() };
            self.tell_others(conversation, what, std::slice::from_ref(agent));
        }
        let Some(conv) = self.conversations.get_mut(conversation) else { return };
        conv.rec.agent = None;
        conv.rec.status = ConversationStatus::Queued;
        conv.rec.queued_at = Some(now());
        for conn in self.registry.conns_of(agent) {
            self.out.bus.unsubscribe(conn, conversation);
        }
    }

    /// A stored fact, for the other nodes that hold the conversation or
    /// have a connection of one of `users`.
    fn tell_others(&self, conversation: &ConversationId, what: What, users: &[UserId]) {
        if let Some(remote) = &self.remote {
            remote.fact(conversation, what, users);
        }
    }

    /// `agent.assigned` to the conversation's connections and every connection
    /// of the agent, which are subscribed from now on; then presence both ways.
    fn announce_assignment(&mut self, conversation: &ConversationId) {
        let Some(conv) = self.conversations.get(conversation) else { return };
        let Some(agent) = conv.rec.agent.clone() else { return };
        let customer = conv.rec.customer.id.clone();
        let agent_conns = self.registry.conns_of(&agent.id);
        for conn in &agent_conns {
            self.out.bus.subscribe(*conn, conversation);
        }
        let assigned =
            ServerMessage::AgentAssigned(AgentAssigned { conversation_id: conversation.clone(), agent: agent.clone() });
        // Every node that holds it says this to its own connections.
        let topic = Topic::Conversation(conversation.clone());
        self.out.publish_local(&topic, assigned, Skip::Nobody);
        if !agent_conns.is_empty() {
            self.send_presence_of(agent_conns, conversation, &customer);
        }
        let subscribers = self.subscribers_except(conversation, &agent.id);
        if !subscribers.is_empty() {
            self.send_presence_of(subscribers, conversation, &agent.id);
        }
    }

    /// This node's connections subscribed to the conversation, less `user`'s.
    fn subscribers_except(&self, conversation: &ConversationId, user: &UserId) -> Vec<ConnId> {
        let Some(conv) = self.conversations.get(conversation) else { return Vec::new() };
        other_members(&conv.rec, user).iter().flat_map(|member| self.registry.conns_of(member)).collect()
    }

    /// A member's first connection opened or its last closed: the others
    /// hear it (on every node: in a cluster this shard need not hold it).
    pub(super) fn presence(&mut self, conversation: &ConversationId, user: &UserId, status: PresenceStatus) {
        if !self.conversations.contains_key(conversation) && self.remote.is_none() {
            return;
        }
        if status == PresenceStatus::Offline {
            self.stop_typing(conversation, user);
        }
        let presence =
            ServerMessage::Presence(Presence { conversation_id: conversation.clone(), user_id: user.clone(), status });
        self.out.to_conversation(conversation, presence, Skip::User(user));
    }

    /// Whether `user` is online, to `conns`: asked of this node, or in a
    /// cluster of Redis (off the loop; it follows what was queued before).
    pub(super) fn send_presence_of(&self, conns: Vec<ConnId>, conversation: &ConversationId, user: &UserId) {
        match &self.remote {
            _ if self.registry.online(user) => tell_presence(&self.out, &conns, conversation, user, true),
            None => tell_presence(&self.out, &conns, conversation, user, false),
            Some(remote) => {
                let (remote, out, conversation, user) =
                    (remote.clone(), self.out.clone(), conversation.clone(), user.clone());
                tokio::spawn(async move {
                    // Unknown (Redis down) reads as offline, as a node that cannot tell.
                    let online = remote.link().online(&[user.as_str()]).await.is_ok_and(|o| o.first() == Some(&true));
                    tell_presence(&out, &conns, &conversation, &user, online);
                });
            }
        }
    }

    /// The pool stored a transfer: every connection of the customer and of
    /// both agents hears it (on every node), and `from`'s connections no
    /// longer hear the conversation.
    pub(super) fn transferred(
        &mut self,
        conversation: &ConversationId,
        from: Participant,
        to: Option<Participant>,
        customer: &UserId,
    ) {
        let from_id = from.id.clone();
        let users = [Some(customer.clone()), Some(from.id.clone()), to.as_ref().map(|a| a.id.clone())];
        let transferred =
            ServerMessage::ConversationTransferred(Transferred { conversation_id: conversation.clone(), from, to });
        for user in users.into_iter().flatten() {
            self.out.publish(&Topic::User(user), transferred.clone(), Skip::Nobody);
        }
        self.requeued(conversation, &from_id, true);
    }

    /// Stores a close the pool decided (unless the pool stored it:
    /// `stored`), then tells every connection of both members, on every node.
    pub(super) fn close(
        &mut self,
        conversation: &ConversationId,
        closer: Closer,
        members: Vec<UserId>,
        stored: bool,
        batch: &mut Batch<Self>,
    ) {
        if let Some(conv) = self.conversations.remove(conversation) {
            for typist in conv.typing.keys() {
                let stop = ServerMessage::TypingStop(Typing {
                    conversation_id: conversation.clone(),
                    user_id: typist.clone(),
                });
                self.out.to_conversation(conversation, stop, Skip::User(typist));
            }
            if let Some(remote) = &self.remote {
                remote.drop_conversation(conversation);
            }
        }
        let conversation = conversation.clone();
        let Closer { conn, id, by, reason } = closer;
        let write = Write::Close { conversation: conversation.clone(), by: by.clone(), reason, at: now() };
        let tell = move |shard: &mut Self, outcome: Outcome<'_>| {
            if outcome.failed() {
                let Some(conn) = conn else { return error!(conversation = %conversation, "storing a close failed") };
                return shard.out.error(
                    conn,
                    id,
                    ErrorCode::Internal,
                    "the conversation could not be closed; try again",
                );
            }
            let closed = ServerMessage::ConversationClosed(ConversationClosed {
                conversation_id: conversation.clone(),
                by: by.clone(),
                reason,
            });
            // Every connection of both members hears it, subscribed or not;
            // the one that asked hears it as the answer to its request.
            let skip = match conn {
                Some(conn) => {
                    shard.out.send_to(conn, closed.clone(), id);
                    Skip::Conn(conn)
                }
                None => Skip::Nobody,
            };
            for member in &members {
                shard.out.publish_local(&Topic::User(member.clone()), closed.clone(), skip);
            }
            shard.out.bus.unsubscribe_all(&conversation);
            let fact = What::Closed { conversation: conversation.clone(), by, members: members.clone(), reason };
            shard.tell_others(&conversation, fact, &members);
        };
        if stored {
            batch.then(tell);
        } else {
            batch.write_then(write, tell);
        }
    }
}

/// Who closes a conversation, and why: a member's request on `conn` (with its
/// `id`), or the server (`by: system`, no connection).
#[derive(Debug)]
pub(super) struct Closer {
    pub(super) conn: Option<ConnId>,
    pub(super) id: Option<RequestId>,
    pub(super) by: UserId,
    pub(super) reason: CloseReason,
}

/// `presence` of `user` to each of `conns`.
fn tell_presence(out: &Out, conns: &[ConnId], conversation: &ConversationId, user: &UserId, online: bool) {
    let status = if online { PresenceStatus::Online } else { PresenceStatus::Offline };
    for conn in conns {
        let presence = Presence { conversation_id: conversation.clone(), user_id: user.clone(), status };
        out.send_to(*conn, ServerMessage::Presence(presence), None);
    }
}
