//! The link between petchat nodes that share one Redis: fan-out, presence and
//! the per-user cap across nodes, node liveness.
//!
//! A [`RedisLink`] is this node's handle on the cluster. It holds two
//! connections to Redis, each with one job:
//!
//! - a command connection (a reconnecting [`redis::aio::ConnectionManager`])
//!   for the presence scripts, heartbeats, reaps and pipelined `PUBLISH`;
//! - a subscription connection owned by one task, made again from scratch
//!   whenever it fails, which is what lets it say [`LinkEvent::Lost`] and
//!   [`LinkEvent::Restored`] truthfully (see `fanout.rs`).
//!
//! No call of the public API ever waits on the subscription connection.
//!
//! Every key and channel lives under [`LinkSettings::key_prefix`]; the names
//! are made in one place, `keys.rs`. Payloads are opaque bytes.
//!
//! Presence is counted in Redis: per node, how many connections each user has
//! there, and per user, the total. The Lua scripts under `lua/` keep both in
//! step atomically, one round trip each. Redis is the only clock: heartbeats
//! are scored with `TIME` inside the scripts, so the nodes' clocks need not
//! agree.
//!
//! The scripts touch keys they compute from what they read, so the link needs
//! a standalone Redis (or a primary with replicas), not Redis Cluster.
//!
//! What a caller must know:
//!
//! - While Redis is unreachable, `publish` returns `false` (nothing is
//!   queued), and `attach`, `detach`, `online` and `ping` fail within
//!   [`LinkSettings::command_timeout`].
//! - A dead node's connections count toward the cap and show online until it
//!   is reaped: at most two heartbeats after its last beat, plus half a
//!   heartbeat for the next check.
//! - A node reaped while it was only paused registers again by itself and
//!   writes its connections back ([`LinkEvent::Recounted`]); meanwhile the
//!   others saw its users go offline, so the caller announces them again.
//! - A Redis that restarts empty forgets every count: each node writes its
//!   own back at its next beat (`Recounted`), but a node that died during the
//!   outage is never reaped and its users never reported offline; after
//!   [`LinkEvent::Restored`] a caller asks [`RedisLink::online`] again about
//!   the users it shows.
//! - `NodeGone` is lost if the reaping node's connection breaks between the
//!   script's run and its reply: the counts are right, the event is missing.
//!
//! Architecture invariant: this module knows nothing of the hub, the protocol
//! or PostgreSQL. It moves bytes and counts; catching up after
//! [`LinkEvent::Restored`] is the caller's job.

mod fanout;
mod keys;
mod kv;
mod nodes;
mod presence;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tracing::info;

pub use presence::{Attached, Detached};

use self::fanout::Fanout;
use self::keys::Keys;
use self::presence::Presence;

/// How many events wait for the caller before the link stops reading Redis
/// (Redis then buffers, and past its pub/sub output limit drops the
/// subscription, which comes back as `Lost` and `Restored`).
const EVENT_QUEUE: usize = 1024;

/// The name of one node of the cluster, unique among the live ones.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(String);

impl NodeId {
    /// The longest node id accepted, in bytes.
    pub const MAX_LEN: usize = 128;

    /// A node id: 1 to [`NodeId::MAX_LEN`] bytes, no whitespace or control characters.
    pub fn new(id: impl Into<String>) -> Result<Self, ClusterError> {
        let id = id.into();
        let valid =
            !id.is_empty() && id.len() <= Self::MAX_LEN && !id.chars().any(|c| c.is_whitespace() || c.is_control());
        if valid { Ok(Self(id)) } else { Err(ClusterError::InvalidNodeId(id)) }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How the link behaves; [`LinkSettings::default`] suits production.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// The heartbeat interval: beats go every half of it, and a node silent for two is reaped.
    pub heartbeat: Duration,
    /// What every key and channel name starts with.
    pub key_prefix: String,
    /// How many publishes may wait for the publisher task before `publish` drops them.
    pub publish_queue: usize,
    /// How long any one Redis command may take before it fails with [`ClusterError::Timeout`].
    pub command_timeout: Duration,
}

impl Default for LinkSettings {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(5),
            key_prefix: "petchat:".to_owned(),
            publish_queue: 4096,
            command_timeout: Duration::from_secs(1),
        }
    }
}

impl LinkSettings {
    /// How long a node may go without a beat before it is reaped.
    fn dead_after(&self) -> Duration {
        self.heartbeat * 2
    }

    /// How often a node beats, checks for dead nodes and pings its subscription.
    fn beat_every(&self) -> Duration {
        self.heartbeat / 2
    }

