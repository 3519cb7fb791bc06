//! The `petchat` subcommands: arguments, exit codes and the shared connection setup.

mod human;
mod json;
mod live;

use std::time::Duration;

use clap::Args;
use petchat_client::{AuthMode, ClientConfig, OutboxFile, TokenProvider, connect};
use petchat_protocol::session::{ConnectionState, Event};
use petchat_protocol::{ClientMessage, CloseCode, ConversationId, OpenConversation, Role, ServerMessage, UserId};

pub(crate) use human::chat_lines;
pub(crate) use json::chat_json;
pub(crate) use live::{NotifyArgs, PublishArgs, SubscribeArgs, notify, publish, subscribe};

/// Exit codes, documented in docs/client.md.
pub(crate) mod exit {
    /// The server refused the token (4500, 4501).
    pub(crate) const UNAUTHORIZED: u8 = 3;
    /// The server refused the client for good (1008 origin, 4503, 4505).
    pub(crate) const REFUSED: u8 = 4;
    /// Bad arguments (bad URL…); clap uses 2 for its own.
    pub(crate) const USAGE: u8 = 2;
    /// Anything else.
    pub(crate) const OTHER: u8 = 1;
}

/// A failure: the message for stderr and the exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) message: String,
    pub(crate) code: u8,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Self { message: message.into(), code }
    }
}

/// Who to be and where to connect.
#[derive(Debug, Args)]
pub(crate) struct Connection {
    /// Server URL, e.g. ws://127.0.0.1:8080/v1/ws/chat.
    #[arg(long, env = "PETCHAT_URL", default_value = "ws://127.0.0.1:8080/v1/ws/chat")]
    url: String,
    /// A token (JWT). A refused token ends the client.
    #[arg(long, env = "PETCHAT_TOKEN", hide_env_values = true, conflicts_with = "secret")]
    token: Option<String>,
    /// Mint tokens with the server's secret instead (development); a fresh one on every reconnect.
    #[arg(long, env = "PETCHAT_JWT_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// With --secret: the user id.
    #[arg(long, requires = "secret")]
    sub: Option<String>,
    /// With --secret: the role.
    #[arg(long, requires = "secret")]
    role: Option<Role>,
    /// With --secret: the display name (default: the user id).
    #[arg(long)]
    name: Option<String>,
    /// Send the token in the subprotocol instead of the URL.
    #[arg(long)]
    subprotocol_auth: bool,
    /// Keep unsent messages in this file, so they survive a restart of the CLI.
    #[arg(long)]
    outbox: Option<std::path::PathBuf>,
}

impl Connection {
    fn config(&self) -> Result<ClientConfig, Failure> {
        let tokens = match (&self.token, &self.secret) {
            (Some(token), _) => TokenProvider::fixed(token.clone()),
            (None, Some(secret)) => {
                let sub =
                    self.sub.clone().ok_or_else(|| Failure::new(exit::USAGE, "--secret needs --sub and --role"))?;
                let role = self.role.ok_or_else(|| Failure::new(exit::USAGE, "--secret needs --sub and --role"))?;
                let sub = UserId::new(sub).map_err(|e| Failure::new(exit::USAGE, format!("--sub: {e}")))?;
                let name = self.name.clone().unwrap_or_else(|| sub.to_string());
                TokenProvider::minted(secret.clone(), sub, role, name, Duration::from_secs(3600))
            }
            (None, None) => return Err(Failure::new(exit::USAGE, "give --token, or --secret with --sub and --role")),
        };
        let mut config = ClientConfig::new(self.url.clone(), tokens);
        config.auth = if self.subprotocol_auth { AuthMode::Subprotocol } else { AuthMode::Query };
        config.outbox_file = self.outbox.clone().map(OutboxFile::new);
        Ok(config)
    }
}

/// `petchat chat`.
#[derive(Debug, Args)]
pub(crate) struct ChatArgs {
    #[command(flatten)]
    connection: Connection,
    /// One JSON object per line: server messages and client.* events out, client messages in.
    #[arg(long)]
    json: bool,
}

/// `petchat send`.
#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    #[command(flatten)]
    connection: Connection,
    /// The conversation; a customer without one opens (or finds) its own.
    #[arg(long)]
    conversation: Option<String>,
    /// The message.
    #[arg(long)]
    text: String,
    /// Give up after this many seconds without the ack.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

