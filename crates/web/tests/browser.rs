//! The browser client's JavaScript API in headless Chromium, against a real
//! server: both auth failures and success, a short-lived token refreshed on
//! one connection, send and receive with receipts,
//! reconnect after a server restart, and an outbox replayed after a reload.
//!
//! Run by `scripts/browser.sh` (`tests/browser/client.test.mjs`), which starts
//! the server and a control endpoint (tokens, stop, start, restart) and passes
//! its address in `PETCHAT_HARNESS` at build time.
#![cfg(target_arch = "wasm32")]

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use petchat_web::{PetchatClient, connect};
use serde_json::{Value, json};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

/// How long any awaited event may take: reconnects back off up to a few seconds.
const PATIENCE_MS: f64 = 20_000.0;

/// The control endpoint of `tests/browser/client.test.mjs`.
fn harness() -> &'static str {
    env!("PETCHAT_HARNESS", "run by scripts/browser.sh, which sets PETCHAT_HARNESS")
}

async fn sleep(ms: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        let window = web_sys::window().expect("a window");
        window.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms).expect("a timer");
    });
    JsFuture::from(promise).await.expect("timers resolve");
}

/// GETs `path` on the control endpoint and returns its JSON answer.
async fn control(path: &str) -> Value {
    let window = web_sys::window().expect("a window");
    let response: web_sys::Response = JsFuture::from(window.fetch_with_str(&format!("{}{path}", harness())))
        .await
        .expect("the harness answers")
        .dyn_into()
        .expect("a response");
    assert!(response.ok(), "harness {path}: status {}", response.status());
    let text = JsFuture::from(response.text().expect("a body")).await.expect("a text body");
    serde_json::from_str(&text.as_string().expect("text")).expect("JSON from the harness")
}

/// A token minted by the harness; `ttl` in seconds may be negative, `secret` wrong.
async fn token(role: &str, sub: &str, query: &str) -> String {
    control(&format!("/token?role={role}&sub={sub}{query}")).await.as_str().expect("a token").to_owned()
}

thread_local! {
    /// Whether a test holds the server; wasm-bindgen-test runs async tests concurrently.
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

/// One test's turn with the server, which some tests stop and restart.
struct Turn;

impl Turn {
    async fn take() -> Turn {
        let start = js_sys::Date::now();
        while BUSY.with(|busy| busy.replace(true)) {
            assert!(js_sys::Date::now() - start < 6.0 * PATIENCE_MS, "an earlier test never gave the server back");
            sleep(50).await;
        }
        Turn
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        BUSY.with(|busy| busy.set(false));
    }
}

/// A unique user id, so the tests share one server without meeting.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", (js_sys::Math::random() * 1e12) as u64)
}

/// A client made through the JavaScript API, recording every event and every
/// `getToken` call.
struct Probe {
    client: PetchatClient,
    events: Rc<RefCell<Vec<Value>>>,
    token_calls: Rc<RefCell<Vec<bool>>>,
    _get_token: Closure<dyn FnMut(JsValue) -> JsValue>,
    _on_event: Closure<dyn FnMut(JsValue)>,
}

impl Probe {
    /// Connects with `tokens`: `getToken(false)` gives the current one,
    /// `getToken(true)` moves to the next, or gives null when there is none.
    async fn connect(url: &str, tokens: Vec<String>, storage_key: &str) -> Probe {
        let token_calls = Rc::new(RefCell::new(Vec::new()));
        let get_token = {
            let (calls, mut index) = (token_calls.clone(), 0usize);
            Closure::<dyn FnMut(JsValue) -> JsValue>::new(move |fresh: JsValue| {
                let fresh = fresh.as_bool().unwrap_or(false);
                calls.borrow_mut().push(fresh);
                if fresh {
                    index += 1;
                }
                let token = tokens.get(index).map_or(JsValue::NULL, |t| JsValue::from_str(t));
                js_sys::Promise::resolve(&token).into()
            })
        };
        Self::with_get_token(url, storage_key, token_calls, get_token)
    }