    fn validate(&self) -> Result<(), ClusterError> {
        if self.heartbeat < Duration::from_millis(20) {
            return Err(ClusterError::InvalidSettings("heartbeat must be at least 20 ms"));
        }
        if self.publish_queue == 0 {
            return Err(ClusterError::InvalidSettings("publish_queue must be at least 1"));
        }
        if self.command_timeout.is_zero() {
            return Err(ClusterError::InvalidSettings("command_timeout must not be zero"));
        }
        Ok(())
    }
}

/// What the link tells its owner, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// A message on a channel this link is subscribed to.
    Message {
        /// The channel, without the key prefix.
        channel: String,
        /// The bytes as published.
        payload: bytes::Bytes,
    },
    /// The subscription connection broke: messages published from now on may be missed.
    Lost,
    /// Subscribed again to every channel: callers catch up (from PostgreSQL) whatever they missed since `Lost`.
    Restored,
    /// A node stopped heartbeating for two heartbeat intervals (or left); exactly one surviving node gets this event, with the users whose last connection was on the dead node (they are now offline everywhere).
    NodeGone {
        /// The node that is gone.
        node: NodeId,
        /// Users with no connection left on any node.
        offline_users: Vec<String>,
    },
    /// This node's counts were written to Redis again from its own record (it was reaped while alive, Redis restarted empty, or a command's outcome was unknown), which changed who is online.
    Recounted {
        /// Users who are online again because of this node's connections.
        online: Vec<String>,
        /// Users Redis counted on this node who have no connection anywhere now.
        offline: Vec<String>,
    },
}

/// Why a link operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The Redis URL could not be parsed.
    #[error("redis url: {0}")]
    Url(String),
    /// A node id that is empty, too long, or holds whitespace or control characters.
    #[error("invalid node id {0:?}")]
    InvalidNodeId(String),
    /// Settings the link cannot run with.
    #[error("link settings: {0}")]
    InvalidSettings(&'static str),
    /// Redis answered with an error, or the connection to it failed.
    #[error("redis: {0}")]
    Redis(String),
    /// Redis did not answer in time.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// `detach` of a user with no attached connection on this node.
    #[error("no connection of {0:?} is attached on this node")]
    NotAttached(String),
    /// Redis kept losing this node's registration while the link wrote it again.
    #[error("this node's registration in redis keeps disappearing")]
    Unregistered,
    /// The link was shut down.
    #[error("the cluster link is shut down")]
    Closed,
}

impl ClusterError {
    fn from_redis(err: redis::RedisError, timeout: Duration) -> Self {
        if err.is_timeout() { Self::Timeout(timeout) } else { Self::Redis(err.to_string()) }
    }
}

/// This node's handle on the cluster; clones share one link.
///
/// Dropping every clone without [`RedisLink::shutdown`] stops the link as a
/// crash would: the other nodes reap this one after two heartbeats.
#[derive(Clone)]
pub struct RedisLink {
    inner: Arc<Inner>,
}

/// What every clone of a link shares; each field says why it exists.
struct Inner {
    /// Who this link speaks for.
    node: NodeId,
    /// Key and channel names under the prefix.
    keys: Keys,
    /// Timeouts and intervals.
    settings: LinkSettings,
    /// The command connection: scripts, `PING`, the leave on shutdown.
    conn: ConnectionManager,
    /// Publishing and the subscription's reference counts.
    fanout: Fanout,
    /// This node's connection counts, shared with the heartbeat task.
    presence: Arc<Presence>,
    /// Stops the background tasks.
    stop: CancellationToken,
    /// The background tasks, awaited by `shutdown`.
    tasks: TaskTracker,
    /// Stops the tasks when the last clone goes without `shutdown`.
    _crash: DropGuard,
}

impl fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLink").field("node", &self.inner.node).finish_non_exhaustive()
    }
}

