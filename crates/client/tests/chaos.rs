//! Chaos (SPEC §5): conversations through the real `petchat-server` binary
//! and the real client library while the server is SIGKILLed at random
//! moments and restarted on the same file and address. The clients reconnect
//! and resume by themselves; at the end the history endpoint must hold every
//! acknowledged message exactly once with gapless `seq`s, and every client
//! must have seen every message of its conversations once, in order.
//!
//! `PETCHAT_CHAOS_KILLS` sets the number of kills (default 12, the long run
//! in docs/reliability.md uses 100); `PETCHAT_CHAOS_SEED` replays the
//! schedule (kill moments, pauses, send pacing) of a run whose seed a failure
//! printed.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{SECRET, Server, WAIT, until};
use petchat_client::{Client, Events, connect};
use petchat_protocol::session::{Backoff, ConnectionState, Event};
use petchat_protocol::{
    ChatAck, ChatMessage, ClientMessageId, ConversationId, HistoryPage, Role, ServerMessage, UserId,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

/// Kills in the default (CI) run.
const DEFAULT_KILLS: usize = 12;
/// Agents in the pool; each serves two of the customers' conversations.
const AGENTS: usize = 3;
/// Customers, each with one conversation.
const CUSTOMERS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acked_message_survives_random_sigkills_once_and_in_order() {
    let seed = env_number("PETCHAT_CHAOS_SEED").unwrap_or_else(rand::random);
    let kills = env_number("PETCHAT_CHAOS_KILLS").map_or(DEFAULT_KILLS, |n| n as usize);
    println!("chaos: seed {seed}, {kills} kills (replay with PETCHAT_CHAOS_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut server = Server::start(&[]).await;
    let mut cast = assemble(&server, &mut rng).await;

    let counters = Arc::new(Counters::default());
    let (stop_tx, stop) = watch::channel(false);
    let mut readers = Vec::new();
    let mut senders = Vec::new();
    for member in &mut cast {
        let events = member.events.take().expect("events not taken yet");
        readers.push(tokio::spawn(read(events, member.progress.clone(), counters.clone())));
        let sender = send(
            member.client.clone(),
            member.name.clone(),
            member.conversations.clone(),
            StdRng::seed_from_u64(rng.random()),
            stop.clone(),
            counters.clone(),
        );
        senders.push(tokio::spawn(sender));
    }

    // The kills: each at a random moment after every client came back, so
    // that it lands on live traffic (replays, outbox resends, fan-out).
    let mut in_flight_at_kills = Vec::new();
    for kill in 0..kills {
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..2_000))).await;
        if rng.random_bool(0.5) {
            // Aim at the write path: a few milliseconds after the next send.
            let mut queued = counters.queued.subscribe();
            queued.borrow_and_update();
            assert!(tokio::time::timeout(WAIT, queued.changed()).await.is_ok(), "seed {seed}: nobody sends");
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..4))).await;
        }
        in_flight_at_kills.push(counters.in_flight());
        let connected: Vec<u64> = cast.iter().map(|m| m.progress.borrow().connected).collect();
        server.signal("KILL").await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..800))).await;
        server.restart().await;
        for (member, before) in cast.iter().zip(connected) {
            let mut progress = member.progress.subscribe();
            let back = tokio::time::timeout(WAIT, progress.wait_for(|p| p.connected > before)).await;
            assert!(back.is_ok(), "seed {seed}: {} did not reconnect after kill {}", member.name, kill + 1);
        }
    }
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..1_000))).await;

    // Quiet down: no more sends, every outbox drained, every message seen.
    stop_tx.send(true).expect("the senders listen");
    let mut sent: HashMap<ClientMessageId, Sent> = HashMap::new();
    for sender in senders {
        for message in sender.await.expect("a sender") {
            sent.insert(message.client_message_id.clone(), message);
        }
    }
    for member in &cast {
        let idle = tokio::time::timeout(WAIT, member.client.idle()).await;
        assert!(idle.is_ok_and(|r| r.is_ok()), "seed {seed}: {} still has unacknowledged messages", member.name);
    }
    let mut stored: BTreeMap<ConversationId, Vec<ChatMessage>> = BTreeMap::new();
    for member in cast.iter().filter(|m| m.role == Role::Customer) {
        let id = &member.conversations[0];
        stored.insert(id.clone(), history(&server, &member.name, id).await);
    }
    for member in &cast {
        let mut progress = member.progress.subscribe();
        let complete = |p: &Progress| {
            member.conversations.iter().all(|id| p.contiguous.get(id).copied().unwrap_or(0) >= stored[id].len() as u64)
        };
        let caught_up = tokio::time::timeout(WAIT, progress.wait_for(complete)).await;
        assert!(caught_up.is_ok(), "seed {seed}: {} never saw every stored message", member.name);
    }
    for member in &cast {
        member.client.disconnect().await;
    }
    let mut logs = Vec::new();
    for reader in readers {
        logs.push(reader.await.expect("a reader"));
    }

    // The history holds every sent message exactly once, gapless from 1, and
    // every acknowledgement names the stored message.
    let mut by_text: HashMap<(&ConversationId, &str), &Sent> = HashMap::new();
    for message in sent.values() {
        by_text.insert((&message.conversation_id, message.text.as_str()), message);
    }
    let mut acked = 0;
    for (id, messages) in &stored {
        let seqs: Vec<u64> = messages.iter().map(|m| m.seq.get()).collect();
        assert_eq!(seqs, (1..=messages.len() as u64).collect::<Vec<_>>(), "seed {seed}: {id}: seq has gaps");
        let mut texts = BTreeSet::new();
        for message in messages {
            assert!(texts.insert(message.text.as_str()), "seed {seed}: {id}: stored twice: seq {}", message.seq);
            assert!(
                by_text.contains_key(&(id, message.text.as_str())),
                "seed {seed}: {id}: seq {} was never sent",
                message.seq
            );
        }
    }
    for (member, log) in cast.iter().zip(&logs) {
        assert!(log.failed.is_empty(), "seed {seed}: {}: refused for good: {:?}", member.name, log.failed);
        for ack in &log.acks {
            let message = sent.get(&ack.client_message_id).expect("an ack names a message this test sent");
            let at = &stored[&ack.conversation_id][ack.seq.get() as usize - 1];
            assert_eq!(
                (&at.message_id, at.text.as_str()),
                (&ack.message_id, message.text.as_str()),
                "seed {seed}: {}: the ack of seq {} names another message",
                member.name,
                ack.seq
            );
            acked += 1;
        }
    }
    assert_eq!(acked, sent.len(), "seed {seed}: every queued message was acknowledged once");
    let total: usize = stored.values().map(Vec::len).sum();
    assert_eq!(total, sent.len(), "seed {seed}: every acknowledged message stored, nothing else");

    // Every client saw every message of its conversations exactly once, in
    // order: others' as `chat.message`, its own as `chat.message` (replayed)
    // or as its ack.
    for (member, log) in cast.iter().zip(&logs) {
        for id in &member.conversations {
            let messages: Vec<&ChatMessage> = log.messages.iter().filter(|m| &m.conversation_id == id).collect();
            let seqs: Vec<u64> = messages.iter().map(|m| m.seq.get()).collect();
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seed {seed}: {} {id}: out of order or twice", member.name);
            for message in &messages {
                let at = &stored[id][message.seq.get() as usize - 1];
                assert_eq!(&at.message_id, &message.message_id, "seed {seed}: {}: seq {}", member.name, message.seq);
            }
            let mut seen: BTreeSet<u64> = seqs.iter().copied().collect();
            seen.extend(log.acks.iter().filter(|a| &a.conversation_id == id).map(|a| a.seq.get()));
            let expected: BTreeSet<u64> = (1..=stored[id].len() as u64).collect();
            let missing: Vec<_> = expected.difference(&seen).collect();
            assert!(missing.is_empty(), "seed {seed}: {} {id}: never saw seq {missing:?}", member.name);
            let others = stored[id].iter().filter(|m| m.from.id.as_str() != member.name).count();
            let from_others = messages.iter().filter(|m| m.from.id.as_str() != member.name).count();
            assert_eq!(from_others, others, "seed {seed}: {} {id}: messages from others", member.name);
        }
    }

    // The server answers each connection in order (joins, their replays,
    // then acks and live traffic), so the session never has to repair a gap.
    let gaps: usize = logs.iter().map(|l| l.gaps).sum();
    assert_eq!(gaps, 0, "seed {seed}: a client saw a seq out of order and had to rejoin");
    // An own message stored but not acked before a kill comes back in the
    // replay and is then acked from the resent outbox: seen twice, rightly.
    let replayed_own: usize = cast
        .iter()
        .zip(&logs)
        .map(|(member, log)| log.messages.iter().filter(|m| m.from.id.as_str() == member.name).count())
        .sum();
    let reconnects: u64 = logs.iter().map(|l| l.connected.saturating_sub(1)).sum();
    let hit = in_flight_at_kills.iter().filter(|n| **n > 0).count();
    println!(
        "chaos: seed {seed}: {kills} kills ({hit} with messages in flight, {} in flight in all), {total} messages \
         in {} conversations stored once and seen once by {} clients, {reconnects} reconnects, {replayed_own} own \
         messages replayed after a lost ack, {:.1} s",
        in_flight_at_kills.iter().sum::<u64>(),
        stored.len(),
        cast.len(),
        started.elapsed().as_secs_f64(),
    );
    assert!(total >= kills * 5, "seed {seed}: too little traffic to mean anything: {total} messages");
}

