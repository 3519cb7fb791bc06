//! The memory store's shared agent pool: the agents' rows and their writes,
//! and the round that holds the pool's lock, with PostgreSQL's rules.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use petchat_protocol::{Timestamp, UserId};
use tokio::sync::OwnedMutexGuard;

use super::{Data, Shared};
use crate::store::{AgentRecord, Applied, PoolRound, PoolSnapshot, StoreError, Write};

/// How long `lock_pool` waits for another round to end, as PostgreSQL's store does by default.
const LOCK_TIMEOUT: Duration = Duration::from_secs(3);

/// An agent's row; whether it is online is where its connections are.
#[derive(Debug, Clone)]
pub(super) struct Agent {
    name: String,
    available: bool,
    idle_since: Timestamp,
    offline_since: Option<Timestamp>,
}

/// Waits for the pool's lock (at most [`LOCK_TIMEOUT`]) and reads a round's snapshot.
pub(super) async fn lock(
    shared: &Arc<Shared>,
    pool: &Arc<tokio::sync::Mutex<()>>,
) -> Result<Box<dyn PoolRound>, StoreError> {
    let lock = wait_for_lock(pool).await?;
    let snapshot = shared.data().snapshot();
    Ok(Box::new(Round { shared: shared.clone(), snapshot, _lock: lock }))
}

/// The pool's lock, for a round or for pool writes sent through `apply`
/// (which wait for the round in progress, as on PostgreSQL).
pub(super) async fn wait_for_lock(pool: &Arc<tokio::sync::Mutex<()>>) -> Result<OwnedMutexGuard<()>, StoreError> {
    tokio::time::timeout(LOCK_TIMEOUT, pool.clone().lock_owned())
        .await
        .map_err(|_| StoreError::Unavailable("another round held the agent pool's lock past the timeout".into()))
}

/// A round: the snapshot it read, and the lock it holds until dropped.
struct Round {
    shared: Arc<Shared>,
    snapshot: PoolSnapshot,
    _lock: OwnedMutexGuard<()>,
}

#[async_trait]
impl PoolRound for Round {
    fn snapshot(&self) -> &PoolSnapshot {
        &self.snapshot
    }

    async fn commit(self: Box<Self>, writes: &[Write]) -> Result<Vec<Applied>, StoreError> {
        // The lock is freed when `self` drops, after the writes are in.
        self.shared.apply(writes)
    }
}

impl Data {
    /// What a round reads: a copy of the open conversations and of every agent.
    fn snapshot(&self) -> PoolSnapshot {
        let agents = self
            .agents
            .iter()
            .map(|(id, agent)| AgentRecord {
                id: id.clone(),
                name: agent.name.clone(),
                available: agent.available,
                online: self.connections.contains_key(id),
                idle_since: agent.idle_since,
                offline_since: agent.offline_since,
            })
            .collect();
        PoolSnapshot { open: self.open_conversations(), agents }
    }

    /// `Write::AgentConnection`.
    pub(super) fn agent_connection(&mut self, agent: &UserId, name: &str, node: &str, online: bool, at: Timestamp) {
        if online {
            let row = self.agents.entry(agent.clone()).or_insert_with(|| Agent {
                name: name.to_owned(),
                available: false,
                idle_since: at,
                offline_since: None,
            });
            name.clone_into(&mut row.name);
            row.offline_since = None;
            self.connections.entry(agent.clone()).or_default().insert(node.to_owned());
            return;
        }
        let Some(nodes) = self.connections.get_mut(agent) else { return };
        if !nodes.remove(node) {
            return;
        }
        let last = nodes.is_empty();
        if last {
            self.connections.remove(agent);
        }
        if let Some(row) = self.agents.get_mut(agent) {
            name.clone_into(&mut row.name);
            if last {
                row.offline_since = Some(at);
            }
        }
    }

