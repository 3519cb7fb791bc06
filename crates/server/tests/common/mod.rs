//! Test harness: a real server on 127.0.0.1:0 with a throwaway database (a
//! SQLite file, or a PostgreSQL database with `PETCHAT_TEST_STORE=postgres`:
//! `database.rs`), and a WebSocket client that checks every server frame
//! against the generated JSON Schema; `redis` starts a real redis-server for
//! the cluster tests, `nginx` a real nginx in front of server processes,
//! `private_postgres` a PostgreSQL a test may stop, and `cluster` several
//! server processes on one PostgreSQL database and one Redis, talked to
//! through `peer`s.

#![allow(dead_code, unreachable_pub)]

pub mod cluster;
pub mod database;
pub mod nginx;
pub mod openapi;
pub mod peer;
pub mod private_postgres;
pub mod process;
pub mod raw;
pub mod redis;
pub mod slow_link;

#[allow(unused_imports)] // each test file uses what it needs
pub use database::{TestDatabase, TestStore, store};

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use petchat_protocol::{Role, UserId};
use petchat_server::{Config, Keys};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(10);
pub const SECRET: &str = "test-secret";

/// A server running in this process.
pub struct TestServer {
    pub addr: SocketAddr,
    pub keys: Keys,
    pub database_url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    /// The database it started on, when it made one (dropped after the server stops).
    database: Option<TestDatabase>,
    /// Its `--attachments-dir`, unless `tune` chose one (with PostgreSQL the
    /// default would be the working directory).
    attachments: Option<tempfile::TempDir>,
}

impl TestServer {
    /// A server with default limits.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A server whose configuration `tune` adjusts.
    pub async fn start_with(tune: impl FnOnce(&mut Config)) -> Self {
        let database = TestDatabase::new().await;
        let mut server = Self::start_on(&database.url, tune).await;
        server.database = Some(database);
        server
    }

