//! SPEC §7: the HTTP routes around the socket.

mod common;

use common::{TestServer, chat, http, http_with};
use petchat_protocol::{HistoryPage, Role};
use serde_json::Value;

#[tokio::test]
async fn health_and_readiness_answer() {
    let server = TestServer::start().await;
    assert_eq!(http(&server, "/healthz", None).await, (200, "ok\n".into()));
    assert_eq!(http(&server, "/readyz", None).await, (200, "ready\nstore: ok\n".into()));
}

#[tokio::test]
async fn the_contract_is_served_as_committed() {
    let server = TestServer::start().await;
    let (status, yaml) = http(&server, "/asyncapi.yaml", None).await;
    assert_eq!(status, 200);
    // As committed, but naming the server it was fetched from.
    let committed = include_str!("../../../schemas/asyncapi.yaml");
    assert!(committed.contains("host: \"127.0.0.1:8080\""));
    let expected = committed.replacen("host: \"127.0.0.1:8080\"", &format!("host: \"{}\"", server.addr), 1);
    assert_eq!(yaml, expected);
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

#[tokio::test]
async fn the_asyncapi_document_names_the_host_it_was_fetched_from_and_nothing_else() {
    let server = TestServer::start().await;
    let (_, _, yaml) = http_with(&server, "/asyncapi.yaml", &[("Host", "chat.petstore.example:443")]).await;
    let yaml = String::from_utf8(yaml).expect("UTF-8");
    assert!(yaml.contains("host: \"chat.petstore.example:443\""), "{}", &yaml[..400]);
    // A Host that could break out of the YAML string is not echoed.
    let (_, _, yaml) = http_with(&server, "/asyncapi.yaml", &[("Host", "x\"\\n  evil")]).await;
    let yaml = String::from_utf8(yaml).expect("UTF-8");
    assert!(!yaml.contains("evil") && yaml.contains("host: \"127.0.0.1:8080\""));
}

#[tokio::test]
async fn history_limit_zero_returns_no_messages_but_says_whether_there_are_any() {
    let server = TestServer::start().await;
    let (mut customer, _agent, id) = server.pair("cust-1", "agent-1").await;
    customer.send(chat(&id, "one")).await;
    customer.recv_until("chat.ack").await;
    let token = server.token("cust-1", Role::Customer);
    let (status, body) = http(&server, &format!("/v1/conversations/{id}/messages?limit=0"), Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    let page: HistoryPage = serde_json::from_str(&body).expect("a history page");
    assert_eq!((page.messages.len(), page.has_more), (0, true));
    let (_, body) = http(&server, &format!("/v1/conversations/{id}/messages?afterSeq=1&limit=0"), Some(&token)).await;
    let page: HistoryPage = serde_json::from_str(&body).expect("a history page");
    assert_eq!((page.messages.len(), page.has_more), (0, false));
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let server = TestServer::start().await;
    let (mut customer, _agent, id) = server.pair("cust-1", "agent-1").await;
    customer.send(chat(&id, "one")).await;
    customer.recv_until("chat.ack").await;
    let token = server.token("cust-1", Role::Customer);
    let path = format!("/v1/conversations/{id}/messages");
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let header = format!("{scheme} {token}");
        let (status, head, _) = http_with(&server, &path, &[("Host", "x"), ("Authorization", &header)]).await;
        assert_eq!(status, 200, "{scheme}: {head}");
    }
    let (status, _, _) =
        http_with(&server, &path, &[("Host", "x"), ("Authorization", &format!("Basic {token}"))]).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_history_page_stops_at_its_byte_budget() {
    let server = TestServer::start_with(|c| c.limits.messages_per_second = 10_000).await;
    let (mut customer, _agent, id) = server.pair("cust-1", "agent-1").await;
    // 80 messages of 16 KB: 1.3 MB, more than one page may hold.
    let paws = "🐾".repeat(4000);
    for _ in 0..80 {
        customer.send(chat(&id, &paws)).await;
    }
    let mut acked = 0;
    while acked < 80 {
        if customer.recv().await["type"] == "chat.ack" {
            acked += 1;
        }
    }
    let token = server.token("cust-1", Role::Customer);
    let (status, body) = http(&server, &format!("/v1/conversations/{id}/messages?limit=500"), Some(&token)).await;
    assert_eq!(status, 200);
    assert!(body.len() <= petchat_protocol::limits::MAX_HISTORY_PAGE_BYTES + 1024, "{} bytes", body.len());
    let page: HistoryPage = serde_json::from_str(&body).expect("a history page");
    assert!(page.has_more && page.messages.len() < 80 && !page.messages.is_empty(), "{}", page.messages.len());
    // The next page goes on where this one stopped.
    let last = page.messages.last().expect("a message").seq.get();
    let (_, body) =
        http(&server, &format!("/v1/conversations/{id}/messages?afterSeq={last}&limit=500"), Some(&token)).await;
    let next: HistoryPage = serde_json::from_str(&body).expect("a history page");
    assert_eq!(next.messages.first().map(|m| m.seq.get()), Some(last + 1));
}

#[tokio::test]
async fn a_path_segment_too_long_for_a_file_name_is_404_not_500() {
    let dir = tempfile::tempdir().expect("dir");
    let web_dir = dir.path().to_path_buf();
    let server = TestServer::start_with(move |c| c.web_dir = web_dir).await;
    for path in
        [format!("/{}", "a".repeat(256)), format!("/{}", "a/".repeat(3000)), format!("/x/{}.js", "b".repeat(300))]
    {
        assert_eq!(http(&server, &path, None).await.0, 404, "{} bytes", path.len());
    }
}

#[tokio::test]
async fn the_package_is_served_gzip_encoded_to_browsers_that_accept_it() {
    let dir = tempfile::tempdir().expect("dir");
    let wasm: Vec<u8> = (0..100_000u32).map(|n| (n % 7) as u8).collect();
    std::fs::write(dir.path().join("app.wasm"), &wasm).expect("write");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, &wasm).expect("gzip");
    let gz = gz.finish().expect("gzip");
    std::fs::write(dir.path().join("app.wasm.gz"), &gz).expect("write");
    let web_dir = dir.path().to_path_buf();
    let server = TestServer::start_with(move |c| c.web_dir = web_dir).await;
    let (status, head, body) = http_with(&server, "/app.wasm", &[("Host", "x"), ("Accept-Encoding", "gzip, br")]).await;
    assert_eq!(status, 200);
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(head.contains("content-type: application/wasm"), "{head}");
    assert_eq!(body, gz);
    // Without Accept-Encoding, the file as it is.
    let (_, head, body) = http_with(&server, "/app.wasm", &[("Host", "x")]).await;
    assert!(!head.to_ascii_lowercase().contains("content-encoding"), "{head}");
    assert_eq!(body, wasm);
}

#[tokio::test]
async fn the_widget_and_the_package_answer_other_origins_and_the_pages_do_not() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::create_dir(dir.path().join("pkg")).expect("mkdir");
    std::fs::write(dir.path().join("widget.js"), "// widget").expect("write");
    std::fs::write(dir.path().join("pkg/petchat_web.js"), "// glue").expect("write");
    std::fs::write(dir.path().join("pkg/petchat_web_bg.wasm"), b"\0asm").expect("write");
    std::fs::write(dir.path().join("app.js"), "// app").expect("write");
    std::fs::write(dir.path().join("index.html"), "<h1>demo</h1>").expect("write");
    let web_dir = dir.path().to_path_buf();
    let server = TestServer::start_with(move |c| c.web_dir = web_dir).await;
    let shop = [("Host", "x"), ("Origin", "https://shop.example")];
    for path in ["/widget.js", "/pkg/petchat_web.js", "/pkg/petchat_web_bg.wasm"] {
        let (status, head, _) = http_with(&server, path, &shop).await;
        assert_eq!(status, 200, "{path}");
        assert!(head.to_ascii_lowercase().contains("access-control-allow-origin: *"), "{path}: {head}");
    }
    // The pages and a missing package file are not shared.
    for (path, expected) in [("/app.js", 200), ("/", 200), ("/pkg/missing.js", 404)] {
        let (status, head, _) = http_with(&server, path, &shop).await;
        assert_eq!(status, expected, "{path}");
        assert!(!head.to_ascii_lowercase().contains("access-control-allow-origin"), "{path}: {head}");
    }
}

