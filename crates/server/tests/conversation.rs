//! A customer and an agent hold a conversation: every message type of SPEC §3,
//! over real sockets, each server frame checked against the JSON Schema.

mod common;

use common::{TestServer, chat, uuid};
use petchat_protocol::Role;
use serde_json::json;

#[tokio::test]
async fn session_ready_comes_first_and_describes_the_user() {
    let server = TestServer::start().await;
    let (_client, ready) = server.connect_ready("cust-1", Role::Customer).await;
    assert_eq!(ready["data"]["user"], json!({"id": "cust-1", "role": "customer", "name": "cust-1 name"}));
    assert_eq!(ready["data"]["heartbeatIntervalMs"], 25_000);
    assert_eq!(
        ready["data"]["limits"],
        json!({"maxMessageBytes": 65536, "maxTextChars": 4000, "messagesPerSecond": 10})
    );
    assert_eq!(ready["data"]["conversations"], json!([]));
}

#[tokio::test]
async fn a_customer_and_an_agent_chat_with_acks_receipts_typing_and_close() {
    let server = TestServer::start().await;
    let (mut customer, mut agent, id) = server.pair("cust-1", "agent-1").await;

    // Both see each other online.
    let presence = agent.recv_type("presence").await;
    assert_eq!(
        (presence["data"]["userId"].as_str(), presence["data"]["status"].as_str()),
        (Some("cust-1"), Some("online"))
    );
    let presence = customer.recv_type("presence").await;
    assert_eq!(
        (presence["data"]["userId"].as_str(), presence["data"]["status"].as_str()),
        (Some("agent-1"), Some("online"))
    );

    // Typing goes to the other member only.
    customer.send(json!({"type": "typing.start", "data": {"conversationId": id}})).await;
    let typing = agent.recv_type("typing.start").await;
    assert_eq!(typing["data"], json!({"conversationId": id, "userId": "cust-1"}));

    // chat.send: the sender gets chat.ack, the other member chat.message, with the trimmed text.
    let send = json!({"type": "chat.send", "id": "r-1", "data": {"conversationId": id, "clientMessageId": uuid(), "text": "  my cat won't eat  "}});
    customer.send(send.clone()).await;
    let ack = customer.recv_type("chat.ack").await;
    assert_eq!(ack["id"], "r-1");
    assert_eq!(ack["data"]["seq"], 1);
    assert_eq!(ack["data"]["clientMessageId"], send["data"]["clientMessageId"]);
    // Sending stops the typing indicator.
    agent.recv_type("typing.stop").await;
    let message = agent.recv_type("chat.message").await;
    assert_eq!(message["data"]["text"], "my cat won't eat");
    assert_eq!(message["data"]["seq"], 1);
    assert_eq!(message["data"]["from"], json!({"id": "cust-1", "role": "customer", "name": "cust-1 name"}));
    assert_eq!(message["data"]["messageId"], ack["data"]["messageId"]);

    // Receipts are stored and relayed to the author.
    agent.send(json!({"type": "message.delivered", "data": {"conversationId": id, "upToSeq": 1}})).await;
    let delivered = customer.recv_type("message.delivered").await;
    assert_eq!((delivered["data"]["upToSeq"].as_u64(), delivered["data"]["by"].as_str()), (Some(1), Some("agent-1")));
    agent.send(json!({"type": "message.read", "data": {"conversationId": id, "upToSeq": 1}})).await;
    let read = customer.recv_type("message.read").await;
    assert_eq!((read["data"]["upToSeq"].as_u64(), read["data"]["by"].as_str()), (Some(1), Some("agent-1")));

    // The agent answers; seq continues without a gap.
    agent.send(chat(&id, "Let me check.")).await;
    assert_eq!(agent.recv_type("chat.ack").await["data"]["seq"], 2);
    assert_eq!(customer.recv_type("chat.message").await["data"]["seq"], 2);

    // ping → pong, with the id.
    customer.send(json!({"type": "ping", "id": "hb", "data": {}})).await;
    assert_eq!(customer.recv_type("pong").await["id"], "hb");

    // Close: both members hear it; then sending is refused.
    customer.send(json!({"type": "conversation.close", "id": "r-2", "data": {"conversationId": id}})).await;
    let closed = customer.recv_type("conversation.closed").await;
    assert_eq!((closed["id"].as_str(), closed["data"]["by"].as_str()), (Some("r-2"), Some("cust-1")));
    assert_eq!(agent.recv_type("conversation.closed").await["data"]["conversationId"], id.as_str());
    agent.send(json!({"type": "chat.send", "id": "r-3", "data": {"conversationId": id, "clientMessageId": uuid(), "text": "hi"}})).await;
    let error = agent.recv_type("error").await;
    assert_eq!(
        (error["data"]["code"].as_str(), error["data"]["refId"].as_str()),
        (Some("conversation_closed"), Some("r-3"))
    );
}

