//! Server-sent events (SPEC §14): `GET /v1/sse?topics=…` streams a user's
//! topic events and notifications as `text/event-stream`, and
//! `POST /v1/sse/tickets` trades a token for a single-use ticket, for
//! browsers' `EventSource`.
//!
//! A stream is a connection of the hub like a socket: it counts toward the
//! connection caps, hears the user's notifications on every node, and
//! subscribes to its topics through the feed shards. Its queue is the same
//! bounded one; a reader too slow to keep it from filling is cut off. Each
//! `topic.event` and `notification` goes out as an SSE event whose `event:`
//! is the message type and whose `data:` is the socket's JSON envelope, with
//! the stream's [`Cursor`] as its `id:`; other frames of the connection
//! (`session.ready`, `topic.subscribed`…) are not part of the stream. A
//! comment line goes out after `--sse-keepalive-ms` of silence (10 s), the stream
//! ends when the token expires (the client reconnects with a new ticket),
//! and on shutdown.

mod cursor;
pub(crate) mod tickets;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use futures_util::StreamExt;
use petchat_protocol::api::{ApiErrorCode, SseTicket};
use petchat_protocol::limits::MAX_TOPICS_PER_CONNECTION;
use petchat_protocol::token::Claims;
use petchat_protocol::{CloseCode, LastSeq, ServerEnvelope, ServerMessage, Timestamp, TopicName};
use serde::Deserialize;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use self::cursor::Cursor;
use self::tickets::MintError;
use crate::AppState;
use crate::api::{Refusal, refuse};
use crate::auth::{self, expiry_ms};
use crate::bus::{ConnSink, Kick};
use crate::hub::{Hub, HubConn};

/// Frames written in one chunk at most.
const CHUNK_FRAMES: usize = 64;

/// How long a stream waits for its subscriptions before it is refused (503).
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The query of `GET /v1/sse`.
#[derive(Debug, Deserialize)]
pub(crate) struct StreamQuery {
    /// Comma-separated topic names.
    #[serde(default)]
    topics: Option<String>,
    /// A ticket from `POST /v1/sse/tickets`, for clients that cannot send a header.
    #[serde(default)]
    ticket: Option<String>,
    /// Where to resume, for a new `EventSource` (which cannot send
    /// `Last-Event-ID`); the header wins when both are given.
    #[serde(default, rename = "lastEventId")]
    last_event_id: Option<String>,
}

/// The token of an `Authorization: Bearer` header, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

/// The claims of the request's Bearer token.
fn claims_of(app: &AppState, headers: &HeaderMap) -> Result<Claims, Refusal> {
    let token = bearer(headers)
        .ok_or_else(|| refuse(ApiErrorCode::Unauthorized, "Authorization: Bearer <token> is required"))?;
    app.keys.verify(token).map_err(|e| refuse(ApiErrorCode::Unauthorized, format!("the token is refused: {e}")))
}

/// `POST /v1/sse/tickets`: a single-use ticket for the Bearer token's user.
pub(crate) async fn ticket(State(app): State<AppState>, headers: HeaderMap) -> Result<Json<SseTicket>, Refusal> {
    let claims = claims_of(&app, &headers)?;
    let ticket = app.tickets.mint(&claims).await.map_err(|e| match e {
        MintError::TooMany => refuse(ApiErrorCode::RateLimited, "too many unused tickets: use or let some expire"),
        MintError::Cluster(e) => {
            warn!(error = %e, "storing an SSE ticket in redis failed");
            refuse(ApiErrorCode::Unavailable, "tickets are unavailable: retry later")
        }
    })?;
    let now = crate::hub::frames::now();
    let expires_at = Timestamp::from_unix_ms(now.as_unix_ms() + tickets::TTL.as_millis() as i64).unwrap_or(now);
    Ok(Json(SseTicket { ticket, expires_at }))
}

