//! SPEC §3 and §5 across nodes (§10): members on different nodes chat, see
//! receipts, typing and presence, a user's devices on several nodes all hear
//! the conversation, a resend to another node is acked once, seq stays
//! gapless with senders on three nodes, and a join on another node resumes.

use std::collections::BTreeSet;
use std::time::Duration;

use petchat_protocol::Role;
use serde_json::{Value, json};

use super::{about, ack_of, assert_gapless, await_all, chat_send, key_of, message, say, seq};
use crate::common::cluster::{Cluster, HEARTBEAT_MS, Pair, Peer};

/// A customer on n1 and an agent on n2: ten messages each way, pipelined;
/// each sender gets its chat.acks with rising seq, the other member gets
/// chat.message in seq order with the ack's messageId, text and author.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_and_an_agent_on_two_nodes_chat_both_ways_in_seq_order() {
    let cluster = Cluster::of(2).start().await;
    let Pair { mut customer, mut agent, conversation } = cluster.pair(1, "cust-1", 2, "agent-1").await;

    exchange(&mut customer, &mut agent, &conversation, 1, ("cust-1", "customer")).await;
    exchange(&mut agent, &mut customer, &conversation, 11, ("agent-1", "agent")).await;
}

/// `sender` sends ten messages without waiting, which must take seqs
/// `first`…; `receiver` must get them in that order.
async fn exchange(
    sender: &mut Peer,
    receiver: &mut Peer,
    conversation: &str,
    first: u64,
    (author, role): (&str, &str),
) {
    let sends: Vec<Value> = (0..10).map(|n| chat_send(conversation, &format!("{author} #{n}"))).collect();
    for send in &sends {
        sender.send(send.clone());
    }
    for (n, send) in sends.iter().enumerate() {
        let ack = ack_of(sender, key_of(send)).await;
        assert_eq!(
            seq(&ack),
            first + n as u64,
            "SPEC §5: {author}'s message #{n} is acked with the next seq of the conversation, across nodes"
        );
        let got = message(receiver).await;
        assert_eq!(
            seq(&got),
            first + n as u64,
            "SPEC §5/§10: {} gets {author}'s messages from the other node in seq order",
            receiver.label
        );
        assert_eq!(got["text"], send["data"]["text"], "SPEC §3: chat.message carries the text sent");
        assert_eq!(got["messageId"], ack["messageId"], "SPEC §3: chat.message and chat.ack name one message");
        assert_eq!(got["from"], json!({"id": author, "role": role, "name": format!("{author} name")}));
    }
}

/// Receipts and typing cross nodes: the customer's typing reaches the agent,
/// the agent's delivered and read receipts reach the customer, and back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_and_typing_reach_the_member_on_the_other_node() {
    let cluster = Cluster::of(2).start().await;
    let Pair { mut customer, mut agent, conversation } = cluster.pair(1, "cust-1", 2, "agent-1").await;

    typing(&customer, &mut agent, &conversation, "cust-1").await;
    typing(&agent, &mut customer, &conversation, "agent-1").await;

    // The customer writes; the agent on the other node receipts it.
    let ack = say(&mut customer, &conversation, "is my order shipped?").await;
    assert_eq!(seq(&message(&mut agent).await), seq(&ack));
    for kind in ["message.delivered", "message.read"] {
        agent.send(json!({"type": kind, "data": {"conversationId": conversation, "upToSeq": seq(&ack)}}));
        let receipt = about(&mut customer, kind, "agent-1").await;
        assert_eq!(
            (receipt["conversationId"].as_str(), receipt["upToSeq"].as_u64()),
            (Some(conversation.as_str()), Some(seq(&ack))),
            "SPEC §3/§10: the author on n1 gets the {kind} of the agent on n2"
        );
    }
    // And the other way round.
    let ack = say(&mut agent, &conversation, "it left this morning").await;
    assert_eq!(seq(&message(&mut customer).await), seq(&ack));
    customer.send(json!({"type": "message.read", "data": {"conversationId": conversation, "upToSeq": seq(&ack)}}));
    let receipt = about(&mut agent, "message.read", "cust-1").await;
    assert_eq!(receipt["upToSeq"], seq(&ack), "SPEC §3/§10: the agent on n2 gets the customer's read receipt");
}

