//! The real `petchat-server` binary for client tests: started on a fixed
//! port (so it can come back on the same address), killed, restarted.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use petchat_client::{ClientConfig, Events, TokenProvider};
use petchat_protocol::session::{Backoff, Event, SessionConfig};
use petchat_protocol::{ConversationId, Role, ServerMessage, UserId};
use tokio::process::{Child, Command};

pub const SECRET: &str = "client-test-secret";
pub const WAIT: Duration = Duration::from_secs(20);

/// The server binary, built by `cargo test --workspace` next to this test's binary.
pub fn server_binary() -> PathBuf {
    let dir = std::env::current_exe()
        .expect("test binary")
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .to_path_buf();
    let binary = dir.join("petchat-server");
    if !binary.exists() {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--package", "petchat-server"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building petchat-server failed");
    }
    binary
}

/// A server process on a fixed port and database.
pub struct Server {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    extra: Vec<String>,
}

impl Server {
    pub async fn start(extra: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let mut server = Self {
            port,
            dir: tempfile::tempdir().expect("dir"),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.restart().await;
        server
    }

    /// (Re)starts the process on the same port and database.
    pub async fn restart(&mut self) {
        let child = Command::new(server_binary())
            .args(["--bind", &format!("127.0.0.1:{}", self.port)])
            .args(["--database-url", &format!("sqlite://{}/client.db", self.dir.path().display())])
            .args(["--jwt-secret", SECRET])
            .args(&self.extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("server starts");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(Instant::now() < deadline, "the server did not listen");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends a signal (`KILL`, `TERM`) and waits for the exit.
    pub async fn signal(&mut self, signal: &str) {
        let mut child = self.child.take().expect("running");
        let pid = child.id().expect("pid").to_string();
        Command::new("kill").args([format!("-{signal}"), pid]).status().await.expect("kill");
        tokio::time::timeout(WAIT, child.wait()).await.expect("exits in time").expect("wait");
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/v1/ws/chat", self.port)
    }

    /// A client config for `sub` with fresh minted tokens and a seeded session.
    pub fn config(&self, sub: &str, role: Role) -> ClientConfig {
        let tokens = TokenProvider::minted(SECRET, UserId::new(sub).expect("id"), role, sub, Duration::from_secs(600));
        let mut config = ClientConfig::new(self.url(), tokens);
        config.session = SessionConfig { seed: 7, backoff: Backoff::new(7), ..SessionConfig::default() };
        config
    }
}

/// Reads events until `pick` returns something.
pub async fn until<T>(events: &mut Events, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            let event = events.next().await.expect("the client is running");
            if let Some(found) = pick(&event) {
                return found;
            }
        }
    })
    .await
    .expect("the awaited event in time")
}

/// Reads events until `conversation.opened`; returns the conversation's id.
pub async fn opened(events: &mut Events) -> ConversationId {
    until(events, |e| match e {
        Event::Message(m) => match &m.message {
            ServerMessage::ConversationOpened(s) => Some(s.conversation.id.clone()),
            _ => None,
        },
        _ => None,
    })
    .await
}

/// The body of a plain HTTP GET to the server.
pub async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
}
