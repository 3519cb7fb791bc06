//! The hub's rules, tested without sockets: a hub of four shards over a
//! [`MemoryStore`](crate::store::MemoryStore) and a
//! [`LocalBus`](crate::bus::LocalBus), on tokio's paused clock, in the style
//! of quinn-proto's deterministic tests. Each test reads like the rule of
//! SPEC §3, §5 or §6 it checks; the socket tests in `tests/` stay.

mod harness;
mod lifecycle;

use std::time::Duration;

use petchat_protocol::Role;

use harness::{World, conversation_id};

use super::shard_of;

// ----- §5 guarantees ---------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_message_is_acked_after_it_is_stored_and_relayed_to_the_other_member_in_seq_order() {
    let world = World::new(|_| {}).await;
    let (mut customer, mut agent, id) = world.pair("cust", "agent").await;
    customer.expect("presence").await;
    agent.expect("presence").await;
    for n in 1..=3 {
        customer.send(&id, n, &format!("message {n}")).await;
    }
    for seq in 1..=3 {
        assert_eq!(customer.expect("chat.ack").await["data"]["seq"], seq);
        let message = agent.expect("chat.message").await;
        assert_eq!(
            (message["data"]["seq"].as_u64(), message["data"]["text"].as_str()),
            (Some(seq), Some(format!("message {seq}").as_str()))
        );
    }
    let stored = world.store.messages_after_for_test(&id).await;
    assert_eq!(stored, [1, 2, 3], "every acked message is in the store");
}

#[tokio::test(start_paused = true)]
async fn a_resent_client_message_id_gets_the_original_ack_and_no_second_message() {
    let world = World::new(|_| {}).await;
    let (mut customer, mut agent, id) = world.pair("cust", "agent").await;
    customer.expect("presence").await;
    agent.expect("presence").await;
    customer.send(&id, 7, "once").await;
    let first = customer.expect("chat.ack").await;
    agent.expect("chat.message").await;
    customer.send(&id, 7, "once").await;
    let again = customer.expect("chat.ack").await;
    assert_eq!(first["data"]["messageId"], again["data"]["messageId"]);
    assert_eq!(again["data"]["seq"], 1);
    agent.expect_silence().await;
}

#[tokio::test(start_paused = true)]
async fn a_join_replays_exactly_what_was_missed_and_the_next_request_waits_for_it() {
    let world = World::new(|_| {}).await;
    let (mut customer, mut agent, id) = world.pair("cust", "agent").await;
    customer.expect("presence").await;
    agent.expect("presence").await;
    for n in 1..=3 {
        customer.send(&id, n, "hi").await;
        customer.expect("chat.ack").await;
    }
    let mut laptop = world.connect("cust", Role::Customer).await;
    laptop.join(&id, 1).await;
    laptop.send(&id, 9, "from the laptop").await;
    assert_eq!(laptop.expect("conversation.joined").await["data"]["hasMore"], false);
    assert_eq!(laptop.expect("chat.message").await["data"]["seq"], 2);
    assert_eq!(laptop.expect("chat.message").await["data"]["seq"], 3);
    assert_eq!(laptop.expect("presence").await["data"]["userId"], "agent");
    assert_eq!(laptop.expect("chat.ack").await["data"]["seq"], 4, "the ack comes after the replay it follows");
}

#[tokio::test(start_paused = true)]
async fn a_failed_commit_acknowledges_nothing_and_the_seq_stays_gapless() {
    let world = World::new(|_| {}).await;
    let (mut customer, mut agent, id) = world.pair("cust", "agent").await;
    customer.expect("presence").await;
    agent.expect("presence").await;
    world.store.fail_commits(true);
    customer.send(&id, 1, "lost?").await;
    let error = customer.expect("error").await;
    assert_eq!(error["data"]["code"], "internal");
    agent.expect_silence().await;
    world.store.fail_commits(false);
    customer.send(&id, 1, "lost?").await;
    assert_eq!(customer.expect("chat.ack").await["data"]["seq"], 1);
    assert_eq!(agent.expect("chat.message").await["data"]["seq"], 1);
}