/// A user is online while any of its connections on any node is: the agent
/// on n2 hears the customer come online once, stay online while one of its
/// two connections (n1, n3) closes, and go offline when the last one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_counts_a_users_connections_on_every_node() {
    let cluster = Cluster::of(3).start().await;
    let mut agent = cluster.node(2).connect("agent-1", Role::Agent).await;
    agent.set_available(true).await;
    let mut laptop = cluster.node(1).connect("cust-1", Role::Customer).await;
    let conversation = laptop.open().await;
    let is_assigned = |f: &Value| f["type"] == "agent.assigned" && f["data"]["conversationId"] == conversation;
    let customer_online = |f: &Value| presence_is(f, "cust-1", "online");
    let agent_online = |f: &Value| presence_is(f, "agent-1", "online");
    await_all(&mut agent, &[("agent.assigned", &is_assigned), ("presence cust-1 online", &customer_online)]).await;
    await_all(&mut laptop, &[("agent.assigned", &is_assigned), ("presence agent-1 online", &agent_online)]).await;

    let phone = cluster.node(3).connect("cust-1", Role::Customer).await;
    laptop.close().await;
    let window = Duration::from_millis(3 * HEARTBEAT_MS);
    let heard: Vec<Value> = agent.frames_for(window).await.into_iter().filter(|f| f["type"] == "presence").collect();
    assert!(
        heard.is_empty(),
        "SPEC §10: cust-1 stays online while its connection on n3 is open (one of two closed on n1), got {heard:?}"
    );
    phone.close().await;
    let offline = about(&mut agent, "presence", "cust-1").await;
    assert_eq!(
        offline["status"], "offline",
        "SPEC §6/§10: the agent on n2 hears cust-1 go offline when its last connection (on n3) closes"
    );
}

/// A customer on n1 and n3 (laptop and phone), the agent on n2: both devices
/// get the agent's messages, each device gets the other's messages, and both
/// get the agent's receipts; the agent gets the phone's receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_devices_on_two_nodes_both_hear_messages_and_receipts() {
    let cluster = Cluster::of(3).start().await;
    let Pair { customer: mut laptop, mut agent, conversation } = cluster.pair(1, "cust-1", 2, "agent-1").await;
    let mut phone = cluster.node(3).connect("cust-1", Role::Customer).await;
    phone.join(&conversation, 0).await;

    let ack = say(&mut agent, &conversation, "hello to both devices").await;
    for device in [&mut laptop, &mut phone] {
        let got = message(device).await;
        assert_eq!(
            (seq(&got), got["messageId"].as_str()),
            (seq(&ack), ack["messageId"].as_str()),
            "SPEC §3/§10: {} gets the agent's message from n2",
            device.label
        );
    }
    let ack = say(&mut laptop, &conversation, "typed on the laptop").await;
    let mine = message(&mut phone).await;
    assert_eq!(
        (seq(&mine), mine["text"].as_str()),
        (seq(&ack), Some("typed on the laptop")),
        "SPEC §3: the customer's other device (on n3) sees its own message sent on n1"
    );
    assert_eq!(seq(&message(&mut agent).await), seq(&ack), "the agent gets the laptop's message");

    agent.send(json!({"type": "message.read", "data": {"conversationId": conversation, "upToSeq": seq(&ack)}}));
    for device in [&mut laptop, &mut phone] {
        let receipt = about(device, "message.read", "agent-1").await;
        assert_eq!(
            receipt["upToSeq"],
            seq(&ack),
            "SPEC §3/§10: the author's device {} gets the agent's read receipt",
            device.label
        );
    }
    phone.send(json!({"type": "message.delivered", "data": {"conversationId": conversation, "upToSeq": 1}}));
    let receipt = about(&mut agent, "message.delivered", "cust-1").await;
    assert_eq!(receipt["upToSeq"], 1, "SPEC §3/§10: the agent on n2 gets the receipt the phone sent on n3");
}

