//! `chat`: P customer–agent conversations, both sides sending as fast as the
//! server acks (or at a fixed total rate), with automatic delivered receipts.
//! Measures relayed messages per second, ack latency (send → `chat.ack` at
//! the sender) and delivery latency (send → `chat.message` at the other side,
//! from the sender's wall-clock timestamp in the text).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use petchat_protocol::Role;
use serde::Serialize;
use serde_json::json;

use crate::conn::{self, Ws};
use crate::engines::EngineCpu;
use crate::progress::Progress;
use crate::stats::{self, Latency};
use crate::target::{self, Target};

/// Messages one connection may have waiting for their ack at a fixed rate.
const MAX_IN_FLIGHT: usize = 64;
/// Measurements start after this much warm-up.
const WARM_UP: Duration = Duration::from_secs(1);
/// After the last send, how long at most to wait for acks and messages still on their way.
const DRAIN: Duration = Duration::from_secs(3);
/// A side with nothing in flight leaves once it has heard nothing for this long.
const QUIET: Duration = Duration::from_millis(300);
/// Connection attempts in flight while setting up.
const IN_FLIGHT: usize = 32;

/// What one chat run measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ChatResult {
    /// Conversations (each a customer and an agent connection).
    pub(crate) pairs: usize,
    /// The offered total rate, messages per second; none when each side sends as fast as acked.
    pub(crate) offered_per_second: Option<f64>,
    /// The measured window, in seconds.
    pub(crate) seconds: f64,
    /// Messages acked in the window.
    pub(crate) acked: u64,
    /// `chat.message`s delivered to the other side in the window.
    pub(crate) relayed: u64,
    /// `relayed / seconds`.
    pub(crate) relayed_per_second: f64,
    /// Send → `chat.ack`.
    pub(crate) ack: Latency,
    /// Send → `chat.message` at the other member.
    pub(crate) delivery: Latency,
    /// Messages acked (over the whole run) that never reached the other side.
    pub(crate) lost: u64,
    /// The server's CPU in the window, percent of one core (all its threads).
    pub(crate) server_cpu_percent: f64,
    /// Of `server_cpu_percent`, what the cluster's PostgreSQL took (zero for one process).
    pub(crate) postgres_cpu_percent: f64,
    /// Of `server_cpu_percent`, what the cluster's Redis took (zero for one process).
    pub(crate) redis_cpu_percent: f64,
    /// The load generator's own CPU in the window, percent of one core: on a
    /// machine it shares with the server, what it takes the server cannot use.
    pub(crate) bench_cpu_percent: f64,
}