/// One connected customer or agent.
struct Member {
    name: String,
    role: Role,
    client: Client,
    events: Option<Events>,
    conversations: Vec<ConversationId>,
    progress: Arc<watch::Sender<Progress>>,
}

/// What a reader publishes while it runs.
#[derive(Debug, Default, Clone)]
struct Progress {
    /// `Connected` events so far.
    connected: u64,
    /// Per conversation, the highest `seq` up to which every message was seen.
    contiguous: BTreeMap<ConversationId, u64>,
}

/// What a reader collected.
#[derive(Debug, Default)]
struct Log {
    messages: Vec<ChatMessage>,
    acks: Vec<ChatAck>,
    failed: Vec<String>,
    gaps: usize,
    connected: u64,
}

/// A message a sender queued.
#[derive(Debug, Clone)]
struct Sent {
    client_message_id: ClientMessageId,
    conversation_id: ConversationId,
    text: String,
}

/// Queued and acknowledged messages, for the number in flight at a kill.
#[derive(Debug)]
struct Counters {
    /// Watched, so that a kill can follow a send.
    queued: watch::Sender<u64>,
    acked: AtomicU64,
}

impl Default for Counters {
    fn default() -> Self {
        Self { queued: watch::channel(0).0, acked: AtomicU64::new(0) }
    }
}

