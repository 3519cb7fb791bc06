//! Every bad input gets a defined answer, and the server keeps serving everyone else.

mod common;

use std::time::Duration;

use common::{Next, TestServer, chat, http_get, uuid};
use futures_util::SinkExt;
use petchat_protocol::Role;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// Each golden invalid frame, sent over a real socket, is answered with the
/// error code its file name gives, and the connection stays open.
#[tokio::test]
async fn every_invalid_golden_frame_gets_its_error_code_over_the_socket() {
    let server = TestServer::start_with(|c| c.limits.messages_per_second = 1_000).await;
    let mut client = server.connect("cust-1", Role::Customer).await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/examples/invalid");
    let mut files: Vec<_> = std::fs::read_dir(dir).expect("examples").map(|e| e.expect("entry").path()).collect();
    files.sort();
    assert!(files.len() > 20);
    for path in files {
        let name = path.file_name().expect("name").to_string_lossy().into_owned();
        let code = name.split_once("--").expect("<code>--<what>.json").0.to_owned();
        let text = std::fs::read_to_string(&path).expect("readable");
        client.send_text(text.trim_end()).await;
        let error = client.recv_type("error").await;
        assert_eq!(error["data"]["code"], code.as_str(), "{name}: {error}");
    }
    client.send(json!({"type": "ping", "id": "still-here", "data": {}})).await;
    assert_eq!(client.recv_type("pong").await["id"], "still-here");
}

#[tokio::test]
async fn errors_carry_the_ref_id_and_name_the_field() {
    let server = TestServer::start().await;
    let mut client = server.connect("cust-1", Role::Customer).await;
    client.send(json!({"type": "chat.send", "id": "r-9", "data": {"text": "hi"}})).await;
    let error = client.recv_type("error").await;
    assert_eq!(error["id"], "r-9");
    assert_eq!(error["data"]["refId"], "r-9");
    assert_eq!(error["data"]["code"], "invalid_message");
    assert!(error["data"]["message"].as_str().expect("message").contains("data.conversationId"), "{error}");
}

#[tokio::test]
async fn a_configured_text_limit_below_the_protocols_answers_text_too_long() {
    let server = TestServer::start_with(|c| c.limits.max_text_chars = 10).await;
    let (mut customer, _agent, id) = server.pair("cust-1", "agent-1").await;
    customer.send(chat(&id, "exactly 10")).await;
    customer.recv_until("chat.ack").await;
    customer.send(chat(&id, "eleven char")).await;
    assert_eq!(customer.recv_until("error").await["data"]["code"], "text_too_long");
    assert_eq!(server.connect_ready("cust-1", Role::Customer).await.1["data"]["limits"]["maxTextChars"], 10);
}

#[tokio::test]
async fn a_frame_over_the_size_limit_closes_with_1009_and_others_keep_working() {
    let server = TestServer::start_with(|c| c.limits.max_message_bytes = 4_096).await;
    let (mut customer, mut agent, id) = server.pair("cust-1", "agent-1").await;
    agent.recv_type("presence").await;
    let mut big = server.connect("cust-2", Role::Customer).await;
    big.send_text(&format!("{{\"type\":\"ping\",\"data\":{{}},\"pad\":\"{}\"}}", "x".repeat(5_000))).await;
    assert_eq!(big.expect_close().await.0, 1009);
    customer.send(chat(&id, "still fine")).await;
    customer.recv_until("chat.ack").await;
    assert_eq!(agent.recv_type("chat.message").await["data"]["text"], "still fine");
}

#[tokio::test]
async fn a_binary_frame_closes_with_1003() {
    let server = TestServer::start().await;
    let mut client = server.connect("cust-1", Role::Customer).await;
    client.ws.send(Message::Binary(vec![1, 2, 3].into())).await.expect("send");
    assert_eq!(client.expect_close().await.0, 1003);
}

#[tokio::test]
async fn flooding_is_refused_with_rate_limited_then_closed_with_4002() {
    let server = TestServer::start_with(|c| c.limits.messages_per_second = 5).await;
    let mut client = server.connect("cust-1", Role::Customer).await;
    for n in 0..40 {
        client
            .send(json!({"type": "conversation.leave", "id": format!("f{n}"), "data": {"conversationId": "c-1"}}))
            .await;
    }
    let mut limited = None;
    let close = loop {
        match client.next().await {
            Next::Frame(frame) if frame["data"]["code"] == "rate_limited" => limited = limited.or(Some(frame)),
            Next::Frame(frame) => panic!("unexpected {frame}"),
            Next::Closed(close) => break close.expect("a close frame"),
        }
    };
    let limited = limited.expect("a rate_limited error before the close");
    assert!(limited["data"]["retryAfterMs"].as_u64().expect("retryAfterMs") >= 1);
    assert!(limited["data"]["refId"].as_str().expect("refId").starts_with('f'));
    assert_eq!(close.0, 4002);
    assert!(petchat_protocol::close::retry_hint_ms(&close.1).is_some(), "{}", close.1);
    // Pings never count: a fresh connection can ping fast.
    let mut pinger = server.connect("cust-2", Role::Customer).await;
    for n in 0..50 {
        pinger.send(json!({"type": "ping", "id": format!("p{n}"), "data": {}})).await;
    }
    for n in 0..50 {
        assert_eq!(pinger.recv_type("pong").await["id"], format!("p{n}"));
    }
}

