//! The petchat browser client: the shared session core
//! (`petchat_protocol::session`) driven by the browser's `WebSocket`, with a
//! JavaScript API.
//!
//! ```js
//! import init, { connect } from "./pkg/petchat_web.js";
//! await init();
//! const client = connect({
//!   url: "ws://127.0.0.1:8080/v1/ws/chat",
//!   getToken: async (fresh) => (await fetch("/my/token")).text(),
//!   onEvent: (event) => console.log(event.type, event.data),
//! });
//! client.open();
//! ```
//!
//! The token travels in the subprotocol (`petchat.v1, bearer.<JWT>`), never in
//! the URL. Ahead of its expiry the client calls `getToken(true)` and swaps
//! the fresh token into the live connection (`session.refresh`). The outbox is kept in `localStorage`, so a message typed offline
//! survives a reload.

mod platform;

use std::cell::RefCell;
use std::rc::Rc;

use petchat_protocol::session::{Action, Backoff, Event, Session, SessionConfig};
use petchat_protocol::{
    ClientEnvelope, ClientMessage, ClientMessageId, ConversationId, ConversationRef, JoinConversation, LastSeq,
    OpenConversation, OrderId, ReceiptUpTo, SendChat, Seq, SetAgentStatus, SubscribeTopic, Topic, TopicName,
};
use wasm_bindgen::prelude::*;

/// The messages and events as TypeScript unions (`PetchatEvent`,
/// `ServerMessage`, `ClientMessage`, `ClientEvent` and their data types),
/// generated from the protocol crate by `cargo xtask schemas`.
#[wasm_bindgen(typescript_custom_section)]
const PROTOCOL_TYPES: &str = include_str!("protocol.d.ts");

/// The types of this package's API around them.
#[wasm_bindgen(typescript_custom_section)]
const TYPES: &str = r#"
/** What `connect` takes. */
export interface ConnectOptions {
  /** ws://HOST/v1/ws/chat or wss://… */
  url: string;
  /**
   * A token for each connection attempt. `fresh` is true after the server refused the last one, and
   * ahead of the live connection's token expiry (the client sends it as `session.refresh`). Return
   * null to stop (or, for a refresh, to let the connection lapse into 4501).
   */
  getToken: (fresh: boolean) => Promise<string | null> | string | null;
  /** Every event: server messages as received, and the client's own `client.*` events. */
  onEvent?: (event: PetchatEvent) => void;
  /** Send message.delivered automatically (default true). */
  autoDelivered?: boolean;
  /** localStorage key of the outbox (default "petchat.outbox"). */
  storageKey?: string;
}
/**
 * What `sendMessage` takes: a client message, in which a `chat.send` may leave out its
 * `clientMessageId` (the client makes one), or the message as JSON text.
 */
export type OutgoingMessage =
  | Exclude<ClientMessage, ClientChatSend>
  | (Omit<ClientChatSend, "data"> & { data: Omit<SendChat, "clientMessageId"> & { clientMessageId?: ClientMessageId } })
  | string;
/** A message waiting for its `chat.ack`, as `outbox()` lists it: its `chat.send` data. */
export type PendingMessage = SendChat;
/** `topic.event` data: one event of a subscribed topic (SPEC §11). */
export type TopicEventData = TopicEvent;
/** `notification` data: a message for the user on all of its devices (SPEC §12). */
export type NotificationData = Notification;
/** Where the user's notifications stand, as `notifications()` says. */
export interface NotificationStatus {
  lastSeq: number;
  readSeq: number;
  unread: number;
}
/** A subscribed topic and the seq of the last event handed on, as `topics()` lists them. */
export interface TopicPosition {
  topic: string;
  lastSeq: number | null;
}
"#;

/// A running browser client.
#[wasm_bindgen]
pub struct PetchatClient {
    inner: Rc<Inner>,
}

/// The client's state, shared with the socket and timer callbacks.
// Outside a browser the platform stubs never read the socket fields.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) struct Inner {
    session: RefCell<Session>,
    url: String,
    get_token: js_sys::Function,
    on_event: RefCell<Option<js_sys::Function>>,
    storage_key: String,
    /// A token fetched after 4500/4501, for the next attempt.
    fresh_token: RefCell<Option<String>>,
    platform: RefCell<platform::State>,
}

