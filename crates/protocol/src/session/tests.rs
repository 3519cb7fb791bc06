//! The session driven by a virtual clock and a fake server: no sockets, no sleeps.

use serde_json::{Value, json};

use super::*;
use crate::close::reason_with_retry_hint;

const SEC: Millis = 1_000;

/// A session and a clock; helpers play the server's part.
struct Pair {
    session: Session,
    now: Millis,
}

impl Pair {
    fn new() -> Self {
        Self::with(SessionConfig { seed: 42, backoff: Backoff::new(42), ..SessionConfig::default() })
    }

    fn with(config: SessionConfig) -> Self {
        let mut session = Session::new(config);
        session.start(0);
        Self { session, now: 0 }
    }

    fn advance(&mut self, ms: Millis) {
        self.now += ms;
        self.session.handle_timeout(self.now);
    }

    /// Runs timers until the session asks to connect; returns how long that took.
    fn until_connect(&mut self) -> Millis {
        let started = self.now;
        for _ in 0..100 {
            if self.actions().contains(&Action::Connect) {
                return self.now - started;
            }
            let next = self.session.poll_timeout().expect("a reconnect timer is set");
            self.now = next.max(self.now);
            self.session.handle_timeout(self.now);
        }
        panic!("never asked to connect");
    }

    /// Opens the socket and delivers `session.ready` with these conversations.
    fn connect(&mut self, conversations: Value) {
        self.session.handle_connected(self.now);
        self.server(json!({"type": "session.ready", "data": {
            "sessionId": "s", "user": {"id": "cust-1", "role": "customer", "name": "C"},
            "heartbeatIntervalMs": 25_000,
            "limits": {"maxMessageBytes": 65_536, "maxTextChars": 4_000, "messagesPerSecond": 10},
            "conversations": conversations, "notifications": {"unread": 0, "lastSeq": 0}, "tokenExpiresAt": "2026-11-22T11:00:00.000Z",
        }}));
    }

    fn server(&mut self, mut frame: Value) {
        frame["timestamp"] = json!("2026-11-22T10:00:00.000Z");
        self.session.handle_frame(self.now, &frame.to_string());
    }

    fn message(&mut self, seq: u64, from: &str) {
        self.server(json!({"type": "chat.message", "data": {
            "conversationId": "c-1", "messageId": format!("m{seq}"), "seq": seq,
            "from": {"id": from, "role": "agent", "name": "A"}, "text": format!("text {seq}"),
            "sentAt": "2026-11-22T10:00:00.000Z"}}));
    }

    fn transmits(&mut self) -> Vec<Value> {
        std::iter::from_fn(|| self.session.poll_transmit()).map(|t| serde_json::from_str(&t).expect("JSON")).collect()
    }

    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.session.poll_action()).collect()
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.session.poll_event()).collect()
    }
}

fn c1() -> ConversationId {
    ConversationId::new("c-1").expect("id")
}

fn types(frames: &[Value]) -> Vec<&str> {
    frames.iter().map(|f| f["type"].as_str().expect("type")).collect()
}

#[test]
fn reconnect_delays_follow_full_jitter_backoff_within_bounds() {
    let mut pair = Pair::new();
    assert_eq!(pair.actions(), [Action::Connect]);
    let mut ceiling = 1_000;
    for _ in 0..8 {
        pair.session.handle_closed(pair.now, None, "");
        let waited = pair.until_connect();
        assert!(waited <= ceiling, "waited {waited} ms, ceiling {ceiling}");
        ceiling = (ceiling * 2).min(30_000);
    }
}

#[test]
fn every_close_code_decides_as_the_spec_table_says() {
    for code in CloseCode::ALL {
        let mut pair = Pair::new();
        pair.actions();
        pair.connect(json!([]));
        pair.session.handle_closed(pair.now, Some(code), "");
        let state = pair.session.state().clone();
        match code.reconnect() {
            Reconnect::Backoff | Reconnect::AfterHint => {
                assert!(
                    matches!(state, ConnectionState::Reconnecting { close_code: Some(c), .. } if c == code),
                    "{code}: {state:?}"
                );
            }
            Reconnect::Stop => assert_eq!(state, ConnectionState::Stopped { close_code: Some(code) }, "{code}"),
            Reconnect::NewToken => {
                assert_eq!(state, ConnectionState::Stopped { close_code: Some(code) }, "{code}");
                assert!(pair.events().contains(&Event::TokenNeeded { close_code: code }));
            }
        }
    }
}