#[tokio::test]
async fn the_conversation_routes_answer_the_allowed_origins_preflights_and_no_others() {
    let server = TestServer::start_with(|c| c.allowed_origins = vec!["https://shop.example".into()]).await;
    let preflight = |origin: &str| {
        format!(
            "OPTIONS /v1/conversations/c1/attachments?name=a.png HTTP/1.1\r\nHost: chat.example\r\nOrigin: {origin}\r\n\
             Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization, content-type\r\n\
             Connection: close\r\n\r\n"
        )
    };
    let (status, head) = raw(&server, &preflight("https://shop.example")).await;
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("access-control-allow-origin: https://shop.example"), "{head}");
    assert!(head.contains("access-control-allow-methods: get,post"), "{head}");
    assert!(head.contains("access-control-allow-headers: authorization,content-type"), "{head}");
    assert!(!head.contains("access-control-allow-credentials"), "{head}");
    // Another origin gets no CORS headers, so its page cannot call or read these routes.
    let (_, head) = raw(&server, &preflight("https://evil.example")).await;
    assert!(!head.contains("access-control-allow-origin"), "{head}");
    // A request of the allowed origin: its page may read the answer, a refusal included.
    let (status, head, _) = http_with(
        &server,
        "/v1/conversations/c1/messages",
        &[("Host", "chat.example"), ("Origin", "https://shop.example")],
    )
    .await;
    assert_eq!(status, 401);
    let head = head.to_ascii_lowercase();
    assert!(head.contains("access-control-allow-origin: https://shop.example"), "{head}");
    assert!(head.contains("vary: origin"), "{head}");
    // Other routes are not shared.
    let (_, head, _) =
        http_with(&server, "/healthz", &[("Host", "chat.example"), ("Origin", "https://shop.example")]).await;
    assert!(!head.to_ascii_lowercase().contains("access-control-allow-origin"), "{head}");
}

/// Sends a raw HTTP/1.1 request; returns the status and the head, lowercased.
async fn raw(server: &TestServer, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("a response in time")
        .expect("read");
    let head = String::from_utf8_lossy(&response).split("\r\n\r\n").next().unwrap_or_default().to_ascii_lowercase();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    (status, head)
}

#[tokio::test]
async fn a_display_name_is_cut_to_its_limit() {
    let server = TestServer::start().await;
    let long = "N".repeat(5_000);
    let token = server.keys.mint(
        &petchat_protocol::UserId::new("cust-long").expect("id"),
        Role::Customer,
        &long,
        std::time::Duration::from_secs(60),
    );
    let mut client = server.connect_raw(&format!("{}?token={token}", server.url()), &["petchat.v1"], None).await;
    let ready = client.recv_type("session.ready").await;
    let name = ready["data"]["user"]["name"].as_str().expect("a name");
    assert_eq!(name.chars().count(), petchat_protocol::limits::MAX_NAME_CHARS);
}
