//! `/v1/ws/chat`: the handshake checks of SPEC §1, then one task per connection.
//!
//! The task runs one `select!` loop over the socket, its outbound queue, the
//! heartbeat, its kick switch and the server's shutdown, so every way out
//! ends in a close frame with the code SPEC §4 gives it.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::http::header::{HOST, ORIGIN, SEC_WEBSOCKET_PROTOCOL};
use axum::response::Response;
use futures_util::SinkExt;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use petchat_protocol::handshake::{self, SUBPROTOCOL_PREFIX, TOKEN_QUERY_PARAM};
use petchat_protocol::token::Claims;
use petchat_protocol::{ClientEnvelope, ClientMessage, CloseCode, ErrorCode, ErrorData, ServerMessage};
use tokio::sync::mpsc;
use tracing::{debug, info};

use crate::AppState;
use crate::auth;
use crate::bus::{ConnSink, Kick};
use crate::hub::frames::frame;
use crate::hub::{count_error, error_frame};
use crate::token_clock::TokenClock;

/// How long a closing connection waits for the peer's close frame.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);
/// Frames written per flush when the outbound queue has several waiting.
const WRITE_BATCH: usize = 64;
/// A connection that stays over its rate after being refused this many
/// times in a row within a second's burst is flooding: 4002.
const FLOOD_RETRY_HINT_MS: u64 = 5_000;

/// The upgrade handler: decides a refusal in SPEC §1's order (Origin,
/// protocol version, token), completes the upgrade either way, and closes a
/// refused socket at once with its code so a browser can read why.
pub(crate) async fn upgrade(
    State(app): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    let offered: Vec<&str> = headers.get_all(SEC_WEBSOCKET_PROTOCOL).iter().filter_map(|v| v.to_str().ok()).collect();
    let negotiated = handshake::negotiate(offered.iter().copied());
    // Echo a protocol the client offered, even when refusing it, so that a
    // browser completes the handshake and sees the close code.
    let echo = match &negotiated {
        Ok(n) => n.selected.map(str::to_owned),
        Err(_) => offered
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .find(|p| p.starts_with(SUBPROTOCOL_PREFIX))
            .map(str::to_owned),
    };

    let refusal = if !app.origins.allows(&headers) {
        Some((CloseCode::POLICY_VIOLATION, "origin not allowed"))
    } else {
        match &negotiated {
            Err(code) => Some((*code, "unsupported protocol version: offer petchat.v1")),
            Ok(n) => {
                let token = auth::pick_token(query.as_deref().and_then(token_from_query), n.bearer_token.clone());
                match token.and_then(|t| app.keys.verify(&t)) {
                    Ok(claims) => {
                        return finish(ws, echo, &app).on_upgrade(move |socket| serve(app, socket, claims));
                    }
                    Err(refused) => Some(refused.close()),
                }
            }
        }
    };
    let (code, reason) = refusal.unwrap_or((CloseCode::INTERNAL_ERROR, "refused"));
    info!(code = code.code(), reason, "handshake refused");
    finish(ws, echo, &app).on_upgrade(move |mut socket| async move {
        close(&mut socket, code, reason).await;
    })
}

/// The upgrade with petchat's frame limits and small buffers. Every open
/// connection keeps its read buffer: 1 KiB (most frames are a few hundred
/// bytes; bigger ones take several reads) instead of 4 KiB took the idle RSS
/// per connection from 10.7 KB to 7.7 KB at 19,000 connections
/// (docs/benchmarks.md). Writes go out at once (no write buffer).
fn finish(ws: WebSocketUpgrade, protocol: Option<String>, app: &AppState) -> WebSocketUpgrade {
    let ws = ws
        .max_message_size(app.limits.max_message_bytes)
        .max_frame_size(app.limits.max_message_bytes)
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .accept_unmasked_frames(false);
    match protocol {
        Some(protocol) => ws.protocols([protocol]),
        None => ws,
    }
}

/// The `token` query parameter. JWTs are URL-safe, so no decoding is needed;
/// a percent-encoded token simply fails verification.
fn token_from_query(query: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == TOKEN_QUERY_PARAM && !value.is_empty()).then(|| value.to_owned())
    })
}