#[tokio::test]
async fn a_resent_client_message_id_gets_the_original_ack_and_no_second_message() {
    let server = TestServer::start().await;
    let (mut customer, mut agent, id) = server.pair("cust-1", "agent-1").await;
    agent.recv_type("presence").await;
    let send = chat(&id, "once");
    customer.send(send.clone()).await;
    let first = customer.recv_until("chat.ack").await;
    customer.send(send).await;
    let second = customer.recv_type("chat.ack").await;
    assert_eq!(first["data"], second["data"]);
    assert_eq!(agent.recv_type("chat.message").await["data"]["text"], "once");
    agent.expect_silence(std::time::Duration::from_millis(300)).await;
}

#[tokio::test]
async fn join_replays_what_was_missed_in_order_then_live_traffic() {
    let server = TestServer::start_with(|c| c.limits.max_replay = 3).await;
    let (mut customer, _agent, id) = server.pair("cust-1", "agent-1").await;
    for n in 1..=5 {
        customer.send(chat(&id, &format!("m{n}"))).await;
        customer.recv_until("chat.ack").await;
    }
    // A second device of the customer joins from seq 1: 3 messages and hasMore.
    let mut phone = server.connect("cust-1", Role::Customer).await;
    phone.send(json!({"type": "conversation.join", "id": "j", "data": {"conversationId": id, "afterSeq": 1}})).await;
    let joined = phone.recv_type("conversation.joined").await;
    assert_eq!((joined["id"].as_str(), joined["data"]["hasMore"].as_bool()), (Some("j"), Some(true)));
    assert_eq!(joined["data"]["conversation"]["lastSeq"], 5);
    for seq in 2..=4 {
        assert_eq!(phone.recv_type("chat.message").await["data"]["seq"], seq);
    }
    // After the replay: whether the other member is online.
    assert_eq!(phone.recv_type("presence").await["data"]["userId"], "agent-1");
    phone.send(json!({"type": "conversation.join", "data": {"conversationId": id, "afterSeq": 4}})).await;
    assert_eq!(phone.recv_type("conversation.joined").await["data"]["hasMore"], false);
    assert_eq!(phone.recv_type("chat.message").await["data"]["seq"], 5);
    phone.recv_type("presence").await;
    // Live traffic follows: the customer's own message reaches its other device.
    customer.send(chat(&id, "live")).await;
    let live = phone.recv_until("chat.message").await;
    assert_eq!((live["data"]["seq"].as_u64(), live["data"]["text"].as_str()), (Some(6), Some("live")));
}