/// Runs the scenario against `target`.
pub(crate) async fn run(
    target: &Target,
    pairs: usize,
    duration: Duration,
    rate: Option<f64>,
    progress: &Progress,
) -> Result<ChatResult> {
    let run = format!("{:x}", conn::wall_micros());
    let source = conn::fresh_source_address();
    let nodes = &target.nodes;
    let bar = progress.bar(pairs as u64 * 2, &format!("chat {}: {pairs} conversations", target.kind.name()));
    // Agent i is on node i mod n, and its customer on the next node: on a
    // cluster every conversation crosses nodes.
    let agent_node = |i: usize| nodes[i % nodes.len()];
    let customer_node = |i: usize| nodes[(i + 1) % nodes.len()];
    let agent_prefix = format!("agent-{run}");
    let mut agents = connect_all(agent_node, source, pairs, &agent_prefix, Role::Agent, &bar).await?;
    let customers = connect_all(customer_node, source, pairs, &format!("customer-{run}"), Role::Customer, &bar).await?;
    // Node by node, its agents become available and then the customers meant
    // for them open: the fewest-open rule gives each new conversation an
    // agent with none yet, which is one of this node's.
    let mut customers: Vec<Option<Ws>> = customers.into_iter().map(Some).collect();
    let mut opened = Vec::new();
    for node in 0..nodes.len() {
        let mine = || (node..pairs).step_by(nodes.len());
        for i in mine() {
            conn::send(&mut agents[i], "agent.status", json!({"available": true})).await?;
            until(&mut agents[i], "agent.status").await?;
        }
        let mut open = Vec::new();
        for i in mine() {
            let mut ws = customers[i].take().context("each customer opens once")?;
            let agent_prefix = &agent_prefix;
            open.push(async move {
                conn::send(&mut ws, "conversation.open", json!({"topic": "bench"})).await?;
                let assigned = until(&mut ws, "agent.assigned").await?;
                let id = assigned.data["conversationId"].as_str().context("a conversation id")?.to_owned();
                let agent = assigned.data["agent"]["id"].as_str().context("an agent id")?;
                let index: usize = agent
                    .strip_prefix(agent_prefix.as_str())
                    .and_then(|rest| rest.strip_prefix('-'))
                    .and_then(|i| i.parse().ok())
                    .with_context(|| format!("an agent of this run: {agent}"))?;
                if index % nodes.len() != node {
                    anyhow::bail!("customer {i} got agent {index}, not one of node {node}'s");
                }
                anyhow::Ok((ws, id))
            });
        }
        opened.extend(futures_util::future::try_join_all(open).await?);
    }
    let customers = opened;
    let agents_ready = agents;
    bar.finish_and_clear();

    let start = Instant::now() + Duration::from_millis(100);
    let window = (start + WARM_UP, start + WARM_UP + duration);
    let interval = rate.map(|r| Duration::from_secs_f64(2.0 * pairs as f64 / r));
    let timer = progress.timer(WARM_UP + duration + DRAIN, &format!("chat {}: sending", target.kind.name()));
    let mut tasks = Vec::new();
    for (index, (ws, id)) in customers.into_iter().enumerate() {
        let phase = (index * 2) as f64 / (pairs * 2) as f64;
        tasks.push(tokio::spawn(side(ws, vec![id], index * 2, start, window, interval, phase)));
    }
    for (index, ws) in agents_ready.into_iter().enumerate() {
        let phase = (index * 2 + 1) as f64 / (pairs * 2) as f64;
        tasks.push(tokio::spawn(side(ws, Vec::new(), index * 2 + 1, start, window, interval, phase)));
    }
    let cpu = tokio::spawn(cpu_in_window(target.cpu_seconds_reader(), window));
    let engine_cpu = tokio::spawn(engine_cpu_in_window(target.engine_cpu_seconds_reader(), window));
    let mut total = Tally::default();
    for task in tasks {
        total.merge(task.await??);
    }
    timer.finish_and_clear();
    let (server_cpu, bench_cpu) = cpu.await??;
    let engine_cpu = engine_cpu.await??;
    let seconds = duration.as_secs_f64();
    let mut lost_keys: Vec<(&(String, u64), &usize)> =
        total.acked.iter().filter(|(key, _)| !total.relayed.contains(*key)).collect();
    lost_keys.sort();
    if !lost_keys.is_empty() {
        let name = target.kind.name();
        eprintln!("chat {name}: acked but never delivered ((conversation, seq), sender): {lost_keys:?}");
    }
    let lost = lost_keys.len() as u64;
    Ok(ChatResult {
        pairs,
        offered_per_second: rate,
        seconds,
        acked: total.acked_in_window,
        relayed: total.relayed_in_window,
        relayed_per_second: total.relayed_in_window as f64 / seconds,
        ack: Latency::of(&total.ack),
        delivery: Latency::of(&total.delivery),
        lost,
        server_cpu_percent: 100.0 * server_cpu / seconds,
        postgres_cpu_percent: 100.0 * engine_cpu.postgres / seconds,
        redis_cpu_percent: 100.0 * engine_cpu.redis / seconds,
        bench_cpu_percent: 100.0 * bench_cpu / seconds,
    })
}

/// The CPU seconds the server (`server` reads them) and this process spent
/// between the window's start and end.
async fn cpu_in_window(server: impl Fn() -> Result<f64>, window: (Instant, Instant)) -> Result<(f64, f64)> {
    tokio::time::sleep_until(window.0.into()).await;
    let before = (server()?, target::cpu_seconds_of("self")?);
    tokio::time::sleep_until(window.1.into()).await;
    Ok((server()? - before.0, target::cpu_seconds_of("self")? - before.1))
}

/// The CPU seconds the cluster's engines spent in the window.
async fn engine_cpu_in_window(
    engines: impl Fn() -> Result<EngineCpu>,
    window: (Instant, Instant),
) -> Result<EngineCpu> {
    tokio::time::sleep_until(window.0.into()).await;
    let before = engines()?;
    tokio::time::sleep_until(window.1.into()).await;
    let after = engines()?;
    Ok(EngineCpu { postgres: after.postgres - before.postgres, redis: after.redis - before.redis })
}

/// Opens `count` connections as `prefix-0`, `prefix-1`…, connection i to `server(i)`.
async fn connect_all(
    server: impl Fn(usize) -> SocketAddr,
    source: std::net::IpAddr,
    count: usize,
    prefix: &str,
    role: Role,
    bar: &indicatif::ProgressBar,
) -> Result<Vec<Ws>> {
    futures_util::stream::iter(0..count)
        .map(|i| {
            let user = format!("{prefix}-{i}");
            let server = server(i);
            async move {
                let ws = conn::connect(server, source, &user, role).await;
                bar.inc(1);
                ws
            }
        })
        .buffered(IN_FLIGHT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Reads frames until one of type `kind`.
async fn until(ws: &mut Ws, kind: &str) -> Result<conn::Frame> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(30), conn::next_frame(ws))
            .await
            .with_context(|| format!("no {kind} within 30 s"))??;
        if frame.kind == kind {
            return Ok(frame);
        }
    }
}

