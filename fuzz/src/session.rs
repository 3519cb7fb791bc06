//! The `session` target: a [`Script`] of driver inputs and commands, played
//! against [`Session`] on a virtual clock by a driver that keeps the
//! documented call order (a frame or a close only on a socket the session
//! asked for), checking after every step that:
//!
//! - nothing panics (overflow included: the targets build with overflow checks);
//! - every frame the session transmits is written on an open socket, decodes
//!   as a [`ClientEnvelope`] and is at most the `maxMessageBytes` the server
//!   announced last, whatever the server sends (an announcement below
//!   [`ANNOUNCEMENT_FLOOR`] counts as that floor);
//! - the outbox never holds more than `outbox_capacity` messages;
//! - a notification's `seq` is handed to the application at most once, and
//!   each topic's events in strictly increasing `seq` (until the application
//!   subscribes it again with its own `afterSeq`);
//! - the driver never spins: once [`Session::handle_timeout`] ran at `now`,
//!   [`Session::poll_timeout`] is not at or before `now` any more.

use arbitrary::Arbitrary;
use petchat_protocol::close::reason_with_retry_hint;
use petchat_protocol::limits::{MAX_MESSAGE_BYTES, MAX_SEQ};
use petchat_protocol::session::{Action, Backoff, Event, Millis, Session, SessionConfig};
use petchat_protocol::{
    ClientEnvelope, ClientMessage, ClientMessageId, CloseCode, ConversationId, JoinConversation, LastSeq, MessageText,
    OpenConversation, SendChat, Seq, ServerMessage, SubscribeTopic, Timestamp, TopicName,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

/// The conversations a script talks about; the first is the golden examples' one.
const CONVERSATIONS: [&str; 3] = ["c-7f3a9b", "c-2", "c-3"];
/// The topics a script talks about; the first is the golden examples' one.
const TOPICS: [&str; 2] = ["orders:ord-2026-0042", "pets:42"];
/// The session's own user, as in the golden `session.ready`.
const ME: &str = "cust-42";
/// The virtual clock stops here (about 285,000 years): the findings are about
/// what the server sends, not about a clock that wraps.
const CLOCK_CAP: Millis = 1 << 53;
/// Below 1 KiB no `chat.send` fits in its envelope: a session may take such
/// a `maxMessageBytes` as broken and hold itself to 1 KiB instead.
pub const ANNOUNCEMENT_FLOOR: usize = 1_024;
/// Rounds of `handle_timeout` at one instant before the driver counts as spinning.
const SPIN_ROUNDS: usize = 3;
const TIMESTAMP: &str = "2026-11-22T10:15:00.000Z";

/// Every valid server example of `schemas/examples`.
const GOLDEN: &[&str] = &[
    include_str!("../../schemas/examples/valid/server.agent.assigned.json"),
    include_str!("../../schemas/examples/valid/server.agent.status.json"),
    include_str!("../../schemas/examples/valid/server.chat.ack.json"),
    include_str!("../../schemas/examples/valid/server.chat.message.json"),
    include_str!("../../schemas/examples/valid/server.conversation.closed.json"),
    include_str!("../../schemas/examples/valid/server.conversation.closed--customer-away.json"),
    include_str!("../../schemas/examples/valid/server.conversation.closed--resolved.json"),
    include_str!("../../schemas/examples/valid/server.conversation.joined.json"),
    include_str!("../../schemas/examples/valid/server.conversation.listed.json"),
    include_str!("../../schemas/examples/valid/server.conversation.opened.json"),
    include_str!("../../schemas/examples/valid/server.conversation.queued.json"),
    include_str!("../../schemas/examples/valid/server.conversation.transferred.json"),
    include_str!("../../schemas/examples/valid/server.conversation.transferred--to-queue.json"),
    include_str!("../../schemas/examples/valid/server.error--limit-reached.json"),
    include_str!("../../schemas/examples/valid/server.error--rate-limited.json"),
    include_str!("../../schemas/examples/valid/server.error--token-expired.json"),
    include_str!("../../schemas/examples/valid/server.error--unauthorized.json"),
    include_str!("../../schemas/examples/valid/server.error.json"),
    include_str!("../../schemas/examples/valid/server.message.delivered.json"),
    include_str!("../../schemas/examples/valid/server.message.read.json"),
    include_str!("../../schemas/examples/valid/server.notification.json"),
    include_str!("../../schemas/examples/valid/server.notification.read.json"),
    include_str!("../../schemas/examples/valid/server.pong.json"),
    include_str!("../../schemas/examples/valid/server.presence.json"),
    include_str!("../../schemas/examples/valid/server.session.ready.json"),
    include_str!("../../schemas/examples/valid/server.session.refreshed.json"),
    include_str!("../../schemas/examples/valid/server.topic.event.json"),
    include_str!("../../schemas/examples/valid/server.topic.subscribed.json"),
    include_str!("../../schemas/examples/valid/server.topic.unsubscribed.json"),
    include_str!("../../schemas/examples/valid/server.typing.start.json"),
    include_str!("../../schemas/examples/valid/server.typing.stop.json"),
];

/// The numbers a server might send: small ones, the edges, or anything.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Number {
    /// 0..=255.
    Small(u8),
    /// One of the edges (0, 1, `u32::MAX`, `MAX_SEQ`, `u64::MAX`…).
    Edge(u8),
    /// Any `u64`.
    Any(u64),
}