#[tokio::test]
async fn without_agents_customers_queue_in_order_and_are_served_first_come() {
    let server = TestServer::start().await;
    let mut first = server.connect("cust-1", Role::Customer).await;
    first.send(json!({"type": "conversation.open", "data": {}})).await;
    assert_eq!(first.recv_type("conversation.opened").await["data"]["conversation"]["status"], "queued");
    assert_eq!(first.recv_type("conversation.queued").await["data"]["position"], 1);
    let mut second = server.connect("cust-2", Role::Customer).await;
    second.send(json!({"type": "conversation.open", "data": {}})).await;
    second.recv_type("conversation.opened").await;
    assert_eq!(second.recv_type("conversation.queued").await["data"]["position"], 2);

    // Opening again returns the same conversation.
    first.send(json!({"type": "conversation.open", "data": {}})).await;
    let again = first.recv_type("conversation.opened").await;
    assert_eq!(again["data"]["conversation"]["status"], "queued");

    let mut agent = server.connect("agent-1", Role::Agent).await;
    agent.send(json!({"type": "agent.status", "id": "s", "data": {"available": true}})).await;
    let assigned = agent.recv_until("agent.assigned").await;
    let first_conv = assigned["data"]["conversationId"].as_str().expect("id").to_owned();
    assert_eq!(first.recv_until("agent.assigned").await["data"]["conversationId"], first_conv.as_str());
    // The second customer moves up to position 1 and is assigned too (capacity 5).
    let next = second.recv_until("agent.assigned").await;
    assert_eq!(next["data"]["agent"]["id"], "agent-1");
    let status = agent.recv_until("agent.status").await;
    assert_eq!((status["id"].as_str(), status["data"]["activeConversations"].as_u64()), (Some("s"), Some(2)));
}

