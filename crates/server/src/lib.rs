//! The petchat chat server: `/v1/ws/chat` over axum + tokio, durable on SQLite
//! (one node) or PostgreSQL (one node or a cluster of them sharing a Redis).
//!
//! [`run`] serves on a listener until a shutdown future resolves; tests bind
//! `127.0.0.1:0` and decide when it stops. The pieces: [`ws`] handshakes and
//! runs one task per connection, [`hub`] owns conversation state and commits
//! before it speaks, [`store`] persists, [`bus`] fans frames out.

mod api;
mod attachments;
pub mod auth;
pub mod bus;
pub mod cluster;
pub mod config;
mod cors;
mod gate;
mod http;
pub mod hub;
mod listen;
mod sse;
pub mod store;
mod telemetry;
mod token_clock;
mod ws;

use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;

use axum::Router;
use axum::routing::{any, get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, warn};

pub use auth::{AuthError, Keys};
pub use config::{Config, LogFormat};
pub use telemetry::init_logging;

use crate::bus::LocalBus;
use crate::hub::Hub;
use crate::store::{Store, StoreError};
use crate::ws::OriginPolicy;

/// Why the server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// No `--jwt-secret` and no `--dev`.
    #[error("no JWT secret: set --jwt-secret or PETCHAT_JWT_SECRET (or run with --dev)")]
    MissingSecret,
    /// `--redis-url` with a store that cannot be shared.
    #[error(
        "--redis-url needs a PostgreSQL --database-url (postgres://…): SQLite serves one node only, and every node of a cluster must share one database"
    )]
    ClusterNeedsPostgres,
    /// The cluster's Redis could not be joined.
    #[error("cluster: {0}")]
    Cluster(#[from] cluster::ClusterError),
    /// Settings that contradict each other.
    #[error("configuration: {0}")]
    Config(String),
    /// The store failed to open.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Serving failed.
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
}

/// What every handler shares; each field says why it exists.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