const EDGES: [u64; 14] = [
    0,
    1,
    2,
    999,
    1_000,
    25_000,
    65_536,
    u32::MAX as u64,
    u32::MAX as u64 + 1,
    MAX_SEQ,
    MAX_SEQ + 1,
    i64::MAX as u64,
    u64::MAX - 1,
    u64::MAX,
];

impl Number {
    fn get(self) -> u64 {
        match self {
            Number::Small(n) => u64::from(n),
            Number::Edge(i) => EDGES[usize::from(i) % EDGES.len()],
            Number::Any(n) => n,
        }
    }
}

/// One of [`CONVERSATIONS`].
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Conv(u8);

impl Conv {
    fn name(self) -> &'static str {
        CONVERSATIONS[usize::from(self.0) % CONVERSATIONS.len()]
    }

    fn id(self) -> ConversationId {
        ConversationId::new(self.name()).expect("a valid conversation id")
    }
}

/// One of [`TOPICS`].
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Topic(u8);

impl Topic {
    fn name(self) -> &'static str {
        TOPICS[usize::from(self.0) % TOPICS.len()]
    }

    fn id(self) -> TopicName {
        TopicName::new(self.name()).expect("a valid topic name")
    }
}

/// A whole fuzz case: the session's configuration and what happens to it.
#[derive(Arbitrary, Debug)]
pub struct Script {
    /// Seed of the jitter and of the generated ids.
    pub seed: u64,
    /// `SessionConfig::auto_delivered`.
    pub auto_delivered: bool,
    /// `SessionConfig::auto_join`.
    pub auto_join: bool,
    /// `SessionConfig::outbox_capacity`, small so that a script can fill it.
    pub outbox_capacity: u8,
    /// `SessionConfig::history_per_conversation`.
    pub history: u8,
    /// What happens, in order.
    pub steps: Vec<Step>,
}

/// One input of the driver or one command of the application.
#[derive(Arbitrary, Debug)]
pub enum Step {
    /// `Session::start`.
    Start,
    /// The socket the session asked for opened.
    Connected,
    /// The socket the session asked for could not open.
    ConnectFailed,
    /// A text frame from the server.
    Frame(Frame),
    /// The server closed the socket (`None`: it failed without a close frame).
    Closed {
        /// The close code.
        code: Option<Code>,
        /// The close reason.
        reason: Reason,
    },
    /// The clock moves forward, then `handle_timeout`.
    Elapse(Elapse),
    /// The clock jumps to `poll_timeout`, then `handle_timeout`.
    UntilDue,
    /// `Session::network_online`.
    NetworkOnline,
    /// `Session::token_refreshed`.
    TokenRefreshed,
    /// `Session::disconnect`.
    Disconnect,
    /// An application command.
    Command(Command),
}

