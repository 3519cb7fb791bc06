//! The pool shared by several nodes (SPEC §10): every round takes the
//! store's pool lock, reads the one queue and every agent
//! ([`crate::store::PoolSnapshot`]), decides with the same rules as on one
//! node, and commits its writes and frees the lock in one transaction. No two
//! nodes decide from the same state, so a conversation never gets two agents
//! and the queue is served in order whatever node each member is on.
//!
//! Agents' connections are stored per node, so an agent is online while any
//! node holds one; the grace period is data (`offline_since`), swept by every
//! node, so it holds whatever node the agent comes back on, and even if the
//! node it left from dies.

use std::time::Duration;

use petchat_protocol::{ErrorCode, Role, Timestamp, User, UserId};
use tokio::sync::mpsc;
use tracing::{debug, error, warn};

use super::{Pool, PoolCommand};
use crate::hub::batch::{Batch, next_round};
use crate::hub::frames::now;
use crate::hub::rules::Agent;
use crate::store::{PoolSnapshot, Write};

/// How long a round that could not reach the store waits before the
/// connection changes it held are tried again.
const RETRY_AFTER: Duration = Duration::from_millis(500);

impl Pool {
    /// The shared pool's loop: one locked round per batch of commands, and a
    /// sweep for ended grace periods every half grace period.
    pub(super) async fn run_shared(
        mut self,
        mut requests: mpsc::Receiver<PoolCommand>,
        mut internal: mpsc::UnboundedReceiver<PoolCommand>,
    ) {
        let node = self.node.clone().expect("a shared pool has a node id");
        // Connections an earlier process of this node left in the store are gone.
        let mut pending = vec![PoolCommand::NodeGone { node }];
        self.sweep_every();
        let most = self.limits.commit_batch.max(1);
        while let Some(commands) = next_round(&mut internal, &mut requests, most).await {
            // A customer's connections matter to the pool only on one node
            // (presence): across nodes they are counted in Redis.
            let commands: Vec<PoolCommand> = std::mem::take(&mut pending)
                .into_iter()
                .chain(commands)
                .filter(|command| !is_customer_presence(command))
                .collect();
            if commands.is_empty() {
                continue;
            }
            if let Err(unapplied) = self.shared_round(commands).await {
                pending = unapplied;
                self.wake_after(RETRY_AFTER);
            }
        }
        debug!("shared pool stopped");
    }

    /// One locked round; on failure, the connection changes to try again
    /// (the requests were answered with `internal`).
    async fn shared_round(&mut self, commands: Vec<PoolCommand>) -> Result<(), Vec<PoolCommand>> {
        let changes: Vec<PoolCommand> = commands.iter().filter(|c| is_state_change(c)).cloned().collect();
        let round = match self.store.lock_pool().await {
            Ok(round) => round,
            Err(e) => {
                error!(error = %e, "the shared agent pool is unavailable");
                for command in commands {
                    self.refuse(command);
                }
                return Err(changes);
            }
        };
        self.load_snapshot(round.snapshot());
        let mut batch = Batch::default();
        for command in commands {
            self.decide(command, &mut batch);
        }
        let committed = batch.commit_round(self, round).await;
        self.tell_shards().await;
        if committed { Ok(()) } else { Err(changes) }
    }

    /// The pool's state as the store holds it.
    fn load_snapshot(&mut self, snapshot: &PoolSnapshot) {
        self.agents = snapshot
            .agents
            .iter()
            .map(|record| {
                let mut agent = Agent::new(&record.name, record.idle_since.as_unix_ms());
                agent.available = record.available;
                agent.online = record.online;
                agent.offline_since = record.offline_since;
                (record.id.clone(), agent)
            })
            .collect();
        self.rebuild(snapshot.open.clone());
    }

    fn refuse(&self, command: PoolCommand) {
        if let PoolCommand::Request { conn, id, .. } = command {
            self.out.error(conn, id, ErrorCode::Internal, "the agent pool is unavailable; try again");
        }
    }

    /// Several nodes: an agent's connections on this node began or ended.
    pub(super) fn write_connection(&mut self, user: &User, online: bool, batch: &mut Batch<Self>) {
        let Some(node) = self.node.clone() else { return };
        if user.role != Role::Agent {
            return;
        }
        let write = Write::AgentConnection { agent: user.id.clone(), name: user.name.clone(), node, online, at: now() };
        batch.write_then(write, |_, _| {});
    }

    /// Several nodes: the agent was given or freed a conversation at mark `idle`.
    pub(super) fn write_idle(&mut self, agent: &UserId, idle: i64, batch: &mut Batch<Self>) {
        if self.node.is_none() {
            return;
        }
        let at = Timestamp::from_unix_ms(idle).unwrap_or_else(now);
        batch.write_then(Write::AgentIdle { agent: agent.clone(), at }, |_, _| {});
    }

    /// Several nodes: a node is gone; its agents' connections go with it.
    pub(super) fn node_gone(&mut self, node: String, batch: &mut Batch<Self>) {
        if self.node.is_none() {
            return;
        }
        batch.write_then(Write::NodeGone { node, at: now() }, |_, _| {});
        self.sweep_after_grace();
    }

    /// Several nodes: every agent offline for a whole grace period loses its
    /// conversations to the queue (whichever node sweeps first does it).
    pub(super) fn sweep(&mut self, batch: &mut Batch<Self>) {
        if self.node.is_none() {
            return;
        }
        let grace = i64::try_from(self.limits.agent_grace_ms).unwrap_or(i64::MAX);
        let now_ms = now().as_unix_ms();
        let mut expired: Vec<UserId> = self
            .agents
            .iter()
            .filter(|(_, agent)| !agent.online && !agent.active.is_empty())
            .filter(|(_, agent)| agent.offline_since.is_some_and(|t| now_ms.saturating_sub(t.as_unix_ms()) >= grace))
            .map(|(id, _)| id.clone())
            .collect();
        expired.sort();
        for agent in expired {
            warn!(agent = %agent, "agent grace period over on every node: re-queueing");
            self.requeue_agent(&agent, batch);
            let write = Write::AgentAvailability {
                agent: agent.clone(),
                name: self.agents.get(&agent).map(|a| a.name.clone()).unwrap_or_default(),
                available: false,
                at: now(),
            };
            batch.write_then(write, |_, _| {});
        }
    }

    /// A sweep once a grace period from now is over (and a little after).
    pub(super) fn sweep_after_grace(&self) {
        self.wake_after(self.limits.agent_grace() + Duration::from_millis(50));
    }

    fn wake_after(&self, delay: Duration) {
        let internal = self.internal.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(internal) = internal.upgrade() {
                let _ = internal.send(PoolCommand::Sweep);
            }
        });
    }

    /// Sweeps every half grace period (at least every second), for agents
    /// whose node died before their grace ended.
    fn sweep_every(&self) {
        let every = (self.limits.agent_grace() / 2).max(Duration::from_secs(1));
        let internal = self.internal.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(internal) = internal.upgrade() else { return };
                if internal.send(PoolCommand::Sweep).is_err() {
                    return;
                }
            }
        });
    }
}

/// Whether a command records a change of connections, which must not be
/// lost when a round fails.
fn is_state_change(command: &PoolCommand) -> bool {
    matches!(
        command,
        PoolCommand::Online { .. }
            | PoolCommand::Offline { .. }
            | PoolCommand::NodeGone { .. }
            | PoolCommand::CustomerPresence { .. }
    )
}

fn is_customer_presence(command: &PoolCommand) -> bool {
    matches!(command, PoolCommand::Online { user } | PoolCommand::Offline { user } if user.role == Role::Customer)
}
