//! The conversation lifecycle (docs/protocol.md, "Conversation lifecycle"):
//! who closes a conversation and why, what a closed one still allows, the
//! away rule, transfers, and the lists of past conversations.

use std::time::Duration;

use petchat_protocol::Role;
use serde_json::json;

use super::harness::{World, conversation_id};

const AWAY_MS: u64 = 60_000;

fn short_away(limits: &mut crate::config::Limits) {
    limits.customer_away_ms = AWAY_MS;
}

#[tokio::test(start_paused = true)]
async fn a_customer_who_leaves_is_closed_by_the_system_after_the_away_period_and_frees_the_agent() {
    let world = World::new(|l| {
        short_away(l);
        l.max_conversations_per_agent = 1;
    })
    .await;
    let (customer, mut agent, id) = world.pair("cust", "agent").await;
    agent.expect("presence").await;
    let mut next = world.connect("next", Role::Customer).await;
    next.open().await;
    assert_eq!(next.expect("conversation.queued").await["data"]["position"], 1, "the agent is at its cap");
    customer.disconnect();
    assert_eq!(agent.expect("presence").await["data"]["status"], "offline");
    tokio::time::sleep(Duration::from_millis(AWAY_MS - 1_000)).await;
    agent.expect_silence().await;
    let closed = agent.expect("conversation.closed").await;
    assert_eq!(closed["data"], json!({"conversationId": id.as_str(), "by": "system", "reason": "customer_away"}));
    assert_eq!(next.until("agent.assigned").await["data"]["agent"]["id"], "agent", "the slot went to the next");
}

#[tokio::test(start_paused = true)]
async fn a_customer_back_within_the_away_period_keeps_its_conversation() {
    let world = World::new(short_away).await;
    let (customer, mut agent, id) = world.pair("cust", "agent").await;
    agent.expect("presence").await;
    customer.disconnect();
    agent.expect("presence").await;
    tokio::time::sleep(Duration::from_millis(AWAY_MS / 2)).await;
    let back = world.connect("cust", Role::Customer).await;
    assert_eq!(agent.expect("presence").await["data"]["status"], "online");
    back.disconnect();
    agent.expect("presence").await;
    // Away again from now: the first absence's timer must not close it.
    tokio::time::sleep(Duration::from_millis(AWAY_MS / 2 + 1_000)).await;
    agent.expect_silence().await;
    let mut back = world.connect("cust", Role::Customer).await;
    back.join(&id, 0).await;
    assert_eq!(back.expect("conversation.joined").await["data"]["conversation"]["status"], "active");
}

#[tokio::test(start_paused = true)]
async fn a_queued_conversation_of_an_absent_customer_takes_no_agents_slot_until_it_returns() {
    let world = World::new(|l| {
        short_away(l);
        l.max_conversations_per_agent = 1;
    })
    .await;
    let mut gone = world.connect("gone", Role::Customer).await;
    let gone_id = gone.open().await;
    assert_eq!(gone.expect("conversation.queued").await["data"]["position"], 1);
    gone.disconnect();
    let mut waiting = world.connect("waiting", Role::Customer).await;
    let waiting_id = waiting.open().await;
    assert_eq!(waiting.expect("conversation.queued").await["data"]["position"], 1, "the absent one is not ahead");
    let mut agent = world.connect("agent", Role::Agent).await;
    agent
        .request(petchat_protocol::ClientMessage::AgentStatus(petchat_protocol::SetAgentStatus { available: true }))
        .await;
    let assigned = agent.until("agent.assigned").await;
    assert_eq!(conversation_id(&assigned["data"]["conversationId"]), waiting_id, "the present customer is served");
    let listed = agent.list(json!({"scope": "queue"})).await;
    assert_eq!(listed["data"]["conversations"], json!([]), "an absent customer's conversation is not listed");

    let mut back = world.connect("gone", Role::Customer).await;
    back.join(&gone_id, 0).await;
    back.expect("conversation.joined").await;
    assert_eq!(back.until("conversation.queued").await["data"]["position"], 1);
    let listed = agent.list(json!({"scope": "queue"})).await;
    assert_eq!(listed["data"]["conversations"][0]["conversation"]["id"], gone_id.as_str());
    agent.close(&waiting_id).await;
    agent.expect("conversation.closed").await;
    assert_eq!(conversation_id(&agent.until("agent.assigned").await["data"]["conversationId"]), gone_id);
}