/// Starts a client with `{url, getToken, onEvent?, autoDelivered?, storageKey?}`.
#[wasm_bindgen]
pub fn connect(
    #[wasm_bindgen(unchecked_param_type = "ConnectOptions")] options: JsValue,
) -> Result<PetchatClient, JsError> {
    let get = |key: &str| js_sys::Reflect::get(&options, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED);
    let url = get("url").as_string().ok_or_else(|| JsError::new("connect: `url` is required"))?;
    if !(url.starts_with("ws://") || url.starts_with("wss://")) {
        return Err(JsError::new("connect: `url` must start with ws:// or wss://"));
    }
    let get_token: js_sys::Function =
        get("getToken").dyn_into().map_err(|_| JsError::new("connect: `getToken` must be a function"))?;
    let on_event = get("onEvent").dyn_into::<js_sys::Function>().ok();
    // The seed makes the `clientMessageId`s of `send`: from the cryptographic
    // source, so that two devices never share them.
    let random = platform::random_bytes().map_err(|e| JsError::new(&format!("connect: {e}")))?;
    let seed = u64::from_le_bytes(random[..8].try_into().expect("8 of 16 bytes"));
    let config = SessionConfig {
        auto_delivered: get("autoDelivered").as_bool().unwrap_or(true),
        seed,
        backoff: Backoff::new(seed ^ 0x5eed),
        ..SessionConfig::default()
    };
    let inner = Rc::new(Inner {
        session: RefCell::new(Session::new(config)),
        url,
        get_token,
        on_event: RefCell::new(on_event),
        storage_key: get("storageKey").as_string().unwrap_or_else(|| "petchat.outbox".into()),
        fresh_token: RefCell::new(None),
        platform: RefCell::new(platform::State::default()),
    });
    let now = platform::now();
    let saved = platform::load_outbox(&inner.storage_key);
    {
        let mut session = inner.session.borrow_mut();
        session.restore_outbox(now, saved);
        session.start(now);
    }
    platform::listen_online(&inner);
    pump(&inner);
    Ok(PetchatClient { inner })
}

#[wasm_bindgen]
impl PetchatClient {
    /// Sets the event callback.
    #[wasm_bindgen(js_name = onEvent)]
    pub fn on_event(
        &self,
        #[wasm_bindgen(unchecked_param_type = "(event: PetchatEvent) => void")] callback: js_sys::Function,
    ) {
        *self.inner.on_event.borrow_mut() = Some(callback);
    }

    /// Queues a chat message; returns its `clientMessageId`.
    pub fn send(
        &self,
        #[wasm_bindgen(js_name = conversationId)] conversation_id: &str,
        text: &str,
    ) -> Result<String, JsError> {
        let conversation = conversation(conversation_id)?;
        let id = self.with(|s, now| s.send_chat(now, &conversation, text))?;
        Ok(id.as_str().to_owned())
    }

    /// Sends any client message in the wire envelope (an object or JSON text);
    /// a `chat.send` without `clientMessageId` gets one.
    #[wasm_bindgen(js_name = sendMessage)]
    pub fn send_message(
        &self,
        #[wasm_bindgen(unchecked_param_type = "OutgoingMessage")] message: JsValue,
    ) -> Result<(), JsError> {
        let text = match message.as_string() {
            Some(text) => text,
            None => js_sys::JSON::stringify(&message).map_err(|_| JsError::new("not JSON"))?.into(),
        };
        let mut value: serde_json::Value = serde_json::from_str(&text).map_err(|e| JsError::new(&e.to_string()))?;
        if value["type"] == "chat.send"
            && let Some(data) = value.get_mut("data").and_then(serde_json::Value::as_object_mut)
            && !data.contains_key("clientMessageId")
        {
            let random = platform::random_bytes().map_err(|e| JsError::new(&e.to_string()))?;
            let id = ClientMessageId::from_random_bytes(random);
            data.insert("clientMessageId".into(), serde_json::Value::String(id.as_str().to_owned()));
        }
        let envelope = ClientEnvelope::decode(&value.to_string()).map_err(|e| JsError::new(&e.to_string()))?;
        self.with(|s, now| s.send(now, envelope.message, envelope.id))
    }

