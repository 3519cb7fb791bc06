//! The hub: the owner of conversation state, fed by every connection.
//!
//! It is split so that one node uses all of its cores and nothing global sits
//! on the hot path:
//!
//! - [`shard`]: conversations are partitioned across shards by id (one per
//!   core by default, `--hub-shards`). A shard owns its conversations'
//!   members, typing and last seq, and answers chat, receipts, typing, joins
//!   and closes. Each shard gathers the writes of everything waiting into one
//!   store transaction (group commit, [`batch`]) and only after that commit
//!   sends acks and fans frames out, so nothing is acknowledged before it is
//!   durable and every member sees a conversation's messages in `seq` order.
//!   Store reads (joins, replays) run off the shard's loop.
//! - [`pool`]: the agent pool and the one queue. It opens conversations,
//!   decides assignments ([`rules`]) and closes, commits them, and tells the
//!   conversation's shard.
//! - [`registry`]: this node's connections per user (the caps, and whether a
//!   user is online), behind a short lock taken at connect and disconnect.
//!
//! A connection's requests about one conversation go to one shard, in order;
//! `conversation.open`, `conversation.close` and `agent.status` go to the pool,
//! which forwards a close to the shard behind the requests already queued there.

mod access;
mod batch;
mod chat;
mod conversations;
pub(crate) mod dashboard;
pub(crate) mod feeds;
pub(crate) mod frames;
mod out;
mod pool;
mod registry;
pub(crate) mod remote;
mod rules;
mod sequence;
mod shard;
mod shared;
mod typing;

#[cfg(test)]
mod tests;

pub(crate) use out::{count_error, error_frame};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use std::collections::BTreeSet;

use petchat_protocol::api::{FirstResponse, Stats, SupportStats};
use petchat_protocol::limits::{MAX_TOPICS_PER_CONNECTION, PAST_CONVERSATIONS_IN_READY};
use petchat_protocol::{
    ClientMessage, CloseCode, ConversationId, ConversationList, ErrorCode, LastSeq, ListConversations, ListScope,
    NotificationsState, PresenceStatus, RequestId, Role, ServerMessage, SubscribeTopic, Timestamp, TopicName,
    TopicPattern, User, UserId,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::bus::{Bus, ConnId, ConnSink};
use crate::cluster::{Attached, Detached, LinkEvent, RedisLink};
use crate::config::{Limits, TopicSettings};
use crate::store::{ListFilter, Store, StoreError};

use access::TopicAccess;
use feeds::Feeds;
use pool::PoolCommand;
use registry::Registry;
use remote::Remote;
use shard::ShardCommand;

/// A connection registered with the hub: its id, whose it is, and its topics.
#[derive(Debug)]
pub struct HubConn {
    /// The connection's id on this node.
    pub id: ConnId,
    /// The authenticated user.
    pub user: User,
    /// Counted in Redis (several nodes): its close is counted off again.
    counted: bool,
    /// Its outbound queue, which topic shards deliver to.
    sink: ConnSink,
    /// The topics its token grants (the `topics` claim).
    grants: Vec<TopicPattern>,
    /// The topics it subscribed to (at most `MAX_TOPICS_PER_CONNECTION`).
    topics: std::sync::Mutex<BTreeSet<TopicName>>,
}

impl HubConn {
    fn topics(&self) -> std::sync::MutexGuard<'_, BTreeSet<TopicName>> {
        self.topics.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// This node's place in a cluster (SPEC §10): the Redis link and its events.
#[derive(Debug)]
pub struct Cluster {
    /// The link to the other nodes.
    pub link: RedisLink,
    /// What the link hears.
    pub events: mpsc::Receiver<LinkEvent>,
}

/// The handle connections use to reach the hub; clones share it.
#[derive(Debug, Clone)]
pub struct Hub(Arc<Handles>);

struct Handles {
    /// Requests to each shard, in the order connections sent them.
    shards: Vec<mpsc::Sender<ShardCommand>>,
    /// Requests to the pool.
    pool: mpsc::Sender<PoolCommand>,
    /// The pool's and the shards' internal channels, held here so that they
    /// stay open while any connection may still use the hub.
    _internal: (mpsc::UnboundedSender<PoolCommand>, Vec<mpsc::UnboundedSender<ShardCommand>>),
    registry: Arc<Registry>,
    store: Arc<dyn Store>,
    limits: Limits,
    next_conn: AtomicU64,
    /// The other nodes, in a cluster.
    remote: Option<Arc<Remote>>,
    /// Topics and notifications.
    feeds: Feeds,
    /// Who may subscribe to which topic.
    access: TopicAccess,
}

impl std::fmt::Debug for Handles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("shards", &self.shards.len()).finish_non_exhaustive()
    }
}