pub(crate) struct Shared {
    /// Routes every connection's requests to the one task that owns conversation state.
    hub: Hub,
    /// Checks tokens at the handshake and on the history endpoint.
    keys: Keys,
    /// Limits and timings every connection applies.
    limits: config::Limits,
    /// Which `Origin`s may connect.
    origins: OriginPolicy,
    /// Read directly by the history endpoint and readiness.
    store: Arc<dyn Store>,
    /// Cancelled on shutdown: every connection closes with 1001.
    shutdown: CancellationToken,
    /// Counts connection tasks, so shutdown waits for their close frames.
    tracker: TaskTracker,
    /// Renders `/metrics`.
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Serves the pages (`/`, `/agent`).
    web_dir: std::path::PathBuf,
    /// Serves the browser package and the pages' files from `web_dir`.
    files: tower_http::services::ServeDir,
    /// Development mode: `/dev/token` hands out tokens.
    dev: bool,
    /// Bounds the history responses held at once, in total and per user.
    history_gate: gate::Gate,
    /// The server API's keys.
    api_keys: api::ApiKeys,
    /// SSE tickets, kept until used or expired.
    tickets: sse::tickets::Tickets,
    /// The attachments' directory, limits and upload gate.
    attachments: Arc<attachments::Attachments>,
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// Serves `config` on `listener` until `shutdown` resolves, then closes every
/// connection with 1001, commits what is in flight and returns within the
/// shutdown grace time.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let secret = config.jwt_secret.clone().ok_or(ServerError::MissingSecret)?;
    if config.limits.outbound_queue <= config.limits.max_replay {
        return Err(ServerError::Config(format!(
            "--outbound-queue ({}) must exceed --max-replay ({}): a replay would overflow the queue",
            config.limits.outbound_queue, config.limits.max_replay
        )));
    }
    if config.redis_url.is_some() && !store::is_shared_url(&config.database_url) {
        return Err(ServerError::ClusterNeedsPostgres);
    }
    // In a cluster every log line of the node's tasks names the node.
    let node = match &config.redis_url {
        Some(_) => Some(cluster::NodeId::new(config.node_id.clone().unwrap_or_else(|| default_node_id(&config)))?),
        None => None,
    };
    let node_span = match &node {
        Some(node) => tracing::info_span!("node", node = %node),
        None => tracing::Span::none(),
    };
    let attachments_dir = config.attachments.dir(&config.database_url);
    let attachments = attachments::Attachments::open(attachments_dir.clone(), config.attachments.clone())
        .map_err(|e| ServerError::Config(format!("--attachments-dir {}: {e}", attachments_dir.display())))?;
    let store = store::open(&config.database_url).await?;
    let bus = Arc::new(LocalBus::default());
    let link = match (&config.redis_url, node) {
        (Some(url), Some(node)) => {
            let settings = cluster::LinkSettings {
                heartbeat: config.limits.heartbeat_interval(),
                ..cluster::LinkSettings::default()
            };
            telemetry::label_metrics_with_node(node.as_str());
            let (link, events) = cluster::RedisLink::connect(url, node, settings).instrument(node_span.clone()).await?;
            Some((link, events))
        }
        _ => None,
    };
    let node_link = link.as_ref().map(|(link, _)| link.clone());
    let cluster = link.map(|(link, events)| hub::Cluster { link, events });
    let (hub, hub_task) = Hub::start_in(store.clone(), bus, config.limits.clone(), config.topics.clone(), cluster)
        .instrument(node_span.clone())
        .await?;
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    hub::dashboard::spawn(
        hub.clone(),
        std::time::Duration::from_millis(config.topics.support_stats_interval_ms),
        stop.clone(),
    );
    attachments::sweep_unsent(attachments.clone(), store.clone(), stop.clone());
    let state = AppState(Arc::new(Shared {
        hub,
        keys: Keys::new(secret.as_bytes()).with_leeway_ms(config.limits.token_leeway_ms),
        limits: config.limits.clone(),
        origins: OriginPolicy::new(&config.allowed_origins, config.dev),
        store: store.clone(),
        shutdown: stop.clone(),
        tracker: tracker.clone(),
        metrics: telemetry::metrics_handle(),
        web_dir: config.web_dir.clone(),
        files: tower_http::services::ServeDir::new(&config.web_dir).precompressed_gzip(),
        dev: config.dev,
        history_gate: gate::Gate::new(config.limits.max_history_requests, config.limits.max_history_requests_per_user),
        api_keys: api::ApiKeys::new(&config.api_keys),
        tickets: sse::tickets::Tickets::new(node_link.clone()),
        attachments,
    }));
    // The routes pages of other origins call with a Bearer token (the widget on a shop's page).
    let conversations = Router::new()
        .route("/v1/conversations/{id}/messages", get(http::history))
        .route("/v1/conversations/{id}/attachments", post(attachments::upload))
        .route("/v1/conversations/{id}/attachments/{attachment}", get(attachments::file))
        .route("/v1/conversations/{id}/attachments/{attachment}/thumbnail", get(attachments::thumbnail))
        .layer(cors::conversations(state.origins.clone()));
    let app = Router::new()
        .merge(conversations)
        .route(petchat_protocol::handshake::PATH, get(ws::upgrade))
        .route("/healthz", get(http::healthz))
        .route("/readyz", get(http::readyz))
        .route("/metrics", get(http::metrics))
        .route("/asyncapi.yaml", get(http::asyncapi))
        .route("/openapi.json", get(http::openapi))
        .route("/schemas/{*path}", get(http::schemas))
        .route("/v1/api/publish", post(api::publish))
        .route("/v1/api/notify", post(api::notify))
        .route("/v1/api/presence/{user}", get(api::presence))
        .route("/v1/api/stats", get(api::stats))
        .route("/v1/api/{*rest}", any(api::not_found))
        .route("/v1/sse", get(sse::stream))
        .route("/v1/sse/tickets", post(sse::ticket))
        .route("/dev/token", get(http::dev_token))
        .route("/dev/publish", post(http::dev_publish))
        .route("/", get(http::page))
        .route("/agent", get(http::page))
        .fallback(http::static_file)
        .layer(telemetry::trace_layer())
        .with_state(state.clone());

    info!(addr = %listener.local_addr()?, node = node_link.as_ref().map_or("-", |link| link.node().as_str()), "petchat listening");
    let settings = listen::Settings {
        handshake_timeout: config.limits.handshake_timeout(),
        write_timeout: config.limits.write_timeout(),
        max_handshakes: config.limits.max_handshakes,
    };
    let accepting =
        tokio::spawn(listen::serve(listener, app, settings, stop.clone(), tracker.clone()).instrument(node_span));
    shutdown.await;
    // The grace time is one deadline for everything that follows.
    let deadline = tokio::time::Instant::now() + config.limits.shutdown_grace();
    info!("shutting down: closing connections with 1001");
    stop.cancel();
    let _ = accepting.await;

    // The listener is closed; connections are closing with 1001.
    tracker.close();
    if tokio::time::timeout_at(deadline, tracker.wait()).await.is_err() {
        warn!(remaining = tracker.len(), "shutdown grace over with connections still open: abandoning them");
    }
    drop(state);
    // Every handle to the hub is gone: it commits what is queued and stops.
    // (Abandoned connections still hold handles: then the deadline decides.)
    if tokio::time::timeout_at(deadline, hub_task).await.is_err() {
        warn!("the hub did not finish within the shutdown grace");
    }
    // Leaving the cluster now lets another node take this one's counts at once.
    if let Some(link) = node_link {
        let _ = tokio::time::timeout_at(deadline, link.shutdown()).await;
    }
    // A clean stop checkpoints the WAL, if there is time left for it.
    let _ = tokio::time::timeout_at(deadline, store.close()).await;
    info!("stopped");
    Ok(())
}

/// A node id when `--node-id` is not given: the host name and the port.
fn default_node_id(config: &Config) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "petchat".to_owned());
    format!("{host}:{}", config.bind.port())
}