/// A chat.send acked by n1 and resent with its clientMessageId to n3 (the
/// client never saw the ack): the original ack again, no second chat.message
/// to the agent, and the next message takes the next seq. The same key sent
/// to n1 and n3 at once is stored once too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_message_id_resent_to_another_node_gets_the_original_ack_and_no_second_message() {
    let cluster = Cluster::of(3).start().await;
    let Pair { customer, mut agent, conversation } = cluster.pair(1, "cust-1", 2, "agent-1").await;
    let mut laptop = customer;
    let send = chat_send(&conversation, "did you get this?");
    laptop.send(send.clone());
    let original = ack_of(&mut laptop, key_of(&send)).await;
    laptop.close().await;

    let mut again = cluster.node(3).connect("cust-1", Role::Customer).await;
    again.send(send.clone());
    let resent = ack_of(&mut again, key_of(&send)).await;
    assert_eq!(resent, original, "SPEC §10: a clientMessageId resent to n3 gets n1's original chat.ack");
    let first = message(&mut agent).await;
    assert_eq!(seq(&first), 1);
    let next = say(&mut again, &conversation, "and this?").await;
    assert_eq!(seq(&next), 2, "SPEC §5: the resend used no seq");
    let second = message(&mut agent).await;
    assert_eq!(
        (seq(&second), second["text"].as_str()),
        (2, Some("and this?")),
        "SPEC §5/§10: no second chat.message for the resent clientMessageId reaches the agent"
    );

    // One key through two nodes at the same moment.
    let mut other = cluster.node(1).connect("cust-1", Role::Customer).await;
    let both = chat_send(&conversation, "sent twice at once");
    again.send(both.clone());
    other.send(both.clone());
    let (a, b) = tokio::join!(ack_of(&mut again, key_of(&both)), ack_of(&mut other, key_of(&both)));
    assert_eq!(a, b, "SPEC §10: the same clientMessageId sent to n1 and n3 at once is acked as one message");
    assert_eq!(seq(&a), 3);
    let once = message(&mut agent).await;
    assert_eq!(seq(&once), 3);
    let last = say(&mut again, &conversation, "last").await;
    assert_eq!(
        seq(&message(&mut agent).await),
        seq(&last),
        "SPEC §5/§10: the message sent twice at once reached the agent once"
    );
}

