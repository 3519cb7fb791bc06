//! The conversation lifecycle across nodes: the away rule holds whatever node
//! the customer left from and the agent is on, and a transfer reaches every
//! member's node.

use petchat_protocol::Role;
use serde_json::json;

use crate::common::cluster::{Cluster, WAIT};

/// A customer on n1 leaves its conversation with an agent on n2, and another
/// customer who left n3 while queued is never given the agent's freed slot:
/// a customer who is there, on n2, is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_who_leaves_any_node_is_closed_by_the_system_and_takes_no_agents_slot() {
    let cluster =
        Cluster::of(3).flag("--max-conversations-per-agent", 1).flag("--customer-away-ms", 1_500).start().await;
    let mut pair = cluster.pair(1, "cust-1", 2, "agent-1").await;
    pair.agent.set_available(true).await;

    let mut gone = cluster.node(3).connect("cust-gone", Role::Customer).await;
    gone.open().await;
    gone.recv_until("conversation.queued").await;
    gone.close().await;
    // Its absence is heard when the queue no longer lists it (agents see the customers who wait).
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        pair.agent.send(json!({"type": "conversation.list", "id": "q", "data": {"scope": "queue"}}));
        let listed = pair.agent.recv_until("conversation.listed").await;
        if listed["data"]["conversations"] == json!([]) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the customer who left n3 still waits: {listed}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut waiting = cluster.node(2).connect("cust-waiting", Role::Customer).await;
    let waiting_id = waiting.open().await;
    let position = waiting.recv_until("conversation.queued").await;
    assert_eq!(position["data"]["position"], 1, "SPEC §6: the absent customer on n3 is not ahead of cust-waiting");

    pair.customer.close().await;
    let closed = pair.agent.recv_until("conversation.closed").await;
    assert_eq!(
        closed["data"],
        json!({"conversationId": pair.conversation, "by": "system", "reason": "customer_away"}),
        "the customer who left n1 is closed for the agent on n2"
    );
    let assigned = pair.agent.recv_until("agent.assigned").await;
    assert_eq!(
        assigned["data"]["conversationId"],
        waiting_id.as_str(),
        "the freed slot goes to the customer who is there"
    );
}

/// agent-a on n1 hands the conversation of a customer on n3 to agent-b on n2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_reaches_the_customer_and_both_agents_on_their_nodes() {
    let cluster = Cluster::of(3).start().await;
    let mut pair = cluster.pair(3, "cust-1", 1, "agent-a").await;
    let mut b = cluster.node(2).connect("agent-b", Role::Agent).await;
    b.set_available(true).await;
    pair.agent.send(json!({"type": "conversation.transfer", "id": "t", "data": {"conversationId": pair.conversation, "toAgentId": "agent-b"}}));
    let transferred = pair.agent.recv_until("conversation.transferred").await;
    assert_eq!(
        (transferred["data"]["from"]["id"].as_str(), transferred["data"]["to"]["id"].as_str()),
        (Some("agent-a"), Some("agent-b"))
    );
    assert_eq!(pair.customer.recv_until("conversation.transferred").await["data"]["to"]["id"], "agent-b");
    assert_eq!(pair.customer.recv_until("agent.assigned").await["data"]["agent"]["id"], "agent-b");
    assert_eq!(b.recv_until("agent.assigned").await["data"]["conversationId"], pair.conversation.as_str());
    b.join(&pair.conversation, 0).await;
    pair.customer.send(json!({"type": "chat.send", "data": {"conversationId": pair.conversation, "clientMessageId": crate::common::uuid(), "text": "still there?"}}));
    assert_eq!(
        b.recv_until("chat.message").await["data"]["text"],
        "still there?",
        "agent-b on n2 hears the customer on n3"
    );
    let late = pair.agent.sync().await;
    assert!(!late.iter().any(|f| f["type"] == "chat.message"), "agent-a on n1 no longer hears it: {late:?}");
}
