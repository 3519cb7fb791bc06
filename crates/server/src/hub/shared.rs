//! A shard's conversations shared with other nodes (SPEC §10): reading one
//! first used here, the messages and facts other nodes send about it,
//! delivering its messages in `seq` order, and filling what Redis lost.
//!
//! A shard of a cluster holds a conversation from the first request of a
//! member here until it closes, and hears its channel meanwhile. Loading it
//! subscribes first and reads after Redis confirmed, so nothing published
//! after the read is missed; what arrives during the read waits for it.

use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use petchat_protocol::{ClientMessage, CloseCode, ConversationId, ConversationStatus, LastSeq, ServerMessage};
use tracing::{debug, error};

use super::batch::Batch;
use super::frames::frame;
use super::remote::{Envelope, What};
use super::sequence::{Ready, Sequence};
use super::shard::{Conv, Shard, ShardCommand};
use crate::bus::{ConnId, Skip};
use crate::store::{ConversationRecord, MessageRecord};

/// How long a message after a gap waits for the late one before the store is read.
const GAP_WAIT: Duration = Duration::from_millis(100);

/// How many messages one read after a gap or an outage takes.
const FILL_READ: usize = 1_000;

/// The most messages from other nodes kept for a conversation being read;
/// beyond, they are read from the store after it.
const EARLY_MESSAGES: usize = 1_024;

/// The seq an assignment among the commands waiting for a read was made at.
fn assigned_at(command: &ShardCommand) -> Option<LastSeq> {
    match command {
        ShardCommand::Assigned { seq, .. } => Some(*seq),
        ShardCommand::Remote(envelope) => match &envelope.what {
            What::Assigned { seq, .. } => LastSeq::new(*seq).ok(),
            _ => None,
        },
        _ => None,
    }
}

/// A conversation being read because it was first used here.
#[derive(Debug, Default)]
pub(super) struct Loading {
    /// Connections whose requests wait for it.
    conns: Vec<ConnId>,
    /// Other commands that wait for it.
    pub(super) then: Vec<ShardCommand>,
    /// Messages from other nodes that came meanwhile.
    early: Vec<Envelope>,
    /// More came than `early` keeps.
    overflowed: bool,
}

impl Shard {
    /// The conversation a command needs read first: in a cluster, one this
    /// shard does not hold.
    pub(super) fn to_load(&self, command: &ShardCommand) -> Option<ConversationId> {
        self.remote.as_ref()?;
        let conversation = match command {
            ShardCommand::Request { message, .. } => match message {
                ClientMessage::ConversationJoin(m) => &m.conversation_id,
                ClientMessage::ChatSend(m) => &m.conversation_id,
                ClientMessage::MessageDelivered(m) | ClientMessage::MessageRead(m) => &m.conversation_id,
                ClientMessage::TypingStart(m) | ClientMessage::TypingStop(m) => &m.conversation_id,
                _ => return None,
            },
            ShardCommand::Opened { conversation, .. } | ShardCommand::Assigned { conversation, .. } => conversation,
            ShardCommand::Remote(envelope) => match &envelope.what {
                What::Assigned { conversation, .. } => conversation,
                _ => return None,
            },
            _ => return None,
        };
        (!self.conversations.contains_key(conversation)).then(|| conversation.clone())
    }

    /// Holds `command` behind a read of the conversation, starting the read
    /// unless one is under way.
    pub(super) fn load(&mut self, conversation: ConversationId, command: ShardCommand, front: bool) {
        let started = self.loading.contains_key(&conversation);
        let loading = self.loading.entry(conversation.clone()).or_default();
        match command {
            ShardCommand::Request { conn, .. } => {
                loading.conns.push(conn);
                self.hold_with(conn, command, front);
            }
            command => loading.then.push(command),
        }
        if started {
            return;
        }
        let Some(remote) = self.remote.clone() else { return };
        remote.hold_conversation(&conversation);
        let (store, internal) = (self.store.clone(), self.internal.clone());
        let subscribed = remote.subscribed();
        tokio::spawn(async move {
            subscribed.await;
            let found = store.conversation(&conversation).await.map_err(|e| {
                error!(error = %e, conversation = %conversation, "reading a conversation used here failed");
            });
            if let Some(internal) = internal.upgrade() {
                let _ = internal.send(ShardCommand::Loaded { conversation, found });
            }
        });
    }

