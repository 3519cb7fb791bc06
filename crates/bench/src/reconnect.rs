//! `reconnect`: N customers, each in a conversation of its own, lose their
//! connections at once (a network blip, a load balancer restarted); while they
//! are away their agents send M messages into every conversation; then all
//! come back at once (on a cluster, each to another node than before) and join
//! with `afterSeq`. Measures the time until every client has rejoined
//! (`session.ready`) and caught up (every missed message received), and
//! checks that nothing was lost or repeated and that live traffic flows again.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::SinkExt;
use petchat_protocol::Role;
use serde::Serialize;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::conn::{self, Frame, Ws};
use crate::progress::Progress;
use crate::stats::{self, Latency};
use crate::target::Target;

/// Customers connecting and opening at once while the scenario is set up.
const SETUP_IN_FLIGHT: usize = 64;
/// Customers in their handshake at once when they come back: a herd, but one
/// that fits the server's handshake slots (`--max-handshakes`, 1,024).
const RETURN_IN_FLIGHT: usize = 512;
/// How long a phase may take before the run gives up on the stragglers.
const PHASE_TIMEOUT: Duration = Duration::from_secs(240);
/// How long the live message after the resume may take to arrive everywhere.
const LIVE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connection attempts per customer coming back, and the pause between two.
const CONNECT_ATTEMPTS: u32 = 50;
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// What one reconnect run measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ReconnectResult {
    /// Customers that dropped and came back.
    pub(crate) clients: usize,
    /// Agents holding their conversations.
    pub(crate) agents: usize,
    /// Messages each customer missed while away.
    pub(crate) missed_per_client: usize,
    /// Nodes the customers came back through.
    pub(crate) nodes: usize,
    /// From the moment all come back to the last `session.ready`, in seconds.
    pub(crate) seconds_to_all_ready: f64,
    /// From the moment all come back to the last customer holding every missed message.
    pub(crate) seconds_to_all_caught_up: f64,
    /// Each customer's return → `session.ready`.
    pub(crate) ready: Latency,
    /// Each customer's return → its last missed message.
    pub(crate) caught_up: Latency,
    /// Connection attempts refused or failed while coming back (each retried after 100 ms).
    pub(crate) retries: u64,
    /// Messages (missed, and the live one after the resume) that never arrived.
    pub(crate) lost: u64,
    /// Messages that arrived twice.
    pub(crate) duplicated: u64,
    /// The server's CPU from the return to the last catch-up, in seconds
    /// (on a cluster: the nodes, PostgreSQL and Redis).
    pub(crate) server_cpu_seconds: f64,
}

/// Where the run is; every customer follows it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Setup,
    Drop,
    Return(Instant),
    End,
}

/// What a customer tells the run.
enum Event {
    Opened { conversation: String, agent: String },
    Primed,
    Dropped,
    CaughtUp,
    Live,
}

/// What a customer measured.
struct Outcome {
    ready: Duration,
    caught_up: Option<Duration>,
    retries: u64,
    lost: u64,
    duplicated: u64,
}

/// The customer's part after the setup: its conversation and where it goes.
#[derive(Clone)]
struct Plan {
    user: String,
    first: SocketAddr,
    back: SocketAddr,
    sources: (IpAddr, IpAddr),
    missed: u64,
}

