//! SPEC §10's outages: Redis killed and started again (nodes serve their
//! own connections, ack only what they stored, and catch up), PostgreSQL
//! stopped and started again (nothing acked that is not stored), `/readyz`,
//! and what a node refuses at start.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use petchat_protocol::Role;
use serde_json::Value;

use super::member::Member;
use super::{ack_of, assert_gapless, chat_send, key_of, message, say, seq};
use crate::common::SECRET;
use crate::common::cluster::{Cluster, Pair, Peer, WAIT};

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
    // A device connecting meanwhile is served too, without waiting for Redis.
    let started = Instant::now();
    let (mut device, ready) = cluster.node(1).connect_ready("agent-1", Role::Agent).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "SPEC §10: while Redis is unreachable a new connection to n1 gets session.ready within a few seconds, not after {:?}",
        started.elapsed()
    );
    assert_eq!(
        ready["data"]["conversations"][0]["id"], conversation,
        "SPEC §1: session.ready lists the agent's conversation"
    );
    let replayed = device.replay(&conversation, 0).await;
    assert_eq!(replayed.len(), acks.len(), "SPEC §5: the new device's join replays what was stored during the outage");
    acks.push(relay(&mut customer, &mut device, &conversation, 5).await);
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