#[test]
fn a_new_token_after_4500_reconnects() {
    let mut pair = Pair::new();
    pair.actions();
    pair.connect(json!([]));
    pair.session.handle_closed(pair.now, Some(CloseCode::UNAUTHORIZED), "token invalid");
    pair.advance(60 * SEC);
    assert!(pair.actions().is_empty(), "no reconnect without a new token");
    pair.session.token_refreshed(pair.now);
    assert!(pair.until_connect() <= 30 * SEC);
}

#[test]
fn a_server_hint_is_never_undercut() {
    let mut pair = Pair::new();
    pair.actions();
    pair.connect(json!([]));
    pair.session.handle_closed(pair.now, Some(CloseCode::TRY_AGAIN_LATER), &reason_with_retry_hint("full", 7_000));
    assert!(pair.until_connect() >= 7_000);
}

#[test]
fn the_schedule_starts_over_after_thirty_seconds_up() {
    let mut pair = Pair::new();
    pair.actions();
    for _ in 0..5 {
        pair.session.handle_closed(pair.now, None, "");
        pair.until_connect();
    }
    assert_eq!(pair.session.config.backoff.ceiling_ms(), 30_000);
    pair.connect(json!([]));
    pair.advance(31 * SEC);
    pair.server(json!({"type": "pong", "data": {}}));
    pair.session.handle_closed(pair.now, Some(CloseCode::GOING_AWAY), "");
    assert!(pair.until_connect() <= 1_000);
}

#[test]
fn messages_sent_while_down_are_replayed_in_order_with_their_keys_after_the_joins() {
    let mut pair = Pair::new();
    pair.actions();
    let keys: Vec<ClientMessageId> =
        (1..=3).map(|n| pair.session.send_chat(pair.now, &c1(), &format!("offline {n}")).expect("queued")).collect();
    assert!(pair.transmits().is_empty(), "nothing is written before session.ready");
    let queued = pair.events().into_iter().filter(|e| matches!(e, Event::Queued { .. })).count();
    assert_eq!(queued, 3);
    pair.connect(json!([{"id": "c-1", "status": "active", "lastSeq": 0}]));
    let frames = pair.transmits();
    assert_eq!(types(&frames), ["conversation.join", "chat.send", "chat.send", "chat.send"]);
    assert_eq!(frames[0]["data"], json!({"conversationId": "c-1", "afterSeq": 0}));
    let sent: Vec<&str> = frames[1..].iter().map(|f| f["data"]["clientMessageId"].as_str().expect("key")).collect();
    assert_eq!(sent, keys.iter().map(ClientMessageId::as_str).collect::<Vec<_>>());

    // The connection drops before any ack: everything is sent again, same keys.
    pair.session.handle_closed(pair.now, None, "");
    pair.until_connect();
    pair.connect(json!([{"id": "c-1", "status": "active", "lastSeq": 0}]));
    let again = pair.transmits();
    assert_eq!(again[1..], frames[1..]);

    // An ack takes its message out of the outbox.
    let first = &frames[1]["data"];
    pair.server(
        json!({"type": "chat.ack", "data": {"conversationId": "c-1", "clientMessageId": first["clientMessageId"],
        "messageId": "m1", "seq": 1, "sentAt": "2026-11-22T10:00:00.000Z"}}),
    );
    assert_eq!(pair.session.outbox().count(), 2);
    assert!(pair.events().iter().any(|e| matches!(e, Event::Sent(ack) if ack.seq.get() == 1)));
}

#[test]
fn a_message_with_attachments_goes_through_the_outbox_and_is_resent_with_them() {
    let mut pair = Pair::new();
    pair.actions();
    let send = ClientEnvelope::decode(
        &json!({"type": "chat.send", "data": {"conversationId": "c-1",
            "clientMessageId": "0b6f8a3e-5c1d-4f3a-9e2b-7d4c1a9f6e21", "text": "the rash",
            "attachments": ["att-1", "att-2"]}})
        .to_string(),
    )
    .expect("a valid chat.send");
    pair.session.send(pair.now, send.message, None).expect("queued");
    assert_eq!(pair.session.outbox().next().map(|s| s.attachments.as_slice().len()), Some(2));
    pair.connect(json!([{"id": "c-1", "status": "active", "lastSeq": 0}]));
    let frames = pair.transmits();
    assert_eq!(types(&frames), ["conversation.join", "chat.send"]);
    assert_eq!(frames[1]["data"]["attachments"], json!(["att-1", "att-2"]));
    pair.session.handle_closed(pair.now, None, "");
    pair.until_connect();
    pair.connect(json!([{"id": "c-1", "status": "active", "lastSeq": 0}]));
    assert_eq!(pair.transmits()[1], frames[1], "resent whole, with the same key and attachments");
}