    /// Opens (or finds) the customer's conversation, about `topic` (in the
    /// customer's words) and, when given, the order `orderId`.
    pub fn open(
        &self,
        topic: Option<String>,
        #[wasm_bindgen(js_name = orderId)] order_id: Option<String>,
    ) -> Result<(), JsError> {
        let topic = topic
            .filter(|t| !t.trim().is_empty())
            .map(Topic::new)
            .transpose()
            .map_err(|e| JsError::new(&e.to_string()))?;
        let order_id = order_id.map(OrderId::new).transpose().map_err(|e| JsError::new(&format!("orderId {e}")))?;
        self.with(|s, now| s.open_conversation(now, OpenConversation { topic, order_id, ..Default::default() }))
    }

    /// Joins a conversation.
    pub fn join(&self, #[wasm_bindgen(js_name = conversationId)] conversation_id: &str) -> Result<(), JsError> {
        let conversation_id = conversation(conversation_id)?;
        self.with(|s, now| {
            s.send(now, ClientMessage::ConversationJoin(JoinConversation { conversation_id, after_seq: None }), None)
        })
    }

    /// Marks a conversation read up to `seq`.
    #[wasm_bindgen(js_name = markRead)]
    pub fn mark_read(
        &self,
        #[wasm_bindgen(js_name = conversationId)] conversation_id: &str,
        seq: f64,
    ) -> Result<(), JsError> {
        let conversation_id = conversation(conversation_id)?;
        let up_to_seq = Seq::new(seq as u64).map_err(|e| JsError::new(&e.to_string()))?;
        self.with(|s, now| s.send(now, ClientMessage::MessageRead(ReceiptUpTo { conversation_id, up_to_seq }), None))
    }

    /// The user typed (throttled: one `typing.start` per 3 s).
    pub fn typing(&self, #[wasm_bindgen(js_name = conversationId)] conversation_id: &str) -> Result<(), JsError> {
        let conversation_id = conversation(conversation_id)?;
        self.with(|s, now| {
            s.typing(now, &conversation_id);
            Ok::<(), petchat_protocol::session::SendError>(())
        })
    }

    /// The user cleared the input.
    #[wasm_bindgen(js_name = stopTyping)]
    pub fn stop_typing(&self, #[wasm_bindgen(js_name = conversationId)] conversation_id: &str) -> Result<(), JsError> {
        let conversation_id = conversation(conversation_id)?;
        self.with(|s, _| {
            s.stop_typing(&conversation_id);
            Ok::<(), petchat_protocol::session::SendError>(())
        })
    }

    /// An agent enters or leaves the pool.
    #[wasm_bindgen(js_name = setAvailable)]
    pub fn set_available(&self, available: bool) -> Result<(), JsError> {
        self.with(|s, now| s.send(now, ClientMessage::AgentStatus(SetAgentStatus { available }), None))
    }

    /// Subscribes to a topic's live events (`topic.event`); with `afterSeq`
    /// the stored events after it come first (0: every kept one). After every
    /// reconnect the client subscribes again from the last event it handed
    /// on, so each event comes once, in order.
    pub fn subscribe(
        &self,
        topic: &str,
        #[wasm_bindgen(js_name = afterSeq)] after_seq: Option<f64>,
    ) -> Result<(), JsError> {
        let topic = TopicName::new(topic).map_err(|e| JsError::new(&format!("topic {e}")))?;
        let after_seq = after_seq
            .map(|n| LastSeq::new(n as u64))
            .transpose()
            .map_err(|e| JsError::new(&format!("afterSeq {e}")))?;
        self.with(|s, now| s.send(now, ClientMessage::TopicSubscribe(SubscribeTopic { topic, after_seq }), None))
    }

    /// Ends a topic subscription.
    pub fn unsubscribe(&self, topic: &str) -> Result<(), JsError> {
        let topic = TopicName::new(topic).map_err(|e| JsError::new(&format!("topic {e}")))?;
        self.with(|s, now| s.unsubscribe(now, &topic))
    }

    /// The topics subscribed to, with the seq of the last event handed on.
    #[wasm_bindgen(unchecked_return_type = "TopicPosition[]")]
    pub fn topics(&self) -> JsValue {
        let session = self.inner.session.borrow();
        let topics: Vec<serde_json::Value> = session
            .topics()
            .map(|(topic, last)| serde_json::json!({"topic": topic.as_str(), "lastSeq": last}))
            .collect();
        json_to_js(&serde_json::Value::Array(topics))
    }