/// `GET /v1/sse`.
pub(crate) async fn stream(
    State(app): State<AppState>,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
    slot: Option<axum::Extension<crate::listen::HandshakeSlot>>,
) -> Result<Response, Refusal> {
    let claims = match &query.ticket {
        Some(ticket) => app
            .tickets
            .redeem(ticket)
            .await
            .map_err(|e| {
                warn!(error = %e, "reading an SSE ticket from redis failed");
                refuse(ApiErrorCode::Unavailable, "tickets are unavailable: retry later")
            })?
            .filter(|claims| auth::now_ms() <= expiry_ms(claims, app.keys.leeway_ms()))
            .ok_or_else(|| refuse(ApiErrorCode::Unauthorized, "the ticket is unknown, used or expired"))?,
        None => claims_of(&app, &headers)?,
    };
    let topics = topics_of(query.topics.as_deref())?;
    let resume = match headers.get("last-event-id").map(|v| v.to_str()) {
        None => match query.last_event_id.as_deref() {
            None => None,
            Some(id) => {
                Some(Cursor::parse(id).map_err(|e| refuse(ApiErrorCode::InvalidRequest, format!("lastEventId: {e}")))?)
            }
        },
        Some(Ok(id)) => {
            Some(Cursor::parse(id).map_err(|e| refuse(ApiErrorCode::InvalidRequest, format!("Last-Event-ID: {e}")))?)
        }
        Some(Err(_)) => return Err(refuse(ApiErrorCode::InvalidRequest, "Last-Event-ID is not text")),
    };

    let (tx, rx) = mpsc::channel(app.limits.outbound_queue.max(1));
    let kick = Arc::new(Kick::default());
    let sink = ConnSink::new(tx, kick.clone());
    let grants = claims.topics.clone().unwrap_or_default();
    let notifications_after = resume.as_ref().map(|cursor| cursor.notifications);
    let conn =
        app.hub.connect_stream(claims.user(), grants, claims.expires_at(), sink, notifications_after).await.map_err(
            |(code, reason)| {
                if code == CloseCode::TRY_AGAIN_LATER {
                    refuse(ApiErrorCode::RateLimited, reason)
                } else {
                    refuse(ApiErrorCode::Unavailable, reason)
                }
            },
        )?;
    let conn = Connected { hub: app.hub.clone(), conn };
    if let Some(topic) = topics.iter().find(|topic| !app.hub.allows(&conn.conn, topic)) {
        return Err(refuse(ApiErrorCode::Forbidden, format!("topic {topic} is not granted to this user")));
    }
    let cursor = resume.unwrap_or_default();
    for topic in &topics {
        // A topic the cursor does not name yet starts with live events.
        let after = cursor.topics.get(topic).copied();
        app.hub.subscribe_stream(&conn.conn, topic.clone(), after).await;
    }
    // A stream is a connection of the hub now, not a request in its HTTP phase.
    if let Some(axum::Extension(slot)) = slot {
        slot.release();
    }
    metrics::gauge!("petchat_sse_streams").increment(1.0);
    let deadline = tokio::time::Instant::now() + until_expiry(&claims, app.keys.leeway_ms());
    let keepalive = app.limits.sse_keepalive();
    let mut state = Stream {
        rx,
        kick,
        _connected: conn,
        cursor,
        awaiting: topics.len(),
        deferred: Vec::new(),
        shutdown: app.shutdown.clone(),
        deadline,
        keepalive,
        ended: false,
    };
    // The response starts once every subscription holds: an event published
    // after the client saw it start is never missed.
    let first = state
        .subscribed()
        .await
        .ok_or_else(|| refuse(ApiErrorCode::Unavailable, "the topics could not be read: retry later"))?;
    let first = futures_util::stream::iter((!first.is_empty()).then(|| Ok(Bytes::from(first))));
    let body = Body::from_stream(first.chain(futures_util::stream::unfold(state, Stream::next)));
    let mut response = Response::new(body);
    let response_headers = response.headers_mut();
    response_headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    response_headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache, no-transform"));
    // nginx and other proxies pass each event on at once instead of buffering.
    response_headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The stream's topics, checked: at most [`MAX_TOPICS_PER_CONNECTION`] valid names.
fn topics_of(list: Option<&str>) -> Result<Vec<TopicName>, Refusal> {
    let mut topics: Vec<TopicName> = Vec::new();
    for name in list.unwrap_or_default().split(',').map(str::trim).filter(|name| !name.is_empty()) {
        let topic =
            TopicName::new(name).map_err(|e| refuse(ApiErrorCode::InvalidRequest, format!("topic {name:?}: {e}")))?;
        if !topics.contains(&topic) {
            topics.push(topic);
        }
    }
    if topics.len() > MAX_TOPICS_PER_CONNECTION {
        return Err(refuse(
            ApiErrorCode::InvalidRequest,
            format!("a stream holds at most {MAX_TOPICS_PER_CONNECTION} topics"),
        ));
    }
    Ok(topics)
}

/// How long until the token expires, leeway included.
fn until_expiry(claims: &Claims, leeway_ms: u64) -> Duration {
    Duration::from_millis(expiry_ms(claims, leeway_ms).saturating_sub(auth::now_ms()))
}

/// The hub's connection of a stream: disconnected when the stream is dropped
/// (it ended, or the client went away).
struct Connected {
    hub: Hub,
    conn: HubConn,
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.hub.disconnect(&self.conn);
        metrics::gauge!("petchat_sse_streams").decrement(1.0);
        debug!(conn = self.conn.id, "SSE stream ended");
    }
}

/// A stream's state between chunks.
struct Stream {
    rx: mpsc::Receiver<axum::extract::ws::Utf8Bytes>,
    kick: Arc<Kick>,
    /// Held for its `Drop`, which takes the stream out of the hub.
    _connected: Connected,
    cursor: Cursor,
    /// Subscriptions not confirmed yet: until they are, the cursor does not
    /// know where each topic starts, so items wait in `deferred`.
    awaiting: usize,
    deferred: Vec<axum::extract::ws::Utf8Bytes>,
    shutdown: tokio_util::sync::CancellationToken,
    deadline: tokio::time::Instant,
    /// A comment goes out after this long without an event.
    keepalive: Duration,
    ended: bool,
}

