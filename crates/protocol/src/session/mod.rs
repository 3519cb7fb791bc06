//! The client session: a sans-IO state machine that both clients drive.
//!
//! It owns everything SPEC §5 promises from the client's seat: the reconnect
//! policy (full-jitter backoff, the close-code table), the outbox replayed
//! with its original `clientMessageId`s, resume from the highest contiguous
//! `seq`, pacing to `messagesPerSecond`, automatic delivery receipts, typing
//! throttling, the heartbeat, and live updates (`live.rs`: topics resumed
//! with `afterSeq`, notifications handed on once each). It does no I/O, reads no clock and draws no
//! randomness of its own: time comes in as milliseconds on any monotonic
//! clock, randomness as a seed.
//!
//! Call order for a driver:
//!
//! 1. [`Session::start`] once;
//! 2. act on every [`Session::poll_action`]: `Connect` opens a socket,
//!    `Close` closes the open one with the given code, `RefreshToken` asks the
//!    token provider and hands the token to [`Session::refresh_token`] (see
//!    `refresh.rs` for when);
//! 3. write every [`Session::poll_transmit`] frame to the open socket;
//! 4. hand every [`Session::poll_event`] to the application;
//! 5. wait for an input or [`Session::poll_timeout`], feed it with
//!    [`Session::handle_connected`], [`Session::handle_frame`],
//!    [`Session::handle_closed`] or [`Session::handle_timeout`], and go to 2.
//!
//! Commands ([`Session::send_chat`], [`Session::join`], …) may be called at
//! any time; they queue while the connection is down.

mod backoff;
mod json;
mod live;
#[cfg(test)]
mod live_tests;
mod refresh;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::ops::RangeInclusive;

pub use backoff::Backoff;
#[cfg(feature = "schema")]
pub(crate) use json::event_schemas;
pub use live::NotificationStatus;
pub use refresh::{REFRESH_LEAD_MAX_MS, REFRESH_RETRY_BASE_MS, REFRESH_RETRY_CAP_MS};

use crate::close::{self, CloseCode, Reconnect};
use crate::error::{DecodeError, ErrorCode, ErrorData};
use crate::limits::{
    DEFAULT_HEARTBEAT_INTERVAL_MS, DEFAULT_MESSAGES_PER_SECOND, HEARTBEAT_INTERVAL_MS_BOUNDS,
    HEARTBEAT_MISSED_INTERVALS, MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES_BOUNDS, MAX_RETRY_HINT_MS,
    MESSAGES_PER_SECOND_BOUNDS, OUTBOX_CAPACITY, RATE_BURST_FACTOR, TYPING_THROTTLE_MS,
};
use crate::{
    ChatAck, ChatMessage, ClientEnvelope, ClientMessage, ClientMessageId, ConversationId, ConversationRef,
    ConversationStatus, JoinConversation, LastSeq, MessageText, OpenConversation, ReceiptUpTo, RequestId, SendChat,
    Seq, ServerEnvelope, ServerMessage, SetAgentStatus, TextError, TopicName, User,
};

/// Milliseconds on the driver's monotonic clock.
pub type Millis = u64;

/// How a session behaves; [`SessionConfig::default`] follows the contract.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Send `message.delivered` for every message received from others.
    pub auto_delivered: bool,
    /// Join every conversation `session.ready` lists.
    pub auto_join: bool,
    /// Messages the outbox holds at most.
    pub outbox_capacity: usize,
    /// Messages kept per conversation in [`Session::history`].
    pub history_per_conversation: usize,
    /// A `typing.stop` goes out after this long without a keystroke.
    pub typing_idle_ms: u64,
    /// Seed of the jitter and of generated `clientMessageId`s.
    pub seed: u64,
    /// The reconnect policy.
    pub backoff: Backoff,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            auto_delivered: true,
            auto_join: true,
            outbox_capacity: OUTBOX_CAPACITY,
            history_per_conversation: 200,
            typing_idle_ms: 5_000,
            seed: 0,
            backoff: Backoff::new(0),
        }
    }
}

/// Where the connection stands, as the application shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// Opening a socket, or waiting for `session.ready`.
    Connecting,
    /// `session.ready` arrived; traffic flows.
    Connected,
    /// Down; a reconnect is set for `retry_in_ms` from now.
    Reconnecting {
        /// Milliseconds until the next attempt.
        retry_in_ms: u64,
        /// The close that caused it (`None`: the socket failed without one).
        close_code: Option<CloseCode>,
        /// Why, in words: the close frame's reason, or why the socket failed
        /// (as the driver put it); empty when nobody said.
        reason: String,
    },
    /// Down for good, until the application acts (a new token, `start`).
    Stopped {
        /// The close that caused it, if any.
        close_code: Option<CloseCode>,
    },
}

/// What the driver must do with the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a socket now.
    Connect,
    /// Close the open socket with this code (the session already counts it as closed).
    Close {
        /// The code to send.
        code: CloseCode,
        /// The reason to send.
        reason: String,
    },
    /// The connection's token expires soon: get a fresh one from the token
    /// provider and hand it to [`Session::refresh_token`] (or, when the
    /// provider failed, call [`Session::refresh_failed`]).
    RefreshToken,
}