#[test]
fn the_outbox_is_bounded() {
    let mut pair = Pair::with(SessionConfig { outbox_capacity: 2, ..SessionConfig::default() });
    pair.session.send_chat(0, &c1(), "a").expect("queued");
    pair.session.send_chat(0, &c1(), "b").expect("queued");
    assert_eq!(pair.session.send_chat(0, &c1(), "c"), Err(SendError::OutboxFull));
    assert!(pair.events().contains(&Event::OutboxFull));
    assert!(matches!(pair.session.send_chat(0, &c1(), "   "), Err(SendError::Text(TextError::Empty))));
}

#[test]
fn duplicates_are_dropped_and_a_gap_rejoins_from_the_last_contiguous_seq() {
    let mut pair = Pair::new();
    pair.actions();
    pair.connect(json!([{"id": "c-1", "status": "active", "lastSeq": 0}]));
    pair.transmits();
    pair.events();
    pair.message(1, "agent-1");
    pair.message(2, "agent-1");
    pair.message(2, "agent-1");
    pair.message(1, "agent-1");
    let seen = pair.events().into_iter().filter(|e| matches!(e, Event::Message(_))).count();
    assert_eq!(seen, 2, "each seq reaches the application once");
    pair.message(4, "agent-1");
    assert!(pair.events().contains(&Event::Gap { conversation_id: c1(), expected: 3, got: 4 }));
    let join = pair.transmits().into_iter().find(|f| f["type"] == "conversation.join").expect("a rejoin");
    assert_eq!(join["data"]["afterSeq"], 2);
    assert_eq!(pair.session.last_seq(&c1()), Some(2));
    assert_eq!(pair.session.history(&c1()).count(), 2);
}

#[test]
fn messages_from_others_are_acknowledged_as_delivered_in_one_receipt() {
    let mut pair = Pair::new();
    pair.actions();
    pair.connect(json!([{"id": "c-1", "status": "active", "lastSeq": 0}]));
    pair.transmits();
    pair.message(1, "agent-1");
    let receipts: Vec<Value> = pair.transmits().into_iter().filter(|f| f["type"] == "message.delivered").collect();
    assert_eq!(receipts.len(), 1);
    assert_eq!(receipts[0]["data"], json!({"conversationId": "c-1", "upToSeq": 1}));
    // The user's own messages (from another device) are not receipted.
    pair.message(2, "cust-1");
    assert!(pair.transmits().iter().all(|f| f["type"] != "message.delivered"));
}

#[test]
fn sends_are_paced_to_the_servers_rate() {
    let mut pair = Pair::new();
    pair.actions();
    pair.connect(json!([]));
    for n in 0..30 {
        pair.session.send_chat(pair.now, &c1(), &format!("m{n}")).expect("queued");
    }
    assert_eq!(pair.transmits().len(), 20, "a burst of twice messagesPerSecond");
    pair.advance(100);
    assert_eq!(pair.transmits().len(), 1, "then one per 100 ms at 10 per second");
    pair.advance(SEC);
    assert_eq!(pair.transmits().len(), 9);
}

#[test]
fn rate_limited_pauses_and_resends_the_refused_message() {
    let mut pair = Pair::new();
    pair.actions();
    pair.connect(json!([]));
    pair.session.send_chat(pair.now, &c1(), "hi").expect("queued");
    let sent = pair.transmits().remove(0);
    pair.server(json!({"type": "error", "id": sent["id"], "data": {"code": "rate_limited", "message": "slow down",
        "refId": sent["id"], "retryAfterMs": 500}}));
    assert!(pair.transmits().is_empty());
    pair.advance(499);
    assert!(pair.transmits().is_empty(), "not before retryAfterMs");
    pair.advance(1);
    assert_eq!(pair.transmits(), [sent]);
}

