//! Everything that differs between the browser and a native build: the
//! socket, timers, the clock, storage and randomness. On native targets
//! (where the workspace's tests and lints build this crate) the same
//! functions exist and do nothing, since there is no browser to drive.

use petchat_protocol::{SendChat, Timestamp};

pub(crate) use imp::*;

/// The browser gave no random bytes: `crypto.getRandomValues` is missing,
/// threw, or left the buffer all zeros. The client refuses to go on rather
/// than make `clientMessageId`s that all collide (the server would drop every
/// message after the first as a duplicate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NoRandomness;

impl std::fmt::Display for NoRandomness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the browser gave no random bytes (crypto.getRandomValues); petchat cannot make message ids")
    }
}

/// 16 bytes from the browser's cryptographic random source, never zeros.
pub(crate) fn random_bytes() -> Result<[u8; 16], NoRandomness> {
    let mut bytes = [0u8; 16];
    fill_random(&mut bytes)?;
    // All zeros from a working source has odds of 2^-128; it is a stub that wrote nothing.
    if bytes == [0; 16] {
        return Err(NoRandomness);
    }
    Ok(bytes)
}

/// A timestamp of now, for the client's own events.
pub(crate) fn timestamp() -> Timestamp {
    Timestamp::from_unix_ms(wall_clock_ms()).unwrap_or_else(|| Timestamp::from_unix_ms(0).expect("the epoch"))
}

/// The outbox saved by an earlier page, if any.
pub(crate) fn load_outbox(key: &str) -> Vec<SendChat> {
    storage_get(key).and_then(|text| serde_json::from_str(&text).ok()).unwrap_or_default()
}

