//! The shared agent pool on PostgreSQL: rounds of several nodes take turns
//! under one lock and each sees what the previous committed, a round that
//! ends without committing frees the lock, and the agents' rows follow the
//! rules of SPEC §10 (online while on any node, offline since the last
//! connection went, idle since it became available or changed load).

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use petchat_protocol::{ConversationStatus, Participant, Timestamp, UserId};
use petchat_server::store::{AgentRecord, Applied, PoolRound, PoolSnapshot, PostgresStore, Store, StoreError, Write};
use tokio_postgres::NoTls;

use super::common::TestDatabase;
use super::{create, id, nodes};

/// How long a test waits for something that should happen.
const WAIT: Duration = Duration::from_secs(10);

/// Two nodes' rounds: the second waits on the lock while the first holds
/// it, and once the first commits it reads the first's writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_round_waits_for_the_first_to_commit_and_then_sees_its_writes() {
    let database = TestDatabase::postgres().await;
    let nodes = nodes(&database, 2).await;
    let first = nodes[0].lock_pool().await.expect("the first round locks");
    assert_eq!(first.snapshot(), &PoolSnapshot::default(), "nothing yet");

    let node = nodes[1].clone();
    let second = tokio::spawn(async move { snapshot(&*node).await });
    wait_for_pool_lock_waiters(&database, 1).await;
    assert!(!second.is_finished(), "the second round read while the first held the lock");

    let applied = first
        .commit(&[connection("agent-1", "node-a", true, 1), create("conv-1")])
        .await
        .expect("the first round commits");
    assert_eq!(applied, [Applied::Done, Applied::Done]);
    let seen = tokio::time::timeout(WAIT, second).await.expect("the second round gets the lock").expect("its task");
    assert_eq!(seen.agents, [online_agent("agent-1", 1)]);
    assert_eq!(seen.open.iter().map(|c| c.id.to_string()).collect::<Vec<_>>(), ["conv-1"]);
}

/// A round dropped without committing (a node's pool failed mid-round)
/// leaves no transaction behind: another node's round locks at once, and
/// it does again and again, more times than a node's pool has connections.
#[tokio::test]
async fn a_dropped_round_frees_the_lock_and_its_connection() {
    let database = TestDatabase::postgres().await;
    let [dropping, next] = two_impatient_nodes(&database).await;
    for n in 0..20 {
        let round = dropping.lock_pool().await.unwrap_or_else(|e| panic!("round {n} could not lock: {e}"));
        drop(round);
        let round = next.lock_pool().await.unwrap_or_else(|e| panic!("the lock was not freed after drop {n}: {e}"));
        round.commit(&[]).await.expect("an empty round commits");
    }
}

/// A round whose commit fails (here a conversation created twice) writes
/// none of its writes and frees the lock.
#[tokio::test]
async fn a_round_whose_commit_fails_writes_nothing_and_frees_the_lock() {
    let database = TestDatabase::postgres().await;
    let [failing, next] = two_impatient_nodes(&database).await;
    let round = failing.lock_pool().await.expect("locks");
    let failed = round.commit(&[connection("agent-1", "node-a", true, 1), create("conv-1"), create("conv-1")]).await;
    assert!(matches!(failed, Err(StoreError::Refused(_))), "a duplicate id is refused for good: {failed:?}");
    assert_eq!(snapshot(&next).await, PoolSnapshot::default(), "nothing of the round was written");
}