/// A close code: one of the contract's, or any.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Code {
    /// One of `CloseCode::ALL`.
    Known(u8),
    /// Any code.
    Any(u16),
}

impl Code {
    fn get(self) -> CloseCode {
        match self {
            Code::Known(i) => CloseCode::ALL[usize::from(i) % CloseCode::ALL.len()],
            Code::Any(code) => CloseCode::from(code),
        }
    }
}

/// How far the clock moves.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Elapse {
    /// Milliseconds.
    Ms(u16),
    /// Seconds.
    Seconds(u16),
    /// Hours (up to 7 years).
    Hours(u16),
}

impl Elapse {
    fn ms(self) -> Millis {
        match self {
            Elapse::Ms(ms) => Millis::from(ms),
            Elapse::Seconds(s) => Millis::from(s) * 1_000,
            Elapse::Hours(h) => Millis::from(h) * 3_600_000,
        }
    }
}

/// A close reason.
#[derive(Arbitrary, Debug)]
pub enum Reason {
    /// Empty.
    Empty,
    /// `"…; retryAfterMs=N"`.
    Hint(Number),
    /// Anything.
    Text(String),
}

/// A server frame: well-formed messages with arbitrary numbers and ids, the
/// golden examples, or any text.
#[derive(Arbitrary, Debug)]
pub enum Frame {
    /// `session.ready`.
    Ready {
        /// `heartbeatIntervalMs`.
        heartbeat: Number,
        /// `limits.maxMessageBytes`.
        max_message_bytes: Number,
        /// `limits.messagesPerSecond`.
        messages_per_second: Number,
        /// The conversations to rejoin, with their `lastSeq`.
        conversations: Vec<(Conv, Number)>,
        /// `tokenExpiresAt` (SPEC §1; decoders that do not know it ignore it).
        token_expires: Expiry,
        /// `notifications.unread` and `notifications.lastSeq` (SPEC §12).
        notifications: (Number, Number),
    },
    /// `session.refreshed` (SPEC §1), answering a `session.refresh`.
    Refreshed {
        /// Its `id`.
        reference: Reference,
        /// `tokenExpiresAt`.
        token_expires: Expiry,
    },
    /// `conversation.joined` or (`opened`) `conversation.opened`.
    Joined {
        /// The conversation.
        conversation: Conv,
        /// Its `lastSeq`.
        last_seq: Number,
        /// `hasMore`.
        has_more: Option<bool>,
        /// `conversation.opened` instead.
        opened: bool,
    },
    /// `chat.message`.
    Message {
        /// The conversation.
        conversation: Conv,
        /// Its `seq`.
        seq: Number,
        /// Written by the session's own user.
        mine: bool,
        /// The text.
        text: String,
    },
    /// `chat.ack` of the outbox's message at this index (any key when it is empty).
    Ack {
        /// Index into the outbox.
        outbox: u8,
        /// The conversation.
        conversation: Conv,
        /// Its `seq`.
        seq: Number,
    },
    /// `error`.
    Error {
        /// Index into the error codes.
        code: u8,
        /// Its `refId`.
        reference: Reference,
        /// Its `retryAfterMs`.
        retry_after_ms: Option<Number>,
    },
    /// `topic.subscribed` (SPEC §11).
    Subscribed {
        /// The topic.
        topic: Topic,
        /// Its `id`.
        reference: Reference,
        /// `lastSeq`.
        last_seq: Number,
        /// `recovered`.
        recovered: bool,
    },
    /// `topic.event`.
    TopicEvent {
        /// The topic.
        topic: Topic,
        /// Its `seq`.
        seq: Number,
    },
    /// `notification` (SPEC §12).
    Notification {
        /// Its `seq`.
        seq: Number,
    },
    /// `notification.read` from another connection of the user.
    NotificationsRead {
        /// `upToSeq`.
        up_to: Number,
    },
    /// One of the golden examples.
    Golden(u8),
    /// Any text.
    Raw(String),
}