/// Which of `shards` holds a conversation: a stable hash of its id, so every
/// node agrees and a restart changes nothing.
pub(crate) fn shard_of(conversation: &ConversationId, shards: usize) -> usize {
    // FNV-1a: stable across processes and releases, unlike std's hasher.
    let hash = conversation
        .as_str()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3));
    (hash % shards.max(1) as u64) as usize
}

impl Hub {
    /// Loads the open conversations from `store` and starts the pool and the
    /// shards; the returned task ends once every handle is dropped and the
    /// last commands are committed.
    pub async fn start(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        limits: Limits,
    ) -> Result<(Self, JoinHandle<()>), StoreError> {
        Self::start_in(store, bus, limits, TopicSettings::default(), None).await
    }

    /// Starts the hub as [`Hub::start`] does, as a node of `cluster` when
    /// given: then shards hold only the conversations used here, and the
    /// pool's state is shared through the store.
    pub async fn start_in(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        limits: Limits,
        topics: TopicSettings,
        cluster: Option<Cluster>,
    ) -> Result<(Self, JoinHandle<()>), StoreError> {
        let shards = limits.hub_shards();
        let (remote, events) = match cluster {
            Some(Cluster { link, events }) => (Some(Arc::new(Remote::new(link))), Some(events)),
            None => (None, None),
        };
        // A node of a cluster reads conversations as they are used.
        let open = if remote.is_some() { Vec::new() } else { store.open_conversations().await? };
        let depth = 4 * limits.commit_batch.max(64);

        let (pool_tx, pool_rx) = mpsc::channel(depth);
        let (pool_internal, pool_internal_rx) = mpsc::unbounded_channel();
        let registry = Arc::new(Registry::new(bus.clone(), pool_internal.downgrade(), &limits, remote.clone()));

        let (shard_txs, shard_rxs): (Vec<_>, Vec<_>) = (0..shards).map(|_| mpsc::channel(depth)).unzip();
        let (shard_internals, shard_internal_rxs): (Vec<_>, Vec<_>) =
            (0..shards).map(|_| mpsc::unbounded_channel()).unzip();
        let peers: Arc<[_]> = shard_internals.iter().map(mpsc::UnboundedSender::downgrade).collect();
        let mut tasks = Vec::with_capacity(2 * shards + 1);
        let access = TopicAccess::new(&topics);
        let out = out::Out { bus: bus.clone(), remote: remote.clone() };
        let (feeds, feed_tasks) =
            Feeds::start(store.clone(), out, topics, limits.max_replay, limits.commit_batch, shards);
        for (index, (rx, internal_rx)) in shard_rxs.into_iter().zip(shard_internal_rxs).enumerate() {
            let mine = open.iter().filter(|rec| shard_of(&rec.id, shards) == index).cloned();
            let shard = shard::Shard::new(shard::Parts {
                index,
                shards,
                store: store.clone(),
                bus: bus.clone(),
                registry: registry.clone(),
                limits: limits.clone(),
                pool: pool_internal.downgrade(),
                internal: peers[index].clone(),
                peers: peers.clone(),
                open: mine.collect(),
                remote: remote.clone(),
            });
            tasks.push(tokio::spawn(shard.run(rx, internal_rx).in_current_span()));
        }
        if let Some(events) = events {
            let router = remote::Router {
                node: remote.as_ref().expect("a cluster has a link").node().clone(),
                bus: bus.clone(),
                store: store.clone(),
                shards: peers.to_vec(),
                pool: pool_internal.downgrade(),
                feeds: feeds.clone(),
            };
            tokio::spawn(router.run(events).in_current_span());
        }
        let pool = pool::Pool::new(pool::Parts {
            store: store.clone(),
            bus,
            limits: limits.clone(),
            shards: shard_internals.clone(),
            internal: pool_internal.downgrade(),
            open,
            remote: remote.clone(),
            feeds: feeds.clone(),
        });
        // The pool goes first: when it stops it drops the shards' internal
        // senders, so the shards drain after it.
        tasks.insert(0, tokio::spawn(pool.run(pool_rx, pool_internal_rx).in_current_span()));
        tasks.extend(feed_tasks);
        let task = tokio::spawn(async move {
            for task in tasks {
                let _ = task.await;
            }
        });
        let handles = Handles {
            shards: shard_txs,
            pool: pool_tx,
            _internal: (pool_internal, shard_internals),
            registry,
            store,
            limits,
            next_conn: AtomicU64::new(1),
            remote,
            feeds,
            access,
        };
        Ok((Self(Arc::new(handles)), task))
    }