impl Stream {
    /// The next chunk: the events queued since the last one, a keep-alive
    /// comment after a silence, or the end.
    async fn next(mut self) -> Option<(Result<Bytes, Infallible>, Self)> {
        if self.ended {
            return None;
        }
        loop {
            let first = tokio::select! {
                frame = self.rx.recv() => match frame {
                    Some(frame) => frame,
                    None => return None,
                },
                (code, reason) = self.kick.kicked() => {
                    debug!(code = code.code(), reason, "SSE stream cut off");
                    return self.end(": cut off: read faster and resume with Last-Event-ID\n\n");
                }
                () = self.shutdown.cancelled() => return self.end(": the server is shutting down\n\n"),
                () = tokio::time::sleep_until(self.deadline) => return self.end(": the token expired\n\n"),
                () = tokio::time::sleep(self.keepalive) => {
                    return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), self));
                }
            };
            let mut chunk = String::new();
            self.write(&first, &mut chunk);
            for _ in 1..CHUNK_FRAMES {
                match self.rx.try_recv() {
                    Ok(frame) => self.write(&frame, &mut chunk),
                    Err(_) => break,
                }
            }
            if !chunk.is_empty() {
                return Some((Ok(Bytes::from(chunk)), self));
            }
        }
    }

    /// Waits for every subscription's confirmation (10 s at most); returns
    /// what came meanwhile as the first chunk, or `None` on the timeout.
    async fn subscribed(&mut self) -> Option<String> {
        let deadline = tokio::time::Instant::now() + SUBSCRIBE_TIMEOUT;
        let mut chunk = String::new();
        while self.awaiting > 0 {
            let frame = tokio::time::timeout_at(deadline, self.rx.recv()).await.ok()??;
            self.write(&frame, &mut chunk);
        }
        Some(chunk)
    }

    /// A last comment, then the end.
    fn end(mut self, comment: &'static str) -> Option<(Result<Bytes, Infallible>, Self)> {
        self.ended = true;
        Some((Ok(Bytes::from_static(comment.as_bytes())), self))
    }

    /// Appends the SSE event of a frame, if it is a topic event or a
    /// notification; a topic's `topic.subscribed` (or its `error`) moves
    /// the cursor to where the topic starts.
    fn write(&mut self, frame: &axum::extract::ws::Utf8Bytes, chunk: &mut String) {
        let kind = if frame.starts_with(r#"{"type":"topic.event","#) {
            "topic.event"
        } else if frame.starts_with(r#"{"type":"notification","#) {
            "notification"
        } else if frame.starts_with(r#"{"type":"topic.subscribed","#) || frame.starts_with(r#"{"type":"error","#) {
            "start"
        } else {
            return;
        };
        if kind == "start" {
            let Ok(envelope) = ServerEnvelope::decode(frame) else { return };
            if let ServerMessage::TopicSubscribed(subscribed) = &envelope.message {
                // A resumed topic keeps its place (its replay follows); a new
                // one starts at its last seq.
                self.cursor.topics.entry(subscribed.topic.clone()).or_insert(subscribed.last_seq);
            }
            self.awaiting = self.awaiting.saturating_sub(1);
            if self.awaiting == 0 {
                for frame in std::mem::take(&mut self.deferred) {
                    self.write(&frame, chunk);
                }
            }
            return;
        }
        if self.awaiting > 0 {
            self.deferred.push(frame.clone());
            return;
        }
        // Only the topic and the seq are read: the frame is the hub's own
        // serialization, and decoding all of it again on every stream it
        // reaches cost more than the rest of the stream's work.
        let Ok(head) = serde_json::from_str::<Head<'_>>(frame) else { return };
        let Ok(seq) = LastSeq::new(head.data.seq) else { return };
        if kind == "topic.event" {
            // Not sent already (a replay after Last-Event-ID overlaps nothing, but be sure).
            if !head.data.topic.is_some_and(|topic| self.cursor.advance(&topic, seq)) {
                return;
            }
        } else {
            if seq.get() <= self.cursor.notifications.get() {
                // Sent already (a notification can come twice at connect).
                return;
            }
            self.cursor.notifications = seq;
        }
        chunk.push_str("id: ");
        chunk.push_str(&self.cursor.to_string());
        chunk.push_str("\nevent: ");
        chunk.push_str(kind);
        chunk.push_str("\ndata: ");
        chunk.push_str(frame);
        chunk.push_str("\n\n");
    }
}

/// What a stream reads of a `topic.event` or `notification` frame.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    data: HeadData<'a>,
}

/// The topic (of a topic event) and the seq.
#[derive(Deserialize)]
struct HeadData<'a> {
    #[serde(borrow, default)]
    topic: Option<std::borrow::Cow<'a, str>>,
    seq: u64,
}