    /// Connects with a `getToken` that has the harness mint a new token,
    /// living `ttl_s` seconds, on every call.
    async fn minting(url: &str, role: &str, sub: &str, ttl_s: u32) -> Probe {
        let token_calls = Rc::new(RefCell::new(Vec::new()));
        let get_token = {
            let (calls, role, sub) = (token_calls.clone(), role.to_owned(), sub.to_owned());
            Closure::<dyn FnMut(JsValue) -> JsValue>::new(move |fresh: JsValue| {
                calls.borrow_mut().push(fresh.as_bool().unwrap_or(false));
                let (role, sub) = (role.clone(), sub.clone());
                wasm_bindgen_futures::future_to_promise(async move {
                    Ok(JsValue::from_str(&token(&role, &sub, &format!("&ttl={ttl_s}")).await))
                })
                .into()
            })
        };
        Self::with_get_token(url, &unique("outbox"), token_calls, get_token)
    }

    fn with_get_token(
        url: &str,
        storage_key: &str,
        token_calls: Rc<RefCell<Vec<bool>>>,
        get_token: Closure<dyn FnMut(JsValue) -> JsValue>,
    ) -> Probe {
        let events = Rc::new(RefCell::new(Vec::new()));
        let on_event = {
            let events = events.clone();
            Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
                let text: String = js_sys::JSON::stringify(&event).expect("events are JSON").into();
                events.borrow_mut().push(serde_json::from_str(&text).expect("events are JSON"));
            })
        };
        let options = js_sys::Object::new();
        for (key, value) in [
            ("url", JsValue::from_str(url)),
            ("getToken", get_token.as_ref().clone()),
            ("onEvent", on_event.as_ref().clone()),
            ("storageKey", JsValue::from_str(storage_key)),
        ] {
            js_sys::Reflect::set(&options, &key.into(), &value).expect("an object");
        }
        let client = connect(options.into()).expect("connect accepts the options");
        Probe { client, events, token_calls, _get_token: get_token, _on_event: on_event }
    }

    /// A customer or an agent with a valid token, once its `session.ready` arrived.
    async fn ready(url: &str, role: &str) -> Probe {
        let sub = unique(role);
        let probe = Probe::connect(url, vec![token(role, &sub, "").await], &unique("outbox")).await;
        probe.next("session.ready", |_| true).await;
        probe
    }

    /// Waits for the first event of `kind` whose data satisfies `test`.
    async fn next(&self, kind: &str, test: impl Fn(&Value) -> bool) -> Value {
        let start = js_sys::Date::now();
        loop {
            if let Some(event) = self.events.borrow().iter().find(|e| e["type"] == kind && test(&e["data"])) {
                return event["data"].clone();
            }
            assert!(
                js_sys::Date::now() - start < PATIENCE_MS,
                "no {kind} event came; the events were {:#?}",
                self.events.borrow()
            );
            sleep(20).await;
        }
    }

    /// The data of every event of `kind` so far.
    fn all(&self, kind: &str) -> Vec<Value> {
        self.events.borrow().iter().filter(|e| e["type"] == kind).map(|e| e["data"].clone()).collect()
    }

    /// Forgets the events so far, so `next` waits for new ones.
    fn clear(&self) {
        self.events.borrow_mut().clear();
    }

    fn outbox(&self) -> Value {
        let text: String = js_sys::JSON::stringify(&self.client.outbox()).expect("the outbox is JSON").into();
        serde_json::from_str(&text).expect("the outbox is JSON")
    }
}

/// Whether an event names the conversation.
fn in_conversation(conversation: &str) -> impl Fn(&Value) -> bool + '_ {
    move |data| data["conversationId"] == conversation
}