    /// Registers a connection and queues its `session.ready`; refused with
    /// 1013 beyond the connection caps, 1011 when the store cannot be read.
    pub async fn connect(
        &self,
        user: User,
        grants: Vec<TopicPattern>,
        token_expires_at: Timestamp,
        sink: ConnSink,
    ) -> Result<HubConn, (CloseCode, String)> {
        self.connect_from(user, grants, token_expires_at, sink, None).await
    }

    /// Registers an SSE stream as [`Hub::connect`] registers a socket (it
    /// counts toward the same caps and hears the user's notifications); its
    /// notifications start after `notifications_after` when it resumes, with
    /// the unread ones otherwise.
    pub(crate) async fn connect_stream(
        &self,
        user: User,
        grants: Vec<TopicPattern>,
        token_expires_at: Timestamp,
        sink: ConnSink,
        notifications_after: Option<LastSeq>,
    ) -> Result<HubConn, (CloseCode, String)> {
        self.connect_from(user, grants, token_expires_at, sink, notifications_after).await
    }

    async fn connect_from(
        &self,
        user: User,
        grants: Vec<TopicPattern>,
        token_expires_at: Timestamp,
        sink: ConnSink,
        notifications_after: Option<LastSeq>,
    ) -> Result<HubConn, (CloseCode, String)> {
        let hub = &self.0;
        let id = hub.next_conn.fetch_add(1, Ordering::Relaxed);
        hub.registry.reserve(&user)?;
        // In a cluster the user's channel is heard before its conversations
        // are read: what another node tells it after the read reaches it.
        let heard = async {
            match &hub.remote {
                Some(remote) => Some(remote.clone().hear_user(&user.id).await),
                None => None,
            }
        };
        let (counted, heard) = tokio::join!(self.count_in_cluster(&user), heard);
        let (counted, first) = counted?;
        // Read before the connection is attached: `session.ready` is its first frame.
        let max_replay = hub.limits.max_replay;
        let read = async {
            tokio::try_join!(
                hub.store.ready_conversations(&user, PAST_CONVERSATIONS_IN_READY),
                hub.feeds.unread(&user.id, notifications_after, max_replay)
            )
        };
        let ((conversations, past), unread) = match read.await {
            Ok(read) => read,
            Err(e) => {
                hub.registry.unreserve(&user);
                self.uncount_in_cluster(&user, counted);
                tracing::error!(error = %e, "reading a user's conversations failed");
                let reason = petchat_protocol::close::reason_with_retry_hint("storage unavailable", 2_000);
                return Err((CloseCode::INTERNAL_ERROR, reason));
            }
        };
        let notifications = NotificationsState { unread: unread.unread(), last_seq: unread.last_seq };
        let ready = out::session_ready(&user, token_expires_at, &conversations, past, notifications, &hub.limits);
        sink.deliver(&frames::frame(ServerMessage::SessionReady(ready), None));
        out::count_out("session.ready", 1);
        deliver_notifications(&sink, &unread.items);
        hub.registry.attach(id, &user, sink.clone());
        // A notification stored after the read and delivered before the
        // attach would be missed: read what came since (usually nothing). One
        // stored and delivered in between can then arrive twice; clients
        // keep the last seq they showed (the session core does).
        if let Ok(late) = hub.feeds.unread(&user.id, Some(unread.last_seq), max_replay).await {
            deliver_notifications(&sink, &late.items);
        }
        // The connection holds the channel now.
        drop(heard);
        if first {
            // The user's first connection anywhere: its conversations hear it.
            let ids = conversations.into_iter().map(|rec| rec.id);
            self.tell_presence(ids, &user.id, PresenceStatus::Online);
            self.tell_customer_presence(&user, true);
        }
        tracing::debug!(conn = id, user = %user.id, role = user.role.as_str(), "connected");
        let topics = std::sync::Mutex::new(BTreeSet::new());
        Ok(HubConn { id, user, counted, sink, grants, topics })
    }

