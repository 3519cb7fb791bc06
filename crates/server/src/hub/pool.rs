//! The agent pool and the one queue (SPEC §6): opens conversations, assigns
//! them, re-queues an absent agent's after its grace period, and decides
//! closes. It commits its own writes (one group commit per round, like a
//! shard), then tells the conversation's shard, which speaks to its members.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use petchat_protocol::api::{AgentStats, ConversationStats, QueueStats};
use petchat_protocol::{
    AgentStatus, ClientMessage, CloseReason, ConversationId, ConversationStatus, ErrorCode, LastSeq, OpenConversation,
    Participant, PresenceStatus, Queued, RequestId, Role, ServerMessage, Timestamp, TransferConversation, User, UserId,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use super::batch::{Batch, Outcome, next_round};
use super::conversations::Closer;
use super::feeds::{Feeds, server_notification};
use super::frames::now;
use super::out::{Out, is_member};
use super::remote::Remote;
use super::rules::{Agent, IdleClock, pick_agent, pick_agent_except};
use super::shard::{Chain, ShardCommand};
use super::shard_of;
use crate::bus::{Bus, ConnId};
use crate::config::Limits;
use crate::store::{Applied, ConversationRecord, Store, StoreError, Write};

mod shared;

/// What the pool is asked.
#[derive(Debug, Clone)]
pub(super) enum PoolCommand {
    /// `conversation.open`, `conversation.close`, `conversation.resolve`,
    /// `conversation.transfer` or `agent.status`.
    Request { conn: ConnId, user: User, id: Option<RequestId>, message: ClientMessage },
    /// Several nodes: a customer's first connection anywhere opened
    /// (`online`) or its last anywhere closed.
    CustomerPresence { customer: UserId, online: bool },
    /// Time to close what the lifecycle rules close: the `quiet` conversations
    /// (read from the store: no message for `--conversation-idle-ms`) and, on
    /// several nodes, those of customers away for `--customer-away-ms`.
    Lifecycle { quiet: Vec<ConversationId> },
    /// One node: a customer away (as of its `generation`th absence) has been
    /// away for `--customer-away-ms`.
    CustomerAwayOver { conversation: ConversationId, generation: u64 },
    /// The user's first connection on this node opened.
    Online { user: User },
    /// The user's last connection on this node closed.
    Offline { user: User },
    /// An agent's grace period ended.
    GraceExpired { agent: UserId, generation: u64 },
    /// A connection finished joining a conversation: tell it its queue position, if queued.
    Position { conn: ConnId, conversation: ConversationId },
    /// A shard's commit failed: rebuild the pool from the store.
    Reload,
    /// Another node is gone (several nodes): its agents' connections with it.
    NodeGone { node: String },
    /// Several nodes: re-queue the conversations of agents whose grace period is over.
    Sweep,
    /// `/v1/api/stats`: the queue, the agents and the open conversations now.
    Stats { reply: StatsReply },
}

/// Where the pool's [`PoolStats`] go (cloneable, as commands are; the first send wins).
#[derive(Debug, Clone)]
pub(super) struct StatsReply(Arc<std::sync::Mutex<Option<oneshot::Sender<PoolStats>>>>);

impl StatsReply {
    /// A reply and where it arrives.
    pub(super) fn new() -> (Self, oneshot::Receiver<PoolStats>) {
        let (tx, rx) = oneshot::channel();
        (Self(Arc::new(std::sync::Mutex::new(Some(tx)))), rx)
    }

    fn send(&self, stats: PoolStats) {
        if let Some(tx) = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            let _ = tx.send(stats);
        }
    }
}

/// The pool's part of `/v1/api/stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct PoolStats {
    pub(super) queue: QueueStats,
    pub(super) agents: AgentStats,
    pub(super) conversations: ConversationStats,
}

/// What the pool starts from.
pub(super) struct Parts {
    pub(super) store: Arc<dyn Store>,
    pub(super) bus: Arc<dyn Bus>,
    pub(super) limits: Limits,
    /// Each shard's internal channel, by index.
    pub(super) shards: Vec<mpsc::UnboundedSender<ShardCommand>>,
    /// The pool's own internal channel, for its timers.
    pub(super) internal: mpsc::WeakUnboundedSender<PoolCommand>,
    /// The open conversations, queued ones in queue order first.
    pub(super) open: Vec<ConversationRecord>,
    /// The other nodes, in a cluster: then the pool's state is the store's.
    pub(super) remote: Option<Arc<Remote>>,
    /// Where the pool's notifications to customers go.
    pub(super) feeds: Feeds,
}

