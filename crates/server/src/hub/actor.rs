//! The hub's task: conversation state, assignment, and the batch loop that
//! commits before it speaks.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use petchat_protocol::{
    AgentAssigned, AgentStatus, ChatAck, ClientMessage, ClientMessageId, CloseCode, Conversation, ConversationClosed,
    ConversationId, ConversationSnapshot, ConversationState, ConversationStatus, ErrorCode, ErrorData,
    JoinConversation, LastSeq, MessageId, Notification, OpenConversation, Participant, Presence, PresenceStatus,
    Queued, Receipt, ReceiptUpTo, RequestId, Role, SendChat, ServerMessage, SessionId, SessionLimits, SessionReady,
    Typing, User, UserId,
};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use super::Command;
use super::frames::{frame, now};
use crate::bus::{Bus, ConnId, ConnSink, Skip, Topic};
use crate::config::Limits;
use crate::store::{Applied, ConversationRecord, MessageRecord, ReceiptKind, Store, StoreError, Write};

/// The state of one open conversation.
struct Conv {
    rec: ConversationRecord,
    /// Members typing now, with the generation of their last `typing.start`.
    typing: HashMap<UserId, u64>,
}

/// An agent the hub knows: connected, or holding conversations.
struct Agent {
    name: String,
    /// The agent asked to be in the pool (`agent.status`).
    available: bool,
    /// At least one connection is open.
    online: bool,
    /// Open conversations assigned to it.
    active: BTreeSet<ConversationId>,
    /// Ties of least-loaded assignment go to the longest idle.
    idle_since: Instant,
    /// Bumped on every connect and disconnect, so a stale grace timer does nothing.
    grace_generation: u64,
}

/// What a write's commit did, for the effect that waited on it.
enum Outcome<'a> {
    /// The effect had no write.
    None,
    /// The write's result.
    Applied(&'a Applied),
    /// The batch's transaction failed.
    Failed,
}