    /// Counts a connection of `user` across the cluster: whether it was
    /// counted, and whether it is the user's first anywhere. Refused with
    /// 1013 at the per-user cap. While Redis does not answer, the node
    /// serves its own connections: counted here only, announced online.
    async fn count_in_cluster(&self, user: &User) -> Result<(bool, bool), (CloseCode, String)> {
        let hub = &self.0;
        let Some(remote) = &hub.remote else { return Ok((false, false)) };
        match remote.link().attach(user.id.as_str(), hub.limits.max_connections_per_user).await {
            Ok(Attached::Counted { first_anywhere }) => Ok((true, first_anywhere)),
            Ok(Attached::Refused { .. }) => {
                hub.registry.unreserve(user);
                let reason =
                    petchat_protocol::close::reason_with_retry_hint("too many connections for this user", 10_000);
                Err((CloseCode::TRY_AGAIN_LATER, reason))
            }
            Err(e) => {
                tracing::warn!(error = %e, user = %user.id, "counting a connection in redis failed: counted on this node only");
                Ok((false, true))
            }
        }
    }

    /// Counts a connection off again; the user's last anywhere goes offline
    /// for the members of its conversations.
    fn uncount_in_cluster(&self, user: &User, counted: bool) {
        let hub = &self.0;
        let Some(remote) = hub.remote.clone().filter(|_| counted) else { return };
        let (hub_handle, user) = (self.clone(), user.clone());
        tokio::spawn(async move {
            match remote.link().detach(user.id.as_str()).await {
                Ok(Detached::LastAnywhere) => {}
                Ok(Detached::StillOnline) => return,
                Err(e) => {
                    return tracing::warn!(error = %e, user = %user.id, "counting a connection off in redis failed");
                }
            }
            hub_handle.tell_customer_presence(&user, false);
            match hub_handle.0.store.member_conversations(&user).await {
                Ok(conversations) => {
                    let ids = conversations.into_iter().map(|rec| rec.id);
                    hub_handle.tell_presence(ids, &user.id, PresenceStatus::Offline);
                }
                Err(e) => {
                    tracing::warn!(error = %e, user = %user.id, "presence: reading the user's conversations failed")
                }
            }
        });
    }

    /// Several nodes: a customer's first connection anywhere opened, or its
    /// last closed; the shared pool records it (away customers' conversations
    /// wait and are closed after `--customer-away-ms`). One node: the registry tells the pool.
    fn tell_customer_presence(&self, user: &User, online: bool) {
        if self.0.remote.is_some() && user.role == Role::Customer {
            let _ = self.0.pool.try_send(PoolCommand::CustomerPresence { customer: user.id.clone(), online });
        }
    }

    /// Presence of `user` to the members of each conversation, through its shard.
    fn tell_presence(
        &self,
        conversations: impl Iterator<Item = ConversationId>,
        user: &UserId,
        status: PresenceStatus,
    ) {
        let internal = &self.0._internal.1;
        for conversation in conversations {
            let shard = shard_of(&conversation, internal.len());
            let _ = internal[shard].send(ShardCommand::Presence { conversation, user: user.clone(), status });
        }
    }