#[test]
fn a_refused_message_leaves_the_outbox_with_its_error() {
    let mut pair = Pair::new();
    pair.actions();
    pair.connect(json!([]));
    let key = pair.session.send_chat(pair.now, &c1(), "hi").expect("queued");
    let sent = pair.transmits().remove(0);
    pair.server(json!({"type": "error", "data": {"code": "forbidden", "message": "no", "refId": sent["id"]}}));
    assert_eq!(pair.session.outbox().count(), 0);
    assert!(
        pair.events().iter().any(|e| matches!(e, Event::Failed { client_message_id, .. } if *client_message_id == key))
    );
}

#[test]
fn close_1009_drops_the_offending_message() {
    let mut pair = Pair::new();
    pair.actions();
    pair.connect(json!([]));
    pair.session.send_chat(pair.now, &c1(), "fine").expect("queued");
    let big = pair.session.send_chat(pair.now, &c1(), "the big one").expect("queued");
    pair.transmits();
    // Queued after the big one, never written: not the culprit.
    pair.session.handle_closed(pair.now, None, "");
    pair.until_connect();
    pair.connect(json!([]));
    pair.transmits();
    pair.session.handle_closed(pair.now, Some(CloseCode::MESSAGE_TOO_BIG), "");
    assert!(pair.events().contains(&Event::Dropped { client_message_id: big }));
    assert_eq!(pair.session.outbox().count(), 1);
}

#[test]
fn a_silent_server_is_declared_dead_after_two_heartbeat_intervals() {
    let mut pair = Pair::new();
    pair.actions();
    pair.connect(json!([]));
    pair.transmits();
    pair.advance(25 * SEC);
    assert_eq!(types(&pair.transmits()), ["ping"], "a ping after one silent interval");
    pair.advance(24 * SEC);
    assert!(pair.actions().is_empty());
    pair.advance(SEC);
    assert_eq!(
        pair.actions(),
        [Action::Close {
            code: CloseCode::HEARTBEAT_TIMEOUT,
            reason: "no frame from the server for two heartbeat intervals".into()
        }]
    );
    assert!(matches!(
        pair.session.state(),
        ConnectionState::Reconnecting { close_code: Some(CloseCode::HEARTBEAT_TIMEOUT), .. }
    ));
}

#[test]
fn typing_is_throttled_and_stops_on_idle_or_send() {
    let mut pair = Pair::new();
    pair.actions();
    pair.connect(json!([{"id": "c-1", "status": "active", "lastSeq": 0}]));
    pair.transmits();
    for _ in 0..6 {
        pair.session.typing(pair.now, &c1());
        pair.advance(SEC);
    }
    // Keystrokes at 0..=5 s: a start at 0 and at 3 s.
    assert_eq!(types(&pair.transmits()), ["typing.start", "typing.start"]);
    pair.advance(5 * SEC);
    assert_eq!(types(&pair.transmits()), ["typing.stop"]);
    pair.session.typing(pair.now, &c1());
    pair.session.send_chat(pair.now, &c1(), "done").expect("queued");
    assert_eq!(types(&pair.transmits()), ["typing.start", "typing.stop", "chat.send"]);
}

#[test]
fn a_join_with_more_to_replay_joins_again_from_the_last_seq() {
    let mut pair = Pair::new();
    pair.actions();
    pair.connect(json!([{"id": "c-1", "status": "active", "lastSeq": 5}]));
    pair.transmits();
    pair.server(json!({"type": "conversation.joined", "data": {"conversation": {"id": "c-1",
        "customer": {"id": "cust-1", "name": "C"}, "status": "active", "lastSeq": 5,
        "createdAt": "2026-11-22T10:00:00.000Z"}, "hasMore": true}}));
    pair.message(1, "agent-1");
    pair.message(2, "agent-1");
    assert!(pair.transmits().iter().all(|f| f["type"] != "conversation.join"), "not during the replay");
    pair.server(
        json!({"type": "presence", "data": {"conversationId": "c-1", "userId": "agent-1", "status": "online"}}),
    );
    let join = pair.transmits().into_iter().find(|f| f["type"] == "conversation.join").expect("joins again");
    assert_eq!(join["data"]["afterSeq"], 2);
}

#[test]
fn disconnect_closes_with_1000_and_stays_down() {
    let mut pair = Pair::new();
    pair.actions();
    pair.connect(json!([]));
    pair.session.disconnect(pair.now);
    assert_eq!(pair.actions(), [Action::Close { code: CloseCode::NORMAL, reason: "bye".into() }]);
    pair.advance(120 * SEC);
    assert!(pair.actions().is_empty());
    assert_eq!(pair.session.send_chat(pair.now, &c1(), "late"), Err(SendError::Closed));
}