/// `petchat token`.
#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    /// The server's secret.
    #[arg(long, env = "PETCHAT_JWT_SECRET", hide_env_values = true)]
    secret: String,
    /// User id (`sub`).
    #[arg(long)]
    sub: String,
    /// Role.
    #[arg(long)]
    role: Role,
    /// Display name (default: the user id).
    #[arg(long)]
    name: Option<String>,
    /// Lifetime, e.g. `1h`, `30m`, `7d`.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    ttl: Duration,
}

/// Lines typed on stdin, read by a thread of their own; the channel closes with stdin.
///
/// A plain thread, not `tokio::io::stdin`: tokio reads stdin on its blocking
/// pool, and a runtime waits for its blocking pool when it shuts down, so the
/// CLI could not exit (after a refused token, `/quit`) while stdin stayed
/// open. A thread blocked in `read` does not keep the process alive.
pub(crate) fn stdin_lines() -> tokio::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let reader = std::thread::Builder::new().name("stdin".into()).spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    if let Err(e) = reader {
        // Without a reader the channel is closed at once: the CLI acts as on an empty stdin.
        eprintln!("petchat: cannot read stdin: {e}");
    }
    rx
}

pub(crate) async fn chat(args: ChatArgs) -> Result<(), Failure> {
    let config = args.connection.config()?;
    if args.json { chat_json(config).await } else { chat_lines(config).await }
}

pub(crate) fn token(args: TokenArgs) -> Result<(), Failure> {
    let sub = UserId::new(args.sub).map_err(|e| Failure::new(exit::USAGE, format!("--sub: {e}")))?;
    let name = args.name.unwrap_or_else(|| sub.to_string());
    println!("{}", petchat_client::mint(&args.secret, &sub, args.role, &name, args.ttl));
    Ok(())
}

pub(crate) async fn send(args: SendArgs) -> Result<(), Failure> {
    let config = args.connection.config()?;
    let mut progress = Progress::new(&config.url, args.timeout);
    let (client, mut events) = connect(config).map_err(|e| Failure::new(exit::USAGE, e.to_string()))?;
    let deadline = tokio::time::sleep(Duration::from_secs(args.timeout));
    tokio::pin!(deadline);
    // Quiet when all goes well: the first attempt is announced only once it is slow.
    let slow = tokio::time::sleep(SLOW_CONNECT);
    tokio::pin!(slow);
    let mut conversation = match &args.conversation {
        Some(id) => Some(
            ConversationId::new(id.clone()).map_err(|e| Failure::new(exit::USAGE, format!("--conversation: {e}")))?,
        ),
        None => None,
    };
    let mut sent = None;
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            () = &mut slow, if !progress.connected && !progress.spoke => {
                progress.say(format!("connecting to {}…", progress.url));
                continue;
            }
            () = &mut deadline => return Err(Failure::new(exit::OTHER, progress.gave_up())),
        };
        let Some(event) = event else { return Err(Failure::new(exit::OTHER, "the client stopped")) };
        match event {
            Event::Message(envelope) => match envelope.message {
                ServerMessage::SessionReady(ready) if sent.is_none() => match &conversation {
                    Some(id) => sent = Some(queue(&client, id, &args.text).await?),
                    None if ready.user.role == Role::Customer => client
                        .send(ClientMessage::ConversationOpen(OpenConversation::default()), None)
                        .await
                        .map_err(other)?,
                    None => return Err(Failure::new(exit::USAGE, "an agent must name --conversation")),
                },
                ServerMessage::ConversationOpened(snapshot) if sent.is_none() => {
                    let id = snapshot.conversation.id;
                    sent = Some(queue(&client, &id, &args.text).await?);
                    conversation = Some(id);
                }
                ServerMessage::Error(error) => eprintln!("petchat: server error {}: {}", error.code, error.message),
                _ => {}
            },
            Event::Sent(ack) if Some(&ack.client_message_id) == sent.as_ref() => {
                println!("{}", serde_json::to_string(&ack).expect("wire types serialize"));
                client.disconnect().await;
                return Ok(());
            }
            Event::Failed { client_message_id, error } if Some(&client_message_id) == sent.as_ref() => {
                return Err(Failure::new(exit::OTHER, format!("refused: {} ({})", error.message, error.code)));
            }
            Event::State(ConnectionState::Stopped { close_code }) => return Err(stopped(close_code)),
            Event::State(state) => progress.state(&state),
            _ => {}
        }
    }
}

/// How long the first connection attempt of `petchat send` may take before
/// the CLI says on stderr what it is waiting for.
const SLOW_CONNECT: Duration = Duration::from_secs(1);