/// A customer and an available agent in one active conversation.
async fn conversation(url: &str) -> (Probe, Probe, String) {
    let agent = Probe::ready(url, "agent").await;
    agent.client.set_available(true).expect("agents set their availability");
    agent.next("agent.status", |d| d["available"] == true).await;
    let customer = Probe::ready(url, "customer").await;
    customer.client.open(Some("my cat sneezes".into()), None).expect("customers open conversations");
    let opened = customer.next("conversation.opened", |_| true).await;
    let id = opened["conversation"]["id"].as_str().expect("a conversation id").to_owned();
    agent.next("agent.assigned", in_conversation(&id)).await;
    agent.client.join(&id).expect("agents join");
    agent.next("conversation.joined", |d| d["conversation"]["id"] == id.as_str()).await;
    (customer, agent, id)
}

/// Waits for this test's turn; returns it with the server's WebSocket URL.
async fn ws_url() -> (Turn, String) {
    let turn = Turn::take().await;
    let url = control("/config").await["url"].as_str().expect("the harness says the url").to_owned();
    (turn, url)
}

#[wasm_bindgen_test]
async fn a_valid_token_connects_and_the_session_is_ready() {
    let (_turn, url) = ws_url().await;
    let sub = unique("customer");
    let probe = Probe::connect(&url, vec![token("customer", &sub, "").await], &unique("outbox")).await;
    let ready = probe.next("session.ready", |_| true).await;
    assert_eq!(ready["user"]["id"], sub.as_str());
    assert_eq!(ready["user"]["role"], "customer");
    probe.next("client.state", |d| d["state"] == "connected").await;
    assert_eq!(*probe.token_calls.borrow(), [false], "one token for one connection");
    probe.client.close();
}

#[wasm_bindgen_test]
async fn a_token_with_a_bad_signature_is_refused_with_4500_and_the_client_stops() {
    let (_turn, url) = ws_url().await;
    let forged = token("customer", &unique("customer"), "&secret=not-the-server-secret").await;
    let probe = Probe::connect(&url, vec![forged], &unique("outbox")).await;
    assert_eq!(probe.next("client.token_needed", |_| true).await["closeCode"], 4500);
    probe.next("client.state", |d| d["state"] == "stopped" && d["closeCode"] == 4500).await;
    assert!(probe.all("session.ready").is_empty());
    // getToken(true) gave null: the client asked once for a fresh token and gave up.
    sleep(300).await;
    assert_eq!(*probe.token_calls.borrow(), [false, true]);
}

#[wasm_bindgen_test]
async fn an_expired_token_is_refused_with_4501_and_a_fresh_one_connects() {
    let (_turn, url) = ws_url().await;
    let sub = unique("customer");
    let expired = token("customer", &sub, "&ttl=-300").await;
    let fresh = token("customer", &sub, "").await;
    let probe = Probe::connect(&url, vec![expired, fresh], &unique("outbox")).await;
    assert_eq!(probe.next("client.token_needed", |_| true).await["closeCode"], 4501);
    let ready = probe.next("session.ready", |_| true).await;
    assert_eq!(ready["user"]["id"], sub.as_str());
    assert_eq!(*probe.token_calls.borrow(), [false, true]);
    probe.client.close();
}

#[wasm_bindgen_test]
async fn a_short_lived_token_is_refreshed_and_one_connection_lasts_three_lifetimes() {
    // The harness runs the server with a 500 ms leeway: an unrefreshed 3 s token closes with 4501.
    const LIFETIME_MS: f64 = 3_000.0;
    let (_turn, url) = ws_url().await;
    let sub = unique("customer");
    let probe = Probe::minting(&url, "customer", &sub, 3).await;
    let ready = probe.next("session.ready", |_| true).await;
    assert!(ready["tokenExpiresAt"].is_string(), "{ready}");
    let start = js_sys::Date::now();
    let mut refreshed = 0;
    while js_sys::Date::now() - start < 3.0 * LIFETIME_MS + 500.0 {
        // Each refresh comes within a lifetime of the last; `next` fails the test if one does not.
        let seen = refreshed;
        probe.next("session.refreshed", |_| probe.all("session.refreshed").len() > seen).await;
        refreshed = probe.all("session.refreshed").len();
    }
    assert!(refreshed >= 3, "{refreshed} refreshes in three lifetimes");
    assert_eq!(probe.all("session.ready").len(), 1, "one connection: no reconnect");
    let states: Vec<Value> = probe.all("client.state").into_iter().map(|d| d["state"].clone()).collect();
    assert_eq!(states, [json!("connecting"), json!("connected")], "the connection never dropped");
    assert!(probe.all("error").is_empty(), "{:?}", probe.all("error"));
    let calls = probe.token_calls.borrow().clone();
    assert_eq!(calls.first(), Some(&false));
    assert!(calls[1..].iter().all(|fresh| *fresh) && calls.len() > refreshed, "{calls:?}");
    probe.client.close();
}