/// What the application hears.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The connection state changed.
    State(ConnectionState),
    /// A server message (duplicates of already seen `chat.message`s are dropped);
    /// boxed, as it is many times bigger than every other event.
    Message(Box<ServerEnvelope>),
    /// A `chat.send` entered the outbox.
    Queued {
        /// Its conversation.
        conversation_id: ConversationId,
        /// Its idempotency key.
        client_message_id: ClientMessageId,
    },
    /// A queued message is stored: its `chat.ack`.
    Sent(ChatAck),
    /// The server refused a queued message for good; it left the outbox.
    Failed {
        /// Its idempotency key.
        client_message_id: ClientMessageId,
        /// Why.
        error: ErrorData,
    },
    /// A message was dropped from the outbox after the server closed with 1009,
    /// or because it is bigger than the `maxMessageBytes` of a later `session.ready`.
    Dropped {
        /// Its idempotency key.
        client_message_id: ClientMessageId,
    },
    /// The outbox is full; the message was not queued.
    OutboxFull,
    /// A `seq` was skipped: the session rejoins from the last contiguous one.
    Gap {
        /// The conversation.
        conversation_id: ConversationId,
        /// The `seq` expected.
        expected: u64,
        /// The `seq` received.
        got: u64,
    },
    /// The server refused the token (4500, 4501): call
    /// [`Session::token_refreshed`] once the application has a new one.
    TokenNeeded {
        /// 4500 or 4501.
        close_code: CloseCode,
    },
    /// A server frame did not decode (a newer server?); it was ignored.
    Invalid(DecodeError),
}

/// Why a command was refused at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The text is empty or too long.
    #[error("text {0}")]
    Text(#[from] TextError),
    /// The outbox holds `outbox_capacity` messages already.
    #[error("the outbox is full")]
    OutboxFull,
    /// The frame would exceed the server's `maxMessageBytes`.
    #[error("the message is {0} bytes, more than the server accepts")]
    TooBig(usize),
    /// The session was stopped by [`Session::disconnect`].
    #[error("the session is closed")]
    Closed,
}

/// A `chat.send` waiting for its `chat.ack`.
#[derive(Debug, Clone)]
struct OutboxEntry {
    request_id: RequestId,
    send: SendChat,
    frame: String,
    /// Written on the current connection.
    transmitted: bool,
    /// Written on some connection: the server may have stored it.
    written: bool,
}

/// What the session knows of a conversation.
#[derive(Debug, Clone, Default)]
struct Track {
    /// Highest `seq` up to which every message was seen.
    contiguous: u64,
    /// `conversation.joined` said `hasMore`: join again once the replay ends.
    more_after_replay: bool,
    /// The `lastSeq` the last join announced.
    replay_until: u64,
    /// A join is queued or on its way; its `conversation.joined` has not come.
    joining: bool,
    /// Closed: nothing more comes, so it is not joined again after a reconnect.
    closed: bool,
    history: VecDeque<ChatMessage>,
    /// Typing: when the last `typing.start` went out, and the last keystroke.
    typing_sent_at: Option<Millis>,
    last_keystroke: Option<Millis>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Socket {
    Down,
    Opening,
    Open { since: Millis, ready: bool },
}

/// The client session; see the module docs for the call order.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    socket: Socket,
    state: ConnectionState,
    stopped_by_user: bool,
    retry_at: Option<Millis>,
    last_heard: Millis,
    ping_sent_at: Option<Millis>,
    heartbeat_ms: u64,
    max_message_bytes: usize,
    user: Option<User>,
    /// Pacing: a token bucket in thousandths of a message.
    rate_per_s: u64,
    tokens_milli: u64,
    refilled_at: Millis,
    paused_until: Option<Millis>,
    /// A server hint for the next reconnect (the last `rate_limited` error's `retryAfterMs`).
    hint_ms: u64,
    control: VecDeque<(Option<ConversationId>, ClientEnvelope)>,
    outbox: VecDeque<OutboxEntry>,
    receipts: BTreeMap<(ConversationId, bool), Seq>,
    /// Ordered maps only: the order of rejoins and receipts is part of what
    /// the tests pin, and must not change from one run to the next.
    tracks: BTreeMap<ConversationId, Track>,
    /// The joins on their way, by request id, to match a reply or an error to
    /// its conversation; at most one per conversation.
    joins: BTreeMap<RequestId, ConversationId>,
    actions: VecDeque<Action>,
    transmits: VecDeque<String>,
    events: VecDeque<Event>,
    next_request: u64,
    /// The token's lifetime on this connection (`refresh.rs`).
    refresh: refresh::Refresh,
    /// The topics subscribed to (`live.rs`).
    topics: BTreeMap<TopicName, live::TopicTrack>,
    /// The subscriptions on their way, by request id.
    subscribes: BTreeMap<RequestId, TopicName>,
    /// The user's notification position (`live.rs`).
    notifications: live::NotificationTrack,
}

