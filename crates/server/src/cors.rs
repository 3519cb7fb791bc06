//! CORS for the HTTP routes a page of another origin calls with the user's
//! Bearer token: everything under `/v1/conversations/` (the history, and the
//! attachments a shop page's widget uploads and fetches). The origins are the
//! socket's (`--allowed-origins`, any in `--dev`): a page that may open the
//! socket may call these, and no other.
//!
//! tower-http's `CorsLayer` does the protocol (preflights, `Vary`); this module
//! only says which origins, methods and headers. No cookies are involved (the
//! token is an `Authorization` header the page sets), so responses never carry
//! `Access-Control-Allow-Credentials`.

use std::time::Duration;

use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderValue, Method, request::Parts};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::ws::OriginPolicy;

/// How long a browser may keep a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The layer of the conversation routes: the origins `origins` lets open the
/// socket may call them (a request without `Origin` needs no CORS at all).
pub(crate) fn conversations(origins: OriginPolicy) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |_: &HeaderValue, request: &Parts| origins.allows(&request.headers)))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([AUTHORIZATION, CONTENT_TYPE])
        .expose_headers([RETRY_AFTER])
        .max_age(PREFLIGHT_MAX_AGE)
}
