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
/// Bytes of fed frames tungstenite gathers before it writes them to the
/// socket: a batch of frames costs one `send` per 4 KiB instead of one per
/// frame (at 0 each frame was a syscall of its own, 7 frames per flush and
/// 7 sends: `cargo xtask bench -- fanout`, docs/benchmarks.md).
const WRITE_BUFFER_BYTES: usize = 4096;
/// A connection that stays over its rate after being refused this many
/// times in a row within a second's burst is flooding: 4002.
const FLOOD_RETRY_HINT_MS: u64 = 5_000;
/// Pings and pongs a peer may send per second (at least its message rate),
/// with the same burst factor as messages.
const CONTROL_FRAMES_PER_SECOND: u32 = 10;

fn burst_factor() -> NonZeroU32 {
    NonZeroU32::new(petchat_protocol::limits::RATE_BURST_FACTOR).expect("the burst factor is not zero")
}

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
/// (docs/benchmarks.md). Frames fed together (the outbound queue drained up
/// to [`WRITE_BATCH`]) go out in one write of up to [`WRITE_BUFFER_BYTES`],
/// then the flush writes the rest at once; and what a
/// peer leaves unread is bounded: beyond [`max_write_buffer`] tungstenite
/// keeps only the latest pong (RFC 6455 §5.5.3 allows answering only the
/// latest ping), so a peer that pings and never reads cannot grow it.
fn finish(ws: WebSocketUpgrade, protocol: Option<String>, app: &AppState) -> WebSocketUpgrade {
    let ws = ws
        .max_message_size(app.limits.max_message_bytes)
        .max_frame_size(app.limits.max_message_bytes)
        .read_buffer_size(1024)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(max_write_buffer(app.limits.max_message_bytes))
        .accept_unmasked_frames(false);
    match protocol {
        Some(protocol) => ws.protocols([protocol]),
        None => ws,
    }
}

