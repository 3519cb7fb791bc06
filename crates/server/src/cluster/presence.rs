//! Presence and the per-user connection cap across nodes: who is online
//! anywhere, counted in Redis by atomic scripts.
//!
//! Redis holds, per node, how many connections each user has there (a hash),
//! and per user the total across registered nodes. This node also keeps its
//! own record of its counts: that record is the truth about its connections,
//! and Redis is made to agree with it again (a recount) whenever they may
//! differ: the node was reaped while alive (a long pause), Redis restarted
//! empty, or a command failed without telling whether it was applied.
//!
//! A user is online while its total is above zero. A total only falls to zero
//! through one of `detach` ([`Detached::LastAnywhere`]), a reap
//! ([`LinkEvent::NodeGone`]) or a recount ([`LinkEvent::Recounted`]), each of
//! them a single script, so every 1 -> 0 is reported once; likewise every
//! 0 -> 1 by `attach` (`first_anywhere`) or a recount.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;
use tokio::sync::{RwLock, mpsc};
use tracing::{debug, info};

use super::keys::Keys;
use super::{ClusterError, LinkEvent, NodeId, RedisLink, within};

static ATTACH: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/attach.lua")));
static DETACH: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/detach.lua")));
static RECOUNT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/recount.lua")));
static CONNECTIONS: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/connections.lua")));

/// What `attach` decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attached {
    /// The user already has `total` connections across the cluster, the cap or more: nothing was counted.
    Refused {
        /// The user's connections across every node.
        total: usize,
    },
    /// Counted on this node; `first_anywhere` when the user had no connection on any node before.
    Counted {
        /// The user went from offline to online everywhere with this connection.
        first_anywhere: bool,
    },
}

/// What `detach` left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detached {
    /// The user still has a connection on some node.
    StillOnline,
    /// That was the user's last connection on any node: it is offline everywhere now.
    LastAnywhere,
}

impl RedisLink {
    /// Atomically: refuses if the user's total across registered nodes is at `cap` or more (a dead node's count goes with its reap), else counts one more connection on this node.
    pub async fn attach(&self, user: &str, cap: usize) -> Result<Attached, ClusterError> {
        self.check_open()?;
        self.inner.presence.attach(user, cap).await
    }

    /// Counts one connection of the user less on this node; on an error the connection is forgotten all the same, and Redis is set right by the next heartbeat.
    pub async fn detach(&self, user: &str) -> Result<Detached, ClusterError> {
        self.check_open()?;
        self.inner.presence.detach(user).await
    }

    /// For each user, whether it has a connection on any node, in one round trip.
    pub async fn online(&self, users: &[&str]) -> Result<Vec<bool>, ClusterError> {
        self.check_open()?;
        Ok(self.inner.presence.totals(users).await?.into_iter().map(|total| total > 0).collect())
    }

    /// Every connection on every registered node.
    pub async fn connections_total(&self) -> Result<u64, ClusterError> {
        self.check_open()?;
        let presence = &self.inner.presence;
        let mut invocation = CONNECTIONS.prepare_invoke();
        invocation.key(presence.keys.nodes()).arg(presence.keys.node_counts_prefix());
        let mut conn = presence.conn.clone();
        let total: i64 = within(presence.timeout, invocation.invoke_async(&mut conn)).await?;
        Ok(total.max(0) as u64)
    }

    /// How many connections the user has across every node.
    pub async fn connections_of(&self, user: &str) -> Result<u64, ClusterError> {
        self.check_open()?;
        Ok(self.inner.presence.totals(&[user]).await?.first().copied().unwrap_or(0))
    }
}

/// This node's side of presence, shared by the handle and the heartbeat task.
pub(super) struct Presence {
    /// The command connection.
    pub(super) conn: ConnectionManager,
    /// Key names.
    pub(super) keys: Keys,
    /// Who counts.
    pub(super) node: NodeId,
    /// How long one command may take.
    pub(super) timeout: Duration,
    /// Attach and detach share it; a recount takes it alone, so that it writes
    /// a record no script in flight is about to change.
    gate: RwLock<()>,
    /// This node's own count of each user's connections: the truth a recount writes.
    mine: Mutex<HashMap<String, usize>>,
    /// Redis may disagree with `mine` (a command failed midway): recount at the next beat.
    dirty: AtomicBool,
    /// Where `Recounted` goes.
    notices: mpsc::UnboundedSender<LinkEvent>,
}

impl Presence {
    pub(super) fn new(
        conn: ConnectionManager,
        keys: Keys,
        node: NodeId,
        timeout: Duration,
        notices: mpsc::UnboundedSender<LinkEvent>,
    ) -> Self {
        Self {
            conn,
            keys,
            node,
            timeout,
            gate: RwLock::new(()),
            mine: Mutex::new(HashMap::new()),
            dirty: AtomicBool::new(false),
            notices,
        }
    }

