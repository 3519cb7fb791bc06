//! `petchat subscribe`, `publish` and `notify` against the real server
//! binary: events and notifications print as JSON lines, a subscription
//! survives the server's SIGKILL and restart and resumes without loss or
//! repeat, and the API commands fail with a clear message and exit code.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{SECRET, Server, WAIT};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const CLI: &str = env!("CARGO_BIN_EXE_petchat");
const KEY: &str = "cli-test-key";

async fn server() -> Server {
    Server::start(&["--api-keys", KEY, "--public-topics", "pets:*"]).await
}

/// Runs `petchat ARGS` with the server's API address and key; returns (exit code, stdout, stderr).
async fn run(server: &Server, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(CLI)
        .args(args)
        .env("PETCHAT_API_URL", format!("http://127.0.0.1:{}", server.port))
        .env("PETCHAT_API_KEY", KEY)
        .output()
        .await
        .expect("the CLI runs");
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("UTF-8");
    (output.status.code().unwrap_or(-1), text(output.stdout), text(output.stderr))
}

/// Publishes one event; the answer's seq.
async fn publish(server: &Server, n: u64) -> u64 {
    let (code, out, err) =
        run(server, &["publish", "pets:1", "pet.available", "--data", &format!("{{\"n\":{n}}}")]).await;
    assert_eq!(code, 0, "petchat publish: {err}");
    let answer: Value = serde_json::from_str(out.trim()).expect("JSON");
    answer["seq"].as_u64().expect("a seq")
}

struct Subscriber {
    _child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Subscriber {
    fn start(server: &Server) -> Self {
        let mut child = Command::new(CLI)
            .args(["subscribe", "--url", &server.url(), "--secret", SECRET, "--sub", "cust-1", "--role", "customer"])
            .arg("pets:1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the CLI starts");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Self { _child: child, stdout }
    }

    /// The next line, within `within`.
    async fn line(&mut self, within: Duration) -> Option<Value> {
        let line = tokio::time::timeout(within, self.stdout.next_line()).await.ok()?;
        let line = line.expect("read").expect("the CLI is still printing");
        Some(serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}")))
    }
}

#[tokio::test]
async fn a_subscription_prints_events_and_resumes_across_a_server_restart_without_loss_or_repeat() {
    let mut server = server().await;
    let mut subscriber = Subscriber::start(&server);
    // The subscription starts with live events: publish until one comes.
    let first = loop {
        let seq = publish(&server, 0).await;
        if let Some(event) = subscriber.line(Duration::from_millis(300)).await {
            assert_eq!(event["type"], "topic.event", "{event}");
            break event["data"]["seq"].as_u64().expect("a seq").max(seq);
        }
    };
    // Drain what the catch-up loop left (events published before the first one came).
    while subscriber.line(Duration::from_millis(300)).await.is_some() {}
    for n in 1..=3 {
        assert_eq!(publish(&server, n).await, first + n);
    }
    for n in 1..=3 {
        let event = subscriber.line(WAIT).await.expect("an event");
        assert_eq!(event["data"]["seq"], first + n, "{event}");
        assert_eq!(event["data"]["data"]["n"], n);
    }

    server.signal("KILL").await;
    server.restart().await;
    for n in 4..=5 {
        assert_eq!(publish(&server, n).await, first + n, "the restarted server keeps the topic's seq");
    }
    for n in 4..=5 {
        let event = subscriber.line(WAIT).await.expect("the subscriber came back");
        assert_eq!(event["data"]["seq"], first + n, "resumed after the last event, nothing repeated: {event}");
    }
    let (code, out, err) =
        run(&server, &["notify", "--user", "cust-1", "--kind", "order.shipped", "--title", "Shipped"]).await;
    assert_eq!(code, 0, "petchat notify: {err}");
    let notified: Value = serde_json::from_str(out.trim()).expect("JSON");
    let notification = subscriber.line(WAIT).await.expect("a notification");
    assert_eq!(notification["type"], "notification");
    assert_eq!(notification["data"]["id"], notified["id"]);
    assert!(subscriber.line(Duration::from_millis(500)).await.is_none(), "nothing more, nothing twice");
}

#[tokio::test]
async fn the_api_commands_say_what_was_wrong_and_exit_non_zero() {
    let server = server().await;
    let wrong_key = Command::new(CLI)
        .args(["publish", "pets:1", "pet.available", "--api-key", "wrong"])
        .env("PETCHAT_API_URL", format!("http://127.0.0.1:{}", server.port))
        .output()
        .await
        .expect("runs");
    assert_eq!(wrong_key.status.code(), Some(3), "an unauthorized key exits with 3");
    assert!(String::from_utf8_lossy(&wrong_key.stderr).contains("401"), "{:?}", wrong_key.stderr);
    let (code, _, err) = run(&server, &["publish", "Pets", "pet.available"]).await;
    assert_eq!(code, 2, "a bad topic is a usage error: {err}");
    let (code, _, err) = run(&server, &["publish", "pets:1", "pet.available", "--data", "[1]"]).await;
    assert_eq!(code, 2, "{err}");
    let (code, out, _) = run(&server, &["publish", "pets:1", "e", "--idempotency-key", "k1"]).await;
    assert_eq!(code, 0);
    let (code, again, _) = run(&server, &["publish", "pets:1", "e", "--idempotency-key", "k1"]).await;
    assert_eq!((code, again), (0, out), "the same key publishes once");
    let (code, _, err) = run(&server, &["publish", "pets:1", "other", "--idempotency-key", "k1"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("409") && err.contains("idempotency_conflict"), "{err}");
}
