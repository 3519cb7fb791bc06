//! SPEC §10's faults: a node killed with SIGKILL (under load, its users'
//! presence, its agent's grace), Redis killed and started again, PostgreSQL
//! stopped and started again, `/readyz`, and what a node refuses at start.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use petchat_protocol::Role;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{ack_of, assert_gapless, chat_send, key_of, message, say, seq};
use crate::common::cluster::{AGENT_GRACE_MS, Cluster, Endpoint, HEARTBEAT_MS, Pair, Peer, WAIT};
use crate::common::{Next, SECRET};

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

/// A customer and an agent on n1; Redis is killed. /readyz turns 503 on
/// every node; the two go on chatting through n1, each message acked and
/// delivered; once Redis is back (empty) /readyz is 200 again, and n2 reads
/// every acked message from PostgreSQL at its acked seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_members_on_one_node_chat_and_every_ack_is_stored() {
    let mut cluster = Cluster::of(2).start().await;
    let Pair { mut customer, mut agent, conversation } = cluster.pair(1, "cust-1", 1, "agent-1").await;
    cluster.kill_redis();
    for n in 1..=2 {
        cluster.wait_readyz(n, 503, "SPEC §7/§10: /readyz is 503 while Redis is unreachable").await;
    }
    let mut acks = Vec::new();
    for n in 0..5 {
        acks.push(relay(&mut customer, &mut agent, &conversation, n).await);
        acks.push(relay(&mut agent, &mut customer, &conversation, n).await);
    }
    cluster.start_redis();
    for n in 1..=2 {
        cluster.wait_readyz(n, 200, "SPEC §7/§10: /readyz is 200 again once Redis is back").await;
    }
    let mut reader = cluster.node(2).connect("cust-1", Role::Customer).await;
    let stored = reader.replay(&conversation, 0).await;
    assert_gapless(&stored.iter().map(seq).collect::<Vec<_>>(), acks.len() as u64, "SPEC §5: stored during the outage");
    for (text, ack) in &acks {
        let at = &stored[seq(ack) as usize - 1];
        assert_eq!(
            (at["messageId"].as_str(), at["text"].as_str()),
            (ack["messageId"].as_str(), Some(text.as_str())),
            "SPEC §10: nodes never ack what they have not stored, Redis or not"
        );
    }
}

/// `sender` says its `n`th message while Redis is down; `receiver`, on the
/// same node, gets it. Returns (text, ack data).
async fn relay(sender: &mut Peer, receiver: &mut Peer, conversation: &str, n: usize) -> (String, Value) {
    let text = format!("{} while Redis is down #{n}", sender.label);
    let ack = say(sender, conversation, &text).await;
    let got = message(receiver).await;
    assert_eq!(
        (seq(&got), got["text"].as_str()),
        (seq(&ack), Some(text.as_str())),
        "SPEC §10: while Redis is unreachable n1 keeps serving its own connections"
    );
    (text, ack)
}

/// cust-1 on n1 and agent-1 on n2; Redis is killed and both write three
/// messages (each stored by its own node). When Redis is back each gets
/// every message of the other, in seq order, each once, or is closed with
/// 1012 and, resuming with afterSeq, gets the rest; then live traffic
/// crosses nodes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_returns_members_on_other_nodes_get_what_was_sent_meanwhile_or_a_1012() {
    let mut cluster = Cluster::of(3).start().await;
    let Pair { mut customer, mut agent, conversation } = cluster.pair(1, "cust-1", 2, "agent-1").await;
    let first = say(&mut customer, &conversation, "before the outage").await;
    assert_eq!(seq(&message(&mut agent).await), seq(&first));
    cluster.kill_redis();
    for n in 1..=2 {
        cluster.wait_readyz(n, 503, "SPEC §10: the nodes notice that Redis is gone").await;
    }
    // What each knows: seq 1, its own messages, and whatever its node
    // delivered of the other's meanwhile.
    let mut known = [BTreeSet::from([seq(&first)]), BTreeSet::from([seq(&first)])];
    for n in 0..3 {
        say_noting(&mut customer, &conversation, &format!("customer during #{n}"), &mut known[0]).await;
        say_noting(&mut agent, &conversation, &format!("agent during #{n}"), &mut known[1]).await;
    }
    let last = 7;
    cluster.start_redis();

    let customer_side = Member {
        conversation: conversation.clone(),
        user: "cust-1".into(),
        role: Role::Customer,
        fallback: Some(cluster.node(1)),
    };
    let agent_side = Member {
        conversation: conversation.clone(),
        user: "agent-1".into(),
        role: Role::Agent,
        fallback: Some(cluster.node(2)),
    };
    let [known_customer, known_agent] = known;
    let (mut customer, mut agent) = tokio::join!(
        customer_side.catch_up(customer, known_customer, last),
        agent_side.catch_up(agent, known_agent, last)
    );
    let ack = say(&mut customer, &conversation, "after the outage").await;
    let got = message(&mut agent).await;
    assert_eq!(
        seq(&got),
        seq(&ack),
        "SPEC §10: once Redis is back, live traffic crosses nodes again, nothing replayed twice"
    );
}