/// A token's expiry, relative to the frame's `timestamp`.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Expiry {
    /// This many milliseconds later.
    In(Number),
    /// This many milliseconds earlier: expired already.
    Ago(Number),
}

impl Expiry {
    fn timestamp(self) -> Value {
        let sent = Timestamp::from_str(TIMESTAMP).expect("a valid timestamp").as_unix_ms();
        let offset = |n: Number| i64::try_from(n.get()).unwrap_or(i64::MAX);
        let at = match self {
            Expiry::In(n) => sent.saturating_add(offset(n)),
            Expiry::Ago(n) => sent.saturating_sub(offset(n)),
        };
        // Past the years 0000..=9999 the wire cannot say it: the last instant it can.
        Timestamp::from_unix_ms(at).map_or_else(|| json!("9999-12-31T23:59:59.999Z"), |t| json!(t))
    }
}

/// The `refId` of an error, or the `id` of a reply.
#[derive(Arbitrary, Debug)]
pub enum Reference {
    /// None.
    None,
    /// `m-N`, a `chat.send`.
    Message(u8),
    /// `j-<conversation>`, a join.
    Join(Conv),
    /// `hb-N`, a heartbeat ping.
    Heartbeat(u8),
    /// `rt-N`, a token refresh.
    Refresh(u8),
    /// `t-N`, a topic subscription.
    Subscribe(u8),
    /// Anything.
    Text(String),
}

impl Reference {
    fn text(&self) -> Option<String> {
        match self {
            Reference::None => None,
            Reference::Message(n) => Some(format!("m-{n}")),
            Reference::Join(c) => Some(format!("j-{}", c.name())),
            Reference::Heartbeat(n) => Some(format!("hb-{n}")),
            Reference::Refresh(n) => Some(format!("rt-{n}")),
            Reference::Subscribe(n) => Some(format!("t-{n}")),
            Reference::Text(text) => Some(text.clone()),
        }
    }
}

/// An application command.
#[derive(Arbitrary, Debug)]
pub enum Command {
    /// `send_chat`.
    SendChat(Conv, Text),
    /// `join`.
    Join(Conv),
    /// `send(conversation.join)` with an `afterSeq`.
    JoinAfter(Conv, Number),
    /// `send(conversation.leave)`.
    Leave(Conv),
    /// `close_conversation`.
    CloseConversation(Conv),
    /// `mark_read`.
    MarkRead(Conv, Number),
    /// `set_available`.
    SetAvailable(bool),
    /// `typing`.
    Typing(Conv),
    /// `stop_typing`.
    StopTyping(Conv),
    /// `open_conversation`.
    Open,
    /// `send(ping)`.
    Ping,
    /// `restore_outbox` with keys from a small pool (so that some repeat).
    Restore(Vec<(Conv, u8)>),
    /// `subscribe`.
    Subscribe(Topic),
    /// `send(topic.subscribe)` with an `afterSeq`.
    SubscribeAfter(Topic, Number),
    /// `unsubscribe`.
    Unsubscribe(Topic),
    /// `mark_notifications_read`.
    MarkNotificationsRead(Number),
}

/// A chat text.
#[derive(Arbitrary, Debug)]
pub enum Text {
    /// Anything.
    Short(String),
    /// This many `x`.
    Long(u16),
    /// This many characters that JSON escapes (`\u0001`, six bytes each).
    Escaped(u16),
}

impl Text {
    fn get(&self) -> String {
        match self {
            Text::Short(text) => text.clone(),
            Text::Long(n) => "x".repeat(usize::from(*n % 4_200)),
            Text::Escaped(n) => "\u{1}".repeat(usize::from(*n % 4_200)),
        }
    }
}

/// The socket as the driver holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Socket {
    None,
    Opening,
    Open,
}