#[tokio::test]
async fn customers_and_agents_only_touch_their_own_conversations() {
    let server = TestServer::start().await;
    let (_customer, _agent, id) = server.pair("cust-1", "agent-1").await;
    let mut stranger = server.connect("cust-2", Role::Customer).await;
    for (kind, data) in [
        ("conversation.join", json!({"conversationId": id})),
        ("chat.send", json!({"conversationId": id, "clientMessageId": uuid(), "text": "hi"})),
        ("typing.start", json!({"conversationId": id})),
        ("conversation.close", json!({"conversationId": id})),
    ] {
        stranger.send(json!({"type": kind, "id": kind, "data": data})).await;
        let error = stranger.recv_type("error").await;
        assert_eq!((error["data"]["code"].as_str(), error["id"].as_str()), (Some("forbidden"), Some(kind)));
    }
    let mut other_agent = server.connect("agent-2", Role::Agent).await;
    other_agent.send(json!({"type": "conversation.join", "data": {"conversationId": id}})).await;
    assert_eq!(other_agent.recv_type("error").await["data"]["code"], "forbidden");
    other_agent.send(json!({"type": "conversation.open", "data": {}})).await;
    assert_eq!(other_agent.recv_type("error").await["data"]["code"], "forbidden");
    stranger.send(json!({"type": "agent.status", "data": {"available": true}})).await;
    assert_eq!(stranger.recv_type("error").await["data"]["code"], "forbidden");
    stranger.send(json!({"type": "conversation.join", "data": {"conversationId": "no-such"}})).await;
    assert_eq!(stranger.recv_type("error").await["data"]["code"], "not_found");
    stranger
        .send(
            json!({"type": "chat.send", "data": {"conversationId": "no-such", "clientMessageId": uuid(), "text": "x"}}),
        )
        .await;
    assert_eq!(stranger.recv_type("error").await["data"]["code"], "not_found");
}

#[tokio::test]
async fn a_receipt_beyond_the_last_message_is_invalid() {
    let server = TestServer::start().await;
    let (_customer, mut agent, id) = server.pair("cust-1", "agent-1").await;
    agent.send(json!({"type": "message.read", "id": "r", "data": {"conversationId": id, "upToSeq": 3}})).await;
    let error = agent.recv_until("error").await;
    assert_eq!((error["data"]["code"].as_str(), error["data"]["refId"].as_str()), (Some("invalid_message"), Some("r")));
}

#[tokio::test]
async fn a_silent_peer_is_closed_with_4000_after_two_heartbeat_intervals() {
    let server = TestServer::start_with(|c| c.limits.heartbeat_interval_ms = 100).await;
    let mut silent = server.connect("cust-1", Role::Customer).await;
    // Not reading means not answering pings.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(silent.expect_close().await.0, 4000);
}

#[tokio::test]
async fn a_peer_that_answers_pings_stays_connected() {
    let server = TestServer::start_with(|c| c.limits.heartbeat_interval_ms = 100).await;
    let mut alive = server.connect("cust-1", Role::Customer).await;
    // Reading answers the server's pings (tungstenite replies with pongs).
    alive.expect_silence(Duration::from_millis(600)).await;
    alive.send(json!({"type": "ping", "data": {}})).await;
    alive.recv_type("pong").await;
}

/// A reader that never reads fills its outbound queue and is cut off (4001);
/// the sender and the reader's other device keep working.
#[tokio::test]
async fn a_reader_that_never_reads_is_disconnected_and_others_keep_working() {
    let server = TestServer::start_with(|c| {
        c.limits.messages_per_second = 100_000;
        // Room for a round of 50 acks, far less than the slow reader's backlog.
        c.limits.outbound_queue = 64;
        c.limits.max_replay = 32;
    })
    .await;
    let (mut customer, agent, id) = server.pair("cust-1", "agent-1").await;
    // The agent's second device joins and reads; the first never reads again.
    let mut reader = server.connect("agent-1", Role::Agent).await;
    reader.send(json!({"type": "conversation.join", "data": {"conversationId": id}})).await;
    reader.recv_type("conversation.joined").await;
    let text = "x".repeat(3_900);
    let mut acked = 0;
    let mut slow = agent;
    let kicked = loop {
        for _ in 0..50 {
            customer.send(chat(&id, &text)).await;
        }
        for _ in 0..50 {
            customer.recv_until("chat.ack").await;
            acked += 1;
        }
        while let Ok(Some(Ok(_))) =
            tokio::time::timeout(Duration::from_millis(1), futures_util::StreamExt::next(&mut reader.ws)).await
        {
        }
        let metrics = http_get(&server, "/metrics").await;
        if metrics.contains("petchat_closes_total{code=\"4001\"}") {
            break true;
        }
        if acked >= 20_000 {
            break false;
        }
    };
    assert!(kicked, "the slow reader was never closed after {acked} messages");
    // The slow reader, once it reads, finds its connection ended.
    loop {
        match slow.next().await {
            Next::Frame(_) => continue,
            Next::Closed(close) => {
                if let Some((code, _)) = close {
                    assert_eq!(code, 4001);
                }
                break;
            }
        }
    }
    customer.send(chat(&id, "after")).await;
    customer.recv_until("chat.ack").await;
    loop {
        let message = reader.recv_until("chat.message").await;
        if message["data"]["text"] == "after" {
            break;
        }
    }
}