/// Sends `text` and reads until its ack, noting in `known` its seq and the
/// seq of every chat.message that arrives meanwhile.
async fn say_noting(peer: &mut Peer, conversation: &str, text: &str, known: &mut BTreeSet<u64>) {
    let send = chat_send(conversation, text);
    peer.send(send.clone());
    loop {
        let frame = peer.recv().await;
        match frame["type"].as_str() {
            Some("chat.message") => {
                known.insert(seq(&frame));
            }
            Some("chat.ack") if frame["data"]["clientMessageId"] == key_of(&send) => {
                known.insert(seq(&frame));
                return;
            }
            Some("error") => panic!("SPEC §10: while Redis is down a node still stores and acks: {frame}"),
            _ => {}
        }
    }
}

/// `/readyz` on every node: 200 with PostgreSQL and Redis up, 503 (naming
/// Redis) while Redis is down, 200 when it is back, 503 while PostgreSQL is
/// down, 200 when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_200_only_while_postgresql_and_redis_both_answer() {
    let mut cluster = Cluster::of(2).private_postgres().start().await;
    for n in 1..=2 {
        cluster.wait_readyz(n, 200, "SPEC §7: PostgreSQL and Redis are both reachable").await;
    }
    cluster.kill_redis();
    for n in 1..=2 {
        cluster.wait_readyz(n, 503, "SPEC §7/§10: Redis is unreachable").await;
        let (_, body) = cluster.readyz(n).await;
        assert!(
            body.to_lowercase().contains("redis"),
            "SPEC §10: /readyz says that Redis is what is unreachable: {body:?}"
        );
    }
    cluster.start_redis();
    for n in 1..=2 {
        cluster.wait_readyz(n, 200, "SPEC §7: Redis is back").await;
    }
    cluster.stop_postgres();
    for n in 1..=2 {
        cluster.wait_readyz(n, 503, "SPEC §7/§10: PostgreSQL is unreachable").await;
        let (_, body) = cluster.readyz(n).await;
        let body = body.to_lowercase();
        assert!(
            ["postgres", "database", "store"].iter().any(|word| body.contains(word)),
            "SPEC §10: /readyz says that PostgreSQL is what is unreachable: {body:?}"
        );
    }
    cluster.start_postgres();
    for n in 1..=2 {
        cluster.wait_readyz(n, 200, "SPEC §7: PostgreSQL is back").await;
    }
}

