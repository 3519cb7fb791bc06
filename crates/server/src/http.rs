//! The HTTP routes around the socket (SPEC §7): health, readiness, metrics,
//! history, and the contract's documents.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use include_dir::{Dir, include_dir};
use petchat_protocol::limits::{DEFAULT_HISTORY_PAGE, MAX_HISTORY_PAGE};
use petchat_protocol::{ChatMessage, ConversationId, ErrorCode, ErrorData, HistoryPage, LastSeq, Role};
use serde::Deserialize;
use tracing::error;

use crate::AppState;

/// The generated contract, served as committed.
static SCHEMAS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/../../schemas");

/// `GET /healthz`: the process is up.
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: the store answers and the server is not shutting down.
pub(crate) async fn readyz(State(app): State<AppState>) -> Response {
    if app.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    match app.store.ping().await {
        Ok(()) => "ready\n".into_response(),
        Err(e) => {
            error!(error = %e, "readiness: the store does not answer");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n").into_response()
        }
    }
}

/// `GET /metrics`: Prometheus text format.
pub(crate) async fn metrics(State(app): State<AppState>) -> Response {
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], app.metrics.render()).into_response()
}

/// `GET /asyncapi.yaml`.
pub(crate) async fn asyncapi() -> Response {
    schema_file("asyncapi.yaml")
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

/// `GET /` (customer page) and `GET /agent` (agent console), from `--web-dir`.
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
}

/// `GET /dev/token?role=&sub=`: in `--dev` mode only, a token for the pages,
/// so a newcomer needs no setup; 404 otherwise.
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
    app.keys.mint(&sub, role, &name, std::time::Duration::from_secs(24 * 3600)).into_response()
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
pub(crate) async fn history(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let token = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let Some(claims) = token.and_then(|t| app.keys.verify(t.trim()).ok()) else {
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
    let limit = query.limit.unwrap_or(DEFAULT_HISTORY_PAGE).clamp(1, MAX_HISTORY_PAGE);
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
        Ok(mut records) => {
            let has_more = records.len() > limit;
            records.truncate(limit);
            let messages = records.into_iter().map(ChatMessage::from).collect();
            Json(HistoryPage { conversation_id: id, messages, has_more }).into_response()
        }
        Err(e) => {
            error!(error = %e, "history: reading messages failed");
            refuse(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, "the messages could not be read")
        }
    }
}

fn refuse(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    (status, Json(ErrorData { code, message: message.to_owned(), ref_id: None, retry_after_ms: None })).into_response()
}
