//! The native petchat client: a tokio + tungstenite driver around the shared
//! session core (`petchat_protocol::session`), so reconnects, the outbox,
//! resume and the heartbeat behave exactly as in the browser client.
//!
//! ```no_run
//! # async fn demo() -> Result<(), petchat_client::ClientError> {
//! use petchat_client::{ClientConfig, TokenProvider, connect};
//! use petchat_protocol::session::Event;
//!
//! let config = ClientConfig::new("ws://127.0.0.1:8080/v1/ws/chat", TokenProvider::fixed("<jwt>"));
//! let (client, mut events) = connect(config)?;
//! client.open(Default::default()).await?;
//! while let Some(event) = events.next().await {
//!     if let Event::Message(envelope) = event {
//!         println!("{}", envelope.encode());
//!     }
//! }
//! # Ok(()) }
//! ```

mod driver;
mod error;
mod outbox_file;
mod token;

use std::time::Duration;

use petchat_protocol::session::{Event, SendError, SessionConfig};
use petchat_protocol::{
    ClientMessage, ClientMessageId, ConversationId, ConversationRef, JoinConversation, NotificationRead,
    OpenConversation, ReceiptUpTo, RequestId, Seq, SetAgentStatus, SubscribeTopic, TopicName, TopicRef,
};
use tokio::sync::{mpsc, oneshot};

pub use error::ClientError;
pub use outbox_file::OutboxFile;
pub use token::{TokenProvider, mint};

/// How the token reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// `?token=<JWT>` in the URL.
    #[default]
    Query,
    /// `Sec-WebSocket-Protocol: petchat.v1, bearer.<JWT>` (the token stays out of URLs and logs).
    Subprotocol,
}

/// What [`connect`] needs.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `ws://HOST:PORT/v1/ws/chat` or `wss://…`.
    pub url: String,
    /// Where tokens come from.
    pub tokens: TokenProvider,
    /// How the token is sent.
    pub auth: AuthMode,
    /// The session core's settings (receipts, outbox size, backoff…).
    pub session: SessionConfig,
    /// Keep the outbox in this file, so it survives a restart.
    pub outbox_file: Option<OutboxFile>,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// The socket's receive buffer (`SO_RCVBUF`), to bound what a slow
    /// application leaves in the kernel; `None` lets the system size it.
    pub receive_buffer_bytes: Option<u32>,
}

impl ClientConfig {
    /// The contract's defaults for `url` with `tokens`.
    pub fn new(url: impl Into<String>, tokens: TokenProvider) -> Self {
        Self {
            url: url.into(),
            tokens,
            auth: AuthMode::Query,
            session: SessionConfig {
                seed: rand::random(),
                backoff: petchat_protocol::session::Backoff::new(rand::random()),
                ..SessionConfig::default()
            },
            outbox_file: None,
            connect_timeout: Duration::from_secs(10),
            receive_buffer_bytes: None,
        }
    }
}

/// What the application asks of the driver.
#[derive(Debug)]
pub(crate) enum Command {
    Chat { conversation: ConversationId, text: String, reply: oneshot::Sender<Result<ClientMessageId, SendError>> },
    Send { message: ClientMessage, id: Option<RequestId>, reply: oneshot::Sender<Result<(), SendError>> },
    Typing(ConversationId),
    StopTyping(ConversationId),
    Disconnect(oneshot::Sender<()>),
    WhenIdle(oneshot::Sender<()>),
}

/// A handle on a running client; clone it freely across tasks.
#[derive(Debug, Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
}

/// The client's events, in order.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::Receiver<Event>,
}

