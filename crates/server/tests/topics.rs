//! Topics (SPEC §11), notifications (SPEC §12) and the server API that
//! publishes both (SPEC §13), over real sockets and real HTTP.

mod common;

use common::TestServer;
use petchat_protocol::Role;
use serde_json::{Value, json};

const KEY: &str = "backend-key";

async fn server() -> TestServer {
    TestServer::start_with(|config| {
        config.api_keys = vec![KEY.into()];
        config.topics.public_topics = vec!["pets:*".parse().expect("pattern")];
        config.topics.topic_history = 3;
    })
    .await
}

async fn post(server: &TestServer, path: &str, key: Option<&str>, body: &str) -> (u16, Value) {
    common::http_post(server, path, key, body).await
}

async fn publish(server: &TestServer, topic: &str, event: &str, n: u64) -> u64 {
    let body = json!({"topic": topic, "event": event, "data": {"n": n}}).to_string();
    let (status, answer) = post(server, "/v1/api/publish", Some(KEY), &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["topic"], topic);
    answer["seq"].as_u64().expect("a seq")
}

fn subscribe(topic: &str, after: Option<u64>) -> Value {
    match after {
        Some(after) => json!({"type": "topic.subscribe", "id": "s1", "data": {"topic": topic, "afterSeq": after}}),
        None => json!({"type": "topic.subscribe", "id": "s1", "data": {"topic": topic}}),
    }
}

#[tokio::test]
async fn a_published_event_reaches_every_subscriber_once_stored_and_a_late_one_replays_what_is_kept() {
    let server = server().await;
    let mut alice = server.connect("alice", Role::Customer).await;
    let mut bob = server.connect("bob", Role::Customer).await;
    for client in [&mut alice, &mut bob] {
        client.send(subscribe("pets:42", None)).await;
        let subscribed = client.recv_type("topic.subscribed").await;
        assert_eq!(subscribed["id"], "s1");
        assert_eq!(subscribed["data"], json!({"topic": "pets:42", "lastSeq": 0, "recovered": true}));
    }
    for n in 1..=5 {
        assert_eq!(publish(&server, "pets:42", "pet.available", n).await, n);
    }
    for client in [&mut alice, &mut bob] {
        for n in 1..=5 {
            let event = client.recv_type("topic.event").await;
            assert_eq!(event["data"]["seq"], n);
            assert_eq!(event["data"]["event"], "pet.available");
            assert_eq!(event["data"]["data"], json!({"n": n}));
        }
    }
    // History keeps the last 3: resuming after 3 is whole, after 1 is not.
    let mut late = server.connect("carol", Role::Customer).await;
    late.send(subscribe("pets:42", Some(3))).await;
    assert_eq!(late.recv_type("topic.subscribed").await["data"]["recovered"], true);
    let seqs = [late.recv_type("topic.event").await["data"]["seq"].clone(), late.recv().await["data"]["seq"].clone()];
    assert_eq!(seqs, [json!(4), json!(5)]);
    late.send(json!({"type": "topic.unsubscribe", "id": "u1", "data": {"topic": "pets:42"}})).await;
    assert_eq!(late.recv_type("topic.unsubscribed").await["id"], "u1");
    late.send(subscribe("pets:42", Some(1))).await;
    let subscribed = late.recv_type("topic.subscribed").await;
    assert_eq!(subscribed["data"], json!({"topic": "pets:42", "lastSeq": 5, "recovered": false}));
    for n in 3..=5 {
        assert_eq!(late.recv().await["data"]["seq"], n, "the kept events are still replayed");
    }
    // Unsubscribed connections hear nothing more.
    alice.send(json!({"type": "topic.unsubscribe", "data": {"topic": "pets:42"}})).await;
    alice.recv_type("topic.unsubscribed").await;
    publish(&server, "pets:42", "pet.sold", 6).await;
    assert_eq!(bob.recv_type("topic.event").await["data"]["seq"], 6);
    assert_eq!(late.recv_type("topic.event").await["data"]["seq"], 6);
    alice.expect_silence(std::time::Duration::from_millis(300)).await;
}

