//! `fanout`: one publisher through the server API, S subscribers on one
//! topic (SPEC §11, §13), spread over worker processes from loopback source
//! addresses of their own. The publisher stamps each event with the wall
//! clock; every subscriber checks that it gets every event once and in order
//! and records publish → deliver. Measured: deliveries per second (from the
//! first publish to the last delivery), the latency percentiles, and the
//! server's RSS per subscriber. The subscribers speak petchat.v1 over the
//! WebSocket, SSE (petchat's `GET /v1/sse`) or Socket.IO (the socket-io peer),
//! as [`Transport`] says.

use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use petchat_protocol::Role;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::watch;
use tokio_tungstenite::client_async_with_config;
use tokio_tungstenite::tungstenite::Message;

use crate::conn;
use crate::progress::Progress;
use crate::stats::{Latency, histogram};
use crate::target::{API_KEY, Target};

/// The topic every run publishes to (a fresh server per run: seqs from 1).
pub(crate) const TOPIC: &str = "bench:fanout";

/// Subscribers per worker process.
const PER_WORKER: usize = 7_000;

/// Subscriptions being set up at once per worker.
const IN_FLIGHT: usize = 64;

/// Latencies above this (the histogram's bound) count as this.
const MAX_LATENCY_MICROS: u64 = 60_000_000;

/// How the subscribers listen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Transport {
    /// petchat.v1 over the WebSocket: `topic.subscribe`, then `topic.event`s.
    Ws,
    /// Server-sent events: `GET /v1/sse?topics=`.
    Sse,
    /// Engine.IO v4 / Socket.IO v5 over the WebSocket (benches/peers/socket-io/README.md).
    Socketio,
}

impl Transport {
    /// The name in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Transport::Ws => "WebSocket",
            Transport::Sse => "SSE",
            Transport::Socketio => "Socket.IO",
        }
    }
}

/// What one fanout run measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FanoutResult {
    /// How the subscribers listened.
    pub(crate) transport: Transport,
    /// Subscribers on the topic.
    pub(crate) subscribers: usize,
    /// Events published.
    pub(crate) events: usize,
    /// The publish rate asked for (`None`: as fast as the API answers).
    pub(crate) offered_per_second: Option<f64>,
    /// Publish requests in flight at once (when not paced).
    pub(crate) publishers: usize,
    /// Events delivered, over every subscriber.
    pub(crate) deliveries: u64,
    /// Deliveries per second, from the first publish to the last delivery.
    pub(crate) deliveries_per_second: f64,
    /// Events a subscriber never got (subscribers × events − deliveries).
    pub(crate) lost: u64,
    /// Events that came twice or out of order.
    pub(crate) disordered: u64,
    /// Subscribers the server closed during the run.
    pub(crate) closed_by_server: u64,
    /// Publishes per second the API answered.
    pub(crate) published_per_second: f64,
    /// Publish (stamped just before the request) → delivery to a subscriber.
    pub(crate) latency: Latency,
    /// Server RSS before the subscribers, in bytes.
    pub(crate) rss_before_bytes: u64,
    /// Server RSS with every subscriber in, in bytes.
    pub(crate) rss_bytes: u64,
    /// (RSS with − RSS before) / subscribers.
    pub(crate) rss_per_subscriber_bytes: f64,
    /// Server CPU from the first publish to the last delivery, as a share of one core.
    pub(crate) server_cpu_percent: f64,
    /// The load generator's CPU (the workers and this process) over the same span.
    pub(crate) bench_cpu_percent: f64,
}

/// What a worker reports at the end, as one JSON line on its stdout.
#[derive(Debug, Default, Serialize, Deserialize)]
struct WorkerReport {
    /// Events its subscribers got.
    deliveries: u64,
    /// Events its subscribers never got.
    lost: u64,
    /// Events that came twice or out of order.
    disordered: u64,
    /// Subscribers the server closed.
    closed_by_server: u64,
    /// Wall-clock microseconds of the worker's last delivery.
    last_delivery_micros: u64,
    /// The worker's CPU seconds, from /proc/self/stat.
    cpu_seconds: f64,
    /// Latency histogram: (microseconds, count) of each recorded value.
    latency: Vec<(u64, u64)>,
}