impl Counters {
    fn in_flight(&self) -> u64 {
        self.queued.borrow().saturating_sub(self.acked.load(Ordering::SeqCst))
    }
}

/// Agents in the pool, then customers one by one, each assigned an agent.
async fn assemble(server: &Server, rng: &mut StdRng) -> Vec<Member> {
    let mut cast = Vec::new();
    for n in 1..=AGENTS {
        let (client, mut events) = start_client(server, &format!("agent-{n}"), Role::Agent, rng);
        until(&mut events, |e| matches!(e, Event::State(ConnectionState::Connected)).then_some(())).await;
        client.set_available(true).await.expect("available");
        until(&mut events, |e| {
            matches!(e, Event::Message(m) if matches!(m.message, ServerMessage::AgentStatus(_))).then_some(())
        })
        .await;
        cast.push(member(format!("agent-{n}"), Role::Agent, client, events));
    }
    for n in 1..=CUSTOMERS {
        let name = format!("cust-{n}");
        let (client, mut events) = start_client(server, &name, Role::Customer, rng);
        until(&mut events, |e| matches!(e, Event::State(ConnectionState::Connected)).then_some(())).await;
        client.open(Default::default()).await.expect("open");
        let id = common::opened(&mut events).await;
        let agent = until(&mut events, |e| match e {
            Event::Message(m) => match &m.message {
                ServerMessage::AgentAssigned(a) => Some(a.agent.id.to_string()),
                _ => None,
            },
            _ => None,
        })
        .await;
        let serving = cast.iter_mut().find(|m: &&mut Member| m.name == agent).expect("an agent of this test");
        serving.conversations.push(id.clone());
        let mut customer = member(name, Role::Customer, client, events);
        customer.conversations.push(id);
        cast.push(customer);
    }
    cast
}