    async fn attach(&self, user: &str, cap: usize) -> Result<Attached, ClusterError> {
        for _ in 0..2 {
            let gate = self.gate.read().await;
            let mut invocation = ATTACH.prepare_invoke();
            invocation
                .key(self.keys.nodes())
                .key(self.keys.node_counts(self.node.as_str()))
                .key(self.keys.user_total(user))
                .arg(self.node.as_str())
                .arg(user)
                .arg(cap);
            let (status, total): (i64, usize) = match self.run(&invocation).await {
                Ok(reply) => reply,
                Err(err) => {
                    // It may have been counted: make Redis agree with `mine` soon.
                    self.dirty.store(true, Ordering::Relaxed);
                    return Err(err);
                }
            };
            match status {
                1 => {
                    *self.mine().entry(user.to_owned()).or_default() += 1;
                    return Ok(Attached::Counted { first_anywhere: total == 0 });
                }
                0 => return Ok(Attached::Refused { total }),
                _ => {
                    drop(gate);
                    self.recount().await?;
                }
            }
        }
        Err(ClusterError::Unregistered)
    }

    async fn detach(&self, user: &str) -> Result<Detached, ClusterError> {
        for _ in 0..2 {
            let gate = self.gate.read().await;
            if self.mine().get(user).copied().unwrap_or(0) == 0 {
                return Err(ClusterError::NotAttached(user.to_owned()));
            }
            let mut invocation = DETACH.prepare_invoke();
            invocation
                .key(self.keys.nodes())
                .key(self.keys.node_counts(self.node.as_str()))
                .key(self.keys.user_total(user))
                .arg(self.node.as_str())
                .arg(user);
            let left: i64 = match self.run(&invocation).await {
                Ok(left) => left,
                Err(err) => {
                    // The connection is gone whatever Redis heard: forget it here, fix Redis later.
                    self.forget(user);
                    self.dirty.store(true, Ordering::Relaxed);
                    return Err(err);
                }
            };
            if left >= 0 {
                self.forget(user);
                return Ok(if left == 0 { Detached::LastAnywhere } else { Detached::StillOnline });
            }
            drop(gate);
            self.recount().await?;
        }
        Err(ClusterError::Unregistered)
    }

    /// Each user's connection total across registered nodes.
    async fn totals(&self, users: &[&str]) -> Result<Vec<u64>, ClusterError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let mut get = redis::cmd("MGET");
        for user in users {
            get.arg(self.keys.user_total(user));
        }
        let mut conn = self.conn.clone();
        let totals: Vec<Option<i64>> = within(self.timeout, get.query_async(&mut conn)).await?;
        Ok(totals.into_iter().map(|total| total.unwrap_or(0).max(0) as u64).collect())
    }

    /// Whether Redis may disagree with this node's record.
    pub(super) fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Relaxed)
    }

    /// Registers this node and writes its own record of counts over whatever Redis holds for it.
    pub(super) async fn recount(&self) -> Result<(), ClusterError> {
        let _alone = self.gate.write().await;
        // Cleared first: a failure below sets it again.
        self.dirty.store(false, Ordering::Relaxed);
        let record: Vec<(String, usize)> = self.mine().iter().map(|(user, n)| (user.clone(), *n)).collect();
        let mut invocation = RECOUNT.prepare_invoke();
        invocation
            .key(self.keys.nodes())
            .key(self.keys.node_counts(self.node.as_str()))
            .arg(self.node.as_str())
            .arg(self.keys.user_total_prefix());
        for (user, n) in &record {
            invocation.arg(user).arg(n);
        }
        let (online, offline): (Vec<String>, Vec<String>) = match self.run(&invocation).await {
            Ok(changes) => changes,
            Err(err) => {
                self.dirty.store(true, Ordering::Relaxed);
                return Err(err);
            }
        };
        if online.is_empty() && offline.is_empty() {
            debug!(node = %self.node, users = record.len(), "recounted: no change");
        } else {
            info!(node = %self.node, online = online.len(), offline = offline.len(), "recounted this node's connections");
            // The receiver only goes away with the link.
            let _ = self.notices.send(LinkEvent::Recounted { online, offline });
        }
        Ok(())
    }

    async fn run<T: redis::FromRedisValue>(&self, invocation: &redis::ScriptInvocation<'_>) -> Result<T, ClusterError> {
        let mut conn = self.conn.clone();
        within(self.timeout, invocation.invoke_async(&mut conn)).await
    }

    fn forget(&self, user: &str) {
        let mut mine = self.mine();
        if let Some(n) = mine.get_mut(user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                mine.remove(user);
            }
        }
    }

    fn mine(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        // A panic while holding it cannot leave the map half-written: every
        // change is one insert or remove.
        self.mine.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
