//! The `petchat` CLI in scripts (SPEC §9): two `--json` clients hold a
//! conversation; failures end with a clear message and exit code.

mod common;

use std::process::Stdio;

use common::{SECRET, Server, WAIT};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const CLI: &str = env!("CARGO_BIN_EXE_petchat");

/// A `petchat chat --json` process.
struct JsonCli {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl JsonCli {
    fn start(server: &Server, sub: &str, role: &str) -> Self {
        let mut child = Command::new(CLI)
            .args(["chat", "--json", "--url", &server.url(), "--secret", SECRET, "--sub", sub, "--role", role])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the CLI starts");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Self { child, stdin, stdout }
    }

    async fn send(&mut self, line: Value) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(format!("{line}\n").as_bytes()).await.expect("write");
        stdin.flush().await.expect("flush");
    }

    /// Reads lines until one of type `kind`.
    async fn until(&mut self, kind: &str) -> Value {
        tokio::time::timeout(WAIT, async {
            loop {
                let line = self.stdout.next_line().await.expect("read").expect("the CLI is still printing");
                let value: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
                if value["type"] == kind {
                    return value;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {kind} in time"))
    }

    /// Closes stdin and waits for the exit.
    async fn finish(mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        tokio::time::timeout(WAIT, self.child.wait()).await.expect("exits in time").expect("wait")
    }
}

#[tokio::test]
async fn two_json_clients_hold_a_conversation() {
    let server = Server::start(&[]).await;
    let mut agent = JsonCli::start(&server, "agent-1", "agent");
    assert_eq!(agent.until("client.state").await["data"]["state"], "connecting");
    assert_eq!(agent.until("client.state").await["data"]["state"], "connected");
    agent.until("session.ready").await;
    agent.send(json!({"type": "agent.status", "data": {"available": true}})).await;
    agent.until("agent.status").await;

    let mut customer = JsonCli::start(&server, "cust-1", "customer");
    customer.until("session.ready").await;
    customer.send(json!({"type": "conversation.open", "id": "o", "data": {"topic": "litter box"}})).await;
    let opened = customer.until("conversation.opened").await;
    let id = opened["data"]["conversation"]["id"].as_str().expect("id").to_owned();
    agent.until("agent.assigned").await;

    // The CLI fills in the clientMessageId.
    customer.send(json!({"type": "chat.send", "data": {"conversationId": id, "text": "hello from a script"}})).await;
    let queued = customer.until("client.queued").await;
    let sent = customer.until("client.sent").await;
    assert_eq!(sent["data"]["clientMessageId"], queued["data"]["clientMessageId"]);
    assert_eq!(sent["data"]["seq"], 1);
    let message = agent.until("chat.message").await;
    assert_eq!(message["data"]["text"], "hello from a script");
    // The agent's client confirms delivery by itself.
    assert_eq!(customer.until("message.delivered").await["data"]["by"], "agent-1");

    agent.send(json!({"type": "chat.send", "data": {"conversationId": id, "text": "how can I help?"}})).await;
    assert_eq!(customer.until("chat.message").await["data"]["text"], "how can I help?");

    // Bad input is reported on stdout, and the CLI keeps going.
    customer.send(json!({"type": "chat.send", "data": {"conversationId": id, "text": "   "}})).await;
    let error = customer.until("client.error").await;
    assert_eq!(error["data"]["code"], "invalid_message");

    // stdin closes and the outbox is empty: both end cleanly.
    assert!(customer.finish().await.success());
    assert!(agent.finish().await.success());
}

#[tokio::test]
async fn a_message_typed_while_the_server_is_down_is_sent_when_it_returns() {
    let mut server = Server::start(&[]).await;
    let mut customer = JsonCli::start(&server, "cust-1", "customer");
    customer.until("session.ready").await;
    customer.send(json!({"type": "conversation.open", "data": {}})).await;
    let id = customer.until("conversation.opened").await["data"]["conversation"]["id"].as_str().expect("id").to_owned();
    server.signal("KILL").await;
    let state = customer.until("client.state").await;
    assert_eq!(state["data"]["state"], "reconnecting");
    assert!(state["data"]["retryInMs"].is_u64());
    customer.send(json!({"type": "chat.send", "data": {"conversationId": id, "text": "typed offline"}})).await;
    customer.until("client.queued").await;
    server.restart().await;
    assert_eq!(customer.until("client.sent").await["data"]["seq"], 1);
    assert!(customer.finish().await.success());
}

#[tokio::test]
async fn failures_end_with_a_reason_and_an_exit_code() {
    let server = Server::start(&[]).await;
    let bad_token = Command::new(CLI)
        .args(["chat", "--json", "--url", &server.url(), "--token", "nope"])
        .stdin(Stdio::null())
        .output();
    let output = tokio::time::timeout(WAIT, bad_token).await.expect("in time").expect("runs");
    assert_eq!(output.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&output.stderr).contains("4500"));
    let last = String::from_utf8_lossy(&output.stdout).lines().last().map(str::to_owned).expect("printed its state");
    let last: Value = serde_json::from_str(&last).expect("JSON");
    assert_eq!(last["data"], json!({"state": "stopped", "closeCode": 4500}));

    let bad_url =
        Command::new(CLI).args(["chat", "--url", "http://example", "--token", "t"]).output().await.expect("runs");
    assert_eq!(bad_url.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_url.stderr).contains("bad url"));

    let no_token = Command::new(CLI)
        .args(["chat", "--url", &server.url()])
        .env_remove("PETCHAT_TOKEN")
        .env_remove("PETCHAT_JWT_SECRET")
        .output()
        .await
        .expect("runs");
    assert_eq!(no_token.status.code(), Some(2));
}

#[tokio::test]
async fn send_and_token_work_in_one_shot() {
    let server = Server::start(&[]).await;
    let token = Command::new(CLI)
        .args(["token", "--secret", SECRET, "--sub", "cust-9", "--role", "customer"])
        .output()
        .await
        .expect("runs");
    assert!(token.status.success());
    let token = String::from_utf8(token.stdout).expect("utf-8");
    let send = Command::new(CLI)
        .args(["send", "--url", &server.url(), "--token", token.trim(), "--text", "one shot"])
        .output();
    let output = tokio::time::timeout(WAIT, send).await.expect("in time").expect("runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let ack: Value = serde_json::from_str(String::from_utf8_lossy(&output.stdout).trim()).expect("the ack as JSON");
    assert_eq!(ack["seq"], 1);
}

/// With `--outbox FILE`, a message typed while the server is down survives a
/// restart of the CLI, and goes out once with its original key.
#[tokio::test]
async fn the_on_disk_outbox_survives_a_restart_of_the_cli() {
    let mut server = Server::start(&[]).await;
    let outbox = server.dir.path().join("outbox.json");
    let start = |server: &Server| {
        Command::new(CLI)
            .args([
                "chat",
                "--json",
                "--url",
                &server.url(),
                "--secret",
                SECRET,
                "--sub",
                "cust-1",
                "--role",
                "customer",
            ])
            .arg("--outbox")
            .arg(&outbox)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the CLI starts")
    };
    let mut first = JsonCli::from(start(&server));
    first.until("session.ready").await;
    first.send(json!({"type": "conversation.open", "data": {}})).await;
    let id = first.until("conversation.opened").await["data"]["conversation"]["id"].as_str().expect("id").to_owned();
    server.signal("KILL").await;
    first.until("client.state").await;
    first.send(json!({"type": "chat.send", "data": {"conversationId": id, "text": "survives"}})).await;
    let key = first.until("client.queued").await["data"]["clientMessageId"].clone();
    first.child.kill().await.expect("kill the CLI");
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&outbox).expect("the outbox file")).expect("JSON");
    assert_eq!(saved[0]["clientMessageId"], key);

    server.restart().await;
    let mut second = JsonCli::from(start(&server));
    let sent = second.until("client.sent").await;
    assert_eq!((sent["data"]["clientMessageId"].clone(), sent["data"]["seq"].clone()), (key, json!(1)));
    assert!(second.finish().await.success());
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&outbox).expect("the outbox file")).expect("JSON");
    assert_eq!(saved, json!([]));
}

impl From<Child> for JsonCli {
    fn from(mut child: Child) -> Self {
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Self { child, stdin, stdout }
    }
}