/// The most bytes one connection's socket may hold unwritten: twice the
/// largest frame either side sends. A server frame is at most about the
/// protocol's `MAX_MESSAGE_BYTES` (a `chat.message` of 4000 escaped
/// characters) even when `--max-message-bytes` is set lower; a frame that
/// did not fit would end the connection.
fn max_write_buffer(max_message_bytes: usize) -> usize {
    max_message_bytes.max(petchat_protocol::limits::MAX_MESSAGE_BYTES).saturating_mul(2)
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
///
/// Every open connection keeps this future, so its size is idle memory
/// (docs/benchmarks.md, "Idle memory"). Two things keep it at 1.4 KB rather
/// than 3.1 KB: an `async move` block instead of an `async fn`, which would
/// store its arguments twice (the socket is 368 bytes), and the large futures
/// it awaits only for a moment (the connect, each text frame's handling, the
/// close) boxed, so that they are not part of its layout.
#[allow(clippy::manual_async_fn, reason = "an async fn would store its arguments twice in the future")]
fn serve(app: AppState, mut socket: WebSocket, claims: Claims) -> impl std::future::Future<Output = ()> {
    async move {
        let user = claims.user();
        let mut token_clock = TokenClock::new(&claims, &app.keys);
        let _tracked = app.tracker.token();
        let (tx, mut rx) = mpsc::channel::<Utf8Bytes>(app.limits.outbound_queue.max(1));
        let kick = Arc::new(Kick::default());
        let sink = ConnSink::new(tx, kick.clone());
        let conn = match Box::pin(app.hub.connect(
            user.clone(),
            claims.topics.clone().unwrap_or_default(),
            claims.expires_at(),
            sink.clone(),
        ))
        .await
        {
            Ok(conn) => conn,
            Err((code, reason)) => return Box::pin(close(&mut socket, code, &reason)).await,
        };
        metrics::gauge!("petchat_connections").increment(1.0);

        let rate = NonZeroU32::new(app.limits.messages_per_second.max(1)).expect("at least 1");
        let burst = rate.saturating_mul(burst_factor());
        let limiter: DefaultDirectRateLimiter = RateLimiter::direct(Quota::per_second(rate).allow_burst(burst));
        let refusals: DefaultDirectRateLimiter = RateLimiter::direct(Quota::per_second(rate).allow_burst(rate));
        // Pings and pongs from the peer have a budget of their own (a client's
        // heartbeat is one every few seconds); beyond it they count as refusals.
        let control_rate = rate.max(NonZeroU32::new(CONTROL_FRAMES_PER_SECOND).expect("nonzero"));
        let control: DefaultDirectRateLimiter = RateLimiter::direct(
            Quota::per_second(control_rate).allow_burst(control_rate.saturating_mul(burst_factor())),
        );
        let heartbeat_every = app.limits.heartbeat_interval();
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat_every, heartbeat_every);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();

        let ending = loop {
            tokio::select! {
                biased;
                (code, reason) = kick.kicked() => break Ending::Close(code, reason),
                () = app.shutdown.cancelled() => break Ending::Close(CloseCode::GOING_AWAY, "server shutting down".into()),
                () = token_clock.expired() => break Ending::Close(CloseCode::TOKEN_EXPIRED, crate::token_clock::EXPIRED_REASON.into()),
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
                        written = write => if written.is_err() { break Ending::Gone },
                        (code, reason) = kick.kicked() => break Ending::Close(code, reason),
                    }
                }
                received = socket.recv() => {
                    last_heard = Instant::now();
                    match received {
                        Some(Ok(Message::Text(text))) => {
                            if let Some((code, reason)) = Box::pin(handle_text(&app, &conn, &sink, &limiter, &refusals, &mut token_clock, &text)).await {
                                break Ending::Close(code, reason);
                            }
                        }
                        Some(Ok(Message::Binary(_))) => {
                            break Ending::Close(CloseCode::UNSUPPORTED_DATA, "binary frames are not supported in v1".into());
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                            if control.check().is_err() && refusals.check().is_err() {
                                let reason = petchat_protocol::close::reason_with_retry_hint("control frame flood", FLOOD_RETRY_HINT_MS);
                                break Ending::Close(CloseCode::RATE_LIMITED, reason);
                            }
                        }
                        Some(Ok(Message::Close(_))) => break Ending::Echo,
                        None => break Ending::Gone,
                        Some(Err(e)) => match violation(&e) {
                            Some(CloseCode::MESSAGE_TOO_BIG) => {
                                break Ending::Close(CloseCode::MESSAGE_TOO_BIG, format!("frames are limited to {} bytes", app.limits.max_message_bytes));
                            }
                            Some(code) => break Ending::Close(code, violation_reason(code).into()),
                            None => break Ending::Gone,
                        },
                    }
                }
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() >= heartbeat_every * petchat_protocol::limits::HEARTBEAT_MISSED_INTERVALS {
                        break Ending::Close(CloseCode::HEARTBEAT_TIMEOUT, "no frame for two heartbeat intervals".into());
                    }
                    if socket.send(Message::Ping(Default::default())).await.is_err() {
                        break Ending::Gone;
                    }
                }
            }
        };
        app.hub.disconnect(&conn);
        metrics::gauge!("petchat_connections").decrement(1.0);
        match ending {
            Ending::Close(code, reason) => Box::pin(close(&mut socket, code, &reason)).await,
            Ending::Echo => {
                // tungstenite queued the echo of the peer's Close (RFC 6455
                // §5.5.1); writing it out completes the handshake.
                metrics::counter!("petchat_closes_total", "code" => "peer").increment(1);
                let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, socket.flush()).await;
                debug!(conn = conn.id, "peer closed");
            }
            Ending::Gone => {
                metrics::counter!("petchat_closes_total", "code" => "gone").increment(1);
                debug!(conn = conn.id, "connection lost");
            }
        }
    }
}

/// Decodes and dispatches one text frame; returns a close when the
/// connection must end.
async fn handle_text(
    app: &AppState,
    conn: &crate::hub::HubConn,
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

/// How a connection ends.
enum Ending {
    /// The server closes with this code and waits for the peer's Close.
    Close(CloseCode, String),
    /// The peer sent its Close; the echo is queued.
    Echo,
    /// The socket is gone: nothing more can be sent.
    Gone,
}

/// The close code a failed read calls for (RFC 6455 §7.4.1): 1009 for a
/// frame over `max_message_bytes`, 1007 for text that is not UTF-8, 1002 for
/// any other protocol violation; `None` when the socket itself is gone.
fn violation(error: &axum::Error) -> Option<CloseCode> {
    use std::error::Error as _;
    use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};
    let mut source: Option<&(dyn std::error::Error + 'static)> = error.source();
    while let Some(e) = source {
        if let Some(tungstenite) = e.downcast_ref::<WsError>() {
            return match tungstenite {
                WsError::Capacity(_) => Some(CloseCode::MESSAGE_TOO_BIG),
                WsError::Utf8(_) => Some(CloseCode::INVALID_PAYLOAD),
                WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
                WsError::Protocol(_) => Some(CloseCode::PROTOCOL_ERROR),
                _ => None,
            };
        }
        source = e.source();
    }
    None
}

/// The close reason of a protocol violation.
fn violation_reason(code: CloseCode) -> &'static str {
    match code {
        CloseCode::INVALID_PAYLOAD => "text frames must be valid UTF-8",
        _ => "protocol violation (RFC 6455)",
    }
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
