//! One hub shard: the conversations whose id hashes to it, and the loop that
//! decides a round of commands, commits their writes together and only then
//! speaks.
//!
//! A connection's requests are answered in the order it sent them: while one
//! of its joins is being read (off the loop), its later requests to this
//! shard wait behind it, so an ack never overtakes the replay before it.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::Arc;

use petchat_protocol::{
    ClientMessage, CloseReason, ConversationId, ErrorCode, LastSeq, Participant, PresenceStatus, RequestId,
    ServerMessage, User, UserId,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error};

use super::batch::{Batch, next_round};
use super::conversations::JoinRead;
use super::out::Out;
use super::pool::PoolCommand;
use super::registry::Registry;
use super::remote::{Envelope, Remote, Seen};
use super::sequence::Sequence;
use super::shard_of;
use super::shared::Loading;
use crate::bus::{Bus, ConnId};
use crate::config::Limits;
use crate::store::{ConversationRecord, MessageRecord, Store, StoreError};

/// What a shard is asked.
#[derive(Debug)]
pub(super) enum ShardCommand {
    /// A client message about one of this shard's conversations.
    Request { conn: ConnId, user: User, id: Option<RequestId>, message: ClientMessage },
    /// The pool stored a new conversation: hold it and answer the customer's `conversation.open`.
    Adopt { rec: ConversationRecord, conn: ConnId, id: Option<RequestId>, position: Option<NonZeroU32> },
    /// `conversation.open` of a customer whose conversation is already open.
    Opened { conn: ConnId, id: Option<RequestId>, conversation: ConversationId, position: Option<NonZeroU32> },
    /// The pool stored an assignment.
    Assigned { conversation: ConversationId, agent: Participant, seq: LastSeq },
    /// The pool stored a re-queueing: `agent` no longer holds the conversation.
    Requeued { conversation: ConversationId, agent: UserId },
    /// The pool stored a transfer: every connection of the members (`from`
    /// and `to` included) hears it, and `from` no longer holds the
    /// conversation. An `Assigned` for `to` follows.
    Transferred { conversation: ConversationId, from: Participant, to: Option<Participant>, customer: UserId },
    /// The pool decided a close; the shard stores it (unless the pool did:
    /// `stored`) and tells the members. `conn` asked for it, unless the
    /// server closed it (`by` is then `system`).
    Close {
        conn: Option<ConnId>,
        id: Option<RequestId>,
        conversation: ConversationId,
        by: UserId,
        reason: CloseReason,
        members: Vec<UserId>,
        stored: bool,
    },
    /// A member's first connection opened or last one closed.
    Presence { conversation: ConversationId, user: UserId, status: PresenceStatus },
    /// A `typing.start` expired without a stop.
    TypingExpired { conversation: ConversationId, user: UserId, generation: u64 },
    /// A join's reads are done.
    Joined(Box<JoinRead>),
    /// One frame to one connection, in its place among the pool's tells.
    Say { conn: ConnId, message: ServerMessage, id: Option<RequestId> },
    /// One frame to a conversation's connections (on every node), in its place among the pool's tells.
    ToConversation { conversation: ConversationId, message: ServerMessage },
    /// What the pool decided in one round, for one shard after the other.
    Chain(Chain),
    /// Another node's message or fact about one of this shard's conversations.
    Remote(Box<Envelope>),
    /// A conversation first used here was read (several nodes).
    Loaded { conversation: ConversationId, found: Result<Option<ConversationRecord>, ()> },
    /// Messages may still be missing behind a gap: read them if so.
    GapCheck { conversation: ConversationId },
    /// Redis confirmed this node's subscription to a conversation adopted
    /// here: what other nodes stored before it is read from the store.
    Heard { conversation: ConversationId },
    /// Messages read from the store after a gap (and the conversation, after an outage).
    Filled { conversation: ConversationId, messages: Vec<MessageRecord>, rec: Option<ConversationRecord> },
    /// The link to the other nodes is back: read whatever was missed meanwhile.
    CatchUp,
}

/// The pool's tells of one round, in order, each for its shard. A shard
/// decides the leading ones that are its own and, once their writes are
/// committed and their frames queued, passes the rest on.
#[derive(Debug)]
pub(super) struct Chain {
    pub(super) steps: VecDeque<(usize, ShardCommand)>,
    /// Told when the last step is done.
    pub(super) done: Option<oneshot::Sender<()>>,
}

