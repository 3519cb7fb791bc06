//! The HTTP routes around the socket (SPEC §7): health, readiness, metrics,
//! history, and the contract's documents.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::extract::{Path, Query, State};
use axum::http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use include_dir::{Dir, include_dir};
use petchat_protocol::limits::{DEFAULT_HISTORY_PAGE, MAX_HISTORY_PAGE, MAX_HISTORY_PAGE_BYTES};
use petchat_protocol::{ChatMessage, ConversationId, ErrorCode, ErrorData, HistoryPage, LastSeq, Role};
use serde::Deserialize;
use tower::ServiceExt;
use tracing::error;

use crate::AppState;
use crate::gate::Pass;

/// The generated contract, served as committed.
static SCHEMAS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/../../schemas");

/// `GET /healthz`: the process is up.
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: the store (and in a cluster Redis) answers and the server
/// is not shutting down; the body names each.
pub(crate) async fn readyz(State(app): State<AppState>) -> Response {
    if app.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    let (store, cluster) = tokio::join!(app.store.ping(), app.hub.cluster_ready());
    let mut report = String::new();
    let mut ready = true;
    match store {
        Ok(()) => report.push_str("store: ok\n"),
        Err(e) => {
            error!(error = %e, "readiness: the store does not answer");
            report.push_str("store: unavailable\n");
            ready = false;
        }
    }
    match cluster {
        None => {}
        Some(Ok(())) => report.push_str("redis: ok\n"),
        Some(Err(e)) => {
            error!(error = %e, "readiness: redis does not answer");
            report.push_str("redis: unavailable\n");
            ready = false;
        }
    }
    if ready {
        format!("ready\n{report}").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready\n{report}")).into_response()
    }
}

/// `GET /metrics`: Prometheus text format.
pub(crate) async fn metrics(State(app): State<AppState>) -> Response {
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], app.metrics.render()).into_response()
}