#[tokio::test]
async fn topics_are_granted_by_the_token_claim_the_public_list_or_the_agent_list() {
    let server = server().await;
    let mut customer = server.connect("cust-1", Role::Customer).await;
    customer.send(subscribe("orders:1234", None)).await;
    let refused = customer.recv_type("error").await;
    assert_eq!((refused["data"]["code"].clone(), refused["data"]["refId"].clone()), (json!("forbidden"), json!("s1")));
    customer.send(subscribe("support:stats", None)).await;
    assert_eq!(customer.recv_type("error").await["data"]["code"], "forbidden");
    customer.send(subscribe("Orders:1", None)).await;
    assert_eq!(customer.recv_type("error").await["data"]["code"], "invalid_message");

    let mut agent = server.connect("agent-1", Role::Agent).await;
    agent.send(subscribe("support:stats", None)).await;
    agent.recv_type("topic.subscribed").await;

    // A token whose `topics` claim grants the order.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let token = server.keys.mint_claims(&petchat_protocol::token::Claims {
        sub: petchat_protocol::UserId::new("cust-2").expect("id"),
        role: Role::Customer,
        name: "C".into(),
        exp: now + 600,
        iat: None,
        nbf: None,
        topics: Some(vec!["orders:12*".parse().expect("pattern")]),
    });
    let mut granted = server.connect_raw(&format!("{}?token={token}", server.url()), &["petchat.v1"], None).await;
    granted.recv_type("session.ready").await;
    granted.send(subscribe("orders:1234", None)).await;
    granted.recv_type("topic.subscribed").await;
}

#[tokio::test]
async fn a_connection_holds_at_most_a_hundred_topics() {
    let server = TestServer::start_with(|config| {
        config.topics.public_topics = vec!["pets:*".parse().expect("pattern")];
        config.limits.messages_per_second = 1_000;
    })
    .await;
    let mut client = server.connect("cust-1", Role::Customer).await;
    for n in 0..100 {
        client.send(subscribe(&format!("pets:{n}"), None)).await;
        client.recv_type("topic.subscribed").await;
    }
    client.send(subscribe("pets:100", None)).await;
    assert_eq!(client.recv_type("error").await["data"]["code"], "limit_reached");
    client.send(subscribe("pets:7", Some(0))).await;
    client.recv_type("topic.subscribed").await;
}

#[tokio::test]
async fn a_notification_reaches_every_connection_of_its_user_and_is_read_on_all_of_them() {
    let server = server().await;
    let (mut laptop, ready) = server.connect_ready("cust-1", Role::Customer).await;
    assert_eq!(ready["data"]["notifications"], json!({"unread": 0, "lastSeq": 0}));
    let mut phone = server.connect("cust-1", Role::Customer).await;
    let mut other = server.connect("cust-2", Role::Customer).await;
    let body = json!({"userId": "cust-1", "kind": "order.shipped", "title": "Shipped", "body": "On its way",
        "link": "/orders/1", "idempotencyKey": "ship-1"})
    .to_string();
    let (status, answer) = post(&server, "/v1/api/notify", Some(KEY), &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["userId"].clone(), answer["seq"].clone()), (json!("cust-1"), json!(1)));
    // A retry with the same key is the same notification.
    let (status, again) = post(&server, "/v1/api/notify", Some(KEY), &body).await;
    assert_eq!((status, again.clone()), (200, answer.clone()));
    for client in [&mut laptop, &mut phone] {
        let notification = client.recv_type("notification").await;
        assert_eq!(notification["data"]["id"], answer["id"]);
        assert_eq!(notification["data"]["title"], "Shipped");
        assert_eq!(notification["data"]["link"], "/orders/1");
    }
    other.expect_silence(std::time::Duration::from_millis(200)).await;
    laptop.expect_silence(std::time::Duration::from_millis(200)).await;

    // Unread ones come again to a new connection, after session.ready.
    let (mut tablet, ready) = server.connect_ready("cust-1", Role::Customer).await;
    assert_eq!(ready["data"]["notifications"], json!({"unread": 1, "lastSeq": 1}));
    assert_eq!(tablet.recv().await["data"]["id"], answer["id"]);

    phone.send(json!({"type": "notification.read", "id": "r1", "data": {"upToSeq": 1}})).await;
    let read = phone.recv_type("notification.read").await;
    assert_eq!((read["id"].clone(), read["data"].clone()), (json!("r1"), json!({"upToSeq": 1})));
    for client in [&mut laptop, &mut tablet] {
        assert_eq!(client.recv_type("notification.read").await["data"]["upToSeq"], 1);
    }
    let (_, ready) = server.connect_ready("cust-1", Role::Customer).await;
    assert_eq!(ready["data"]["notifications"], json!({"unread": 0, "lastSeq": 1}));
}