impl RedisLink {
    /// Connects to Redis, registers this node and subscribes, returning the handle and its events.
    pub async fn connect(
        url: &str,
        node: NodeId,
        settings: LinkSettings,
    ) -> Result<(RedisLink, mpsc::Receiver<LinkEvent>), ClusterError> {
        settings.validate()?;
        let client = redis::Client::open(url).map_err(|err| ClusterError::Url(err.to_string()))?;
        let timeout = settings.command_timeout;
        // Few, quick reconnect attempts: a command waits on a pending
        // reconnect, and none may wait much longer than `command_timeout`;
        // the next command after a failed attempt starts another.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(timeout / 2)
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let conn = within(timeout, ConnectionManager::new_with_config(client.clone(), config)).await?;

        let keys = Keys::new(&settings.key_prefix);
        let stop = CancellationToken::new();
        // Stops whatever started if connecting fails halfway; the link keeps it.
        let crash = stop.clone().drop_guard();
        let tasks = TaskTracker::new();
        let (events, events_rx) = mpsc::channel(EVENT_QUEUE);
        let (notices, notices_rx) = mpsc::unbounded_channel();
        tasks.spawn(nodes::forward(notices_rx, events.clone(), stop.clone()));

        let presence = Arc::new(Presence::new(conn.clone(), keys.clone(), node.clone(), timeout, notices.clone()));
        // Registers the node, clearing counts an earlier process of the same id left.
        presence.recount().await?;

        let wake = Arc::new(tokio::sync::Notify::new());
        let fanout =
            Fanout::start(&client, conn.clone(), keys.clone(), &settings, events, wake.clone(), &stop, &tasks).await?;
        let heart = nodes::Heart {
            conn: conn.clone(),
            keys: keys.clone(),
            node: node.clone(),
            settings: settings.clone(),
            presence: presence.clone(),
            notices,
            wake,
            stop: stop.clone(),
        };
        tasks.spawn(heart.run());
        tasks.close();
        info!(node = %node, "joined the cluster");

        let inner = Inner { node, keys, settings, conn, fanout, presence, _crash: crash, stop, tasks };
        Ok((RedisLink { inner: Arc::new(inner) }, events_rx))
    }

    /// Whether Redis answers, for `/readyz`.
    pub async fn ping(&self) -> Result<(), ClusterError> {
        let mut conn = self.inner.conn.clone();
        within(self.inner.settings.command_timeout, redis::cmd("PING").query_async::<String>(&mut conn)).await.map(drop)
    }

    /// This node's id.
    pub fn node(&self) -> &NodeId {
        &self.inner.node
    }

    /// How long one Redis command may take ([`LinkSettings::command_timeout`]).
    pub fn command_timeout(&self) -> Duration {
        self.inner.settings.command_timeout
    }

    /// Leaves the cluster cleanly: stops the tasks, and has another node reap this one's counts now.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        if inner.stop.is_cancelled() {
            return;
        }
        inner.stop.cancel();
        inner.tasks.wait().await;
        // Only now: a heartbeat still running could re-register this node.
        match nodes::leave(&inner.conn, &inner.keys, &inner.node, inner.settings.command_timeout).await {
            Ok(()) => info!(node = %inner.node, "left the cluster"),
            Err(err) => {
                tracing::warn!(node = %inner.node, error = %err, "leaving the cluster failed: the others reap this node after two heartbeats")
            }
        }
    }

    fn check_open(&self) -> Result<(), ClusterError> {
        if self.inner.stop.is_cancelled() { Err(ClusterError::Closed) } else { Ok(()) }
    }
}

/// A Redis call bounded by `timeout`.
async fn within<T>(timeout: Duration, call: impl Future<Output = redis::RedisResult<T>>) -> Result<T, ClusterError> {
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| ClusterError::Timeout(timeout))?
        .map_err(|err| ClusterError::from_redis(err, timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_checked() {
        assert_eq!(NodeId::new("web-1:4242").map(|id| id.to_string()).ok(), Some("web-1:4242".to_owned()));
        for bad in ["", "a b", "tab\there", "nl\n", &"x".repeat(NodeId::MAX_LEN + 1)] {
            assert!(matches!(NodeId::new(bad), Err(ClusterError::InvalidNodeId(_))), "{bad:?} was accepted");
        }
        assert!(NodeId::new("x".repeat(NodeId::MAX_LEN)).is_ok());
    }

    #[test]
    fn settings_are_checked() {
        assert!(LinkSettings::default().validate().is_ok());
        let zero_queue = LinkSettings { publish_queue: 0, ..LinkSettings::default() };
        assert!(matches!(zero_queue.validate(), Err(ClusterError::InvalidSettings(_))));
        let tiny_beat = LinkSettings { heartbeat: Duration::from_millis(5), ..LinkSettings::default() };
        assert!(matches!(tiny_beat.validate(), Err(ClusterError::InvalidSettings(_))));
    }

    #[test]
    fn a_node_is_dead_after_two_heartbeats_and_beats_twice_per_heartbeat() {
        let settings = LinkSettings { heartbeat: Duration::from_millis(200), ..LinkSettings::default() };
        assert_eq!(settings.dead_after(), Duration::from_millis(400));
        assert_eq!(settings.beat_every(), Duration::from_millis(100));
    }
}
