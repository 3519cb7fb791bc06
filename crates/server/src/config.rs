//! Server configuration (SPEC §8): every setting is a flag and an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use petchat_protocol::TopicPattern;
use petchat_protocol::limits;

/// How `petchat-server` is configured; `--help` lists every setting.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "PETCHAT_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// Where conversations and messages are stored: `sqlite://FILE` (created if
    /// missing; one node), or `postgres://USER[:PASS]@HOST:PORT/DB` (or
    /// `postgresql://`; several nodes may share it). Tables are created or
    /// migrated at start.
    #[arg(long, env = "PETCHAT_DATABASE_URL", default_value = "sqlite://petchat.db")]
    pub database_url: String,

    /// Secret that signs and checks the HS256 tokens; required unless --dev.
    #[arg(long, env = "PETCHAT_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Origins allowed to open the socket, comma-separated (`*` for any);
    /// default: the server's own host. Requests without Origin are allowed.
    #[arg(long, env = "PETCHAT_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Redis shared by the nodes of a cluster (`redis://HOST:PORT/`): with it
    /// this node joins the cluster of every node on the same Redis and the
    /// same PostgreSQL `--database-url` (SQLite is refused: one node only).
    #[arg(long, env = "PETCHAT_REDIS_URL")]
    pub redis_url: Option<String>,

    /// This node's name in a cluster, in logs and metrics (`node` label);
    /// unique among live nodes. Default: the host name and the bind port.
    #[arg(long, env = "PETCHAT_NODE_ID")]
    pub node_id: Option<String>,

    /// Development mode: a random secret, ready-made tokens printed, any origin.
    #[arg(long, env = "PETCHAT_DEV")]
    pub dev: bool,

    /// Where the browser package and pages are (`cargo xtask web` writes them).
    #[arg(long, env = "PETCHAT_WEB_DIR", default_value = "target/web")]
    pub web_dir: PathBuf,

    /// Log format.
    #[arg(long, env = "PETCHAT_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Keys of the server API (`/v1/api/*`, SPEC §13), comma-separated; none
    /// means the API answers 401. Compared in constant time, never logged.
    #[arg(long, env = "PETCHAT_API_KEYS", value_delimiter = ',', hide_env_values = true)]
    pub api_keys: Vec<String>,

    /// Who may subscribe to which topics, and what topics keep.
    #[command(flatten)]
    pub topics: TopicSettings,

    /// Where attachments are kept, and how big and how many they may be.
    #[command(flatten)]
    pub attachments: AttachmentSettings,

    /// Limits and timings.
    #[command(flatten)]
    pub limits: Limits,
}

/// Topics (SPEC §11): who may subscribe beyond the token's `topics` claim,
/// and the history each topic keeps.
#[derive(Debug, Clone, Args)]
pub struct TopicSettings {
    /// Topics anyone with a valid token may subscribe to: comma-separated
    /// exact names or prefixes ending in `*`.
    #[arg(long, env = "PETCHAT_PUBLIC_TOPICS", value_delimiter = ',')]
    pub public_topics: Vec<TopicPattern>,

    /// Topics every agent may subscribe to, as `--public-topics`.
    #[arg(long, env = "PETCHAT_AGENT_TOPICS", value_delimiter = ',', default_value = "support:*")]
    pub agent_topics: Vec<TopicPattern>,

    /// Events each topic keeps for replay.
    #[arg(long, env = "PETCHAT_TOPIC_HISTORY", default_value_t = limits::DEFAULT_TOPIC_HISTORY)]
    pub topic_history: usize,

    /// The longest a topic keeps an event, in milliseconds.
    #[arg(long, env = "PETCHAT_TOPIC_HISTORY_TTL_MS", default_value_t = limits::DEFAULT_TOPIC_HISTORY_TTL_MS)]
    pub topic_history_ttl_ms: u64,

    /// How often the server publishes its support stats on `support:stats`
    /// (when they changed), in milliseconds; 0 turns it off.
    #[arg(long, env = "PETCHAT_SUPPORT_STATS_INTERVAL_MS", default_value_t = 5_000)]
    pub support_stats_interval_ms: u64,
}

impl Default for TopicSettings {
    /// The flags' defaults: no public topics, `support:*` for agents, 100 events for 24 h.
    fn default() -> Self {
        Self {
            public_topics: Vec::new(),
            agent_topics: vec![TopicPattern::new("support:*").expect("a valid pattern")],
            topic_history: limits::DEFAULT_TOPIC_HISTORY,
            topic_history_ttl_ms: limits::DEFAULT_TOPIC_HISTORY_TTL_MS,
            support_stats_interval_ms: 5_000,
        }
    }
}