/// How a run publishes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Publishing {
    /// Events published.
    pub(crate) events: usize,
    /// Requests in flight at once, as fast as the API answers them.
    pub(crate) in_flight: usize,
    /// Publishes per second instead (`None`: as fast as the API answers).
    pub(crate) rate: Option<f64>,
}

/// Runs the scenario against `target`: `subscribers` listening over `transport`.
pub(crate) async fn run(
    target: &Target,
    transport: Transport,
    subscribers: usize,
    publishing: Publishing,
    progress: &Progress,
) -> Result<FanoutResult> {
    let Publishing { events, rate, .. } = publishing;
    let label = format!("fanout {} {}", target.kind.name(), transport.name());
    let rss_before = target.rss_bytes()?;
    let workers = Workers::start(target, transport, subscribers, events, progress, &label).await?;
    tokio::time::sleep(Duration::from_millis(500)).await; // let allocations settle
    let rss = target.rss_bytes()?;

    let cpu_before = target.cpu_seconds()?;
    let bench_cpu_before = workers.cpu_seconds() + crate::target::cpu_seconds_of("self")?;
    let first_publish = conn::wall_micros();
    let started = Instant::now();
    let bar = progress.bar(events as u64, &format!("{label}: publishing"));
    publish(target.addr, publishing, &bar).await?;
    bar.finish_and_clear();
    let published_per_second = events as f64 / started.elapsed().as_secs_f64();
    // Every subscriber has every event, or the workers give up after a generous wait.
    let deadline = Duration::from_secs(30) + Duration::from_secs_f64(subscribers as f64 * events as f64 / 50_000.0);
    let reports = workers.finish(deadline).await?;
    let cpu = target.cpu_seconds()? - cpu_before;

    let mut latency = histogram();
    let mut total = WorkerReport::default();
    for report in &reports {
        for &(value, count) in &report.latency {
            latency.record_n(value.clamp(1, MAX_LATENCY_MICROS), count)?;
        }
        total.deliveries += report.deliveries;
        total.lost += report.lost;
        total.disordered += report.disordered;
        total.closed_by_server += report.closed_by_server;
        total.last_delivery_micros = total.last_delivery_micros.max(report.last_delivery_micros);
        total.cpu_seconds += report.cpu_seconds;
    }
    let span = (total.last_delivery_micros.saturating_sub(first_publish)).max(1) as f64 / 1e6;
    let bench_cpu = total.cpu_seconds + crate::target::cpu_seconds_of("self")? - bench_cpu_before;
    Ok(FanoutResult {
        transport,
        subscribers,
        events,
        offered_per_second: rate,
        publishers: publishing.in_flight,
        deliveries: total.deliveries,
        deliveries_per_second: total.deliveries as f64 / span,
        lost: total.lost,
        disordered: total.disordered,
        closed_by_server: total.closed_by_server,
        published_per_second,
        latency: Latency::of(&latency),
        rss_before_bytes: rss_before,
        rss_bytes: rss,
        rss_per_subscriber_bytes: rss.saturating_sub(rss_before) as f64 / subscribers as f64,
        server_cpu_percent: 100.0 * cpu / span,
        bench_cpu_percent: 100.0 * bench_cpu / span,
    })
}

/// Publishes events to [`TOPIC`] through `POST /v1/api/publish`, each
/// stamped with the wall clock, as `publishing` says.
async fn publish(server: SocketAddr, publishing: Publishing, bar: &indicatif::ProgressBar) -> Result<()> {
    let Publishing { events, in_flight, rate } = publishing;
    let client = reqwest::Client::builder().pool_max_idle_per_host(in_flight).build()?;
    let url = format!("http://{server}/v1/api/publish");
    let start = tokio::time::Instant::now();
    let in_flight = if rate.is_some() { events.max(1) } else { in_flight.max(1) };
    let results = futures_util::stream::iter(0..events)
        .map(|i| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                if let Some(rate) = rate {
                    tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
                }
                let body = serde_json::json!({
                    "topic": TOPIC, "event": "bench", "data": {"t": conn::wall_micros(), "i": i},
                });
                let response = client.post(&url).bearer_auth(API_KEY).json(&body).send().await?;
                if !response.status().is_success() {
                    bail!("publish {i}: {} {}", response.status(), response.text().await.unwrap_or_default());
                }
                bar.inc(1);
                anyhow::Ok(())
            }
        })
        .buffer_unordered(in_flight)
        .collect::<Vec<_>>()
        .await;
    results.into_iter().collect()
}

