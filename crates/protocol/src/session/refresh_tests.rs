//! The token refresh on a virtual clock: no sockets, no sleeps, and a driver
//! clock that has nothing to do with the server's wall clock.

use serde_json::{Value, json};

use super::*;
use crate::close::CloseCode;
use crate::session::{Backoff, ConnectionState, Event, SessionConfig};

const SEC: Millis = 1_000;
/// The server's wall clock when it sends `session.ready`.
const SERVER_NOW: &str = "2026-11-22T10:00:00.000Z";

/// A session on a driver clock that starts far from zero (a monotonic clock
/// counts from anywhere), and helpers that play the server.
struct Driver {
    session: Session,
    now: Millis,
    /// Frames the session sent while the clock ran, other than its pings.
    held: Vec<Value>,
}

impl Driver {
    fn connected(expires_at: &str) -> Self {
        Self::connected_at(SERVER_NOW, expires_at)
    }

    fn connected_at(server_now: &str, expires_at: &str) -> Self {
        let config = SessionConfig { seed: 7, backoff: Backoff::new(7), ..SessionConfig::default() };
        let mut driver = Self { session: Session::new(config), now: 5_000_000, held: Vec::new() };
        driver.session.start(driver.now);
        driver.session.handle_connected(driver.now);
        driver.server(
            json!({"type": "session.ready", "data": {
                "sessionId": "s", "user": {"id": "cust-1", "role": "customer", "name": "C"},
                "heartbeatIntervalMs": 3_600_000,
                "limits": {"maxMessageBytes": 65_536, "maxTextChars": 4_000, "messagesPerSecond": 10},
                "conversations": [], "notifications": {"unread": 0, "lastSeq": 0}, "tokenExpiresAt": expires_at,
            }}),
            server_now,
        );
        driver.actions();
        driver.transmits();
        driver
    }

    fn server(&mut self, mut frame: Value, timestamp: &str) {
        frame["timestamp"] = json!(timestamp);
        self.session.handle_frame(self.now, &frame.to_string());
    }

    /// Runs the clock to `at`, through every deadline on the way, answering
    /// the session's heartbeat pings as a live server does (the link would
    /// otherwise die after two heartbeat intervals, at most 20 minutes);
    /// returns when the session asked for a token, if it did.
    fn run_until(&mut self, at: Millis) -> Option<Millis> {
        loop {
            let next = self.session.poll_timeout().filter(|&t| t <= at).unwrap_or(at).max(self.now);
            self.now = next;
            self.session.handle_timeout(self.now);
            for frame in self.transmits() {
                if frame["type"] == "ping" {
                    self.server(json!({"type": "pong", "id": frame["id"], "data": {}}), SERVER_NOW);
                } else {
                    self.held.push(frame);
                }
            }
            if self.actions().contains(&Action::RefreshToken) {
                return Some(self.now);
            }
            if self.now >= at {
                return None;
            }
        }
    }

    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.session.poll_action()).collect()
    }

    fn transmits(&mut self) -> Vec<Value> {
        let sent = std::iter::from_fn(|| self.session.poll_transmit()).map(|t| serde_json::from_str(&t).expect("JSON"));
        std::mem::take(&mut self.held).into_iter().chain(sent).collect()
    }

    /// Hands a token in and returns the `session.refresh` it sent.
    fn hand_token(&mut self, token: &str) -> Value {
        self.session.refresh_token(self.now, token.to_owned());
        let frames = self.transmits();
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert_eq!(frames[0]["type"], "session.refresh");
        assert_eq!(frames[0]["data"]["token"], token);
        frames[0].clone()
    }
}

#[test]
fn a_long_token_is_refreshed_sixty_seconds_before_it_expires_whatever_the_local_clock() {
    let mut driver = Driver::connected("2026-11-22T11:00:00.000Z");
    let start = driver.now;
    assert_eq!(driver.session.token_expires_in(start), Some(3_600 * SEC));
    assert_eq!(driver.run_until(start + 3_540 * SEC - 1), None, "not a millisecond early");
    assert_eq!(driver.run_until(start + 3_600 * SEC), Some(start + 3_540 * SEC));
}

