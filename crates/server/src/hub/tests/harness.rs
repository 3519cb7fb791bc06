//! A hub with no sockets: connections are queues the test reads, the store
//! is a [`MemoryStore`], the clock is tokio's paused one.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use petchat_protocol::{
    ClientMessage, ClientMessageId, ConversationId, JoinConversation, LastSeq, MessageText, OpenConversation,
    ReceiptUpTo, RequestId, Role, SendChat, Seq, Timestamp, User, UserId,
};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::bus::{ConnSink, Kick, LocalBus};
use crate::config::{Config, Limits};
use crate::hub::{Hub, HubConn};
use crate::store::MemoryStore;

/// How long a test waits, on the paused clock, for a frame that should come.
/// The clock jumps ahead when every task is idle, so waiting costs nothing.
const WAIT: Duration = Duration::from_secs(30);

/// A hub over a memory store and a local bus.
pub(crate) struct World {
    pub(crate) hub: Hub,
    pub(crate) store: Arc<MemoryStore>,
    pub(crate) limits: Limits,
}

impl World {
    /// A hub with four shards and default limits, adjusted by `tune`.
    pub(crate) async fn new(tune: impl FnOnce(&mut Limits)) -> Self {
        let mut limits = Config::with_defaults("memory:", "secret").limits;
        limits.hub_shards = 4;
        tune(&mut limits);
        Self::on(Arc::new(MemoryStore::new()), limits).await
    }

    /// A hub over an existing store (a restart).
    pub(crate) async fn on(store: Arc<MemoryStore>, limits: Limits) -> Self {
        let (hub, _task) = Hub::start(store.clone(), Arc::new(LocalBus::default()), limits.clone()).await.expect("hub");
        Self { hub, store, limits }
    }

    /// A connection of `id` with `role`, its `session.ready` already read.
    pub(crate) async fn connect(&self, id: &str, role: Role) -> Peer {
        let mut peer = self.try_connect(id, role).await.expect("connected");
        peer.expect("session.ready").await;
        peer
    }

    /// A connection, or the close code and reason it was refused with.
    pub(crate) async fn try_connect(&self, id: &str, role: Role) -> Result<Peer, (u16, String)> {
        let user = User { id: UserId::new(id).expect("id"), role, name: format!("{id} name") };
        let (tx, rx) = mpsc::channel(self.limits.outbound_queue);
        let kick = Arc::new(Kick::default());
        match self.hub.connect(user, Vec::new(), Timestamp::MAX, ConnSink::new(tx, kick.clone())).await {
            Ok(conn) => Ok(Peer { hub: self.hub.clone(), conn, rx, next_id: 0 }),
            Err((code, reason)) => Err((code.code(), reason)),
        }
    }

    /// A customer and an available agent in one conversation; returns its id.
    pub(crate) async fn pair(&self, customer: &str, agent: &str) -> (Peer, Peer, ConversationId) {
        let mut agent = self.available_agent(agent).await;
        let mut customer = self.connect(customer, Role::Customer).await;
        let id = customer.open().await;
        customer.expect("agent.assigned").await;
        agent.expect("agent.assigned").await;
        (customer, agent, id)
    }

    /// An agent connected and available.
    pub(crate) async fn available_agent(&self, id: &str) -> Peer {
        let mut agent = self.connect(id, Role::Agent).await;
        agent.status(true).await;
        agent
    }
}

/// One connection: what it sends, and the frames it receives.
pub(crate) struct Peer {
    hub: Hub,
    pub(crate) conn: HubConn,
    rx: mpsc::Receiver<Utf8Bytes>,
    next_id: u32,
}

impl Peer {
    /// Sends a request with a fresh id; returns the id.
    pub(crate) async fn request(&mut self, message: ClientMessage) -> String {
        self.next_id += 1;
        let id = format!("r{}", self.next_id);
        self.hub.request(&self.conn, Some(RequestId::new(id.clone()).expect("id")), message).await;
        id
    }

    /// The next frame, whatever it is.
    pub(crate) async fn next(&mut self) -> Value {
        let frame = tokio::time::timeout(WAIT, self.rx.recv()).await.expect("a frame in time").expect("queue open");
        serde_json::from_str(frame.as_str()).expect("frames are JSON")
    }

    /// The next frame, which must be of type `kind`.
    pub(crate) async fn expect(&mut self, kind: &str) -> Value {
        let frame = self.next().await;
        assert_eq!(frame["type"], kind, "expected {kind}, got {frame}");
        frame
    }