/// The worker processes of one run.
struct Workers {
    children: Vec<(Child, ChildStdin, tokio::io::Lines<BufReader<tokio::process::ChildStdout>>)>,
}

impl Workers {
    /// Starts workers for `subscribers` and waits until every subscriber is subscribed.
    async fn start(
        target: &Target,
        transport: Transport,
        subscribers: usize,
        events: usize,
        progress: &Progress,
        label: &str,
    ) -> Result<Workers> {
        let bar = progress.bar(subscribers as u64, &format!("{label}: subscribing"));
        let exe = std::env::current_exe()?;
        let nanos = conn::wall_micros();
        let mut children = Vec::new();
        // At least one worker per node: a cluster's subscribers spread over
        // its nodes, and the publisher uses the first.
        let workers = subscribers.div_ceil(PER_WORKER).max(target.nodes.len()).min(subscribers.max(1));
        for index in 0..workers {
            let count = subscribers / workers + usize::from(index < subscribers % workers);
            let server = target.nodes[index % target.nodes.len()];
            let mut child = Command::new(&exe)
                .args(["worker-fanout", "--server", &server.to_string(), "--transport"])
                .arg(format!("{transport:?}").to_lowercase())
                .args(["--count", &count.to_string(), "--events", &events.to_string()])
                .args(["--source", &conn::fresh_source_address().to_string()])
                .args(["--prefix", &format!("fan-{nanos}-{index}")])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .context("starting a worker")?;
            let stdin = child.stdin.take().context("worker stdin")?;
            let lines = BufReader::new(child.stdout.take().context("worker stdout")?).lines();
            children.push((child, stdin, lines));
        }
        // Each worker prints a line per 100 subscriptions and "ready" when all are in.
        for (_, _, lines) in &mut children {
            loop {
                let line = lines.next_line().await?.context("a worker exited before it was ready")?;
                if line == "ready" {
                    break;
                }
                bar.inc(line.parse().context("a worker's progress line")?);
            }
        }
        bar.finish_and_clear();
        Ok(Workers { children })
    }

    /// The workers' CPU seconds so far.
    fn cpu_seconds(&self) -> f64 {
        self.children
            .iter()
            .filter_map(|(child, _, _)| child.id())
            .filter_map(|pid| crate::target::cpu_seconds_of(&pid.to_string()).ok())
            .sum()
    }

    /// Waits for every worker's report: each sends it once all its
    /// subscribers have every event, or when told to stop after `deadline`.
    async fn finish(self, deadline: Duration) -> Result<Vec<WorkerReport>> {
        let mut reports = Vec::new();
        let until = tokio::time::Instant::now() + deadline;
        for (mut child, mut stdin, mut lines) in self.children {
            let line = match tokio::time::timeout_at(until, lines.next_line()).await {
                Ok(line) => line?,
                Err(_) => {
                    // Past the deadline: the worker reports what it has.
                    stdin.write_all(b"stop\n").await?;
                    tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await??
                }
            };
            let line = line.context("a worker exited without its report")?;
            reports.push(serde_json::from_str(&line).context("a worker's report")?);
            drop(stdin);
            let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await??;
            if !status.success() {
                bail!("a worker failed: {status}");
            }
        }
        Ok(reports)
    }
}

/// One subscriber's tally.
#[derive(Default)]
struct Tally {
    next_seq: u64,
    deliveries: u64,
    disordered: u64,
    latencies: Vec<u32>,
    last_micros: u64,
}

impl Tally {
    /// Counts one event frame (any of the transports' texts: each holds
    /// `"seq":N` once and the publisher's `"t":MICROS`).
    fn event(&mut self, text: &str) {
        let now = conn::wall_micros();
        let (Some(seq), Some(t)) = (number_after(text, "\"seq\":"), number_after(text, "\"t\":")) else {
            self.disordered += 1;
            return;
        };
        if seq != self.next_seq + 1 {
            self.disordered += 1;
        }
        self.next_seq = self.next_seq.max(seq);
        self.deliveries += 1;
        self.latencies.push(u32::try_from(now.saturating_sub(t)).unwrap_or(u32::MAX));
        self.last_micros = now;
    }
}