    /// Marks the user's notifications read up to `seq`, on all of its devices.
    #[wasm_bindgen(js_name = markNotificationsRead)]
    pub fn mark_notifications_read(&self, seq: f64) -> Result<(), JsError> {
        let up_to = Seq::new(seq as u64).map_err(|e| JsError::new(&e.to_string()))?;
        self.with(|s, now| s.mark_notifications_read(now, up_to))
    }

    /// Where the user's notifications stand: `{lastSeq, readSeq, unread}`.
    #[wasm_bindgen(unchecked_return_type = "NotificationStatus")]
    pub fn notifications(&self) -> JsValue {
        let status = self.inner.session.borrow().notification_status();
        json_to_js(&serde_json::json!({
            "lastSeq": status.last_seq, "readSeq": status.read_seq, "unread": status.unread(),
        }))
    }

    /// Ends a conversation for both sides.
    #[wasm_bindgen(js_name = closeConversation)]
    pub fn close_conversation(
        &self,
        #[wasm_bindgen(js_name = conversationId)] conversation_id: &str,
    ) -> Result<(), JsError> {
        let conversation_id = conversation(conversation_id)?;
        self.with(|s, now| s.send(now, ClientMessage::ConversationClose(ConversationRef { conversation_id }), None))
    }

    /// The user leaves: close with 1000 and stay down.
    pub fn close(&self) {
        let _ = self.with(|s, now| {
            s.disconnect(now);
            Ok::<(), petchat_protocol::session::SendError>(())
        });
    }

    /// The connection state: `{state, retryInMs?, closeCode?, reason?}`.
    #[wasm_bindgen(unchecked_return_type = "ConnectionState")]
    pub fn state(&self) -> JsValue {
        json_to_js(&self.inner.session.borrow().state().to_json())
    }

    /// Messages waiting for their `chat.ack`, oldest first.
    #[wasm_bindgen(unchecked_return_type = "PendingMessage[]")]
    pub fn outbox(&self) -> JsValue {
        let session = self.inner.session.borrow();
        let pending: Vec<&SendChat> = session.outbox().collect();
        json_to_js(&serde_json::to_value(pending).expect("wire types serialize"))
    }

    fn with<T, E: std::fmt::Display>(&self, f: impl FnOnce(&mut Session, u64) -> Result<T, E>) -> Result<T, JsError> {
        let result = f(&mut self.inner.session.borrow_mut(), platform::now()).map_err(|e| JsError::new(&e.to_string()));
        pump(&self.inner);
        result
    }
}

fn conversation(id: &str) -> Result<ConversationId, JsError> {
    ConversationId::new(id).map_err(|e| JsError::new(&format!("conversation id {e}")))
}

fn json_to_js(value: &serde_json::Value) -> JsValue {
    js_sys::JSON::parse(&value.to_string()).unwrap_or(JsValue::NULL)
}

/// Acts on everything the session asks for: socket actions, frames, events,
/// the next timer. Called after every input.
pub(crate) fn pump(inner: &Rc<Inner>) {
    loop {
        let action = inner.session.borrow_mut().poll_action();
        let Some(action) = action else { break };
        match action {
            Action::Connect => platform::open_socket(inner),
            Action::Close { code, reason } => platform::close_socket(inner, code.code(), &reason),
            Action::RefreshToken => platform::refresh_live_token(inner),
        }
    }
    loop {
        let frame = inner.session.borrow_mut().poll_transmit();
        let Some(frame) = frame else { break };
        platform::send(inner, &frame);
    }
    let mut token_needed = false;
    let mut outbox_changed = false;
    loop {
        let event = inner.session.borrow_mut().poll_event();
        let Some(event) = event else { break };
        match &event {
            Event::TokenNeeded { .. } => token_needed = true,
            Event::Queued { .. } | Event::Sent(_) | Event::Failed { .. } | Event::Dropped { .. } => {
                outbox_changed = true
            }
            _ => {}
        }
        let json = event.to_json(platform::timestamp());
        let callback = inner.on_event.borrow().clone();
        if let Some(callback) = callback {
            // An exception in the application's callback must not stop the client.
            let _ = callback.call1(&JsValue::NULL, &json_to_js(&json));
        }
    }
    if outbox_changed {
        let session = inner.session.borrow();
        platform::save_outbox(&inner.storage_key, session.outbox());
    }
    if token_needed {
        platform::refresh_token(inner);
    }
    let deadline = inner.session.borrow().poll_timeout();
    platform::schedule(inner, deadline);
}
