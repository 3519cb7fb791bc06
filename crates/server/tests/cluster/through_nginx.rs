//! The cluster behind nginx (deploy/nginx/petchat.conf), as SPEC §10 has it
//! deployed: no sticky sessions, a conversation whose members nginx put on
//! different nodes, and the clients of a killed node back through nginx.

use std::time::Instant;

use petchat_protocol::Role;
use serde_json::json;

use super::{ack_of, chat_send, key_of, message, say, seq};
use crate::common::cluster::{Cluster, Peer, WAIT};

/// Through nginx, an agent and then a customer land on two different nodes
/// (least connections); they chat both ways; the customer reconnects
/// through nginx and resends an acked message: the original ack, and the
/// agent's next chat.message is the next seq, not the resend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_nginx_members_on_different_nodes_chat_and_a_resend_is_acked_once() {
    let cluster = Cluster::of(3).behind_nginx().start().await;
    let lb = cluster.balancer();
    let mut agent = lb.connect("agent-1", Role::Agent).await;
    agent.set_available(true).await;
    let mut customer = lb.connect("cust-1", Role::Customer).await;
    let counts = connections_once(&cluster, 2).await;
    assert_eq!(
        counts.iter().filter(|&&n| n == 1).count(),
        2,
        "nginx spreads the first two sockets over two nodes, so that this conversation spans nodes: {counts:?}"
    );
    let conversation = customer.open().await;
    assigned(&mut customer, &conversation).await;
    assigned(&mut agent, &conversation).await;

    let ack = say(&mut customer, &conversation, "hello through nginx").await;
    assert_eq!(seq(&message(&mut agent).await), seq(&ack), "SPEC §10: the agent on another node gets it");
    let ack = say(&mut agent, &conversation, "hello back").await;
    assert_eq!(seq(&message(&mut customer).await), seq(&ack), "SPEC §10: the customer on another node gets it");

    let send = chat_send(&conversation, "sent before a reconnect");
    customer.send(send.clone());
    let original = ack_of(&mut customer, key_of(&send)).await;
    assert_eq!(seq(&message(&mut agent).await), seq(&original));
    customer.close().await;
    let mut customer = lb.connect("cust-1", Role::Customer).await;
    customer.send(send.clone());
    assert_eq!(
        ack_of(&mut customer, key_of(&send)).await,
        original,
        "SPEC §10: a resend through nginx, to whichever node, gets the original chat.ack"
    );
    let next = say(&mut customer, &conversation, "next").await;
    let got = message(&mut agent).await;
    assert_eq!(
        (seq(&got), seq(&next)),
        (seq(&original) + 1, seq(&original) + 1),
        "SPEC §5/§10: no second chat.message for the resend reaches the agent"
    );
}

/// Through nginx, the agent and the customer on two nodes; the customer's
/// node is SIGKILLed while the agent goes on writing. The customer
/// reconnects through nginx (which passes the dead node over), and a join
/// with afterSeq gets exactly what it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_nginx_the_clients_of_a_killed_node_reconnect_to_another_and_resume() {
    let mut cluster = Cluster::of(3).behind_nginx().start().await;
    let lb = cluster.balancer();
    let mut agent = lb.connect("agent-1", Role::Agent).await;
    agent.set_available(true).await;
    let before = connections_once(&cluster, 1).await;
    let mut customer = lb.connect("cust-1", Role::Customer).await;
    let after = connections_once(&cluster, 2).await;
    let node = (1..=cluster.len()).find(|&n| after[n - 1] > before[n - 1]).expect("the customer's node");
    let conversation = customer.open().await;
    assigned(&mut customer, &conversation).await;
    assigned(&mut agent, &conversation).await;
    let ack = say(&mut agent, &conversation, "before").await;
    assert_eq!(seq(&message(&mut customer).await), seq(&ack));

    cluster.kill(node).await;
    customer.expect_end().await;
    let mut missed = Vec::new();
    for n in 0..3 {
        missed.push(seq(&say(&mut agent, &conversation, &format!("missed #{n}")).await));
    }
    let (mut customer, ready) = lb.connect_ready("cust-1", Role::Customer).await;
    assert_eq!(
        ready["data"]["conversations"],
        json!([{"id": conversation, "status": "active", "lastSeq": 4}]),
        "SPEC §10: through nginx, another node's session.ready lists the conversation as the agent left it"
    );
    customer.join(&conversation, seq(&ack)).await;
    for expected in missed {
        let got = customer.recv_type("chat.message").await;
        assert_eq!(seq(&got), expected, "SPEC §5/§10: the join after the reconnect replays exactly what was missed");
    }
    let live = say(&mut agent, &conversation, "live").await;
    assert_eq!(seq(&message(&mut customer).await), seq(&live), "SPEC §3: live traffic follows the replay");
}

/// Each node's open sockets, once they add up to `total`.
async fn connections_once(cluster: &Cluster, total: u64) -> Vec<u64> {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut counts = Vec::new();
        for n in 1..=cluster.len() {
            counts.push(cluster.connections(n).await);
        }
        if counts.iter().sum::<u64>() == total {
            return counts;
        }
        assert!(Instant::now() < deadline, "expected {total} sockets over the nodes, they count {counts:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The peer hears that `conversation` has its agent.
async fn assigned(peer: &mut Peer, conversation: &str) {
    let what = format!("agent.assigned for {conversation}");
    peer.recv_where(&what, |f| f["type"] == "agent.assigned" && f["data"]["conversationId"] == conversation).await;
}