/// The decimal number right after the first `key` in `text`.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let rest = &text[text.find(key)? + key.len()..];
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The worker process: `count` subscribers from `source`, each subscribed
/// over `transport`; prints its progress and "ready", then its report (one
/// JSON line) once every subscriber has `events` events or stdin says stop.
pub(crate) async fn worker(
    server: SocketAddr,
    transport: Transport,
    source: IpAddr,
    count: usize,
    events: usize,
    prefix: &str,
) -> Result<()> {
    let done = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicU64::new(0));
    let all_done = Arc::new(tokio::sync::Notify::new());
    // Set once the worker is finished: every subscriber stops reading and leaves.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<Result<()>>();
    let permits = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let user = format!("{prefix}-{i}");
        let permit = permits.clone().acquire_owned().await?;
        let ready = ready_tx.clone();
        let (done, closed, all_done, mut stop) = (done.clone(), closed.clone(), all_done.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            let subscribed = Subscriber::subscribe(server, source, &user, transport).await;
            drop(permit);
            let mut subscriber = match subscribed {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return Tally::default();
                }
            };
            let _ = ready.send(Ok(()));
            drop(ready);
            let mut tally = Tally::default();
            while tally.deliveries < events as u64 {
                tokio::select! {
                    frame = subscriber.next_event() => match frame {
                        Ok(Some(text)) => tally.event(&text),
                        Ok(None) => {}
                        Err(_) => { closed.fetch_add(1, Ordering::Relaxed); break; }
                    },
                    _ = stop.wait_for(|&s| s) => break,
                }
            }
            if done.fetch_add(1, Ordering::AcqRel) + 1 == count {
                all_done.notify_one();
            }
            // Held open (answering pings) until the whole worker is finished,
            // so that a subscriber that is done does not change the others' run.
            loop {
                tokio::select! {
                    frame = subscriber.next_event() => if frame.is_err() { break },
                    _ = stop.wait_for(|&s| s) => break,
                }
            }
            tally
        }));
    }
    drop(ready_tx);
    let mut subscribed = 0usize;
    while let Some(result) = ready_rx.recv().await {
        result?;
        subscribed += 1;
        if subscribed.is_multiple_of(100) {
            println!("100");
        }
    }
    println!("{}", count % 100);
    println!("ready");

    // Every subscriber done, or the parent says stop.
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    tokio::select! {
        () = all_done.notified() => {}
        _ = stdin.next_line() => {}
    }
    stop_tx.send_replace(true);
    let mut report = WorkerReport::default();
    let mut latency = histogram();
    for task in tasks {
        let tally = tokio::time::timeout(Duration::from_secs(10), task).await.context("a subscriber hung")??;
        report.deliveries += tally.deliveries;
        report.lost += (events as u64).saturating_sub(tally.deliveries);
        report.disordered += tally.disordered;
        report.last_delivery_micros = report.last_delivery_micros.max(tally.last_micros);
        for value in tally.latencies {
            latency.record(u64::from(value).clamp(1, MAX_LATENCY_MICROS))?;
        }
    }
    report.closed_by_server = closed.load(Ordering::Relaxed);
    report.latency = latency.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect();
    report.cpu_seconds = crate::target::cpu_seconds_of("self")?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// A subscribed connection of one of the transports.
enum Subscriber {
    Ws(conn::Ws),
    Socketio(conn::Ws),
    Sse(SseStream),
}

impl Subscriber {
    /// Connects `user` from `source` and subscribes it to [`TOPIC`].
    async fn subscribe(server: SocketAddr, source: IpAddr, user: &str, transport: Transport) -> Result<Subscriber> {
        match transport {
            Transport::Ws => {
                let mut ws = conn::connect(server, source, user, Role::Customer).await?;
                conn::send(&mut ws, "topic.subscribe", serde_json::json!({"topic": TOPIC})).await?;
                loop {
                    let frame = conn::next_frame(&mut ws).await?;
                    match frame.kind.as_str() {
                        "topic.subscribed" => return Ok(Subscriber::Ws(ws)),
                        "error" => bail!("topic.subscribe refused: {}", frame.data),
                        _ => continue,
                    }
                }
            }
            Transport::Socketio => {
                let stream = conn::tcp_from(server, source).await?;
                let url = format!("ws://{server}/socket.io/?EIO=4&transport=websocket");
                let (mut ws, _) =
                    client_async_with_config(url, stream, Some(conn::ws_config())).await.context("handshake")?;
                let open = conn::next_text(&mut ws).await?;
                if !open.starts_with("0{") {
                    bail!("expected the Engine.IO open packet, got {open}");
                }
                ws.send(Message::text("40")).await?;
                let connected = conn::next_text(&mut ws).await?;
                if !connected.starts_with("40{") {
                    bail!("expected the Socket.IO CONNECT answer, got {connected}");
                }
                ws.send(Message::text(format!("421[\"subscribe\",\"{TOPIC}\"]"))).await?;
                let ack = conn::next_text(&mut ws).await?;
                if !ack.starts_with("431[{\"topic\"") {
                    bail!("expected the subscribe ACK, got {ack}");
                }
                Ok(Subscriber::Socketio(ws))
            }
            Transport::Sse => Ok(Subscriber::Sse(SseStream::open(server, source, user).await?)),
        }
    }