#[wasm_bindgen_test]
async fn a_customer_and_an_agent_exchange_messages_with_receipts() {
    let (_turn, url) = ws_url().await;
    let (customer, agent, id) = conversation(&url).await;

    let key = customer.client.send(&id, "Hello, my cat sneezes").expect("a valid message");
    let ack = customer.next("client.sent", |d| d["clientMessageId"] == key.as_str()).await;
    let seq = ack["seq"].as_u64().expect("the ack names the seq");
    let message = agent.next("chat.message", |d| d["seq"] == seq).await;
    assert_eq!(message["text"], "Hello, my cat sneezes");
    assert_eq!(message["from"]["role"], "customer");
    // The agent's client sends message.delivered by itself.
    customer.next("message.delivered", |d| d["upToSeq"].as_u64() >= Some(seq)).await;
    agent.client.mark_read(&id, seq as f64).expect("a valid receipt");
    customer.next("message.read", |d| d["upToSeq"] == seq).await;

    agent.client.typing(&id).expect("typing");
    customer.next("typing.start", in_conversation(&id)).await;
    agent.client.send(&id, "Bless her. Since when?").expect("a valid message");
    let reply = customer.next("chat.message", |d| d["text"] == "Bless her. Since when?").await;
    assert_eq!(reply["from"]["role"], "agent");
    assert!(customer.outbox().as_array().expect("an array").is_empty());
    customer.client.close();
    agent.client.close();
}

#[wasm_bindgen_test]
async fn a_message_with_an_attachment_goes_through_the_outbox_to_the_agent() {
    let (_turn, url) = ws_url().await;
    let (customer, agent, id) = conversation(&url).await;
    let ready = customer.all("session.ready");
    let sub = ready[0]["user"]["id"].as_str().expect("the customer's id").to_owned();
    let uploaded = control(&format!("/upload?sub={sub}&conversation={id}")).await;
    let send = json!({"type": "chat.send",
        "data": {"conversationId": id, "text": "the receipt", "attachments": [uploaded["id"]]}});
    customer.client.send_message(JsValue::from_str(&send.to_string())).expect("a valid chat.send");
    let pending = customer.outbox();
    assert_eq!(pending[0]["attachments"], json!([uploaded["id"]]), "queued with its attachments: {pending}");
    let message = agent.next("chat.message", |d| d["text"] == "the receipt").await;
    assert_eq!(message["attachments"], json!([uploaded]));
    assert_eq!(message["attachments"][0]["contentType"], "application/pdf");
    customer.client.close();
    agent.client.close();
}

#[wasm_bindgen_test]
async fn after_a_server_restart_both_clients_reconnect_and_resume() {
    let (_turn, url) = ws_url().await;
    let (customer, agent, id) = conversation(&url).await;
    customer.client.send(&id, "before").expect("a valid message");
    agent.next("chat.message", |d| d["text"] == "before").await;
    customer.clear();
    agent.clear();

    control("/restart").await;
    for probe in [&customer, &agent] {
        probe.next("client.state", |d| d["state"] == "reconnecting").await;
        probe.next("client.state", |d| d["state"] == "connected").await;
        probe.next("conversation.joined", |d| d["conversation"]["id"] == id.as_str()).await;
    }
    agent.client.send(&id, "after").expect("a valid message");
    customer.next("chat.message", |d| d["text"] == "after").await;
    sleep(300).await;
    let texts: Vec<Value> = customer.all("chat.message").iter().map(|m| m["text"].clone()).collect();
    assert_eq!(texts, [json!("after")], "the resume replays nothing already seen");
    customer.client.close();
    agent.client.close();
}

