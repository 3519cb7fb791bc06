//! Node liveness: heartbeats, the reap of dead nodes, the clean leave.
//!
//! Every node beats into one sorted set, scored with Redis's clock, every
//! half heartbeat, and then reaps: one script removes each node whose last
//! beat is older than two heartbeats, takes its counts off its users and
//! lists those left offline everywhere. Scripts run one at a time, so the
//! script run that removes a node from the set is the only one that ever
//! sees it: exactly one surviving node emits [`LinkEvent::NodeGone`].
//!
//! A clean leave dates the node's beat back to zero and wakes the others up
//! on a channel, so that one of them reaps it at once through that same path.
//!
//! A node reaped while alive (a pause longer than two heartbeats) finds its
//! entry gone at its next beat, or at its next attach or detach, and recounts:
//! it registers again and writes its own record of connections back, which
//! comes out as [`LinkEvent::Recounted`] with the users it brought back online.
//! A node never reaps itself.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;
use tokio::sync::{Notify, mpsc};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::keys::Keys;
use super::presence::Presence;
use super::{ClusterError, LinkEvent, LinkSettings, NodeId, within};

static BEAT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/beat.lua")));
static REAP: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/reap.lua")));
static LEAVE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/leave.lua")));

/// The heartbeat task: beat (or recount), then reap, every half heartbeat and whenever a node announces it left.
pub(super) struct Heart {
    /// The command connection.
    pub(super) conn: ConnectionManager,
    /// Key names.
    pub(super) keys: Keys,
    /// The node that beats.
    pub(super) node: NodeId,
    /// Intervals and timeouts.
    pub(super) settings: LinkSettings,
    /// Recounts when the node was reaped or Redis may disagree with it.
    pub(super) presence: Arc<Presence>,
    /// Where `NodeGone` goes.
    pub(super) notices: mpsc::UnboundedSender<LinkEvent>,
    /// Rung by the subscriber when a node announces it left.
    pub(super) wake: Arc<Notify>,
    /// Ends the task.
    pub(super) stop: CancellationToken,
}

impl Heart {
    pub(super) async fn run(self) {
        let mut ticks = tokio::time::interval(self.settings.beat_every());
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            let beat = tokio::select! {
                () = self.stop.cancelled() => return,
                _ = ticks.tick() => true,
                () = self.wake.notified() => false,
            };
            let result = async {
                if beat {
                    self.beat().await?;
                }
                self.reap().await
            }
            .await;
            // One warning per outage, not one per beat.
            match result {
                Ok(()) if failing => {
                    failing = false;
                    info!(node = %self.node, "heartbeats reach redis again");
                }
                Ok(()) => {}
                Err(err) if !failing => {
                    failing = true;
                    warn!(node = %self.node, error = %err, "heartbeat failed: other nodes reap this one after two heartbeats without");
                }
                Err(err) => debug!(node = %self.node, error = %err, "heartbeat failed again"),
            }
        }
    }

    async fn beat(&self) -> Result<(), ClusterError> {
        if self.presence.is_dirty() {
            return self.presence.recount().await;
        }
        let mut conn = self.conn.clone();
        let timeout = self.settings.command_timeout;
        let registered: i64 =
            within(timeout, BEAT.key(self.keys.nodes()).arg(self.node.as_str()).invoke_async(&mut conn)).await?;
        if registered == 0 {
            info!(node = %self.node, "this node is not registered (reaped during a pause, or redis restarted): recounting");
            self.presence.recount().await?;
        }
        Ok(())
    }

    async fn reap(&self) -> Result<(), ClusterError> {
        let mut conn = self.conn.clone();
        let timeout = self.settings.command_timeout;
        let dead_after = u64::try_from(self.settings.dead_after().as_millis()).unwrap_or(u64::MAX);
        let mut invocation = REAP.prepare_invoke();
        invocation
            .key(self.keys.nodes())
            .arg(self.node.as_str())
            .arg(dead_after)
            .arg(self.keys.node_counts_prefix())
            .arg(self.keys.user_total_prefix());
        let gone: Vec<(String, Vec<String>)> = within(timeout, invocation.invoke_async(&mut conn)).await?;
        for (node, offline_users) in gone {
            metrics::counter!("petchat_cluster_reaps_total").increment(1);
            info!(node = %self.node, reaped = %node, offline = offline_users.len(), "reaped a node that stopped heartbeating");
            // Node ids come from `NodeId::new` on the node that registered.
            let _ = self.notices.send(LinkEvent::NodeGone { node: NodeId(node), offline_users });
        }
        Ok(())
    }
}

/// Moves rare notices (reaps, recounts) to the caller's bounded event queue,
/// so that the heartbeat never waits on a slow caller.
pub(super) async fn forward(
    mut notices: mpsc::UnboundedReceiver<LinkEvent>,
    events: mpsc::Sender<LinkEvent>,
    stop: CancellationToken,
) {
    loop {
        let notice = tokio::select! {
            () = stop.cancelled() => return,
            notice = notices.recv() => match notice { Some(notice) => notice, None => return },
        };
        tokio::select! {
            () = stop.cancelled() => return,
            sent = events.send(notice) => if sent.is_err() { return },
        }
    }
}

/// The clean leave: marks this node dead now and wakes the others up to reap it.
pub(super) async fn leave(
    conn: &ConnectionManager,
    keys: &Keys,
    node: &NodeId,
    timeout: Duration,
) -> Result<(), ClusterError> {
    let mut conn = conn.clone();
    let mut invocation = LEAVE.prepare_invoke();
    invocation.key(keys.nodes()).arg(node.as_str()).arg(keys.wake_channel());
    within(timeout, invocation.invoke_async::<i64>(&mut conn)).await.map(drop)
}