/// Runs the scenario against `target`.
pub(crate) async fn run(
    target: &Target,
    clients: usize,
    agents: usize,
    missed: usize,
    progress: &Progress,
) -> Result<ReconnectResult> {
    let run = format!("{:x}", conn::wall_micros());
    let nodes = &target.nodes;
    let name = target.kind.name();
    let agent_source = conn::fresh_source_address();
    let bar = progress.bar(agents as u64, &format!("reconnect {name}: agents"));
    let mut rounds = Vec::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    for k in 0..agents {
        let mut ws =
            conn::connect(nodes[k % nodes.len()], agent_source, &format!("agent-{run}-{k}"), Role::Agent).await?;
        conn::send(&mut ws, "agent.status", json!({"available": true})).await?;
        while conn::next_frame(&mut ws).await?.kind != "agent.status" {}
        let (round_tx, round_rx) = mpsc::unbounded_channel();
        tokio::spawn(agent(ws, round_rx, done_tx.clone()));
        rounds.push(round_tx);
        bar.inc(1);
    }
    bar.finish_and_clear();

    let (phase_tx, phase_rx) = watch::channel(Phase::Setup);
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let sources = (conn::fresh_source_address(), conn::fresh_source_address());
    let setup = Arc::new(Semaphore::new(SETUP_IN_FLIGHT));
    let back = Arc::new(Semaphore::new(RETURN_IN_FLIGHT));
    let mut customers = JoinSet::new();
    for i in 0..clients {
        let plan = Plan {
            user: format!("customer-{run}-{i}"),
            first: nodes[i % nodes.len()],
            back: nodes[(i + 1) % nodes.len()],
            sources,
            missed: missed as u64,
        };
        let permits = (setup.clone(), back.clone());
        customers.spawn(customer(plan, permits, events_tx.clone(), phase_rx.clone()));
    }
    drop(events_tx);

    // Every customer has a conversation, and every agent knows which are its.
    let bar = progress.bar(clients as u64, &format!("reconnect {name}: opening"));
    let mut by_agent: BTreeMap<String, Vec<String>> = BTreeMap::new();
    wait(&mut events, &mut customers, clients, PHASE_TIMEOUT, "opened", |event| match event {
        Event::Opened { conversation, agent } => {
            by_agent.entry(agent).or_default().push(conversation);
            bar.inc(1);
            true
        }
        _ => false,
    })
    .await?;
    bar.finish_and_clear();
    let mut assignments = Vec::new();
    for k in 0..agents {
        assignments.push(Arc::new(by_agent.remove(&format!("agent-{run}-{k}")).unwrap_or_default()));
    }
    if !by_agent.is_empty() {
        bail!("conversations were given to agents of no one: {:?}", by_agent.keys());
    }
    let round = |seq: u64| -> Result<usize> {
        let mut busy = 0;
        for (tx, conversations) in rounds.iter().zip(&assignments) {
            if !conversations.is_empty() {
                tx.send(Round { seq, conversations: conversations.clone() }).context("an agent stopped")?;
                busy += 1;
            }
        }
        Ok(busy)
    };

    // Message 1 reaches every customer live; then they all drop.
    let busy = round(1)?;
    wait_rounds(&mut done_rx, busy, 1).await?;
    wait(&mut events, &mut customers, clients, PHASE_TIMEOUT, "primed", |e| matches!(e, Event::Primed)).await?;
    phase_tx.send(Phase::Drop)?;
    wait(&mut events, &mut customers, clients, PHASE_TIMEOUT, "dropped", |e| matches!(e, Event::Dropped)).await?;

    // Messages 2..=missed+1 are stored while nobody listens.
    let timer = progress.timer(Duration::from_secs(missed as u64), &format!("reconnect {name}: away"));
    for seq in 2..=missed as u64 + 1 {
        let busy = round(seq)?;
        wait_rounds(&mut done_rx, busy, seq).await?;
    }
    timer.finish_and_clear();

    // Everyone comes back at once.
    let cpu = target.cpu_seconds_reader();
    let cpu_before = cpu()?;
    let back_at = Instant::now();
    phase_tx.send(Phase::Return(back_at))?;
    let bar = progress.bar(clients as u64, &format!("reconnect {name}: catching up"));
    let caught_up = wait(&mut events, &mut customers, clients, PHASE_TIMEOUT, "caught up", |e| {
        let is = matches!(e, Event::CaughtUp);
        if is {
            bar.inc(1);
        }
        is
    })
    .await;
    let last_caught_up = back_at.elapsed();
    let server_cpu_seconds = cpu()? - cpu_before;
    bar.finish_and_clear();
    if let Err(error) = &caught_up {
        eprintln!("reconnect {name}: {error:#}; counting the rest as lost");
    }

    // And live traffic flows on the new connections.
    let live = missed as u64 + 2;
    let busy = round(live)?;
    wait_rounds(&mut done_rx, busy, live).await?;
    let _ = wait(&mut events, &mut customers, clients, LIVE_TIMEOUT, "live", |e| matches!(e, Event::Live)).await;
    phase_tx.send(Phase::End)?;

    let (mut ready, mut caught) = (stats::histogram(), stats::histogram());
    let (mut retries, mut lost, mut duplicated) = (0, 0, 0);
    let mut last_ready = Duration::ZERO;
    while let Some(outcome) = customers.join_next().await {
        let outcome = outcome??;
        ready.saturating_record(outcome.ready.as_micros() as u64);
        last_ready = last_ready.max(outcome.ready);
        if let Some(at) = outcome.caught_up {
            caught.saturating_record(at.as_micros() as u64);
        }
        retries += outcome.retries;
        lost += outcome.lost;
        duplicated += outcome.duplicated;
    }
    Ok(ReconnectResult {
        clients,
        agents,
        missed_per_client: missed,
        nodes: nodes.len(),
        seconds_to_all_ready: last_ready.as_secs_f64(),
        seconds_to_all_caught_up: if caught_up.is_ok() { last_caught_up.as_secs_f64() } else { f64::NAN },
        ready: Latency::of(&ready),
        caught_up: Latency::of(&caught),
        retries,
        lost,
        duplicated,
        server_cpu_seconds,
    })
}