fn member(name: String, role: Role, client: Client, events: Events) -> Member {
    let progress = Arc::new(watch::channel(Progress { connected: 1, ..Progress::default() }).0);
    Member { name, role, client, events: Some(events), conversations: Vec::new(), progress }
}

/// A client with a seeded session and a short backoff: the contract's 1 s
/// base and 30 s cap would spend minutes of a dozen kills waiting.
fn start_client(server: &Server, name: &str, role: Role, rng: &mut StdRng) -> (Client, Events) {
    let mut config = server.config(name, role);
    config.session.seed = rng.random();
    config.session.backoff = Backoff::with(50, 1_000, 30_000, rng.random());
    connect(config).expect("connect")
}

/// Reads a client's events until it stops, publishing its progress.
async fn read(mut events: Events, progress: Arc<watch::Sender<Progress>>, counters: Arc<Counters>) -> Log {
    let mut log = Log { connected: 1, ..Log::default() };
    while let Some(event) = events.next().await {
        match event {
            Event::State(ConnectionState::Connected) => {
                log.connected += 1;
                progress.send_modify(|p| p.connected += 1);
            }
            Event::Message(envelope) => {
                if let ServerMessage::ChatMessage(message) = envelope.message {
                    see(&progress, &message.conversation_id, message.seq.get());
                    log.messages.push(message);
                }
            }
            Event::Sent(ack) => {
                counters.acked.fetch_add(1, Ordering::SeqCst);
                see(&progress, &ack.conversation_id, ack.seq.get());
                log.acks.push(ack);
            }
            Event::Failed { client_message_id, error } => log.failed.push(format!("{client_message_id}: {error:?}")),
            Event::Dropped { client_message_id } => log.failed.push(format!("{client_message_id}: dropped")),
            Event::Gap { .. } => log.gaps += 1,
            _ => {}
        }
    }
    log
}

/// Records that `seq` was seen; the session forwards each once and in order,
/// so a step forward by more than one is left for the checks to report.
fn see(progress: &watch::Sender<Progress>, conversation: &ConversationId, seq: u64) {
    progress.send_modify(|p| {
        let contiguous = p.contiguous.entry(conversation.clone()).or_default();
        if seq == *contiguous + 1 {
            *contiguous = seq;
        }
    });
}

/// Sends at a modest random pace until told to stop; returns what it queued.
async fn send(
    client: Client,
    name: String,
    conversations: Vec<ConversationId>,
    mut rng: StdRng,
    mut stop: watch::Receiver<bool>,
    counters: Arc<Counters>,
) -> Vec<Sent> {
    let mut sent = Vec::new();
    loop {
        let pause = Duration::from_millis(rng.random_range(150..600));
        tokio::select! {
            _ = stop.changed() => return sent,
            () = tokio::time::sleep(pause) => {}
        }
        let conversation = conversations[rng.random_range(0..conversations.len())].clone();
        let text = format!("{name} #{}", sent.len() + 1);
        let client_message_id = client.send_chat(&conversation, &text).await.expect("queued (the outbox has room)");
        counters.queued.send_modify(|n| *n += 1);
        sent.push(Sent { client_message_id, conversation_id: conversation, text });
    }
}

/// Every stored message of a conversation, page by page.
async fn history(server: &Server, user: &str, id: &ConversationId) -> Vec<ChatMessage> {
    let token =
        petchat_client::mint(SECRET, &UserId::new(user).expect("id"), Role::Customer, user, Duration::from_secs(600));
    let mut messages: Vec<ChatMessage> = Vec::new();
    loop {
        let after = messages.last().map_or(0, |m| m.seq.get());
        let path = format!("/v1/conversations/{id}/messages?afterSeq={after}&limit=100");
        let page: HistoryPage = serde_json::from_str(&get(server.port, &path, &token).await).expect("a history page");
        messages.extend(page.messages);
        if !page.has_more {
            return messages;
        }
    }
}

/// The body of a GET with a Bearer token. HTTP/1.0, so that the body ends
/// where the connection does (never chunked).
async fn get(port: u16, path: &str, token: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response)).await.expect("in time").expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(value.trim().parse().unwrap_or_else(|_| panic!("{name} must be a number, not {value:?}")))
}