/// `GET /openapi.json`: the HTTP API's document, as committed (its server is
/// `/`, whichever host serves it).
pub(crate) async fn openapi() -> Response {
    match SCHEMAS.get_file("openapi.json") {
        Some(file) => ([(CONTENT_TYPE, "application/json")], file.contents()).into_response(),
        None => (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    }
}

/// `GET /asyncapi.yaml`, naming this server (the request's `Host`) as its
/// server rather than the default address the generated file holds.
pub(crate) async fn asyncapi(headers: HeaderMap) -> Response {
    let Some(file) = SCHEMAS.get_file("asyncapi.yaml") else {
        return (StatusCode::NOT_FOUND, "no such file\n").into_response();
    };
    let yaml = String::from_utf8_lossy(file.contents());
    let host = headers.get(HOST).and_then(|h| h.to_str().ok()).filter(|h| is_plain_host(h));
    let yaml = match host {
        Some(host) => yaml.replacen(GENERATED_HOST, &format!("host: \"{host}\""), 1),
        None => yaml.into_owned(),
    };
    ([(CONTENT_TYPE, "application/yaml")], yaml).into_response()
}

/// The server line of the generated AsyncAPI document.
const GENERATED_HOST: &str = "host: \"127.0.0.1:8080\"";

/// A `Host` header that is a host name or address with an optional port, and
/// nothing that could break out of a YAML string.
fn is_plain_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

/// Longest request path the static files answer; longer ones (and segments
/// longer than a file name can be) are 404, not a file-system error.
const MAX_STATIC_PATH_BYTES: usize = 1024;
/// Longest file name on the file systems petchat runs on.
const MAX_FILE_NAME_BYTES: usize = 255;

/// Every other `GET`: the files of `--web-dir` (the browser package), gzip
/// encoded for clients that accept it where `cargo xtask web` wrote a `.gz`.
/// The widget and the package are public and embedded by shop pages of other
/// origins, which load them with CORS: those answer any origin.
pub(crate) async fn static_file(State(app): State<AppState>, request: Request) -> Response {
    let path = request.uri().path();
    if path.len() > MAX_STATIC_PATH_BYTES || path.split('/').any(|segment| segment.len() > MAX_FILE_NAME_BYTES) {
        return (StatusCode::NOT_FOUND, "no such file\n").into_response();
    }
    let embeddable = is_embeddable(path);
    match app.files.clone().oneshot(request).await {
        Ok(response) => {
            let mut response = response.into_response();
            if embeddable && response.status().is_success() {
                // No credentials are involved (the token travels in the socket's
                // subprotocol), so `*` is right and needs no `Vary: Origin`.
                response.headers_mut().insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
            }
            response
        }
        Err(never) => match never {},
    }
}

/// The files a page of another origin loads from the chat host: `/widget.js`
/// (a classic script that imports the package) and the package under `/pkg/`
/// (a module script and the wasm, both fetched in CORS mode). The pages
/// themselves are not shared.
fn is_embeddable(path: &str) -> bool {
    path == "/widget.js" || (path.starts_with("/pkg/") && !path.contains(".."))
}

/// `GET /schemas/{path}`: the JSON Schemas and golden examples.
pub(crate) async fn schemas(Path(path): Path<String>) -> Response {
    schema_file(&path)
}

fn schema_file(path: &str) -> Response {
    match SCHEMAS.get_file(path) {
        Some(file) => {
            let kind = if path.ends_with(".yaml") { "application/yaml" } else { "application/json" };
            ([(CONTENT_TYPE, kind)], file.contents()).into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    }
}

/// `GET /` (the demo shop page, with the customer widget) and `GET /agent`
/// (agent console), from `--web-dir`.
pub(crate) async fn page(State(app): State<AppState>, uri: axum::http::Uri) -> Response {
    let file = if uri.path() == "/agent" { "agent.html" } else { "index.html" };
    match tokio::fs::read(app.web_dir.join(file)).await {
        Ok(html) => ([(CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
        Err(_) => (
            StatusCode::NOT_FOUND,
            format!("no pages in {}: build them with `cargo xtask web`\n", app.web_dir.display()),
        )
            .into_response(),
    }
}

/// The dev-token query.
#[derive(Debug, Deserialize)]
pub(crate) struct DevTokenQuery {
    role: String,
    sub: String,
    /// Comma-separated topic patterns for the token's `topics` claim.
    #[serde(default)]
    topics: Option<String>,
}

/// `GET /dev/token?role=&sub=&topics=`: in `--dev` mode only, a token for the
/// pages (granting `topics`, as a shop's backend grants a customer its own
/// orders), so a newcomer needs no setup; 404 otherwise.
pub(crate) async fn dev_token(
    State(app): State<AppState>,
    query: Result<Query<DevTokenQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some(Query(query)) = query.ok().filter(|_| app.dev) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let (Ok(role), Ok(sub)) = (query.role.parse::<Role>(), petchat_protocol::UserId::new(query.sub)) else {
        return refuse(StatusCode::BAD_REQUEST, ErrorCode::InvalidMessage, "role must be customer or agent, sub an id");
    };
    let name = match role {
        Role::Customer => format!("Customer {}", sub.as_str().rsplit('-').next().unwrap_or_default()),
        Role::Agent => format!("Agent {}", sub.as_str().rsplit('-').next().unwrap_or_default()),
    };
    let topics = match query.topics.as_deref().filter(|t| !t.is_empty()) {
        None => None,
        Some(list) => match list.split(',').map(petchat_protocol::TopicPattern::new).collect::<Result<Vec<_>, _>>() {
            Ok(patterns) => Some(patterns),
            Err(e) => return refuse(StatusCode::BAD_REQUEST, ErrorCode::InvalidMessage, &format!("topics: {e}")),
        },
    };
    let now = crate::auth::now_ms() / 1000;
    let claims =
        petchat_protocol::token::Claims { sub, role, name, exp: now + 24 * 3600, iat: Some(now), nbf: None, topics };
    app.keys.mint_claims(&claims).into_response()
}

/// `POST /dev/publish`: `--dev` only, a topic event as `/v1/api/publish`
/// publishes it, without an API key, so that a demo page can drive a topic
/// (the customer page's order status). 404 otherwise.
pub(crate) async fn dev_publish(State(app): State<AppState>, body: axum::body::Body) -> Response {
    if !app.dev {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    let request: petchat_protocol::api::PublishRequest = match crate::api::body(body).await {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(),
    };
    let topic = request.topic.clone();
    match app.hub.feeds().publish(request).await {
        Ok(posted) => Json(petchat_protocol::api::Published { topic, seq: posted.seq }).into_response(),
        Err(e) => {
            error!(error = %e, "dev publish failed");
            (StatusCode::SERVICE_UNAVAILABLE, "publishing failed\n").into_response()
        }
    }
}

/// The history query.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HistoryQuery {
    after_seq: Option<u64>,
    limit: Option<usize>,
}

/// `GET /v1/conversations/{id}/messages?afterSeq=&limit=`, with the same
/// token as a Bearer header and the same permissions as a join.
///
/// A page holds at most `limit` messages (0 asks only whether there are any:
/// an empty page and `hasMore`) and at most [`MAX_HISTORY_PAGE_BYTES`]; the
/// history gate bounds how many pages are held at once, per user and in total.
pub(crate) async fn history(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let token = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer_token);
    let Some(claims) = token.and_then(|t| app.keys.verify(t).ok()) else {
        return refuse(StatusCode::UNAUTHORIZED, ErrorCode::Forbidden, "a valid Bearer token is required");
    };
    let Ok(Query(query)) = query else {
        return refuse(StatusCode::BAD_REQUEST, ErrorCode::InvalidMessage, "afterSeq and limit must be integers");
    };
    let Ok(after) = LastSeq::new(query.after_seq.unwrap_or(0)) else {
        return refuse(StatusCode::BAD_REQUEST, ErrorCode::InvalidMessage, "afterSeq is too large");
    };
    let Ok(id) = ConversationId::new(id) else {
        return refuse(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such conversation");
    };
    let Some(pass) = app.history_gate.enter(&claims.sub) else {
        metrics::counter!("petchat_history_refused_total").increment(1);
        let mut response =
            refuse(StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited, "too many history requests at once");
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    };
    let limit = query.limit.unwrap_or(DEFAULT_HISTORY_PAGE).min(MAX_HISTORY_PAGE);
    let rec = match app.store.conversation(&id).await {
        Ok(Some(rec)) => rec,
        Ok(None) => return refuse(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such conversation"),
        Err(e) => {
            error!(error = %e, "history: reading the conversation failed");
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                "the conversation could not be read",
            );
        }
    };
    if !rec.has_member(&claims.sub, claims.role) {
        return refuse(StatusCode::FORBIDDEN, ErrorCode::Forbidden, "this conversation is not yours");
    }
    match app.store.messages_after(&id, after, limit + 1).await {
        Ok(records) => {
            let fetched = records.len();
            let mut bytes = 0;
            let mut messages = Vec::with_capacity(fetched.min(limit));
            for message in records.into_iter().take(limit).map(ChatMessage::from) {
                // The JSON of the message and its separating comma.
                let size = serde_json::to_vec(&message).map_or(0, |json| json.len()) + 1;
                if !messages.is_empty() && bytes + size > MAX_HISTORY_PAGE_BYTES {
                    break;
                }
                bytes += size;
                messages.push(message);
            }
            let has_more = fetched > messages.len();
            metrics::counter!("petchat_history_pages_total").increment(1);
            match serde_json::to_vec(&HistoryPage { conversation_id: id, messages, has_more }) {
                Ok(json) => held_body(json, pass),
                Err(e) => {
                    error!(error = %e, "history: the page did not serialize");
                    refuse(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, "the page could not be written")
                }
            }
        }
        Err(e) => {
            error!(error = %e, "history: reading messages failed");
            refuse(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, "the messages could not be read")
        }
    }
}

/// Bytes of a history page handed to the connection at a time.
const BODY_CHUNK_BYTES: usize = 16 * 1024;

/// A JSON response whose body holds `pass` until its last chunk is taken:
/// the connection takes a chunk only when the last one is written, so a page
/// that a client does not read keeps its gate pass (and so counts against the
/// caps) until the write timeout drops the connection.
fn held_body(json: Vec<u8>, pass: Pass) -> Response {
    let length = json.len();
    let chunks = futures_util::stream::unfold((Bytes::from(json), pass), |(mut rest, pass)| async move {
        if rest.is_empty() {
            return None;
        }
        let chunk = rest.split_to(rest.len().min(BODY_CHUNK_BYTES));
        Some((Ok::<_, std::convert::Infallible>(chunk), (rest, pass)))
    });
    let mut response = Body::from_stream(chunks).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    response
}

/// The token of an `Authorization: Bearer …` header; the scheme is
/// case-insensitive (RFC 7235 §2.1).
pub(crate) fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn refuse(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    (status, Json(ErrorData { code, message: message.to_owned(), ref_id: None, retry_after_ms: None })).into_response()
}
