//! SPEC §10's node deaths: a node killed with SIGKILL under load loses
//! nothing acked and its clients resume on the others; its users go offline
//! for the others within two heartbeat intervals; its agent keeps its
//! conversations for the grace period, on whatever node it reconnects to.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use petchat_protocol::Role;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::member::Member;
use super::{assert_gapless, message, say, seq};
use crate::common::cluster::{AGENT_GRACE_MS, Cluster, HEARTBEAT_MS, Pair, WAIT};

/// What the presence and grace tests allow beyond the spec's two heartbeat
/// intervals: the check's own tick, fan-out and two busy cores.
const MARGIN: Duration = Duration::from_millis(2_000);

/// Two conversations, four members sending 60 messages each, five in
/// flight: cust-1 on n1 with agent-1 on n3, cust-2 on n3 with agent-2 on n2.
/// n3 is SIGKILLed mid-stream. The senders on n1 and n2 are never
/// disconnected and finish; the two of n3 reconnect (to n2 and n1), join
/// with afterSeq, get exactly what they missed, and resend what was not
/// acked with its clientMessageId. Read back with a join from 0, each
/// conversation is seq 1..=120 with every acked message at its acked seq
/// and no text twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_under_load_loses_no_acked_message_and_its_clients_resume_elsewhere() {
    const EACH: usize = 60;
    let mut cluster = Cluster::of(3).start().await;
    let one = cluster.pair(1, "cust-1", 3, "agent-1").await;
    let two = cluster.pair(3, "cust-2", 2, "agent-2").await;
    let conversations = [one.conversation.clone(), two.conversation.clone()];
    let (progress, mut halfway) = mpsc::unbounded_channel();
    let members = [
        (one.customer, &one.conversation, "cust-1", Role::Customer, None),
        (one.agent, &one.conversation, "agent-1", Role::Agent, Some(cluster.node(2))),
        (two.customer, &two.conversation, "cust-2", Role::Customer, Some(cluster.node(1))),
        (two.agent, &two.conversation, "agent-2", Role::Agent, None),
    ];
    let talks: Vec<_> = members
        .into_iter()
        .map(|(peer, conversation, user, role, fallback)| {
            let member = Member { conversation: conversation.clone(), user: user.to_owned(), role, fallback };
            tokio::spawn(member.talk(peer, EACH, 2 * EACH as u64, progress.clone()))
        })
        .collect();
    for _ in 0..4 {
        let reached = tokio::time::timeout(WAIT, halfway.recv()).await;
        assert!(matches!(reached, Ok(Some(()))), "every member had a third of its messages acked before the kill");
    }
    cluster.kill(3).await;

    let mut acked = Vec::new();
    for talk in futures_util::future::join_all(talks).await {
        let talk = talk.expect("a member's task");
        if talk.fallback_used {
            assert_eq!(talk.ends.len(), 1, "{}: its connection to n3 ended once", talk.user);
        } else {
            assert!(
                talk.ends.is_empty(),
                "SPEC §10: {} on a surviving node keeps going when n3 dies, but its connection ended: {:?}",
                talk.user,
                talk.ends
            );
        }
        acked.push(talk);
    }
    let mut reader = cluster.node(1).connect("cust-1", Role::Customer).await;
    let stored = reader.replay(&conversations[0], 0).await;
    let mut second = cluster.node(2).connect("cust-2", Role::Customer).await;
    let stored_two = second.replay(&conversations[1], 0).await;
    for (conversation, stored) in conversations.iter().zip([stored, stored_two]) {
        let rule = format!("SPEC §5/§10: conversation {conversation} read back after n3's SIGKILL");
        assert_gapless(&stored.iter().map(seq).collect::<Vec<_>>(), 2 * EACH as u64, &rule);
        let texts: BTreeSet<&str> = stored.iter().filter_map(|m| m["text"].as_str()).collect();
        assert_eq!(texts.len(), stored.len(), "{rule}: a message stored twice");
        for talk in acked.iter().filter(|t| &t.conversation == conversation) {
            for (text, ack) in &talk.acks {
                let at = &stored[seq(ack) as usize - 1];
                assert_eq!(
                    (at["messageId"].as_str(), at["text"].as_str()),
                    (ack["messageId"].as_str(), Some(text.as_str())),
                    "{rule}: {}'s acked message is stored at its acked seq",
                    talk.user
                );
            }
        }
    }
}

/// cust-1 (on n2 only) talks with agent-1 on n1; agent-2 (on n2) with
/// cust-2 on n3; cust-3 is on n2 and n3, with agent-3 on n1. n2 is
/// SIGKILLed: within two heartbeat intervals (plus a margin) agent-1 hears
/// cust-1 go offline and cust-2 hears agent-2 go offline; cust-3, still
/// connected on n3, stays online for agent-3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_of_a_killed_node_go_offline_for_the_others_within_two_heartbeats() {
    let mut cluster = Cluster::of(3).start().await;
    let mut one = cluster.pair(2, "cust-1", 1, "agent-1").await;
    let mut two = cluster.pair(3, "cust-2", 2, "agent-2").await;
    let mut three = cluster.pair(2, "cust-3", 1, "agent-3").await;
    let _elsewhere = cluster.node(3).connect("cust-3", Role::Customer).await;
    for watcher in [&mut one.agent, &mut two.customer, &mut three.agent] {
        watcher.sync().await;
    }
    let bound = Duration::from_millis(2 * HEARTBEAT_MS) + MARGIN;
    let killed = Instant::now();
    cluster.kill(2).await;

    for (watcher, user) in [(&mut one.agent, "cust-1"), (&mut two.customer, "agent-2")] {
        let what = format!("presence offline of {user}");
        watcher.recv_where(&what, |f| presence_is(f, user, "offline")).await;
        let after = killed.elapsed();
        assert!(
            after <= bound,
            "SPEC §10: {user}, whose only connection was on the killed n2, goes offline for {} within two \
             heartbeat intervals ({HEARTBEAT_MS} ms each) plus {MARGIN:?}; it took {after:?}",
            watcher.label
        );
    }
    let left = (bound + Duration::from_millis(HEARTBEAT_MS)).saturating_sub(killed.elapsed());
    let heard: Vec<Value> =
        three.agent.frames_for(left).await.into_iter().filter(|f| presence_is(f, "cust-3", "offline")).collect();
    assert!(
        heard.is_empty(),
        "SPEC §10: cust-3 is online while any of its connections is: its connection on n3 outlives n2, got {heard:?}"
    );
}