// ----- §6 assignment -----------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn without_agents_conversations_queue_and_are_served_in_order() {
    let world = World::new(|_| {}).await;
    let mut customers = Vec::new();
    for (n, name) in ["c1", "c2", "c3"].into_iter().enumerate() {
        let mut customer = world.connect(name, Role::Customer).await;
        customer.open().await;
        assert_eq!(customer.expect("conversation.queued").await["data"]["position"], n + 1);
        customers.push(customer);
    }
    let _agent = world.connect("agent", Role::Agent).await;
    let mut agent = world.connect("agent", Role::Agent).await;
    agent
        .request(petchat_protocol::ClientMessage::AgentStatus(petchat_protocol::SetAgentStatus { available: true }))
        .await;
    let mut order = Vec::new();
    while order.len() < 3 {
        let frame = agent.next().await;
        if frame["type"] == "agent.assigned" {
            order.push(frame["data"]["conversationId"].as_str().expect("id").to_owned());
        }
    }
    let mut expected = Vec::new();
    for customer in &mut customers {
        let assigned = loop {
            let frame = customer.next().await;
            if frame["type"] == "agent.assigned" {
                break frame;
            }
        };
        expected.push(assigned["data"]["conversationId"].as_str().expect("id").to_owned());
    }
    assert_eq!(order, expected, "first queued, first served");
}

#[tokio::test(start_paused = true)]
async fn agent_status_is_answered_after_the_assignments_it_caused() {
    let world = World::new(|_| {}).await;
    for name in ["c1", "c2"] {
        let mut customer = world.connect(name, Role::Customer).await;
        customer.open().await;
    }
    let mut agent = world.connect("agent", Role::Agent).await;
    agent
        .request(petchat_protocol::ClientMessage::AgentStatus(petchat_protocol::SetAgentStatus { available: true }))
        .await;
    let types = agent.types_until_quiet(Duration::from_secs(1)).await;
    let status = types.iter().position(|t| t == "agent.status").expect("answered");
    let assigned: Vec<usize> =
        types.iter().enumerate().filter(|(_, t)| *t == "agent.assigned").map(|(i, _)| i).collect();
    assert_eq!(assigned.len(), 2, "{types:?}");
    assert!(assigned.iter().all(|i| *i < status), "agent.status came before an assignment: {types:?}");
}

#[tokio::test(start_paused = true)]
async fn the_least_loaded_agent_gets_the_next_conversation() {
    let world = World::new(|_| {}).await;
    let (_c1, _busy, _) = world.pair("c1", "busy").await;
    let mut free = world.available_agent("free").await;
    let mut customer = world.connect("c2", Role::Customer).await;
    customer.open().await;
    assert_eq!(customer.expect("agent.assigned").await["data"]["agent"]["id"], "free");
    free.expect("agent.assigned").await;
}

/// Pinned on one shard too: with the closed and the queued conversation on
/// the same shard, the assignment was once announced before the close's commit.
#[tokio::test(start_paused = true)]
async fn an_agent_at_its_cap_is_offered_nothing_and_a_close_frees_it_for_the_queue() {
    for shards in [1, 4] {
        at_its_cap_on(shards).await;
    }
}

async fn at_its_cap_on(shards: usize) {
    let world = World::new(|l| {
        l.max_conversations_per_agent = 1;
        l.hub_shards = shards;
    })
    .await;
    let (mut first, mut agent, id) = world.pair("c1", "agent").await;
    first.expect("presence").await;
    agent.expect("presence").await;
    let mut second = world.connect("c2", Role::Customer).await;
    second.open().await;
    assert_eq!(second.expect("conversation.queued").await["data"]["position"], 1);
    agent.expect_silence().await;

    agent.close(&id).await;
    assert_eq!(agent.expect("conversation.closed").await["data"]["conversationId"], id.as_str());
    let next = agent.expect("agent.assigned").await;
    assert_ne!(conversation_id(&next["data"]["conversationId"]), id, "the close comes before the next assignment");
    assert_eq!(second.expect("agent.assigned").await["data"]["agent"]["id"], "agent");
}