/// cust-1 on n1 and agent-1 on n2 on a PostgreSQL that stops: nothing the
/// customer sends while it is down is acked (each send gets an `error` with
/// its id, or waits for the node's retry); once it is back, every message
/// is acked, by the node's retry or the client's resend with the same
/// clientMessageId, and the history holds each acked message once at its
/// acked seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgresql_is_down_nothing_is_acked_and_every_ack_is_stored_once() {
    let cluster = Cluster::of(2).private_postgres().start().await;
    let Pair { mut customer, mut agent, conversation } = cluster.pair(1, "cust-1", 2, "agent-1").await;
    let mut acks: BTreeMap<String, (String, Value)> = BTreeMap::new();
    for n in 0..3 {
        let send = chat_send(&conversation, &format!("before #{n}"));
        customer.send(send.clone());
        let ack = ack_of(&mut customer, key_of(&send)).await;
        acks.insert(key_of(&send).to_owned(), (send["data"]["text"].as_str().expect("text").to_owned(), ack));
    }

    cluster.stop_postgres();
    let during: Vec<Value> =
        (0..5).map(|n| chat_send(&conversation, &format!("while PostgreSQL is down #{n}"))).collect();
    for send in &during {
        customer.send(send.clone());
    }
    let mut refused = BTreeSet::new();
    let mut while_down = customer.frames_for(Duration::from_secs(3)).await;
    // The connection is still open (SPEC §3: an error never closes it by
    // itself), and what the node sent before the pong counts too.
    while_down.extend(customer.sync().await);
    for frame in while_down {
        match frame["type"].as_str() {
            Some("chat.ack") => panic!("SPEC §5/§10: a node acks only what it stored, and PostgreSQL is down: {frame}"),
            Some("error") => {
                let id = frame["data"]["refId"].as_str().unwrap_or_default().to_owned();
                assert!(
                    during.iter().any(|s| key_of(s) == id),
                    "SPEC §2: an error caused by a chat.send carries its id as refId: {frame}"
                );
                refused.insert(id);
            }
            _ => {}
        }
    }

    cluster.start_postgres();
    let deadline = Instant::now() + WAIT;
    for send in &during {
        let key = key_of(send).to_owned();
        let mut must_resend = refused.contains(&key);
        let ack = loop {
            if must_resend {
                customer.send(send.clone());
            }
            let what = format!("chat.ack or error for {key}");
            let frame = customer
                .recv_where(&what, |f| {
                    (f["type"] == "chat.ack" && f["data"]["clientMessageId"] == key.as_str())
                        || (f["type"] == "error" && f["data"]["refId"] == key.as_str())
                })
                .await;
            if frame["type"] == "chat.ack" {
                break frame["data"].clone();
            }
            assert!(
                Instant::now() < deadline,
                "SPEC §10: {WAIT:?} after PostgreSQL came back, a resend of {key} is still refused: {frame}"
            );
            must_resend = true;
            // A client's retry pace, not a wait for something to happen.
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        acks.insert(key, (send["data"]["text"].as_str().expect("text").to_owned(), ack));
    }

    let mut reader = cluster.node(2).connect("cust-1", Role::Customer).await;
    let stored = reader.replay(&conversation, 0).await;
    let rule = "SPEC §5/§10: after PostgreSQL's restart the history holds every acked message once";
    assert_gapless(&stored.iter().map(seq).collect::<Vec<_>>(), acks.len() as u64, rule);
    for (key, (text, ack)) in &acks {
        let at = &stored[seq(ack) as usize - 1];
        assert_eq!(
            (at["messageId"].as_str(), at["text"].as_str()),
            (ack["messageId"].as_str(), Some(text.as_str())),
            "{rule}: {key} is stored at its acked seq"
        );
    }
    let mut delivered = Vec::new();
    while delivered.len() < acks.len() {
        delivered.push(seq(&message(&mut agent).await));
    }
    assert_gapless(
        &delivered,
        acks.len() as u64,
        "SPEC §5/§10: the agent on n2 gets each stored message once, in order",
    );
}

/// A node on SQLite given `--redis-url` exits at start, saying that
/// SQLite cannot be shared with other nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_sqlite_with_a_redis_url_is_refused_at_start_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = format!("sqlite://{}", dir.path().join("petchat.db").display());
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_petchat-server"))
        .args(["--bind", "127.0.0.1:0", "--database-url", &database, "--jwt-secret", SECRET])
        .args(["--redis-url", "redis://127.0.0.1:1/"])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(WAIT, run)
        .await
        .expect("SPEC §10: a node on SQLite with --redis-url exits at start instead of running")
        .expect("the server binary runs");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "SPEC §10: SQLite with --redis-url is refused at start; it exited with success");
    let lower = said.to_lowercase();
    assert!(
        lower.contains("sqlite") && lower.contains("redis"),
        "SPEC §10: the refusal names SQLite and --redis-url, got: {said}"
    );
}

/// One member of a conversation that talks through faults: its user, its
/// conversation, and where it reconnects when its node dies (`None`: it
/// must not need to).
struct Member {
    conversation: String,
    user: String,
    role: Role,
    fallback: Option<Endpoint>,
}

/// What a member saw while it talked.
struct Talk {
    user: String,
    conversation: String,
    /// (text, ack data) of each of its messages.
    acks: Vec<(String, Value)>,
    /// How its connections ended (close frame or none).
    ends: Vec<Option<(u16, String)>>,
    fallback_used: bool,
}

/// Messages a member has sent and not had acked, at most.
const WINDOW: usize = 5;