/// What `petchat send` tells stderr while it waits, and why it gave up.
struct Progress {
    /// The server URL without its query (which may hold a token).
    url: String,
    timeout_s: u64,
    connected: bool,
    ever_connected: bool,
    /// Something was printed already.
    spoke: bool,
    /// The last reason the connection failed or ended.
    trouble: Option<String>,
}

impl Progress {
    fn new(url: &str, timeout_s: u64) -> Self {
        let url = url.split(['?', '#']).next().unwrap_or(url).to_owned();
        Self { url, timeout_s, connected: false, ever_connected: false, spoke: false, trouble: None }
    }

    fn say(&mut self, line: String) {
        self.spoke = true;
        eprintln!("petchat: {line}");
    }

    fn state(&mut self, state: &ConnectionState) {
        match state {
            ConnectionState::Connected => {
                self.connected = true;
                self.ever_connected = true;
                if self.spoke {
                    self.say(format!("connected to {}; waiting for the acknowledgement", self.url));
                }
            }
            ConnectionState::Reconnecting { retry_in_ms, close_code, reason } => {
                let why = match (close_code, reason.is_empty()) {
                    (Some(code), true) => format!("the server closed the connection ({code})"),
                    (Some(code), false) => format!("the server closed the connection ({code}: {reason})"),
                    (None, _) if !self.connected => format!(
                        "cannot connect to {}{}",
                        self.url,
                        if reason.is_empty() { String::new() } else { format!(": {reason}") }
                    ),
                    (None, true) => "the connection failed".to_owned(),
                    (None, false) => format!("the connection failed: {reason}"),
                };
                self.connected = false;
                self.say(format!(
                    "{why}; reconnecting in {:.1} s (giving up {} s after the start)",
                    *retry_in_ms as f64 / 1000.0,
                    self.timeout_s
                ));
                self.trouble = Some(why);
            }
            ConnectionState::Connecting | ConnectionState::Stopped { .. } => {}
        }
    }

    /// The message of a timeout: what was still missing.
    fn gave_up(&self) -> String {
        let waited = format!("no acknowledgement within {} s (--timeout)", self.timeout_s);
        match (&self.trouble, self.ever_connected) {
            (Some(trouble), false) => format!("{waited}: never connected; the last attempt: {trouble}"),
            (None, false) => format!("{waited}: still connecting to {}", self.url),
            (Some(trouble), true) if !self.connected => format!("{waited}: {trouble}"),
            _ => format!("{waited}: connected to {}, but the server did not acknowledge the message", self.url),
        }
    }
}

async fn queue(
    client: &petchat_client::Client,
    id: &ConversationId,
    text: &str,
) -> Result<petchat_protocol::ClientMessageId, Failure> {
    client.send_chat(id, text).await.map_err(other)
}

fn other(e: impl std::fmt::Display) -> Failure {
    Failure::new(exit::OTHER, e.to_string())
}

/// The failure a stop with `code` means.
pub(crate) fn stopped(code: Option<CloseCode>) -> Failure {
    match code {
        Some(code) if code == CloseCode::UNAUTHORIZED => {
            Failure::new(exit::UNAUTHORIZED, "the server refused the token (4500 unauthorized)")
        }
        Some(code) if code == CloseCode::TOKEN_EXPIRED => {
            Failure::new(exit::UNAUTHORIZED, "the token has expired (4501); use a fresh one or --secret")
        }
        Some(code) if code == CloseCode::POLICY_VIOLATION => {
            Failure::new(exit::REFUSED, "the server refused this origin (1008)")
        }
        Some(code) if code == CloseCode::FORBIDDEN => {
            Failure::new(exit::REFUSED, "the server refused this user (4503)")
        }
        Some(code) if code == CloseCode::UNSUPPORTED_PROTOCOL => {
            Failure::new(exit::REFUSED, "the server does not speak petchat.v1 (4505); update the client")
        }
        Some(code) if code == CloseCode::NORMAL => Failure::new(exit::OTHER, "the server ended the connection (1000)"),
        Some(code) => Failure::new(exit::OTHER, format!("stopped after close {code}")),
        None => Failure::new(exit::OTHER, "stopped"),
    }
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let span: jiff::Span = s.parse().map_err(|e| format!("{e}"))?;
    let duration = span.to_duration(jiff::SpanRelativeTo::days_are_24_hours()).map_err(|e| e.to_string())?;
    Duration::try_from(duration).map_err(|_| "the lifetime must be positive".into())
}