#[test]
fn a_short_token_is_refreshed_after_three_quarters_of_its_life() {
    let mut driver = Driver::connected("2026-11-22T10:00:03.000Z");
    let start = driver.now;
    assert_eq!(driver.run_until(start + 10 * SEC), Some(start + 2_250));
}

#[test]
fn a_refreshed_token_is_rescheduled_from_its_new_expiry() {
    let mut driver = Driver::connected("2026-11-22T10:00:03.000Z");
    let asked = driver.run_until(driver.now + 10 * SEC).expect("asked");
    let sent = driver.hand_token("t2");
    let id = sent["id"].clone();
    assert!(id.is_string(), "a session.refresh carries an id");
    // The reply says the new token lives 3 s from the server's clock now.
    driver.server(
        json!({"type": "session.refreshed", "id": id, "data": {"tokenExpiresAt": "2026-11-22T10:00:05.250Z"}}),
        "2026-11-22T10:00:02.250Z",
    );
    assert_eq!(driver.session.token_expires_in(driver.now), Some(3 * SEC));
    assert_eq!(driver.run_until(asked + 10 * SEC), Some(asked + 2_250));
}

#[test]
fn a_refused_refresh_is_retried_with_doubling_delays_while_the_token_lasts() {
    let mut driver = Driver::connected("2026-11-22T10:01:00.000Z");
    let mut asked = driver.run_until(driver.now + 60 * SEC).expect("asked");
    assert_eq!(asked, 5_000_000 + 45 * SEC);
    let mut waits = Vec::new();
    for code in ["unauthorized", "token_expired", "unauthorized", "internal"] {
        let id = driver.hand_token("bad")["id"].clone();
        driver.server(
            json!({"type": "error", "id": id, "data": {"code": code, "message": "no", "refId": id}}),
            SERVER_NOW,
        );
        let Some(next) = driver.run_until(asked + 60 * SEC) else { break };
        waits.push(next - asked);
        asked = next;
    }
    // 1 s, 2 s, 4 s, 8 s: the fourth would land at 45 + 15 + 8 = 68 s, past the expiry at 60 s.
    assert_eq!(waits, [SEC, 2 * SEC, 4 * SEC]);
    assert_eq!(driver.run_until(driver.now + 600 * SEC), None, "no retry once the token is gone");
}

#[test]
fn a_refresh_that_does_not_move_the_expiry_on_counts_as_refused() {
    let mut driver = Driver::connected("2026-11-22T10:00:40.000Z");
    let asked = driver.run_until(driver.now + 60 * SEC).expect("asked");
    let id = driver.hand_token("same")["id"].clone();
    driver.server(
        json!({"type": "session.refreshed", "id": id, "data": {"tokenExpiresAt": "2026-11-22T10:00:40.000Z"}}),
        "2026-11-22T10:00:30.000Z",
    );
    assert_eq!(driver.run_until(asked + 60 * SEC), Some(asked + SEC));
}

#[test]
fn replies_that_answer_no_refresh_of_this_connection_change_nothing() {
    let mut driver = Driver::connected("2026-11-22T10:00:40.000Z");
    let start = driver.now;
    driver.server(
        json!({"type": "session.refreshed", "id": "rt-999", "data": {"tokenExpiresAt": "2026-11-22T12:00:00.000Z"}}),
        SERVER_NOW,
    );
    driver.server(
        json!({"type": "error", "id": "rt-998", "data": {"code": "unauthorized", "message": "no", "refId": "rt-998"}}),
        SERVER_NOW,
    );
    assert_eq!(driver.run_until(start + 60 * SEC), Some(start + 30 * SEC));
}