    /// A conversation first used here was read: held if open, then what waited goes on.
    pub(super) fn loaded(
        &mut self,
        conversation: ConversationId,
        found: Result<Option<ConversationRecord>, ()>,
        batch: &mut Batch<Self>,
    ) {
        let Some(mut loading) = self.loading.remove(&conversation) else { return };
        match found {
            Ok(Some(rec)) if rec.status != ConversationStatus::Closed => {
                debug!(conversation = %conversation, shard = self.index, last_seq = rec.last_seq.get(), "holding a conversation used here");
                // Read for an assignment: what was sent since it, before this
                // node heard the channel, is read from the store for the agent.
                let assigned_at = loading.then.iter().filter_map(assigned_at).min();
                let stored = rec.last_seq;
                let mut conv = Conv::new(rec);
                let behind = assigned_at.filter(|&seq| seq < stored);
                if let Some(seq) = behind {
                    conv.seq = Sequence::new(seq);
                }
                self.conversations.insert(conversation.clone(), conv);
                // The assignment first: its agent's connections hear the
                // conversation from now on, the messages that came meanwhile
                // included.
                for command in std::mem::take(&mut loading.then) {
                    self.decide(command, batch);
                }
                for early in loading.early {
                    self.remote(early);
                }
                if loading.overflowed || behind.is_some() {
                    self.fill_from_store(&conversation, false);
                }
            }
            // Closed, unknown or unreadable: the requests get their answer
            // from `decide`; a fact about it is moot (and would be read again).
            _ => {
                if let Some(remote) = &self.remote {
                    remote.drop_conversation(&conversation);
                }
                loading.then.retain(|command| !matches!(command, ShardCommand::Remote(_)));
            }
        }
        for command in loading.then {
            self.decide(command, batch);
        }
        for conn in loading.conns {
            self.release(conn, batch, Some(&conversation));
        }
    }

    /// Another node's message or fact.
    pub(super) fn remote(&mut self, envelope: Envelope) {
        if let What::Message { conversation, seq } = &envelope.what {
            if let Some(loading) = self.loading.get_mut(conversation) {
                if loading.early.len() < EARLY_MESSAGES {
                    loading.early.push(envelope);
                } else {
                    loading.overflowed = true;
                }
                return;
            }
            let (conversation, seq) = (conversation.clone(), *seq);
            return self.deliver_in_order(&conversation, seq, Ready { frame: envelope.frame, sender: None });
        }
        // Read first (not yet marked seen: it acts once the read is done).
        if let Some(conversation) = self.to_load(&ShardCommand::Remote(Box::new(envelope.clone()))) {
            return self.load(conversation, ShardCommand::Remote(Box::new(envelope)), false);
        }
        if !self.seen.first(&envelope) {
            return;
        }
        match envelope.what {
            What::Assigned { conversation, agent, .. } => self.assigned(&conversation, agent, false),
            What::Requeued { conversation, agent } => self.requeued(&conversation, &agent, false),
            What::Closed { conversation, by, members, reason } => {
                self.closed_elsewhere(&conversation, by, reason, members);
            }
            What::Message { .. } | What::Frame { .. } | What::Event { .. } => {}
        }
    }

    /// Delivers message `seq` of the conversation once every earlier one was
    /// delivered here; a gap is filled from the store if it lasts.
    pub(super) fn deliver_in_order(&mut self, conversation: &ConversationId, seq: u64, ready: Ready) {
        let Some(conv) = self.conversations.get_mut(conversation) else {
            // Not held (closed meanwhile): only an ack can still be due.
            if let Some((conn, ack)) = ready.sender {
                self.out.bus.send_to(conn, &ack);
            }
            return;
        };
        let out = conv.seq.offer(seq, ready);
        let gap = conv.seq.has_gap();
        self.send_in_order(conversation, out);
        if gap {
            self.schedule_gap_check(conversation);
        }
    }

    fn send_in_order(&mut self, conversation: &ConversationId, out: Vec<Ready>) {
        if let Some(conv) = self.conversations.get_mut(conversation)
            && conv.rec.last_seq.get() < conv.seq.delivered().get()
        {
            conv.rec.last_seq = conv.seq.delivered();
        }
        for ready in out {
            let skip = match &ready.sender {
                Some((conn, ack)) => {
                    self.out.bus.send_to(*conn, ack);
                    super::out::count_out("chat.ack", 1);
                    Skip::Conn(*conn)
                }
                None => Skip::Nobody,
            };
            if !ready.frame.is_empty() {
                self.out.publish_frame_local(conversation, &ready.frame, "chat.message", skip);
            }
        }
    }

    fn schedule_gap_check(&self, conversation: &ConversationId) {
        let (internal, conversation) = (self.internal.clone(), conversation.clone());
        tokio::spawn(async move {
            tokio::time::sleep(GAP_WAIT).await;
            if let Some(internal) = internal.upgrade() {
                let _ = internal.send(ShardCommand::GapCheck { conversation });
            }
        });
    }

    /// A gap lasted: the missing messages are read from the store.
    pub(super) fn gap_check(&mut self, conversation: &ConversationId) {
        if self.conversations.get(conversation).is_some_and(|conv| conv.seq.has_gap()) {
            metrics::counter!("petchat_cluster_gap_fills_total").increment(1);
            self.fill_from_store(conversation, false);
        }
    }

    /// A conversation adopted here is heard from Redis now: what was stored
    /// before (by a member on another node, told of it by the customer or the
    /// assignment) is read once, so that nothing falls between.
    pub(super) fn heard(&mut self, conversation: &ConversationId) {
        self.fill_from_store(conversation, false);
    }

