//! `petchat subscribe`, `petchat publish` and `petchat notify`: live updates
//! from the command line (SPEC §11–§13).
//!
//! `subscribe` prints every `topic.event` and `notification` of the user as
//! one JSON envelope per line on stdout, resuming every topic after each
//! reconnect without loss or repeat (the session core); a refused topic is an
//! `error` line. `publish` and `notify` call the server API with an API key
//! and print its JSON answer.

use clap::Args;
use petchat_client::connect;
use petchat_protocol::api::{ApiError, IdempotencyKey, NotifyRequest, PublishRequest};
use petchat_protocol::session::{ConnectionState, Event};
use petchat_protocol::{EventName, Link, NotificationBody, NotificationTitle, ServerMessage, TopicName, UserId};

use super::{Connection, Failure, exit, other, stopped};

/// `petchat subscribe`.
#[derive(Debug, Args)]
pub(crate) struct SubscribeArgs {
    #[command(flatten)]
    connection: Connection,
    /// The topics (`orders:1234`…).
    #[arg(required = true)]
    topics: Vec<String>,
}

/// Where the server API is and the key it takes.
#[derive(Debug, Args)]
pub(crate) struct Api {
    /// The server's HTTP address, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "PETCHAT_API_URL", default_value = "http://127.0.0.1:8080")]
    api_url: String,
    /// A key of the server's --api-keys.
    #[arg(long, env = "PETCHAT_API_KEY", hide_env_values = true)]
    api_key: String,
    /// Do it once, however often the command is run with this key (24 h).
    #[arg(long)]
    idempotency_key: Option<String>,
}

/// `petchat publish`.
#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    #[command(flatten)]
    api: Api,
    /// The topic.
    topic: String,
    /// What happened (`order.shipped`).
    event: String,
    /// The event's data: a JSON object.
    #[arg(long, default_value = "{}")]
    data: String,
}

/// `petchat notify`.
#[derive(Debug, Args)]
pub(crate) struct NotifyArgs {
    #[command(flatten)]
    api: Api,
    /// Whom it is for.
    #[arg(long)]
    user: String,
    /// What it is about (`order.shipped`).
    #[arg(long)]
    kind: String,
    /// One line.
    #[arg(long)]
    title: String,
    /// The text.
    #[arg(long, default_value = "")]
    body: String,
    /// Where to read more.
    #[arg(long)]
    link: Option<String>,
}

fn usage(what: &str) -> impl Fn(petchat_protocol::InvalidValue) -> Failure + '_ {
    move |e| Failure::new(exit::USAGE, format!("{what}: {e}"))
}

impl Api {
    fn key(&self) -> Result<Option<IdempotencyKey>, Failure> {
        self.idempotency_key.clone().map(IdempotencyKey::new).transpose().map_err(usage("--idempotency-key"))
    }

    /// POSTs `body` to `path` and prints the answer; an error answer is a failure.
    async fn post(&self, path: &str, body: &impl serde::Serialize) -> Result<(), Failure> {
        let url = format!("{}{path}", self.api_url.trim_end_matches('/'));
        let response = reqwest::Client::new()
            .post(&url)
            .bearer_auth(&self.api_key)
            .json(body)
            .send()
            .await
            .map_err(|e| Failure::new(exit::OTHER, format!("POST {url}: {e}")))?;
        let status = response.status();
        let text = response.text().await.map_err(other)?;
        if status.is_success() {
            println!("{}", text.trim());
            return Ok(());
        }
        let why = serde_json::from_str::<ApiError>(&text)
            .map(|e| format!("{} ({})", e.error.message, e.error.code.as_str()))
            .unwrap_or(text);
        let code = if status == reqwest::StatusCode::UNAUTHORIZED { exit::UNAUTHORIZED } else { exit::OTHER };
        Err(Failure::new(code, format!("POST {path}: {status}: {why}")))
    }
}

pub(crate) async fn publish(args: PublishArgs) -> Result<(), Failure> {
    let data = match serde_json::from_str(&args.data) {
        Ok(serde_json::Value::Object(data)) => data,
        _ => return Err(Failure::new(exit::USAGE, "--data must be a JSON object")),
    };
    let request = PublishRequest {
        topic: TopicName::new(args.topic).map_err(usage("TOPIC"))?,
        event: EventName::new(args.event).map_err(usage("EVENT"))?,
        data,
        idempotency_key: args.api.key()?,
    };
    args.api.post("/v1/api/publish", &request).await
}

pub(crate) async fn notify(args: NotifyArgs) -> Result<(), Failure> {
    let request = NotifyRequest {
        user_id: UserId::new(args.user).map_err(usage("--user"))?,
        kind: EventName::new(args.kind).map_err(usage("--kind"))?,
        title: NotificationTitle::new(args.title).map_err(usage("--title"))?,
        body: NotificationBody::new(args.body).map_err(usage("--body"))?,
        link: args.link.map(Link::new).transpose().map_err(usage("--link"))?,
        idempotency_key: args.api.key()?,
    };
    args.api.post("/v1/api/notify", &request).await
}

pub(crate) async fn subscribe(args: SubscribeArgs) -> Result<(), Failure> {
    let topics = args.topics.into_iter().map(TopicName::new).collect::<Result<Vec<_>, _>>().map_err(usage("TOPIC"))?;
    let config = args.connection.config()?;
    let (client, mut events) = connect(config).map_err(|e| Failure::new(exit::USAGE, e.to_string()))?;
    for topic in &topics {
        client.subscribe(topic).await.map_err(other)?;
    }
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = &mut ctrl_c => {
                client.disconnect().await;
                return Ok(());
            }
        };
        let Some(event) = event else { return Err(Failure::new(exit::OTHER, "the client stopped")) };
        match event {
            Event::Message(envelope) => match &envelope.message {
                ServerMessage::TopicEvent(_) | ServerMessage::Notification(_) | ServerMessage::Error(_) => {
                    println!("{}", envelope.encode());
                }
                _ => {}
            },
            Event::State(ConnectionState::Stopped { close_code }) => return Err(stopped(close_code)),
            _ => {}
        }
    }
}