/// The customer's laptop on n1, the agent on n2 and the customer's phone on
/// n3 send 40 messages each, all at once: seq is 1..=120 without a gap; each
/// connection sees every seq once (its own as acks, rising in its send
/// order, the others' as chat.message in seq order); a join from 0 reads
/// back the 120 texts, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_senders_on_three_nodes_at_once_get_one_gapless_seq() {
    const EACH: usize = 40;
    let cluster = Cluster::of(3).start().await;
    let Pair { customer: laptop, agent, conversation } = cluster.pair(1, "cust-1", 2, "agent-1").await;
    let mut phone = cluster.node(3).connect("cust-1", Role::Customer).await;
    phone.join(&conversation, 0).await;

    let senders = [laptop, agent, phone].into_iter().map(|mut peer| {
        let conversation = conversation.clone();
        tokio::spawn(async move {
            let sends: Vec<Value> =
                (0..EACH).map(|n| chat_send(&conversation, &format!("{} #{n}", peer.label))).collect();
            for send in &sends {
                peer.send(send.clone());
            }
            let keys: Vec<&str> = sends.iter().map(key_of).collect();
            let (mut acked, mut delivered) = (vec![0; EACH], Vec::new());
            let mut acks = 0;
            while acks < EACH || delivered.len() < 2 * EACH {
                let frame = peer.recv().await;
                match frame["type"].as_str() {
                    Some("chat.ack") => {
                        let n = keys.iter().position(|k| frame["data"]["clientMessageId"] == *k);
                        let n = n.unwrap_or_else(|| panic!("{}: an ack for a key it never sent: {frame}", peer.label));
                        assert_eq!(acked[n], 0, "SPEC §5: {} got two acks for its message #{n}", peer.label);
                        acked[n] = seq(&frame);
                        acks += 1;
                    }
                    Some("chat.message") => delivered.push(seq(&frame)),
                    Some("error") => panic!("{}: a send was refused: {frame}", peer.label),
                    _ => {}
                }
            }
            (peer, acked, delivered)
        })
    });
    let mut everyone = Vec::new();
    for sender in futures_util::future::join_all(senders).await {
        let (peer, acked, delivered) = sender.expect("a sender");
        assert!(
            acked.windows(2).all(|w| w[0] < w[1]),
            "{}: a sender's messages take seqs in the order it sent them, got {acked:?}",
            peer.label
        );
        assert!(
            delivered.windows(2).all(|w| w[0] < w[1]),
            "SPEC §5/§10: {} sees the others' chat.message in seq order, each once: {delivered:?}",
            peer.label
        );
        let mut all: Vec<u64> = acked.iter().chain(&delivered).copied().collect();
        all.sort_unstable();
        assert_gapless(
            &all,
            3 * EACH as u64,
            &format!("SPEC §10: {} sees every seq of three nodes' senders", peer.label),
        );
        everyone.push(peer);
    }

    let mut reader = cluster.node(1).connect("cust-1", Role::Customer).await;
    let stored = reader.replay(&conversation, 0).await;
    assert_gapless(&stored.iter().map(seq).collect::<Vec<_>>(), 3 * EACH as u64, "SPEC §5: a join from 0 reads back");
    let texts: BTreeSet<&str> = stored.iter().filter_map(|m| m["text"].as_str()).collect();
    assert_eq!(texts.len(), 3 * EACH, "SPEC §5: each of the 120 messages is stored once");
}

/// The customer reads three messages on n1 and goes away; the agent on n2
/// sends four more; the customer comes back on n3: session.ready lists the
/// conversation with lastSeq 7, a join with afterSeq 3 gets exactly 4..=7,
/// and live traffic follows with 8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_with_after_seq_on_another_node_gets_exactly_what_was_missed() {
    let cluster = Cluster::of(3).start().await;
    let Pair { mut customer, mut agent, conversation } = cluster.pair(1, "cust-1", 2, "agent-1").await;
    for n in 1..=3 {
        say(&mut agent, &conversation, &format!("before {n}")).await;
        assert_eq!(seq(&message(&mut customer).await), n);
    }
    customer.close().await;
    let mut missed = Vec::new();
    for n in 4..=7 {
        let ack = say(&mut agent, &conversation, &format!("missed {n}")).await;
        missed.push(ack);
    }

    let (mut customer, ready) = cluster.node(3).connect_ready("cust-1", Role::Customer).await;
    assert_eq!(
        ready["data"]["conversations"],
        json!([{"id": conversation, "status": "active", "lastSeq": 7}]),
        "SPEC §1/§10: session.ready on n3 lists the conversation with the lastSeq n2 wrote"
    );
    let joined = customer.join(&conversation, 3).await;
    assert_eq!(joined["data"]["conversation"]["lastSeq"], 7);
    for ack in &missed {
        let got = customer.recv().await;
        assert_eq!(got["type"], "chat.message", "SPEC §3: the replay follows conversation.joined, got {got}");
        assert_eq!(
            (seq(&got), got["data"]["messageId"].as_str()),
            (seq(ack), ack["messageId"].as_str()),
            "SPEC §5/§10: a join with afterSeq 3 on n3 replays exactly what was missed, in order"
        );
    }
    let live = say(&mut agent, &conversation, "live").await;
    let got = message(&mut customer).await;
    assert_eq!(
        (seq(&got), seq(&live)),
        (8, 8),
        "SPEC §3: after the replay, live traffic follows, nothing replayed twice"
    );
}