/// Saves the outbox, so a reload keeps messages typed offline.
pub(crate) fn save_outbox<'a>(key: &str, outbox: impl Iterator<Item = &'a SendChat>) {
    let outbox: Vec<&SendChat> = outbox.collect();
    storage_set(key, &serde_json::to_string(&outbox).expect("wire types serialize"));
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use std::rc::Rc;

    use petchat_protocol::CloseCode;
    use wasm_bindgen::prelude::*;
    use wasm_bindgen_futures::JsFuture;
    use web_sys::{CloseEvent, MessageEvent, WebSocket};

    use crate::{Inner, pump};

    /// The browser objects of one client.
    #[derive(Default)]
    pub(crate) struct State {
        socket: Option<WebSocket>,
        /// Bumped for every socket, so a stale socket's callbacks do nothing.
        generation: u64,
        callbacks: Vec<Closure<dyn FnMut(JsValue)>>,
        timer: Option<i32>,
        timer_callback: Option<Closure<dyn FnMut()>>,
        /// The `online` and `visibilitychange` listeners.
        listeners: Vec<Closure<dyn FnMut(JsValue)>>,
    }

    fn window() -> web_sys::Window {
        web_sys::window().expect("the browser client runs in a window")
    }

    /// Milliseconds on the page's monotonic clock.
    pub(crate) fn now() -> u64 {
        window().performance().map_or(0.0, |p| p.now()) as u64
    }

    pub(crate) fn wall_clock_ms() -> i64 {
        js_sys::Date::now() as i64
    }

    pub(crate) fn fill_random(bytes: &mut [u8]) -> Result<(), super::NoRandomness> {
        let crypto = window().crypto().map_err(|_| super::NoRandomness)?;
        crypto.get_random_values_with_u8_array(bytes).map(drop).map_err(|_| super::NoRandomness)
    }

    pub(crate) fn storage_get(key: &str) -> Option<String> {
        window().local_storage().ok().flatten()?.get_item(key).ok().flatten()
    }

    pub(crate) fn storage_set(key: &str, value: &str) {
        if let Ok(Some(storage)) = window().local_storage() {
            let _ = storage.set_item(key, value);
        }
    }

    /// Fetches a token (the fresh one, or from `getToken`), then opens a socket
    /// that offers `petchat.v1, bearer.<JWT>`.
    pub(crate) fn open_socket(inner: &Rc<Inner>) {
        let inner = inner.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let fresh = inner.fresh_token.borrow_mut().take();
            let token = match fresh {
                Some(token) => Ok(Some(token)),
                None => call_get_token(&inner, false).await,
            };
            let token = match token {
                Ok(Some(token)) => token,
                // `getToken` gave none: there is nobody to connect as.
                Ok(None) => {
                    inner.session.borrow_mut().handle_closed(now(), Some(CloseCode::UNAUTHORIZED), "no token");
                    return pump(&inner);
                }
                // `getToken` failed (the network is down too): try again with backoff.
                Err(()) => {
                    inner.session.borrow_mut().handle_closed(now(), None, "getToken failed");
                    return pump(&inner);
                }
            };
            let protocols = js_sys::Array::of2(&"petchat.v1".into(), &format!("bearer.{token}").into());
            let socket = match WebSocket::new_with_str_sequence(&inner.url, &protocols) {
                Ok(socket) => socket,
                Err(_) => {
                    inner.session.borrow_mut().handle_closed(now(), None, "");
                    return pump(&inner);
                }
            };
            let generation = {
                let mut state = inner.platform.borrow_mut();
                state.generation += 1;
                state.callbacks.clear();
                state.generation
            };
            let current = {
                let inner = inner.clone();
                move || inner.platform.borrow().generation == generation
            };
            let on_open = {
                let (inner, current) = (inner.clone(), current.clone());
                Closure::<dyn FnMut(JsValue)>::new(move |_| {
                    if current() {
                        inner.session.borrow_mut().handle_connected(now());
                        pump(&inner);
                    }
                })
            };
            let on_message = {
                let (inner, current) = (inner.clone(), current.clone());
                Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
                    let Ok(event) = event.dyn_into::<MessageEvent>() else { return };
                    if let (true, Some(text)) = (current(), event.data().as_string()) {
                        inner.session.borrow_mut().handle_frame(now(), &text);
                        pump(&inner);
                    }
                })
            };
            let on_close = {
                let (inner, current) = (inner.clone(), current.clone());
                Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
                    let Ok(event) = event.dyn_into::<CloseEvent>() else { return };
                    if !current() {
                        return;
                    }
                    inner.platform.borrow_mut().socket = None;
                    // 1005 and 1006 mean no close frame arrived.
                    let code = Some(event.code()).filter(|c| *c != 1005 && *c != 1006).map(CloseCode);
                    inner.session.borrow_mut().handle_closed(now(), code, &event.reason());
                    pump(&inner);
                })
            };
            socket.set_onopen(Some(on_open.as_ref().unchecked_ref()));
            socket.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
            socket.set_onclose(Some(on_close.as_ref().unchecked_ref()));
            let mut state = inner.platform.borrow_mut();
            state.callbacks.extend([on_open, on_message, on_close]);
            state.socket = Some(socket);
        });
    }

    pub(crate) fn close_socket(inner: &Rc<Inner>, code: u16, reason: &str) {
        let mut state = inner.platform.borrow_mut();
        state.generation += 1;
        if let Some(socket) = state.socket.take() {
            let _ = socket.close_with_code_and_reason(code, reason);
        }
    }

    pub(crate) fn send(inner: &Rc<Inner>, frame: &str) {
        if let Some(socket) = inner.platform.borrow().socket.as_ref() {
            let _ = socket.send_with_str(frame);
        }
    }

    /// After 4500/4501: ask `getToken(true)`; a token restarts the reconnects.
    pub(crate) fn refresh_token(inner: &Rc<Inner>) {
        let inner = inner.clone();
        wasm_bindgen_futures::spawn_local(async move {
            if let Ok(Some(token)) = call_get_token(&inner, true).await {
                *inner.fresh_token.borrow_mut() = Some(token);
                inner.session.borrow_mut().token_refreshed(now());
                pump(&inner);
            }
        });
    }

    /// Ahead of the live connection's token expiry: ask `getToken(true)` and
    /// send the token as `session.refresh`.
    pub(crate) fn refresh_live_token(inner: &Rc<Inner>) {
        let inner = inner.clone();
        wasm_bindgen_futures::spawn_local(async move {
            match call_get_token(&inner, true).await {
                Ok(Some(token)) => inner.session.borrow_mut().refresh_token(now(), token),
                // No token: the connection lapses into 4501, and the TokenNeeded path asks again.
                Ok(None) => {}
                Err(()) => inner.session.borrow_mut().refresh_failed(now()),
            }
            pump(&inner);
        });
    }

    /// `getToken(fresh)`: `Ok(None)` when it gave no token, `Err` when it
    /// threw or its promise was rejected.
    async fn call_get_token(inner: &Inner, fresh: bool) -> Result<Option<String>, ()> {
        let result = inner.get_token.call1(&JsValue::NULL, &JsValue::from_bool(fresh)).map_err(|_| ())?;
        let value = match result.dyn_into::<js_sys::Promise>() {
            Ok(promise) => JsFuture::from(promise).await.map_err(|_| ())?,
            Err(value) => value,
        };
        Ok(value.as_string().filter(|t| !t.is_empty()))
    }

    /// Arms one timer for the session's next deadline.
    pub(crate) fn schedule(inner: &Rc<Inner>, deadline: Option<u64>) {
        let mut state = inner.platform.borrow_mut();
        if let Some(timer) = state.timer.take() {
            window().clear_timeout_with_handle(timer);
        }
        let Some(at) = deadline else { return };
        let delay = at.saturating_sub(now()).min(i32::MAX as u64) as i32;
        let callback = {
            let inner = inner.clone();
            Closure::<dyn FnMut()>::new(move || {
                inner.session.borrow_mut().handle_timeout(now());
                pump(&inner);
            })
        };
        state.timer = window()
            .set_timeout_with_callback_and_timeout_and_arguments_0(callback.as_ref().unchecked_ref(), delay)
            .ok();
        state.timer_callback = Some(callback);
    }

    /// Reconnects at once when the browser says the network is back, or when
    /// the tab is shown again (a hidden tab's timers are throttled, up to a
    /// minute, so a waiting reconnect may be late).
    pub(crate) fn listen_online(inner: &Rc<Inner>) {
        let listener = |visible_only: bool| {
            let inner = inner.clone();
            Closure::<dyn FnMut(JsValue)>::new(move |_| {
                let document = window().document();
                if visible_only && document.is_some_and(|d| d.visibility_state() != web_sys::VisibilityState::Visible) {
                    return;
                }
                inner.session.borrow_mut().network_online(now());
                pump(&inner);
            })
        };
        let (online, shown) = (listener(false), listener(true));
        let _ = window().add_event_listener_with_callback("online", online.as_ref().unchecked_ref());
        if let Some(document) = window().document() {
            let _ = document.add_event_listener_with_callback("visibilitychange", shown.as_ref().unchecked_ref());
        }
        inner.platform.borrow_mut().listeners = vec![online, shown];
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use std::rc::Rc;

    use crate::Inner;

    /// Nothing to hold outside a browser.
    #[derive(Default)]
    pub(crate) struct State {}

    pub(crate) fn now() -> u64 {
        0
    }

    pub(crate) fn wall_clock_ms() -> i64 {
        0
    }

    /// No browser, no random source.
    pub(crate) fn fill_random(_: &mut [u8]) -> Result<(), super::NoRandomness> {
        Err(super::NoRandomness)
    }

    pub(crate) fn storage_get(_: &str) -> Option<String> {
        None
    }

    pub(crate) fn storage_set(_: &str, _: &str) {}

    pub(crate) fn open_socket(_: &Rc<Inner>) {}

    pub(crate) fn close_socket(_: &Rc<Inner>, _: u16, _: &str) {}

    pub(crate) fn send(_: &Rc<Inner>, _: &str) {}

    pub(crate) fn refresh_token(_: &Rc<Inner>) {}

    pub(crate) fn refresh_live_token(_: &Rc<Inner>) {}

    pub(crate) fn schedule(_: &Rc<Inner>, _: Option<u64>) {}

    pub(crate) fn listen_online(_: &Rc<Inner>) {}
}