    /// The next frame of type `kind`, passing over the others.
    pub(crate) async fn until(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.next().await;
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    /// The types of the frames that arrive until none has come for `quiet`.
    pub(crate) async fn types_until_quiet(&mut self, quiet: Duration) -> Vec<String> {
        let mut types = Vec::new();
        while let Ok(Some(frame)) = tokio::time::timeout(quiet, self.rx.recv()).await {
            let value: Value = serde_json::from_str(frame.as_str()).expect("JSON");
            types.push(value["type"].as_str().expect("a type").to_owned());
        }
        types
    }

    /// Asserts that nothing arrives for a second of (paused) time.
    pub(crate) async fn expect_silence(&mut self) {
        let types = self.types_until_quiet(Duration::from_secs(1)).await;
        assert!(types.is_empty(), "expected silence, got {types:?}");
    }

    /// `agent.status`, answered.
    pub(crate) async fn status(&mut self, available: bool) -> Value {
        self.request(ClientMessage::AgentStatus(petchat_protocol::SetAgentStatus { available })).await;
        self.expect("agent.status").await
    }

    /// `conversation.open`; returns the conversation's id.
    pub(crate) async fn open(&mut self) -> ConversationId {
        self.request(ClientMessage::ConversationOpen(OpenConversation::default())).await;
        let opened = self.expect("conversation.opened").await;
        conversation_id(&opened["data"]["conversation"]["id"])
    }

    /// `chat.send` with the idempotency key `key`.
    pub(crate) async fn send(&mut self, conversation: &ConversationId, key: u8, text: &str) -> String {
        self.request(ClientMessage::ChatSend(SendChat {
            conversation_id: conversation.clone(),
            client_message_id: ClientMessageId::from_random_bytes([key; 16]),
            text: MessageText::new(text).expect("text"),
            attachments: Default::default(),
        }))
        .await
    }

    /// `conversation.join` after `after_seq`.
    pub(crate) async fn join(&mut self, conversation: &ConversationId, after_seq: u64) -> String {
        let join = JoinConversation {
            conversation_id: conversation.clone(),
            after_seq: Some(LastSeq::new(after_seq).expect("seq")),
        };
        self.request(ClientMessage::ConversationJoin(join)).await
    }

    /// `message.read` up to `seq`.
    pub(crate) async fn read(&mut self, conversation: &ConversationId, seq: u64) -> String {
        let up_to = ReceiptUpTo { conversation_id: conversation.clone(), up_to_seq: Seq::new(seq).expect("seq") };
        self.request(ClientMessage::MessageRead(up_to)).await
    }

    /// `conversation.close`.
    pub(crate) async fn close(&mut self, conversation: &ConversationId) -> String {
        let close = petchat_protocol::ConversationRef { conversation_id: conversation.clone() };
        self.request(ClientMessage::ConversationClose(close)).await
    }

    /// `conversation.resolve`.
    pub(crate) async fn resolve(&mut self, conversation: &ConversationId) -> String {
        let resolve = petchat_protocol::ConversationRef { conversation_id: conversation.clone() };
        self.request(ClientMessage::ConversationResolve(resolve)).await
    }

    /// `conversation.transfer` to `to` (an agent's id), or to the queue.
    pub(crate) async fn transfer(&mut self, conversation: &ConversationId, to: Option<&str>) -> String {
        let transfer = petchat_protocol::TransferConversation {
            conversation_id: conversation.clone(),
            to_agent_id: to.map(|id| UserId::new(id).expect("id")),
        };
        self.request(ClientMessage::ConversationTransfer(transfer)).await
    }

    /// `conversation.list` with this data; returns the `conversation.listed` or `error` answer.
    pub(crate) async fn list(&mut self, data: Value) -> Value {
        let list = serde_json::from_value(data).expect("conversation.list data");
        let id = self.request(ClientMessage::ConversationList(list)).await;
        loop {
            let frame = self.next().await;
            if frame["id"] == id.as_str() || frame["data"]["refId"] == id.as_str() {
                return frame;
            }
        }
    }

    /// The connection ends.
    pub(crate) fn disconnect(self) {
        self.hub.disconnect(&self.conn);
    }
}

/// A conversation id from a frame's field.
pub(crate) fn conversation_id(value: &Value) -> ConversationId {
    ConversationId::new(value.as_str().expect("an id")).expect("a valid id")
}