/// Serves one authenticated connection until it closes.
async fn serve(app: AppState, mut socket: WebSocket, claims: Claims) {
    let user = claims.user();
    let mut token_clock = TokenClock::new(&claims, &app.keys);
    let _tracked = app.tracker.token();
    let (tx, mut rx) = mpsc::channel::<Utf8Bytes>(app.limits.outbound_queue.max(1));
    let kick = Arc::new(Kick::default());
    let sink = ConnSink::new(tx, kick.clone());
    let conn = match app.hub.connect(user.clone(), claims.expires_at(), sink.clone()).await {
        Ok(conn) => conn,
        Err((code, reason)) => return close(&mut socket, code, &reason).await,
    };
    metrics::gauge!("petchat_connections").increment(1.0);

    let rate = NonZeroU32::new(app.limits.messages_per_second.max(1)).expect("at least 1");
    let burst = rate.saturating_mul(NonZeroU32::new(petchat_protocol::limits::RATE_BURST_FACTOR).expect("nonzero"));
    let limiter: DefaultDirectRateLimiter = RateLimiter::direct(Quota::per_second(rate).allow_burst(burst));
    let refusals: DefaultDirectRateLimiter = RateLimiter::direct(Quota::per_second(rate).allow_burst(rate));
    let heartbeat_every = app.limits.heartbeat_interval();
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat_every, heartbeat_every);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();

    let ending: Option<(CloseCode, String)> = loop {
        tokio::select! {
            biased;
            reason = kick.kicked() => break Some(reason),
            () = app.shutdown.cancelled() => break Some((CloseCode::GOING_AWAY, "server shutting down".into())),
            () = token_clock.expired() => break Some((CloseCode::TOKEN_EXPIRED, crate::token_clock::EXPIRED_REASON.into())),
            Some(first) = rx.recv() => {
                let write = async {
                    socket.feed(Message::Text(first)).await?;
                    for _ in 1..WRITE_BATCH {
                        match rx.try_recv() {
                            Ok(next) => socket.feed(Message::Text(next)).await?,
                            Err(_) => break,
                        }
                    }
                    socket.flush().await
                };
                tokio::select! {
                    written = write => if written.is_err() { break None },
                    reason = kick.kicked() => break Some(reason),
                }
            }
            received = socket.recv() => {
                last_heard = Instant::now();
                match received {
                    Some(Ok(Message::Text(text))) => {
                        if let Some(close) = handle_text(&app, conn, &sink, &limiter, &refusals, &mut token_clock, &text).await {
                            break Some(close);
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        break Some((CloseCode::UNSUPPORTED_DATA, "binary frames are not supported in v1".into()));
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | None => break None,
                    Some(Err(e)) if is_too_big(&e) => {
                        break Some((CloseCode::MESSAGE_TOO_BIG, format!("frames are limited to {} bytes", app.limits.max_message_bytes)));
                    }
                    Some(Err(_)) => break None,
                }
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() >= heartbeat_every * petchat_protocol::limits::HEARTBEAT_MISSED_INTERVALS {
                    break Some((CloseCode::HEARTBEAT_TIMEOUT, "no frame for two heartbeat intervals".into()));
                }
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    break None;
                }
            }
        }
    };
    app.hub.disconnect(conn).await;
    metrics::gauge!("petchat_connections").decrement(1.0);
    match ending {
        Some((code, reason)) => close(&mut socket, code, &reason).await,
        None => {
            metrics::counter!("petchat_closes_total", "code" => "peer").increment(1);
            debug!(conn, "peer closed");
        }
    }
}