struct Driver {
    session: Session,
    now: Millis,
    socket: Socket,
    /// `maxMessageBytes` of the last `session.ready`.
    announced: usize,
    capacity: usize,
    /// Token requests answered so far: every other one fails, as a token
    /// provider that is sometimes down would (`Session::refresh_failed`).
    refreshes: u64,
    /// The seq of the last event handed on, per topic.
    topic_seqs: BTreeMap<String, u64>,
    /// The notification seqs handed on.
    notification_seqs: BTreeSet<u64>,
}

/// Plays a script; panics when an invariant of the module docs breaks.
pub fn run(script: &Script) {
    let mut driver = Driver::new(script);
    for step in &script.steps {
        driver.step(step);
        driver.settle();
    }
}

impl Driver {
    fn new(script: &Script) -> Self {
        let capacity = usize::from(script.outbox_capacity).max(1);
        let config = SessionConfig {
            auto_delivered: script.auto_delivered,
            auto_join: script.auto_join,
            outbox_capacity: capacity,
            history_per_conversation: usize::from(script.history),
            seed: script.seed,
            backoff: Backoff::new(script.seed),
            ..SessionConfig::default()
        };
        Self {
            session: Session::new(config),
            now: 0,
            socket: Socket::None,
            announced: MAX_MESSAGE_BYTES,
            capacity,
            refreshes: 0,
            topic_seqs: BTreeMap::new(),
            notification_seqs: BTreeSet::new(),
        }
    }

    fn step(&mut self, step: &Step) {
        let now = self.now;
        match step {
            Step::Start => self.session.start(now),
            Step::Connected => {
                if self.socket == Socket::Opening {
                    self.socket = Socket::Open;
                    self.session.handle_connected(now);
                }
            }
            Step::ConnectFailed => {
                if self.socket == Socket::Opening {
                    self.socket = Socket::None;
                    self.session.handle_closed(now, None, "");
                }
            }
            Step::Frame(frame) => {
                if self.socket == Socket::Open {
                    let text = self.frame_text(frame);
                    self.session.handle_frame(now, &text);
                }
            }
            Step::Closed { code, reason } => {
                if self.socket == Socket::Open {
                    self.socket = Socket::None;
                    let reason = match reason {
                        Reason::Empty => String::new(),
                        Reason::Hint(n) => reason_with_retry_hint("at capacity", n.get()),
                        Reason::Text(text) => text.clone(),
                    };
                    self.session.handle_closed(now, code.map(Code::get), &reason);
                }
            }
            Step::Elapse(elapse) => {
                self.now = self.now.saturating_add(elapse.ms()).min(CLOCK_CAP);
                self.session.handle_timeout(self.now);
            }
            Step::UntilDue => {
                if let Some(due) = self.session.poll_timeout() {
                    self.now = self.now.max(due.min(CLOCK_CAP));
                }
                self.session.handle_timeout(self.now);
            }
            Step::NetworkOnline => self.session.network_online(now),
            Step::TokenRefreshed => self.session.token_refreshed(now),
            Step::Disconnect => self.session.disconnect(now),
            Step::Command(command) => self.command(command),
        }
    }

