//! SPEC §10, several nodes: real `petchat-server` processes on one PostgreSQL
//! database and one Redis (tests/common/cluster.rs), one test per rule.
//!
//! - `cluster/chat.rs`: §3 and §5 across nodes (chat, receipts, typing,
//!   presence, several devices, exactly-once, gapless seq, resume);
//! - `cluster/assignment.rs`: §6 across nodes (the one queue, one agent per
//!   conversation, the fewest-open rule) and the per-user connection cap;
//! - `cluster/node_death.rs`: a node SIGKILLed under load, its users'
//!   presence, its agent's grace (with `cluster/member.rs`, a client that
//!   reconnects, resumes and resends as real ones do);
//! - `cluster/live.rs`: §11–§13 across nodes (topic events in seq order
//!   whichever node publishes, notifications and read marks, presence);
//! - `cluster/outages.rs`: Redis and PostgreSQL lost and back, `/readyz`,
//!   and what a node refuses at start;
//! - `cluster/through_nginx.rs`: the same behind nginx, no sticky sessions.
//!
//! These tests need PostgreSQL and Redis, so the file is built only with the
//! `postgres-tests` feature (Cargo.toml); scripts/test.sh's PostgreSQL step
//! runs them. Each failure message names the rule that broke.

mod common;

#[path = "cluster/assignment.rs"]
mod assignment;
#[path = "cluster/chat.rs"]
mod chat;
#[path = "cluster/lifecycle.rs"]
mod lifecycle;
#[path = "cluster/live.rs"]
mod live;
#[path = "cluster/member.rs"]
mod member;
#[path = "cluster/node_death.rs"]
mod node_death;
#[path = "cluster/outages.rs"]
mod outages;
#[path = "cluster/through_nginx.rs"]
mod through_nginx;

use std::collections::BTreeSet;

use common::cluster::Peer;
use serde_json::{Value, json};

/// A `chat.send` of `text` with a fresh clientMessageId, which is also its
/// envelope `id` (so that an error names it in `refId`).
fn chat_send(conversation: &str, text: &str) -> Value {
    let key = common::uuid();
    json!({"type": "chat.send", "id": key, "data": {"conversationId": conversation, "clientMessageId": key, "text": text}})
}

/// The clientMessageId of a `chat.send`.
fn key_of(send: &Value) -> &str {
    send["data"]["clientMessageId"].as_str().expect("a clientMessageId")
}

/// `seq` of a `chat.message` or `chat.ack` frame (or of its `data`).
fn seq(frame: &Value) -> u64 {
    let data = if frame.get("data").is_some() { &frame["data"] } else { frame };
    data["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {frame}"))
}

/// Sends `text` and waits for its `chat.ack` (other frames skipped); returns the ack's data.
async fn say(peer: &mut Peer, conversation: &str, text: &str) -> Value {
    let send = chat_send(conversation, text);
    peer.send(send.clone());
    ack_of(peer, key_of(&send)).await
}

/// The `chat.ack` for `key` (other frames skipped); its data.
async fn ack_of(peer: &mut Peer, key: &str) -> Value {
    let what = format!("chat.ack for clientMessageId {key}");
    let ack = peer.recv_where(&what, |f| f["type"] == "chat.ack" && f["data"]["clientMessageId"] == key).await;
    ack["data"].clone()
}

/// The next `chat.message` (other frames skipped); its data.
async fn message(peer: &mut Peer) -> Value {
    peer.recv_until("chat.message").await["data"].clone()
}

/// The next frame of type `kind` about `user` (a presence, typing frame…), other frames skipped.
async fn about(peer: &mut Peer, kind: &str, user: &str) -> Value {
    let what = format!("{kind} about {user}");
    let frame =
        peer.recv_where(&what, |f| f["type"] == kind && (f["data"]["userId"] == user || f["data"]["by"] == user)).await;
    frame["data"].clone()
}

/// A test on a frame.
type FrameTest<'a> = dyn Fn(&Value) -> bool + 'a;

