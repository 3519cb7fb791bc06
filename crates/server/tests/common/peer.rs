//! A client connection for the cluster tests whose frames a task reads as
//! they arrive, so that it answers the nodes' pings under a short heartbeat
//! however long a test leaves it unread; the test takes the frames, each
//! checked against the server-message schema, when it is ready for them.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::cluster::WAIT;
use super::{Next, checked_frame};

/// A client connection whose frames a task reads as they arrive (answering
/// the node's pings meanwhile); every text frame is checked against the
/// server-message schema when the test takes it.
pub struct Peer {
    /// `user@node`, in failure messages.
    pub label: String,
    outgoing: mpsc::UnboundedSender<Message>,
    incoming: mpsc::UnboundedReceiver<Incoming>,
    /// How the connection ended, once it has.
    ended: Option<Option<(u16, String)>>,
}

/// What the reader task passes on.
enum Incoming {
    Text(String),
    Closed(Option<(u16, String)>),
}

impl Peer {
    /// Starts the reader task of `ws`; `label` (`user@node`) names it in failure messages.
    pub fn spawn(label: String, ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Self {
        let (outgoing, mut to_send) = mpsc::unbounded_channel::<Message>();
        let (received, incoming) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut ws = ws;
            loop {
                tokio::select! {
                    message = to_send.recv() => match message {
                        // A failed send shows as the end of the read side.
                        Some(message) => { let _ = ws.send(message).await; }
                        None => {
                            let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                            break;
                        }
                    },
                    frame = ws.next() => match frame {
                        Some(Ok(Message::Text(text))) => { let _ = received.send(Incoming::Text(text.to_string())); }
                        Some(Ok(Message::Close(frame))) => {
                            let close = frame.map(|f: CloseFrame| (u16::from(f.code), f.reason.to_string()));
                            let _ = received.send(Incoming::Closed(close));
                            // Sends the echo of the node's close.
                            let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                            break;
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => {
                            let _ = received.send(Incoming::Closed(None));
                            break;
                        }
                    },
                }
            }
        });
        Self { label, outgoing, incoming, ended: None }
    }

    /// Sends a frame (queued for the connection's task; a failure shows as its end).
    pub fn send(&self, frame: Value) {
        let _ = self.outgoing.send(Message::Text(frame.to_string().into()));
    }

    /// The next frame or the end of the connection, within `within`; `None` when nothing came.
    pub async fn next_within(&mut self, within: Duration) -> Option<Next> {
        if let Some(ended) = &self.ended {
            return Some(Next::Closed(ended.clone()));
        }
        match tokio::time::timeout(within, self.incoming.recv()).await {
            Err(_) => None,
            Ok(Some(Incoming::Text(text))) => Some(Next::Frame(checked_frame(&text))),
            Ok(Some(Incoming::Closed(close))) => {
                self.ended = Some(close.clone());
                Some(Next::Closed(close))
            }
            Ok(None) => {
                self.ended = Some(None);
                Some(Next::Closed(None))
            }
        }
    }

    /// The next frame or the end of the connection, within [`WAIT`].
    pub async fn next(&mut self) -> Next {
        match self.next_within(WAIT).await {
            Some(next) => next,
            None => panic!("{}: nothing arrived within {WAIT:?}", self.label),
        }
    }

    /// The next frame, which must be one (not the end of the connection).
    pub async fn recv(&mut self) -> Value {
        match self.next().await {
            Next::Frame(frame) => frame,
            Next::Closed(close) => panic!("{}: expected a frame, the connection ended: {close:?}", self.label),
        }
    }