#[test]
fn opening_a_known_conversation_does_not_join_it_twice() {
    let mut pair = Pair::new();
    pair.actions();
    pair.connect(json!([{"id": "c-1", "status": "active", "lastSeq": 2}]));
    assert_eq!(types(&pair.transmits()), ["conversation.join"]);
    pair.server(json!({"type": "conversation.opened", "data": {"conversation": {"id": "c-1",
        "customer": {"id": "cust-1", "name": "C"}, "status": "active", "lastSeq": 2,
        "createdAt": "2026-11-22T10:00:00.000Z"}}}));
    assert!(pair.transmits().is_empty(), "the join on its way will replay it");
}

#[test]
fn the_network_coming_back_reconnects_at_once() {
    let mut pair = Pair::new();
    pair.actions();
    for _ in 0..4 {
        pair.session.handle_closed(pair.now, None, "");
        pair.until_connect();
    }
    pair.session.handle_closed(pair.now, None, "");
    assert!(pair.actions().is_empty());
    pair.session.network_online(pair.now);
    assert_eq!(pair.actions(), [Action::Connect]);
}

// ----- a hostile or buggy server (issue 10, defect 9) ------------------------------

/// The longest a deadline may lie ahead: two of the longest heartbeat intervals.
const LONGEST_WAIT: Millis = 2 * 600_000;

impl Pair {
    /// `session.ready` with these `heartbeatIntervalMs`, `maxMessageBytes` and `messagesPerSecond`.
    fn connect_announcing(&mut self, heartbeat_ms: u64, max_message_bytes: u64, messages_per_second: u64) {
        self.session.handle_connected(self.now);
        self.server(json!({"type": "session.ready", "data": {
            "sessionId": "s", "user": {"id": "cust-1", "role": "customer", "name": "C"},
            "heartbeatIntervalMs": heartbeat_ms,
            "limits": {"maxMessageBytes": max_message_bytes, "maxTextChars": 4_000,
                "messagesPerSecond": messages_per_second},
            "conversations": [], "notifications": {"unread": 0, "lastSeq": 0}, "tokenExpiresAt": "2099-01-01T00:00:00.000Z",
        }}));
    }

    /// Plays a driver that only runs timers, for at most `span` of virtual
    /// time or until the session waits on nothing: every deadline must lie
    /// strictly after the time it was asked at (or the driver would spin) and
    /// at most [`LONGEST_WAIT`] ahead. Returns how often the session woke.
    fn run_timers(&mut self, span: Millis) -> usize {
        let end = self.now + span;
        let mut wakeups = 0;
        while let Some(at) = self.session.poll_timeout() {
            assert!(at > self.now, "a deadline at {at} ms, not after now ({} ms): the driver would spin", self.now);
            assert!(at - self.now <= LONGEST_WAIT, "a deadline {} ms ahead", at - self.now);
            if at > end {
                break;
            }
            self.now = at;
            self.session.handle_timeout(at);
            wakeups += 1;
            assert!(wakeups < 1_000, "woke {wakeups} times in {span} ms");
        }
        wakeups
    }
}

#[test]
fn extreme_limits_in_session_ready_are_clamped_so_the_session_neither_panics_nor_spins() {
    for (heartbeat, bytes, rate) in [(0, 0, 0), (1, 1, 1), (u64::MAX, u64::from(u32::MAX), u64::from(u32::MAX))] {
        let mut pair = Pair::new();
        pair.actions();
        pair.advance(SEC);
        pair.connect_announcing(heartbeat, bytes, rate);
        let ahead = pair.session.poll_timeout().expect("the heartbeat waits") - pair.now;
        assert!((1_000..=600_000).contains(&ahead), "heartbeat {heartbeat}: the first deadline {ahead} ms ahead");
        // However small the announced frame limit, a short message is not refused here.
        pair.session.send_chat(pair.now, &c1(), "hello").expect("queued");
        pair.transmits();
        // A silent server: pings, then the link is declared dead, in bounded steps.
        let wakeups = pair.run_timers(3_600 * SEC);
        assert!(wakeups <= 3, "heartbeat {heartbeat}: woke {wakeups} times");
        assert!(
            pair.actions()
                .iter()
                .any(|a| matches!(a, Action::Close { code, .. } if *code == CloseCode::HEARTBEAT_TIMEOUT))
        );
    }
}

