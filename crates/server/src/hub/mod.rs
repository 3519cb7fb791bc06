//! The hub: the single owner of conversation state (who is in which
//! conversation, the agent pool, the queue, typing), fed by every connection.
//!
//! Connections send [`Command`]s; one actor task applies them in order. It
//! gathers the writes of everything waiting into one store transaction (group
//! commit), and only after that commit sends acks and fans frames out through
//! the bus, so nothing is acknowledged before it is durable and every member
//! sees a conversation's messages in `seq` order.

mod actor;
pub(crate) mod frames;

pub(crate) use actor::{count_error, error_frame};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use petchat_protocol::{ClientMessage, CloseCode, RequestId, User};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::bus::{Bus, ConnId, ConnSink};
use crate::config::Limits;
use crate::store::{Store, StoreError};

/// What a connection asks of the hub.
#[derive(Debug)]
pub(crate) enum Command {
    /// A new authenticated connection; the hub queues `session.ready` first.
    Connect {
        conn: ConnId,
        user: User,
        /// The `exp` of the connection's token, for `session.ready`.
        token_expires_at: petchat_protocol::Timestamp,
        sink: ConnSink,
        reply: oneshot::Sender<Result<(), (CloseCode, String)>>,
    },
    /// The connection ended.
    Disconnect { conn: ConnId },
    /// A decoded client message (all but `ping`, which the connection answers).
    Request { conn: ConnId, id: Option<RequestId>, message: ClientMessage },
    /// An agent's grace period ended.
    GraceExpired { agent: petchat_protocol::UserId, generation: u64 },
    /// A `typing.start` expired without a stop.
    TypingExpired { conversation: petchat_protocol::ConversationId, user: petchat_protocol::UserId, generation: u64 },
}

/// The handle connections use to reach the hub.
#[derive(Debug, Clone)]
pub struct Hub {
    commands: mpsc::Sender<Command>,
    next_conn: Arc<AtomicU64>,
}

impl Hub {
    /// Loads the open conversations from `store` and starts the hub's task;
    /// the task ends once every handle is dropped and the last commands are
    /// committed.
    pub async fn start(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        limits: Limits,
    ) -> Result<(Self, JoinHandle<()>), StoreError> {
        let (commands, rx) = mpsc::channel(4 * limits.commit_batch.max(64));
        let actor = actor::Actor::load(store, bus, limits, commands.downgrade()).await?;
        let task = tokio::spawn(actor.run(rx));
        Ok((Self { commands, next_conn: Arc::new(AtomicU64::new(1)) }, task))
    }

    /// Registers a connection; refused with 1013 beyond the connection caps.
    pub async fn connect(
        &self,
        user: User,
        token_expires_at: petchat_protocol::Timestamp,
        sink: ConnSink,
    ) -> Result<ConnId, (CloseCode, String)> {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        self.send(Command::Connect { conn, user, token_expires_at, sink, reply }).await;
        match answer.await {
            Ok(Ok(())) => Ok(conn),
            Ok(Err(refusal)) => Err(refusal),
            Err(_) => Err((CloseCode::GOING_AWAY, "server shutting down".into())),
        }
    }

    /// Hands a client message to the hub; replies arrive on the connection's queue.
    pub async fn request(&self, conn: ConnId, id: Option<RequestId>, message: ClientMessage) {
        self.send(Command::Request { conn, id, message }).await;
    }

    /// Forgets a connection.
    pub async fn disconnect(&self, conn: ConnId) {
        self.send(Command::Disconnect { conn }).await;
    }

    async fn send(&self, command: Command) {
        // The hub outlives every connection task; a send fails only while the
        // process is shutting down, when there is nobody left to answer.
        let _ = self.commands.send(command).await;
    }
}