    /// The next frame, which must be of type `kind`.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        let frame = self.recv().await;
        assert_eq!(frame["type"], kind, "{}: expected {kind}, got {frame}", self.label);
        frame
    }

    /// Skips frames until one of type `kind`.
    pub async fn recv_until(&mut self, kind: &str) -> Value {
        self.recv_where(kind, |frame| frame["type"] == kind).await
    }

    /// Skips frames until one for which `wanted` holds; `what` describes it
    /// in the failure message, which lists what was skipped.
    pub async fn recv_where(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await {
                Some(Next::Frame(frame)) if wanted(&frame) => return frame,
                Some(Next::Frame(frame)) => skipped.push(frame),
                Some(Next::Closed(close)) => {
                    panic!("{}: the connection ended ({close:?}) before {what}; skipped {skipped:?}", self.label)
                }
                None => panic!("{}: no {what} within {WAIT:?}; got only {skipped:?}", self.label),
            }
        }
    }

    /// Everything that arrives within `window` (stopping at the connection's end).
    pub async fn frames_for(&mut self, window: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + window;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await {
                Some(Next::Frame(frame)) => frames.push(frame),
                Some(Next::Closed(_)) | None => return frames,
            }
        }
    }

    /// Reads until the connection ends; the close frame's code and reason, or
    /// `None` when the TCP connection ended without one (a killed node).
    pub async fn expect_end(&mut self) -> Option<(u16, String)> {
        loop {
            match self.next().await {
                Next::Frame(_) => continue,
                Next::Closed(close) => return close,
            }
        }
    }

    /// A `ping` with a fresh id, and every frame before its `pong`: what the
    /// node had to say before it read the ping.
    pub async fn sync(&mut self) -> Vec<Value> {
        let id = format!("sync-{}", super::uuid());
        self.send(json!({"type": "ping", "id": id, "data": {}}));
        let mut before = Vec::new();
        loop {
            let frame = self.recv().await;
            if frame["type"] == "pong" && frame["id"] == id.as_str() {
                return before;
            }
            before.push(frame);
        }
    }

    /// `agent.status {available}`, and its reply.
    pub async fn set_available(&mut self, available: bool) -> Value {
        self.send(json!({"type": "agent.status", "data": {"available": available}}));
        let status = self.recv_until("agent.status").await;
        assert_eq!(status["data"]["available"], available, "{}: agent.status answers the new state", self.label);
        status
    }

    /// `conversation.open`; the conversation's id from `conversation.opened`.
    pub async fn open(&mut self) -> String {
        self.send(json!({"type": "conversation.open", "data": {"topic": "help"}}));
        let opened = self.recv_until("conversation.opened").await;
        opened["data"]["conversation"]["id"].as_str().expect("a conversation id").to_owned()
    }

    /// `conversation.join {afterSeq}`; returns `conversation.joined`.
    pub async fn join(&mut self, conversation: &str, after_seq: u64) -> Value {
        self.send(
            json!({"type": "conversation.join", "data": {"conversationId": conversation, "afterSeq": after_seq}}),
        );
        let joined = self.recv_until("conversation.joined").await;
        assert_eq!(
            joined["data"]["conversation"]["id"], conversation,
            "{}: joined the conversation asked for",
            self.label
        );
        joined
    }

    /// Every message of `conversation` after `after_seq`, as a join replays
    /// them (at most one replay: the tests stay below `maxReplay`).
    pub async fn replay(&mut self, conversation: &str, after_seq: u64) -> Vec<Value> {
        let joined = self.join(conversation, after_seq).await;
        assert_ne!(joined["data"]["hasMore"], true, "{}: the tests read back less than maxReplay (500)", self.label);
        let last = joined["data"]["conversation"]["lastSeq"].as_u64().expect("lastSeq");
        let mut messages = Vec::new();
        while messages.len() < last.saturating_sub(after_seq) as usize {
            let message = self.recv_until("chat.message").await;
            messages.push(message["data"].clone());
        }
        messages
    }

    /// Closes with 1000 and waits briefly for the echo.
    pub async fn close(mut self) {
        let _ = self.outgoing.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() })));
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while self.ended.is_none() {
                let _ = self.next_within(Duration::from_secs(2)).await;
            }
        })
        .await;
    }
}