/// Reads until every one of `wanted` (a description and a test) has matched
/// a frame, in any order; returns the matches in `wanted`'s order.
async fn await_all(peer: &mut Peer, wanted: &[(&str, &FrameTest<'_>)]) -> Vec<Value> {
    let mut found: Vec<Option<Value>> = vec![None; wanted.len()];
    let mut skipped = Vec::new();
    while found.iter().any(Option::is_none) {
        let missing: Vec<&str> =
            wanted.iter().zip(&found).filter(|(_, f)| f.is_none()).map(|((what, _), _)| *what).collect();
        let frame = match peer.next_within(common::cluster::WAIT).await {
            Some(common::Next::Frame(frame)) => frame,
            Some(common::Next::Closed(close)) => {
                panic!("{}: the connection ended ({close:?}) while waiting for {missing:?}", peer.label)
            }
            None => panic!("{}: no {missing:?} within the wait; got only {skipped:?}", peer.label),
        };
        match wanted.iter().zip(found.iter_mut()).position(|((_, test), slot)| slot.is_none() && test(&frame)) {
            Some(i) => found[i] = Some(frame),
            None => skipped.push(frame),
        }
    }
    found.into_iter().map(|f| f.expect("found")).collect()
}

/// Asserts that `seqs` is exactly `1..=last`, in order, each once.
fn assert_gapless(seqs: &[u64], last: u64, rule: &str) {
    let expected: Vec<u64> = (1..=last).collect();
    if seqs != expected.as_slice() {
        let got: BTreeSet<u64> = seqs.iter().copied().collect();
        let missing: Vec<u64> = expected.iter().copied().filter(|s| !got.contains(s)).collect();
        let mut seen = BTreeSet::new();
        let repeated: Vec<u64> = seqs.iter().copied().filter(|s| !seen.insert(*s)).collect();
        let out_of_order = seqs.windows(2).find(|w| w[0] >= w[1]);
        panic!(
            "{rule}: expected seq 1..={last} in order, each once; missing {missing:?}, repeated {repeated:?}, \
             first out of order {out_of_order:?}, got {} seqs",
            seqs.len()
        );
    }
}

/// The harness itself, on what any build has: nodes without `--redis-url`
/// on one PostgreSQL database start and answer `/readyz`; what n1 stored,
/// n2 reads; a SIGKILLed node ends its sockets without a close frame and
/// starts again on its port; nginx in front reaches the nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_harness_runs_nodes_on_one_database_kills_and_restarts_them_behind_nginx() {
    use petchat_protocol::Role;

    let mut cluster = common::cluster::Cluster::of(2).without_redis().behind_nginx().start().await;
    for n in 1..=2 {
        cluster.wait_readyz(n, 200, "a node on a reachable PostgreSQL is ready").await;
    }
    let common::cluster::Pair { mut customer, agent: _agent, conversation } =
        cluster.pair(1, "cust-1", 1, "agent-1").await;
    let ack = say(&mut customer, &conversation, "stored by n1").await;
    let mut reader = cluster.node(2).connect("cust-1", Role::Customer).await;
    let stored = reader.replay(&conversation, 0).await;
    assert_eq!(stored.len(), 1, "n2 reads the shared database");
    assert_eq!(stored[0]["messageId"], ack["messageId"]);

    cluster.kill(1).await;
    assert_eq!(customer.expect_end().await, None, "a SIGKILLed node's sockets end without a close frame");
    let through = cluster.balancer().connect("cust-2", Role::Customer).await;
    drop(through);
    cluster.start_node(1).await;
    cluster.wait_readyz(1, 200, "a restarted node is ready again on its port").await;
    let (mut again, ready) = cluster.node(1).connect_ready("cust-1", Role::Customer).await;
    assert_eq!(ready["data"]["conversations"][0]["lastSeq"], 1, "the restarted node has what was acked");
    again.join(&conversation, 0).await;
    assert_eq!(message(&mut again).await["messageId"], ack["messageId"]);
    let (status, _) = cluster.balancer().get("/healthz").await;
    assert_eq!(status, 200, "nginx reaches the nodes");
}

/// `--node-id` names the node (SPEC §10, operations.md): the `node` label of
/// its metrics, and the `node` span field of what its hub logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_names_itself_in_its_metrics_and_log_lines() {
    let mut cluster = common::cluster::Cluster::of(2).start().await;
    let _pair = cluster.pair(2, "cust-1", 2, "agent-1").await;
    assert_eq!(cluster.connections(2).await, 2, "n2's petchat_connections carries node=\"n2\"");
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        let logs = cluster.logs(2).await;
        let opened = logs.iter().find(|line| line.contains("conversation opened"));
        if let Some(line) = opened {
            assert!(line.contains(r#""node":"n2""#), "the pool's log line names its node: {line}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "n2 never logged the opening; its log: {logs:#?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
