//! SPEC §6 across nodes (§10): the one queue is served in order whatever
//! node each customer and agent is on, a conversation never goes to two
//! agents, the agent with the fewest open conversations gets the next one;
//! and the per-user connection cap counts every node.

use std::collections::BTreeSet;
use std::time::Instant;

use petchat_protocol::Role;
use serde_json::{Value, json};

use crate::common::cluster::{Cluster, Peer, WAIT};

/// Six customers open on n1, n2, n3, n1, n2, n3 while no agent is
/// available: positions 1…6 of one queue. Agent A on n1 becomes available
/// and gets the first five in queue order (its cap, 5); agent B on n3 gets
/// the sixth. Then, with both below the cap, each new conversation goes to
/// the agent with the fewest open ones; no conversation reaches two agents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_one_queue_is_served_in_order_and_the_agent_with_fewest_open_gets_the_next() {
    let cluster = Cluster::of(3).flag("--max-conversations-per-agent", 5).start().await;
    let mut customers = Vec::new();
    let mut queue = Vec::new();
    for n in 1..=6 {
        let node = (n - 1) % 3 + 1;
        let (customer, conversation) = queued(&cluster, node, &format!("cust-{n}"), n as u64).await;
        customers.push(customer);
        queue.push(conversation);
    }

    let mut a = cluster.node(1).connect("agent-a", Role::Agent).await;
    a.send(json!({"type": "agent.status", "data": {"available": true}}));
    let got = assignments(&mut a, 5).await;
    assert_eq!(got, queue[..5], "SPEC §6/§10: agent-a on n1 is given the queue's first five, in queue order");
    for (customer, conversation) in customers.iter_mut().zip(&queue).take(5) {
        assigned_to(customer, conversation, "agent-a").await;
    }
    let mut b = cluster.node(3).connect("agent-b", Role::Agent).await;
    b.send(json!({"type": "agent.status", "data": {"available": true}}));
    assert_eq!(
        assignments(&mut b, 1).await,
        queue[5..],
        "SPEC §6: agent-b on n3 gets the sixth; agent-a is at its cap"
    );
    assigned_to(&mut customers[5], &queue[5], "agent-b").await;

    // agent-a closes three: it has 2 open, agent-b 1.
    for conversation in &queue[..3] {
        close(&mut a, conversation).await;
    }
    let (mut seventh, conversation) = opened(&cluster, 2, "cust-7").await;
    assigned_to(&mut seventh, &conversation, "agent-b").await;
    assert_eq!(
        assignments(&mut b, 1).await,
        [conversation],
        "SPEC §6: the new conversation on n2 goes to agent-b (1 open) rather than agent-a (2 open)"
    );
    // Now 2 each; agent-a closes one more and has the fewest.
    close(&mut a, &queue[3]).await;
    let (mut eighth, conversation) = opened(&cluster, 1, "cust-8").await;
    assigned_to(&mut eighth, &conversation, "agent-a").await;
    assert_eq!(
        assignments(&mut a, 1).await,
        [conversation],
        "SPEC §6: agent-a (1 open) gets the next, not agent-b (2)"
    );

    // Nothing more was assigned to either: no conversation went to both.
    for agent in [&mut a, &mut b] {
        let late: Vec<Value> = agent.sync().await.into_iter().filter(|f| f["type"] == "agent.assigned").collect();
        assert!(late.is_empty(), "SPEC §10: {} was given a conversation another agent has: {late:?}", agent.label);
    }
}

/// Six queued customers; agents on n1 and n2 become available at the same
/// moment, room for three each: every conversation goes to exactly one of
/// them, each agent's share comes in queue order, and each customer hears of
/// one agent only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_on_two_nodes_becoming_available_at_once_never_share_a_conversation() {
    let cluster = Cluster::of(3).flag("--max-conversations-per-agent", 3).start().await;
    let mut customers = Vec::new();
    let mut queue = Vec::new();
    for n in 1..=6 {
        let (customer, conversation) = queued(&cluster, n % 3 + 1, &format!("cust-{n}"), n as u64).await;
        customers.push(customer);
        queue.push(conversation);
    }
    let mut a = cluster.node(1).connect("agent-a", Role::Agent).await;
    let mut b = cluster.node(2).connect("agent-b", Role::Agent).await;
    let available = json!({"type": "agent.status", "data": {"available": true}});
    a.send(available.clone());
    b.send(available);
    let (to_a, to_b) = tokio::join!(assignments(&mut a, 3), assignments(&mut b, 3));

    let position = |conversation: &String| queue.iter().position(|c| c == conversation).expect("a queued conversation");
    for (agent, share) in [("agent-a", &to_a), ("agent-b", &to_b)] {
        let positions: Vec<usize> = share.iter().map(position).collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "SPEC §6/§10: {agent}'s conversations come in queue order, got queue positions {positions:?}"
        );
    }
    let shared: BTreeSet<&String> = to_a.iter().filter(|c| to_b.contains(c)).collect();
    assert!(shared.is_empty(), "SPEC §10: a conversation was assigned to two agents: {shared:?}");
    let all: BTreeSet<&String> = to_a.iter().chain(&to_b).collect();
    assert_eq!(all.len(), 6, "SPEC §6: all six queued conversations are served");
    for (customer, conversation) in customers.iter_mut().zip(&queue) {
        let agent = if to_a.contains(conversation) { "agent-a" } else { "agent-b" };
        assigned_to(customer, conversation, agent).await;
        let more: Vec<Value> = customer.sync().await.into_iter().filter(|f| f["type"] == "agent.assigned").collect();
        assert!(more.is_empty(), "SPEC §10: {} heard of a second agent: {more:?}", customer.label);
    }
}