/// While a node holds the lock, another node's round gives up after its
/// timeout with `Unavailable` (it may succeed later), and succeeds once
/// the lock is free.
#[tokio::test]
async fn lock_pool_gives_up_with_unavailable_while_another_node_holds_the_lock() {
    let database = TestDatabase::postgres().await;
    let holder = PostgresStore::open(&database.url).await.expect("opens");
    let impatient =
        PostgresStore::open(&database.url).await.expect("opens").with_pool_lock_timeout(Duration::from_millis(200));
    let held = holder.lock_pool().await.expect("locks");

    let started = Instant::now();
    match impatient.lock_pool().await {
        Err(StoreError::Unavailable(e)) => assert!(e.to_string().contains("lock"), "says why: {e}"),
        Err(other) => panic!("expected Unavailable, got {other}"),
        Ok(_) => panic!("locked while another node held the lock"),
    }
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(200), "gave up after {waited:?}, before its timeout");
    assert!(waited < Duration::from_secs(2), "took {waited:?} to give up");

    held.commit(&[]).await.expect("commits");
    impatient.lock_pool().await.expect("locks once the lock is free").commit(&[]).await.expect("commits");
}

/// A pool write sent through `apply` (not in a round) waits for the round
/// in progress, so it never lands between a round's read and its commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_write_through_apply_waits_for_the_round_in_progress() {
    let database = TestDatabase::postgres().await;
    let nodes = nodes(&database, 2).await;
    let round = nodes[0].lock_pool().await.expect("locks");

    let node = nodes[1].clone();
    let write = tokio::spawn(async move { node.apply(&[connection("agent-1", "node-b", false, 5)]).await });
    wait_for_pool_lock_waiters(&database, 1).await;
    assert!(!write.is_finished(), "the write went through while a round held the lock");

    round.commit(&[connection("agent-1", "node-b", true, 1)]).await.expect("commits");
    let applied = tokio::time::timeout(WAIT, write).await.expect("the write gets the lock").expect("its task");
    assert_eq!(applied.expect("applied"), [Applied::Done]);
    let agent = only_agent(&*nodes[0]).await;
    assert_eq!((agent.online, agent.offline_since), (false, Some(at(5))), "the write came after the round");
}

/// An agent online on two nodes stays online until both nodes' rows go,
/// and is then offline since the second; a first connection again clears
/// it. Each row keeps the agent's latest name; going offline on a node
/// where it was not online does nothing.
#[tokio::test]
async fn an_agent_on_two_nodes_is_online_until_both_go_and_offline_since_the_last() {
    let database = TestDatabase::postgres().await;
    let store = database.open().await;
    commit(&*store, &[connection("agent-1", "node-a", true, 1), connection("agent-1", "node-b", true, 2)]).await;
    assert_eq!(only_agent(&*store).await, online_agent("agent-1", 1), "idle since it was first seen");

    store.apply(&[connection("agent-1", "node-a", false, 3)]).await.expect("applied");
    let agent = only_agent(&*store).await;
    assert_eq!((agent.online, agent.offline_since), (true, None), "still on node-b");

    let applied = store.apply(&[connection("agent-1", "node-a", false, 4)]).await.expect("applied");
    assert_eq!(applied, [Applied::Done], "a node it is not on: nothing to do");
    let mut renamed = connection("agent-1", "node-b", false, 5);
    if let Write::AgentConnection { name, .. } = &mut renamed {
        *name = "Agent One".into();
    }
    store.apply(&[renamed]).await.expect("applied");
    let agent = only_agent(&*store).await;
    assert_eq!((agent.online, agent.offline_since), (false, Some(at(5))), "offline since the last went");
    assert_eq!(agent.name, "Agent One", "the latest name");

    commit(&*store, &[connection("agent-1", "node-c", true, 6)]).await;
    let agent = only_agent(&*store).await;
    assert_eq!((agent.online, agent.offline_since, agent.idle_since), (true, None, at(1)));
}

/// A node that is gone takes offline the agents it alone had connections
/// of, at the time given, and not those also on another node.
#[tokio::test]
async fn node_gone_takes_its_agents_offline_but_not_those_also_on_another_node() {
    let database = TestDatabase::postgres().await;
    let store = database.open().await;
    commit(
        &*store,
        &[
            connection("agent-1", "node-a", true, 1),
            connection("agent-2", "node-a", true, 1),
            connection("agent-2", "node-b", true, 1),
            connection("agent-3", "node-b", true, 1),
        ],
    )
    .await;
    commit(&*store, &[Write::NodeGone { node: "node-a".into(), at: at(10) }]).await;
    // Gone again (a restart reported twice): nothing more changes.
    store.apply(&[Write::NodeGone { node: "node-a".into(), at: at(11) }]).await.expect("applied");

    let agents = snapshot(&*store).await.agents;
    let states: Vec<(&str, bool, Option<Timestamp>)> =
        agents.iter().map(|a| (a.id.as_str(), a.online, a.offline_since)).collect();
    assert_eq!(states, [("agent-1", false, Some(at(10))), ("agent-2", true, None), ("agent-3", true, None)], "by id");
}