#[tokio::test]
async fn least_loaded_agent_gets_the_next_conversation() {
    let server = TestServer::start().await;
    let (_c1, mut a1, _) = server.pair("cust-1", "agent-1").await;
    let mut a2 = server.connect("agent-2", Role::Agent).await;
    a2.send(json!({"type": "agent.status", "data": {"available": true}})).await;
    a2.recv_type("agent.status").await;
    let mut c2 = server.connect("cust-2", Role::Customer).await;
    c2.send(json!({"type": "conversation.open", "data": {}})).await;
    c2.recv_type("conversation.opened").await;
    assert_eq!(c2.recv_type("agent.assigned").await["data"]["agent"]["id"], "agent-2");
    a2.recv_type("agent.assigned").await;
    a1.recv_type("presence").await;
    a1.expect_silence(std::time::Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_disconnected_agent_keeps_conversations_for_the_grace_period_then_they_are_requeued() {
    let server = TestServer::start_with(|c| c.limits.agent_grace_ms = 300).await;
    let (mut customer, agent, id) = server.pair("cust-1", "agent-1").await;
    customer.recv_type("presence").await;
    agent.close().await;
    let offline = customer.recv_type("presence").await;
    assert_eq!(offline["data"]["status"], "offline");
    // The conversation is first in the queue, and a notification (stored
    // first, so it may come after the position) says why.
    let mut next_two = [customer.recv().await, customer.recv().await];
    next_two.sort_by_key(|frame| frame["type"].as_str().map(str::to_owned));
    let [queued, note] = next_two;
    assert_eq!(note["data"]["kind"], "conversation.requeued", "{note}");
    assert_eq!(
        (queued["data"]["conversationId"].as_str(), queued["data"]["position"].as_u64()),
        (Some(id.as_str()), Some(1)),
        "{queued}"
    );
    // Another agent takes it over.
    let mut other = server.connect("agent-2", Role::Agent).await;
    other.send(json!({"type": "agent.status", "data": {"available": true}})).await;
    assert_eq!(other.recv_until("agent.assigned").await["data"]["conversationId"], id.as_str());
    assert_eq!(customer.recv_until("agent.assigned").await["data"]["agent"]["id"], "agent-2");
}

#[tokio::test]
async fn an_agent_that_reconnects_within_grace_keeps_its_conversations() {
    let server = TestServer::start_with(|c| c.limits.agent_grace_ms = 1_000).await;
    let (mut customer, agent, id) = server.pair("cust-1", "agent-1").await;
    customer.recv_type("presence").await;
    agent.close().await;
    customer.recv_type("presence").await;
    let (_agent, ready) = server.connect_ready("agent-1", Role::Agent).await;
    assert_eq!(ready["data"]["conversations"][0]["id"], id.as_str());
    assert_eq!(customer.recv_type("presence").await["data"]["status"], "online");
    customer.expect_silence(std::time::Duration::from_millis(1_500)).await;
}

#[tokio::test]
async fn typing_stops_on_request_or_expires_by_itself() {
    let server = TestServer::start_with(|c| c.limits.typing_expiry_ms = 200).await;
    let (mut customer, mut agent, id) = server.pair("cust-1", "agent-1").await;
    customer.recv_type("presence").await;
    agent.recv_type("presence").await;
    agent.send(json!({"type": "typing.start", "data": {"conversationId": id}})).await;
    assert_eq!(customer.recv_type("typing.start").await["data"]["userId"], "agent-1");
    agent.send(json!({"type": "typing.stop", "data": {"conversationId": id}})).await;
    assert_eq!(customer.recv_type("typing.stop").await["data"]["userId"], "agent-1");
    // A start without a stop expires after the configured time.
    agent.send(json!({"type": "typing.start", "data": {"conversationId": id}})).await;
    customer.recv_type("typing.start").await;
    let started = std::time::Instant::now();
    customer.recv_type("typing.stop").await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(150));
    // The typist never hears its own typing.
    agent.expect_silence(std::time::Duration::from_millis(100)).await;
}

#[tokio::test]
async fn a_connection_that_leaves_stops_hearing_the_conversation() {
    let server = TestServer::start().await;
    let (mut customer, mut agent, id) = server.pair("cust-1", "agent-1").await;
    agent.recv_type("presence").await;
    agent.send(json!({"type": "conversation.leave", "data": {"conversationId": id}})).await;
    agent.send(json!({"type": "ping", "id": "sync", "data": {}})).await;
    agent.recv_type("pong").await;
    customer.send(chat(&id, "unheard")).await;
    customer.recv_until("chat.ack").await;
    agent.expect_silence(std::time::Duration::from_millis(300)).await;
    // Joining again replays what it missed.
    agent.send(json!({"type": "conversation.join", "data": {"conversationId": id, "afterSeq": 0}})).await;
    agent.recv_type("conversation.joined").await;
    assert_eq!(agent.recv_type("chat.message").await["data"]["text"], "unheard");
}

#[tokio::test]
async fn a_closed_conversation_can_still_be_read_and_a_new_one_opened() {
    let server = TestServer::start().await;
    let (mut customer, _agent, id) = server.pair("cust-1", "agent-1").await;
    customer.send(chat(&id, "bye")).await;
    customer.recv_until("chat.ack").await;
    customer.send(json!({"type": "conversation.close", "data": {"conversationId": id}})).await;
    customer.recv_until("conversation.closed").await;
    customer.send(json!({"type": "conversation.join", "data": {"conversationId": id}})).await;
    let joined = customer.recv_type("conversation.joined").await;
    assert_eq!(joined["data"]["conversation"]["status"], "closed");
    assert_eq!(customer.recv_type("chat.message").await["data"]["text"], "bye");
    customer.send(json!({"type": "conversation.open", "data": {}})).await;
    let opened = customer.recv_type("conversation.opened").await;
    assert_ne!(opened["data"]["conversation"]["id"], id.as_str());
}

#[tokio::test]
async fn several_connections_of_a_user_count_as_one_for_presence() {
    let server = TestServer::start().await;
    let (customer, mut agent, _id) = server.pair("cust-1", "agent-1").await;
    agent.recv_type("presence").await;
    let second = server.connect("cust-1", Role::Customer).await;
    customer.close().await;
    agent.expect_silence(std::time::Duration::from_millis(300)).await;
    second.close().await;
    let offline = agent.recv_type("presence").await;
    assert_eq!(
        (offline["data"]["userId"].as_str(), offline["data"]["status"].as_str()),
        (Some("cust-1"), Some("offline"))
    );
}

#[tokio::test]
async fn a_chat_send_resent_after_a_reconnect_is_stored_once_with_the_same_ack() {
    let server = TestServer::start().await;
    let (mut customer, mut agent, id) = server.pair("cust-1", "agent-1").await;
    agent.recv_type("presence").await;
    let send = chat(&id, "are you there?");
    customer.send(send.clone()).await;
    let ack = customer.recv_until("chat.ack").await;
    customer.close().await;
    // The client did not see the ack (as far as it knows) and resends after reconnecting.
    let mut customer = server.connect("cust-1", Role::Customer).await;
    customer.send(send).await;
    assert_eq!(customer.recv_type("chat.ack").await["data"], ack["data"]);
    assert_eq!(agent.recv_type("chat.message").await["data"]["seq"], 1);
    agent.recv_type("presence").await; // offline
    agent.recv_type("presence").await; // online again
    agent.expect_silence(std::time::Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_message_resent_after_its_conversation_closed_gets_its_original_ack() {
    let server = TestServer::start().await;
    let (mut customer, mut agent, id) = server.pair("cust-1", "agent-1").await;
    let send = chat(&id, "did this arrive?");
    customer.send(send.clone()).await;
    let ack = customer.recv_until("chat.ack").await;
    agent.send(json!({"type": "conversation.close", "data": {"conversationId": id}})).await;
    customer.recv_until("conversation.closed").await;
    // The customer never saw the ack (as far as it knows) and replays its outbox.
    customer.send(send).await;
    assert_eq!(customer.recv_type("chat.ack").await["data"], ack["data"]);
    // A message the server never stored is refused.
    let mut late = chat(&id, "one more thing");
    late["id"] = json!("r-late");
    customer.send(late).await;
    let error = customer.recv_type("error").await;
    assert_eq!(
        (error["data"]["code"].as_str(), error["data"]["refId"].as_str()),
        (Some("conversation_closed"), Some("r-late"))
    );
}

/// Two agents with room for one conversation each, three customers: the
/// third queues; when an agent stays away past the grace period its
/// conversation goes back to the front of the queue, ahead of the third.
#[tokio::test]
async fn two_agents_several_customers_queue_and_reassignment() {
    let server = TestServer::start_with(|c| {
        c.limits.max_conversations_per_agent = 1;
        c.limits.agent_grace_ms = 300;
    })
    .await;
    let mut agents = Vec::new();
    for name in ["agent-a", "agent-b"] {
        let mut agent = server.connect(name, Role::Agent).await;
        agent.send(json!({"type": "agent.status", "data": {"available": true}})).await;
        agent.recv_type("agent.status").await;
        agents.push(agent);
    }
    let mut customers = Vec::new();
    let mut conversations = Vec::new();
    let mut assigned_to = Vec::new();
    for name in ["cust-1", "cust-2", "cust-3"] {
        let mut customer = server.connect(name, Role::Customer).await;
        customer.send(json!({"type": "conversation.open", "data": {}})).await;
        let opened = customer.recv_type("conversation.opened").await;
        conversations.push(opened["data"]["conversation"]["id"].as_str().expect("id").to_owned());
        let next = customer.recv().await;
        match next["type"].as_str() {
            Some("agent.assigned") => assigned_to.push(next["data"]["agent"]["id"].as_str().map(str::to_owned)),
            Some("conversation.queued") => {
                assert_eq!(next["data"]["position"], 1);
                assigned_to.push(None);
            }
            other => panic!("unexpected {other:?}"),
        }
        customers.push(customer);
    }
    assert!(assigned_to[0].is_some() && assigned_to[1].is_some() && assigned_to[0] != assigned_to[1]);
    assert_eq!(assigned_to[2], None, "both agents are full: the third customer queues");

    // The agent of the first customer goes away for longer than the grace period.
    let leaving = if assigned_to[0].as_deref() == Some("agent-a") { 0 } else { 1 };
    agents.remove(leaving).close().await;
    let requeued = customers[0].recv_until("conversation.queued").await;
    assert_eq!(requeued["data"]["position"], 1, "the requeued conversation waited longest");
    assert_eq!(customers[2].recv_until("conversation.queued").await["data"]["position"], 2);

    // The staying agent closes its conversation: the requeued one is served first.
    let mut agent = agents.remove(0);
    agent.send(json!({"type": "conversation.close", "data": {"conversationId": conversations[1]}})).await;
    agent.recv_until("conversation.closed").await;
    let next = agent.recv_until("agent.assigned").await;
    assert_eq!(next["data"]["conversationId"], conversations[0].as_str());
    assert_eq!(customers[0].recv_until("agent.assigned").await["data"]["agent"]["id"], agent_name(&next));
    assert_eq!(customers[2].recv_until("conversation.queued").await["data"]["position"], 1);
}

fn agent_name(assigned: &serde_json::Value) -> &str {
    assigned["data"]["agent"]["id"].as_str().expect("agent id")
}