#[tokio::test(start_paused = true)]
async fn an_absent_agent_keeps_its_conversations_for_the_grace_period() {
    let world = World::new(|l| l.agent_grace_ms = 60_000).await;
    let (mut customer, agent, id) = world.pair("cust", "agent").await;
    customer.expect("presence").await;
    agent.disconnect();
    assert_eq!(customer.expect("presence").await["data"]["status"], "offline");
    tokio::time::sleep(Duration::from_millis(59_000)).await;
    let mut back = world.connect("agent", Role::Agent).await;
    assert_eq!(customer.expect("presence").await["data"]["status"], "online");
    tokio::time::sleep(Duration::from_millis(5_000)).await;
    back.join(&id, 0).await;
    let joined = back.expect("conversation.joined").await;
    assert_eq!(joined["data"]["conversation"]["agent"]["id"], "agent", "still its conversation after the grace");
    customer.expect_silence().await;
}

#[tokio::test(start_paused = true)]
async fn after_the_grace_period_an_absent_agents_conversations_go_to_the_front_of_the_queue() {
    let world = World::new(|l| {
        l.agent_grace_ms = 1_000;
        l.max_conversations_per_agent = 1;
    })
    .await;
    let (mut first, agent, _) = world.pair("c1", "leaving").await;
    first.expect("presence").await;
    let mut waiting = world.connect("c2", Role::Customer).await;
    waiting.open().await;
    assert_eq!(waiting.expect("conversation.queued").await["data"]["position"], 1);
    agent.disconnect();
    assert_eq!(first.expect("presence").await["data"]["status"], "offline");
    // The customer is told its place and, by a notification that is stored
    // (its next connection gets it as unread) before it is delivered, why.
    let (mut queued, mut notice) = (None, None);
    while queued.is_none() || notice.is_none() {
        let frame = first.next().await;
        match frame["type"].as_str() {
            Some("conversation.queued") => queued = Some(frame),
            Some("notification") => notice = Some(frame),
            _ => panic!("unexpected {frame}"),
        }
    }
    let (queued, notice) = (queued.expect("queued"), notice.expect("notified"));
    assert_eq!(queued["data"]["position"], 1, "it waited longest");
    assert_eq!(waiting.expect("conversation.queued").await["data"]["position"], 2);
    assert_eq!(notice["data"]["kind"], "conversation.requeued");
    assert_eq!(notice["data"]["seq"], 1);
    let mut phone = world.try_connect("c1", Role::Customer).await.expect("connected");
    let ready = phone.expect("session.ready").await;
    assert_eq!(ready["data"]["notifications"], serde_json::json!({"unread": 1, "lastSeq": 1}));
    assert_eq!(phone.expect("notification").await["data"]["id"], notice["data"]["id"]);
}

// ----- §3 presence, typing, receipts, permissions ------------------------------

#[tokio::test(start_paused = true)]
async fn presence_goes_offline_with_a_users_last_connection_only() {
    let world = World::new(|_| {}).await;
    let (customer, mut agent, _) = world.pair("cust", "agent").await;
    agent.expect("presence").await;
    let laptop = world.connect("cust", Role::Customer).await;
    customer.disconnect();
    agent.expect_silence().await;
    laptop.disconnect();
    assert_eq!(agent.expect("presence").await["data"]["status"], "offline");
}