/// `agent.status` sets idle_since only when the agent becomes available
/// from unavailable; AgentIdle sets it when its load changes; an agent first
/// known by its status is offline since then; an unknown agent's AgentIdle
/// does nothing.
#[tokio::test]
async fn becoming_available_starts_the_idle_time_and_staying_available_does_not() {
    let database = TestDatabase::postgres().await;
    let store = database.open().await;
    commit(&*store, &[availability("agent-1", true, 5)]).await;
    let agent = only_agent(&*store).await;
    assert_eq!(
        (agent.available, agent.idle_since, agent.online, agent.offline_since),
        (true, at(5), false, Some(at(5))),
        "known by its status alone"
    );

    let steps = [
        (connection("agent-1", "node-a", true, 6), true, at(5)),
        (availability("agent-1", true, 7), true, at(5)),
        (Write::AgentIdle { agent: agent_id("agent-1"), at: at(8) }, true, at(8)),
        (availability("agent-1", false, 9), false, at(8)),
        (availability("agent-1", true, 10), true, at(10)),
    ];
    for (write, available, idle_since) in steps {
        let label = format!("{write:?}");
        commit(&*store, &[write]).await;
        let agent = only_agent(&*store).await;
        assert_eq!((agent.available, agent.idle_since), (available, idle_since), "after {label}");
    }

    let applied = store.apply(&[Write::AgentIdle { agent: agent_id("agent-9"), at: at(11) }]).await.expect("applied");
    assert_eq!(applied, [Applied::Done]);
    assert_eq!(snapshot(&*store).await.agents.len(), 1, "an unknown agent is not recorded by AgentIdle");
}

/// A round reads the open conversations exactly as `open_conversations`
/// gives them: queued ones in queue order first, then the active ones.
#[tokio::test]
async fn the_snapshot_holds_the_open_conversations_in_open_conversations_order() {
    let database = TestDatabase::postgres().await;
    let store = database.open().await;
    let writes: Vec<Write> = ["conv-d", "conv-a", "conv-c", "conv-b", "conv-e"].into_iter().map(create).collect();
    store.apply(&writes).await.expect("created");
    let agent = Participant { id: agent_id("agent-1"), name: "Agent".into() };
    store
        .apply(&[
            Write::Assign {
                conversation: id("conv-c"),
                agent: Some(agent),
                status: ConversationStatus::Active,
                at: at(1),
                declined_by: None,
            },
            Write::Assign {
                conversation: id("conv-d"),
                agent: None,
                status: ConversationStatus::Queued,
                at: at(2),
                declined_by: None,
            },
            Write::Close {
                conversation: id("conv-e"),
                by: agent_id("agent-1"),
                reason: petchat_protocol::CloseReason::Closed,
                at: at(3),
            },
        ])
        .await
        .expect("applied");

    let open = store.open_conversations().await.expect("read");
    assert_eq!(
        open.iter().map(|c| c.id.to_string()).collect::<Vec<_>>(),
        ["conv-a", "conv-b", "conv-d", "conv-c"],
        "queued by queue time (ties by id), then active"
    );
    assert_eq!(snapshot(&*store).await.open, open);
}