    fn command(&mut self, command: &Command) {
        let now = self.now;
        // Refusals (`SendError`) are answers, not failures.
        let _ = match command {
            Command::SendChat(c, text) => self.session.send_chat(now, &c.id(), &text.get()).map(drop),
            Command::Join(c) => self.session.join(now, &c.id()),
            Command::JoinAfter(c, after) => match LastSeq::new(after.get()) {
                Ok(after) => {
                    let join = JoinConversation { conversation_id: c.id(), after_seq: Some(after) };
                    self.session.send(now, ClientMessage::ConversationJoin(join), None)
                }
                Err(_) => Ok(()),
            },
            Command::Leave(c) => self.session.send(
                now,
                ClientMessage::ConversationLeave(petchat_protocol::ConversationRef { conversation_id: c.id() }),
                None,
            ),
            Command::CloseConversation(c) => self.session.close_conversation(now, &c.id()),
            Command::MarkRead(c, up_to) => match Seq::new(up_to.get()) {
                Ok(up_to) => self.session.mark_read(now, &c.id(), up_to),
                Err(_) => Ok(()),
            },
            Command::SetAvailable(available) => self.session.set_available(now, *available),
            Command::Typing(c) => {
                self.session.typing(now, &c.id());
                Ok(())
            }
            Command::StopTyping(c) => {
                self.session.stop_typing(&c.id());
                Ok(())
            }
            Command::Open => self.session.open_conversation(now, OpenConversation::default()),
            Command::Ping => self.session.send(now, ClientMessage::Ping(Default::default()), None),
            Command::Restore(entries) => {
                let messages = entries.iter().map(|(c, key)| SendChat {
                    conversation_id: c.id(),
                    client_message_id: pool_key(*key),
                    text: MessageText::new("restored").expect("a valid text"),
                    attachments: Default::default(),
                });
                self.session.restore_outbox(now, messages.collect::<Vec<_>>());
                Ok(())
            }
            Command::Subscribe(t) => self.session.subscribe(now, &t.id()),
            Command::SubscribeAfter(t, after) => match LastSeq::new(after.get()) {
                Ok(after) => {
                    // The application starts the topic where it chooses.
                    self.topic_seqs.remove(t.name());
                    let subscribe = SubscribeTopic { topic: t.id(), after_seq: Some(after) };
                    self.session.send(now, ClientMessage::TopicSubscribe(subscribe), None)
                }
                Err(_) => Ok(()),
            },
            Command::Unsubscribe(t) => {
                self.topic_seqs.remove(t.name());
                self.session.unsubscribe(now, &t.id())
            }
            Command::MarkNotificationsRead(up_to) => match Seq::new(up_to.get()) {
                Ok(up_to) => self.session.mark_notifications_read(now, up_to),
                Err(_) => Ok(()),
            },
        };
    }