impl Events {
    /// The next event; `None` once the client has stopped and every event was read.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

/// Starts a client: it connects, and keeps reconnecting as the close codes
/// say, until [`Client::disconnect`], a close code that says stop, or every
/// handle is dropped.
pub fn connect(config: ClientConfig) -> Result<(Client, Events), ClientError> {
    if !(config.url.starts_with("ws://") || config.url.starts_with("wss://")) {
        return Err(ClientError::BadUrl(config.url));
    }
    tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(config.url.as_str())
        .map_err(|_| ClientError::BadUrl(config.url.clone()))?;
    let (commands, commands_rx) = mpsc::channel(256);
    let (events_tx, rx) = mpsc::channel(1024);
    tokio::spawn(driver::run(config, commands_rx, events_tx));
    Ok((Client { commands }, Events { rx }))
}

impl Client {
    /// Queues a chat message (sent now, or after reconnecting); returns its
    /// idempotency key. `Event::Sent` follows once it is stored.
    pub async fn send_chat(&self, conversation: &ConversationId, text: &str) -> Result<ClientMessageId, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Chat { conversation: conversation.clone(), text: text.to_owned(), reply }).await?;
        Ok(answer.await.map_err(|_| ClientError::Stopped)??)
    }

    /// Sends any client message (`chat.send` goes through the outbox).
    pub async fn send(&self, message: ClientMessage, id: Option<RequestId>) -> Result<(), ClientError> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Send { message, id, reply }).await?;
        Ok(answer.await.map_err(|_| ClientError::Stopped)??)
    }

    /// Opens (or finds) the customer's conversation.
    pub async fn open(&self, open: OpenConversation) -> Result<(), ClientError> {
        self.send(ClientMessage::ConversationOpen(open), None).await
    }

    /// Joins a conversation; the session replays what it has not seen and rejoins after reconnects.
    pub async fn join(&self, conversation: &ConversationId) -> Result<(), ClientError> {
        let join = JoinConversation { conversation_id: conversation.clone(), after_seq: None };
        self.send(ClientMessage::ConversationJoin(join), None).await
    }

    /// Closes a conversation for both sides.
    pub async fn close_conversation(&self, conversation: &ConversationId) -> Result<(), ClientError> {
        self.send(ClientMessage::ConversationClose(ConversationRef { conversation_id: conversation.clone() }), None)
            .await
    }

    /// Marks a conversation read up to `seq`.
    pub async fn mark_read(&self, conversation: &ConversationId, seq: Seq) -> Result<(), ClientError> {
        let receipt = ReceiptUpTo { conversation_id: conversation.clone(), up_to_seq: seq };
        self.send(ClientMessage::MessageRead(receipt), None).await
    }

    /// Subscribes to a topic's live events; the session resumes it after every
    /// reconnect from the last event it handed on.
    pub async fn subscribe(&self, topic: &TopicName) -> Result<(), ClientError> {
        self.send(ClientMessage::TopicSubscribe(SubscribeTopic { topic: topic.clone(), after_seq: None }), None).await
    }

    /// Ends a topic subscription.
    pub async fn unsubscribe(&self, topic: &TopicName) -> Result<(), ClientError> {
        self.send(ClientMessage::TopicUnsubscribe(TopicRef { topic: topic.clone() }), None).await
    }

    /// Marks the user's notifications read up to `seq`, on all of its connections.
    pub async fn mark_notifications_read(&self, seq: Seq) -> Result<(), ClientError> {
        self.send(ClientMessage::NotificationRead(NotificationRead { up_to_seq: seq }), None).await
    }

    /// Enters or leaves the agent pool.
    pub async fn set_available(&self, available: bool) -> Result<(), ClientError> {
        self.send(ClientMessage::AgentStatus(SetAgentStatus { available }), None).await
    }

    /// The user typed (throttled by the session).
    pub async fn typing(&self, conversation: &ConversationId) -> Result<(), ClientError> {
        self.command(Command::Typing(conversation.clone())).await
    }

    /// The user cleared the input.
    pub async fn stop_typing(&self, conversation: &ConversationId) -> Result<(), ClientError> {
        self.command(Command::StopTyping(conversation.clone())).await
    }

    /// Resolves once the client is connected and has nothing left to send
    /// (every request written, every message acknowledged).
    pub async fn idle(&self) -> Result<(), ClientError> {
        let (reply, done) = oneshot::channel();
        self.command(Command::WhenIdle(reply)).await?;
        done.await.map_err(|_| ClientError::Stopped)
    }

    /// Closes with 1000 and stops; resolves once the driver has stopped.
    pub async fn disconnect(&self) {
        let (reply, done) = oneshot::channel();
        if self.command(Command::Disconnect(reply)).await.is_ok() {
            let _ = done.await;
        }
    }

    async fn command(&self, command: Command) -> Result<(), ClientError> {
        self.commands.send(command).await.map_err(|_| ClientError::Stopped)
    }
}