type Effect = Box<dyn FnOnce(&mut Actor, Outcome<'_>) + Send>;

/// What one round of commands produced: writes to commit, then effects to run.
#[derive(Default)]
struct Batch {
    writes: Vec<Write>,
    effects: Vec<(Option<usize>, Effect)>,
    joins: Vec<(ConnId, Option<RequestId>, JoinConversation)>,
}

impl Batch {
    fn then(&mut self, effect: impl FnOnce(&mut Actor, Outcome<'_>) + Send + 'static) {
        self.effects.push((None, Box::new(effect)));
    }

    fn write_then(&mut self, write: Write, effect: impl FnOnce(&mut Actor, Outcome<'_>) + Send + 'static) {
        self.writes.push(write);
        self.effects.push((Some(self.writes.len() - 1), Box::new(effect)));
    }
}

pub(super) struct Actor {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    limits: Limits,
    /// Timers post their expiry back through this; weak, so the hub still
    /// stops once every connection's handle is gone.
    commands: mpsc::WeakSender<Command>,
    /// Every connection of this node and its user.
    conns: HashMap<ConnId, User>,
    /// Connections per user: presence, and the per-user cap.
    users: HashMap<UserId, usize>,
    /// Open conversations (queued or active).
    conversations: HashMap<ConversationId, Conv>,
    /// A customer's open conversation (`conversation.open` returns it).
    customer_open: HashMap<UserId, ConversationId>,
    agents: HashMap<UserId, Agent>,
    /// Conversations waiting for an agent, first served first.
    queue: VecDeque<ConversationId>,
    typing_generation: u64,
}

impl Actor {
    pub(super) async fn load(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        limits: Limits,
        commands: mpsc::WeakSender<Command>,
    ) -> Result<Self, StoreError> {
        let mut actor = Self {
            store,
            bus,
            limits,
            commands,
            conns: HashMap::new(),
            users: HashMap::new(),
            conversations: HashMap::new(),
            customer_open: HashMap::new(),
            agents: HashMap::new(),
            queue: VecDeque::new(),
            typing_generation: 0,
        };
        actor.reload().await?;
        // Agents holding conversations from before a restart are offline until
        // they reconnect: their grace period starts now.
        let offline: Vec<UserId> = actor.agents.keys().cloned().collect();
        for agent in offline {
            actor.start_grace(&agent);
        }
        Ok(actor)
    }

    /// Rebuilds the open conversations, the queue and the agents' loads from the store.
    async fn reload(&mut self) -> Result<(), StoreError> {
        let open = self.store.open_conversations().await?;
        self.conversations.clear();
        self.customer_open.clear();
        self.queue.clear();
        for agent in self.agents.values_mut() {
            agent.active.clear();
        }
        for rec in open {
            self.customer_open.insert(rec.customer.id.clone(), rec.id.clone());
            match (&rec.agent, rec.status) {
                (Some(agent), ConversationStatus::Active) => {
                    self.agents
                        .entry(agent.id.clone())
                        .or_insert_with(|| new_agent(&agent.name))
                        .active
                        .insert(rec.id.clone());
                }
                _ => self.queue.push_back(rec.id.clone()),
            }
            self.conversations.insert(rec.id.clone(), Conv { rec, typing: HashMap::new() });
        }
        Ok(())
    }

    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(first) = rx.recv().await {
            let mut commands = vec![first];
            while commands.len() < self.limits.commit_batch.max(1) {
                match rx.try_recv() {
                    Ok(command) => commands.push(command),
                    Err(_) => break,
                }
            }
            let mut batch = Batch::default();
            for command in commands {
                // A connection's requests are answered in order: one that
                // follows a join of the same batch waits for that join's
                // reply and replay, or its ack would overtake them.
                if let Command::Request { conn, .. } = &command
                    && batch.joins.iter().any(|(joining, _, _)| joining == conn)
                {
                    self.commit(std::mem::take(&mut batch)).await;
                }
                self.decide(command, &mut batch);
            }
            self.commit(batch).await;
        }
        debug!("hub stopped");
    }

    /// Commits the batch's writes in one transaction, then runs its effects in order.
    async fn commit(&mut self, batch: Batch) {
        let Batch { writes, effects, joins } = batch;
        let results = if writes.is_empty() {
            Ok(Vec::new())
        } else {
            let started = Instant::now();
            let result = self.store.apply(&writes).await;
            metrics::histogram!("petchat_store_commit_seconds").record(started.elapsed().as_secs_f64());
            metrics::histogram!("petchat_store_commit_writes").record(writes.len() as f64);
            result
        };
        let failed = results.is_err();
        if let Err(e) = &results {
            error!(error = %e, writes = writes.len(), "store commit failed");
        }
        for (index, effect) in effects {
            let outcome = match (index, &results) {
                (None, _) => Outcome::None,
                (Some(i), Ok(results)) => results.get(i).map_or(Outcome::Failed, Outcome::Applied),
                (Some(_), Err(_)) => Outcome::Failed,
            };
            effect(self, outcome);
        }
        if failed && let Err(e) = self.reload().await {
            error!(error = %e, "reloading state after a failed commit failed");
        }
        // Joins read after the commit and after this batch's messages went
        // out, so a joining connection misses nothing and gets nothing twice.
        for (conn, id, join) in joins {
            self.join(conn, id, join).await;
        }
    }

    fn decide(&mut self, command: Command, batch: &mut Batch) {
        match command {
            Command::Connect { conn, user, token_expires_at, sink, reply } => {
                let answer = self.connect(conn, user, token_expires_at, sink);
                let _ = reply.send(answer);
            }
            Command::Disconnect { conn } => self.disconnect(conn),
            Command::Request { conn, id, message } => {
                let Some(user) = self.conns.get(&conn).cloned() else { return };
                self.request(conn, &user, id, message, batch);
            }
            Command::GraceExpired { agent, generation } => self.grace_expired(&agent, generation, batch),
            Command::TypingExpired { conversation, user, generation } => {
                self.typing_expired(&conversation, &user, generation);
            }
        }
    }

    // ----- connections ------------------------------------------------------

    fn connect(
        &mut self,
        conn: ConnId,
        user: User,
        token_expires_at: petchat_protocol::Timestamp,
        sink: ConnSink,
    ) -> Result<(), (CloseCode, String)> {
        let retry = petchat_protocol::close::reason_with_retry_hint;
        if self.conns.len() >= self.limits.max_connections {
            return Err((CloseCode::TRY_AGAIN_LATER, retry("server at capacity", 5_000)));
        }
        let count = self.users.get(&user.id).copied().unwrap_or(0);
        if count >= self.limits.max_connections_per_user {
            return Err((CloseCode::TRY_AGAIN_LATER, retry("too many connections for this user", 10_000)));
        }
        self.bus.attach(conn, &user.id, sink);
        self.conns.insert(conn, user.clone());
        self.users.insert(user.id.clone(), count + 1);
        if user.role == Role::Agent {
            let agent = self.agents.entry(user.id.clone()).or_insert_with(|| new_agent(&user.name));
            agent.online = true;
            agent.name.clone_from(&user.name);
            agent.grace_generation += 1;
        }
        self.send_to(conn, ServerMessage::SessionReady(self.session_ready(&user, token_expires_at)), None);
        if count == 0 {
            self.announce_presence(&user, PresenceStatus::Online);
        }
        debug!(conn, user = %user.id, role = user.role.as_str(), "connected");
        Ok(())
    }

    fn session_ready(&self, user: &User, token_expires_at: petchat_protocol::Timestamp) -> SessionReady {
        let conversations = self
            .member_conversations(user)
            .into_iter()
            .filter_map(|id| self.conversations.get(&id))
            .map(|c| ConversationState { id: c.rec.id.clone(), status: c.rec.status, last_seq: c.rec.last_seq })
            .collect();
        SessionReady {
            session_id: SessionId::new(uuid::Uuid::new_v4().to_string()).expect("a UUID is a valid id"),
            user: user.clone(),
            heartbeat_interval_ms: self.limits.heartbeat_interval_ms,
            limits: SessionLimits {
                max_message_bytes: u32::try_from(self.limits.max_message_bytes).unwrap_or(u32::MAX),
                max_text_chars: u32::try_from(self.limits.max_text_chars).unwrap_or(u32::MAX),
                messages_per_second: self.limits.messages_per_second,
            },
            conversations,
            token_expires_at,
        }
    }

    fn disconnect(&mut self, conn: ConnId) {
        self.bus.detach(conn);
        let Some(user) = self.conns.remove(&conn) else { return };
        let remaining = self.users.get(&user.id).copied().unwrap_or(1) - 1;
        if remaining > 0 {
            self.users.insert(user.id.clone(), remaining);
            return;
        }
        self.users.remove(&user.id);
        for id in self.member_conversations(&user) {
            self.stop_typing(&id, &user.id);
        }
        self.announce_presence(&user, PresenceStatus::Offline);
        if user.role == Role::Agent {
            if let Some(agent) = self.agents.get_mut(&user.id) {
                agent.online = false;
            }
            self.start_grace(&user.id);
        }
        debug!(conn, user = %user.id, "last connection of the user closed");
    }

    fn start_grace(&mut self, agent_id: &UserId) {
        let Some(agent) = self.agents.get_mut(agent_id) else { return };
        agent.grace_generation += 1;
        let generation = agent.grace_generation;
        let commands = self.commands.clone();
        let agent = agent_id.clone();
        let grace = self.limits.agent_grace();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            if let Some(commands) = commands.upgrade() {
                let _ = commands.send(Command::GraceExpired { agent, generation }).await;
            }
        });
    }

    fn grace_expired(&mut self, agent_id: &UserId, generation: u64, batch: &mut Batch) {
        let Some(agent) = self.agents.get_mut(agent_id) else { return };
        if agent.online || agent.grace_generation != generation {
            return;
        }
        agent.available = false;
        let held: Vec<ConversationId> = std::mem::take(&mut agent.active).into_iter().collect();
        if held.is_empty() {
            self.agents.remove(agent_id);
            return;
        }
        info!(agent = %agent_id, conversations = held.len(), "agent grace period over: re-queueing");
        let at = now();
        // They have waited longest: they go to the front, in their order.
        for id in held.iter().rev() {
            self.queue.push_front(id.clone());
        }
        for id in held {
            let Some(conv) = self.conversations.get_mut(&id) else { continue };
            conv.rec.agent = None;
            conv.rec.status = ConversationStatus::Queued;
            conv.rec.queued_at = Some(at);
            let customer = conv.rec.customer.id.clone();
            for conn in self.conns_of(agent_id) {
                self.bus.unsubscribe(conn, &id);
            }
            batch.write_then(
                Write::Assign { conversation: id.clone(), agent: None, status: ConversationStatus::Queued, at },
                move |actor, outcome| {
                    if matches!(outcome, Outcome::Failed) {
                        return;
                    }
                    actor.publish_user(
                        &customer,
                        ServerMessage::Notification(Notification {
                            kind: "conversation.requeued".into(),
                            title: "Your agent was disconnected".into(),
                            body: "We are finding another agent for you.".into(),
                            link: None,
                        }),
                    );
                },
            );
        }
        self.serve_queue(batch);
        self.announce_queue_positions(batch);
    }

    // ----- requests ---------------------------------------------------------

    fn request(&mut self, conn: ConnId, user: &User, id: Option<RequestId>, message: ClientMessage, batch: &mut Batch) {
        match message {
            ClientMessage::ConversationOpen(open) => self.open(conn, user, id, open, batch),
            ClientMessage::ConversationJoin(join) => batch.joins.push((conn, id, join)),
            ClientMessage::ConversationLeave(leave) => self.bus.unsubscribe(conn, &leave.conversation_id),
            ClientMessage::ConversationClose(close) => self.close(conn, user, id, &close.conversation_id, batch),
            ClientMessage::ChatSend(send) => self.chat_send(conn, user, id, send, batch),
            ClientMessage::MessageDelivered(r) => self.receipt(conn, user, id, r, ReceiptKind::Delivered, batch),
            ClientMessage::MessageRead(r) => self.receipt(conn, user, id, r, ReceiptKind::Read, batch),
            ClientMessage::TypingStart(t) => self.typing_start(conn, user, id, &t.conversation_id),
            ClientMessage::TypingStop(t) => {
                if self.open_member_conversation(conn, user, &id, &t.conversation_id).is_some() {
                    self.stop_typing(&t.conversation_id, &user.id);
                }
            }
            ClientMessage::AgentStatus(status) => self.agent_status(conn, user, id, status.available, batch),
            ClientMessage::Ping(_) => self.send_to(conn, ServerMessage::Pong(Default::default()), id),
            // The connection answers it itself (`token_clock`): the token is not the hub's.
            ClientMessage::SessionRefresh(_) => {}
        }
    }

    fn open(&mut self, conn: ConnId, user: &User, id: Option<RequestId>, open: OpenConversation, batch: &mut Batch) {
        if user.role != Role::Customer {
            return self.error(conn, id, ErrorCode::Forbidden, "only customers open conversations");
        }
        if let Some(existing) = self.customer_open.get(&user.id).cloned() {
            batch.then(move |actor, _| actor.send_opened(conn, id, &existing, true));
            return;
        }
        let at = now();
        let mut rec = ConversationRecord {
            id: ConversationId::new(uuid::Uuid::now_v7().to_string()).expect("a UUID is a valid id"),
            customer: Participant { id: user.id.clone(), name: user.name.clone() },
            agent: None,
            status: ConversationStatus::Queued,
            last_seq: LastSeq::NONE,
            created_at: at,
            queued_at: Some(at),
            topic: open.topic,
            pet_id: open.pet_id,
            order_id: open.order_id,
        };
        let assigned = self.pick_agent();
        if let Some(agent_id) = &assigned {
            let agent = self.agents.get_mut(agent_id).expect("picked from the pool");
            agent.active.insert(rec.id.clone());
            agent.idle_since = Instant::now();
            rec.agent = Some(Participant { id: agent_id.clone(), name: agent.name.clone() });
            rec.status = ConversationStatus::Active;
            rec.queued_at = None;
        } else {
            self.queue.push_back(rec.id.clone());
        }
        let conversation = rec.id.clone();
        self.customer_open.insert(user.id.clone(), conversation.clone());
        self.conversations.insert(conversation.clone(), Conv { rec: rec.clone(), typing: HashMap::new() });
        info!(conversation = %conversation, customer = %user.id, agent = ?assigned.as_ref().map(UserId::as_str), "conversation opened");
        batch.write_then(Write::CreateConversation(rec), move |actor, outcome| {
            if matches!(outcome, Outcome::Failed) {
                return actor.error(conn, id, ErrorCode::Internal, "the conversation could not be stored; try again");
            }
            // A new assignment tells presence itself, after `agent.assigned`.
            actor.send_opened(conn, id, &conversation, assigned.is_none());
            if assigned.is_some() {
                actor.announce_assignment(&conversation);
            }
        });
    }

    /// `conversation.opened` to the customer's connection, which is now
    /// subscribed, then where the conversation stands: its queue position, or
    /// (with `with_presence`) whether its agent is online.
    fn send_opened(&mut self, conn: ConnId, id: Option<RequestId>, conversation: &ConversationId, with_presence: bool) {
        let Some(conv) = self.conversations.get(conversation) else {
            return self.error(conn, id, ErrorCode::NotFound, "the conversation is gone");
        };
        let snapshot = ConversationSnapshot { conversation: snapshot(&conv.rec), has_more: None };
        let agent = conv.rec.agent.clone();
        self.bus.subscribe(conn, conversation);
        self.send_to(conn, ServerMessage::ConversationOpened(snapshot), id);
        match agent {
            Some(agent) if with_presence => self.send_presence_of(conn, conversation, &agent.id),
            Some(_) => {}
            None => {
                if let Some(position) = self.queue_position(conversation) {
                    let queued = Queued { conversation_id: conversation.clone(), position };
                    self.send_to(conn, ServerMessage::ConversationQueued(queued), None);
                }
            }
        }
    }

    async fn join(&mut self, conn: ConnId, id: Option<RequestId>, join: JoinConversation) {
        let Some(user) = self.conns.get(&conn).cloned() else { return };
        let conversation = join.conversation_id;
        let rec = match self.conversations.get(&conversation) {
            Some(conv) => conv.rec.clone(),
            None => match self.store.conversation(&conversation).await {
                Ok(Some(rec)) => rec,
                Ok(None) => return self.error(conn, id, ErrorCode::NotFound, "no such conversation"),
                Err(e) => {
                    error!(error = %e, "reading a conversation failed");
                    return self.error(conn, id, ErrorCode::Internal, "the conversation could not be read");
                }
            },
        };
        if !is_member(&user, &rec) {
            return self.error(conn, id, ErrorCode::Forbidden, "this conversation is not yours");
        }
        let after = join.after_seq.unwrap_or_default();
        let limit = self.limits.max_replay;
        let (messages, receipts) = match tokio::try_join!(
            self.store.messages_after(&conversation, after, limit + 1),
            self.store.receipts(&conversation)
        ) {
            Ok(read) => read,
            Err(e) => {
                error!(error = %e, "reading a conversation's messages failed");
                return self.error(conn, id, ErrorCode::Internal, "the messages could not be read");
            }
        };
        let has_more = messages.len() > limit;
        if rec.status != ConversationStatus::Closed {
            self.bus.subscribe(conn, &conversation);
        }
        let snapshot = ConversationSnapshot { conversation: snapshot(&rec), has_more: Some(has_more) };
        self.send_to(conn, ServerMessage::ConversationJoined(snapshot), id);
        for message in messages.into_iter().take(limit) {
            self.send_to(conn, ServerMessage::ChatMessage(message.into()), None);
        }
        for r in receipts.into_iter().filter(|r| r.user_id != user.id) {
            let receipt =
                Receipt { conversation_id: conversation.clone(), up_to_seq: r.up_to_seq, by: r.user_id, at: r.at };
            let message = match r.kind {
                ReceiptKind::Delivered => ServerMessage::MessageDelivered(receipt),
                ReceiptKind::Read => ServerMessage::MessageRead(receipt),
            };
            self.send_to(conn, message, None);
        }
        if rec.status != ConversationStatus::Closed {
            for other in other_members(&rec, &user.id) {
                self.send_presence_of(conn, &conversation, &other);
            }
            if let Some(position) = self.queue_position(&conversation) {
                self.send_to(
                    conn,
                    ServerMessage::ConversationQueued(Queued { conversation_id: conversation, position }),
                    None,
                );
            }
        }
    }

    fn close(
        &mut self,
        conn: ConnId,
        user: &User,
        id: Option<RequestId>,
        conversation: &ConversationId,
        batch: &mut Batch,
    ) {
        if self.open_member_conversation(conn, user, &id, conversation).is_none() {
            return;
        }
        let conv = self.conversations.remove(conversation).expect("checked above");
        self.customer_open.remove(&conv.rec.customer.id);
        self.queue.retain(|c| c != conversation);
        let agent = conv.rec.agent.clone();
        if let Some(agent) = &agent
            && let Some(state) = self.agents.get_mut(&agent.id)
        {
            state.active.remove(conversation);
            state.idle_since = Instant::now();
        }
        for typist in conv.typing.keys() {
            let stop =
                ServerMessage::TypingStop(Typing { conversation_id: conversation.clone(), user_id: typist.clone() });
            self.publish(&Topic::Conversation(conversation.clone()), stop, None, Skip::User(typist));
        }
        let by = user.id.clone();
        let conversation = conversation.clone();
        let customer = conv.rec.customer.id.clone();
        info!(conversation = %conversation, by = %by, "conversation closed");
        batch.write_then(
            Write::Close { conversation: conversation.clone(), by: by.clone(), at: now() },
            move |actor, outcome| {
                if matches!(outcome, Outcome::Failed) {
                    return actor.error(
                        conn,
                        id,
                        ErrorCode::Internal,
                        "the conversation could not be closed; try again",
                    );
                }
                let closed =
                    ServerMessage::ConversationClosed(ConversationClosed { conversation_id: conversation.clone(), by });
                // Every connection of both members hears it, subscribed or not.
                let recipients: Vec<UserId> = [Some(customer), agent.map(|a| a.id)].into_iter().flatten().collect();
                actor.send_to(conn, closed.clone(), id);
                for member in recipients {
                    actor.publish(&Topic::User(member), closed.clone(), None, Skip::Conn(conn));
                }
                actor.bus.unsubscribe_all(&conversation);
            },
        );
        self.serve_queue(batch);
        self.announce_queue_positions(batch);
    }

    fn chat_send(&mut self, conn: ConnId, user: &User, id: Option<RequestId>, send: SendChat, batch: &mut Batch) {
        let retry = Some(&send.client_message_id);
        if self.member_conversation_for(conn, user, &id, &send.conversation_id, retry).is_none() {
            return;
        }
        let conversation = send.conversation_id.clone();
        self.stop_typing(&conversation, &user.id);
        let write = Write::Append {
            conversation: conversation.clone(),
            id: MessageId::new(uuid::Uuid::now_v7().to_string()).expect("a UUID is a valid id"),
            author: user.clone(),
            client_message_id: send.client_message_id,
            text: send.text,
            sent_at: now(),
        };
        batch.write_then(write, move |actor, outcome| match outcome {
            Outcome::Applied(Applied::Appended(record)) => {
                if let Some(conv) = actor.conversations.get_mut(&conversation) {
                    conv.rec.last_seq = record.seq.into();
                }
                actor.send_to(conn, ServerMessage::ChatAck(ack(record)), id);
                let message = ServerMessage::ChatMessage(record.clone().into());
                actor.publish(&Topic::Conversation(conversation), message, None, Skip::Conn(conn));
                metrics::counter!("petchat_chat_messages_stored_total").increment(1);
            }
            Outcome::Applied(Applied::Duplicate(record)) => {
                actor.send_to(conn, ServerMessage::ChatAck(ack(record)), id)
            }
            Outcome::Applied(Applied::Closed) => {
                actor.error(conn, id, ErrorCode::ConversationClosed, "the conversation is closed")
            }
            Outcome::Applied(_) => actor.error(conn, id, ErrorCode::NotFound, "no such conversation"),
            Outcome::Failed | Outcome::None => {
                actor.error(conn, id, ErrorCode::Internal, "the message could not be stored; send it again")
            }
        });
    }

    fn receipt(
        &mut self,
        conn: ConnId,
        user: &User,
        id: Option<RequestId>,
        receipt: ReceiptUpTo,
        kind: ReceiptKind,
        batch: &mut Batch,
    ) {
        let Some(conv) = self.open_member_conversation(conn, user, &id, &receipt.conversation_id) else { return };
        let last = conv.rec.last_seq;
        if receipt.up_to_seq.get() > last.get() {
            let message = format!("data.upToSeq {} is beyond the conversation's last seq {last}", receipt.up_to_seq);
            return self.error(conn, id, ErrorCode::InvalidMessage, &message);
        }
        let at = now();
        let write = Write::Receipt {
            conversation: receipt.conversation_id.clone(),
            user: user.id.clone(),
            kind,
            up_to_seq: receipt.up_to_seq,
            at,
        };
        let by = user.id.clone();
        batch.write_then(write, move |actor, outcome| match outcome {
            Outcome::Applied(Applied::Receipt { advanced: true }) => {
                let data =
                    Receipt { conversation_id: receipt.conversation_id.clone(), up_to_seq: receipt.up_to_seq, by, at };
                let message = match kind {
                    ReceiptKind::Delivered => ServerMessage::MessageDelivered(data),
                    ReceiptKind::Read => ServerMessage::MessageRead(data),
                };
                actor.publish(&Topic::Conversation(receipt.conversation_id), message, None, Skip::Conn(conn));
            }
            Outcome::Applied(_) => {}
            Outcome::Failed | Outcome::None => {
                actor.error(conn, id, ErrorCode::Internal, "the receipt could not be stored")
            }
        });
    }

    fn typing_start(&mut self, conn: ConnId, user: &User, id: Option<RequestId>, conversation: &ConversationId) {
        if self.open_member_conversation(conn, user, &id, conversation).is_none() {
            return;
        }
        self.typing_generation += 1;
        let generation = self.typing_generation;
        if let Some(conv) = self.conversations.get_mut(conversation) {
            conv.typing.insert(user.id.clone(), generation);
        }
        let start =
            ServerMessage::TypingStart(Typing { conversation_id: conversation.clone(), user_id: user.id.clone() });
        self.publish(&Topic::Conversation(conversation.clone()), start, None, Skip::User(&user.id));
        let commands = self.commands.clone();
        let (conversation, user) = (conversation.clone(), user.id.clone());
        let expiry = self.limits.typing_expiry();
        tokio::spawn(async move {
            tokio::time::sleep(expiry).await;
            if let Some(commands) = commands.upgrade() {
                let _ = commands.send(Command::TypingExpired { conversation, user, generation }).await;
            }
        });
    }

    fn typing_expired(&mut self, conversation: &ConversationId, user: &UserId, generation: u64) {
        let current = self.conversations.get(conversation).and_then(|c| c.typing.get(user)).copied();
        if current == Some(generation) {
            self.stop_typing(conversation, user);
        }
    }

    /// Ends `user`'s typing in the conversation, telling the others if it was on.
    fn stop_typing(&mut self, conversation: &ConversationId, user: &UserId) {
        let Some(conv) = self.conversations.get_mut(conversation) else { return };
        if conv.typing.remove(user).is_some() {
            let stop =
                ServerMessage::TypingStop(Typing { conversation_id: conversation.clone(), user_id: user.clone() });
            self.publish(&Topic::Conversation(conversation.clone()), stop, None, Skip::User(user));
        }
    }

    fn agent_status(&mut self, conn: ConnId, user: &User, id: Option<RequestId>, available: bool, batch: &mut Batch) {
        if user.role != Role::Agent {
            return self.error(conn, id, ErrorCode::Forbidden, "only agents set an availability");
        }
        let agent = self.agents.entry(user.id.clone()).or_insert_with(|| new_agent(&user.name));
        if available && !agent.available {
            agent.idle_since = Instant::now();
        }
        agent.available = available;
        info!(agent = %user.id, available, "agent status");
        self.serve_queue(batch);
        self.announce_queue_positions(batch);
        let agent_id = user.id.clone();
        batch.then(move |actor, _| {
            let active = actor.agents.get(&agent_id).map_or(0, |a| a.active.len());
            let status = AgentStatus { available, active_conversations: u32::try_from(active).unwrap_or(u32::MAX) };
            actor.send_to(conn, ServerMessage::AgentStatus(status), id);
        });
    }

    // ----- assignment -------------------------------------------------------

    /// The available agent with the fewest open conversations (ties: longest idle).
    fn pick_agent(&self) -> Option<UserId> {
        let max = self.limits.max_conversations_per_agent as usize;
        self.agents
            .iter()
            .filter(|(_, a)| a.available && a.online && a.active.len() < max)
            .min_by_key(|(id, a)| (a.active.len(), a.idle_since, (*id).clone()))
            .map(|(id, _)| id.clone())
    }

    /// Assigns queued conversations, first first, while an agent is free.
    fn serve_queue(&mut self, batch: &mut Batch) {
        while let Some(conversation) = self.queue.front().cloned() {
            let Some(agent_id) = self.pick_agent() else { break };
            self.queue.pop_front();
            let Some(conv) = self.conversations.get_mut(&conversation) else { continue };
            let agent = self.agents.get_mut(&agent_id).expect("picked from the pool");
            agent.active.insert(conversation.clone());
            agent.idle_since = Instant::now();
            let participant = Participant { id: agent_id.clone(), name: agent.name.clone() };
            conv.rec.agent = Some(participant.clone());
            conv.rec.status = ConversationStatus::Active;
            conv.rec.queued_at = None;
            info!(conversation = %conversation, agent = %agent_id, "assigned from the queue");
            let write = Write::Assign {
                conversation: conversation.clone(),
                agent: Some(participant),
                status: ConversationStatus::Active,
                at: now(),
            };
            batch.write_then(write, move |actor, outcome| {
                if !matches!(outcome, Outcome::Failed) {
                    actor.announce_assignment(&conversation);
                }
            });
        }
    }

    /// `agent.assigned` to the conversation's connections and every connection
    /// of the agent, which are subscribed from now on; then presence both ways.
    fn announce_assignment(&mut self, conversation: &ConversationId) {
        let Some(conv) = self.conversations.get(conversation) else { return };
        let Some(agent) = conv.rec.agent.clone() else { return };
        let customer = conv.rec.customer.id.clone();
        let agent_conns = self.conns_of(&agent.id);
        for conn in &agent_conns {
            self.bus.subscribe(*conn, conversation);
        }
        let assigned =
            ServerMessage::AgentAssigned(AgentAssigned { conversation_id: conversation.clone(), agent: agent.clone() });
        self.publish(&Topic::Conversation(conversation.clone()), assigned, None, Skip::Nobody);
        for conn in agent_conns {
            self.send_presence_of(conn, conversation, &customer);
        }
        let online = if self.users.contains_key(&agent.id) { PresenceStatus::Online } else { PresenceStatus::Offline };
        let presence = ServerMessage::Presence(Presence {
            conversation_id: conversation.clone(),
            user_id: agent.id.clone(),
            status: online,
        });
        self.publish(&Topic::Conversation(conversation.clone()), presence, None, Skip::User(&agent.id));
    }

    fn queue_position(&self, conversation: &ConversationId) -> Option<NonZeroU32> {
        let index = self.queue.iter().position(|c| c == conversation)?;
        NonZeroU32::new(u32::try_from(index + 1).unwrap_or(u32::MAX))
    }

    /// Tells every queued customer its place, after the queue moved.
    fn announce_queue_positions(&mut self, batch: &mut Batch) {
        batch.then(|actor, _| {
            let queued: Vec<ConversationId> = actor.queue.iter().cloned().collect();
            for (index, conversation) in queued.into_iter().enumerate() {
                let position = NonZeroU32::new(u32::try_from(index + 1).unwrap_or(u32::MAX)).expect("index + 1 > 0");
                let queued =
                    ServerMessage::ConversationQueued(Queued { conversation_id: conversation.clone(), position });
                actor.publish(&Topic::Conversation(conversation), queued, None, Skip::Nobody);
            }
        });
    }

    // ----- helpers ----------------------------------------------------------

    /// The open conversation if `user` is a member; otherwise answers the
    /// request with the error that says why.
    fn open_member_conversation(
        &self,
        conn: ConnId,
        user: &User,
        id: &Option<RequestId>,
        conversation: &ConversationId,
    ) -> Option<&Conv> {
        self.member_conversation_for(conn, user, id, conversation, None)
    }

    /// [`Self::open_member_conversation`] for a request that may be a `chat.send`
    /// retry (`retry`: its clientMessageId), answered as such when the
    /// conversation has closed.
    fn member_conversation_for(
        &self,
        conn: ConnId,
        user: &User,
        id: &Option<RequestId>,
        conversation: &ConversationId,
        retry: Option<&ClientMessageId>,
    ) -> Option<&Conv> {
        match self.conversations.get(conversation) {
            Some(conv) if is_member(user, &conv.rec) => Some(conv),
            Some(_) => {
                self.error(conn, id.clone(), ErrorCode::Forbidden, "this conversation is not yours");
                None
            }
            None => {
                self.answer_not_open(conn, user, id.clone(), conversation, retry.cloned());
                None
            }
        }
    }

    /// Answers a request about a conversation the hub does not hold, closed or
    /// unknown, reading the store off the hub's task. A `chat.send` retry
    /// (`retry`: its clientMessageId) of a message stored before the
    /// conversation closed gets its original `chat.ack` (SPEC §5, exactly once).
    fn answer_not_open(
        &self,
        conn: ConnId,
        user: &User,
        id: Option<RequestId>,
        conversation: &ConversationId,
        retry: Option<ClientMessageId>,
    ) {
        let (conversation, user) = (conversation.clone(), user.clone());
        let store = self.store.clone();
        let bus = self.bus.clone();
        tokio::spawn(async move {
            let (code, message) = match store.conversation(&conversation).await {
                Ok(Some(rec)) if !is_member(&user, &rec) => (ErrorCode::Forbidden, "this conversation is not yours"),
                Ok(Some(_)) => {
                    let original = match retry {
                        Some(key) => store.stored_message(&conversation, &user.id, &key).await,
                        None => Ok(None),
                    };
                    match original {
                        Ok(Some(original)) => {
                            bus.send_to(conn, &frame(ServerMessage::ChatAck(ack(&original)), id));
                            count_out("chat.ack", 1);
                            return;
                        }
                        Ok(None) => (ErrorCode::ConversationClosed, "the conversation is closed"),
                        // Internal is retried by clients; closed would drop a stored message's retry.
                        Err(_) => (ErrorCode::Internal, "the conversation could not be read"),
                    }
                }
                Ok(None) => (ErrorCode::NotFound, "no such conversation"),
                Err(_) => (ErrorCode::Internal, "the conversation could not be read"),
            };
            bus.send_to(conn, &error_frame(code, message, id));
            count_error(code);
        });
    }

    fn conns_of(&self, user: &UserId) -> Vec<ConnId> {
        self.conns.iter().filter(|(_, u)| u.id == *user).map(|(conn, _)| *conn).collect()
    }

    fn member_conversations(&self, user: &User) -> Vec<ConversationId> {
        match user.role {
            Role::Customer => self.customer_open.get(&user.id).cloned().into_iter().collect(),
            Role::Agent => self.agents.get(&user.id).map(|a| a.active.iter().cloned().collect()).unwrap_or_default(),
        }
    }

    /// Presence of `user` to the other members of each of its open conversations.
    fn announce_presence(&mut self, user: &User, status: PresenceStatus) {
        for conversation in self.member_conversations(user) {
            let presence = ServerMessage::Presence(Presence {
                conversation_id: conversation.clone(),
                user_id: user.id.clone(),
                status,
            });
            self.publish(&Topic::Conversation(conversation), presence, None, Skip::User(&user.id));
        }
    }

    fn send_presence_of(&self, conn: ConnId, conversation: &ConversationId, user: &UserId) {
        let status = if self.users.contains_key(user) { PresenceStatus::Online } else { PresenceStatus::Offline };
        let presence = Presence { conversation_id: conversation.clone(), user_id: user.clone(), status };
        self.send_to(conn, ServerMessage::Presence(presence), None);
    }

    fn publish(&self, topic: &Topic, message: ServerMessage, id: Option<RequestId>, skip: Skip<'_>) {
        let kind = message.wire_type();
        let delivered = self.bus.publish(topic, &frame(message, id), skip);
        count_out(kind, delivered);
    }

    fn publish_user(&self, user: &UserId, message: ServerMessage) {
        self.publish(&Topic::User(user.clone()), message, None, Skip::Nobody);
    }

    fn send_to(&self, conn: ConnId, message: ServerMessage, id: Option<RequestId>) {
        let kind = message.wire_type();
        self.bus.send_to(conn, &frame(message, id));
        count_out(kind, 1);
    }

    fn error(&self, conn: ConnId, id: Option<RequestId>, code: ErrorCode, message: &str) {
        if code == ErrorCode::Internal {
            warn!(conn, %code, message, "request failed");
        }
        self.bus.send_to(conn, &error_frame(code, message, id));
        count_error(code);
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

fn count_out(kind: &'static str, n: usize) {
    if n > 0 {
        metrics::counter!("petchat_messages_out_total", "type" => kind).increment(n as u64);
    }
}

fn new_agent(name: &str) -> Agent {
    Agent {
        name: name.to_owned(),
        available: false,
        online: false,
        active: BTreeSet::new(),
        idle_since: Instant::now(),
        grace_generation: 0,
    }
}

fn is_member(user: &User, rec: &ConversationRecord) -> bool {
    rec.has_member(&user.id, user.role)
}

fn other_members(rec: &ConversationRecord, me: &UserId) -> Vec<UserId> {
    [Some(rec.customer.id.clone()), rec.agent.as_ref().map(|a| a.id.clone())]
        .into_iter()
        .flatten()
        .filter(|id| id != me)
        .collect()
}

fn snapshot(rec: &ConversationRecord) -> Conversation {
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
    }
}

fn ack(record: &MessageRecord) -> ChatAck {
    ChatAck {
        conversation_id: record.conversation_id.clone(),
        client_message_id: record.client_message_id.clone(),
        message_id: record.id.clone(),
        seq: record.seq,
        sent_at: record.sent_at,
    }
}