impl Member {
    /// Sends `count` messages, at most [`WINDOW`] unacked at a time, and reads
    /// until it knows every seq up to `last`; reports on `progress` once a
    /// third of its messages are acked. When its connection ends it
    /// reconnects to its fallback, joins with afterSeq (the end of what it
    /// knows without a gap), checks that the replay holds exactly what it
    /// missed, and resends what was not acked with the same clientMessageId.
    async fn talk(mut self, mut peer: Peer, count: usize, last: u64, progress: mpsc::UnboundedSender<()>) -> Talk {
        let label = self.user.clone();
        let sends: Vec<Value> = (0..count).map(|n| chat_send(&self.conversation, &format!("{label} #{n}"))).collect();
        let mut acks: Vec<Option<Value>> = vec![None; count];
        let (mut next, mut unacked) = (0, Vec::<usize>::new());
        let mut known = BTreeSet::new();
        let mut delivered = Vec::<u64>::new();
        let mut resumed_after: Option<u64> = None;
        let mut ends = Vec::new();
        let mut fallback_used = false;
        while unacked.len() + (count - next) > 0 || !(1..=last).all(|s| known.contains(&s)) {
            while unacked.len() < WINDOW && next < count {
                peer.send(sends[next].clone());
                unacked.push(next);
                next += 1;
            }
            let frame = match peer.next().await {
                Next::Frame(frame) => frame,
                Next::Closed(end) => {
                    ends.push(end.clone());
                    let Some(fallback) = self.fallback.take() else {
                        panic!("SPEC §10: {label}'s connection ended ({end:?}) though its node lives")
                    };
                    fallback_used = true;
                    peer = fallback.reconnect(&self.user, self.role).await;
                    let after = (0..).take_while(|s| *s == 0 || known.contains(s)).last().unwrap_or(0);
                    peer.join(&self.conversation, after).await;
                    resumed_after = Some(after);
                    delivered.clear();
                    for &n in &unacked {
                        peer.send(sends[n].clone());
                    }
                    continue;
                }
            };
            match frame["type"].as_str() {
                Some("chat.ack") => {
                    let n = sends.iter().position(|s| frame["data"]["clientMessageId"] == key_of(s));
                    let n = n.unwrap_or_else(|| panic!("{label}: an ack for a key it never sent: {frame}"));
                    match &acks[n] {
                        Some(first) => assert_eq!(
                            first, &frame["data"],
                            "SPEC §5: {label}'s message #{n} acked twice, differently"
                        ),
                        None => acks[n] = Some(frame["data"].clone()),
                    }
                    unacked.retain(|&u| u != n);
                    known.insert(seq(&frame));
                    if acks.iter().filter(|a| a.is_some()).count() == count / 3 {
                        let _ = progress.send(());
                    }
                }
                Some("chat.message") => {
                    let s = seq(&frame);
                    if let Some(after) = resumed_after {
                        assert!(s > after, "SPEC §5/§10: {label}'s join with afterSeq {after} replayed seq {s}");
                    }
                    assert!(
                        delivered.last().is_none_or(|&prev| prev < s),
                        "SPEC §5: {label} got seq {s} after {delivered:?}: in seq order, each once"
                    );
                    delivered.push(s);
                    known.insert(s);
                }
                Some("error") => panic!("{label}: a message was refused: {frame}"),
                _ => {}
            }
        }
        let acks = sends
            .iter()
            .zip(acks)
            .map(|(send, ack)| (send["data"]["text"].as_str().expect("text").to_owned(), ack.expect("acked")))
            .collect();
        Talk { user: self.user, conversation: self.conversation, acks, ends, fallback_used }
    }

    /// After an outage: reads until the member knows every seq up to `last`
    /// (`own`: the seqs of its own acked messages), each chat.message in seq
    /// order and once; a close with 1012 makes it reconnect to its fallback
    /// and join with afterSeq; any other end fails the test.
    async fn catch_up(mut self, mut peer: Peer, mut known: BTreeSet<u64>, last: u64) -> Peer {
        let label = self.user.clone();
        let mut delivered = Vec::<u64>::new();
        let mut resumed = false;
        while !(1..=last).all(|s| known.contains(&s)) {
            let missing: Vec<u64> = (1..=last).filter(|s| !known.contains(s)).collect();
            let frame = match peer.next_within(WAIT).await {
                Some(Next::Frame(frame)) => frame,
                Some(Next::Closed(Some((1012, _)))) => {
                    let fallback = self.fallback.take().expect("one 1012 per outage");
                    peer = fallback.reconnect(&self.user, self.role).await;
                    let after = (0..).take_while(|s| *s == 0 || known.contains(s)).last().unwrap_or(0);
                    peer.join(&self.conversation, after).await;
                    delivered.clear();
                    resumed = true;
                    continue;
                }
                Some(Next::Closed(end)) => panic!(
                    "SPEC §10: after Redis came back {label}'s connection ended with {end:?}; only 1012 (then a \
                     resume) is allowed, and seqs {missing:?} had not arrived"
                ),
                None => panic!(
                    "SPEC §10: a connected client never misses a message silently: {WAIT:?} after Redis came back \
                     {label} still lacks seqs {missing:?} and was not closed with 1012"
                ),
            };
            if frame["type"] == "chat.message" {
                let s = seq(&frame);
                // Its own messages never come back to the connection that
                // sent them, and the others' came once: until a resume
                // replays them, a known seq is a duplicate.
                assert!(
                    resumed || !known.contains(&s),
                    "SPEC §5/§10: {label} got seq {s} a second time after Redis came back"
                );
                assert!(
                    delivered.last().is_none_or(|&prev| prev < s),
                    "SPEC §5/§10: {label} got seq {s} again or out of order after Redis came back ({delivered:?})"
                );
                delivered.push(s);
                known.insert(s);
            }
        }
        peer
    }
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
