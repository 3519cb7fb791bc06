//! SPEC §7: the HTTP routes around the socket.

mod common;

use common::{TestServer, chat, http};
use petchat_protocol::{HistoryPage, Role};
use serde_json::Value;

#[tokio::test]
async fn health_and_readiness_answer() {
    let server = TestServer::start().await;
    assert_eq!(http(&server, "/healthz", None).await, (200, "ok\n".into()));
    assert_eq!(http(&server, "/readyz", None).await, (200, "ready\n".into()));
}

#[tokio::test]
async fn the_contract_is_served_as_committed() {
    let server = TestServer::start().await;
    let (status, yaml) = http(&server, "/asyncapi.yaml", None).await;
    assert_eq!(status, 200);
    assert_eq!(yaml, include_str!("../../../schemas/asyncapi.yaml"));
    let (status, schema) = http(&server, "/schemas/client-message.schema.json", None).await;
    assert_eq!(status, 200);
    let schema: Value = serde_json::from_str(&schema).expect("JSON");
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(http(&server, "/schemas/server/chat.message.schema.json", None).await.0, 200);
    assert_eq!(http(&server, "/schemas/nope.json", None).await.0, 404);
}

#[tokio::test]
async fn metrics_count_connections_messages_errors_closes_and_store_latency() {
    let server = TestServer::start().await;
    let (mut customer, _agent, id) = server.pair("cust-1", "agent-1").await;
    customer.send(chat(&id, "hello")).await;
    customer.recv_until("chat.ack").await;
    customer.send_text("not json").await;
    customer.recv_until("error").await;
    let mut gone = server.connect("cust-2", Role::Customer).await;
    gone.send_text(&"x".repeat(70_000)).await;
    gone.expect_close().await;
    let (status, text) = http(&server, "/metrics", None).await;
    assert_eq!(status, 200);
    for needle in [
        "petchat_connections",
        "petchat_messages_in_total{type=\"chat.send\"}",
        "petchat_messages_out_total{type=\"chat.message\"}",
        "petchat_messages_out_total{type=\"chat.ack\"}",
        "petchat_errors_total{code=\"invalid_json\"}",
        "petchat_closes_total{code=\"1009\"}",
        "petchat_store_commit_seconds_bucket{le=\"0.0005\"}",
        // Batch sizes have count buckets, not the seconds of the latencies.
        "petchat_store_commit_writes_bucket{le=\"200\"}",
    ] {
        assert!(text.contains(needle), "/metrics lacks {needle}:\n{text}");
    }
}

#[tokio::test]
async fn history_pages_through_a_conversation_for_its_members_only() {
    let server = TestServer::start().await;
    let (mut customer, _agent, id) = server.pair("cust-1", "agent-1").await;
    for n in 1..=5 {
        customer.send(chat(&id, &format!("m{n}"))).await;
        customer.recv_until("chat.ack").await;
    }
    let path = format!("/v1/conversations/{id}/messages?afterSeq=1&limit=2");
    let (status, body) = http(&server, &path, Some(&server.token("cust-1", Role::Customer))).await;
    assert_eq!(status, 200, "{body}");
    let page: HistoryPage = serde_json::from_str(&body).expect("a history page");
    assert_eq!(page.messages.iter().map(|m| m.seq.get()).collect::<Vec<_>>(), [2, 3]);
    assert!(page.has_more);
    let (_, body) = http(
        &server,
        &format!("/v1/conversations/{id}/messages?afterSeq=3"),
        Some(&server.token("agent-1", Role::Agent)),
    )
    .await;
    let page: HistoryPage = serde_json::from_str(&body).expect("a history page");
    assert_eq!((page.messages.len(), page.has_more), (2, false));

    assert_eq!(http(&server, &path, None).await.0, 401);
    assert_eq!(http(&server, &path, Some("garbage")).await.0, 401);
    assert_eq!(http(&server, &path, Some(&server.token("cust-2", Role::Customer))).await.0, 403);
    assert_eq!(http(&server, &path, Some(&server.token("agent-2", Role::Agent))).await.0, 403);
    let unknown = "/v1/conversations/nope/messages";
    assert_eq!(http(&server, unknown, Some(&server.token("cust-1", Role::Customer))).await.0, 404);
    let bad = format!("/v1/conversations/{id}/messages?afterSeq=minus");
    assert_eq!(http(&server, &bad, Some(&server.token("cust-1", Role::Customer))).await.0, 400);
}

#[tokio::test]
async fn dev_tokens_exist_in_dev_mode_only() {
    let server = TestServer::start().await;
    assert_eq!(http(&server, "/dev/token?role=customer&sub=c-1", None).await.0, 404);
    let dev = TestServer::start_with(|c| c.dev = true).await;
    let (status, token) = http(&dev, "/dev/token?role=agent&sub=agent-7", None).await;
    assert_eq!(status, 200);
    let claims = dev.keys.verify(&token).expect("a token the server accepts");
    assert_eq!((claims.sub.as_str(), claims.role), ("agent-7", Role::Agent));
    assert_eq!(http(&dev, "/dev/token?role=admin&sub=x", None).await.0, 400);
}

#[tokio::test]
async fn the_pages_are_served_from_the_web_dir() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("index.html"), "<h1>customer</h1>").expect("write");
    std::fs::write(dir.path().join("agent.html"), "<h1>agent</h1>").expect("write");
    std::fs::write(dir.path().join("app.js"), "// app").expect("write");
    let web_dir = dir.path().to_path_buf();
    let server = TestServer::start_with(move |c| c.web_dir = web_dir).await;
    assert_eq!(http(&server, "/", None).await, (200, "<h1>customer</h1>".into()));
    assert_eq!(http(&server, "/agent", None).await, (200, "<h1>agent</h1>".into()));
    assert_eq!(http(&server, "/app.js", None).await, (200, "// app".into()));
    let empty = TestServer::start_with(|c| c.web_dir = "/nonexistent".into()).await;
    let (status, body) = http(&empty, "/", None).await;
    assert_eq!(status, 404);
    assert!(body.contains("cargo xtask web"), "{body}");
}