/// The pool's state.
pub(super) struct Pool {
    store: Arc<dyn Store>,
    out: Out,
    limits: Limits,
    shards: Vec<mpsc::UnboundedSender<ShardCommand>>,
    internal: mpsc::WeakUnboundedSender<PoolCommand>,
    /// Open conversations (queued or active), as the pool last decided them.
    open: HashMap<ConversationId, ConversationRecord>,
    /// A customer's open conversation (`conversation.open` returns it).
    customer_open: HashMap<UserId, ConversationId>,
    agents: HashMap<UserId, Agent>,
    /// Conversations waiting for an agent, first served first.
    queue: VecDeque<ConversationId>,
    /// What this round tells the shards, in order; sent as one [`Chain`] after the commit.
    tells: VecDeque<(usize, ShardCommand)>,
    /// Orders agents by how long they have been idle.
    idle: IdleClock,
    /// Several nodes: this node's id, and the state is the store's (`shared.rs`).
    pub(super) node: Option<String>,
    /// Stores and delivers the pool's notifications.
    feeds: Feeds,
    /// One node: the absence each away customer's conversation is timed from
    /// (a stale timer, from an absence the customer came back from, does nothing).
    away: HashMap<ConversationId, u64>,
    /// Counts absences, for `away`.
    absences: u64,
}

impl Pool {
    pub(super) fn new(parts: Parts) -> Self {
        let mut pool = Self {
            store: parts.store,
            out: Out { bus: parts.bus, remote: parts.remote.clone() },
            limits: parts.limits,
            shards: parts.shards,
            internal: parts.internal,
            open: HashMap::new(),
            customer_open: HashMap::new(),
            agents: HashMap::new(),
            queue: VecDeque::new(),
            tells: VecDeque::new(),
            idle: if parts.remote.is_some() { IdleClock::shared() } else { IdleClock::default() },
            node: parts.remote.as_ref().map(|remote| remote.node().to_string()),
            feeds: parts.feeds,
            away: HashMap::new(),
            absences: 0,
        };
        if pool.node.is_some() {
            // Shared: every round reads the state from the store.
            return pool;
        }
        pool.rebuild(parts.open);
        // Agents holding conversations from before a restart are offline until
        // they reconnect: their grace period starts now.
        let offline: Vec<UserId> = pool.agents.keys().cloned().collect();
        for agent in offline {
            pool.start_grace(&agent);
        }
        pool
    }

    /// Rebuilds the open conversations, the queue and the agents' loads.
    fn rebuild(&mut self, open: Vec<ConversationRecord>) {
        self.open.clear();
        self.customer_open.clear();
        self.queue.clear();
        for agent in self.agents.values_mut() {
            agent.active.clear();
        }
        for rec in open {
            self.customer_open.insert(rec.customer.id.clone(), rec.id.clone());
            match (&rec.agent, rec.status) {
                (Some(agent), ConversationStatus::Active) => {
                    let idle = self.idle.mark();
                    self.agents
                        .entry(agent.id.clone())
                        .or_insert_with(|| Agent::new(&agent.name, idle))
                        .active
                        .insert(rec.id.clone());
                }
                _ => self.queue.push_back(rec.id.clone()),
            }
            self.open.insert(rec.id.clone(), rec);
        }
    }

    async fn reload(&mut self) -> Result<(), StoreError> {
        let open = self.store.open_conversations().await?;
        self.rebuild(open);
        Ok(())
    }

    pub(super) async fn run(
        mut self,
        mut requests: mpsc::Receiver<PoolCommand>,
        mut internal: mpsc::UnboundedReceiver<PoolCommand>,
    ) {
        self.sweep_lifecycle_every();
        if self.node.is_some() {
            return self.run_shared(requests, internal).await;
        }
        self.mark_customers_away().await;
        let most = self.limits.commit_batch.max(1);
        while let Some(commands) = next_round(&mut internal, &mut requests, most).await {
            let mut batch = Batch::default();
            let mut reload = false;
            for command in commands {
                reload |= matches!(command, PoolCommand::Reload);
                self.decide(command, &mut batch);
            }
            let store = self.store.clone();
            let committed = batch.commit(&mut self, store.as_ref()).await;
            self.tell_shards().await;
            if (!committed || reload)
                && let Err(e) = self.reload().await
            {
                error!(error = %e, "reloading the pool after a failed commit failed");
            }
        }
        debug!("pool stopped");
    }