/// Rounds on one node assign two conversations in alternating orders while
/// another node appends to both in batches: a round's commit locks the rows
/// in id order like every batch, so no deadlock reaches either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_and_batches_touching_the_same_conversations_never_deadlock() {
    let database = TestDatabase::postgres().await;
    let nodes = nodes(&database, 2).await;
    nodes[0].apply(&[create("conv-a"), create("conv-b")]).await.expect("created");
    let rounds = 50;

    let pool = nodes[0].clone();
    let assigner = tokio::spawn(async move {
        for n in 0..rounds {
            let order = if n % 2 == 0 { ["conv-b", "conv-a"] } else { ["conv-a", "conv-b"] };
            let writes: Vec<Write> = order
                .iter()
                .map(|conversation| Write::Assign {
                    conversation: id(conversation),
                    agent: Some(Participant { id: agent_id("agent-1"), name: "Agent".into() }),
                    status: ConversationStatus::Active,
                    at: at(n),
                    declined_by: None,
                })
                .chain([Write::AgentIdle { agent: agent_id("agent-1"), at: at(n) }])
                .collect();
            let round = pool.lock_pool().await.unwrap_or_else(|e| panic!("round {n}: {e}"));
            round.commit(&writes).await.unwrap_or_else(|e| panic!("round {n}: {e}"));
        }
    });
    let shard = nodes[1].clone();
    let appender = tokio::spawn(async move {
        for n in 0..rounds as usize {
            let writes = [
                super::append("conv-a", super::key(1, 2 * n), "a"),
                super::append("conv-b", super::key(1, 2 * n + 1), "b"),
            ];
            shard.apply(&writes).await.unwrap_or_else(|e| panic!("batch {n}: {e}"));
        }
    });
    for task in join_all([assigner, appender]).await {
        task.expect("no deadlock, no failure");
    }
    let stored = nodes[0].messages_after(&id("conv-a"), Default::default(), 1_000).await.expect("read");
    assert_eq!(stored.len(), rounds as usize);
}

/// Two nodes whose rounds give up on the lock after 2 s (instead of 3).
async fn two_impatient_nodes(database: &TestDatabase) -> [PostgresStore; 2] {
    let open = || async {
        PostgresStore::open(&database.url).await.expect("opens").with_pool_lock_timeout(Duration::from_secs(2))
    };
    [open().await, open().await]
}

/// What a round reads, from a round that then commits nothing.
async fn snapshot(store: &dyn Store) -> PoolSnapshot {
    let round = store.lock_pool().await.expect("the round locks");
    let snapshot = round.snapshot().clone();
    round.commit(&[]).await.expect("an empty round commits");
    snapshot
}

/// The one agent the pool knows.
async fn only_agent(store: &dyn Store) -> AgentRecord {
    let mut agents = snapshot(store).await.agents;
    assert_eq!(agents.len(), 1, "one agent: {agents:?}");
    agents.remove(0)
}

/// `writes` committed in a round of their own.
async fn commit(store: &dyn Store, writes: &[Write]) {
    let round: Box<dyn PoolRound> = store.lock_pool().await.expect("the round locks");
    let applied = round.commit(writes).await.expect("the round commits");
    assert!(applied.iter().all(|a| *a == Applied::Done), "{applied:?}");
}

/// Waits until `count` sessions wait for an advisory lock in the test's database.
async fn wait_for_pool_lock_waiters(database: &TestDatabase, count: i64) {
    let (client, connection) = tokio_postgres::connect(&database.url, NoTls).await.expect("connect");
    tokio::spawn(connection);
    let deadline = Instant::now() + WAIT;
    loop {
        let row = client
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[],
            )
            .await
            .expect("pg_locks");
        if row.get::<_, i64>(0) >= count {
            return;
        }
        assert!(Instant::now() < deadline, "no session waited for the pool's lock within {WAIT:?}");
        // Polling the server's lock table: the wait is on the event itself.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn at(ms: i64) -> Timestamp {
    Timestamp::from_unix_ms(1_800_000_000_000 + ms).expect("a time")
}

fn agent_id(agent: &str) -> UserId {
    UserId::new(agent).expect("id")
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

/// An agent first seen online at `at(ms)`, not available.
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
