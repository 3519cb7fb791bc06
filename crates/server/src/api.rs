//! The server API for the shop's backend (SPEC §13): `/v1/api/publish`,
//! `/v1/api/notify`, `/v1/api/presence/{userId}` and `/v1/api/stats`.
//!
//! Every call carries `Authorization: Bearer <key>` with a key of
//! `--api-keys`; keys are compared in constant time (as SHA-256 digests, so
//! that not even their length shows) and never logged. Bodies are JSON, read
//! up to `MAX_API_BODY_BYTES`; every error is `{"error": {"code", "message"}}`
//! with the status its code names.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use petchat_protocol::api::{
    ApiError, ApiErrorCode, Notified, NotifyRequest, PresenceAnswer, PublishRequest, Published, Stats,
};
use petchat_protocol::limits::{MAX_API_BODY_BYTES, MAX_EVENT_DATA_BYTES};
use petchat_protocol::{NotificationId, UserId};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::error;

use crate::AppState;
use crate::hub::feeds::PostError;

/// The API keys, as digests.
#[derive(Clone, Default)]
pub(crate) struct ApiKeys(Vec<[u8; 32]>);

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.0.len())
    }
}

impl ApiKeys {
    /// The keys of `--api-keys` (empty entries dropped).
    pub(crate) fn new(keys: &[String]) -> Self {
        Self(keys.iter().map(|k| k.trim()).filter(|k| !k.is_empty()).map(|k| Sha256::digest(k).into()).collect())
    }

    /// Whether `key` is one of them, compared against every key in constant time.
    fn accepts(&self, key: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(key).into();
        self.0.iter().fold(subtle::Choice::from(0), |found, k| found | k.ct_eq(&digest)).into()
    }
}

/// A refused call: its code (which names the status) and why.
#[derive(Debug)]
pub(crate) struct Refusal(ApiErrorCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(ApiError::new(self.0, self.1))).into_response()
    }
}

/// A refusal with this code and message.
pub(crate) fn refuse(code: ApiErrorCode, message: impl Into<String>) -> Refusal {
    Refusal(code, message.into())
}

/// Refuses a call without one of the keys.
fn authorize(app: &AppState, headers: &HeaderMap) -> Result<(), Refusal> {
    let key = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match key {
        Some(key) if app.api_keys.accepts(key.trim()) => Ok(()),
        Some(_) => Err(refuse(ApiErrorCode::Unauthorized, "the API key is not valid")),
        None => Err(refuse(ApiErrorCode::Unauthorized, "Authorization: Bearer <API key> is required")),
    }
}

/// Reads a JSON body of at most `MAX_API_BODY_BYTES`, naming the field that is wrong.
pub(crate) async fn body<T: DeserializeOwned>(body: Body) -> Result<T, Refusal> {
    // Reading fails past the limit, or when the peer cuts the body short
    // (and then nobody reads the answer).
    let bytes: Bytes = axum::body::to_bytes(body, MAX_API_BODY_BYTES)
        .await
        .map_err(|_| refuse(ApiErrorCode::TooLarge, format!("the body is larger than {MAX_API_BODY_BYTES} bytes")))?;
    let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner();
        // A field's error names the field; where in the text it was adds nothing.
        let mut why = inner.to_string();
        if inner.classify() == serde_json::error::Category::Data
            && let Some(at) = why.rfind(" at line ")
        {
            why.truncate(at);
        }
        let message = if path == "." { why } else { format!("{path}: {why}") };
        refuse(ApiErrorCode::InvalidRequest, message)
    })?;
    deserializer.end().map_err(|e| refuse(ApiErrorCode::InvalidRequest, format!("after the JSON value: {e}")))?;
    Ok(value)
}

/// The answer to a post that failed.
fn post_failed(e: PostError, what: &str) -> Refusal {
    match e {
        PostError::KeyConflict => refuse(
            ApiErrorCode::IdempotencyConflict,
            "this idempotencyKey was used within 24 h for a different request",
        ),
        PostError::Store(e) => {
            error!(error = %e, "{what} failed");
            refuse(ApiErrorCode::Unavailable, format!("{what} failed: the store is unavailable, retry later"))
        }
    }
}

/// `POST /v1/api/publish`.
pub(crate) async fn publish(
    State(app): State<AppState>,
    headers: HeaderMap,
    raw: Body,
) -> Result<Json<Published>, Refusal> {
    authorize(&app, &headers)?;
    let request: PublishRequest = body(raw).await?;
    let size = serde_json::to_string(&request.data).map_or(usize::MAX, |s| s.len());
    if size > MAX_EVENT_DATA_BYTES {
        return Err(refuse(
            ApiErrorCode::TooLarge,
            format!("data is {size} bytes of JSON, at most {MAX_EVENT_DATA_BYTES} are allowed"),
        ));
    }
    let topic = request.topic.clone();
    let posted = app.hub.feeds().publish(request).await.map_err(|e| post_failed(e, "publishing"))?;
    Ok(Json(Published { topic, seq: posted.seq }))
}

/// `POST /v1/api/notify`.
pub(crate) async fn notify(
    State(app): State<AppState>,
    headers: HeaderMap,
    raw: Body,
) -> Result<Json<Notified>, Refusal> {
    authorize(&app, &headers)?;
    let request: NotifyRequest = body(raw).await?;
    let user_id = request.user_id.clone();
    let posted = app.hub.feeds().notify(request).await.map_err(|e| post_failed(e, "notifying"))?;
    let id = NotificationId::new(posted.id).map_err(|e| {
        error!(error = %e, "a stored notification has no valid id");
        refuse(ApiErrorCode::Unavailable, "the notification's id could not be read")
    })?;
    Ok(Json(Notified { user_id, id, seq: posted.seq }))
}

/// `GET /v1/api/presence/{userId}`.
pub(crate) async fn presence(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> Result<Json<PresenceAnswer>, Refusal> {
    authorize(&app, &headers)?;
    let user_id =
        UserId::new(user).map_err(|_| refuse(ApiErrorCode::InvalidRequest, "userId must be 1 to 128 characters"))?;
    let connections = app.hub.presence(&user_id).await.map_err(|e| {
        error!(error = %e, "presence: redis does not answer");
        refuse(ApiErrorCode::Unavailable, "presence is unavailable: redis does not answer")
    })?;
    Ok(Json(PresenceAnswer { user_id, online: connections > 0, connections }))
}

/// `GET /v1/api/stats`.
pub(crate) async fn stats(State(app): State<AppState>, headers: HeaderMap) -> Result<Json<Stats>, Refusal> {
    authorize(&app, &headers)?;
    let stats = app.hub.stats().await;
    stats.map(Json).ok_or_else(|| refuse(ApiErrorCode::Unavailable, "the stats are unavailable: retry later"))
}

/// Anything else under `/v1/api/`.
pub(crate) async fn not_found() -> Refusal {
    refuse(ApiErrorCode::NotFound, "no such endpoint of the server API")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_matched_exactly_and_empty_entries_are_no_keys() {
        let keys = ApiKeys::new(&["k1".into(), " ".into(), "second-key".into()]);
        assert!(keys.accepts("k1"));
        assert!(keys.accepts("second-key"));
        for wrong in ["", " ", "k", "k1 ", "K1", "second-key2"] {
            assert!(!keys.accepts(wrong), "{wrong:?}");
        }
        assert!(!ApiKeys::new(&[]).accepts(""));
        assert_eq!(format!("{keys:?}"), "ApiKeys(2 keys)");
    }
}