/// Waits for `count` events that `matches` accepts, failing at the first
/// customer that fails, or after `timeout`.
async fn wait(
    events: &mut mpsc::UnboundedReceiver<Event>,
    customers: &mut JoinSet<Result<Outcome>>,
    count: usize,
    timeout: Duration,
    what: &str,
    mut matches: impl FnMut(Event) -> bool,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen = 0;
    while seen < count {
        tokio::select! {
            event = events.recv() => {
                if matches(event.context("every customer stopped")?) {
                    seen += 1;
                }
            }
            Some(finished) = customers.join_next() => {
                finished?.context("a customer failed")?;
                bail!("a customer stopped early");
            }
            _ = tokio::time::sleep_until(deadline) => bail!("{seen} of {count} customers {what} within {timeout:?}"),
        }
    }
    Ok(())
}

/// Waits until `busy` agents have had every message of round `seq` acked.
async fn wait_rounds(done: &mut mpsc::UnboundedReceiver<Result<u64>>, busy: usize, seq: u64) -> Result<()> {
    for _ in 0..busy {
        let acked = tokio::time::timeout(PHASE_TIMEOUT, done.recv())
            .await
            .with_context(|| format!("round {seq} not acked within {PHASE_TIMEOUT:?}"))?
            .context("every agent stopped")??;
        if acked != seq {
            bail!("an agent finished round {acked} during round {seq}");
        }
    }
    Ok(())
}

/// One message from an agent into each of its conversations, all expected at `seq`.
struct Round {
    seq: u64,
    conversations: Arc<Vec<String>>,
}

/// An agent: sends each round into its conversations and reports when every
/// message is acked (at the round's `seq`); reads everything else away.
async fn agent(mut ws: Ws, mut rounds: mpsc::UnboundedReceiver<Round>, done: mpsc::UnboundedSender<Result<u64>>) {
    let mut current: Option<(u64, usize)> = None;
    loop {
        tokio::select! {
            round = rounds.recv(), if current.is_none() => {
                let Some(round) = round else { return };
                let sent = async {
                    for (index, conversation) in round.conversations.iter().enumerate() {
                        let key = format!("{:08x}-0000-4000-8000-{:012x}", round.seq, index);
                        let message = json!({"type": "chat.send", "data": {
                            "conversationId": conversation, "clientMessageId": key, "text": format!("reconnect {}", round.seq)}});
                        ws.feed(Message::Text(Utf8Bytes::from(message.to_string()))).await?;
                    }
                    ws.flush().await
                };
                if let Err(error) = sent.await {
                    let _ = done.send(Err(error.into()));
                    return;
                }
                current = Some((round.seq, round.conversations.len()));
            }
            frame = conn::next_frame(&mut ws) => {
                let frame = match frame {
                    Ok(frame) => frame,
                    Err(error) => { let _ = done.send(Err(error)); return; }
                };
                match (frame.kind.as_str(), current.as_mut()) {
                    ("chat.ack", Some((seq, left))) => {
                        if frame.data["seq"].as_u64() != Some(*seq) {
                            let _ = done.send(Err(anyhow::anyhow!("acked at seq {} in round {seq}", frame.data["seq"])));
                            return;
                        }
                        *left -= 1;
                        if *left == 0 {
                            let _ = done.send(Ok(*seq));
                            current = None;
                        }
                    }
                    ("error", _) => {
                        let _ = done.send(Err(anyhow::anyhow!("an agent got an error: {}", frame.data)));
                        return;
                    }
                    _ => {}
                }
            }
        }
    }
}

