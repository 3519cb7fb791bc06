//! CORS for the HTTP routes a page of another origin calls with the user's
//! Bearer token: everything under `/v1/conversations/` (the history, and the
//! attachments a shop page's widget uploads and fetches). The origins are the
//! socket's (`--allowed-origins`, any in `--dev`): a page that may open the
//! socket may call these, and no other.
//!
//! No cookies are involved (the token is an `Authorization` header the page
//! sets), so responses never carry `Access-Control-Allow-Credentials`.

use axum::extract::{Request, State};
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;

/// The routes this applies to.
const PREFIX: &str = "/v1/conversations/";

/// Answers the preflight of an allowed origin, and marks the responses to its
/// requests as readable by it; every other request passes untouched (a
/// refused origin gets no CORS headers, so its page cannot read the answer).
pub(crate) async fn conversations(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let origin = request.headers().get(ORIGIN).cloned();
    let Some(origin) = origin.filter(|_| request.uri().path().starts_with(PREFIX)) else {
        return next.run(request).await;
    };
    if !app.origins.allows(request.headers()) {
        return next.run(request).await;
    }
    if request.method() == Method::OPTIONS && request.headers().contains_key(ACCESS_CONTROL_REQUEST_METHOD) {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST"));
        headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("authorization, content-type"));
        headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        headers.append(VARY, HeaderValue::from_static("Origin"));
        return response;
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("retry-after"));
    headers.append(VARY, HeaderValue::from_static("Origin"));
    response
}