#[test]
fn a_session_waiting_for_session_ready_does_not_spin() {
    let mut pair = Pair::new();
    pair.actions();
    pair.session.handle_connected(pair.now);
    // No `session.ready`: no ping is due, and no deadline stays in the past.
    pair.run_timers(60 * SEC);
    assert!(
        pair.actions().iter().any(|a| matches!(a, Action::Close { code, .. } if *code == CloseCode::HEARTBEAT_TIMEOUT))
    );
}

#[test]
fn a_huge_retry_after_ms_pauses_for_the_longest_hint_and_no_longer() {
    let mut pair = Pair::new();
    pair.actions();
    pair.advance(SEC);
    // A heartbeat long enough that the link outlives the pause.
    pair.connect_announcing(600_000, 65_536, 10);
    pair.session.send_chat(pair.now, &c1(), "hi").expect("queued");
    let sent = pair.transmits().remove(0);
    pair.server(json!({"type": "error", "data": {"code": "internal", "message": "oops",
        "refId": sent["id"], "retryAfterMs": u64::MAX}}));
    let resume = pair.session.poll_timeout().expect("a resend is due") - pair.now;
    assert!(resume <= crate::limits::MAX_RETRY_HINT_MS, "paused for {resume} ms");
    pair.advance(crate::limits::MAX_RETRY_HINT_MS);
    assert_eq!(pair.transmits(), std::slice::from_ref(&sent), "sent again once the capped hint has passed");

    pair.server(json!({"type": "error", "data": {"code": "rate_limited", "message": "slow down",
        "refId": sent["id"], "retryAfterMs": u64::MAX - 1}}));
    pair.run_timers(crate::limits::MAX_RETRY_HINT_MS);
    assert_eq!(pair.transmits(), [sent]);
}

#[test]
fn a_huge_retry_hint_in_a_close_reason_is_capped() {
    for hint in ["18446744073709551614", "18446744073709551615", "99999999999999999999999"] {
        let mut pair = Pair::new();
        pair.actions();
        pair.advance(SEC);
        pair.connect(json!([]));
        pair.session.handle_closed(pair.now, Some(CloseCode::TRY_AGAIN_LATER), &format!("full; retryAfterMs={hint}"));
        assert_eq!(pair.until_connect(), crate::limits::MAX_RETRY_HINT_MS, "hint {hint}");
    }
}

#[test]
fn rejoins_after_session_ready_go_out_in_id_order_in_every_session() {
    let ids = ["c-5", "c-3", "c-9", "c-1", "c-7", "c-2", "c-8", "c-4", "c-6"];
    let listed: Vec<Value> = ids.iter().map(|id| json!({"id": id, "status": "active", "lastSeq": 0})).collect();
    for _ in 0..20 {
        let mut pair = Pair::new();
        pair.actions();
        pair.connect(json!(listed));
        let joined: Vec<String> = pair
            .transmits()
            .iter()
            .filter(|f| f["type"] == "conversation.join")
            .map(|f| f["data"]["conversationId"].as_str().expect("id").to_owned())
            .collect();
        assert_eq!(joined, ["c-1", "c-2", "c-3", "c-4", "c-5", "c-6", "c-7", "c-8", "c-9"]);
    }
}

#[test]
fn a_refused_join_is_matched_to_its_own_conversation_whatever_the_ids() {
    // Ids that end like one another, and one so long that `j-` + id exceeds an id's length.
    let long = "x".repeat(crate::limits::MAX_ID_CHARS);
    let ids = ["1", "c-1", "11", "c-11", long.as_str()];
    let listed: Vec<Value> = ids.iter().map(|id| json!({"id": id, "status": "active", "lastSeq": 0})).collect();
    for target in ids {
        for _ in 0..5 {
            let mut pair = Pair::new();
            pair.actions();
            pair.connect(json!(listed));
            let join = pair
                .transmits()
                .into_iter()
                .find(|f| f["type"] == "conversation.join" && f["data"]["conversationId"] == target)
                .expect("a join of every listed conversation");
            pair.server(json!({"type": "error", "data": {"code": "rate_limited", "message": "slow down",
                "refId": join["id"], "retryAfterMs": 100}}));
            pair.advance(100);
            let again: Vec<Value> = pair.transmits().into_iter().filter(|f| f["type"] == "conversation.join").collect();
            assert_eq!(again.len(), 1, "{target}: {again:?}");
            assert_eq!(again[0]["data"]["conversationId"], target);
        }
    }
}

