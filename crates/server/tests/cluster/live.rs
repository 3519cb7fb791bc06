//! SPEC §11–§13 across nodes (§10): a topic's events reach its subscribers on
//! every node in seq order whichever nodes publish them, a notification and
//! its read mark reach every connection of the user on every node, and
//! presence counts the user's connections on every node.

use petchat_protocol::Role;
use serde_json::{Value, json};

use crate::common::cluster::{Cluster, Endpoint};
use crate::common::{TestServer, http, http_post};

const KEY: &str = "cluster-key";

async fn cluster(nodes: usize) -> Cluster {
    Cluster::of(nodes).flag("--api-keys", KEY).flag("--public-topics", "pets:*").start().await
}

async fn post(node: &Endpoint, path: &str, body: Value) -> Value {
    let (status, answer) = http_post(&TestServer::at(node.addr), path, Some(KEY), &body.to_string()).await;
    assert_eq!(status, 200, "SPEC §13: {path} on {} answers 200: {answer}", node.name);
    answer
}

fn subscribe(topic: &str) -> Value {
    json!({"type": "topic.subscribe", "data": {"topic": topic}})
}

/// Subscribers on three nodes; thirty events published at once through all
/// three: every subscriber gets seq 1..=30, each once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_on_every_node_reach_subscribers_on_every_node_in_seq_order() {
    let cluster = cluster(3).await;
    let mut subscribers = Vec::new();
    for n in 1..=3 {
        let mut peer = cluster.node(n).connect(&format!("cust-{n}"), Role::Customer).await;
        peer.send(subscribe("pets:42"));
        assert_eq!(peer.recv_type("topic.subscribed").await["data"]["lastSeq"], 0);
        subscribers.push(peer);
    }
    let publishes = (0..30).map(|i| {
        let node = cluster.node(1 + i % 3);
        async move {
            let body = json!({"topic": "pets:42", "event": "pet.viewed", "data": {"i": i}});
            post(&node, "/v1/api/publish", body).await["seq"].as_u64().expect("a seq")
        }
    });
    let mut seqs = futures_util::future::join_all(publishes).await;
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=30).collect::<Vec<u64>>(), "SPEC §11: seq per topic from 1 without gaps, across nodes");
    for peer in &mut subscribers {
        for expected in 1..=30 {
            let event = peer.recv_type("topic.event").await;
            assert_eq!(event["data"]["seq"], expected, "SPEC §11/§10: {} gets the events in seq order", peer.label);
        }
    }
    // A late subscriber on another node replays them from the store.
    let mut late = cluster.node(2).connect("cust-late", Role::Customer).await;
    late.send(json!({"type": "topic.subscribe", "data": {"topic": "pets:42", "afterSeq": 27}}));
    let subscribed = late.recv_type("topic.subscribed").await;
    assert_eq!(subscribed["data"], json!({"topic": "pets:42", "lastSeq": 30, "recovered": true}));
    for expected in 28..=30 {
        assert_eq!(late.recv().await["data"]["seq"], expected);
    }
}

/// The user on n1 and n3; the backend notifies through n2: both devices get
/// it, a read on n3 reaches n1, and presence through n2 counts both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_and_its_read_mark_reach_the_users_connections_on_every_node() {
    let cluster = cluster(3).await;
    let mut laptop = cluster.node(1).connect("cust-1", Role::Customer).await;
    let mut phone = cluster.node(3).connect("cust-1", Role::Customer).await;
    let answer = post(
        &cluster.node(2),
        "/v1/api/notify",
        json!({"userId": "cust-1", "kind": "order.shipped", "title": "Shipped", "body": "On its way"}),
    )
    .await;
    for peer in [&mut laptop, &mut phone] {
        let notification = peer.recv_type("notification").await;
        assert_eq!(notification["data"]["id"], answer["id"], "SPEC §12: {} gets the notification", peer.label);
    }
    phone.send(json!({"type": "notification.read", "data": {"upToSeq": 1}}));
    assert_eq!(phone.recv_type("notification.read").await["data"]["upToSeq"], 1);
    assert_eq!(laptop.recv_type("notification.read").await["data"]["upToSeq"], 1, "SPEC §12: read on every connection");

    let (status, body) = http(&TestServer::at(cluster.node(2).addr), "/v1/api/presence/cust-1", Some(KEY)).await;
    assert_eq!(status, 200);
    let presence: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(presence, json!({"userId": "cust-1", "online": true, "connections": 2}), "SPEC §13: across nodes");
}

/// An agent on n1 at its cap of one, its customer on n2, a second customer
/// queued on n3: every node's `/v1/api/stats` counts all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_the_whole_cluster_on_every_node() {
    let cluster = Cluster::of(3).flag("--api-keys", KEY).flag("--max-conversations-per-agent", 1).start().await;
    let _pair = cluster.pair(2, "cust-1", 1, "agent-1").await;
    let mut waiting = cluster.node(3).connect("cust-2", Role::Customer).await;
    waiting.send(json!({"type": "conversation.open", "data": {}}));
    waiting.recv_until("conversation.queued").await;
    for n in 1..=3 {
        let (status, body) = http(&TestServer::at(cluster.node(n).addr), "/v1/api/stats", Some(KEY)).await;
        assert_eq!(status, 200, "{body}");
        let stats: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(stats["connections"], 3, "SPEC §13: n{n} counts the connections of every node: {stats}");
        assert_eq!(stats["queue"]["length"], 1, "n{n}: {stats}");
        assert_eq!(stats["agents"], json!({"available": 0, "busy": 1}), "n{n}: {stats}");
        assert_eq!(stats["conversations"], json!({"open": 2}), "n{n}: {stats}");
    }
}