/// Decodes and dispatches one text frame; returns a close when the
/// connection must end.
async fn handle_text(
    app: &AppState,
    conn: crate::bus::ConnId,
    sink: &ConnSink,
    limiter: &DefaultDirectRateLimiter,
    refusals: &DefaultDirectRateLimiter,
    token_clock: &mut TokenClock,
    text: &str,
) -> Option<(CloseCode, String)> {
    let decoded = ClientEnvelope::decode(text);
    let kind = match &decoded {
        Ok(envelope) => envelope.message.wire_type(),
        Err(_) => "invalid",
    };
    metrics::counter!("petchat_messages_in_total", "type" => kind).increment(1);
    if let Ok(ClientEnvelope { message: ClientMessage::Ping(_), id, .. }) = &decoded {
        sink.deliver(&frame(ServerMessage::Pong(Default::default()), id.clone()));
        return None;
    }
    if let Err(not_until) = limiter.check() {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        if refusals.check().is_err() {
            let reason = petchat_protocol::close::reason_with_retry_hint("sustained flooding", FLOOD_RETRY_HINT_MS);
            return Some((CloseCode::RATE_LIMITED, reason));
        }
        let ref_id = match &decoded {
            Ok(envelope) => envelope.id.clone(),
            Err(e) => e.ref_id().cloned(),
        };
        let retry_after_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        let data = ErrorData {
            code: ErrorCode::RateLimited,
            message: format!("more than {} messages per second", app.limits.messages_per_second),
            ref_id: ref_id.clone(),
            retry_after_ms: Some(retry_after_ms),
        };
        sink.deliver(&frame(ServerMessage::Error(data), ref_id));
        count_error(ErrorCode::RateLimited);
        return None;
    }
    let envelope = match decoded {
        Ok(envelope) => envelope,
        Err(e) => {
            sink.deliver(&error_frame(e.code(), e.message(), e.ref_id().cloned()));
            count_error(e.code());
            return None;
        }
    };
    if let ClientMessage::SessionRefresh(refresh) = &envelope.message {
        sink.deliver(&token_clock.refresh(&app.keys, refresh, envelope.id.clone()));
        return None;
    }
    if let ClientMessage::ChatSend(send) = &envelope.message {
        let chars = send.text.as_str().chars().count();
        if chars > app.limits.max_text_chars {
            let message = format!(
                "data.text has {chars} characters after trimming, at most {} are allowed",
                app.limits.max_text_chars
            );
            sink.deliver(&error_frame(ErrorCode::TextTooLong, &message, envelope.id.clone()));
            count_error(ErrorCode::TextTooLong);
            return None;
        }
    }
    app.hub.request(conn, envelope.id, envelope.message).await;
    None
}

/// Whether a read failed because the frame exceeded `max_message_bytes`.
fn is_too_big(error: &axum::Error) -> bool {
    use std::error::Error as _;
    let mut source: Option<&(dyn std::error::Error + 'static)> = error.source();
    while let Some(e) = source {
        if let Some(tungstenite) = e.downcast_ref::<tokio_tungstenite::tungstenite::Error>() {
            return matches!(tungstenite, tokio_tungstenite::tungstenite::Error::Capacity(_));
        }
        source = e.source();
    }
    false
}

/// Sends a close frame and waits briefly for the peer's. A peer that reads
/// nothing (its buffers are full) gets no close frame: the socket is simply
/// dropped after the timeout.
pub(crate) async fn close(socket: &mut WebSocket, code: CloseCode, reason: &str) {
    metrics::counter!("petchat_closes_total", "code" => code.code().to_string()).increment(1);
    debug!(code = code.code(), reason, "closing");
    let frame = CloseFrame { code: code.code(), reason: Utf8Bytes::from(reason.to_owned()) };
    let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
        if socket.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Which `Origin`s may open the socket.
#[derive(Debug, Clone)]
pub(crate) enum OriginPolicy {
    /// Any origin (dev mode, or `*`).
    Any,
    /// The origin's host must be the request's `Host` (the default).
    SameHost,
    /// Exactly these origins (`https://shop.example`).
    List(Vec<String>),
}

impl OriginPolicy {
    /// The policy of `--allowed-origins` and `--dev`.
    pub(crate) fn new(allowed: &[String], dev: bool) -> Self {
        let allowed: Vec<String> = allowed
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
            .filter(|o| !o.is_empty())
            .collect();
        if dev || allowed.iter().any(|o| o == "*") {
            Self::Any
        } else if allowed.is_empty() {
            Self::SameHost
        } else {
            Self::List(allowed)
        }
    }

    /// Whether the request's origin is allowed; a request without `Origin`
    /// (a native client) always is.
    pub(crate) fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(ORIGIN).and_then(|o| o.to_str().ok()) else { return true };
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        match self {
            Self::Any => true,
            Self::List(allowed) => allowed.contains(&origin),
            Self::SameHost => {
                let host = headers.get(HOST).and_then(|h| h.to_str().ok()).map(str::to_ascii_lowercase);
                let origin_host = origin.split_once("://").map(|(_, rest)| rest);
                host.is_some() && origin_host == host.as_deref()
            }
        }
    }
}