#[test]
fn the_reconnecting_state_says_why() {
    let mut pair = Pair::new();
    pair.actions();
    pair.session.handle_closed(pair.now, None, "connection refused");
    let state = pair.session.state().to_json();
    assert_eq!((state["state"].clone(), state["reason"].clone()), (json!("reconnecting"), json!("connection refused")));
    pair.until_connect();
    pair.connect(json!([]));
    pair.session.handle_closed(pair.now, Some(CloseCode::GOING_AWAY), "shutting down");
    let state = pair.session.state().to_json();
    assert_eq!((state["closeCode"].clone(), state["reason"].clone()), (json!(1001), json!("shutting down")));
}

#[test]
fn a_heartbeat_timeout_never_leaves_a_deadline_due_at_once_whatever_the_jitter() {
    // Over many seeds some jitter draws are 0: the reconnect must still lie ahead.
    for seed in 0..2_000 {
        let mut pair = Pair::with(SessionConfig { seed, backoff: Backoff::new(seed), ..SessionConfig::default() });
        pair.actions();
        pair.connect(json!([]));
        pair.run_timers(60 * SEC);
        assert!(matches!(pair.session.state(), ConnectionState::Connecting), "seed {seed}");
    }
}

// ----- inputs the fuzzer found: fuzz/regressions/session/<test name> -----

/// The socket opened and `session.ready` never came: one heartbeat interval
/// later, `poll_timeout` stayed in the past (no ping goes out before ready),
/// so a driver spun until the second interval ended.
#[test]
fn heartbeat_due_before_session_ready() {
    let mut pair = Pair::new();
    pair.actions();
    pair.session.handle_connected(pair.now);
    pair.advance(25 * SEC);
    let due = pair.session.poll_timeout().expect("the dead-server timer");
    assert!(due > pair.now, "poll_timeout {due} is not after now {}", pair.now);
}

/// `session.ready` with `heartbeatIntervalMs` = `u64::MAX`: the dead-server
/// deadline (two intervals after the last frame) overflowed.
#[test]
fn session_ready_heartbeat_interval_u64_max() {
    let mut pair = Pair::new();
    pair.actions();
    pair.session.handle_connected(pair.now);
    pair.server(json!({"type": "session.ready", "data": {
        "sessionId": "s", "user": {"id": "cust-1", "role": "customer", "name": "C"},
        "heartbeatIntervalMs": u64::MAX,
        "limits": {"maxMessageBytes": 65_536, "maxTextChars": 4_000, "messagesPerSecond": 10},
        "conversations": [], "notifications": {"unread": 0, "lastSeq": 0}, "tokenExpiresAt": "2099-01-01T00:00:00.000Z",
    }}));
    assert!(pair.session.poll_timeout().is_some_and(|due| due > pair.now));
    pair.advance(1_000 * SEC);
    assert_eq!(pair.session.state(), &ConnectionState::Connected);
}

/// A join and a long message queued while down, then `session.ready` with a
/// `maxMessageBytes` smaller than the message's frame (0 in the fuzzer's
/// input, smaller than the join too): the session wrote frames the server had
/// said it would close with 1009, and that 1009 would have dropped whichever
/// message was written last, here the short one.
#[test]
fn session_ready_max_message_bytes_below_queued_frames() {
    let mut pair = Pair::new();
    pair.actions();
    let long = pair.session.send_chat(pair.now, &c1(), &"x".repeat(3_000)).expect("queued");
    pair.session.send_chat(pair.now, &c1(), "short").expect("queued");
    pair.session.handle_connected(pair.now);
    pair.server(json!({"type": "session.ready", "data": {
        "sessionId": "s", "user": {"id": "cust-1", "role": "customer", "name": "C"},
        "heartbeatIntervalMs": 25_000,
        "limits": {"maxMessageBytes": 2_000, "maxTextChars": 4_000, "messagesPerSecond": 10},
        "conversations": [], "notifications": {"unread": 0, "lastSeq": 0}, "tokenExpiresAt": "2099-01-01T00:00:00.000Z",
    }}));
    let frames: Vec<String> = std::iter::from_fn(|| pair.session.poll_transmit()).collect();
    assert!(frames.iter().all(|f| f.len() <= 2_000), "{frames:?}");
    let frames: Vec<Value> = frames.iter().map(|f| serde_json::from_str(f).expect("JSON")).collect();
    assert_eq!(types(&frames), ["conversation.join", "chat.send"], "the join and the short message still go");
    assert!(pair.events().contains(&Event::Dropped { client_message_id: long }));
    assert_eq!(pair.session.outbox().count(), 1);
}