    fn frame_text(&self, frame: &Frame) -> String {
        let data = match frame {
            Frame::Golden(i) => return GOLDEN[usize::from(*i) % GOLDEN.len()].to_owned(),
            Frame::Raw(text) => return text.clone(),
            Frame::Refreshed { reference, token_expires } => {
                let data = json!({"tokenExpiresAt": token_expires.timestamp()});
                let mut frame = json!({"type": "session.refreshed", "data": data});
                if let Some(id) = reference.text() {
                    frame["id"] = json!(id);
                }
                frame
            }
            Frame::Ready {
                heartbeat,
                max_message_bytes,
                messages_per_second,
                conversations,
                token_expires,
                notifications: (unread, last_seq),
            } => json!({
                "type": "session.ready",
                "data": {
                    "sessionId": "s-1",
                    "user": {"id": ME, "role": "customer", "name": "Alice"},
                    "heartbeatIntervalMs": heartbeat.get(),
                    "limits": {
                        "maxMessageBytes": max_message_bytes.get(),
                        "maxTextChars": 4_000,
                        "messagesPerSecond": messages_per_second.get(),
                    },
                    "conversations": conversations.iter().map(|(c, last)| json!({
                        "id": c.name(), "status": "active", "lastSeq": last.get(),
                    })).collect::<Vec<Value>>(),
                    "tokenExpiresAt": token_expires.timestamp(),
                    "notifications": {"unread": unread.get(), "lastSeq": last_seq.get()},
                },
            }),
            Frame::Subscribed { topic, reference, last_seq, recovered } => {
                let data = json!({"topic": topic.name(), "lastSeq": last_seq.get(), "recovered": recovered});
                let mut frame = json!({"type": "topic.subscribed", "data": data});
                if let Some(id) = reference.text() {
                    frame["id"] = json!(id);
                }
                frame
            }
            Frame::TopicEvent { topic, seq } => json!({
                "type": "topic.event",
                "data": {
                    "topic": topic.name(),
                    "seq": seq.get(),
                    "event": "order.status",
                    "data": {"status": "shipped"},
                    "publishedAt": TIMESTAMP,
                },
            }),
            Frame::Notification { seq } => json!({
                "type": "notification",
                "data": {
                    "id": format!("n-{}", seq.get()),
                    "seq": seq.get(),
                    "kind": "order.shipped",
                    "title": "Shipped",
                    "body": "",
                    "createdAt": TIMESTAMP,
                },
            }),
            Frame::NotificationsRead { up_to } => {
                json!({"type": "notification.read", "data": {"upToSeq": up_to.get()}})
            }
            Frame::Joined { conversation, last_seq, has_more, opened } => {
                let mut data = json!({"conversation": {
                    "id": conversation.name(),
                    "customer": {"id": ME, "name": "Alice"},
                    "status": "active",
                    "lastSeq": last_seq.get(),
                    "createdAt": TIMESTAMP,
                }});
                if let Some(has_more) = has_more {
                    data["hasMore"] = json!(has_more);
                }
                let kind = if *opened { "conversation.opened" } else { "conversation.joined" };
                json!({"type": kind, "data": data})
            }
            Frame::Message { conversation, seq, mine, text } => json!({
                "type": "chat.message",
                "data": {
                    "conversationId": conversation.name(),
                    "messageId": format!("m-{}", seq.get()),
                    "seq": seq.get(),
                    "from": {"id": if *mine { ME } else { "agent-7" }, "role": "agent", "name": "Bob"},
                    "text": text,
                    "sentAt": TIMESTAMP,
                },
            }),
            Frame::Ack { outbox, conversation, seq } => {
                let keys: Vec<&ClientMessageId> = self.session.outbox().map(|s| &s.client_message_id).collect();
                let key = match keys.len() {
                    0 => pool_key(*outbox),
                    n => keys[usize::from(*outbox) % n].clone(),
                };
                json!({
                    "type": "chat.ack",
                    "data": {
                        "conversationId": conversation.name(),
                        "clientMessageId": key,
                        "messageId": format!("m-{}", seq.get()),
                        "seq": seq.get(),
                        "sentAt": TIMESTAMP,
                    },
                })
            }
            Frame::Error { code, reference, retry_after_ms } => {
                let codes = petchat_protocol::ErrorCode::ALL;
                let mut data = json!({"code": codes[usize::from(*code) % codes.len()], "message": "refused"});
                if let Some(ref_id) = reference.text() {
                    data["refId"] = json!(ref_id);
                }
                if let Some(retry) = retry_after_ms {
                    data["retryAfterMs"] = json!(retry.get());
                }
                json!({"type": "error", "data": data})
            }
        };
        let mut frame = data;
        frame["timestamp"] = json!(TIMESTAMP);
        frame.to_string()
    }

    /// Does what a driver does with the session's outputs, checking them;
    /// then runs the timers that are due, as a driver's loop would.
    fn settle(&mut self) {
        self.drain();
        for _ in 0..SPIN_ROUNDS {
            match self.session.poll_timeout() {
                Some(due) if due <= self.now => {
                    self.session.handle_timeout(self.now);
                    self.drain();
                }
                _ => return,
            }
        }
        if let Some(due) = self.session.poll_timeout().filter(|due| *due <= self.now) {
            panic!(
                "poll_timeout stays at {due} after handle_timeout({now}) ran {SPIN_ROUNDS} times: the driver spins",
                now = self.now
            );
        }
    }

