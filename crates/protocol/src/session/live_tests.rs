//! Live updates in the session, on the virtual clock: topics resume after
//! every reconnect from the last event handed on, and notifications are
//! handed on once each, whatever the server replays.

use serde_json::{Value, json};

use super::*;

/// A session and a clock; the helpers play the server.
struct Live {
    session: Session,
    now: Millis,
}

impl Live {
    fn new() -> Self {
        let mut session = Session::new(SessionConfig { seed: 7, backoff: Backoff::new(7), ..SessionConfig::default() });
        session.start(0);
        Self { session, now: 0 }
    }

    /// Opens the socket and delivers `session.ready` with this notification state.
    fn connect(&mut self, unread: u64, last_seq: u64) {
        let _ = std::iter::from_fn(|| self.session.poll_action()).count();
        self.session.handle_connected(self.now);
        self.server(json!({"type": "session.ready", "data": {
            "sessionId": "s", "user": {"id": "cust-1", "role": "customer", "name": "C"},
            "heartbeatIntervalMs": 25_000,
            "limits": {"maxMessageBytes": 65_536, "maxTextChars": 4_000, "messagesPerSecond": 1_000},
            "conversations": [], "notifications": {"unread": unread, "lastSeq": last_seq},
            "tokenExpiresAt": "2099-01-01T00:00:00.000Z",
        }}));
    }

    /// The socket drops; the session reconnects once its timer fires.
    fn drop_and_reconnect(&mut self, unread: u64, last_seq: u64) {
        self.session.handle_closed(self.now, Some(CloseCode::GOING_AWAY), "");
        for _ in 0..100 {
            if std::iter::from_fn(|| self.session.poll_action()).any(|a| a == Action::Connect) {
                break;
            }
            self.now = self.session.poll_timeout().expect("a reconnect timer").max(self.now);
            self.session.handle_timeout(self.now);
        }
        self.connect(unread, last_seq);
    }

    fn server(&mut self, mut frame: Value) {
        frame["timestamp"] = json!("2026-11-22T10:00:00.000Z");
        self.session.handle_frame(self.now, &frame.to_string());
    }

    fn subscribed(&mut self, id: &Value, last_seq: u64, recovered: bool) {
        self.server(json!({"type": "topic.subscribed", "id": id,
            "data": {"topic": "orders:1", "lastSeq": last_seq, "recovered": recovered}}));
    }

    fn event(&mut self, seq: u64) {
        self.server(json!({"type": "topic.event", "data": {"topic": "orders:1", "seq": seq,
            "event": "order.status", "data": {"n": seq}, "publishedAt": "2026-11-22T10:00:00.000Z"}}));
    }

    fn notification(&mut self, seq: u64) {
        self.server(json!({"type": "notification", "data": {"id": format!("n{seq}"), "seq": seq,
            "kind": "order.shipped", "title": "T", "body": "", "createdAt": "2026-11-22T10:00:00.000Z"}}));
    }

    fn transmits(&mut self) -> Vec<Value> {
        std::iter::from_fn(|| self.session.poll_transmit()).map(|t| serde_json::from_str(&t).expect("JSON")).collect()
    }

    /// The seqs of the topic events and notifications handed to the application.
    fn handed_on(&mut self) -> (Vec<u64>, Vec<u64>) {
        let (mut events, mut notifications) = (Vec::new(), Vec::new());
        while let Some(event) = self.session.poll_event() {
            let Event::Message(envelope) = event else { continue };
            match envelope.message {
                ServerMessage::TopicEvent(e) => events.push(e.seq.get()),
                ServerMessage::Notification(n) => notifications.push(n.seq.get()),
                _ => {}
            }
        }
        (events, notifications)
    }
}

fn orders() -> TopicName {
    TopicName::new("orders:1").expect("topic")
}

fn subscribe_of(frames: &[Value]) -> &Value {
    frames.iter().find(|f| f["type"] == "topic.subscribe").expect("a topic.subscribe")
}

#[test]
fn a_topic_resumes_after_every_reconnect_from_the_last_event_handed_on() {
    let mut live = Live::new();
    live.connect(0, 0);
    live.session.subscribe(live.now, &orders()).expect("queued");
    let sent = live.transmits();
    let first = subscribe_of(&sent);
    assert_eq!(first["data"], json!({"topic": "orders:1"}), "the first subscription is live only");
    live.subscribed(&first["id"], 4, true);
    for seq in 5..=7 {
        live.event(seq);
    }
    assert_eq!(live.handed_on().0, [5, 6, 7]);

    // Down and up again: the topic is subscribed from 7, and the replay
    // overlapping what was handed on is not handed on twice.
    live.drop_and_reconnect(0, 0);
    let sent = live.transmits();
    let again = subscribe_of(&sent);
    assert_eq!(again["data"], json!({"topic": "orders:1", "afterSeq": 7}));
    live.subscribed(&again["id"], 9, true);
    for seq in [6, 7, 8, 9, 10] {
        live.event(seq);
    }
    assert_eq!(live.handed_on().0, [8, 9, 10]);
    assert_eq!(live.session.topics().collect::<Vec<_>>(), [(&orders(), Some(10))]);

    // Twice more, with nothing in between: still from 10.
    for _ in 0..2 {
        live.drop_and_reconnect(0, 0);
        let sent = live.transmits();
        assert_eq!(subscribe_of(&sent)["data"]["afterSeq"], 10);
    }
}