/// Attachments (docs/protocol.md, "Attachments"): photos and PDFs uploaded
/// over HTTP, kept as files in a directory, their metadata in the store.
#[derive(Debug, Clone, Args)]
pub struct AttachmentSettings {
    /// Directory of the attachments' files (created if missing), named by
    /// attachment id. Default: `petchat-attachments` beside the SQLite file,
    /// or in the working directory with PostgreSQL; every node of a cluster
    /// must see the same directory (a shared file system).
    #[arg(long, env = "PETCHAT_ATTACHMENTS_DIR")]
    pub attachments_dir: Option<PathBuf>,

    /// Largest file an upload may carry, in bytes; bigger ones are answered 413.
    #[arg(long, env = "PETCHAT_MAX_ATTACHMENT_BYTES", default_value_t = limits::DEFAULT_MAX_ATTACHMENT_BYTES)]
    pub max_attachment_bytes: u64,

    /// Largest picture, in pixels (width × height), the server decodes for
    /// its dimensions and thumbnail; bigger ones are answered 413.
    #[arg(long, env = "PETCHAT_MAX_IMAGE_PIXELS", default_value_t = limits::DEFAULT_MAX_IMAGE_PIXELS)]
    pub max_image_pixels: u64,

    /// Most attachments one conversation may hold; more uploads are answered 409.
    #[arg(long, env = "PETCHAT_MAX_ATTACHMENTS_PER_CONVERSATION", default_value_t = 100)]
    pub max_attachments_per_conversation: usize,

    /// Uploads received at once, in total; more are answered 429.
    #[arg(long, env = "PETCHAT_MAX_UPLOADS", default_value_t = 16)]
    pub max_uploads: usize,

    /// Uploads of one user received at once; more are answered 429.
    #[arg(long, env = "PETCHAT_MAX_UPLOADS_PER_USER", default_value_t = 2)]
    pub max_uploads_per_user: usize,

    /// Milliseconds an upload's body may take to arrive; a slower one is answered 408.
    #[arg(long, env = "PETCHAT_UPLOAD_TIMEOUT_MS", default_value_t = 60_000)]
    pub upload_timeout_ms: u64,

    /// Milliseconds an upload may wait for the `chat.send` that names it: an
    /// older upload no message sent is deleted, its record and its files.
    #[arg(long, env = "PETCHAT_UNSENT_ATTACHMENT_MS", default_value_t = 3_600_000)]
    pub unsent_attachment_ms: u64,
}

impl AttachmentSettings {
    /// The directory of the files: `--attachments-dir`, or the default
    /// beside the SQLite file of `database_url` (the working directory otherwise).
    pub fn dir(&self, database_url: &str) -> PathBuf {
        if let Some(dir) = &self.attachments_dir {
            return dir.clone();
        }
        let sqlite = database_url.strip_prefix("sqlite://").or_else(|| database_url.strip_prefix("sqlite:"));
        let beside = sqlite
            .map(|file| file.split('?').next().unwrap_or_default())
            .filter(|file| !file.is_empty() && !file.starts_with(':'))
            .and_then(|file| std::path::Path::new(file).parent().map(std::path::Path::to_path_buf));
        beside.unwrap_or_default().join("petchat-attachments")
    }

    /// How long an upload's body may take.
    pub fn upload_timeout(&self) -> Duration {
        Duration::from_millis(self.upload_timeout_ms.max(1))
    }

    /// How long an upload may stay unsent.
    pub fn unsent_attachment(&self) -> Duration {
        Duration::from_millis(self.unsent_attachment_ms)
    }

    /// How often the server looks for unsent uploads to delete: a tenth of
    /// `--unsent-attachment-ms`, between 50 ms and 60 s, so one goes at most that late.
    pub fn unsent_sweep(&self) -> Duration {
        Duration::from_millis((self.unsent_attachment_ms / 10).clamp(50, 60_000))
    }
}

fn text_chars(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=limits::MAX_TEXT_CHARS).contains(&n) => Ok(n),
        _ => Err(format!("expected 1 to {}", limits::MAX_TEXT_CHARS)),
    }
}

fn token_leeway_ms(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n <= limits::MAX_TOKEN_LEEWAY_MS => Ok(n),
        _ => {
            Err(format!("expected 0 to {} (SPEC §1 allows at most 60 s of clock leeway)", limits::MAX_TOKEN_LEEWAY_MS))
        }
    }
}