#[test]
fn hostile_expiries_neither_overflow_nor_spin() {
    // The longest life a timestamp can say: due in ~10,000 years, minus 60 s.
    let far = Driver::connected_at("0000-01-01T00:00:00.000Z", "9999-12-31T23:59:59.999Z");
    let due = far.session.refresh_deadline().expect("a refresh is scheduled");
    assert_eq!(
        due,
        far.now
            + (Timestamp::MAX.as_unix_ms() - Timestamp::from_unix_ms(-62_167_219_200_000).expect("year 0").as_unix_ms())
                as u64
            - REFRESH_LEAD_MAX_MS
    );
    // Already expired by the server's clock: one request at once, then nothing
    // (no life left for retries), and no deadline in the past to spin on.
    let mut past = Driver::connected_at("9999-12-31T23:59:59.999Z", "0000-01-01T00:00:00.000Z");
    let start = past.now;
    assert_eq!(past.run_until(start + SEC), Some(start));
    let id = past.hand_token("t")["id"].clone();
    past.server(
        json!({"type": "error", "id": id, "data": {"code": "token_expired", "message": "no", "refId": id}}),
        SERVER_NOW,
    );
    assert_eq!(past.session.refresh_deadline(), None);
}

#[test]
fn a_closed_connection_forgets_its_token_and_never_sends_a_stale_refresh() {
    let mut driver = Driver::connected("2026-11-22T10:00:03.000Z");
    driver.run_until(driver.now + 10 * SEC).expect("asked");
    driver.session.handle_closed(driver.now, Some(CloseCode::GOING_AWAY), "");
    assert_eq!(driver.session.token_expires_in(driver.now), None);
    // The provider answers late, after the close: nothing is queued.
    driver.session.refresh_token(driver.now, "late".into());
    driver.session.handle_connected(driver.now);
    assert!(driver.transmits().is_empty());
    // Without a token the server's 4501 ends in the TokenNeeded path.
    let mut lapsed = Driver::connected("2026-11-22T10:00:03.000Z");
    lapsed.run_until(lapsed.now + 10 * SEC).expect("asked");
    lapsed.session.handle_closed(lapsed.now, Some(CloseCode::TOKEN_EXPIRED), "token expired");
    let events: Vec<Event> = std::iter::from_fn(|| lapsed.session.poll_event()).collect();
    assert!(events.contains(&Event::TokenNeeded { close_code: CloseCode::TOKEN_EXPIRED }), "{events:?}");
    assert_eq!(lapsed.session.state(), &ConnectionState::Stopped { close_code: Some(CloseCode::TOKEN_EXPIRED) });
}

#[test]
fn a_refresh_goes_out_before_queued_requests_and_its_token_is_never_debug_printed() {
    let mut driver = Driver::connected("2026-11-22T10:00:03.000Z");
    driver.run_until(driver.now + 10 * SEC).expect("asked");
    // Exhaust the pacing budget so that requests wait in the queue.
    for _ in 0..30 {
        let _ = driver.session.send(driver.now, ClientMessage::Ping(Default::default()), None);
    }
    driver.transmits();
    driver.session.refresh_token(driver.now, "secret-token".into());
    assert!(!format!("{:?}", driver.session).contains("secret-token"));
    driver.now += SEC / 10;
    driver.session.handle_timeout(driver.now);
    assert_eq!(driver.transmits()[0]["type"], "session.refresh");
}

/// Found by the fuzzer after the merge with the clamping work
/// (fuzz/corpus/session/cmin-0101): a `session.ready` with an expired token
/// arriving while the socket is not open (the user had disconnected) left a
/// refresh deadline in the past that `handle_timeout` never cleared.
#[test]
fn a_session_ready_on_a_closed_socket_leaves_no_deadline_in_the_past() {
    let config = SessionConfig { seed: 7, backoff: Backoff::new(7), ..SessionConfig::default() };
    let mut driver = Driver { session: Session::new(config), now: 1_000, held: Vec::new() };
    driver.session.start(driver.now);
    driver.session.disconnect(driver.now);
    driver.actions();
    driver.server(
        json!({"type": "session.ready", "data": {
            "sessionId": "s", "user": {"id": "cust-1", "role": "customer", "name": "C"},
            "heartbeatIntervalMs": 25_000,
            "limits": {"maxMessageBytes": 65_536, "maxTextChars": 4_000, "messagesPerSecond": 10},
            "conversations": [], "notifications": {"unread": 0, "lastSeq": 0}, "tokenExpiresAt": "2026-11-22T09:00:00.000Z",
        }}),
        SERVER_NOW,
    );
    driver.session.handle_timeout(driver.now);
    if let Some(due) = driver.session.poll_timeout() {
        assert!(due > driver.now, "a deadline at {due} is not after now ({})", driver.now);
    }
}