#[wasm_bindgen_test]
async fn messages_typed_offline_survive_a_reload_and_arrive_once_in_order() {
    let (_turn, url) = ws_url().await;
    let (customer, agent, id) = conversation(&url).await;
    let storage_key = unique("outbox");
    let sub = customer.next("session.ready", |_| true).await["user"]["id"].as_str().expect("an id").to_owned();
    customer.client.close();
    // The page, reloaded onto the outbox key it will keep.
    let page = Probe::connect(&url, vec![token("customer", &sub, "").await], &storage_key).await;
    page.next("session.ready", |_| true).await;

    control("/stop").await;
    page.next("client.state", |d| d["state"] == "reconnecting").await;
    let texts = ["one", "two", "three"];
    for text in texts {
        page.client.send(&id, text).expect("queued while offline");
    }
    assert_eq!(page.all("client.queued").len(), 3);
    assert_eq!(page.outbox().as_array().map(Vec::len), Some(3));
    page.client.close();

    // The reload: a new client on the same storage key finds the three messages.
    let reloaded = Probe::connect(&url, vec![token("customer", &sub, "").await], &storage_key).await;
    let pending: Vec<Value> =
        reloaded.outbox().as_array().expect("an array").iter().map(|m| m["text"].clone()).collect();
    assert_eq!(pending, texts.map(|t| json!(t)));
    agent.clear();
    control("/start").await;
    for text in texts {
        reloaded.next("client.sent", |_| true).await;
        agent.next("chat.message", |d| d["text"] == text).await;
    }
    sleep(500).await;
    let received: Vec<Value> = agent
        .all("chat.message")
        .iter()
        .filter(|m| m["conversationId"] == id.as_str())
        .map(|m| m["text"].clone())
        .collect();
    assert_eq!(received, texts.map(|t| json!(t)), "each message once, in order");
    assert_eq!(reloaded.all("client.sent").len(), 3);
    assert!(reloaded.outbox().as_array().expect("an array").is_empty());
    reloaded.client.close();
    agent.client.close();
}

/// Issue 10, defect 9: without a working `crypto.getRandomValues` the client
/// refuses, loudly, instead of making all-zero `clientMessageId`s that the
/// server would drop as duplicates of one another.
#[wasm_bindgen_test]
async fn a_broken_random_source_fails_loudly_instead_of_making_zero_ids() {
    let (_turn, url) = ws_url().await;
    let probe = Probe::ready(&url, "customer").await;
    let crypto: JsValue = web_sys::window().expect("a window").crypto().expect("crypto").into();
    let broken = [
        // A stub that leaves the buffer as it was: zeros.
        js_sys::Function::new_with_args("array", "return array;"),
        js_sys::Function::new_no_args("throw new Error('no entropy');"),
    ];
    let message = json!({"type": "chat.send", "data": {"conversationId": "c-random", "text": "hi"}}).to_string();
    for stub in broken {
        js_sys::Reflect::set(&crypto, &"getRandomValues".into(), &stub).expect("crypto takes an own property");
        let sent = probe.client.send_message(JsValue::from_str(&message));
        let options = js_sys::Object::new();
        js_sys::Reflect::set(&options, &"url".into(), &JsValue::from_str(&url)).expect("an object");
        let get_token = js_sys::Function::new_no_args("return null;");
        js_sys::Reflect::set(&options, &"getToken".into(), &get_token).expect("an object");
        let connected = connect(options.into());
        // Restore the browser's own before asserting, for the tests that follow.
        js_sys::Reflect::delete_property(crypto.unchecked_ref::<js_sys::Object>(), &"getRandomValues".into())
            .expect("restored");
        assert!(sent.is_err(), "sendMessage made a clientMessageId without random bytes");
        if let Ok(client) = connected {
            client.close();
            panic!("connect seeded its message ids without random bytes");
        }
    }
    assert!(probe.outbox().as_array().expect("an array").is_empty(), "nothing was queued");
    probe.client.close();
}