#[test]
fn a_skipped_seq_is_held_back_and_the_topic_is_read_again_from_the_last_one() {
    let mut live = Live::new();
    live.connect(0, 0);
    live.session.subscribe(live.now, &orders()).expect("queued");
    let sent = live.transmits();
    live.subscribed(&subscribe_of(&sent)["id"], 0, true);
    live.event(1);
    live.event(3);
    live.event(4);
    assert_eq!(live.handed_on().0, [1], "3 and 4 wait: 2 is missing");
    let sent = live.transmits();
    let again = subscribe_of(&sent);
    assert_eq!(again["data"]["afterSeq"], 1);
    assert_eq!(
        sent.iter().filter(|f| f["type"] == "topic.subscribe").count(),
        1,
        "one resubscription, not one per event"
    );
    live.subscribed(&again["id"], 4, true);
    for seq in 2..=4 {
        live.event(seq);
    }
    assert_eq!(live.handed_on().0, [2, 3, 4]);
}

#[test]
fn history_that_no_longer_reaches_back_hands_on_what_the_server_kept_without_subscribing_again() {
    // SPEC §11: `recovered: false`, then the events still stored with
    // `seq > afterSeq`; the gap is the server's answer, not a lost frame.
    let mut live = Live::new();
    live.connect(0, 0);
    live.session.subscribe(live.now, &orders()).expect("queued");
    let sent = live.transmits();
    live.subscribed(&subscribe_of(&sent)["id"], 4, true);
    live.event(5);
    assert_eq!(live.handed_on().0, [5]);

    live.drop_and_reconnect(0, 0);
    let sent = live.transmits();
    let again = subscribe_of(&sent);
    assert_eq!(again["data"]["afterSeq"], 5);
    live.subscribed(&again["id"], 20, false);
    for seq in 15..=21 {
        live.event(seq);
    }
    assert_eq!(live.handed_on().0, (15..=21).collect::<Vec<_>>());
    assert!(live.transmits().iter().all(|f| f["type"] != "topic.subscribe"), "the topic is not subscribed again");

    // Nothing kept at all: the next live event is handed on too, and a gap
    // after it is a lost frame again.
    live.drop_and_reconnect(0, 0);
    let sent = live.transmits();
    live.subscribed(&subscribe_of(&sent)["id"], 40, false);
    live.event(41);
    live.event(43);
    assert_eq!(live.handed_on().0, [41]);
    assert_eq!(subscribe_of(&live.transmits())["data"]["afterSeq"], 41);
}

#[test]
fn an_unsubscribed_or_refused_topic_is_not_subscribed_again() {
    let mut live = Live::new();
    live.connect(0, 0);
    live.session.subscribe(live.now, &orders()).expect("queued");
    let support = TopicName::new("support:stats").expect("topic");
    live.session.subscribe(live.now, &support).expect("queued");
    let sent = live.transmits();
    let refused = sent.iter().find(|f| f["data"]["topic"] == "support:stats").expect("sent");
    live.server(json!({"type": "error", "id": refused["id"], "data": {"code": "forbidden",
        "message": "not granted", "refId": refused["id"]}}));
    live.session.unsubscribe(live.now, &orders()).expect("queued");
    assert_eq!(live.transmits().iter().map(|f| f["type"].clone()).collect::<Vec<_>>(), [json!("topic.unsubscribe")]);
    live.drop_and_reconnect(0, 0);
    assert!(live.transmits().iter().all(|f| f["type"] != "topic.subscribe"));
    assert_eq!(live.session.topics().count(), 0);
}

#[test]
fn notifications_are_handed_on_once_whatever_the_server_replays() {
    let mut live = Live::new();
    // Two read before this session, three unread: the server replays 3, 4, 5.
    live.connect(3, 5);
    assert_eq!(live.session.notification_status(), NotificationStatus { last_seq: 5, read_seq: 2 });
    for seq in [3, 4, 5] {
        live.notification(seq);
    }
    live.notification(6);
    assert_eq!(live.handed_on().1, [3, 4, 5, 6]);

    // Reconnected with 3..6 still unread: the replay is not handed on again.
    live.drop_and_reconnect(4, 6);
    for seq in [3, 4, 5, 6] {
        live.notification(seq);
    }
    live.notification(7);
    // One published twice at a connect (the server's window) and one out of order.
    live.notification(9);
    live.notification(7);
    live.notification(8);
    assert_eq!(live.handed_on().1, [7, 9, 8]);

    // Read on another device: the status follows, and read ones never come back.
    live.server(json!({"type": "notification.read", "data": {"upToSeq": 9}}));
    assert_eq!(live.session.notification_status().unread(), 0);
    live.drop_and_reconnect(0, 9);
    live.notification(9);
    assert!(live.handed_on().1.is_empty());

    // Marked read here: sent, and counted at once.
    live.notification(10);
    live.session.mark_notifications_read(live.now, Seq::new(10).expect("seq")).expect("queued");
    let sent = live.transmits();
    assert!(sent.iter().any(|f| f["type"] == "notification.read" && f["data"]["upToSeq"] == 10), "{sent:?}");
    assert_eq!(live.session.notification_status(), NotificationStatus { last_seq: 10, read_seq: 10 });
}