/// The most hub shards a node runs, whatever `--hub-shards` says.
pub const MAX_HUB_SHARDS: usize = 64;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Limits and timings, with safe defaults that tests shorten and benchmarks lift.
#[derive(Debug, Clone, Args)]
pub struct Limits {
    /// Client messages (all but ping) per second per connection; the burst is twice this.
    #[arg(long, env = "PETCHAT_MESSAGES_PER_SECOND", default_value_t = limits::DEFAULT_MESSAGES_PER_SECOND)]
    pub messages_per_second: u32,

    /// Largest text frame in bytes; a bigger one closes the connection with 1009.
    #[arg(long, env = "PETCHAT_MAX_MESSAGE_BYTES", default_value_t = limits::MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,

    /// Longest chat text in characters after trimming (at most the protocol's 4000).
    #[arg(long, env = "PETCHAT_MAX_TEXT_CHARS", default_value_t = limits::MAX_TEXT_CHARS, value_parser = text_chars)]
    pub max_text_chars: usize,

    /// Frames queued for one connection before it is closed as a slow consumer (4001).
    #[arg(long, env = "PETCHAT_OUTBOUND_QUEUE", default_value_t = limits::DEFAULT_OUTBOUND_QUEUE_FRAMES)]
    pub outbound_queue: usize,

    /// Simultaneous connections of one user (1013 beyond).
    #[arg(long, env = "PETCHAT_MAX_CONNECTIONS_PER_USER", default_value_t = limits::DEFAULT_MAX_CONNECTIONS_PER_USER)]
    pub max_connections_per_user: usize,

    /// Simultaneous connections of this process (1013 beyond).
    #[arg(long, env = "PETCHAT_MAX_CONNECTIONS", default_value_t = limits::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// Messages replayed after one `conversation.joined` (`hasMore` beyond).
    #[arg(long, env = "PETCHAT_MAX_REPLAY", default_value_t = limits::MAX_REPLAY)]
    pub max_replay: usize,

    /// Open conversations an agent is assigned at most; more wait in the queue.
    #[arg(long, env = "PETCHAT_MAX_CONVERSATIONS_PER_AGENT", default_value_t = 5)]
    pub max_conversations_per_agent: u32,

    /// Milliseconds between the server's pings; 4000 after two silent intervals.
    #[arg(long, env = "PETCHAT_HEARTBEAT_INTERVAL_MS", default_value_t = limits::DEFAULT_HEARTBEAT_INTERVAL_MS)]
    pub heartbeat_interval_ms: u64,

    /// Milliseconds a disconnected agent keeps its conversations before they are re-queued.
    #[arg(long, env = "PETCHAT_AGENT_GRACE_MS", default_value_t = limits::DEFAULT_AGENT_GRACE_MS)]
    pub agent_grace_ms: u64,

    /// Milliseconds after which the server closes a conversation whose customer
    /// has had no connection all along (`reason: "customer_away"`); while the
    /// customer is away its queued conversation is not offered to agents.
    #[arg(long, env = "PETCHAT_CUSTOMER_AWAY_MS", default_value_t = limits::DEFAULT_CUSTOMER_AWAY_MS, value_parser = clap::value_parser!(u64).range(1..))]
    pub customer_away_ms: u64,

    /// Milliseconds without a message after which the server closes an open
    /// conversation (`reason: "idle"`).
    #[arg(long, env = "PETCHAT_CONVERSATION_IDLE_MS", default_value_t = limits::DEFAULT_CONVERSATION_IDLE_MS, value_parser = clap::value_parser!(u64).range(1..))]
    pub conversation_idle_ms: u64,

    /// Milliseconds a `typing.start` lasts without a stop.
    #[arg(long, env = "PETCHAT_TYPING_EXPIRY_MS", default_value_t = limits::TYPING_EXPIRY_MS)]
    pub typing_expiry_ms: u64,

    /// Milliseconds the server waits, on SIGTERM or Ctrl-C, for connections to close and writes to finish.
    #[arg(long, env = "PETCHAT_SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,

    /// Milliseconds a new TCP connection has to send complete request headers
    /// (the WebSocket upgrade included), and a kept-alive HTTP connection
    /// between requests; slower ones are dropped (SPEC §1).
    #[arg(long, env = "PETCHAT_HANDSHAKE_TIMEOUT_MS", default_value_t = 10_000)]
    pub handshake_timeout_ms: u64,