    /// The next frame's text if it is an event (`None` for anything else), or the connection's end.
    async fn next_event(&mut self) -> Result<Option<String>> {
        match self {
            Subscriber::Ws(ws) => match ws.next().await.context("closed")?? {
                Message::Text(text) if text[..text.len().min(40)].contains("\"topic.event\"") => {
                    Ok(Some(text.to_string()))
                }
                Message::Close(_) => bail!("closed by the server"),
                _ => Ok(None),
            },
            Subscriber::Socketio(ws) => {
                let text = conn::next_text(ws).await?;
                if text == "2" {
                    ws.send(Message::text("3")).await?; // Engine.IO ping → pong
                    return Ok(None);
                }
                Ok(text.starts_with("42[\"topic.event\"").then(|| text.to_string()))
            }
            Subscriber::Sse(stream) => stream.next_data().await.map(Some),
        }
    }
}

/// An SSE stream on HTTP/1.1 with a chunked body, read by hand: the
/// `data:` lines of its events.
struct SseStream {
    reader: BufReader<TcpStream>,
    /// Decoded body bytes not yet split into lines.
    pending: Vec<u8>,
    /// Bytes left in the current chunk.
    chunk_left: usize,
}

impl SseStream {
    /// `GET /v1/sse?topics=TOPIC` with a Bearer token; returns once the 200 and its headers are in.
    async fn open(server: SocketAddr, source: IpAddr, user: &str) -> Result<SseStream> {
        let mut stream = conn::tcp_from(server, source).await?;
        let token = conn::token(user, Role::Customer)?;
        let request = format!(
            "GET /v1/sse?topics={TOPIC} HTTP/1.1\r\nHost: {server}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut reader = BufReader::with_capacity(4096, stream);
        let mut status = String::new();
        reader.read_line(&mut status).await?;
        if !status.starts_with("HTTP/1.1 200") {
            bail!("GET /v1/sse: {}", status.trim());
        }
        let mut chunked = false;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).await? == 0 {
                bail!("the stream ended in its headers");
            }
            if header == "\r\n" {
                break;
            }
            chunked |= header.to_ascii_lowercase().starts_with("transfer-encoding: chunked");
        }
        if !chunked {
            bail!("expected a chunked body");
        }
        Ok(SseStream { reader, pending: Vec::new(), chunk_left: 0 })
    }

    /// The next `data:` line of the stream.
    async fn next_data(&mut self) -> Result<String> {
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                if let Some(data) = line.strip_prefix(b"data: ") {
                    return Ok(String::from_utf8_lossy(data).trim_end().to_owned());
                }
                continue;
            }
            self.fill().await?;
        }
    }

    /// Reads more of the body into `pending`, taking the chunk framing off.
    async fn fill(&mut self) -> Result<()> {
        if self.chunk_left == 0 {
            let mut size = String::new();
            if self.reader.read_line(&mut size).await? == 0 {
                bail!("the stream ended");
            }
            if size.trim().is_empty() {
                // The CRLF that ends the previous chunk.
                size.clear();
                self.reader.read_line(&mut size).await?;
            }
            let size = usize::from_str_radix(size.trim(), 16).context("a chunk size")?;
            if size == 0 {
                bail!("the stream ended");
            }
            self.chunk_left = size;
        }
        let mut buffer = [0u8; 2048];
        let want = self.chunk_left.min(buffer.len());
        let n = self.reader.read(&mut buffer[..want]).await?;
        if n == 0 {
            bail!("the stream ended");
        }
        self.chunk_left -= n;
        self.pending.extend_from_slice(&buffer[..n]);
        Ok(())
    }
}