/// `--max-connections-per-user 2`: a customer's connections on n1 and n2
/// are accepted, a third on n3 completes the upgrade and is closed with
/// 1013; once one of the two closes, n3 accepts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_user_connection_cap_counts_connections_on_every_node() {
    let cluster = Cluster::of(3).flag("--max-connections-per-user", 2).start().await;
    let first = cluster.node(1).connect("cust-1", Role::Customer).await;
    let _second = cluster.node(2).connect("cust-1", Role::Customer).await;
    let mut third = cluster.node(3).open_socket("cust-1", Role::Customer).await;
    let end = third.expect_end().await;
    assert_eq!(
        end.as_ref().map(|(code, _)| *code),
        Some(1013),
        "SPEC §1/§10: a third connection of the user on n3, with two open on n1 and n2, is closed with 1013: {end:?}"
    );
    // Another user is not affected.
    cluster.node(3).connect("cust-2", Role::Customer).await;

    first.close().await;
    let deadline = Instant::now() + WAIT;
    loop {
        let mut again = cluster.node(3).open_socket("cust-1", Role::Customer).await;
        let frame = again.next().await;
        match frame {
            crate::common::Next::Frame(ready) if ready["type"] == "session.ready" => break,
            other => assert!(
                Instant::now() < deadline,
                "SPEC §10: once the connection on n1 closed, n3 accepts a second connection of the user \
                 within {WAIT:?}; still {other:?}"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A customer on `node` opens a conversation with no agent available: it is
/// queued at `position`.
async fn queued(cluster: &Cluster, node: usize, customer: &str, position: u64) -> (Peer, String) {
    let mut peer = cluster.node(node).connect(customer, Role::Customer).await;
    let conversation = peer.open().await;
    let queued = peer.recv_until("conversation.queued").await;
    assert_eq!(
        (queued["data"]["conversationId"].as_str(), queued["data"]["position"].as_u64()),
        (Some(conversation.as_str()), Some(position)),
        "SPEC §6/§10: {customer}'s conversation joins the one queue of every node at position {position}"
    );
    (peer, conversation)
}

/// A customer on `node` opens a conversation (to be assigned).
async fn opened(cluster: &Cluster, node: usize, customer: &str) -> (Peer, String) {
    let mut peer = cluster.node(node).connect(customer, Role::Customer).await;
    let conversation = peer.open().await;
    (peer, conversation)
}

/// The next `count` conversations assigned to `agent`, in the order it hears of them.
async fn assignments(agent: &mut Peer, count: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < count {
        let assigned = agent.recv_until("agent.assigned").await;
        got.push(assigned["data"]["conversationId"].as_str().expect("an id").to_owned());
    }
    got
}

/// The customer hears that `agent` has its conversation.
async fn assigned_to(customer: &mut Peer, conversation: &str, agent: &str) {
    let assigned = customer.recv_until("agent.assigned").await;
    assert_eq!(
        (assigned["data"]["conversationId"].as_str(), assigned["data"]["agent"]["id"].as_str()),
        (Some(conversation), Some(agent)),
        "SPEC §3/§10: {} hears which agent has its conversation",
        customer.label
    );
}

/// The agent closes `conversation` and hears it closed.
async fn close(agent: &mut Peer, conversation: &str) {
    agent.send(json!({"type": "conversation.close", "data": {"conversationId": conversation}}));
    let what = format!("conversation.closed for {conversation}");
    agent
        .recv_where(&what, |f| f["type"] == "conversation.closed" && f["data"]["conversationId"] == conversation)
        .await;
}

/// A node that hears Redis late still hears what concerns a user who just
/// connected there: the agent on n1 (400 ms from Redis each way) becomes
/// available, and a customer on n2 opens at once; n2 assigns the agent, and
/// the agent hears `agent.assigned` on n1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_on_a_node_slow_to_hear_redis_hears_an_assignment_made_elsewhere_right_after_it_connected() {
    let cluster = Cluster::of(2).slow_redis_for(1, std::time::Duration::from_millis(400)).start().await;
    let mut customer = cluster.node(2).connect("cust-1", Role::Customer).await;
    let mut agent = cluster.node(1).connect("agent-1", Role::Agent).await;
    agent.set_available(true).await;
    let conversation = customer.open().await;
    let assigned = customer.recv_until("agent.assigned").await;
    assert_eq!(assigned["data"]["agent"]["id"], "agent-1", "SPEC §6: the only available agent gets it");
    let heard = agent.recv_until("agent.assigned").await;
    assert_eq!(
        heard["data"]["conversationId"], conversation,
        "SPEC §10: the agent's node hears an assignment another node made just after the agent connected"
    );
}
