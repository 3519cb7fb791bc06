//! Abuse of live updates (SPEC §11–§14): a subscriber that never reads, a
//! connection that churns through topics, streams that never read, and a
//! stranger at the server API. Each keeps the server process's memory
//! bounded (RSS from /proc) and the others served.

mod common;

use std::time::{Duration, Instant};

use common::process::ServerProcess;
use common::raw::{self, frame};
use common::{SECRET, TestDatabase, TestServer, WAIT, http_post};
use petchat_protocol::Role;
use serde_json::json;
use tokio::io::AsyncWriteExt;

const KEY: &str = "abuse-key";

async fn server_process(flags: &[&str]) -> (TestDatabase, ServerProcess) {
    let database = TestDatabase::new().await;
    let mut all = vec!["--api-keys", KEY, "--public-topics", "pets:*"];
    all.extend_from_slice(flags);
    let process = ServerProcess::start(&database.url, SECRET, &all, "warn,petchat_server=info").await;
    (database, process)
}

/// POSTs `body` to /v1/api/publish, tolerating a server that stops reading
/// it; returns the status of the answer.
async fn post_raw(server: &TestServer, key: Option<&str>, body: &str) -> u16 {
    use tokio::io::AsyncReadExt;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.expect("connect");
    let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    let head = format!(
        "POST /v1/api/publish HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write the head");
    let _ = tokio::time::timeout(WAIT, stream.write_all(body.as_bytes())).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response);
    response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status: {response}"))
}

/// A masked client text frame.
fn text(value: serde_json::Value) -> Vec<u8> {
    frame(0x81, value.to_string().as_bytes(), true)
}

#[tokio::test]
async fn a_subscriber_that_never_reads_is_cut_off_and_the_others_get_every_event() {
    let flags = ["--outbound-queue", "600", "--max-replay", "500", "--write-timeout-ms", "600000"];
    let (_database, process) = server_process(&flags).await;
    let server = TestServer::at(process.addr);
    let mut reader = server.connect("reader", Role::Customer).await;
    reader.send(json!({"type": "topic.subscribe", "data": {"topic": "pets:1"}})).await;
    reader.recv_type("topic.subscribed").await;
    let mut stalled = raw::tcp(process.addr, Some(4096)).await;
    raw::upgrade(&mut stalled, process.addr, &server.token("stalled", Role::Customer)).await;
    stalled.write_all(&text(json!({"type": "topic.subscribe", "data": {"topic": "pets:1"}}))).await.expect("write");
    // Read until the subscription holds, then never again.
    let mut seen = Vec::new();
    tokio::time::timeout(WAIT, async {
        use tokio::io::AsyncReadExt;
        while !String::from_utf8_lossy(&seen).contains("topic.subscribed") {
            let mut buf = [0u8; 1024];
            let n = stalled.read(&mut buf).await.expect("read");
            assert!(n > 0, "the server closed the subscriber");
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("topic.subscribed in time");

    let before = process.rss_kib();
    let data = json!({"picture": "🐾".repeat(2_000)});
    let mut peak = before;
    // The reader reads as the events come.
    let reading = tokio::spawn(async move {
        for n in 1..=1_500u64 {
            let event = reader.recv_type("topic.event").await;
            assert_eq!(event["data"]["seq"], n, "the reader gets every event in order");
        }
    });
    for n in 1..=1_500u64 {
        let body = json!({"topic": "pets:1", "event": "pet.viewed", "data": data}).to_string();
        let (status, answer) = http_post(&server, "/v1/api/publish", Some(KEY), &body).await;
        assert_eq!(status, 200, "{answer}");
        if n % 100 == 0 {
            peak = peak.max(process.rss_kib());
        }
    }
    tokio::time::timeout(WAIT, reading).await.expect("the reader got every event in time").expect("reader");
    peak = peak.max(process.rss_kib());
    let growth_mib = peak.saturating_sub(before) / 1024;
    println!("stalled subscriber: 1,500 events of 8 KB, RSS {before} KiB -> peak {peak} KiB");
    assert!(growth_mib < 48, "RSS grew by {growth_mib} MiB");
    let deadline = Instant::now() + WAIT;
    loop {
        let metrics = common::http_get(&server, "/metrics").await;
        if metrics.lines().any(|l| l.starts_with("petchat_closes_total") && l.contains("code=\"4001\"")) {
            break;
        }
        assert!(Instant::now() < deadline, "the stalled subscriber was never cut off with 4001:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn churning_through_topics_keeps_server_memory_bounded() {
    let (_database, process) = server_process(&["--messages-per-second", "1000000"]).await;
    let server = TestServer::at(process.addr);
    let mut client = server.connect("churner", Role::Customer).await;
    // Warm up, then measure.
    for round in 0..2 {
        let before = process.rss_kib();
        let started = Instant::now();
        for n in 0..10_000 {
            let topic = format!("pets:{round}-{n}");
            client.send(json!({"type": "topic.subscribe", "data": {"topic": topic}})).await;
            client.send(json!({"type": "topic.unsubscribe", "data": {"topic": topic}})).await;
            if n % 1_000 == 999 {
                // Keep the exchange in step: the replies of this thousand.
                for _ in 0..2_000 {
                    let reply = client.recv().await;
                    assert!(reply["type"] == "topic.subscribed" || reply["type"] == "topic.unsubscribed", "{reply}");
                }
            }
        }
        let after = process.rss_kib();
        println!(
            "topic churn round {round}: 10,000 topics in {:?}, RSS {before} KiB -> {after} KiB",
            started.elapsed()
        );
        if round == 1 {
            assert!(after.saturating_sub(before) < 8 * 1024, "RSS grew by {} KiB", after - before);
        }
    }
    client.send(json!({"type": "ping", "id": "alive", "data": {}})).await;
    assert_eq!(client.recv_type("pong").await["id"], "alive");
}

#[tokio::test]
async fn a_stranger_at_the_server_api_gets_401_before_the_server_reads_a_body() {
    let (_database, process) = server_process(&[]).await;
    let server = TestServer::at(process.addr);
    let before = process.rss_kib();
    // Bodies far over the limit, without a key: refused without being read
    // (the server answers and closes; the rest of the body is never taken).
    let huge = "x".repeat(4 << 20);
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(post_raw(&server, None, &huge).await, 401);
    }
    // With a key, over the limit: 413.
    assert_eq!(post_raw(&server, Some(KEY), &huge).await, 413);
    let growth_mib = process.rss_kib().saturating_sub(before) / 1024;
    println!("API stranger: 20 × 4 MiB bodies in {:?}, RSS grew {growth_mib} MiB", started.elapsed());
    assert!(growth_mib < 16, "RSS grew by {growth_mib} MiB");
    assert!(started.elapsed() < WAIT);
}