/// One connection's counts and latencies.
struct Tally {
    /// Every acked message (with its sender: even indices are customers) and
    /// every delivered one, by conversation and seq.
    acked: HashMap<(String, u64), usize>,
    relayed: HashSet<(String, u64)>,
    acked_in_window: u64,
    relayed_in_window: u64,
    ack: Histogram<u64>,
    delivery: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            acked: HashMap::new(),
            relayed: HashSet::new(),
            acked_in_window: 0,
            relayed_in_window: 0,
            ack: stats::histogram(),
            delivery: stats::histogram(),
        }
    }
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.acked.extend(other.acked);
        self.relayed.extend(other.relayed);
        self.acked_in_window += other.acked_in_window;
        self.relayed_in_window += other.relayed_in_window;
        self.ack.add(&other.ack).expect("same bounds");
        self.delivery.add(&other.delivery).expect("same bounds");
    }
}

/// One side of conversations: sends into them (as soon as the last message
/// is acked, or every `interval`), records acks and the other side's
/// messages, and answers each message with `message.delivered`.
async fn side(
    mut ws: Ws,
    mut conversations: Vec<String>,
    index: usize,
    start: Instant,
    window: (Instant, Instant),
    interval: Option<Duration>,
    phase: f64,
) -> Result<Tally> {
    let mut tally = Tally::default();
    let mut in_flight: VecDeque<Instant> = VecDeque::new();
    // At a fixed rate, the connections take turns: each starts its interval
    // at its own phase, so the offered load is even, not a burst per interval.
    let mut next_send = start + interval.map_or(Duration::ZERO, |i| i.mul_f64(phase));
    let mut sent = 0u64;
    let stop_sending = window.1;
    let end = window.1 + DRAIN;
    let in_window = |t: Instant| t >= window.0 && t < window.1;
    let mut last_frame = Instant::now();
    loop {
        let now = Instant::now();
        let drained = now >= stop_sending && in_flight.is_empty() && now >= last_frame + QUIET;
        if now >= end || drained {
            break;
        }
        let may_send = match interval {
            None => in_flight.is_empty(),
            Some(_) => in_flight.len() < MAX_IN_FLIGHT && now >= next_send,
        };
        if may_send && now < stop_sending && !conversations.is_empty() {
            let conversation = &conversations[sent as usize % conversations.len()];
            let text = format!("{} bench message from {index}", conn::wall_micros());
            let key = format!("{:08x}-0000-4000-8000-{:012x}", index, sent);
            conn::send(
                &mut ws,
                "chat.send",
                json!({"conversationId": conversation, "clientMessageId": key, "text": text}),
            )
            .await?;
            in_flight.push_back(Instant::now());
            sent += 1;
            if let Some(interval) = interval {
                next_send += interval;
            }
            continue;
        }
        let wake = match interval {
            Some(_) if now < stop_sending && in_flight.len() < MAX_IN_FLIGHT => next_send.min(end),
            _ if now >= stop_sending && in_flight.is_empty() => (last_frame + QUIET).min(end),
            _ if now < stop_sending => stop_sending,
            _ => end,
        };
        let frame = tokio::select! {
            frame = conn::next_frame(&mut ws) => frame?,
            _ = tokio::time::sleep_until(wake.into()) => continue,
        };
        let now = Instant::now();
        last_frame = now;
        match frame.kind.as_str() {
            "chat.ack" => {
                let sent_at = in_flight.pop_front().context("an ack for nothing sent")?;
                let seq = frame.data["seq"].as_u64().context("an acked seq")?;
                let conversation = frame.data["conversationId"].as_str().unwrap_or_default().to_owned();
                tally.acked.insert((conversation, seq), index);
                if in_window(now) {
                    tally.acked_in_window += 1;
                    tally.ack.saturating_record(now.duration_since(sent_at).as_micros() as u64);
                }
            }
            "chat.message" => {
                let seq = frame.data["seq"].as_u64().context("a delivered seq")?;
                tally.relayed.insert((frame.data["conversationId"].as_str().unwrap_or_default().to_owned(), seq));
                let sent_micros: u64 = frame.data["text"]
                    .as_str()
                    .and_then(|t| t.split(' ').next())
                    .and_then(|t| t.parse().ok())
                    .context("a bench message")?;
                if in_window(now) {
                    tally.relayed_in_window += 1;
                    tally.delivery.saturating_record(conn::wall_micros().saturating_sub(sent_micros));
                }
                let receipt = json!({"conversationId": frame.data["conversationId"], "upToSeq": frame.data["seq"]});
                conn::send(&mut ws, "message.delivered", receipt).await?;
            }
            "agent.assigned" => {
                conversations.push(frame.data["conversationId"].as_str().context("a conversation id")?.to_owned());
            }
            "error" => anyhow::bail!("the server answered with an error: {}", frame.data),
            _ => {}
        }
    }
    Ok(tally)
}