/// The state of one open conversation.
pub(super) struct Conv {
    pub(super) rec: ConversationRecord,
    /// Members typing now, with the generation of their last `typing.start`.
    pub(super) typing: HashMap<UserId, u64>,
    /// Which of its messages this node delivered.
    pub(super) seq: Sequence,
    /// A read of missing messages is under way (several nodes).
    pub(super) filling: bool,
    /// Another read was asked for meanwhile: it follows this one.
    pub(super) fill_again: bool,
}

impl Conv {
    /// A conversation as stored, every message up to its last seq delivered.
    pub(super) fn new(rec: ConversationRecord) -> Self {
        let seq = Sequence::new(rec.last_seq);
        Self { rec, typing: HashMap::new(), seq, filling: false, fill_again: false }
    }
}

/// What a shard starts from.
pub(super) struct Parts {
    pub(super) index: usize,
    pub(super) shards: usize,
    pub(super) store: Arc<dyn Store>,
    pub(super) bus: Arc<dyn Bus>,
    pub(super) registry: Arc<Registry>,
    pub(super) limits: Limits,
    pub(super) pool: mpsc::WeakUnboundedSender<PoolCommand>,
    pub(super) internal: mpsc::WeakUnboundedSender<ShardCommand>,
    /// Every shard's internal channel, by index (this one's too), to pass chains on.
    pub(super) peers: Arc<[mpsc::WeakUnboundedSender<ShardCommand>]>,
    /// This shard's open conversations.
    pub(super) open: Vec<ConversationRecord>,
    /// The other nodes, in a cluster.
    pub(super) remote: Option<Arc<Remote>>,
}

/// Requests of a connection held behind its joins.
#[derive(Default)]
struct Held {
    /// Joins of the connection being read.
    joins: usize,
    /// Its requests that came after the first of them, in order.
    waiting: VecDeque<ShardCommand>,
}

/// A shard's state.
pub(super) struct Shard {
    pub(super) index: usize,
    pub(super) shards: usize,
    pub(super) store: Arc<dyn Store>,
    pub(super) out: Out,
    pub(super) registry: Arc<Registry>,
    pub(super) limits: Limits,
    pub(super) pool: mpsc::WeakUnboundedSender<PoolCommand>,
    pub(super) internal: mpsc::WeakUnboundedSender<ShardCommand>,
    peers: Arc<[mpsc::WeakUnboundedSender<ShardCommand>]>,
    /// Open conversations (queued or active).
    pub(super) conversations: HashMap<ConversationId, Conv>,
    pub(super) typing_generation: u64,
    held: HashMap<ConnId, Held>,
    /// The other nodes, in a cluster.
    pub(super) remote: Option<Arc<Remote>>,
    /// Conversations first used here, being read (several nodes).
    pub(super) loading: HashMap<ConversationId, Loading>,
    /// Facts from other nodes already acted on.
    pub(super) seen: Seen,
}

impl Shard {
    pub(super) fn new(parts: Parts) -> Self {
        let mut shard = Self {
            index: parts.index,
            shards: parts.shards,
            store: parts.store,
            out: Out { bus: parts.bus, remote: parts.remote.clone() },
            registry: parts.registry,
            limits: parts.limits,
            pool: parts.pool,
            internal: parts.internal,
            peers: parts.peers,
            conversations: HashMap::new(),
            typing_generation: 0,
            held: HashMap::new(),
            remote: parts.remote,
            loading: HashMap::new(),
            seen: Seen::default(),
        };
        shard.hold(parts.open);
        shard
    }

    fn hold(&mut self, open: Vec<ConversationRecord>) {
        self.conversations = open.into_iter().map(|rec| (rec.id.clone(), Conv::new(rec))).collect();
    }

    /// Rebuilds this shard's conversations from the store (after a failed commit).
    async fn reload(&mut self) -> Result<(), StoreError> {
        let (index, shards) = (self.index, self.shards);
        let open = self.store.open_conversations().await?;
        let clustered = self.remote.is_some();
        // In a cluster a shard holds only the conversations used here.
        let mine: Vec<ConversationRecord> = open
            .into_iter()
            .filter(|rec| shard_of(&rec.id, shards) == index)
            .filter(|rec| !clustered || self.conversations.contains_key(&rec.id))
            .collect();
        if let Some(remote) = &self.remote {
            let kept: std::collections::HashSet<&ConversationId> = mine.iter().map(|rec| &rec.id).collect();
            for gone in self.conversations.keys().filter(|id| !kept.contains(id)) {
                remote.drop_conversation(gone);
            }
        }
        self.hold(mine);
        Ok(())
    }