impl Session {
    /// A session that has not started.
    pub fn new(config: SessionConfig) -> Self {
        let rate = u64::from(DEFAULT_MESSAGES_PER_SECOND);
        Self {
            config,
            socket: Socket::Down,
            state: ConnectionState::Stopped { close_code: None },
            stopped_by_user: false,
            retry_at: None,
            last_heard: 0,
            ping_sent_at: None,
            heartbeat_ms: DEFAULT_HEARTBEAT_INTERVAL_MS,
            max_message_bytes: MAX_MESSAGE_BYTES,
            user: None,
            rate_per_s: rate,
            tokens_milli: rate * u64::from(RATE_BURST_FACTOR) * 1_000,
            refilled_at: 0,
            paused_until: None,
            hint_ms: 0,
            control: VecDeque::new(),
            outbox: VecDeque::new(),
            receipts: BTreeMap::new(),
            tracks: BTreeMap::new(),
            joins: BTreeMap::new(),
            actions: VecDeque::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_request: 1,
            refresh: refresh::Refresh::default(),
            topics: BTreeMap::new(),
            subscribes: BTreeMap::new(),
            notifications: live::NotificationTrack::default(),
        }
    }

    // ----- driver inputs ------------------------------------------------------

    /// Starts connecting (or starts again after a stop).
    pub fn start(&mut self, now: Millis) {
        self.stopped_by_user = false;
        self.refilled_at = now;
        self.connect_now();
    }

    /// The socket opened; `session.ready` is awaited.
    pub fn handle_connected(&mut self, now: Millis) {
        if self.socket != Socket::Opening {
            return;
        }
        self.socket = Socket::Open { since: now, ready: false };
        self.last_heard = now;
        self.ping_sent_at = None;
    }

    /// A text frame arrived.
    pub fn handle_frame(&mut self, now: Millis, text: &str) {
        self.last_heard = now;
        self.ping_sent_at = None;
        let envelope = match ServerEnvelope::decode(text) {
            Ok(envelope) => envelope,
            Err(e) => return self.events.push_back(Event::Invalid(e)),
        };
        let replaying = match &envelope.message {
            ServerMessage::ChatMessage(m) => Some(m.conversation_id.clone()),
            _ => None,
        };
        let awaiting: Vec<ConversationId> =
            self.tracks.iter().filter(|(_, t)| t.more_after_replay).map(|(id, _)| id.clone()).collect();
        let forward = self.on_message(now, &envelope);
        if forward {
            self.events.push_back(Event::Message(Box::new(envelope)));
        }
        // A replay with `hasMore` ends at the first frame that is not one of
        // its messages, or at the `lastSeq` its join announced.
        let pending: Vec<ConversationId> = awaiting
            .into_iter()
            .filter(|id| {
                self.tracks.get(id).is_some_and(|t| {
                    t.more_after_replay && (replaying.as_ref() != Some(id) || t.contiguous >= t.replay_until)
                })
            })
            .collect();
        for id in pending {
            if let Some(track) = self.tracks.get_mut(&id) {
                track.more_after_replay = false;
            }
            self.queue_join(&id);
        }
        self.flush(now);
    }

    /// The socket closed (`code` is `None` when it failed without a close
    /// frame, or could not open at all).
    pub fn handle_closed(&mut self, now: Millis, code: Option<CloseCode>, reason: &str) {
        if self.socket == Socket::Down {
            return;
        }
        if let Socket::Open { since, .. } = self.socket {
            self.config.backoff.connection_ended(now.saturating_sub(since));
        }
        self.socket = Socket::Down;
        self.reset_refresh();
        // 1009: the message written last is the one the server could not take.
        let offending = self.outbox.iter().rposition(|e| e.transmitted);
        if code.is_some_and(CloseCode::drops_offending_message)
            && let Some(entry) = offending.and_then(|index| self.outbox.remove(index))
        {
            self.events.push_back(Event::Dropped { client_message_id: entry.send.client_message_id });
        }
        for entry in &mut self.outbox {
            entry.transmitted = false;
        }
        self.transmits.clear();
        self.joins.clear();
        if self.stopped_by_user {
            return self.set_state(ConnectionState::Stopped { close_code: code });
        }
        let rule = code.map_or(Reconnect::Backoff, CloseCode::reconnect);
        match rule {
            Reconnect::Stop => self.set_state(ConnectionState::Stopped { close_code: code }),
            Reconnect::NewToken => {
                let close_code = code.unwrap_or(CloseCode::UNAUTHORIZED);
                self.set_state(ConnectionState::Stopped { close_code: code });
                self.events.push_back(Event::TokenNeeded { close_code });
            }
            Reconnect::Backoff | Reconnect::AfterHint => {
                let hint = if rule == Reconnect::AfterHint {
                    close::retry_hint_ms(reason).unwrap_or(0).min(MAX_RETRY_HINT_MS).max(self.hint_ms)
                } else {
                    0
                };
                self.schedule_reconnect_because(now, hint, code, reason);
            }
        }
    }