    /// `Write::AgentAvailability`.
    pub(super) fn agent_availability(&mut self, agent: &UserId, name: &str, available: bool, at: Timestamp) {
        let connected = self.connections.contains_key(agent);
        let row = self.agents.entry(agent.clone()).or_insert_with(|| Agent {
            name: name.to_owned(),
            available: false,
            idle_since: at,
            offline_since: (!connected).then_some(at),
        });
        if available && !row.available {
            row.idle_since = at;
        }
        row.available = available;
        name.clone_into(&mut row.name);
    }

    /// `Write::AgentIdle`.
    pub(super) fn agent_idle(&mut self, agent: &UserId, at: Timestamp) {
        if let Some(row) = self.agents.get_mut(agent) {
            row.idle_since = at;
        }
    }

    /// `Write::NodeGone`.
    pub(super) fn node_gone(&mut self, node: &str, at: Timestamp) {
        for (agent, nodes) in &mut self.connections {
            if nodes.remove(node)
                && nodes.is_empty()
                && let Some(row) = self.agents.get_mut(agent)
            {
                row.offline_since = Some(at);
            }
        }
        self.connections.retain(|_, nodes| !nodes.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::{Pin, pin};
    use std::task::Poll;

    use petchat_protocol::{ConversationId, ConversationStatus, LastSeq, Participant};

    use super::*;
    use crate::store::{ConversationRecord, MemoryStore, Store};

    /// A second round waits while the first holds the lock, and then sees
    /// what the first committed.
    #[tokio::test]
    async fn a_second_round_waits_for_the_first_to_commit_and_then_sees_its_writes() {
        let store = MemoryStore::new();
        let first = store.lock_pool().await.expect("the first round locks");
        let mut second = pin!(store.lock_pool());
        assert!(poll_once(second.as_mut()).await.is_pending(), "the second round locked while the first held it");

        first.commit(&[connection("agent-1", "node-a", true, 1), create("conv-1")]).await.expect("commits");
        let second = second.await.expect("the second round locks once the first committed");
        assert_eq!(second.snapshot().agents, [online_agent("agent-1", 1)]);
        assert_eq!(second.snapshot().open.len(), 1);
    }

    /// A dropped round wrote nothing and frees the lock; a failed commit
    /// writes none of its writes and frees it too.
    #[tokio::test]
    async fn a_dropped_or_failed_round_writes_nothing_and_frees_the_lock() {
        let store = MemoryStore::new();
        drop(store.lock_pool().await.expect("locks"));

        let round = store.lock_pool().await.expect("locks after a dropped round");
        store.fail_commits(true);
        assert!(round.commit(&[connection("agent-1", "node-a", true, 1)]).await.is_err());
        store.fail_commits(false);
        assert_eq!(snapshot(&store).await, PoolSnapshot::default());
    }

    /// A pool write sent through `apply` waits for the round in progress.
    #[tokio::test]
    async fn a_pool_write_through_apply_waits_for_the_round_in_progress() {
        let store = MemoryStore::new();
        let round = store.lock_pool().await.expect("locks");
        let offline = [connection("agent-1", "node-a", false, 5)];
        let mut write = pin!(store.apply(&offline));
        assert!(poll_once(write.as_mut()).await.is_pending(), "written while a round held the lock");

        round.commit(&[connection("agent-1", "node-a", true, 1)]).await.expect("commits");
        assert_eq!(write.await.expect("applied"), [Applied::Done]);
        let agent = only_agent(&store).await;
        assert_eq!((agent.online, agent.offline_since), (false, Some(at(5))), "the write came after the round");
    }

    /// While a round holds the lock, another gives up after the timeout
    /// with `Unavailable` (the clock is paused: the timeout passes at once).
    #[tokio::test(start_paused = true)]
    async fn lock_pool_gives_up_with_unavailable_while_another_round_holds_the_lock() {
        let store = MemoryStore::new();
        let _held = store.lock_pool().await.expect("locks");
        let started = tokio::time::Instant::now();
        assert!(matches!(store.lock_pool().await, Err(StoreError::Unavailable(_))));
        assert_eq!(started.elapsed(), LOCK_TIMEOUT);
    }

    /// An agent online on two nodes stays online until both go, and is then
    /// offline since the second; going offline on a node it is not on does
    /// nothing; a first connection again clears `offline_since`.
    #[tokio::test]
    async fn an_agent_on_two_nodes_is_online_until_both_go_and_offline_since_the_last() {
        let store = MemoryStore::new();
        apply(&store, [connection("agent-1", "node-a", true, 1), connection("agent-1", "node-b", true, 2)]).await;
        assert_eq!(only_agent(&store).await, online_agent("agent-1", 1));

        apply(&store, [connection("agent-1", "node-a", false, 3), connection("agent-1", "node-a", false, 4)]).await;
        let agent = only_agent(&store).await;
        assert_eq!((agent.online, agent.offline_since), (true, None), "still on node-b");

        apply(&store, [connection("agent-1", "node-b", false, 5)]).await;
        let agent = only_agent(&store).await;
        assert_eq!((agent.online, agent.offline_since), (false, Some(at(5))));

        apply(&store, [connection("agent-1", "node-c", true, 6)]).await;
        let agent = only_agent(&store).await;
        assert_eq!((agent.online, agent.offline_since, agent.idle_since), (true, None, at(1)));
    }

    /// A node that is gone takes offline the agents it alone had, not those
    /// also on another node; gone twice changes nothing more.
    #[tokio::test]
    async fn node_gone_takes_its_agents_offline_but_not_those_also_on_another_node() {
        let store = MemoryStore::new();
        apply(
            &store,
            [
                connection("agent-1", "node-a", true, 1),
                connection("agent-2", "node-a", true, 1),
                connection("agent-2", "node-b", true, 1),
                connection("agent-3", "node-b", true, 1),
                Write::NodeGone { node: "node-a".into(), at: at(10) },
                Write::NodeGone { node: "node-a".into(), at: at(11) },
            ],
        )
        .await;
        let agents = snapshot(&store).await.agents;
        let states: Vec<(&str, bool, Option<Timestamp>)> =
            agents.iter().map(|a| (a.id.as_str(), a.online, a.offline_since)).collect();
        assert_eq!(states, [("agent-1", false, Some(at(10))), ("agent-2", true, None), ("agent-3", true, None)]);
    }

    /// idle_since moves when the agent becomes available from unavailable
    /// and on AgentIdle, not when it says available again; an agent first
    /// known by its status is offline since then; an unknown agent's
    /// AgentIdle records nothing.
    #[tokio::test]
    async fn becoming_available_starts_the_idle_time_and_staying_available_does_not() {
        let store = MemoryStore::new();
        apply(&store, [availability("agent-1", true, 5)]).await;
        let agent = only_agent(&store).await;
        assert_eq!(
            (agent.available, agent.idle_since, agent.online, agent.offline_since),
            (true, at(5), false, Some(at(5)))
        );
        let steps = [
            (connection("agent-1", "node-a", true, 6), true, at(5)),
            (availability("agent-1", true, 7), true, at(5)),
            (Write::AgentIdle { agent: agent_id("agent-1"), at: at(8) }, true, at(8)),
            (availability("agent-1", false, 9), false, at(8)),
            (availability("agent-1", true, 10), true, at(10)),
            (Write::AgentIdle { agent: agent_id("agent-9"), at: at(11) }, true, at(10)),
        ];
        for (write, available, idle_since) in steps {
            let label = format!("{write:?}");
            apply(&store, [write]).await;
            let agent = only_agent(&store).await;
            assert_eq!((agent.available, agent.idle_since), (available, idle_since), "after {label}");
        }
    }

    /// The snapshot's open conversations are `open_conversations`, and
    /// `user_conversations` finds a user id as customer or as agent.
    #[tokio::test]
    async fn the_snapshot_holds_the_open_conversations_and_user_conversations_find_either_role() {
        let store = MemoryStore::new();
        let agent = Participant { id: agent_id("agent-1"), name: "Agent".into() };
        apply(
            &store,
            [
                create("conv-b"),
                create("conv-a"),
                create("conv-c"),
                Write::Assign {
                    conversation: conversation_id("conv-c"),
                    agent: Some(agent),
                    status: ConversationStatus::Active,
                    at: at(1),
                    declined_by: None,
                },
                Write::Close {
                    conversation: conversation_id("conv-b"),
                    by: agent_id("agent-1"),
                    reason: petchat_protocol::CloseReason::Closed,
                    at: at(2),
                },
            ],
        )
        .await;
        let open = store.open_conversations().await.expect("read");
        assert_eq!(open.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["conv-a", "conv-c"]);
        assert_eq!(snapshot(&store).await.open, open);

        let ids = |records: Vec<ConversationRecord>| records.into_iter().map(|c| c.id.to_string()).collect::<Vec<_>>();
        let of_customer = store.user_conversations(&agent_id("customer-1")).await.expect("read");
        assert_eq!(ids(of_customer), ["conv-a", "conv-c"]);
        assert_eq!(ids(store.user_conversations(&agent_id("agent-1")).await.expect("read")), ["conv-c"]);
    }

    /// Polls a future once: whether it is ready yet.
    async fn poll_once<F: Future>(mut future: Pin<&mut F>) -> Poll<F::Output> {
        std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await
    }

    async fn apply(store: &MemoryStore, writes: impl IntoIterator<Item = Write>) {
        let writes: Vec<Write> = writes.into_iter().collect();
        let round = store.lock_pool().await.expect("the round locks");
        let applied = round.commit(&writes).await.expect("the round commits");
        assert!(applied.iter().all(|a| *a == Applied::Done), "{applied:?}");
    }

    async fn snapshot(store: &MemoryStore) -> PoolSnapshot {
        let round = store.lock_pool().await.expect("the round locks");
        round.snapshot().clone()
    }

    async fn only_agent(store: &MemoryStore) -> AgentRecord {
        let mut agents = snapshot(store).await.agents;
        assert_eq!(agents.len(), 1, "one agent: {agents:?}");
        agents.remove(0)
    }

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_unix_ms(1_800_000_000_000 + ms).expect("a time")
    }

    fn agent_id(id: &str) -> UserId {
        UserId::new(id).expect("id")
    }

    fn conversation_id(id: &str) -> ConversationId {
        ConversationId::new(id).expect("id")
    }

    fn create(id: &str) -> Write {
        Write::CreateConversation(ConversationRecord {
            id: conversation_id(id),
            customer: Participant { id: agent_id("customer-1"), name: "Ana".into() },
            agent: None,
            status: ConversationStatus::Queued,
            last_seq: LastSeq::NONE,
            created_at: at(0),
            queued_at: Some(at(0)),
            topic: None,
            pet_id: None,
            order_id: None,
            customer_away_since: None,
            closed: None,
            declined_by: None,
        })
    }

    fn connection(agent: &str, node: &str, online: bool, ms: i64) -> Write {
        Write::AgentConnection {
            agent: agent_id(agent),
            name: format!("{agent} name"),
            node: node.into(),
            online,
            at: at(ms),
        }
    }

    fn availability(agent: &str, available: bool, ms: i64) -> Write {
        Write::AgentAvailability { agent: agent_id(agent), name: format!("{agent} name"), available, at: at(ms) }
    }

    fn online_agent(agent: &str, ms: i64) -> AgentRecord {
        AgentRecord {
            id: agent_id(agent),
            name: format!("{agent} name"),
            available: false,
            online: true,
            idle_since: at(ms),
            offline_since: None,
        }
    }
}