/// One customer through the run.
async fn customer(
    plan: Plan,
    (setup, back): (Arc<Semaphore>, Arc<Semaphore>),
    events: mpsc::UnboundedSender<Event>,
    mut phase: watch::Receiver<Phase>,
) -> Result<Outcome> {
    let permit = setup.acquire().await?;
    let mut ws = conn::connect(plan.first, plan.sources.0, &plan.user, Role::Customer).await?;
    conn::send(&mut ws, "conversation.open", json!({"topic": "reconnect"})).await?;
    let assigned = until(&mut ws, Duration::from_secs(30), |f| f.kind == "agent.assigned").await?;
    drop(permit);
    let conversation = assigned.data["conversationId"].as_str().context("a conversation id")?.to_owned();
    let agent = assigned.data["agent"]["id"].as_str().context("an agent id")?.to_owned();
    let _ = events.send(Event::Opened { conversation: conversation.clone(), agent: agent.clone() });
    let is_seq = |frame: &Frame, seq: u64| {
        frame.kind == "chat.message" && frame.data["conversationId"] == conversation && frame.data["seq"] == seq
    };
    // Message 1 comes once every customer has opened, which may take a while.
    until(&mut ws, PHASE_TIMEOUT, |f| is_seq(f, 1)).await.with_context(|| {
        format!("{} in {conversation} through {} waited for message 1 of {agent}", plan.user, plan.first)
    })?;
    let _ = events.send(Event::Primed);
    read_until_phase(&mut ws, &mut phase, |p| p == Phase::Drop).await?;
    // Gone without a close frame, as a lost network would leave it.
    drop(ws);
    let _ = events.send(Event::Dropped);
    phase.wait_for(|p| matches!(p, Phase::Return(_))).await?;
    let Phase::Return(back_at) = *phase.borrow() else { unreachable!("waited for it") };

    let permit = back.acquire().await?;
    let mut retries = 0;
    let mut ws = loop {
        match conn::connect(plan.back, plan.sources.1, &plan.user, Role::Customer).await {
            Ok(ws) => break ws,
            Err(error) if retries + 1 >= CONNECT_ATTEMPTS as u64 => return Err(error.context("coming back")),
            Err(_) => {
                retries += 1;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    };
    drop(permit);
    let ready = back_at.elapsed();
    conn::send(&mut ws, "conversation.join", json!({"conversationId": conversation, "afterSeq": 1})).await?;
    let live = plan.missed + 2;
    let mut received: BTreeSet<u64> = BTreeSet::new();
    let (mut duplicated, mut caught_up) = (0, None);
    loop {
        let frame = tokio::select! {
            frame = conn::next_frame(&mut ws) => frame?,
            _ = phase.wait_for(|p| *p == Phase::End) => break,
        };
        match frame.kind.as_str() {
            "chat.message" if frame.data["conversationId"] == conversation => {
                let seq = frame.data["seq"].as_u64().context("a seq")?;
                if !received.insert(seq) {
                    duplicated += 1;
                }
                if caught_up.is_none() && (2..live).all(|s| received.contains(&s)) {
                    caught_up = Some(back_at.elapsed());
                    let _ = events.send(Event::CaughtUp);
                }
                if seq == live {
                    let _ = events.send(Event::Live);
                }
            }
            "conversation.joined" if frame.data["hasMore"] == true => bail!("more missed than one replay holds"),
            "error" => bail!("the server answered with an error: {}", frame.data),
            _ => {}
        }
    }
    let lost = (2..=live).filter(|s| !received.contains(s)).count() as u64;
    Ok(Outcome { ready, caught_up, retries, lost, duplicated })
}

/// Reads frames (answering pings) until `phase` satisfies `reached`.
async fn read_until_phase(
    ws: &mut Ws,
    phase: &mut watch::Receiver<Phase>,
    reached: impl Fn(Phase) -> bool,
) -> Result<()> {
    loop {
        tokio::select! {
            result = phase.wait_for(|p| reached(*p)) => { result?; return Ok(()); }
            frame = conn::next_frame(ws) => { frame?; }
        }
    }
}

/// Reads frames until one that `wanted` accepts, for `timeout` at most.
async fn until(ws: &mut Ws, timeout: Duration, wanted: impl Fn(&Frame) -> bool) -> Result<Frame> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let frame = tokio::time::timeout_at(deadline, conn::next_frame(ws))
            .await
            .with_context(|| format!("nothing awaited within {timeout:?}"))??;
        if frame.kind == "error" {
            bail!("the server answered with an error: {}", frame.data);
        }
        if wanted(&frame) {
            return Ok(frame);
        }
    }
}
