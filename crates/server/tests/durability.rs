//! SPEC §5: nothing acknowledged is lost, across a restart, a SIGKILL and a
//! graceful shutdown; tokens never reach the logs.

mod common;

use common::process::ServerProcess;
use common::{SECRET, TestDatabase, TestServer, chat};
use petchat_protocol::Role;
use serde_json::json;

#[tokio::test]
async fn acked_messages_survive_a_restart_on_the_same_database() {
    let server = TestServer::start().await;
    let url = server.database_url.clone();
    let (mut customer, _agent, id) = server.pair("cust-1", "agent-1").await;
    for n in 1..=3 {
        customer.send(chat(&id, &format!("m{n}"))).await;
        customer.recv_until("chat.ack").await;
    }
    let database = server.stop().await;
    let again = TestServer::start_on(&url, |_| {}).await;
    let (mut customer, ready) = again.connect_ready("cust-1", Role::Customer).await;
    assert_eq!(ready["data"]["conversations"], json!([{"id": id, "status": "active", "lastSeq": 3}]));
    customer.send(json!({"type": "conversation.join", "data": {"conversationId": id}})).await;
    customer.recv_type("conversation.joined").await;
    for n in 1..=3 {
        assert_eq!(customer.recv_type("chat.message").await["data"]["text"], format!("m{n}"));
    }
    drop(again);
    drop(database);
}

#[tokio::test]
async fn graceful_shutdown_closes_every_connection_with_1001() {
    let server = TestServer::start().await;
    let mut a = server.connect("cust-1", Role::Customer).await;
    let mut b = server.connect("agent-1", Role::Agent).await;
    let stopping = tokio::spawn(server.stop());
    assert_eq!(a.expect_close().await.0, 1001);
    assert_eq!(b.expect_close().await.0, 1001);
    stopping.await.expect("stopped");
}

/// The real binary, killed with SIGKILL mid-conversation: every acked
/// message is there after a restart on the same database.
#[tokio::test]
async fn every_acked_message_survives_sigkill() {
    let database = TestDatabase::new().await;
    let url = database.url.clone();
    let mut process =
        ServerProcess::start(&url, SECRET, &["--messages-per-second", "10000"], "warn,petchat_server=info").await;
    let server = TestServer::at(process.addr);
    let (mut customer, _agent, id) = server.pair("cust-1", "agent-1").await;
    let mut acked = Vec::new();
    for n in 0..200 {
        customer.send(chat(&id, &format!("m{n}"))).await;
    }
    for _ in 0..150 {
        let ack = customer.recv_until("chat.ack").await;
        acked.push(ack["data"]["seq"].as_u64().expect("seq"));
    }
    // Kill while the last 50 may still be in flight.
    process.signal("KILL").await;

    let restarted = ServerProcess::start(&url, SECRET, &[], "warn,petchat_server=info").await;
    let server = TestServer::at(restarted.addr);
    let mut customer = server.connect("cust-1", Role::Customer).await;
    // Rejoin from where a client that had read 100 messages would: afterSeq 100.
    customer.send(json!({"type": "conversation.join", "data": {"conversationId": id, "afterSeq": 100}})).await;
    let joined = customer.recv_type("conversation.joined").await;
    let last = joined["data"]["conversation"]["lastSeq"].as_u64().expect("lastSeq");
    assert!(last >= 150, "only {last} of 150 acked messages survived");
    let mut stored = Vec::new();
    for _ in 100..last {
        let message = customer.recv_type("chat.message").await;
        let seq = message["data"]["seq"].as_u64().expect("seq");
        assert_eq!(message["data"]["text"], format!("m{}", seq - 1), "message {seq} is the one sent");
        stored.push(seq);
    }
    assert_eq!(stored, (101..=last).collect::<Vec<_>>(), "every message once, in order, without gaps");
    assert!(acked.iter().filter(|seq| **seq > 100).all(|seq| stored.contains(seq)));
}

/// SIGTERM: connections close with 1001 and the process exits cleanly.
#[tokio::test]
async fn sigterm_closes_connections_with_1001_and_exits_zero() {
    let database = TestDatabase::new().await;
    let url = database.url.clone();
    let mut process = ServerProcess::start(&url, SECRET, &[], "warn,petchat_server=info").await;
    let server = TestServer::at(process.addr);
    let mut client = server.connect("cust-1", Role::Customer).await;
    let pid = process.child.id().expect("running").to_string();
    tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.expect("kill");
    assert_eq!(client.expect_close().await.0, 1001);
    let status = tokio::time::timeout(common::WAIT, process.child.wait()).await.expect("exits in time").expect("wait");
    assert!(status.success(), "{status}");
}

/// A token in the URL or the subprotocol never appears in a log line, even at trace level.
#[tokio::test]
async fn tokens_never_reach_the_logs() {
    let database = TestDatabase::new().await;
    let url = database.url.clone();
    let mut process = ServerProcess::start(&url, SECRET, &[], "trace").await;
    let server = TestServer::at(process.addr);
    let query_token = server.token("cust-1", Role::Customer);
    let mut a = server.connect_raw(&format!("{}?token={query_token}", server.url()), &["petchat.v1"], None).await;
    a.recv_type("session.ready").await;
    let bearer_token = server.token("agent-1", Role::Agent);
    let mut b = server.connect_raw(&server.url(), &["petchat.v1", &format!("bearer.{bearer_token}")], None).await;
    b.recv_type("session.ready").await;
    let bad = format!("{query_token}x");
    let mut c = server.connect_raw(&format!("{}?token={bad}", server.url()), &["petchat.v1"], None).await;
    assert_eq!(c.expect_close().await.0, 4500);
    let logs = process.drain_logs().await.to_vec();
    assert!(logs.len() > 5, "trace logging produced lines: {}", logs.len());
    for token in [&query_token, &bearer_token, &bad] {
        // The signature part is what must never leak.
        let signature = token.rsplit('.').next().expect("a JWT has three parts");
        assert!(logs.iter().all(|line| !line.contains(signature)), "a token leaked into the logs");
    }
}

/// Message text never appears in a log line, even at trace level (SPEC §5):
/// tungstenite's trace lines print whole frames.
#[tokio::test]
async fn message_text_never_reaches_the_logs() {
    let database = TestDatabase::new().await;
    let url = database.url.clone();
    let mut process = ServerProcess::start(&url, SECRET, &[], "trace").await;
    let server = TestServer::at(process.addr);
    let (mut customer, mut agent, id) = server.pair("cust-1", "agent-1").await;
    let secret_text = "my parrot's vet record is confidential 7f3a";
    customer.send(common::chat(&id, secret_text)).await;
    customer.recv_until("chat.ack").await;
    assert_eq!(agent.recv_until("chat.message").await["data"]["text"], secret_text);
    let logs = process.drain_logs().await.to_vec();
    assert!(logs.len() > 5, "trace logging produced lines: {}", logs.len());
    let leaked: Vec<&String> = logs.iter().filter(|line| line.contains("7f3a")).collect();
    assert!(leaked.is_empty(), "message text leaked into the logs: {leaked:?}");
}