#[tokio::test]
async fn the_server_api_refuses_what_it_cannot_take_with_the_specified_status() {
    let server = server().await;
    let good = json!({"topic": "pets:1", "event": "pet.available", "data": {}}).to_string();
    let (status, answer) = post(&server, "/v1/api/publish", None, &good).await;
    assert_eq!((status, answer["error"]["code"].clone()), (401, json!("unauthorized")));
    let (status, _) = post(&server, "/v1/api/publish", Some("wrong"), &good).await;
    assert_eq!(status, 401);
    let cases = [
        ("{not json", 400, "invalid_request"),
        (r#"{"topic": "pets", "event": "e", "data": {}}"#, 400, "invalid_request"),
        (r#"{"topic": "pets:1", "event": "e", "data": []}"#, 400, "invalid_request"),
        (r#"{"topic": "pets:1", "event": "e", "data": {}, "extra": 1}"#, 400, "invalid_request"),
    ];
    for (body, expected, code) in cases {
        let (status, answer) = post(&server, "/v1/api/publish", Some(KEY), body).await;
        assert_eq!((status, answer["error"]["code"].clone()), (expected, json!(code)), "{body}: {answer}");
    }
    let (_, answer) =
        post(&server, "/v1/api/publish", Some(KEY), r#"{"topic": "pets", "event": "e", "data": {}}"#).await;
    assert!(answer["error"]["message"].as_str().expect("a message").starts_with("topic"), "{answer}");
    let big = json!({"topic": "pets:1", "event": "e", "data": {"x": "y".repeat(20_000)}}).to_string();
    assert_eq!(post(&server, "/v1/api/publish", Some(KEY), &big).await.0, 413);
    let huge = json!({"topic": "pets:1", "event": "e", "data": {"x": "y".repeat(40_000)}}).to_string();
    assert_eq!(post(&server, "/v1/api/publish", Some(KEY), &huge).await.0, 413);

    let keyed =
        |data: u32| json!({"topic": "pets:1", "event": "e", "data": {"v": data}, "idempotencyKey": "k-1"}).to_string();
    let (_, first) = post(&server, "/v1/api/publish", Some(KEY), &keyed(1)).await;
    let (status, again) = post(&server, "/v1/api/publish", Some(KEY), &keyed(1)).await;
    assert_eq!((status, again["seq"].clone()), (200, first["seq"].clone()));
    let (status, conflict) = post(&server, "/v1/api/publish", Some(KEY), &keyed(2)).await;
    assert_eq!((status, conflict["error"]["code"].clone()), (409, json!("idempotency_conflict")));

    let (status, _) = post(&server, "/v1/api/nothing", Some(KEY), "{}").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn presence_counts_a_users_connections_and_a_stranger_is_offline() {
    let server = server().await;
    let _a = server.connect("cust-1", Role::Customer).await;
    let _b = server.connect("cust-1", Role::Customer).await;
    let (status, body) = common::http(&server, "/v1/api/presence/cust-1", Some(KEY)).await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(answer, json!({"userId": "cust-1", "online": true, "connections": 2}));
    let (_, body) = common::http(&server, "/v1/api/presence/never-seen", Some(KEY)).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON"),
        json!({"userId": "never-seen", "online": false, "connections": 0})
    );
    assert_eq!(common::http(&server, "/v1/api/presence/cust-1", None).await.0, 401);
}

#[tokio::test]
async fn stats_count_the_queue_the_agents_and_the_open_conversations_and_feed_the_dashboard_topic() {
    let server = TestServer::start_with(|config| {
        config.api_keys = vec![KEY.into()];
        config.limits.max_conversations_per_agent = 1;
        config.topics.support_stats_interval_ms = 50;
    })
    .await;
    let (_customer, mut agent, conversation) = server.pair("cust-1", "agent-1").await;
    let mut waiting = server.connect("cust-2", Role::Customer).await;
    waiting.send(json!({"type": "conversation.open", "data": {}})).await;
    waiting.recv_until("conversation.queued").await;
    agent.send(common::chat(&conversation, "Hello, how can I help?")).await;
    agent.recv_until("chat.ack").await;

    let (status, body) = common::http(&server, "/v1/api/stats", Some(KEY)).await;
    assert_eq!(status, 200, "{body}");
    let stats: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(stats["connections"], 3);
    assert_eq!(stats["queue"]["length"], 1);
    assert!(stats["queue"]["oldestWaitMs"].as_u64().is_some(), "{stats}");
    assert_eq!(stats["agents"], json!({"available": 0, "busy": 1}), "the agent is at its cap of 1");
    assert_eq!(stats["conversations"], json!({"open": 2}));
    assert_eq!(common::http(&server, "/v1/api/stats", None).await.0, 401);

    // The dashboard's topic, replayed from its first event: the latest one
    // has the same figures and the first response of the answered conversation.
    let mut dashboard = server.connect("agent-2", Role::Agent).await;
    let latest = loop {
        dashboard.send(subscribe("support:stats", Some(0))).await;
        let subscribed = dashboard.recv_type("topic.subscribed").await;
        let count = subscribed["data"]["lastSeq"].as_u64().expect("a seq");
        let mut events = Vec::new();
        for _ in 0..count.min(100) {
            events.push(dashboard.recv_type("topic.event").await);
        }
        dashboard.send(json!({"type": "topic.unsubscribe", "data": {"topic": "support:stats"}})).await;
        dashboard.recv_type("topic.unsubscribed").await;
        match events.pop() {
            Some(event) if event["data"]["data"]["firstResponse"]["conversations"] == 1 => break event,
            _ => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    };
    assert_eq!(latest["data"]["event"], "support.stats");
    let data = &latest["data"]["data"];
    assert_eq!((data["queue"]["length"].clone(), data["conversations"]["open"].clone()), (json!(1), json!(2)));
    assert!(data["firstResponse"]["medianMs"].as_u64().is_some(), "{data}");
}

#[test]
fn the_openapi_check_refuses_an_answer_the_document_does_not_describe() {
    let refused = |status, body: &'static str| {
        std::panic::catch_unwind(|| common::openapi::check("POST", "/v1/api/publish", status, body)).is_err()
    };
    assert!(refused(200, "{}"), "a body without its required fields");
    assert!(refused(418, "{}"), "a status the operation does not list");
    assert!(refused(401, r#"{"error": {"code": "nope", "message": ""}}"#), "an unknown error code");
    assert!(!refused(200, r#"{"topic": "pets:1", "seq": 1}"#));
}

#[tokio::test]
async fn the_openapi_document_is_served_as_committed() {
    let server = server().await;
    let (status, body) = common::http(&server, "/openapi.json", None).await;
    assert_eq!(status, 200);
    let committed = include_str!("../../../schemas/openapi.json");
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON"),
        serde_json::from_str::<Value>(committed).expect("JSON")
    );
}
