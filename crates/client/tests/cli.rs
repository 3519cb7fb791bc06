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

/// A `petchat` process whose stdin stays open until the test drops it, and
/// whose stdout and stderr are read line by line.
struct OpenCli {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Lines<BufReader<tokio::process::ChildStderr>>,
}

impl OpenCli {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(CLI)
            .args(args)
            .env_remove("PETCHAT_TOKEN")
            .env_remove("PETCHAT_JWT_SECRET")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the CLI starts");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
        Self { child, stdin, stdout, stderr }
    }

    async fn type_line(&mut self, line: &str) {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await.expect("write");
        self.stdin.flush().await.expect("flush");
    }

    /// Stdout lines up to and including the first that `done` accepts.
    async fn until(&mut self, done: impl Fn(&str) -> bool) -> Vec<String> {
        let mut seen = Vec::new();
        tokio::time::timeout(WAIT, async {
            loop {
                let line = self.stdout.next_line().await.expect("read").expect("the CLI is still printing");
                let last = done(&line);
                seen.push(line);
                if last {
                    return;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("not printed in time; printed so far: {seen:#?}"));
        seen
    }

    /// Waits for the exit, stdin still open; returns the exit code and all of stderr.
    async fn exit(mut self) -> (Option<i32>, String) {
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("the CLI exits while its stdin stays open")
            .expect("wait");
        let mut stderr = String::new();
        while let Ok(Some(line)) = self.stderr.next_line().await {
            stderr.push_str(&line);
            stderr.push('\n');
        }
        (status.code(), stderr)
    }
}

/// Issue 10, defect 6: a fixed token the server refuses ends the CLI with
/// exit code 3, in both modes, even though stdin stays open.
#[tokio::test]
async fn a_refused_token_ends_the_cli_while_stdin_stays_open() {
    let server = Server::start(&[]).await;
    let url = server.url();
    for json in [true, false] {
        let mut args = vec!["chat", "--url", &url, "--token", "nope"];
        if json {
            args.push("--json");
        }
        let mut cli = OpenCli::start(&args);
        cli.until(|line| line.contains("stopped")).await;
        let (code, stderr) = cli.exit().await;
        assert_eq!(code, Some(3), "--json {json}: {stderr}");
        assert!(stderr.contains("4500"), "--json {json}: {stderr}");
    }
}

/// Issue 10, defect 6: `/quit` closes with 1000 and exits, stdin still open.
#[tokio::test]
async fn quit_closes_with_1000_and_exits_while_stdin_stays_open() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

    // A WebSocket peer that records how the client closes: the close code is
    // what the server cannot tell us.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/v1/ws/chat", listener.local_addr().expect("addr"));
    let (accepted, on_accept) = tokio::sync::oneshot::channel();
    let peer = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        // The callback's error type is tungstenite's, large or not.
        #[allow(clippy::result_large_err)]
        let select_v1 = |_: &Request, mut response: Response| {
            response.headers_mut().insert("Sec-WebSocket-Protocol", "petchat.v1".parse().expect("a header value"));
            Ok(response)
        };
        let mut ws = tokio_tungstenite::accept_hdr_async(stream, select_v1).await.expect("handshake");
        let _ = accepted.send(());
        while let Some(frame) = ws.next().await {
            if let Ok(Message::Close(frame)) = frame {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    });
    let mut cli = OpenCli::start(&["chat", "--url", &url, "--token", "t"]);
    tokio::time::timeout(WAIT, on_accept).await.expect("the CLI connects").expect("accepted");
    cli.type_line("/quit").await;
    let code = tokio::time::timeout(WAIT, peer).await.expect("a close frame in time").expect("the peer");
    assert_eq!(code, Some(1000));
    let (code, stderr) = cli.exit().await;
    assert_eq!(code, Some(0), "{stderr}");
}

/// Issue 10, defect 6: `petchat send` to a server that is down says on stderr
/// what it waits for, at once, and why it gave up at the timeout.
#[tokio::test]
async fn send_to_a_server_that_is_down_says_what_it_waits_for() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let url = format!("ws://127.0.0.1:{port}/v1/ws/chat");
    let token = petchat_client::mint(
        SECRET,
        &petchat_protocol::UserId::new("cust-1").expect("id"),
        petchat_protocol::Role::Customer,
        "C",
        std::time::Duration::from_secs(60),
    );
    let started = std::time::Instant::now();
    let mut cli = OpenCli::start(&["send", "--url", &url, "--token", &token, "--text", "hi", "--timeout", "4"]);
    let first = tokio::time::timeout(WAIT, cli.stderr.next_line()).await.expect("in time").expect("read");
    let first = first.expect("a line on stderr before the timeout");
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "{first:?} only after {:?}", started.elapsed());
    assert!(first.contains(&format!("cannot connect to {url}")) && first.contains("reconnecting in"), "{first}");
    assert!(!first.contains(&token), "the token stays out of stderr");
    let (code, stderr) = cli.exit().await;
    assert_eq!(code, Some(1));
    let last = stderr.lines().last().expect("a reason");
    assert!(last.contains("no acknowledgement within 4 s") && last.contains("never connected"), "{stderr}");
}

/// Issue 10, defect 6: an agent with several conversations in line mode sees
/// every line labelled with its conversation, and `/list` lists them.
#[tokio::test]
async fn line_mode_labels_every_line_of_several_conversations_and_lists_them() {
    use petchat_protocol::Role;

    let server = Server::start(&[]).await;
    let mut agent =
        OpenCli::start(&["chat", "--url", &server.url(), "--secret", SECRET, "--sub", "agent-1", "--role", "agent"]);
    agent.until(|line| line.starts_with("[available: true")).await;
    let mut customers = Vec::new();
    for sub in ["cust-a", "cust-b"] {
        let (client, mut events) = petchat_client::connect(server.config(sub, Role::Customer)).expect("connect");
        client.open(Default::default()).await.expect("open");
        let id = common::opened(&mut events).await;
        agent.until(|line| line.contains(&format!("[conversation {id}"))).await;
        customers.push((sub, client, events, id));
    }
    let mut labels = Vec::new();
    for (sub, client, _, id) in &customers {
        client.send_chat(id, &format!("hello from {sub}")).await.expect("queued");
        let lines = agent.until(|line| line.contains(&format!("{sub}: hello from {sub}"))).await;
        let line = lines.last().expect("the message");
        let label = line.strip_prefix('[').and_then(|l| l.split_once("] ")).map(|(n, _)| n.to_owned());
        labels.push(label.unwrap_or_else(|| panic!("no conversation label: {line}")));
    }
    assert_ne!(labels[0], labels[1]);

    agent.type_line("/list").await;
    agent.until(|line| line == "[conversations]").await;
    let mut rows = agent.until(|_| true).await;
    rows.extend(agent.until(|_| true).await);
    for ((_, _, _, id), label) in customers.iter().zip(&labels) {
        let row = rows.iter().find(|row| row.contains(id.as_str())).unwrap_or_else(|| panic!("{id} in {rows:#?}"));
        assert!(row.contains(&format!("[{label}] {id}  active  last #1")), "{row}");
    }
}