    fn decide(&mut self, command: PoolCommand, batch: &mut Batch<Self>) {
        match command {
            PoolCommand::Request { conn, user, id, message } => match message {
                ClientMessage::ConversationOpen(open) => self.open(conn, &user, id, open, batch),
                ClientMessage::ConversationClose(close) => {
                    self.close(conn, &user, id, &close.conversation_id, CloseReason::Closed, batch);
                }
                ClientMessage::ConversationResolve(resolve) => {
                    self.close(conn, &user, id, &resolve.conversation_id, CloseReason::Resolved, batch);
                }
                ClientMessage::ConversationTransfer(transfer) => self.transfer(conn, &user, id, transfer, batch),
                ClientMessage::AgentStatus(status) => self.agent_status(conn, &user, id, status.available, batch),
                _ => {}
            },
            PoolCommand::CustomerPresence { customer, online } => self.customer_presence(&customer, online, batch),
            PoolCommand::Lifecycle { quiet } => self.lifecycle(quiet, batch),
            PoolCommand::CustomerAwayOver { conversation, generation } => {
                if self.away.get(&conversation) == Some(&generation) {
                    self.close_away(&conversation, batch);
                }
            }
            PoolCommand::Online { user } => self.online(&user, batch),
            PoolCommand::Offline { user } => self.offline(&user, batch),
            PoolCommand::GraceExpired { agent, generation } => self.grace_expired(&agent, generation, batch),
            PoolCommand::NodeGone { node } => self.node_gone(node, batch),
            PoolCommand::Sweep => self.sweep(batch),
            PoolCommand::Stats { reply } => reply.send(self.stats()),
            PoolCommand::Position { conn, conversation } => {
                if let Some(position) = self.queue_position(&conversation) {
                    let queued = Queued { conversation_id: conversation, position };
                    self.out.send_to(conn, ServerMessage::ConversationQueued(queued), None);
                }
            }
            PoolCommand::Reload => {}
        }
    }

    /// Queues `command` for the conversation's shard, behind what this round told before.
    pub(super) fn tell_shard(&mut self, conversation: &ConversationId, command: ShardCommand) {
        self.tells.push_back((shard_of(conversation, self.shards.len()), command));
    }

    /// Queues a frame for one connection, behind what this round told the shards.
    fn say(&mut self, conn: ConnId, message: ServerMessage, id: Option<RequestId>) {
        self.tell_after(ShardCommand::Say { conn, message, id });
    }

    /// Queues a command for whichever shard the chain is at, behind what this
    /// round told before (for frames that need no conversation's state).
    fn tell_after(&mut self, command: ShardCommand) {
        let last = self.tells.back().map_or(0, |(shard, _)| *shard);
        self.tells.push_back((last, command));
    }

    /// Sends this round's tells through the shards, one after the other, and
    /// waits until the last is done: whatever the pool decides reaches every
    /// connection in the order it was decided, across shards and rounds (an
    /// `agent.assigned` never overtakes the `conversation.closed` that freed
    /// the agent, nor `agent.status` the assignments it caused).
    pub(super) async fn tell_shards(&mut self) {
        if self.tells.is_empty() {
            return;
        }
        let (done, finished) = oneshot::channel();
        let chain = Chain { steps: std::mem::take(&mut self.tells), done: Some(done) };
        let first = chain.steps.front().map_or(0, |(shard, _)| *shard);
        if self.shards[first].send(ShardCommand::Chain(chain)).is_ok() {
            // An error only means a shard stopped: the process is shutting down.
            let _ = finished.await;
        }
    }

    // ----- connections ------------------------------------------------------

    fn online(&mut self, user: &User, batch: &mut Batch<Self>) {
        if user.role == Role::Agent {
            let idle = self.idle.mark();
            let agent = self.agents.entry(user.id.clone()).or_insert_with(|| Agent::new(&user.name, idle));
            agent.online = true;
            agent.offline_since = None;
            agent.name.clone_from(&user.name);
            agent.grace_generation += 1;
            self.write_connection(user, true, batch);
        }
        // Several nodes: presence goes by the user's first connection anywhere (`Hub::connect`).
        if self.node.is_none() {
            self.tell_members(user, PresenceStatus::Online);
            if user.role == Role::Customer {
                self.customer_presence(&user.id, true, batch);
            }
        }
        if user.role == Role::Agent {
            // Back within its grace period and still available: it can take more.
            self.serve_queue(batch);
            self.announce_queue_positions(batch);
        }
    }

    fn offline(&mut self, user: &User, batch: &mut Batch<Self>) {
        if self.node.is_none() {
            self.tell_members(user, PresenceStatus::Offline);
            if user.role == Role::Customer {
                self.customer_presence(&user.id, false, batch);
            }
        }
        if user.role == Role::Agent {
            if let Some(agent) = self.agents.get_mut(&user.id) {
                // Several nodes: it may still be online elsewhere; the store knows.
                agent.online = false;
            }
            self.write_connection(user, false, batch);
            self.start_grace(&user.id);
        }
        debug!(user = %user.id, "last connection of the user closed");
    }