    /// Hands a client message to the part of the hub that answers it;
    /// replies arrive on the connection's queue.
    pub async fn request(&self, conn: &HubConn, id: Option<RequestId>, message: ClientMessage) {
        let hub = &self.0;
        let (conn_id, user) = (conn.id, conn.user.clone());
        // The hub outlives every connection task; a send fails only while the
        // process is shutting down, when there is nobody left to answer.
        let conversation = match &message {
            ClientMessage::ConversationOpen(_)
            | ClientMessage::AgentStatus(_)
            | ClientMessage::ConversationClose(_)
            | ClientMessage::ConversationResolve(_)
            | ClientMessage::ConversationTransfer(_) => {
                let _ = hub.pool.send(PoolCommand::Request { conn: conn_id, user, id, message }).await;
                return;
            }
            ClientMessage::ConversationList(m) => return self.list(conn, id, m.clone()),
            ClientMessage::ConversationJoin(m) => &m.conversation_id,
            ClientMessage::ConversationLeave(m) => &m.conversation_id,
            ClientMessage::ChatSend(m) => &m.conversation_id,
            ClientMessage::MessageDelivered(m) | ClientMessage::MessageRead(m) => &m.conversation_id,
            ClientMessage::TypingStart(m) | ClientMessage::TypingStop(m) => &m.conversation_id,
            ClientMessage::Ping(_) => {
                hub.registry.send_to(conn_id, &frames::frame(ServerMessage::Pong(Default::default()), id));
                return;
            }
            // The connection answers it itself (`token_clock`): the token is not the hub's.
            ClientMessage::SessionRefresh(_) => return,
            ClientMessage::TopicSubscribe(m) => return self.subscribe(conn, id, m.clone()).await,
            ClientMessage::TopicUnsubscribe(m) => {
                conn.topics().remove(&m.topic);
                return hub.feeds.unsubscribe(conn_id, conn.sink.clone(), id, m.topic.clone()).await;
            }
            ClientMessage::NotificationRead(m) => {
                return hub.feeds.mark_read(user.id, m.up_to_seq, conn_id, conn.sink.clone(), id).await;
            }
        };
        let shard = shard_of(conversation, hub.shards.len());
        let _ = hub.shards[shard].send(ShardCommand::Request { conn: conn_id, user, id, message }).await;
    }

    /// `conversation.list`: read off the connection's task, answered with
    /// `conversation.listed` (the queue only to agents: `forbidden` otherwise).
    fn list(&self, conn: &HubConn, id: Option<RequestId>, request: ListConversations) {
        let scope = request.scope.unwrap_or_default();
        if scope == ListScope::Queue && conn.user.role != Role::Agent {
            out::count_error(ErrorCode::Forbidden);
            conn.sink.deliver(&error_frame(ErrorCode::Forbidden, "only agents see the queue", id));
            return;
        }
        let filter = ListFilter {
            scope,
            status: request.status,
            query: request.query,
            after: request.after,
            limit: request.limit.unwrap_or_default().get() as usize,
        };
        let (store, user, sink) = (self.0.store.clone(), conn.user.clone(), conn.sink.clone());
        tokio::spawn(async move {
            match store.list_conversations(&user, &filter).await {
                Ok(mut page) => {
                    let has_more = page.len() > filter.limit;
                    page.truncate(filter.limit);
                    let conversations = page.into_iter().map(out::summary).collect();
                    let listed = ConversationList { conversations, has_more };
                    if sink.deliver(&frames::frame(ServerMessage::ConversationListed(listed), id)) {
                        out::count_out("conversation.listed", 1);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "listing conversations failed");
                    out::count_error(ErrorCode::Internal);
                    let _ = sink.deliver(&error_frame(
                        ErrorCode::Internal,
                        "the conversations could not be read; try again",
                        id,
                    ));
                }
            }
        });
    }

    /// `topic.subscribe`: refused with `forbidden` unless granted (SPEC §11),
    /// with `limit_reached` beyond the topics one connection may hold.
    async fn subscribe(&self, conn: &HubConn, id: Option<RequestId>, request: SubscribeTopic) {
        let hub = &self.0;
        let refusal = if !hub.access.allows(conn.user.role, &conn.grants, &request.topic) {
            Some((ErrorCode::Forbidden, format!("topic {} is not granted to this user", request.topic)))
        } else {
            let mut topics = conn.topics();
            if topics.len() >= MAX_TOPICS_PER_CONNECTION && !topics.contains(&request.topic) {
                Some((
                    ErrorCode::LimitReached,
                    format!("a connection holds at most {MAX_TOPICS_PER_CONNECTION} topics: unsubscribe first"),
                ))
            } else {
                topics.insert(request.topic.clone());
                None
            }
        };
        if let Some((code, message)) = refusal {
            out::count_error(code);
            conn.sink.deliver(&error_frame(code, &message, id));
            return;
        }
        hub.feeds.subscribe(conn.id, conn.sink.clone(), id, request.topic, request.after_seq).await;
    }