/// A `rate_limited` error with `retryAfterMs` = `u64::MAX`: the pause's end
/// (`now + retryAfterMs`) overflowed.
#[test]
fn error_rate_limited_retry_after_ms_u64_max() {
    let mut pair = Pair::new();
    pair.actions();
    pair.connect(json!([]));
    pair.now += SEC;
    pair.server(json!({"type": "error", "data": {
        "code": "rate_limited", "message": "slow down", "retryAfterMs": u64::MAX,
    }}));
    pair.session.send_chat(pair.now, &c1(), "later").expect("queued");
    pair.advance(SEC);
    assert!(pair.transmits().is_empty(), "still paused");
}

/// `session.ready` with a large `messagesPerSecond`, then a long silence (the
/// fuzzer jumped the clock past the heartbeat): refilling the pacing bucket
/// (`elapsed × rate`) overflowed. Here: `u32::MAX` per second and 60 days.
#[test]
fn session_ready_messages_per_second_large_after_a_long_silence() {
    let mut pair = Pair::new();
    pair.actions();
    pair.session.handle_connected(pair.now);
    pair.server(json!({"type": "session.ready", "data": {
        "sessionId": "s", "user": {"id": "cust-1", "role": "customer", "name": "C"},
        "heartbeatIntervalMs": u64::from(u32::MAX),
        "limits": {"maxMessageBytes": 65_536, "maxTextChars": 4_000, "messagesPerSecond": u32::MAX},
        "conversations": [], "notifications": {"unread": 0, "lastSeq": 0}, "tokenExpiresAt": "2099-01-01T00:00:00.000Z",
    }}));
    pair.now += 60 * 24 * 3_600 * SEC;
    pair.session.send_chat(pair.now, &c1(), "hello again").expect("queued");
    assert_eq!(types(&pair.transmits()), ["chat.send"]);
}

/// Closed with 1013 and the reason `"at capacity; retryAfterMs=<u64::MAX>"`:
/// the reconnect time (`now + delay`, the delay never under the hint) overflowed.
#[test]
fn close_try_again_later_retry_after_ms_u64_max() {
    let mut pair = Pair::new();
    pair.actions();
    pair.connect(json!([]));
    pair.now += SEC;
    pair.session.handle_closed(
        pair.now,
        Some(CloseCode::TRY_AGAIN_LATER),
        &reason_with_retry_hint("at capacity", u64::MAX),
    );
    assert!(matches!(pair.session.state(), ConnectionState::Reconnecting { .. }));
    assert!(pair.session.poll_timeout().is_some_and(|due| due > pair.now));
}

#[test]
fn a_closed_conversation_fails_what_never_went_out_and_is_not_joined_again() {
    let mut pair = Pair::new();
    pair.actions();
    pair.connect(json!([{"id": "c-1", "status": "active", "lastSeq": 0}]));
    pair.transmits();
    // Ten per second with a burst of twenty (the join took one): some of these wait for their turn.
    let keys: Vec<ClientMessageId> =
        (0..25).map(|n| pair.session.send_chat(pair.now, &c1(), &format!("message {n}")).expect("queued")).collect();
    let written = pair.transmits().len();
    assert_eq!(written, 19);
    pair.server(json!({"type": "conversation.closed", "data": {"conversationId": "c-1", "by": "system", "reason": "customer_away"}}));
    let failed: Vec<ClientMessageId> = pair
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Failed { client_message_id, error } if error.code == ErrorCode::ConversationClosed => {
                Some(client_message_id)
            }
            _ => None,
        })
        .collect();
    assert_eq!(failed, keys[written..], "the messages never written fail at once");
    assert_eq!(pair.session.outbox().count(), written, "those written may be stored: they wait for their answer");
    pair.session.handle_closed(pair.now, None, "");
    pair.until_connect();
    pair.connect(json!([]));
    let sent = pair.transmits();
    assert!(!types(&sent).contains(&"conversation.join"), "a closed conversation is not joined again");
    assert_eq!(sent.iter().filter(|f| f["type"] == "chat.send").count(), written, "the written ones are resent");
}