    /// Presence of `user` to the other members of each of its open conversations.
    fn tell_members(&mut self, user: &User, status: PresenceStatus) {
        for conversation in self.member_conversations(user) {
            let command = ShardCommand::Presence { conversation: conversation.clone(), user: user.id.clone(), status };
            self.tell_shard(&conversation, command);
        }
    }

    fn member_conversations(&self, user: &User) -> Vec<ConversationId> {
        match user.role {
            Role::Customer => self.customer_open.get(&user.id).cloned().into_iter().collect(),
            Role::Agent => self.agents.get(&user.id).map(|a| a.active.iter().cloned().collect()).unwrap_or_default(),
        }
    }

    fn start_grace(&mut self, agent_id: &UserId) {
        if self.node.is_some() {
            return self.sweep_after_grace();
        }
        let Some(agent) = self.agents.get_mut(agent_id) else { return };
        agent.grace_generation += 1;
        let generation = agent.grace_generation;
        let internal = self.internal.clone();
        let agent = agent_id.clone();
        let grace = self.limits.agent_grace();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            if let Some(internal) = internal.upgrade() {
                let _ = internal.send(PoolCommand::GraceExpired { agent, generation });
            }
        });
    }

    fn grace_expired(&mut self, agent_id: &UserId, generation: u64, batch: &mut Batch<Self>) {
        if self.node.is_some() {
            return self.sweep(batch);
        }
        let Some(agent) = self.agents.get_mut(agent_id) else { return };
        if agent.online || agent.grace_generation != generation {
            return;
        }
        self.requeue_agent(agent_id, batch);
    }

    /// The agent's grace period is over: its conversations go to the front
    /// of the queue, and it leaves the pool until it says it is available.
    pub(super) fn requeue_agent(&mut self, agent_id: &UserId, batch: &mut Batch<Self>) {
        let Some(agent) = self.agents.get_mut(agent_id) else { return };
        agent.available = false;
        let held: Vec<ConversationId> = std::mem::take(&mut agent.active).into_iter().collect();
        if held.is_empty() {
            self.agents.remove(agent_id);
            return;
        }
        info!(agent = %agent_id, conversations = held.len(), "agent grace period over: re-queueing");
        // They have waited longest: they go to the front, in their order, and
        // are queued as of their opening, so that the stored queue agrees.
        for id in held.iter().rev() {
            self.queue.push_front(id.clone());
        }
        for id in held {
            let Some(rec) = self.open.get_mut(&id) else { continue };
            let at = rec.created_at;
            rec.agent = None;
            rec.status = ConversationStatus::Queued;
            rec.queued_at = Some(at);
            rec.declined_by = None;
            let customer = rec.customer.id.clone();
            let agent = agent_id.clone();
            batch.write_then(
                Write::Assign {
                    conversation: id.clone(),
                    agent: None,
                    status: ConversationStatus::Queued,
                    at,
                    declined_by: None,
                },
                move |pool, outcome| {
                    if outcome.failed() {
                        return;
                    }
                    pool.tell_shard(&id, ShardCommand::Requeued { conversation: id.clone(), agent });
                    pool.feeds.notify_soon(server_notification(
                        &customer,
                        "conversation.requeued",
                        "Your agent was disconnected",
                        "We are finding another agent for you.",
                    ));
                },
            );
        }
        self.serve_queue(batch);
        self.announce_queue_positions(batch);
    }

    /// The queue, the agents and the open conversations, as the pool holds them now.
    fn stats(&self) -> PoolStats {
        let now_ms = now().as_unix_ms();
        let oldest = self.waiting().next().and_then(|id| self.open.get(id)).and_then(|rec| rec.queued_at);
        let oldest_wait_ms = oldest.map_or(0, |at| (now_ms - at.as_unix_ms()).max(0) as u64);
        let max = self.max_conversations();
        let online = self.agents.values().filter(|agent| agent.online);
        let (mut available, mut busy) = (0, 0);
        for agent in online {
            available += u64::from(agent.available && agent.active.len() < max);
            busy += u64::from(!agent.active.is_empty());
        }
        PoolStats {
            queue: QueueStats { length: self.waiting().count() as u64, oldest_wait_ms },
            agents: AgentStats { available, busy },
            conversations: ConversationStats { open: self.open.len() as u64 },
        }
    }

    // ----- requests ---------------------------------------------------------

    fn open(
        &mut self,
        conn: ConnId,
        user: &User,
        id: Option<RequestId>,
        open: OpenConversation,
        batch: &mut Batch<Self>,
    ) {
        if user.role != Role::Customer {
            return self.out.error(conn, id, ErrorCode::Forbidden, "only customers open conversations");
        }
        if let Some(existing) = self.customer_open.get(&user.id).cloned() {
            batch.then(move |pool, _| {
                let position = pool.queue_position(&existing);
                pool.tell_shard(&existing, ShardCommand::Opened { conn, id, conversation: existing.clone(), position });
            });
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
            // It asked: it is connected.
            customer_away_since: None,
            closed: None,
            declined_by: None,
        };
        let assigned = pick_agent(&self.agents, self.max_conversations());
        if let Some(agent_id) = &assigned {
            let idle = self.idle.mark();
            self.write_idle(agent_id, idle, batch);
            let agent = self.agents.get_mut(agent_id).expect("picked from the pool");
            agent.active.insert(rec.id.clone());
            agent.idle_since = idle;
            rec.agent = Some(Participant { id: agent_id.clone(), name: agent.name.clone() });
            rec.status = ConversationStatus::Active;
            rec.queued_at = None;
        } else {
            self.queue.push_back(rec.id.clone());
        }
        let conversation = rec.id.clone();
        self.customer_open.insert(user.id.clone(), conversation.clone());
        self.open.insert(conversation.clone(), rec.clone());
        info!(conversation = %conversation, customer = %user.id, agent = ?assigned.as_ref().map(UserId::as_str), "conversation opened");
        batch.write_then(Write::CreateConversation(rec.clone()), move |pool, outcome| {
            if outcome.failed() {
                return pool.out.error(
                    conn,
                    id,
                    ErrorCode::Internal,
                    "the conversation could not be stored; try again",
                );
            }
            let position = pool.queue_position(&conversation);
            pool.tell_shard(&conversation, ShardCommand::Adopt { rec, conn, id, position });
        });
    }

    /// `conversation.close` (either member) or `conversation.resolve` (the agent).
    fn close(
        &mut self,
        conn: ConnId,
        user: &User,
        id: Option<RequestId>,
        conversation: &ConversationId,
        reason: CloseReason,
        batch: &mut Batch<Self>,
    ) {
        match self.open.get(conversation) {
            Some(rec) if is_member(user, rec) => {}
            Some(_) => return self.out.error(conn, id, ErrorCode::Forbidden, "this conversation is not yours"),
            None => return self.out.answer_not_open(&self.store, conn, user, id, conversation, None),
        }
        if reason == CloseReason::Resolved && user.role != Role::Agent {
            return self.out.error(conn, id, ErrorCode::Forbidden, "only the conversation's agent resolves it");
        }
        let closer = Closer { conn: Some(conn), id, by: user.id.clone(), reason };
        self.end(conversation, closer, batch);
    }

    /// Closes an open conversation: it leaves the queue or frees its agent's
    /// slot, and its shard tells the members.
    fn end(&mut self, conversation: &ConversationId, closer: Closer, batch: &mut Batch<Self>) {
        let Some(rec) = self.open.remove(conversation) else { return };
        self.away.remove(conversation);
        self.customer_open.remove(&rec.customer.id);
        self.queue.retain(|c| c != conversation);
        if let Some(agent) = &rec.agent {
            let idle = self.idle.mark();
            self.write_idle(&agent.id, idle, batch);
            if let Some(state) = self.agents.get_mut(&agent.id) {
                state.active.remove(conversation);
                state.idle_since = idle;
            }
        }
        info!(conversation = %conversation, by = %closer.by, reason = closer.reason.as_str(), "conversation closed");
        let conversation = conversation.clone();
        // After this round's commit, so the shard hears of the conversation
        // (its adoption, its assignment) before it hears of the close. Several
        // nodes: the close is stored in the round that frees the agent's slot.
        let stored = self.node.is_some();
        let write = Write::Close {
            conversation: conversation.clone(),
            by: closer.by.clone(),
            reason: closer.reason,
            at: now(),
        };
        let tell = move |pool: &mut Self, outcome: Outcome<'_>| {
            let Closer { conn, id, by, reason } = closer;
            if outcome.failed() {
                if let Some(conn) = conn {
                    pool.out.error(conn, id, ErrorCode::Internal, "the conversation could not be closed; try again");
                }
                return;
            }
            let members = [Some(rec.customer.id), rec.agent.map(|a| a.id)].into_iter().flatten().collect();
            pool.tell_shard(
                &conversation,
                ShardCommand::Close { conn, id, conversation: conversation.clone(), by, reason, members, stored },
            );
        };
        if stored {
            batch.write_then(write, tell);
        } else {
            batch.then(tell);
        }
        self.serve_queue(batch);
        self.announce_queue_positions(batch);
    }

    /// `conversation.transfer`: the assigned agent hands the conversation to
    /// another agent who can take it, or to the front of the queue (where it
    /// is never offered back to it: `declined_by`).
    fn transfer(
        &mut self,
        conn: ConnId,
        user: &User,
        id: Option<RequestId>,
        transfer: TransferConversation,
        batch: &mut Batch<Self>,
    ) {
        let conversation = transfer.conversation_id;
        let from = match self.open.get(&conversation) {
            Some(rec) if user.role == Role::Agent && is_member(user, rec) => {
                rec.agent.clone().expect("an agent member is the assigned agent")
            }
            Some(_) => {
                return self.out.error(conn, id, ErrorCode::Forbidden, "only the conversation's agent transfers it");
            }
            None => return self.out.answer_not_open(&self.store, conn, user, id, &conversation, None),
        };
        let max = self.max_conversations();
        let to = match &transfer.to_agent_id {
            Some(to) if *to == user.id => {
                return self.out.error(conn, id, ErrorCode::InvalidMessage, "data.toAgentId is this agent already");
            }
            Some(to) => match self.agents.get(to) {
                Some(agent) if agent.can_take(max) => Some(Participant { id: to.clone(), name: agent.name.clone() }),
                Some(agent) if agent.online => {
                    return self.out.error(conn, id, ErrorCode::LimitReached, "that agent is not taking conversations");
                }
                _ => return self.out.error(conn, id, ErrorCode::NotFound, "that agent is not online"),
            },
            None => None,
        };
        let idle = self.idle.mark();
        self.write_idle(&from.id, idle, batch);
        if let Some(agent) = self.agents.get_mut(&from.id) {
            agent.active.remove(&conversation);
            agent.idle_since = idle;
        }
        let rec = self.open.get_mut(&conversation).expect("checked above");
        let customer = rec.customer.id.clone();
        let seq = rec.last_seq;
        let write = match &to {
            Some(to) => {
                rec.agent = Some(to.clone());
                let agent = self.agents.get_mut(&to.id).expect("checked above");
                agent.active.insert(conversation.clone());
                agent.idle_since = idle;
                Write::Assign {
                    conversation: conversation.clone(),
                    agent: Some(to.clone()),
                    status: ConversationStatus::Active,
                    at: now(),
                    declined_by: None,
                }
            }
            None => {
                // First served, queued as of its opening, as a re-queued one;
                // never offered back to the agent who handed it over.
                let at = rec.created_at;
                rec.agent = None;
                rec.status = ConversationStatus::Queued;
                rec.queued_at = Some(at);
                rec.declined_by = Some(user.id.clone());
                self.queue.push_front(conversation.clone());
                Write::Assign {
                    conversation: conversation.clone(),
                    agent: None,
                    status: ConversationStatus::Queued,
                    at,
                    declined_by: Some(user.id.clone()),
                }
            }
        };
        info!(conversation = %conversation, from = %from.id, to = ?to.as_ref().map(|a| a.id.as_str()), "conversation transferred");
        let handed = conversation.clone();
        batch.write_then(write, move |pool, outcome| {
            if outcome.failed() {
                return pool.out.error(conn, id, ErrorCode::Internal, "the conversation could not be transferred");
            }
            let transferred =
                ShardCommand::Transferred { conversation: handed.clone(), from, to: to.clone(), customer };
            pool.tell_shard(&handed, transferred);
            if let Some(agent) = to {
                pool.tell_shard(&handed, ShardCommand::Assigned { conversation: handed.clone(), agent, seq });
            }
        });
        if transfer.to_agent_id.is_none() {
            self.serve_queue(batch);
            self.announce_queue_positions(batch);
        }
    }

    // ----- lifecycle --------------------------------------------------------

    /// A customer's connections (anywhere) came back or all went: its open
    /// conversation records since when it is away, and the queue moves.
    fn customer_presence(&mut self, customer: &UserId, online: bool, batch: &mut Batch<Self>) {
        let Some(conversation) = self.customer_open.get(customer).cloned() else { return };
        let Some(rec) = self.open.get_mut(&conversation) else { return };
        let since = if online { None } else { Some(now()) };
        if rec.customer_away_since.is_some() == since.is_some() {
            return;
        }
        rec.customer_away_since = since;
        let queued = rec.status == ConversationStatus::Queued;
        debug!(conversation = %conversation, customer = %customer, online, "customer presence");
        match since {
            Some(since) => self.start_away_timer(&conversation, since),
            None => {
                self.away.remove(&conversation);
            }
        }
        batch.write_then(Write::CustomerAway { conversation, since }, |_, _| {});
        if queued {
            // Back: it may be served now. Away: those behind it move up.
            self.serve_queue(batch);
            self.announce_queue_positions(batch);
        }
    }

    /// One node: closes the conversation `--customer-away-ms` from now unless
    /// its customer is back by then (a timer, as the agent's grace period).
    fn start_away_timer(&mut self, conversation: &ConversationId, since: Timestamp) {
        if self.node.is_some() {
            return;
        }
        self.absences += 1;
        let generation = self.absences;
        self.away.insert(conversation.clone(), generation);
        let waited = u64::try_from(now().as_unix_ms().saturating_sub(since.as_unix_ms())).unwrap_or(0);
        let left = Duration::from_millis(self.limits.customer_away_ms.saturating_sub(waited));
        let (internal, conversation) = (self.internal.clone(), conversation.clone());
        tokio::spawn(async move {
            tokio::time::sleep(left).await;
            if let Some(internal) = internal.upgrade() {
                let _ = internal.send(PoolCommand::CustomerAwayOver { conversation, generation });
            }
        });
    }

    fn close_away(&mut self, conversation: &ConversationId, batch: &mut Batch<Self>) {
        let closer = Closer { conn: None, id: None, by: UserId::system(), reason: CloseReason::CustomerAway };
        self.end(conversation, closer, batch);
    }

    /// Closes the `quiet` conversations still open (no message for
    /// `--conversation-idle-ms`) and, on several nodes (where the state is
    /// the store's, read this round), those of customers away for `--customer-away-ms`.
    fn lifecycle(&mut self, quiet: Vec<ConversationId>, batch: &mut Batch<Self>) {
        if self.node.is_some() {
            let now_ms = now().as_unix_ms();
            let away_ms = i64::try_from(self.limits.customer_away_ms).unwrap_or(i64::MAX);
            let mut away: Vec<(i64, ConversationId)> = self
                .open
                .values()
                .filter_map(|rec| rec.customer_away_since.map(|since| (since.as_unix_ms(), rec.id.clone())))
                .filter(|(since, _)| now_ms.saturating_sub(*since) >= away_ms)
                .collect();
            away.sort();
            for (_, conversation) in away {
                self.close_away(&conversation, batch);
            }
        }
        for conversation in quiet {
            let closer = Closer { conn: None, id: None, by: UserId::system(), reason: CloseReason::Idle };
            self.end(&conversation, closer, batch);
        }
    }

    /// Posts [`PoolCommand::Lifecycle`] every [`Limits::lifecycle_sweep`], with
    /// the conversations the store finds quiet for `--conversation-idle-ms`.
    fn sweep_lifecycle_every(&self) {
        let (store, internal) = (self.store.clone(), self.internal.clone());
        let (every, idle_ms) = (self.limits.lifecycle_sweep(), self.limits.conversation_idle_ms);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let quiet_since = now().as_unix_ms().saturating_sub(i64::try_from(idle_ms).unwrap_or(i64::MAX));
                let quiet = match Timestamp::from_unix_ms(quiet_since.max(0)) {
                    Some(since) => store.quiet_conversations(since).await.unwrap_or_else(|e| {
                        warn!(error = %e, "reading the idle conversations failed");
                        Vec::new()
                    }),
                    None => Vec::new(),
                };
                let Some(internal) = internal.upgrade() else { return };
                if internal.send(PoolCommand::Lifecycle { quiet }).is_err() {
                    return;
                }
            }
        });
    }

    /// One node, at start: every customer is away until it connects (those
    /// already away before the restart keep their time).
    async fn mark_customers_away(&mut self) {
        let at = now();
        let mut writes = Vec::new();
        let mut timers = Vec::new();
        for rec in self.open.values_mut() {
            if rec.customer_away_since.is_none() {
                rec.customer_away_since = Some(at);
                writes.push(Write::CustomerAway { conversation: rec.id.clone(), since: Some(at) });
            }
            timers.push((rec.id.clone(), rec.customer_away_since.unwrap_or(at)));
        }
        for (conversation, since) in timers {
            self.start_away_timer(&conversation, since);
        }
        if !writes.is_empty()
            && let Err(e) = self.store.apply(&writes).await
        {
            warn!(error = %e, "marking the customers away at start failed");
        }
    }

    fn agent_status(
        &mut self,
        conn: ConnId,
        user: &User,
        id: Option<RequestId>,
        available: bool,
        batch: &mut Batch<Self>,
    ) {
        if user.role != Role::Agent {
            return self.out.error(conn, id, ErrorCode::Forbidden, "only agents set an availability");
        }
        let idle = self.idle.mark();
        let agent = self.agents.entry(user.id.clone()).or_insert_with(|| Agent::new(&user.name, idle));
        if available && !agent.available {
            agent.idle_since = idle;
        }
        agent.available = available;
        // Connected here, whatever the store said before this round.
        agent.online = true;
        if self.node.is_some() {
            let write =
                Write::AgentAvailability { agent: user.id.clone(), name: user.name.clone(), available, at: now() };
            batch.write_then(write, |_, _| {});
        }
        info!(agent = %user.id, available, "agent status");
        self.serve_queue(batch);
        self.announce_queue_positions(batch);
        let agent_id = user.id.clone();
        batch.then(move |pool, _| {
            let active = pool.agents.get(&agent_id).map_or(0, |a| a.active.len());
            let status = AgentStatus { available, active_conversations: u32::try_from(active).unwrap_or(u32::MAX) };
            pool.say(conn, ServerMessage::AgentStatus(status), id);
        });
    }

    // ----- assignment -------------------------------------------------------

    fn max_conversations(&self) -> usize {
        self.limits.max_conversations_per_agent as usize
    }

    /// Assigns queued conversations, first first, while an agent is free;
    /// those of customers who are away wait, in their place, until they
    /// return, and one is never offered to the agent who handed it back.
    fn serve_queue(&mut self, batch: &mut Batch<Self>) {
        while let Some((index, agent_id)) = self.next_assignment() {
            let conversation = self.queue.remove(index).expect("index from next_assignment");
            let idle = self.idle.mark();
            self.write_idle(&agent_id, idle, batch);
            let Some(rec) = self.open.get_mut(&conversation) else { continue };
            let agent = self.agents.get_mut(&agent_id).expect("picked from the pool");
            agent.active.insert(conversation.clone());
            agent.idle_since = idle;
            let participant = Participant { id: agent_id.clone(), name: agent.name.clone() };
            // As the pool read it, before the assignment: at most the seq at the assignment.
            let seq = rec.last_seq;
            rec.agent = Some(participant.clone());
            rec.status = ConversationStatus::Active;
            rec.queued_at = None;
            info!(conversation = %conversation, agent = %agent_id, "assigned from the queue");
            rec.declined_by = None;
            let write = Write::Assign {
                conversation: conversation.clone(),
                agent: Some(participant.clone()),
                status: ConversationStatus::Active,
                at: now(),
                declined_by: None,
            };
            batch.write_then(write, move |pool, outcome| match outcome {
                Outcome::Applied(Applied::Done) => {
                    pool.tell_shard(
                        &conversation,
                        ShardCommand::Assigned { conversation: conversation.clone(), agent: participant, seq },
                    );
                }
                // Closed meanwhile: the agent's slot is free again.
                Outcome::Applied(_) => {
                    if let Some(agent) = pool.agents.get_mut(&participant.id) {
                        agent.active.remove(&conversation);
                    }
                }
                Outcome::Failed | Outcome::None => {}
            });
        }
    }

    /// The next queued conversation to assign (its place in the queue) and its
    /// agent: the first waiting one that some agent other than its decliner can take.
    fn next_assignment(&self) -> Option<(usize, UserId)> {
        let max = self.max_conversations();
        let anyone = pick_agent(&self.agents, max)?;
        self.queue.iter().enumerate().filter(|(_, c)| self.is_waiting(c)).find_map(|(index, c)| {
            let declined_by = self.open.get(c).and_then(|rec| rec.declined_by.as_ref());
            match declined_by {
                Some(decliner) if *decliner == anyone => {
                    pick_agent_except(&self.agents, max, decliner).map(|agent| (index, agent))
                }
                _ => Some((index, anyone.clone())),
            }
        })
    }

    /// Whether a queued conversation waits for an agent: its customer is not away.
    fn is_waiting(&self, conversation: &ConversationId) -> bool {
        self.open.get(conversation).is_some_and(|rec| rec.customer_away_since.is_none())
    }

    /// The conversations that wait for an agent, in the order they are served.
    fn waiting(&self) -> impl Iterator<Item = &ConversationId> {
        self.queue.iter().filter(|c| self.is_waiting(c))
    }

    /// A queued conversation's place among those that wait (its customer's
    /// own included: it is connected when it asks).
    fn queue_position(&self, conversation: &ConversationId) -> Option<NonZeroU32> {
        if !self.queue.contains(conversation) {
            return None;
        }
        let ahead = self.queue.iter().take_while(|c| *c != conversation).filter(|c| self.is_waiting(c)).count();
        NonZeroU32::new(u32::try_from(ahead + 1).unwrap_or(u32::MAX))
    }

    /// Tells every waiting customer its place, after the queue moved, behind
    /// what this round told the shards (a transfer to the queue before the
    /// position it gives).
    fn announce_queue_positions(&mut self, batch: &mut Batch<Self>) {
        batch.then(|pool, _| {
            let waiting: Vec<ConversationId> = pool.waiting().cloned().collect();
            for (index, conversation) in waiting.into_iter().enumerate() {
                let position = NonZeroU32::new(u32::try_from(index + 1).unwrap_or(u32::MAX)).expect("index + 1 > 0");
                let queued = Queued { conversation_id: conversation.clone(), position };
                let message = ServerMessage::ConversationQueued(queued);
                pool.tell_after(ShardCommand::ToConversation { conversation, message });
            }
        });
    }
}