/// `typist` starts and stops typing; `watcher`, on another node, hears both.
async fn typing(typist: &Peer, watcher: &mut Peer, conversation: &str, user: &str) {
    for kind in ["typing.start", "typing.stop"] {
        typist.send(json!({"type": kind, "data": {"conversationId": conversation}}));
        let typing = about(watcher, kind, user).await;
        assert_eq!(typing["conversationId"], conversation, "SPEC §3/§10: {kind} of {user} reaches {}", watcher.label);
    }
}

/// Whether `frame` is a presence of `user` with `status`.
fn presence_is(frame: &Value, user: &str, status: &str) -> bool {
    frame["type"] == "presence" && frame["data"]["userId"] == user && frame["data"]["status"] == status
}

/// A notification is for one user on all of its connections on every node:
/// cust-1 is on n1 (in the conversation) and n3 (not joined); its agent on
/// n2 leaves for longer than the grace period, and both connections get the
/// `conversation.requeued` notification, with the same id and seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_reaches_every_connection_of_its_user_on_every_node() {
    let cluster = Cluster::of(3).flag("--agent-grace-ms", 1_000).start().await;
    let Pair { customer: mut laptop, agent, conversation: _ } = cluster.pair(1, "cust-1", 2, "agent-1").await;
    let mut phone = cluster.node(3).connect("cust-1", Role::Customer).await;
    agent.close().await;
    let mut seen = Vec::new();
    for device in [&mut laptop, &mut phone] {
        let what = "notification conversation.requeued";
        let note = device
            .recv_where(what, |f| f["type"] == "notification" && f["data"]["kind"] == "conversation.requeued")
            .await;
        seen.push(note["data"].clone());
    }
    assert_eq!(
        (&seen[0]["id"], &seen[0]["seq"]),
        (&seen[1]["id"], &seen[1]["seq"]),
        "SPEC §12/§10: cust-1's connections on n1 and n3 get the same notification"
    );
}

/// A customer that writes the moment it hears `agent.assigned`, before the
/// agent's node can have heard the conversation's channel: the agent on the
/// other node still gets that first message live (it is read from the store
/// for the agent). Eight conversations, each assigned on the customer's node
/// to an agent on another, so that the race is run eight times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_message_right_after_the_assignment_reaches_the_agent_on_another_node() {
    let cluster = Cluster::of(3).start().await;
    for n in 0..8 {
        let (customer_at, agent_at) = (1 + n % 3, 1 + (n + 1) % 3);
        let (customer_id, agent_id) = (format!("cust-{n}"), format!("agent-{n}"));
        let mut agent = cluster.node(agent_at).connect(&agent_id, Role::Agent).await;
        agent.set_available(true).await;
        let mut customer = cluster.node(customer_at).connect(&customer_id, Role::Customer).await;
        let conversation = customer.open().await;
        customer.recv_until("agent.assigned").await;
        let ack = say(&mut customer, &conversation, "hello, straight away").await;
        assert_eq!(seq(&ack), 1, "the conversation's first message");
        let assigned = agent.recv_until("agent.assigned").await;
        assert_eq!(assigned["data"]["conversationId"], conversation);
        let got = message(&mut agent).await;
        assert_eq!(
            (got["conversationId"].as_str(), seq(&got)),
            (Some(conversation.as_str()), 1),
            "SPEC §3/§10: {agent_id} on n{agent_at}, a member since agent.assigned, gets the message \
             {customer_id} sent on n{customer_at} right after it"
        );
        agent.set_available(false).await;
    }
}

