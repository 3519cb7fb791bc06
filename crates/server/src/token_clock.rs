//! Token lifetime on a live connection (SPEC §1): the deadline at which the
//! connection's token, plus the clock leeway, runs out, and `session.refresh`,
//! which swaps in a fresh token for the same user and moves the deadline on.
//!
//! The connection task owns one [`TokenClock`]; its `select!` loop waits on
//! [`TokenClock::expired`] and closes with 4501 when it fires.

use std::pin::Pin;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use petchat_protocol::token::Claims;
use petchat_protocol::{ErrorCode, RefreshSession, RequestId, Role, ServerMessage, SessionRefreshed, UserId};
use tokio::time::{Instant, Sleep};

use crate::auth::{self, AuthError, Keys};
use crate::hub::frames::frame;
use crate::hub::{count_error, error_frame};

/// The close reason of a connection whose token ran out.
pub(crate) const EXPIRED_REASON: &str = "token expired";

/// When the connection's token runs out, and who it must keep naming.
pub(crate) struct TokenClock {
    /// The user of the connection: a refresh must name the same one.
    sub: UserId,
    /// And the same role.
    role: Role,
    /// Fires at the token's `exp` plus the leeway.
    deadline: Pin<Box<Sleep>>,
}

impl TokenClock {
    /// The clock of a connection opened with `claims`.
    pub(crate) fn new(claims: &Claims, keys: &Keys) -> Self {
        let deadline = Box::pin(tokio::time::sleep_until(deadline(claims, keys)));
        Self { sub: claims.sub.clone(), role: claims.role, deadline }
    }

    /// Resolves when the token, plus the leeway, has run out; the caller
    /// closes with 4501.
    pub(crate) async fn expired(&mut self) {
        self.deadline.as_mut().await;
    }

    /// Answers a `session.refresh`: `session.refreshed` with the new expiry,
    /// or an `error` (`unauthorized`, `token_expired`) that leaves the old
    /// expiry in force. The token itself is never logged.
    pub(crate) fn refresh(&mut self, keys: &Keys, refresh: &RefreshSession, id: Option<RequestId>) -> Utf8Bytes {
        let refused = |code: ErrorCode, message: &str| {
            count_error(code);
            error_frame(code, message, id.clone())
        };
        let claims = match keys.verify(&refresh.token) {
            Ok(claims) => claims,
            Err(AuthError::Expired) => {
                return refused(ErrorCode::TokenExpired, "the token of session.refresh has expired");
            }
            Err(AuthError::NotYetValid) => {
                return refused(ErrorCode::Unauthorized, "the token of session.refresh is not valid yet (nbf)");
            }
            Err(_) => {
                return refused(ErrorCode::Unauthorized, "the token of session.refresh is malformed or wrongly signed");
            }
        };
        if claims.sub != self.sub || claims.role != self.role {
            return refused(ErrorCode::Unauthorized, "the token of session.refresh names another user or role");
        }
        self.deadline.as_mut().reset(deadline(&claims, keys));
        metrics::counter!("petchat_token_refreshes_total").increment(1);
        frame(ServerMessage::SessionRefreshed(SessionRefreshed { token_expires_at: claims.expires_at() }), id)
    }
}

/// The monotonic instant of `exp` plus the leeway, measured from the wall
/// clock now; a token that is already past it gives now.
fn deadline(claims: &Claims, keys: &Keys) -> Instant {
    let left = auth::expiry_ms(claims, keys.leeway_ms()).saturating_sub(auth::now_ms());
    // Far enough for any token, small enough that adding it cannot overflow an Instant.
    let left = Duration::from_millis(left.min(100 * 365 * 86_400_000));
    Instant::now() + left
}