#[tokio::test(start_paused = true)]
async fn a_queued_conversation_whose_customer_never_returns_is_closed_without_an_agent() {
    let world = World::new(short_away).await;
    let mut gone = world.connect("gone", Role::Customer).await;
    let id = gone.open().await;
    gone.disconnect();
    tokio::time::sleep(Duration::from_millis(AWAY_MS + 1_000)).await;
    let mut back = world.connect("gone", Role::Customer).await;
    let past = back.list(json!({"status": "closed"})).await;
    let closed = &past["data"]["conversations"][0]["conversation"];
    assert_eq!(closed["id"], id.as_str());
    assert_eq!((&closed["closed"]["by"], &closed["closed"]["reason"]), (&json!("system"), &json!("customer_away")));
    let mut agent = world.connect("agent", Role::Agent).await;
    assert_eq!(agent.status(true).await["data"]["activeConversations"], 0);
}

#[tokio::test(start_paused = true)]
async fn a_closed_conversation_can_be_read_but_not_written_and_a_new_one_opens_at_once() {
    let world = World::new(|_| {}).await;
    let (mut customer, mut agent, id) = world.pair("cust", "agent").await;
    customer.send(&id, 1, "My cat is sneezing").await;
    customer.until("chat.ack").await;
    agent.until("chat.message").await;
    customer.close(&id).await;
    let closed = customer.until("conversation.closed").await;
    assert_eq!(closed["data"], json!({"conversationId": id.as_str(), "by": "cust", "reason": "closed"}));
    assert_eq!(agent.until("conversation.closed").await["data"]["reason"], "closed");

    let refused = customer.send(&id, 2, "one more thing").await;
    let error = customer.until("error").await;
    assert_eq!((&error["data"]["code"], &error["data"]["refId"]), (&json!("conversation_closed"), &json!(refused)));
    customer.join(&id, 0).await;
    let joined = customer.expect("conversation.joined").await;
    assert_eq!(joined["data"]["conversation"]["status"], "closed");
    assert_eq!(joined["data"]["conversation"]["closed"]["reason"], "closed");
    assert_eq!(customer.expect("chat.message").await["data"]["text"], "My cat is sneezing");
    let fresh = customer.open().await;
    assert_ne!(fresh, id, "a closed conversation is never returned by conversation.open");
}

#[tokio::test(start_paused = true)]
async fn only_the_agent_resolves_and_a_resolved_conversation_says_so() {
    let world = World::new(|_| {}).await;
    let (mut customer, mut agent, id) = world.pair("cust", "agent").await;
    customer.resolve(&id).await;
    assert_eq!(customer.until("error").await["data"]["code"], "forbidden");
    agent.resolve(&id).await;
    let resolved = agent.until("conversation.closed").await;
    assert_eq!(resolved["data"], json!({"conversationId": id.as_str(), "by": "agent", "reason": "resolved"}));
    assert_eq!(customer.until("conversation.closed").await["data"]["reason"], "resolved");
}