    /// Reads the conversation's messages after the last one delivered here
    /// (and, with `refresh`, the conversation itself) off the loop; asked
    /// while a read is under way, another follows it.
    fn fill_from_store(&mut self, conversation: &ConversationId, refresh: bool) {
        let Some(conv) = self.conversations.get_mut(conversation) else { return };
        if conv.filling && !refresh {
            conv.fill_again = true;
            return;
        }
        conv.filling = true;
        let after = conv.seq.delivered();
        let (store, internal, conversation) = (self.store.clone(), self.internal.clone(), conversation.clone());
        tokio::spawn(async move {
            let rec = if refresh {
                match store.conversation(&conversation).await {
                    Ok(rec) => rec,
                    Err(e) => {
                        error!(error = %e, conversation = %conversation, "catching up: reading a conversation failed");
                        None
                    }
                }
            } else {
                None
            };
            let messages = store.messages_after(&conversation, after, FILL_READ).await.unwrap_or_else(|e| {
                error!(error = %e, conversation = %conversation, "reading missed messages failed");
                Vec::new()
            });
            if let Some(internal) = internal.upgrade() {
                let _ = internal.send(ShardCommand::Filled { conversation, messages, rec });
            }
        });
    }

    /// Missed messages were read: delivered in order; after an outage, what
    /// changed about the conversation is told too.
    pub(super) fn filled(
        &mut self,
        conversation: &ConversationId,
        messages: Vec<MessageRecord>,
        rec: Option<ConversationRecord>,
    ) {
        let full = messages.len() >= FILL_READ;
        let Some(conv) = self.conversations.get_mut(conversation) else { return };
        conv.filling = false;
        let again = std::mem::take(&mut conv.fill_again);
        let read = messages
            .into_iter()
            .map(|m| (m.seq.get(), frame(ServerMessage::ChatMessage(m.into()), None)))
            .collect::<Vec<(u64, Utf8Bytes)>>();
        let out = conv.seq.fill(read);
        let gap = conv.seq.has_gap();
        self.send_in_order(conversation, out);
        if let Some(rec) = rec {
            self.reconcile(rec);
        }
        if full || again {
            self.fill_from_store(conversation, false);
        } else if gap {
            self.schedule_gap_check(conversation);
        }
    }

    /// After an outage, a fresh read of the conversation: the assignment
    /// changes and the close this node missed are told as if heard.
    fn reconcile(&mut self, rec: ConversationRecord) {
        let Some(held_agent) = self.conversations.get(&rec.id).map(|conv| conv.rec.agent.clone()) else { return };
        let conversation = rec.id.clone();
        if rec.status == ConversationStatus::Closed {
            // Who closed it is not known here: the members' connections
            // resume (1012) and their join says it is closed.
            self.conversations.remove(&conversation);
            if let Some(remote) = &self.remote {
                remote.drop_conversation(&conversation);
            }
            let members = [Some(rec.customer.id.clone()), held_agent.map(|a| a.id)];
            for member in members.into_iter().flatten() {
                for conn in self.registry.conns_of(&member) {
                    self.out.bus.kick(
                        conn,
                        CloseCode::SERVICE_RESTART,
                        "missed a close while the cluster link was down: resume",
                    );
                }
            }
            self.out.bus.unsubscribe_all(&conversation);
            return;
        }
        match (held_agent, rec.agent) {
            (Some(old), new) if new.as_ref().is_none_or(|new| new.id != old.id) => {
                self.requeued(&conversation, &old.id, false);
                if let Some(new) = new {
                    self.assigned(&conversation, new, false);
                }
            }
            (None, Some(new)) => self.assigned(&conversation, new, false),
            _ => {}
        }
    }

    /// The link is back: every conversation held here is read again.
    pub(super) fn catch_up(&mut self) {
        let held: Vec<ConversationId> = self.conversations.keys().cloned().collect();
        debug!(shard = self.index, conversations = held.len(), "catching up after the link came back");
        for conversation in held {
            self.fill_from_store(&conversation, true);
        }
    }

    /// Another node stored a close: this node's connections of its members hear it.
    pub(super) fn closed_elsewhere(
        &mut self,
        conversation: &ConversationId,
        by: petchat_protocol::UserId,
        reason: petchat_protocol::CloseReason,
        members: Vec<petchat_protocol::UserId>,
    ) {
        if self.conversations.remove(conversation).is_some()
            && let Some(remote) = &self.remote
        {
            remote.drop_conversation(conversation);
        }
        let closed = ServerMessage::ConversationClosed(petchat_protocol::ConversationClosed {
            conversation_id: conversation.clone(),
            by,
            reason,
        });
        for member in members {
            self.out.to_user_local(&member, closed.clone());
        }
        self.out.bus.unsubscribe_all(conversation);
    }
}