    /// Whether the connection's user may subscribe to `topic` (SPEC §11).
    pub(crate) fn allows(&self, conn: &HubConn, topic: &TopicName) -> bool {
        self.0.access.allows(conn.user.role, &conn.grants, topic)
    }

    /// Subscribes an SSE stream to a topic (its access checked by the caller).
    pub(crate) async fn subscribe_stream(&self, conn: &HubConn, topic: TopicName, after: Option<LastSeq>) {
        conn.topics().insert(topic.clone());
        self.0.feeds.subscribe(conn.id, conn.sink.clone(), None, topic, after).await;
    }

    /// Forgets a connection.
    pub fn disconnect(&self, conn: &HubConn) {
        self.0.registry.detach(conn.id, &conn.user);
        self.uncount_in_cluster(&conn.user, conn.counted);
        let topics: Vec<TopicName> = std::mem::take(&mut *conn.topics()).into_iter().collect();
        if !topics.is_empty() {
            self.0.feeds.gone(conn.id, topics);
        }
    }

    /// Topics and notifications, for the server API.
    pub(crate) fn feeds(&self) -> &Feeds {
        &self.0.feeds
    }

    /// `/v1/api/stats`: the connections, the queue, the agents and the open
    /// conversations, across every node; `None` when the pool or Redis
    /// does not answer.
    pub(crate) async fn stats(&self) -> Option<Stats> {
        let hub = &self.0;
        let (reply, answer) = pool::StatsReply::new();
        hub.pool.send(PoolCommand::Stats { reply }).await.ok()?;
        let connections = async {
            match &hub.remote {
                Some(remote) => remote.link().connections_total().await.map_err(|e| {
                    tracing::warn!(error = %e, "stats: counting connections in redis failed");
                }),
                None => Ok(hub.registry.total() as u64),
            }
        };
        let (pool, connections) = tokio::join!(answer, connections);
        let (pool, connections) = (pool.ok()?, connections.ok()?);
        Some(Stats { connections, queue: pool.queue, agents: pool.agents, conversations: pool.conversations })
    }

    /// The data of a `support.stats` event: [`Hub::stats`] and the first
    /// responses of the conversations opened in the last hour.
    pub(crate) async fn support_stats(&self) -> Option<SupportStats> {
        let since = Timestamp::from_unix_ms(frames::now().as_unix_ms() - 3_600_000)?;
        let (stats, waits) = tokio::join!(self.stats(), self.0.store.first_responses(since));
        let waits = waits.map_err(|e| tracing::warn!(error = %e, "stats: reading first responses failed")).ok()?;
        Some(SupportStats { stats: stats?, first_response: FirstResponse::of(waits) })
    }

    /// Whether this node holds the cluster-wide lease `name` (always on one node).
    pub(crate) async fn holds_lease(&self, name: &str, hold: std::time::Duration) -> bool {
        match &self.0.remote {
            Some(remote) => remote.link().lease(name, hold).await.unwrap_or_else(|e| {
                tracing::debug!(error = %e, name, "taking a lease failed");
                false
            }),
            None => true,
        }
    }

    /// Whether a user has connections, and how many: on every node in a
    /// cluster (Redis's count), this node's otherwise.
    pub(crate) async fn presence(&self, user: &UserId) -> Result<u64, crate::cluster::ClusterError> {
        let hub = &self.0;
        match &hub.remote {
            Some(remote) => remote.link().connections_of(user.as_str()).await,
            None => Ok(hub.registry.conns_of(user).len() as u64),
        }
    }

    /// Whether the cluster's Redis answers (`None` on one node), for `/readyz`.
    pub async fn cluster_ready(&self) -> Option<Result<(), crate::cluster::ClusterError>> {
        let remote = self.0.remote.as_ref()?;
        Some(remote.link().ping().await)
    }
}

/// Queues stored notifications on a new connection, oldest first.
fn deliver_notifications(sink: &ConnSink, items: &[crate::store::FeedItem]) {
    for item in items {
        match feeds::notification(item) {
            Ok(notification) => {
                sink.deliver(&frames::frame(ServerMessage::Notification(notification), None));
            }
            Err(e) => tracing::warn!(error = %e, "a stored notification is unreadable: skipped"),
        }
    }
    out::count_out("notification", items.len());
}