    /// Connections in their HTTP phase (not yet WebSockets: handshakes and
    /// plain HTTP requests) held at once; more are closed at accept.
    #[arg(long, env = "PETCHAT_MAX_HANDSHAKES", default_value_t = 1_024)]
    pub max_handshakes: usize,

    /// Milliseconds a write to a peer may make no progress before the
    /// connection is dropped (a client that does not read its responses).
    #[arg(long, env = "PETCHAT_WRITE_TIMEOUT_MS", default_value_t = 30_000)]
    pub write_timeout_ms: u64,

    /// History requests (`GET /v1/conversations/{id}/messages`) served at
    /// once, in total; more are answered 429.
    #[arg(long, env = "PETCHAT_MAX_HISTORY_REQUESTS", default_value_t = 32)]
    pub max_history_requests: usize,

    /// History requests of one user served at once; more are answered 429.
    #[arg(long, env = "PETCHAT_MAX_HISTORY_REQUESTS_PER_USER", default_value_t = 4)]
    pub max_history_requests_per_user: usize,

    /// Milliseconds of clock leeway on a token's exp and nbf (at most 60000); a live
    /// connection is closed with 4501 at its token's exp plus this, unless refreshed.
    #[arg(long, env = "PETCHAT_TOKEN_LEEWAY_MS", default_value_t = limits::DEFAULT_TOKEN_LEEWAY_MS, value_parser = token_leeway_ms)]
    pub token_leeway_ms: u64,

    /// Messages one store transaction commits at most (group commit).
    #[arg(long, env = "PETCHAT_COMMIT_BATCH", default_value_t = 256)]
    pub commit_batch: usize,

    /// An SSE stream sends a comment after this long without an event, so
    /// that proxies never see it silent for 15 s (SPEC §14).
    #[arg(long, env = "PETCHAT_SSE_KEEPALIVE_MS", default_value_t = limits::SSE_KEEPALIVE_MS)]
    pub sse_keepalive_ms: u64,

    /// Hub shards: conversations are partitioned across this many tasks, each
    /// with its own group commit; 0 means one per core.
    #[arg(long, env = "PETCHAT_HUB_SHARDS", default_value_t = 0)]
    pub hub_shards: usize,
}

impl Limits {
    /// How many hub shards run: `--hub-shards`, or one per core, at most
    /// [`MAX_HUB_SHARDS`].
    pub fn hub_shards(&self) -> usize {
        let shards = match self.hub_shards {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            n => n,
        };
        shards.clamp(1, MAX_HUB_SHARDS)
    }

    /// The SSE keep-alive interval.
    pub fn sse_keepalive(&self) -> Duration {
        Duration::from_millis(self.sse_keepalive_ms.max(1))
    }

    /// The heartbeat interval.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms.max(1))
    }

    /// The agent grace period.
    pub fn agent_grace(&self) -> Duration {
        Duration::from_millis(self.agent_grace_ms)
    }

    /// How often the pool looks for conversations to close (away customers,
    /// idle conversations): a tenth of the shorter period, between 50 ms and 30 s,
    /// so a close comes at most that late.
    pub fn lifecycle_sweep(&self) -> Duration {
        let shorter = self.customer_away_ms.min(self.conversation_idle_ms);
        Duration::from_millis((shorter / 10).clamp(50, 30_000))
    }

    /// How long a typing indicator lasts.
    pub fn typing_expiry(&self) -> Duration {
        Duration::from_millis(self.typing_expiry_ms)
    }

    /// The shutdown grace time.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    /// The time a connection has to complete its HTTP request.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms.max(1))
    }

    /// The time a write may make no progress.
    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms.max(1))
    }
}

impl Config {
    /// The SQLite file of a `sqlite://` URL, or `None` for another scheme.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        self.database_url
            .strip_prefix("sqlite://")
            .or_else(|| self.database_url.strip_prefix("sqlite:"))
            .map(PathBuf::from)
    }
}

/// Configuration for tests: defaults, a throwaway database, a fixed secret.
impl Config {
    /// A configuration with every default, the given database and secret.
    pub fn with_defaults(database_url: impl Into<String>, jwt_secret: impl Into<String>) -> Self {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: Config,
        }
        let mut config = <Wrapper as clap::Parser>::parse_from(["petchat-server"]).config;
        config.database_url = database_url.into();
        config.jwt_secret = Some(jwt_secret.into());
        config
    }
}
