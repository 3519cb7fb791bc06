//! The conversation lifecycle over real sockets and a real store (SQLite, or
//! PostgreSQL with `PETCHAT_TEST_STORE=postgres`), with the periods shortened
//! by the flags' settings: the server's own closes, what a closed conversation
//! still allows, and transcripts that survive a reconnect and a restart.

mod common;

use std::time::Duration;

use common::{TestServer, WAIT, chat, uuid};
use petchat_protocol::Role;
use serde_json::json;

#[tokio::test]
async fn an_idle_conversation_is_closed_by_the_system() {
    let server = TestServer::start_with(|c| c.limits.conversation_idle_ms = 1_500).await;
    let (mut customer, mut agent, id) = server.pair("cust-1", "agent-1").await;
    customer.send(chat(&id, "hello?")).await;
    customer.recv_until("chat.ack").await;
    let closed = agent.recv_until("conversation.closed").await;
    assert_eq!(closed["data"], json!({"conversationId": id, "by": "system", "reason": "idle"}));
    assert_eq!(customer.recv_until("conversation.closed").await["data"]["reason"], "idle");
}

#[tokio::test]
async fn a_customer_who_leaves_is_closed_and_its_transcript_is_read_but_not_written_after_a_reconnect() {
    let server = TestServer::start_with(|c| c.limits.customer_away_ms = 1_000).await;
    let (mut customer, mut agent, id) = server.pair("cust-1", "agent-1").await;
    customer.send(chat(&id, "my dog ate a sock")).await;
    customer.recv_until("chat.ack").await;
    customer.close().await;
    let closed = agent.recv_until("conversation.closed").await;
    assert_eq!(closed["data"], json!({"conversationId": id, "by": "system", "reason": "customer_away"}));
    agent.send(json!({"type": "agent.status", "data": {"available": true}})).await;
    assert_eq!(agent.recv_until("agent.status").await["data"]["activeConversations"], 0, "the slot is free");

    let (mut back, ready) = server.connect_ready("cust-1", Role::Customer).await;
    assert_eq!(ready["data"]["conversations"], json!([]));
    let past = &ready["data"]["pastConversations"][0];
    assert_eq!(past["conversation"]["id"], id.as_str());
    assert_eq!(past["conversation"]["closed"]["reason"], "customer_away");
    assert_eq!(past["lastMessage"]["text"], "my dog ate a sock");
    back.send(json!({"type": "conversation.join", "data": {"conversationId": id}})).await;
    assert_eq!(back.recv_type("conversation.joined").await["data"]["conversation"]["status"], "closed");
    assert_eq!(back.recv_type("chat.message").await["data"]["text"], "my dog ate a sock");
    for (n, refused) in [
        json!({"type": "chat.send", "id": "w-1", "data": {"conversationId": id, "clientMessageId": uuid(), "text": "hi"}}),
        json!({"type": "typing.start", "id": "w-2", "data": {"conversationId": id}}),
        json!({"type": "conversation.close", "id": "w-3", "data": {"conversationId": id}}),
    ]
    .into_iter()
    .enumerate()
    {
        back.send(refused).await;
        let error = back.recv_until("error").await;
        assert_eq!(error["data"]["code"], "conversation_closed", "{error}");
        assert_eq!(error["data"]["refId"], format!("w-{}", n + 1));
    }
    back.send(json!({"type": "conversation.open", "data": {}})).await;
    let opened = back.recv_until("conversation.opened").await;
    assert_ne!(opened["data"]["conversation"]["id"], id.as_str(), "a new conversation, at once");
}

#[tokio::test]
async fn a_customer_absent_across_a_restart_is_closed_and_never_assigned() {
    let first = TestServer::start_with(|c| c.limits.customer_away_ms = 60_000).await;
    let url = first.database_url.clone();
    let mut customer = first.connect("cust-1", Role::Customer).await;
    customer.send(json!({"type": "conversation.open", "data": {"topic": "lost parcel"}})).await;
    let id = customer.recv_until("conversation.opened").await["data"]["conversation"]["id"].clone();
    customer.recv_until("conversation.queued").await;
    let database = first.stop().await;
    // The customer never comes back: after the restart it counts as away from the start.
    let server = TestServer::start_on(&url, |c| c.limits.customer_away_ms = 1_500).await;
    let mut agent = server.connect("agent-1", Role::Agent).await;
    agent.send(json!({"type": "agent.status", "data": {"available": true}})).await;
    assert_eq!(agent.recv_until("agent.status").await["data"]["activeConversations"], 0, "not assigned");
    // Watched in the store: a connection of the customer would bring it back.
    let store = petchat_server::store::open(&url).await.expect("the server's store");
    let id = petchat_protocol::ConversationId::new(id.as_str().expect("an id")).expect("valid");
    let deadline = tokio::time::Instant::now() + WAIT;
    let closed = loop {
        let rec = store.conversation(&id).await.expect("read").expect("stored");
        if let Some(closed) = rec.closed {
            break closed;
        }
        assert!(tokio::time::Instant::now() < deadline, "the absent customer's conversation was never closed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((closed.by.as_str(), closed.reason), ("system", petchat_protocol::CloseReason::CustomerAway));
    agent.expect_silence(Duration::from_millis(300)).await;
    drop(database);
}

#[tokio::test]
async fn a_token_for_the_reserved_system_user_is_refused_with_4500() {
    let server = TestServer::start().await;
    let url = format!("{}?token={}", server.url(), server.token("system", Role::Agent));
    let mut client = server.connect_raw(&url, &["petchat.v1"], None).await;
    assert_eq!(client.expect_close().await, (4500, "the user id system is reserved".to_owned()));
}