#[tokio::test(start_paused = true)]
async fn session_ready_and_conversation_list_give_past_conversations_newest_first_page_by_page() {
    let world = World::new(|_| {}).await;
    let mut agent = world.available_agent("agent").await;
    let mut customer = world.connect("cust", Role::Customer).await;
    let mut closed = Vec::new();
    for n in 1..=3 {
        let id = customer.open().await;
        customer.send(&id, n, &format!("question {n}")).await;
        customer.until("chat.ack").await;
        agent.until("agent.assigned").await;
        agent.resolve(&id).await;
        customer.until("conversation.closed").await;
        closed.push(id);
        // Ids and times of one millisecond still list in a fixed order.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut phone = world.try_connect("cust", Role::Customer).await.expect("connected");
    let ready = phone.expect("session.ready").await;
    let past = ready["data"]["pastConversations"].as_array().expect("a list").clone();
    let ids: Vec<&str> = past.iter().map(|p| p["conversation"]["id"].as_str().expect("id")).collect();
    let newest_first: Vec<&str> = closed.iter().rev().map(|id| id.as_str()).collect();
    assert_eq!(ids, newest_first);
    assert_eq!(past[0]["lastMessage"]["text"], "question 3");
    assert_eq!(past[0]["conversation"]["closed"]["reason"], "resolved");

    let first = phone.list(json!({"limit": 2})).await;
    assert_eq!(first["data"]["hasMore"], true);
    let after = first["data"]["conversations"][1]["conversation"]["id"].clone();
    let second = phone.list(json!({"limit": 2, "after": after})).await;
    assert_eq!(second["data"]["hasMore"], false);
    assert_eq!(second["data"]["conversations"][0]["conversation"]["id"], closed[0].as_str());
    let handled = agent.list(json!({"query": "CUST NAME"})).await;
    assert_eq!(handled["data"]["conversations"].as_array().map(Vec::len), Some(3), "searched by customer name");
    let nobody = agent.list(json!({"query": "someone else"})).await;
    assert_eq!(nobody["data"]["conversations"], json!([]));
}

#[tokio::test(start_paused = true)]
async fn a_customer_sees_neither_the_queue_nor_another_customers_conversations() {
    let world = World::new(|_| {}).await;
    let (_c, _a, _id) = world.pair("alice", "agent").await;
    let mut mallory = world.connect("mallory", Role::Customer).await;
    assert_eq!(mallory.list(json!({"scope": "queue"})).await["data"]["code"], "forbidden");
    assert_eq!(mallory.list(json!({})).await["data"]["conversations"], json!([]));
}

#[tokio::test(start_paused = true)]
async fn a_transfer_to_another_agent_moves_the_conversation_and_its_traffic() {
    let world = World::new(|_| {}).await;
    let (mut customer, mut first, id) = world.pair("cust", "first").await;
    let mut second = world.available_agent("second").await;
    first.transfer(&id, Some("second")).await;
    let transferred = first.until("conversation.transferred").await;
    assert_eq!(transferred["data"]["from"]["id"], "first");
    assert_eq!(transferred["data"]["to"]["id"], "second");
    assert_eq!(customer.until("conversation.transferred").await["data"]["to"]["id"], "second");
    assert_eq!(customer.until("agent.assigned").await["data"]["agent"]["id"], "second");
    second.until("conversation.transferred").await;
    assert_eq!(conversation_id(&second.until("agent.assigned").await["data"]["conversationId"]), id);

    customer.send(&id, 1, "still there?").await;
    customer.until("chat.ack").await;
    assert_eq!(second.until("chat.message").await["data"]["text"], "still there?");
    let types = first.types_until_quiet(Duration::from_secs(1)).await;
    assert!(!types.iter().any(|t| t == "chat.message"), "the first agent no longer hears it: {types:?}");
    first.send(&id, 2, "me again").await;
    assert_eq!(first.until("error").await["data"]["code"], "forbidden");
}

#[tokio::test(start_paused = true)]
async fn a_transfer_to_the_queue_is_not_offered_back_to_the_same_agent_at_once() {
    let world = World::new(|_| {}).await;
    let (mut customer, mut first, id) = world.pair("cust", "first").await;
    first.transfer(&id, None).await;
    let transferred = first.until("conversation.transferred").await;
    assert_eq!(transferred["data"].get("to"), None);
    assert_eq!(customer.until("conversation.queued").await["data"]["position"], 1);
    let types = first.types_until_quiet(Duration::from_secs(1)).await;
    assert!(!types.iter().any(|t| t == "agent.assigned"), "handed back at once: {types:?}");
    // Available again, the first agent is still not offered it; a colleague is.
    first.status(false).await;
    first.status(true).await;
    first.expect_silence().await;
    let mut second = world.connect("second", Role::Agent).await;
    second
        .request(petchat_protocol::ClientMessage::AgentStatus(petchat_protocol::SetAgentStatus { available: true }))
        .await;
    assert_eq!(conversation_id(&second.until("agent.assigned").await["data"]["conversationId"]), id);
}

#[tokio::test(start_paused = true)]
async fn a_transfer_names_an_agent_who_can_take_it_and_comes_from_the_conversations_agent() {
    let world = World::new(|_| {}).await;
    let (mut customer, mut agent, id) = world.pair("cust", "agent").await;
    customer.transfer(&id, Some("agent")).await;
    assert_eq!(customer.until("error").await["data"]["code"], "forbidden");
    agent.transfer(&id, Some("nobody")).await;
    assert_eq!(agent.until("error").await["data"]["code"], "not_found");
    let mut busy = world.connect("busy", Role::Agent).await;
    busy.status(false).await;
    agent.transfer(&id, Some("busy")).await;
    assert_eq!(agent.until("error").await["data"]["code"], "limit_reached");
    agent.transfer(&id, Some("agent")).await;
    assert_eq!(agent.until("error").await["data"]["code"], "invalid_message");
}