    pub(super) async fn run(
        mut self,
        mut requests: mpsc::Receiver<ShardCommand>,
        mut internal: mpsc::UnboundedReceiver<ShardCommand>,
    ) {
        let most = self.limits.commit_batch.max(1);
        while let Some(commands) = next_round(&mut internal, &mut requests, most).await {
            let mut batch = Batch::default();
            for command in commands {
                self.route(command, &mut batch);
            }
            if batch.is_empty() {
                continue;
            }
            let store = self.store.clone();
            if !batch.commit(&mut self, store.as_ref()).await {
                if let Err(e) = self.reload().await {
                    error!(error = %e, shard = self.index, "reloading a shard after a failed commit failed");
                }
                self.tell_pool(PoolCommand::Reload);
            }
        }
        debug!(shard = self.index, "hub shard stopped");
    }

    /// Decides a command now, or holds a request behind its connection's
    /// joins, or (several nodes) behind the read of a conversation first used here.
    fn route(&mut self, command: ShardCommand, batch: &mut Batch<Self>) {
        if let Some(conversation) = self.to_load(&command) {
            return self.load(conversation, command, false);
        }
        match command {
            ShardCommand::Request { conn, .. } if self.held.contains_key(&conn) => {
                let held = self.held.get_mut(&conn).expect("checked above");
                if held.waiting.len() >= self.limits.outbound_queue {
                    if let ShardCommand::Request { id, .. } = command {
                        self.out.error(conn, id, ErrorCode::Internal, "too many requests behind a join; send it again");
                    }
                    return;
                }
                held.waiting.push_back(command);
            }
            command => self.decide(command, batch),
        }
    }

    /// Marks a connection as joining: its next requests wait for the join.
    pub(super) fn hold_behind_join(&mut self, conn: ConnId) {
        self.held.entry(conn).or_default().joins += 1;
    }

    /// Holds a connection behind a read with `command` first in line
    /// (`front`: ahead of what already waits, being next in order).
    pub(super) fn hold_with(&mut self, conn: ConnId, command: ShardCommand, front: bool) {
        let held = self.held.entry(conn).or_default();
        held.joins += 1;
        if front {
            held.waiting.push_front(command);
        } else {
            held.waiting.push_back(command);
        }
    }

    pub(super) fn decide(&mut self, command: ShardCommand, batch: &mut Batch<Self>) {
        match command {
            ShardCommand::Request { conn, user, id, message } => self.request(conn, &user, id, message, batch),
            ShardCommand::Adopt { rec, conn, id, position } => self.adopt(rec, conn, id, position),
            ShardCommand::Opened { conn, id, conversation, position } => {
                self.send_opened(conn, id, &conversation, true, position);
            }
            ShardCommand::Assigned { conversation, agent, .. } => self.assigned(&conversation, agent, true),
            ShardCommand::Requeued { conversation, agent } => self.requeued(&conversation, &agent, true),
            ShardCommand::Transferred { conversation, from, to, customer } => {
                self.transferred(&conversation, from, to, &customer);
            }
            ShardCommand::Close { conn, id, conversation, by, reason, members, stored } => {
                let closer = super::conversations::Closer { conn, id, by, reason };
                self.close(&conversation, closer, members, stored, batch);
            }
            ShardCommand::Presence { conversation, user, status } => self.presence(&conversation, &user, status),
            ShardCommand::TypingExpired { conversation, user, generation } => {
                self.typing_expired(&conversation, &user, generation);
            }
            ShardCommand::Joined(read) => {
                let conn = read.conn;
                if self.finish_join(*read) {
                    self.release(conn, batch, None);
                }
            }
            ShardCommand::Remote(envelope) => self.remote(*envelope),
            ShardCommand::Loaded { conversation, found } => self.loaded(conversation, found, batch),
            ShardCommand::GapCheck { conversation } => self.gap_check(&conversation),
            ShardCommand::Heard { conversation } => self.heard(&conversation),
            ShardCommand::Filled { conversation, messages, rec } => self.filled(&conversation, messages, rec),
            ShardCommand::CatchUp => self.catch_up(),
            ShardCommand::Say { conn, message, id } => self.out.send_to(conn, message, id),
            ShardCommand::ToConversation { conversation, message } => {
                self.out.to_conversation(&conversation, message, crate::bus::Skip::Nobody);
            }
            ShardCommand::Chain(mut chain) => {
                while chain.steps.front().is_some_and(|(shard, _)| *shard == self.index) {
                    let (_, step) = chain.steps.pop_front().expect("checked above");
                    // A close speaks after its commit: what follows waits for it.
                    let writes = matches!(step, ShardCommand::Close { stored: false, .. });
                    if let Some(conversation) = self.to_load(&step) {
                        // Several nodes: first used here. It speaks once read,
                        // and the rest of the chain waits for it, in order.
                        self.load(conversation.clone(), step, false);
                        if let Some(loading) = self.loading.get_mut(&conversation) {
                            loading.then.push(ShardCommand::Chain(chain));
                        }
                        return;
                    }
                    self.decide(step, batch);
                    if writes {
                        break;
                    }
                }
                // After this round's commit and the frames of its effects.
                batch.then(move |shard, _| shard.pass_on(chain));
            }
        }
    }