#[tokio::test(start_paused = true)]
async fn typing_expires_without_a_stop() {
    let world = World::new(|l| l.typing_expiry_ms = 6_000).await;
    let (mut customer, mut agent, id) = world.pair("cust", "agent").await;
    customer.expect("presence").await;
    agent.expect("presence").await;
    customer
        .request(petchat_protocol::ClientMessage::TypingStart(petchat_protocol::ConversationRef {
            conversation_id: id.clone(),
        }))
        .await;
    agent.expect("typing.start").await;
    let started = tokio::time::Instant::now();
    agent.expect("typing.stop").await;
    assert_eq!(started.elapsed().as_millis() / 100, 60, "after the typing expiry");
    customer.expect_silence().await;
}

#[tokio::test(start_paused = true)]
async fn a_read_receipt_reaches_the_other_member_once_and_never_beyond_the_last_seq() {
    let world = World::new(|_| {}).await;
    let (mut customer, mut agent, id) = world.pair("cust", "agent").await;
    customer.expect("presence").await;
    agent.expect("presence").await;
    customer.send(&id, 1, "hi").await;
    customer.expect("chat.ack").await;
    agent.expect("chat.message").await;
    agent.read(&id, 1).await;
    assert_eq!(customer.expect("message.read").await["data"]["upToSeq"], 1);
    agent.read(&id, 1).await;
    customer.expect_silence().await;
    agent.read(&id, 2).await;
    assert_eq!(agent.expect("error").await["data"]["code"], "invalid_message");
}

#[tokio::test(start_paused = true)]
async fn another_customer_can_neither_join_nor_write_nor_close_a_conversation() {
    let world = World::new(|_| {}).await;
    let (_customer, _agent, id) = world.pair("cust", "agent").await;
    let mut mallory = world.connect("mallory", Role::Customer).await;
    mallory.join(&id, 0).await;
    assert_eq!(mallory.expect("error").await["data"]["code"], "forbidden");
    mallory.send(&id, 1, "hi").await;
    assert_eq!(mallory.expect("error").await["data"]["code"], "forbidden");
    mallory.close(&id).await;
    assert_eq!(mallory.expect("error").await["data"]["code"], "forbidden");
}

#[tokio::test(start_paused = true)]
async fn the_per_user_connection_cap_refuses_with_1013() {
    let world = World::new(|l| l.max_connections_per_user = 2).await;
    let _one = world.connect("cust", Role::Customer).await;
    let two = world.connect("cust", Role::Customer).await;
    let refused = world.try_connect("cust", Role::Customer).await.err().expect("refused");
    assert_eq!(refused.0, 1013);
    two.disconnect();
    world.connect("cust", Role::Customer).await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_on_the_same_store_keeps_conversations_and_seqs() {
    let world = World::new(|_| {}).await;
    let (mut customer, mut agent, id) = world.pair("cust", "agent").await;
    customer.expect("presence").await;
    agent.expect("presence").await;
    customer.send(&id, 1, "before").await;
    customer.expect("chat.ack").await;
    let again = World::on(world.store.clone(), world.limits.clone()).await;
    let mut customer = again.connect("cust", Role::Customer).await;
    customer.join(&id, 1).await;
    customer.expect("conversation.joined").await;
    customer.send(&id, 2, "after").await;
    // The agent is offline on the new hub: presence says so, then the ack.
    customer.expect("presence").await;
    assert_eq!(customer.expect("chat.ack").await["data"]["seq"], 2);
}

// ----- shards ------------------------------------------------------------------

#[test]
fn conversations_spread_over_every_shard_and_their_shard_never_changes() {
    let ids: Vec<petchat_protocol::ConversationId> =
        (0..200).map(|n| petchat_protocol::ConversationId::new(format!("c-{n}")).expect("id")).collect();
    let mut counts = [0_usize; 4];
    for id in &ids {
        counts[shard_of(id, 4)] += 1;
    }
    assert!(counts.iter().all(|n| *n > 25), "uneven: {counts:?}");
    // FNV-1a of "c-0": the same on every node and after every restart.
    assert_eq!(shard_of(&ids[0], 4), (0xf6e5_4b19_0dc0_0c87_u64 % 4) as usize);
    assert_eq!(shard_of(&ids[0], 1), 0);
}
