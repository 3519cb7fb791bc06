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

mod batch;
mod chat;
mod conversations;
pub(crate) mod frames;
mod out;
mod pool;
mod registry;
mod rules;
mod shard;
mod typing;

#[cfg(test)]
mod tests;

pub(crate) use out::{count_error, error_frame};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use petchat_protocol::{ClientMessage, CloseCode, ConversationId, RequestId, ServerMessage, Timestamp, User};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::bus::{Bus, ConnId, ConnSink};
use crate::config::Limits;
use crate::store::{Store, StoreError};

use pool::PoolCommand;
use registry::Registry;
use shard::ShardCommand;

/// A connection registered with the hub: its id and whose it is.
#[derive(Debug, Clone)]
pub struct HubConn {
    /// The connection's id on this node.
    pub id: ConnId,
    /// The authenticated user.
    pub user: User,
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
        let shards = limits.hub_shards();
        let open = store.open_conversations().await?;
        let depth = 4 * limits.commit_batch.max(64);

        let (pool_tx, pool_rx) = mpsc::channel(depth);
        let (pool_internal, pool_internal_rx) = mpsc::unbounded_channel();
        let registry = Arc::new(Registry::new(bus.clone(), pool_internal.downgrade(), &limits));

        let (shard_txs, shard_rxs): (Vec<_>, Vec<_>) = (0..shards).map(|_| mpsc::channel(depth)).unzip();
        let (shard_internals, shard_internal_rxs): (Vec<_>, Vec<_>) =
            (0..shards).map(|_| mpsc::unbounded_channel()).unzip();
        let peers: Arc<[_]> = shard_internals.iter().map(mpsc::UnboundedSender::downgrade).collect();
        let mut tasks = Vec::with_capacity(shards + 1);
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
            });
            tasks.push(tokio::spawn(shard.run(rx, internal_rx)));
        }
        let pool = pool::Pool::new(pool::Parts {
            store: store.clone(),
            bus,
            limits: limits.clone(),
            shards: shard_internals.clone(),
            internal: pool_internal.downgrade(),
            open,
        });
        // The pool goes first: when it stops it drops the shards' internal
        // senders, so the shards drain after it.
        tasks.insert(0, tokio::spawn(pool.run(pool_rx, pool_internal_rx)));
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
        };
        Ok((Self(Arc::new(handles)), task))
    }

    /// Registers a connection and queues its `session.ready`; refused with
    /// 1013 beyond the connection caps, 1011 when the store cannot be read.
    pub async fn connect(
        &self,
        user: User,
        token_expires_at: Timestamp,
        sink: ConnSink,
    ) -> Result<HubConn, (CloseCode, String)> {
        let hub = &self.0;
        let id = hub.next_conn.fetch_add(1, Ordering::Relaxed);
        hub.registry.reserve(&user)?;
        // Read before the connection is attached: `session.ready` is its first frame.
        let conversations = match hub.store.member_conversations(&user).await {
            Ok(conversations) => conversations,
            Err(e) => {
                hub.registry.unreserve(&user);
                tracing::error!(error = %e, "reading a user's conversations failed");
                let reason = petchat_protocol::close::reason_with_retry_hint("storage unavailable", 2_000);
                return Err((CloseCode::INTERNAL_ERROR, reason));
            }
        };
        let ready = out::session_ready(&user, token_expires_at, &conversations, &hub.limits);
        sink.deliver(&frames::frame(ServerMessage::SessionReady(ready), None));
        out::count_out("session.ready", 1);
        hub.registry.attach(id, &user, sink);
        tracing::debug!(conn = id, user = %user.id, role = user.role.as_str(), "connected");
        Ok(HubConn { id, user })
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
            | ClientMessage::ConversationClose(_) => {
                let _ = hub.pool.send(PoolCommand::Request { conn: conn_id, user, id, message }).await;
                return;
            }
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
        };
        let shard = shard_of(conversation, hub.shards.len());
        let _ = hub.shards[shard].send(ShardCommand::Request { conn: conn_id, user, id, message }).await;
    }

    /// Forgets a connection.
    pub fn disconnect(&self, conn: &HubConn) {
        self.0.registry.detach(conn.id, &conn.user);
    }
}