    fn drain(&mut self) {
        while let Some(action) = self.session.poll_action() {
            match action {
                Action::Connect => self.socket = Socket::Opening,
                Action::Close { .. } => self.socket = Socket::None,
                // The token provider answers at once, with a token or without.
                Action::RefreshToken => {
                    self.refreshes += 1;
                    if self.refreshes.is_multiple_of(2) {
                        self.session.refresh_failed(self.now);
                    } else {
                        self.session.refresh_token(self.now, format!("token-{}", self.refreshes));
                    }
                }
            }
        }
        while let Some(event) = self.session.poll_event() {
            let Event::Message(envelope) = &event else { continue };
            match &envelope.message {
                ServerMessage::SessionReady(ready) => {
                    self.announced = (ready.limits.max_message_bytes as usize).max(ANNOUNCEMENT_FLOOR);
                }
                ServerMessage::TopicEvent(event) => {
                    let topic = event.topic.as_str();
                    let seq = event.seq.get();
                    if let Some(last) = self.topic_seqs.insert(topic.to_owned(), seq) {
                        assert!(seq > last, "{topic}: event {seq} handed on after {last}");
                    }
                }
                ServerMessage::Notification(notification) => {
                    let seq = notification.seq.get();
                    assert!(self.notification_seqs.insert(seq), "notification {seq} handed on twice");
                }
                _ => {}
            }
        }
        // A topic the session dropped (refused) starts afresh when subscribed again.
        let subscribed: BTreeSet<&str> = self.session.topics().map(|(t, _)| t.as_str()).collect();
        self.topic_seqs.retain(|t, _| subscribed.contains(t.as_str()));
        while let Some(frame) = self.session.poll_transmit() {
            assert_eq!(self.socket, Socket::Open, "a frame to write with no open socket: {frame}");
            if let Err(e) = ClientEnvelope::decode(&frame) {
                panic!("the session wrote a frame the server refuses ({e}): {frame}");
            }
            assert!(
                frame.len() <= self.announced,
                "the session wrote {} bytes, the server announced maxMessageBytes {}: {frame}",
                frame.len(),
                self.announced
            );
        }
        let queued = self.session.outbox().count();
        assert!(queued <= self.capacity, "the outbox holds {queued} messages, its capacity is {}", self.capacity);
    }
}

/// A `clientMessageId` from a pool of 256.
fn pool_key(n: u8) -> ClientMessageId {
    ClientMessageId::new(format!("00000000-0000-4000-8000-{n:012x}")).expect("a valid UUID")
}

#[cfg(test)]
mod tests {
    use petchat_protocol::ServerEnvelope;

    use super::*;

    /// Every generated message decodes: were the contract to change under
    /// them (a new required field), the fuzzer would silently stay outside the
    /// session, with every frame refused as `Event::Invalid`.
    #[test]
    fn generated_frames_decode() {
        let script =
            Script { seed: 1, auto_delivered: true, auto_join: true, outbox_capacity: 8, history: 8, steps: vec![] };
        let driver = Driver::new(&script);
        let n = Number::Small(3);
        let frames = [
            Frame::Ready {
                heartbeat: n,
                max_message_bytes: Number::Edge(6),
                messages_per_second: n,
                conversations: vec![(Conv(0), n)],
                token_expires: Expiry::In(Number::Edge(4)),
                notifications: (n, Number::Edge(9)),
            },
            Frame::Subscribed { topic: Topic(1), reference: Reference::Subscribe(3), last_seq: n, recovered: false },
            Frame::TopicEvent { topic: Topic(0), seq: n },
            Frame::Notification { seq: n },
            Frame::NotificationsRead { up_to: n },
            Frame::Joined { conversation: Conv(1), last_seq: n, has_more: Some(true), opened: false },
            Frame::Joined { conversation: Conv(2), last_seq: n, has_more: None, opened: true },
            Frame::Message { conversation: Conv(0), seq: n, mine: false, text: "hi".into() },
            Frame::Ack { outbox: 0, conversation: Conv(0), seq: n },
            Frame::Error { code: 6, reference: Reference::Join(Conv(0)), retry_after_ms: Some(n) },
        ];
        for frame in &frames {
            let text = driver.frame_text(frame);
            if let Err(e) = ServerEnvelope::decode(&text) {
                panic!("{frame:?} does not decode ({e}): {text}");
            }
        }
        for i in 0..GOLDEN.len() {
            let golden = u8::try_from(i).expect("a few examples");
            assert!(ServerEnvelope::decode(&driver.frame_text(&Frame::Golden(golden))).is_ok());
        }
    }
}