/// agent-1 on n2 has cust-1's conversation (cust-1 on n1); n2 is SIGKILLed
/// and agent-1 reconnects at once to n3. Through the agent grace period
/// and well past it, cust-1 hears of no requeue and no other agent; the
/// agent's session.ready on n3 lists the conversation, and they chat on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_of_a_killed_node_reconnecting_elsewhere_within_the_grace_keeps_its_conversations() {
    let mut cluster = Cluster::of(3).start().await;
    let Pair { mut customer, agent, conversation } = cluster.pair(1, "cust-1", 2, "agent-1").await;
    cluster.kill(2).await;
    drop(agent);
    let (mut agent, ready) = cluster.node(3).connect_ready("agent-1", Role::Agent).await;
    let listed = ready["data"]["conversations"].as_array().cloned().unwrap_or_default();
    assert!(
        listed.iter().any(|c| c["id"] == conversation.as_str() && c["status"] == "active"),
        "SPEC §10: agent-1's session.ready on n3 lists its conversation as active: {listed:?}"
    );

    let window = Duration::from_millis(AGENT_GRACE_MS + 2 * HEARTBEAT_MS) + MARGIN;
    let requeued: Vec<Value> = customer.frames_for(window).await.into_iter().filter(is_requeue).collect();
    assert!(
        requeued.is_empty(),
        "SPEC §6/§10: an agent that reconnects (to n3) within the grace ({AGENT_GRACE_MS} ms) keeps its \
         conversation, whatever node it died on; the customer heard {requeued:?}"
    );
    agent.join(&conversation, 0).await;
    let ack = say(&mut agent, &conversation, "sorry, I was cut off").await;
    assert_eq!(seq(&message(&mut customer).await), seq(&ack), "the agent on n3 still serves the conversation");
    let ack = say(&mut customer, &conversation, "no problem").await;
    assert_eq!(seq(&message(&mut agent).await), seq(&ack), "the customer's messages reach the agent on n3");
}

/// agent-1 on n2 has cust-1's conversation; n2 is SIGKILLed and agent-1
/// stays away: after the grace period (1.5 s here), not before, the
/// conversation goes back to the queue at position 1, and an agent on n3
/// that becomes available is given it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_of_a_killed_node_that_stays_away_past_the_grace_has_its_conversations_requeued() {
    const GRACE_MS: u64 = 1_500;
    let mut cluster = Cluster::of(3).flag("--agent-grace-ms", GRACE_MS).start().await;
    let Pair { mut customer, agent, conversation } = cluster.pair(1, "cust-1", 2, "agent-1").await;
    let killed = Instant::now();
    cluster.kill(2).await;
    drop(agent);

    let queued = customer
        .recv_where("conversation.queued", |f| {
            f["type"] == "conversation.queued" && f["data"]["conversationId"] == conversation.as_str()
        })
        .await;
    let after = killed.elapsed();
    assert_eq!(queued["data"]["position"], 1, "SPEC §6: the requeued conversation is first in the queue");
    assert!(
        after >= Duration::from_millis(GRACE_MS),
        "SPEC §6/§10: the dead node's agent keeps its conversation for the grace period ({GRACE_MS} ms); \
         it was requeued after {after:?}"
    );
    let limit = Duration::from_millis(GRACE_MS + 2 * HEARTBEAT_MS) + MARGIN;
    assert!(
        after <= limit,
        "SPEC §6/§10: requeued once the grace period ({GRACE_MS} ms) after n2's death (noticed within two \
         heartbeats) is over: took {after:?}, limit {limit:?}"
    );

    let mut other = cluster.node(3).connect("agent-2", Role::Agent).await;
    other.send(json!({"type": "agent.status", "data": {"available": true}}));
    let assigned = other.recv_until("agent.assigned").await;
    assert_eq!(assigned["data"]["conversationId"], conversation.as_str(), "SPEC §6: agent-2 on n3 takes it over");
    let told = customer.recv_until("agent.assigned").await;
    assert_eq!(told["data"]["agent"]["id"], "agent-2", "SPEC §3: the customer hears who has its conversation now");
}

/// Whether `frame` is a presence of `user` with `status`.
fn presence_is(frame: &Value, user: &str, status: &str) -> bool {
    frame["type"] == "presence" && frame["data"]["userId"] == user && frame["data"]["status"] == status
}

/// Whether `frame` tells a customer its conversation went back to the queue or to another agent.
fn is_requeue(frame: &Value) -> bool {
    matches!(frame["type"].as_str(), Some("conversation.queued" | "agent.assigned"))
        || (frame["type"] == "notification" && frame["data"]["kind"] == "conversation.requeued")
}
