//! Fan-out: which connection hears which conversation, and delivery to them.
//!
//! The hub publishes every frame through a [`Bus`]; the in-process
//! [`LocalBus`] delivers to this node's connections. A Redis bus for several
//! nodes implements the same trait, publishing across nodes and delivering
//! locally with a `LocalBus` of its own, so neither the hub nor the
//! connection code changes.

mod local;

use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use petchat_protocol::{CloseCode, ConversationId, UserId};
use tokio_util::sync::CancellationToken;

pub use local::LocalBus;

/// A connection of this node.
pub type ConnId = u64;

/// Where a frame goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Every connection subscribed to the conversation.
    Conversation(ConversationId),
    /// Every connection of the user.
    User(UserId),
}

/// Who, among a topic's connections, does not get the frame.
#[derive(Debug, Clone, Copy, Default)]
pub enum Skip<'a> {
    /// Everyone gets it.
    #[default]
    Nobody,
    /// Not this connection (the sender, which gets an ack instead).
    Conn(ConnId),
    /// None of this user's connections (typing goes to the *other* members).
    User(&'a UserId),
}

/// How frames reach one connection: its bounded outbound queue, and the
/// switch that closes it when the queue overflows.
#[derive(Debug, Clone)]
pub struct ConnSink {
    tx: tokio::sync::mpsc::Sender<Utf8Bytes>,
    kick: Arc<Kick>,
}

impl ConnSink {
    /// A sink over a connection's queue and its kick switch.
    pub fn new(tx: tokio::sync::mpsc::Sender<Utf8Bytes>, kick: Arc<Kick>) -> Self {
        Self { tx, kick }
    }

    /// Queues a frame; a full queue closes the connection with 4001, so a
    /// reader that does not read never costs more than its queue. Returns
    /// whether the connection is still there (false once it closed).
    pub fn deliver(&self, frame: &Utf8Bytes) -> bool {
        match self.tx.try_send(frame.clone()) {
            Ok(()) => true,
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                self.kick.kick(CloseCode::SLOW_CONSUMER, "outbound queue full: read faster and resume");
                true
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Closes the connection with `code`.
    pub fn kick(&self, code: CloseCode, reason: &str) {
        self.kick.kick(code, reason);
    }
}

/// A one-shot request to close a connection, with the code to close it with.
#[derive(Debug, Default)]
pub struct Kick {
    token: CancellationToken,
    reason: Mutex<Option<(CloseCode, String)>>,
}

impl Kick {
    /// Asks the connection to close; the first reason wins.
    pub fn kick(&self, code: CloseCode, reason: &str) {
        let mut slot = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some((code, reason.to_owned()));
            self.token.cancel();
        }
    }

    /// Resolves once the connection was asked to close.
    pub async fn kicked(&self) -> (CloseCode, String) {
        self.token.cancelled().await;
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or((CloseCode::INTERNAL_ERROR, String::new()))
    }
}

/// Fan-out of frames to connections.
pub trait Bus: Send + Sync + 'static {
    /// Registers a connection of `user` (it hears `Topic::User(user)`).
    fn attach(&self, conn: ConnId, user: &UserId, sink: ConnSink);
    /// Forgets a connection and all its subscriptions.
    fn detach(&self, conn: ConnId);
    /// The connection hears the conversation from now on.
    fn subscribe(&self, conn: ConnId, conversation: &ConversationId);
    /// The connection stops hearing the conversation.
    fn unsubscribe(&self, conn: ConnId, conversation: &ConversationId);
    /// Drops every subscription to the conversation.
    fn unsubscribe_all(&self, conversation: &ConversationId);
    /// Delivers a frame to a topic's connections, less `skip`; returns how many got it.
    fn publish(&self, topic: &Topic, frame: &Utf8Bytes, skip: Skip<'_>) -> usize;
    /// Delivers a frame to one connection.
    fn send_to(&self, conn: ConnId, frame: &Utf8Bytes);
    /// Closes one connection.
    fn kick(&self, conn: ConnId, code: CloseCode, reason: &str);
}