    /// A server on an existing database (to test restarts).
    pub async fn start_on(database_url: &str, tune: impl FnOnce(&mut Config)) -> Self {
        if std::env::var_os("RUST_LOG").is_some() {
            petchat_server::init_logging(petchat_server::LogFormat::Text);
        }
        let mut config = Config::with_defaults(database_url, SECRET);
        let attachments = tempfile::tempdir().expect("a directory for attachments");
        config.attachments.attachments_dir = Some(attachments.path().to_owned());
        tune(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            petchat_server::run(listener, config, async {
                let _ = stopped.await;
            })
            .await
            .expect("server runs");
        });
        Self {
            addr,
            keys: Keys::new(SECRET.as_bytes()),
            database_url: database_url.to_owned(),
            stop: Some(stop),
            task: Some(task),
            database: None,
            attachments: Some(attachments),
        }
    }

    /// Stops the server gracefully and waits for it; returns its database, to start another on it.
    pub async fn stop(mut self) -> Option<TestDatabase> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task).await.expect("server stops in time").expect("server task");
        }
        self.database.take()
    }

    pub fn token(&self, sub: &str, role: Role) -> String {
        self.keys.mint(&UserId::new(sub).expect("id"), role, &format!("{sub} name"), Duration::from_secs(600))
    }

    pub fn url(&self) -> String {
        format!("ws://{}/v1/ws/chat", self.addr)
    }

    /// A handle that talks to a server at `addr` started elsewhere (a child process).
    pub fn at(addr: SocketAddr) -> Self {
        Self {
            addr,
            keys: Keys::new(SECRET.as_bytes()),
            database_url: String::new(),
            stop: None,
            task: None,
            database: None,
            attachments: None,
        }
    }

    /// Connects with the token in the query and reads `session.ready`.
    pub async fn connect(&self, sub: &str, role: Role) -> Client {
        let mut client =
            self.connect_raw(&format!("{}?token={}", self.url(), self.token(sub, role)), &["petchat.v1"], None).await;
        client.recv_type("session.ready").await;
        client
    }

    /// Connects as `connect` does, but returns `session.ready` too.
    pub async fn connect_ready(&self, sub: &str, role: Role) -> (Client, Value) {
        let mut client =
            self.connect_raw(&format!("{}?token={}", self.url(), self.token(sub, role)), &["petchat.v1"], None).await;
        let ready = client.recv_type("session.ready").await;
        (client, ready)
    }

    /// Opens a socket with any URL, subprotocols and Origin; reads nothing.
    pub async fn connect_raw(&self, url: &str, protocols: &[&str], origin: Option<&str>) -> Client {
        let mut request = url.into_client_request().expect("request");
        if !protocols.is_empty() {
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", HeaderValue::from_str(&protocols.join(", ")).expect("header"));
        }
        if let Some(origin) = origin {
            request.headers_mut().insert("Origin", HeaderValue::from_str(origin).expect("header"));
        }
        let (ws, response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("connect in time")
            .expect("handshake completes");
        let protocol =
            response.headers().get("Sec-WebSocket-Protocol").and_then(|v| v.to_str().ok()).map(str::to_owned);
        Client { ws, protocol }
    }

    /// A customer with an open conversation and an agent assigned to it:
    /// returns (customer, agent, conversation id).
    pub async fn pair(&self, customer: &str, agent: &str) -> (Client, Client, String) {
        let mut a = self.connect(agent, Role::Agent).await;
        a.send(json!({"type": "agent.status", "data": {"available": true}})).await;
        a.recv_type("agent.status").await;
        let mut c = self.connect(customer, Role::Customer).await;
        c.send(json!({"type": "conversation.open", "data": {"topic": "help"}})).await;
        let opened = c.recv_type("conversation.opened").await;
        let id = opened["data"]["conversation"]["id"].as_str().expect("id").to_owned();
        c.recv_type("agent.assigned").await;
        let assigned = a.recv_type("agent.assigned").await;
        assert_eq!(assigned["data"]["conversationId"], id.as_str());
        (c, a, id)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A WebSocket client that validates what it receives.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The subprotocol the server selected.
    pub protocol: Option<String>,
}

/// What the client read next.
#[derive(Debug)]
pub enum Next {
    Frame(Value),
    Closed(Option<(u16, String)>),
}

impl Client {
    pub async fn send(&mut self, frame: Value) {
        self.ws.send(Message::Text(frame.to_string().into())).await.expect("send");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::Text(text.to_owned().into())).await.expect("send");
    }

    /// The next text frame or the close, validated against server-message.schema.json.
    pub async fn next(&mut self) -> Next {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next()).await.expect("a frame in time");
            match message {
                Some(Ok(Message::Text(text))) => return Next::Frame(checked_frame(&text)),
                Some(Ok(Message::Close(frame))) => {
                    return Next::Closed(frame.map(|f: CloseFrame| (u16::from(f.code), f.reason.to_string())));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Next::Closed(None),
            }
        }
    }

    /// The next frame, which must be a message.
    pub async fn recv(&mut self) -> Value {
        match self.next().await {
            Next::Frame(v) => v,
            Next::Closed(c) => panic!("expected a frame, the connection closed: {c:?}"),
        }
    }

    /// The next frame, which must be of type `kind`.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        let frame = self.recv().await;
        assert_eq!(frame["type"], kind, "expected {kind}, got {frame}");
        frame
    }

    /// Skips frames until one of type `kind` arrives.
    pub async fn recv_until(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.recv().await;
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    /// Reads until the server closes; returns the close code and reason.
    pub async fn expect_close(&mut self) -> (u16, String) {
        loop {
            match self.next().await {
                Next::Frame(_) => continue,
                Next::Closed(Some(close)) => return close,
                Next::Closed(None) => panic!("the connection ended without a close frame"),
            }
        }
    }

    /// Asserts that nothing arrives for `quiet`.
    pub async fn expect_silence(&mut self, quiet: Duration) {
        if let Ok(Some(Ok(Message::Text(text)))) = tokio::time::timeout(quiet, self.ws.next()).await {
            panic!("expected nothing, got {text}");
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// A server's text frame as JSON, checked against server-message.schema.json
/// (a failed test otherwise).
pub fn checked_frame(text: &str) -> Value {
    let value: Value = serde_json::from_str(text).expect("server frames are JSON");
    if let Err(e) = server_schema().validate(&value) {
        panic!("server frame breaks server-message.schema.json: {e}\n{value}");
    }
    value
}

fn server_schema() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/server-message.schema.json");
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("schema file")).expect("JSON");
        jsonschema::validator_for(&schema).expect("the generated schema compiles")
    })
}

/// A fresh client message id.
pub fn uuid() -> String {
    petchat_protocol::ClientMessageId::from_random_bytes(rand_bytes()).as_str().to_owned()
}

fn rand_bytes() -> [u8; 16] {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&n.to_le_bytes());
    bytes[8..].copy_from_slice(&nanos.to_le_bytes());
    bytes
}

/// A `chat.send` frame.
pub fn chat(conversation: &str, text: &str) -> Value {
    json!({"type": "chat.send", "data": {"conversationId": conversation, "clientMessageId": uuid(), "text": text}})
}

/// A raw HTTP/1.1 GET; returns (status, body).
pub async fn http(server: &TestServer, path: &str, bearer: Option<&str>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.expect("connect");
    let auth = bearer.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n{auth}Connection: close\r\n\r\n", server.addr);
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    openapi::check("GET", path, status, &body);
    (status, body)
}

/// A raw HTTP/1.1 GET with the given headers (a `Host` among them, or none);
/// returns (status, response head, body bytes).
pub async fn http_with(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> (u16, String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.expect("connect");
    let mut request = format!("GET {path} HTTP/1.1\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response)).await.expect("a response in time").expect("read");
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    (status, head, response[split + 4..].to_vec())
}

/// A raw HTTP/1.1 POST of a JSON `body`, with an optional Bearer key;
/// returns (status, the JSON body, or null when it is not JSON).
pub async fn http_post(server: &TestServer, path: &str, bearer: Option<&str>, body: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.expect("connect");
    let auth = bearer.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        server.addr,
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response)).await.expect("an answer in time").expect("read");
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    openapi::check("POST", path, status, body);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// The body of a GET, whatever the status.
pub async fn http_get(server: &TestServer, path: &str) -> String {
    http(server, path, None).await.1
}