    fn pass_on(&self, mut chain: Chain) {
        let Some((next, _)) = chain.steps.front() else {
            if let Some(done) = chain.done.take() {
                let _ = done.send(());
            }
            return;
        };
        if let Some(peer) = self.peers.get(*next).and_then(mpsc::WeakUnboundedSender::upgrade) {
            let _ = peer.send(ShardCommand::Chain(chain));
        }
    }

    /// One join (or load) of `conn` is done: decides what waited behind it,
    /// in order, until another join holds the connection again. `loaded`: a
    /// conversation just read, not to be read again if it was not open.
    pub(super) fn release(&mut self, conn: ConnId, batch: &mut Batch<Self>, loaded: Option<&ConversationId>) {
        if let Some(held) = self.held.get_mut(&conn) {
            held.joins = held.joins.saturating_sub(1);
        }
        loop {
            let next = {
                let Some(held) = self.held.get_mut(&conn) else { return };
                if held.joins > 0 {
                    return;
                }
                match held.waiting.pop_front() {
                    Some(next) => next,
                    None => {
                        self.held.remove(&conn);
                        return;
                    }
                }
            };
            match self.to_load(&next) {
                Some(conversation) if Some(&conversation) != loaded => self.load(conversation, next, true),
                _ => self.decide(next, batch),
            }
        }
    }

    fn request(
        &mut self,
        conn: ConnId,
        user: &User,
        id: Option<RequestId>,
        message: ClientMessage,
        batch: &mut Batch<Self>,
    ) {
        match message {
            ClientMessage::ConversationJoin(join) => self.join(conn, user, id, join),
            ClientMessage::ConversationLeave(leave) => self.out.bus.unsubscribe(conn, &leave.conversation_id),
            ClientMessage::ChatSend(send) => self.chat_send(conn, user, id, send, batch),
            ClientMessage::MessageDelivered(r) => {
                self.receipt(conn, user, id, r, crate::store::ReceiptKind::Delivered, batch)
            }
            ClientMessage::MessageRead(r) => self.receipt(conn, user, id, r, crate::store::ReceiptKind::Read, batch),
            ClientMessage::TypingStart(t) => self.typing_start(conn, user, id, &t.conversation_id),
            ClientMessage::TypingStop(t) => {
                if self.member_conversation(conn, user, &id, &t.conversation_id, None) {
                    self.stop_typing(&t.conversation_id, &user.id);
                }
            }
            // The pool's, the feeds', the hub's and the connection's; the hub never routes them here.
            ClientMessage::ConversationOpen(_)
            | ClientMessage::ConversationClose(_)
            | ClientMessage::ConversationResolve(_)
            | ClientMessage::ConversationTransfer(_)
            | ClientMessage::ConversationList(_)
            | ClientMessage::AgentStatus(_)
            | ClientMessage::Ping(_)
            | ClientMessage::SessionRefresh(_)
            | ClientMessage::TopicSubscribe(_)
            | ClientMessage::TopicUnsubscribe(_)
            | ClientMessage::NotificationRead(_) => {}
        }
    }

    pub(super) fn tell_pool(&self, command: PoolCommand) {
        if let Some(pool) = self.pool.upgrade() {
            let _ = pool.send(command);
        }
    }

    /// Whether `user` is a member of the open conversation; otherwise answers
    /// the request with the error that says why (`retry`: the clientMessageId
    /// of a `chat.send`, answered as a retry when the conversation has closed).
    pub(super) fn member_conversation(
        &self,
        conn: ConnId,
        user: &User,
        id: &Option<RequestId>,
        conversation: &ConversationId,
        retry: Option<&petchat_protocol::ClientMessageId>,
    ) -> bool {
        match self.conversations.get(conversation) {
            Some(conv) if super::out::is_member(user, &conv.rec) => true,
            Some(_) => {
                self.out.error(conn, id.clone(), ErrorCode::Forbidden, "this conversation is not yours");
                false
            }
            None => {
                self.out.answer_not_open(&self.store, conn, user, id.clone(), conversation, retry.cloned());
                false
            }
        }
    }
}