    /// Time passed: reconnect timers, heartbeat, pacing, typing.
    pub fn handle_timeout(&mut self, now: Millis) {
        if self.retry_at.is_some_and(|at| at <= now) {
            self.retry_at = None;
            self.connect_now();
        }
        if let Socket::Open { .. } = self.socket {
            let silent = now.saturating_sub(self.last_heard);
            if silent >= self.heartbeat_ms.saturating_mul(u64::from(HEARTBEAT_MISSED_INTERVALS)) {
                let reason = "no frame from the server for two heartbeat intervals";
                self.actions.push_back(Action::Close { code: CloseCode::HEARTBEAT_TIMEOUT, reason: reason.into() });
                self.handle_closed(now, Some(CloseCode::HEARTBEAT_TIMEOUT), reason);
                return;
            }
            if silent >= self.heartbeat_ms && self.ping_sent_at.is_none() && self.is_ready() {
                self.ping_sent_at = Some(now);
                let id = self.request_id("hb");
                let ping = ClientEnvelope::new(ClientMessage::Ping(Default::default())).with_id(id).encode();
                if ping.len() <= self.max_message_bytes {
                    self.transmits.push_back(ping);
                }
            }
        }
        self.refresh_timeout(now);
        let idle = self.config.typing_idle_ms;
        let stale: Vec<ConversationId> = self
            .tracks
            .iter()
            .filter(|(_, t)| t.last_keystroke.is_some_and(|k| now >= k.saturating_add(idle)))
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            self.stop_typing(&id);
        }
        self.flush(now);
    }

    /// The network came back (a browser's `online` event): a pending
    /// reconnect happens now instead of at the end of its backoff delay, unless
    /// a server hint asked for a wait.
    pub fn network_online(&mut self, now: Millis) {
        if self.retry_at.is_some() && self.hint_ms == 0 {
            self.retry_at = Some(now);
            self.handle_timeout(now);
        }
    }

    /// The application has a fresh token after [`Event::TokenNeeded`]:
    /// reconnect with backoff.
    pub fn token_refreshed(&mut self, now: Millis) {
        if matches!(self.state, ConnectionState::Stopped { .. }) && !self.stopped_by_user {
            self.schedule_reconnect(now, 0, None);
        }
    }

    // ----- driver outputs -----------------------------------------------------

    /// The next thing to do with the socket.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next frame to write to the open socket.
    pub fn poll_transmit(&mut self) -> Option<String> {
        self.transmits.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Session::handle_timeout`] is due next, if anything waits on time.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let mut deadlines = Vec::new();
        deadlines.extend(self.retry_at);
        deadlines.extend(self.refresh_deadline());
        if let Socket::Open { .. } = self.socket {
            let dead_after = self.heartbeat_ms.saturating_mul(u64::from(HEARTBEAT_MISSED_INTERVALS));
            deadlines.push(self.last_heard.saturating_add(dead_after));
            // Only a ready session pings: waiting for `session.ready`, this
            // deadline would pass without a ping and wake the driver in a loop.
            if self.ping_sent_at.is_none() && self.is_ready() {
                deadlines.push(self.last_heard.saturating_add(self.heartbeat_ms));
            }
            if self.is_ready() && self.has_paced_work() {
                let wait = self.paused_until.unwrap_or(0).max(self.refilled_at.saturating_add(self.ms_per_token()));
                deadlines.push(wait);
            }
        }
        let idle = self.config.typing_idle_ms;
        deadlines.extend(self.tracks.values().filter_map(|t| t.last_keystroke.map(|k| k.saturating_add(idle))));
        deadlines.into_iter().min()
    }

    // ----- commands -------------------------------------------------------------

    /// Queues a chat message; returns its idempotency key.
    pub fn send_chat(
        &mut self,
        now: Millis,
        conversation_id: &ConversationId,
        text: &str,
    ) -> Result<ClientMessageId, SendError> {
        let text = MessageText::new(text)?;
        let client_message_id = ClientMessageId::from_random_bytes(self.random_bytes());
        let send = SendChat {
            conversation_id: conversation_id.clone(),
            client_message_id: client_message_id.clone(),
            text,
            attachments: Default::default(),
        };
        self.send(now, ClientMessage::ChatSend(send), None)?;
        Ok(client_message_id)
    }

    /// Queues any client message; `chat.send`s go through the outbox with
    /// their own `clientMessageId`, the rest are paced in order.
    pub fn send(&mut self, now: Millis, message: ClientMessage, id: Option<RequestId>) -> Result<(), SendError> {
        if self.stopped_by_user {
            return Err(SendError::Closed);
        }
        match message {
            ClientMessage::ChatSend(send) => {
                if self.outbox.len() >= self.config.outbox_capacity {
                    self.events.push_back(Event::OutboxFull);
                    return Err(SendError::OutboxFull);
                }
                let request_id = id.unwrap_or_else(|| self.request_id("m"));
                let conversation_id = send.conversation_id.clone();
                self.stop_typing(&conversation_id);
                let frame =
                    ClientEnvelope::new(ClientMessage::ChatSend(send.clone())).with_id(request_id.clone()).encode();
                if frame.len() > self.max_message_bytes {
                    return Err(SendError::TooBig(frame.len()));
                }
                self.track(&conversation_id);
                let client_message_id = send.client_message_id.clone();
                self.outbox.push_back(OutboxEntry { request_id, send, frame, transmitted: false, written: false });
                self.events.push_back(Event::Queued { conversation_id, client_message_id });
            }
            ClientMessage::ConversationJoin(join) => {
                self.track(&join.conversation_id);
                if let Some(after) = join.after_seq
                    && let Some(track) = self.tracks.get_mut(&join.conversation_id)
                {
                    track.contiguous = track.contiguous.min(after.get());
                }
                self.queue_join(&join.conversation_id);
            }
            ClientMessage::MessageDelivered(r) => self.raise_receipt(r, false),
            ClientMessage::MessageRead(r) => self.raise_receipt(r, true),
            ClientMessage::TypingStart(t) => self.typing(now, &t.conversation_id),
            ClientMessage::TypingStop(t) => self.stop_typing(&t.conversation_id),
            message @ (ClientMessage::TopicSubscribe(_)
            | ClientMessage::TopicUnsubscribe(_)
            | ClientMessage::NotificationRead(_)) => self.send_live(message, id),
            ClientMessage::ConversationLeave(ConversationRef { conversation_id }) => {
                self.tracks.remove(&conversation_id);
                let leave = ClientMessage::ConversationLeave(ConversationRef { conversation_id });
                self.control.push_back((None, envelope(leave, id)));
            }
            other => self.control.push_back((None, envelope(other, id))),
        }
        self.flush(now);
        Ok(())
    }

    /// Opens (or finds) the customer's conversation.
    pub fn open_conversation(&mut self, now: Millis, open: OpenConversation) -> Result<(), SendError> {
        self.send(now, ClientMessage::ConversationOpen(open), None)
    }

    /// Joins a conversation, replaying from what the session has seen.
    pub fn join(&mut self, now: Millis, conversation_id: &ConversationId) -> Result<(), SendError> {
        let join = JoinConversation { conversation_id: conversation_id.clone(), after_seq: None };
        self.send(now, ClientMessage::ConversationJoin(join), None)
    }

    /// Closes a conversation for both sides.
    pub fn close_conversation(&mut self, now: Millis, conversation_id: &ConversationId) -> Result<(), SendError> {
        let close = ConversationRef { conversation_id: conversation_id.clone() };
        self.send(now, ClientMessage::ConversationClose(close), None)
    }

    /// Marks a conversation read up to `up_to` (coalesced with later marks).
    pub fn mark_read(&mut self, now: Millis, conversation_id: &ConversationId, up_to: Seq) -> Result<(), SendError> {
        let receipt = ReceiptUpTo { conversation_id: conversation_id.clone(), up_to_seq: up_to };
        self.send(now, ClientMessage::MessageRead(receipt), None)
    }

    /// Enters or leaves the agent pool.
    pub fn set_available(&mut self, now: Millis, available: bool) -> Result<(), SendError> {
        self.send(now, ClientMessage::AgentStatus(SetAgentStatus { available }), None)
    }

    /// The user typed in a conversation: one `typing.start` per 3 s of
    /// typing, a `typing.stop` after `typing_idle_ms` without a keystroke.
    pub fn typing(&mut self, now: Millis, conversation_id: &ConversationId) {
        if !self.is_ready() {
            return;
        }
        let track = self.tracks.entry(conversation_id.clone()).or_default();
        track.last_keystroke = Some(now);
        if track.typing_sent_at.is_none_or(|at| now >= at.saturating_add(TYPING_THROTTLE_MS)) {
            track.typing_sent_at = Some(now);
            let start = ClientMessage::TypingStart(ConversationRef { conversation_id: conversation_id.clone() });
            self.control.push_back((None, ClientEnvelope::new(start)));
        }
        self.flush(now);
    }

    /// The user stopped typing (cleared the input).
    pub fn stop_typing(&mut self, conversation_id: &ConversationId) {
        let Some(track) = self.tracks.get_mut(conversation_id) else { return };
        track.last_keystroke = None;
        if track.typing_sent_at.take().is_some() && self.is_ready() {
            let stop = ClientMessage::TypingStop(ConversationRef { conversation_id: conversation_id.clone() });
            self.control.push_back((None, ClientEnvelope::new(stop)));
        }
    }

    /// The user leaves: close with 1000 and stay down.
    pub fn disconnect(&mut self, now: Millis) {
        self.stopped_by_user = true;
        self.retry_at = None;
        if matches!(self.socket, Socket::Open { .. }) {
            self.actions.push_back(Action::Close { code: CloseCode::NORMAL, reason: "bye".into() });
        }
        self.handle_closed(now, Some(CloseCode::NORMAL), "");
        self.set_state(ConnectionState::Stopped { close_code: Some(CloseCode::NORMAL) });
    }

    // ----- what the application may read ---------------------------------------

    /// Where the connection stands.
    pub fn state(&self) -> &ConnectionState {
        &self.state
    }

    /// Connected, with nothing left to send: no queued request, no unacknowledged
    /// message, no pending receipt.
    pub fn is_idle(&self) -> bool {
        self.is_ready() && !self.has_paced_work() && self.transmits.is_empty() && self.outbox.is_empty()
    }

    /// The authenticated user, once `session.ready` arrived.
    pub fn user(&self) -> Option<&User> {
        self.user.as_ref()
    }

    /// Messages waiting for their `chat.ack`, oldest first.
    pub fn outbox(&self) -> impl Iterator<Item = &SendChat> {
        self.outbox.iter().map(|e| &e.send)
    }

    /// The highest `seq` up to which every message of the conversation was seen.
    pub fn last_seq(&self, conversation_id: &ConversationId) -> Option<u64> {
        self.tracks.get(conversation_id).map(|t| t.contiguous)
    }

    /// The last messages of a conversation (bounded by `history_per_conversation`).
    pub fn history(&self, conversation_id: &ConversationId) -> impl Iterator<Item = &ChatMessage> {
        self.tracks.get(conversation_id).into_iter().flat_map(|t| t.history.iter())
    }

    /// Queues messages restored from disk (a CLI restarted while offline); they
    /// keep their keys and are sent once connected.
    pub fn restore_outbox(&mut self, now: Millis, messages: impl IntoIterator<Item = SendChat>) {
        for send in messages {
            if self.outbox.iter().any(|e| e.send.client_message_id == send.client_message_id) {
                continue;
            }
            let _ = self.send(now, ClientMessage::ChatSend(send), None);
        }
    }

    // ----- internals --------------------------------------------------------------

    /// Applies a server message; returns whether the application sees it.
    fn on_message(&mut self, now: Millis, envelope: &ServerEnvelope) -> bool {
        match &envelope.message {
            ServerMessage::SessionReady(ready) => {
                if let Socket::Open { since, .. } = self.socket {
                    self.socket = Socket::Open { since, ready: true };
                }
                // The server's numbers, held to sane bounds (limits.rs).
                self.heartbeat_ms = within(ready.heartbeat_interval_ms, &HEARTBEAT_INTERVAL_MS_BOUNDS);
                self.max_message_bytes = within(ready.limits.max_message_bytes, &MAX_MESSAGE_BYTES_BOUNDS) as usize;
                self.rate_per_s = u64::from(within(ready.limits.messages_per_second, &MESSAGES_PER_SECOND_BOUNDS));
                self.tokens_milli = self.burst_milli();
                self.refilled_at = now;
                self.user = Some(ready.user.clone());
                self.hint_ms = 0;
                self.schedule_refresh(now, envelope.timestamp, ready.token_expires_at);
                if self.config.auto_join {
                    for conversation in &ready.conversations {
                        self.track(&conversation.id);
                    }
                }
                // Rejoin everything known and open, in id order, first, then replay the outbox.
                let known: Vec<ConversationId> =
                    self.tracks.iter().filter(|(_, t)| !t.closed).map(|(id, _)| id.clone()).collect();
                self.control.retain(|(_, e)| !matches!(e.message, ClientMessage::ConversationJoin(_)));
                for id in known.iter().rev() {
                    let join = self.join_envelope(id);
                    self.control.push_front((Some(id.clone()), join));
                    if let Some(track) = self.tracks.get_mut(id) {
                        track.joining = true;
                    }
                }
                self.live_ready(ready);
                self.set_state(ConnectionState::Connected);
                true
            }
            ServerMessage::TopicSubscribed(subscribed) => self.on_subscribed(envelope.id.as_ref(), subscribed),
            ServerMessage::TopicEvent(event) => self.on_topic_event(event),
            ServerMessage::Notification(notification) => self.on_notification(notification),
            ServerMessage::NotificationRead(read) => self.on_notifications_read(read),
            ServerMessage::ConversationOpened(snapshot) | ServerMessage::ConversationJoined(snapshot) => {
                let id = snapshot.conversation.id.clone();
                let last = snapshot.conversation.last_seq.get();
                let joined = matches!(envelope.message, ServerMessage::ConversationJoined(_));
                if joined && let Some(request) = &envelope.id {
                    self.joins.remove(request);
                }
                let track = self.tracks.entry(id.clone()).or_default();
                track.closed = snapshot.conversation.status == ConversationStatus::Closed;
                if joined {
                    track.joining = false;
                    track.replay_until = last;
                    track.more_after_replay = snapshot.has_more == Some(true);
                } else if last > track.contiguous && !track.joining {
                    // Opened an existing conversation: fetch what this session has not seen.
                    self.queue_join(&id);
                }
                true
            }
            ServerMessage::ChatMessage(message) => {
                let mine = self.user.as_ref().is_some_and(|u| u.id == message.from.id);
                let fresh = self.advance(&message.conversation_id, message.seq.get());
                if fresh {
                    let limit = self.config.history_per_conversation;
                    let track = self.tracks.entry(message.conversation_id.clone()).or_default();
                    track.history.push_back(message.clone());
                    while track.history.len() > limit {
                        track.history.pop_front();
                    }
                    if !mine && self.config.auto_delivered {
                        let up_to = Seq::new(track.contiguous).unwrap_or(message.seq);
                        self.raise_receipt(
                            ReceiptUpTo { conversation_id: message.conversation_id.clone(), up_to_seq: up_to },
                            false,
                        );
                    }
                }
                fresh
            }
            ServerMessage::ChatAck(ack) => {
                if let Some(index) = self.outbox.iter().position(|e| e.send.client_message_id == ack.client_message_id)
                {
                    self.outbox.remove(index);
                    self.events.push_back(Event::Sent(ack.clone()));
                }
                self.advance(&ack.conversation_id, ack.seq.get());
                true
            }
            ServerMessage::SessionRefreshed(refreshed) => {
                self.on_refreshed(now, envelope, refreshed.token_expires_at);
                true
            }
            ServerMessage::Error(error) => {
                self.on_error(now, error);
                true
            }
            ServerMessage::ConversationClosed(closed) => {
                self.on_closed(&closed.conversation_id);
                true
            }
            _ => true,
        }
    }

    /// A conversation closed: it is not joined again, and the messages queued
    /// for it that never went out fail now (`conversation_closed`), as the
    /// server would refuse them; those written once wait for their answer (a
    /// message stored before the close still gets its ack).
    fn on_closed(&mut self, conversation: &ConversationId) {
        self.tracks.entry(conversation.clone()).or_default().closed = true;
        let (failed, kept): (VecDeque<OutboxEntry>, VecDeque<OutboxEntry>) = std::mem::take(&mut self.outbox)
            .into_iter()
            .partition(|entry| entry.send.conversation_id == *conversation && !entry.written);
        self.outbox = kept;
        for entry in failed {
            let error = ErrorData {
                code: ErrorCode::ConversationClosed,
                message: "the conversation was closed before the message was sent".into(),
                ref_id: Some(entry.request_id),
                retry_after_ms: None,
            };
            self.events.push_back(Event::Failed { client_message_id: entry.send.client_message_id, error });
        }
    }

    /// A refused request: a `chat.send` is retried (rate limit, server
    /// failure) or leaves the outbox; a refused join is queued again.
    fn on_error(&mut self, now: Millis, error: &ErrorData) {
        let retry_after = error.retry_after_ms.unwrap_or(1_000).min(MAX_RETRY_HINT_MS);
        if error.code == ErrorCode::RateLimited {
            self.hint_ms = retry_after;
            self.paused_until = Some(now.saturating_add(retry_after));
        }
        if self.on_refresh_error(now, error) {
            return;
        }
        let Some(ref_id) = &error.ref_id else { return };
        if let Some(index) = self.outbox.iter().position(|e| &e.request_id == ref_id) {
            match error.code {
                ErrorCode::RateLimited | ErrorCode::Internal => {
                    self.outbox[index].transmitted = false;
                    self.paused_until = Some(now.saturating_add(retry_after));
                }
                _ => {
                    let entry = self.outbox.remove(index).expect("index from position");
                    self.events.push_back(Event::Failed {
                        client_message_id: entry.send.client_message_id,
                        error: error.clone(),
                    });
                }
            }
        } else if self.on_subscribe_refused(ref_id) {
            // The topic is dropped; the error tells the application why.
        } else if let Some(id) = self.joins.remove(ref_id) {
            if error.code == ErrorCode::RateLimited {
                self.queue_join(&id);
            } else if let Some(track) = self.tracks.get_mut(&id) {
                // Refused for good (forbidden, not found): not joining any more.
                track.joining = false;
            }
        }
    }

    /// Records `seq` of a conversation; false for a duplicate. A gap queues a rejoin.
    fn advance(&mut self, conversation_id: &ConversationId, seq: u64) -> bool {
        let track = self.tracks.entry(conversation_id.clone()).or_default();
        if seq <= track.contiguous {
            return false;
        }
        if seq == track.contiguous + 1 {
            track.contiguous = seq;
            return true;
        }
        let expected = track.contiguous + 1;
        self.events.push_back(Event::Gap { conversation_id: conversation_id.clone(), expected, got: seq });
        self.queue_join(conversation_id);
        false
    }

    fn track(&mut self, conversation_id: &ConversationId) {
        self.tracks.entry(conversation_id.clone()).or_default();
    }

    fn join_envelope(&mut self, conversation_id: &ConversationId) -> ClientEnvelope {
        let after = self.tracks.get(conversation_id).map_or(0, |t| t.contiguous);
        let join = JoinConversation { conversation_id: conversation_id.clone(), after_seq: LastSeq::new(after).ok() };
        // A fresh id for every join, remembered until its reply: an error's
        // `refId` then names its conversation exactly, whatever the ids look like.
        let id = self.request_id("j");
        self.joins.retain(|_, c| c != conversation_id);
        self.joins.insert(id.clone(), conversation_id.clone());
        ClientEnvelope::new(ClientMessage::ConversationJoin(join)).with_id(id)
    }

    /// Queues a join of the conversation, replacing one that waits already.
    fn queue_join(&mut self, conversation_id: &ConversationId) {
        self.tracks.entry(conversation_id.clone()).or_default().joining = true;
        self.control.retain(|(c, _)| c.as_ref() != Some(conversation_id));
        let join = self.join_envelope(conversation_id);
        self.control.push_back((Some(conversation_id.clone()), join));
    }

    fn raise_receipt(&mut self, receipt: ReceiptUpTo, read: bool) {
        let slot = self.receipts.entry((receipt.conversation_id, read)).or_insert(receipt.up_to_seq);
        if receipt.up_to_seq > *slot {
            *slot = receipt.up_to_seq;
        }
    }

    fn connect_now(&mut self) {
        self.socket = Socket::Opening;
        self.actions.push_back(Action::Connect);
        self.set_state(ConnectionState::Connecting);
    }

    fn schedule_reconnect(&mut self, now: Millis, hint_ms: u64, close_code: Option<CloseCode>) {
        self.schedule_reconnect_because(now, hint_ms, close_code, "");
    }

    fn schedule_reconnect_because(&mut self, now: Millis, hint_ms: u64, close_code: Option<CloseCode>, reason: &str) {
        // At least 1 ms: a deadline is always after the input that set it.
        let delay = self.config.backoff.next_delay_ms(hint_ms).max(1);
        self.retry_at = Some(now.saturating_add(delay));
        let reason = reason.to_owned();
        self.set_state(ConnectionState::Reconnecting { retry_in_ms: delay, close_code, reason });
    }

    fn set_state(&mut self, state: ConnectionState) {
        if self.state != state {
            self.state = state.clone();
            self.events.push_back(Event::State(state));
        }
    }

    fn is_ready(&self) -> bool {
        matches!(self.socket, Socket::Open { ready: true, .. })
    }

    fn has_paced_work(&self) -> bool {
        !self.control.is_empty() || self.outbox.iter().any(|e| !e.transmitted) || !self.receipts.is_empty()
    }

    fn burst_milli(&self) -> u64 {
        self.rate_per_s * u64::from(RATE_BURST_FACTOR) * 1_000
    }

    fn ms_per_token(&self) -> u64 {
        1_000u64.div_ceil(self.rate_per_s)
    }

    /// Moves paced work to the transmit queue while the rate allows:
    /// control frames (joins first), then the outbox in order, then receipts.
    fn flush(&mut self, now: Millis) {
        if !self.is_ready() {
            return;
        }
        if self.paused_until.is_some_and(|until| now < until) {
            return;
        }
        self.paused_until = None;
        let elapsed = now.saturating_sub(self.refilled_at);
        self.tokens_milli =
            self.tokens_milli.saturating_add(elapsed.saturating_mul(self.rate_per_s)).min(self.burst_milli());
        self.refilled_at = now;
        while self.tokens_milli >= 1_000 {
            let mut from_outbox = None;
            let frame = if let Some((_, envelope)) = self.control.pop_front() {
                envelope.encode()
            } else if let Some(index) = self.outbox.iter().position(|e| !e.transmitted) {
                from_outbox = Some(index);
                self.outbox[index].frame.clone()
            } else if let Some(((conversation_id, read), up_to_seq)) = self.receipts.pop_first() {
                let receipt = ReceiptUpTo { conversation_id, up_to_seq };
                let message =
                    if read { ClientMessage::MessageRead(receipt) } else { ClientMessage::MessageDelivered(receipt) };
                ClientEnvelope::new(message).encode()
            } else {
                break;
            };
            // A frame the server announced it would close with 1009 is not
            // written (the 1009 would drop whichever message went last); a
            // message queued under a larger limit leaves the outbox.
            if frame.len() > self.max_message_bytes {
                if let Some(entry) = from_outbox.and_then(|index| self.outbox.remove(index)) {
                    self.events.push_back(Event::Dropped { client_message_id: entry.send.client_message_id });
                }
                continue;
            }
            if let Some(index) = from_outbox {
                self.outbox[index].transmitted = true;
                self.outbox[index].written = true;
            }
            self.tokens_milli -= 1_000;
            self.transmits.push_back(frame);
        }
    }

    fn request_id(&mut self, prefix: &str) -> RequestId {
        let n = self.next_request;
        self.next_request = self.next_request.wrapping_add(1);
        RequestId::new(format!("{prefix}-{n}")).expect("a short non-empty id")
    }

    fn random_bytes(&mut self) -> [u8; 16] {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.config.backoff.random().to_le_bytes());
        bytes[8..].copy_from_slice(&self.config.backoff.random().to_le_bytes());
        bytes
    }
}

/// `value` raised or lowered into `bounds`.
fn within<T: Ord + Copy>(value: T, bounds: &RangeInclusive<T>) -> T {
    value.clamp(*bounds.start(), *bounds.end())
}

fn envelope(message: ClientMessage, id: Option<RequestId>) -> ClientEnvelope {
    ClientEnvelope { id, timestamp: None, message }
}