/// Thirty customers on n2 and n3 open at once and each writes the moment it
/// is assigned; their six agents are all on n1, which reads each
/// conversation as its assignment reaches it, so many first messages arrive
/// there while that read is under way. Every agent gets every first message
/// of its conversations live, after its `agent.assigned`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_messages_that_reach_the_agents_node_while_it_reads_the_conversation_reach_the_agent() {
    let cluster = Cluster::of(3).start().await;
    let mut agents = Vec::new();
    for n in 0..6 {
        let mut agent = cluster.node(1).connect(&format!("agent-{n}"), Role::Agent).await;
        agent.set_available(true).await;
        agents.push(agent);
    }
    let mut customers = tokio::task::JoinSet::new();
    for n in 0..30 {
        let mut customer = cluster.node(2 + n % 2).connect(&format!("cust-{n}"), Role::Customer).await;
        customers.spawn(async move {
            customer.send(json!({"type": "conversation.open", "data": {"topic": "help"}}));
            let assigned = customer.recv_until("agent.assigned").await;
            let conversation = assigned["data"]["conversationId"].as_str().expect("an id").to_owned();
            let ack = say(&mut customer, &conversation, "hello, straight away").await;
            assert_eq!(seq(&ack), 1, "the conversation's first message");
            (customer, conversation)
        });
    }
    let mut sent = BTreeSet::new();
    let mut keep = Vec::new();
    while let Some(done) = customers.join_next().await {
        let (customer, conversation) = done.expect("a customer");
        sent.insert(conversation);
        keep.push(customer);
    }
    // Each agent is assigned five (its cap): it waits for their first
    // messages until they stop coming.
    let mut assigned = BTreeSet::new();
    let mut received = BTreeSet::new();
    for agent in &mut agents {
        let (mut mine, mut heard) = (BTreeSet::new(), BTreeSet::new());
        while mine.len() < 5 || heard.len() < mine.len() {
            let Some(crate::common::Next::Frame(frame)) = agent.next_within(Duration::from_secs(5)).await else {
                break;
            };
            let Some(conversation) = frame["data"]["conversationId"].as_str().map(str::to_owned) else { continue };
            match frame["type"].as_str() {
                Some("agent.assigned") => {
                    mine.insert(conversation);
                }
                Some("chat.message") => {
                    assert!(
                        mine.contains(&conversation),
                        "SPEC §3: {} got a message of {conversation} before its agent.assigned",
                        agent.label
                    );
                    assert_eq!(seq(&frame), 1, "the only message of {conversation}");
                    heard.insert(conversation);
                }
                _ => {}
            }
        }
        assigned.extend(mine);
        received.extend(heard);
    }
    assert_eq!(assigned, sent, "every customer's conversation went to one of the six agents");
    assert_eq!(
        received, sent,
        "SPEC §3/§10: every agent on n1 gets the first message of each of its conversations, written on \
         n2 or n3 the moment the customer was assigned"
    );
    drop(keep);
}

/// A node that hears Redis late (its `SUBSCRIBE` to a new conversation's
/// channel takes effect 400 ms after the customer was told of the agent)
/// still delivers what another node stored meanwhile: the customer on n1
/// gets, live, the message its agent sent from n2 at once with the id the
/// customer got, before n2 had even heard of the assignment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_stored_elsewhere_before_this_node_hears_a_new_conversation_still_reaches_its_customer() {
    let cluster = Cluster::of(2).slow_redis_for(1, Duration::from_millis(400)).start().await;
    let mut agent = cluster.node(2).connect("agent-1", Role::Agent).await;
    agent.set_available(true).await;
    let mut customer = cluster.node(1).connect("cust-1", Role::Customer).await;
    let conversation = customer.open().await;
    let send = chat_send(&conversation, "hello from n2");
    agent.send(send.clone());
    let ack = ack_of(&mut agent, key_of(&send)).await;
    let got = message(&mut customer).await;
    assert_eq!(
        (seq(&got), &got["messageId"]),
        (seq(&ack), &ack["messageId"]),
        "SPEC §10: the customer on n1 gets the message its agent stored on n2 while n1 was still subscribing"
    );
}
