//! Refreshing the token of a live connection ahead of its expiry (SPEC §1).
//!
//! The session reads no wall clock, so it cannot compare `tokenExpiresAt` with
//! "now". It takes the token's remaining life from the server's own clock
//! instead: `tokenExpiresAt` minus the `timestamp` of the envelope that
//! carried it (`session.ready`, later `session.refreshed`), and counts that
//! life down on the driver's monotonic clock from the moment the envelope
//! arrived. Clock skew between client and server does not enter; only the
//! one-way delay of that frame does, which the margin below covers.
//!
//! The rule: ask for a fresh token when three quarters of the remaining life
//! have passed, but never more than [`REFRESH_LEAD_MAX_MS`] (60 s) before
//! expiry. A one-hour token is refreshed 60 s before it expires, a
//! three-second one after 2.25 s. The driver hears [`Action::RefreshToken`],
//! asks its token provider, and hands the token to [`Session::refresh_token`],
//! which sends `session.refresh`. A refused refresh (`unauthorized`,
//! `token_expired`, any `error` naming it), or one that does not move the
//! expiry on, is retried after 1 s, 2 s, 4 s… (at most 30 s) while the token
//! still has life left. If no token comes, the server closes the connection
//! with 4501 at expiry and the session's `TokenNeeded` path takes over.
//!
//! Every sum and difference here saturates: a hostile server may announce any
//! instant from the year 0 to 9999.

use super::{Action, Millis, Session, envelope};
use crate::error::ErrorData;
use crate::ready::RefreshSession;
use crate::time::Timestamp;
use crate::{ClientMessage, RequestId, ServerEnvelope};

/// The token is refreshed at most this long before it expires.
pub const REFRESH_LEAD_MAX_MS: u64 = 60_000;

/// The first retry of a refused refresh waits this long; each next one twice
/// as long, up to [`REFRESH_RETRY_CAP_MS`].
pub const REFRESH_RETRY_BASE_MS: u64 = 1_000;

/// The longest wait between two refresh attempts.
pub const REFRESH_RETRY_CAP_MS: u64 = 30_000;

/// What the session knows of the connection's token lifetime.
#[derive(Debug, Clone, Default)]
pub(super) struct Refresh {
    /// The token's `exp` as the server last announced it.
    token_expires_at: Option<Timestamp>,
    /// When the token runs out, on the driver's clock.
    expires_at: Option<Millis>,
    /// When to ask the driver for a fresh token.
    due_at: Option<Millis>,
    /// The `id` of the `session.refresh` on its way.
    in_flight: Option<RequestId>,
    /// Attempts refused since the last success, for the retry delay.
    failures: u32,
}

impl Session {
    /// The application has a fresh token after [`Action::RefreshToken`]: it is
    /// sent to the server (`session.refresh`) ahead of the other queued
    /// requests. Ignored while the connection is not ready; the next
    /// connection uses the token provider anyway.
    pub fn refresh_token(&mut self, now: Millis, token: String) {
        if !self.is_ready() {
            return;
        }
        let id = self.request_id("rt");
        self.refresh.in_flight = Some(id.clone());
        self.refresh.due_at = None;
        let refresh = ClientMessage::SessionRefresh(RefreshSession { token });
        self.control.retain(|(_, e)| !matches!(e.message, ClientMessage::SessionRefresh(_)));
        self.control.push_front((None, envelope(refresh, Some(id))));
        self.flush(now);
    }

    /// The token provider failed (threw, or the network is down) after
    /// [`Action::RefreshToken`]: try again later, while the token lasts.
    pub fn refresh_failed(&mut self, now: Millis) {
        if self.is_ready() && self.refresh.in_flight.is_none() {
            self.retry_refresh(now);
        }
    }

    /// Milliseconds until the connection's token expires, as the server
    /// announced it; `None` before `session.ready`.
    pub fn token_expires_in(&self, now: Millis) -> Option<u64> {
        self.refresh.expires_at.map(|at| at.saturating_sub(now))
    }

    /// `session.ready` or `session.refreshed` arrived at `now` in an envelope
    /// stamped `sent_at`: the token lives until `expires_at`.
    pub(super) fn schedule_refresh(&mut self, now: Millis, sent_at: Timestamp, expires_at: Timestamp) {
        let remaining = u64::try_from(expires_at.as_unix_ms().saturating_sub(sent_at.as_unix_ms())).unwrap_or(0);
        let lead = (remaining / 4).min(REFRESH_LEAD_MAX_MS);
        self.refresh.token_expires_at = Some(expires_at);
        self.refresh.expires_at = Some(now.saturating_add(remaining));
        self.refresh.due_at = Some(now.saturating_add(remaining - lead));
        self.refresh.in_flight = None;
    }

    /// `session.refreshed`: the new token is in force. One that answers no
    /// refresh of this connection, is ignored; one that does not move the
    /// expiry on (a provider that handed back the same token) counts as refused.
    pub(super) fn on_refreshed(&mut self, now: Millis, envelope: &ServerEnvelope, expires_at: Timestamp) {
        if envelope.id.is_none() || envelope.id != self.refresh.in_flight {
            return;
        }
        if self.refresh.token_expires_at.is_some_and(|old| expires_at <= old) {
            self.refresh.in_flight = None;
            return self.retry_refresh(now);
        }
        self.refresh.failures = 0;
        self.schedule_refresh(now, envelope.timestamp, expires_at);
    }

    /// An `error` answering the refresh on its way: retry later. Returns
    /// whether the error was the refresh's.
    pub(super) fn on_refresh_error(&mut self, now: Millis, error: &ErrorData) -> bool {
        if error.ref_id.is_none() || error.ref_id != self.refresh.in_flight {
            return false;
        }
        self.refresh.in_flight = None;
        self.retry_refresh(now);
        true
    }

    /// Time passed: the refresh may be due.
    pub(super) fn refresh_timeout(&mut self, now: Millis) {
        if self.is_ready() && self.refresh.due_at.is_some_and(|at| at <= now) {
            self.refresh.due_at = None;
            self.actions.push_back(Action::RefreshToken);
        }
    }

    /// When the refresh is due, if it waits on time. Only a ready
    /// connection refreshes (`refresh_timeout`), so only it has a deadline:
    /// one kept while not ready would stay in the past and spin the driver.
    pub(super) fn refresh_deadline(&self) -> Option<Millis> {
        self.refresh.due_at.filter(|_| self.is_ready())
    }

    /// The connection ended: its token's lifetime means nothing to the next,
    /// and a refresh not yet written is not sent on it.
    pub(super) fn reset_refresh(&mut self) {
        self.refresh = Refresh::default();
        self.control.retain(|(_, e)| !matches!(e.message, ClientMessage::SessionRefresh(_)));
    }

    fn retry_refresh(&mut self, now: Millis) {
        let delay =
            REFRESH_RETRY_BASE_MS.saturating_mul(1u64 << self.refresh.failures.min(32)).min(REFRESH_RETRY_CAP_MS);
        self.refresh.failures = self.refresh.failures.saturating_add(1);
        let at = now.saturating_add(delay);
        // Past expiry the server closes with 4501; retrying then is pointless.
        self.refresh.due_at = self.refresh.expires_at.filter(|&expires| at < expires).map(|_| at);
    }
}

#[cfg(test)]
#[path = "refresh_tests.rs"]
mod tests;
