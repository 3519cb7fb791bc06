//! `petchat-bench`: measures petchat-server from the outside over loopback
//! sockets, side by side with the Node.js `ws` peer (and, for topics, a
//! Socket.IO peer), and writes JSON, a markdown table and SVG plots. See
//! docs/benchmarks.md.

mod assign;
mod chat;
mod conn;
mod engines;
mod fanout;
mod idle;
mod progress;
mod reconnect;
mod report;
mod soak;
mod stats;
mod target;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::engines::EnginePrograms;
use crate::fanout::{Publishing, Transport};
use crate::progress::Progress;
use crate::report::{Report, Run};
use crate::soak::SoakSettings;
use crate::target::{Kind, Programs, Target};

/// The petchat benchmark: petchat-server and the Node.js peer under the same load.
#[derive(Parser)]
#[command(name = "petchat-bench", version)]
struct Cli {
    #[command(flatten)]
    options: Options,
    #[command(subcommand)]
    command: Command,
}

/// What every scenario shares.
#[derive(Args, Clone)]
struct Options {
    /// The servers to measure, alternating run by run (`cluster`: three
    /// nodes on PostgreSQL and Redis, which the bench starts).
    #[arg(long, value_delimiter = ',', default_value = "petchat,peer")]
    servers: Vec<Kind>,
    /// Runs per point; reports give medians.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Where results go (results.json, results.md, *.svg).
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// The petchat-server binary (a release build).
    #[arg(long, default_value = "target/release/petchat-server")]
    petchat_bin: PathBuf,
    /// The peer's script (with `ws` installed beside it by npm).
    #[arg(long, default_value = "benches/peers/node-ws/server.mjs")]
    peer: PathBuf,
    /// The Socket.IO peer's script (with `socket.io` installed beside it by
    /// npm), measured by `fanout` beside `--servers`.
    #[arg(long, default_value = "benches/peers/socket-io/server.mjs")]
    socketio_peer: PathBuf,
    /// The directory of PostgreSQL's initdb, pg_ctl and postgres (for `cluster`).
    #[arg(long, default_value = "/usr/lib/postgresql/15/bin")]
    postgres_bin: PathBuf,
    /// The redis-server program (for `cluster`).
    #[arg(long, default_value = "redis-server")]
    redis_server: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// N authenticated connections held T seconds: connect rate, RSS per connection, idle CPU.
    Idle {
        /// Connection counts to sweep.
        #[arg(long, value_delimiter = ',', default_value = "1000,5000,19000")]
        connections: Vec<usize>,
        /// Seconds to hold them: more than the 25 s heartbeat interval, so the
        /// idle CPU includes a round of pings.
        #[arg(long, default_value_t = 30)]
        hold: u64,
    },
    /// P conversations, both sides sending: relayed messages/s and latencies.
    Chat {
        /// Conversation counts to sweep.
        #[arg(long, value_delimiter = ',', default_value = "1,10,50,200")]
        pairs: Vec<usize>,
        /// Seconds measured per run (after 1 s of warm-up).
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// A fixed total rate (messages/s) instead of "as fast as acked".
        #[arg(long)]
        rate: Option<f64>,
    },
    /// C customers open at once against K agents: assignments per second.
    Assign {
        /// Customer counts to sweep.
        #[arg(long, value_delimiter = ',', default_value = "250,500,1000")]
        customers: Vec<usize>,
        /// Agents available.
        #[arg(long, default_value_t = 10)]
        agents: usize,
    },
    /// N customers drop at once and come back with `afterSeq` (to another node
    /// on a cluster): time until all have rejoined and caught up, nothing lost
    /// (petchat and cluster; the peer keeps no history to resume from).
    Reconnect {
        /// Customer counts to sweep, each in a conversation of its own.
        #[arg(long, value_delimiter = ',', default_value = "10000")]
        clients: Vec<usize>,
        /// Agents holding the conversations.
        #[arg(long, default_value_t = 50)]
        agents: usize,
        /// Messages each customer misses while away (fewer than the 500 one replay holds).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..500))]
        missed: u16,
    },
    /// N connections held for a long time, chat at a low rate and heartbeats
    /// running: the server's RSS and CPU sampled and judged for growth
    /// (petchat-server only; `--servers` and `--repeat` do not apply).
    Soak {
        /// Connections in all (idle ones plus two per chatting conversation).
        #[arg(long, default_value_t = 19_000)]
        connections: usize,
        /// Seconds the chat runs; the idle connections are held throughout.
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        /// Conversations that chat.
        #[arg(long, default_value_t = 100)]
        pairs: usize,
        /// Their total rate, messages per second.
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        /// Milliseconds between two samples of the server's RSS and CPU.
        #[arg(long, default_value_t = 5_000)]
        sample_ms: u64,
        /// The server's --heartbeat-interval-ms (shorter than the 25 s default,
        /// so that many rounds of pings happen).
        #[arg(long, default_value_t = 5_000)]
        heartbeat_interval_ms: u64,
    },
    /// One publisher through the server API, S subscribers on one topic
    /// (over the WebSocket on every server and the Socket.IO peer, and over
    /// SSE on petchat): deliveries per second, publish → deliver latency,
    /// RSS per subscriber.
    Fanout {
        /// Subscriber counts to sweep.
        #[arg(long, value_delimiter = ',', default_value = "1000,10000,19000")]
        subscribers: Vec<usize>,
        /// Events published per run (fewer than the server's 1,024-frame
        /// outbound queue, so that no subscriber can be cut off for lagging).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..1000))]
        events: u16,
        /// Publishes per second instead of as fast as the API answers.
        #[arg(long)]
        rate: Option<f64>,
        /// Publish requests in flight at once (when not paced), as a shop's
        /// backend publishing from several request handlers at once would.
        #[arg(long, default_value_t = FANOUT_PUBLISHERS)]
        publishers: usize,
    },
    /// Every scenario with its default sweep, then chat at half of petchat's peak rate.
    All,
    /// A tiny run of every scenario, for the test suite: correctness, not speed.
    Smoke,
    /// (internal) holds subscribers for `fanout`.
    #[command(hide = true)]
    WorkerFanout {
        #[arg(long)]
        server: SocketAddr,
        #[arg(long)]
        transport: Transport,
        #[arg(long)]
        source: IpAddr,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        events: usize,
        #[arg(long)]
        prefix: String,
    },
    /// (internal) holds idle connections for `idle`.
    #[command(hide = true)]
    WorkerIdle {
        #[arg(long)]
        server: SocketAddr,
        #[arg(long)]
        source: IpAddr,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        prefix: String,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Command::WorkerIdle { server, source, count, prefix } = &cli.command {
        return idle::worker(*server, *source, *count, prefix).await;
    }
    if let Command::WorkerFanout { server, transport, source, count, events, prefix } = &cli.command {
        return fanout::worker(*server, *transport, *source, *count, *events, prefix).await;
    }
    let options = cli.options;
    let programs = Programs {
        petchat: options.petchat_bin.clone(),
        peer: options.peer.clone(),
        socketio: options.socketio_peer.clone(),
        engines: EnginePrograms {
            postgres_bin: options.postgres_bin.clone(),
            redis_server: options.redis_server.clone(),
        },
    };
    if !programs.petchat.exists() {
        bail!("{} is missing: build it with `cargo build --release -p petchat-server`", programs.petchat.display());
    }
    // Paths under the working directory are shown relative to it, as a reader would type them.
    let here = std::env::current_dir().map(|d| format!("{}/", d.display())).unwrap_or_default();
    let command_line = std::env::args()
        .map(|arg| arg.strip_prefix(here.as_str()).map_or_else(|| arg.clone(), str::to_owned))
        .collect::<Vec<_>>()
        .join(" ");
    let mut report = Report::new(&command_line, &options.servers);
    let bench = Bench { options: options.clone(), programs, progress: Progress::default() };
    match cli.command {
        Command::Idle { connections, hold } => bench.idle(&mut report, &connections, hold).await?,
        Command::Chat { pairs, seconds, rate } => bench.chat(&mut report, &pairs, seconds, rate).await?,
        Command::Assign { customers, agents } => bench.assign(&mut report, &customers, agents).await?,
        Command::Reconnect { clients, agents, missed } => {
            bench.reconnect(&mut report, &clients, agents, missed.into()).await?;
        }
        Command::Soak { connections, seconds, pairs, rate, sample_ms, heartbeat_interval_ms } => {
            let settings = SoakSettings {
                connections,
                pairs,
                rate,
                duration: Duration::from_secs(seconds),
                sample_every: Duration::from_millis(sample_ms),
                heartbeat_interval_ms,
            };
            bench.soak(&mut report, settings).await?;
        }
        Command::Fanout { subscribers, events, rate, publishers } => {
            let publishing = Publishing { events: events.into(), in_flight: publishers, rate };
            bench.fanout(&mut report, &subscribers, publishing).await?;
        }
        Command::All => {
            bench.idle(&mut report, &[1000, 5000, 19_000], 30).await?;
            bench.chat(&mut report, &[1, 10, 50, 200], 5, None).await?;
            let peak = report.peak_relayed(Kind::Petchat);
            bench.chat(&mut report, &[50], 5, Some(peak / 2.0)).await?;
            bench.assign(&mut report, &[250, 500, 1000], 10).await?;
            bench.reconnect(&mut report, &[10_000], 50, 5).await?;
            let burst = Publishing { events: 100, in_flight: FANOUT_PUBLISHERS, rate: None };
            bench.fanout(&mut report, &[1000, 10_000, 19_000], burst).await?;
            let paced = Publishing { events: 50, in_flight: 1, rate: Some(FANOUT_LATENCY_RATE) };
            bench.fanout(&mut report, &[10_000], paced).await?;
        }
        Command::Smoke => {
            bench.idle(&mut report, &[50], 1).await?;
            bench.chat(&mut report, &[2], 1, None).await?;
            bench.chat(&mut report, &[2], 1, Some(200.0)).await?;
            bench.assign(&mut report, &[20], 2).await?;
            bench.reconnect(&mut report, &[40], 4, 3).await?;
            let soak = SoakSettings {
                connections: 60,
                pairs: 2,
                rate: 20.0,
                duration: Duration::from_secs(3),
                sample_every: Duration::from_millis(400),
                heartbeat_interval_ms: 1_000,
            };
            bench.soak(&mut report, soak).await?;
            bench
                .fanout(&mut report, &[20], Publishing { events: 5, in_flight: FANOUT_PUBLISHERS, rate: None })
                .await?;
            bench.fanout(&mut report, &[20], Publishing { events: 5, in_flight: 1, rate: Some(50.0) }).await?;
        }
        Command::WorkerIdle { .. } | Command::WorkerFanout { .. } => unreachable!("handled above"),
    }
    report.write(&options.out)?;
    println!("{}", report.markdown());
    println!("results: {}", options.out.display());
    Ok(())
}

/// The publish rate of `all`'s paced fanout run: 20 events/s to 10,000
/// subscribers, 200,000 deliveries/s offered, below petchat's peak and
/// above the peers' (docs/benchmarks.md runs `--rate 5` for the latency at
/// a load every server carries).
const FANOUT_LATENCY_RATE: f64 = 20.0;

/// Publish requests in flight in a fanout burst.
const FANOUT_PUBLISHERS: usize = 16;

/// The runs of one invocation.
struct Bench {
    options: Options,
    programs: Programs,
    progress: Progress,
}

impl Bench {
    /// Runs `scenario` on a fresh server of each kind, alternating, `repeat`
    /// times (not on the Socket.IO peer, which speaks only topics).
    async fn each<R, F, Fut>(&self, scenario: F) -> Result<Vec<(Kind, R)>>
    where
        F: FnMut(Target, Progress) -> Fut,
        Fut: std::future::Future<Output = Result<R>>,
    {
        let servers: Vec<Kind> = self.options.servers.iter().copied().filter(|&k| k != Kind::Socketio).collect();
        self.each_of(&servers, scenario).await
    }

    /// As [`Self::each`], on `servers` only.
    async fn each_of<R, F, Fut>(&self, servers: &[Kind], mut scenario: F) -> Result<Vec<(Kind, R)>>
    where
        F: FnMut(Target, Progress) -> Fut,
        Fut: std::future::Future<Output = Result<R>>,
    {
        let mut results = Vec::new();
        for _ in 0..self.options.repeat {
            for &kind in servers {
                target::settle().await?;
                let target = Target::start(kind, &self.programs).await?;
                results.push((kind, scenario(target, self.progress.clone()).await?));
            }
        }
        Ok(results)
    }

    async fn idle(&self, report: &mut Report, connections: &[usize], hold: u64) -> Result<()> {
        for &n in connections {
            let runs = self
                .each(|target, progress| async move {
                    let result = idle::run(&target, n, Duration::from_secs(hold), &progress).await;
                    target.stop().await?;
                    result
                })
                .await?;
            report.idle.extend(runs.into_iter().map(Into::into));
        }
        Ok(())
    }

    async fn chat(&self, report: &mut Report, pairs: &[usize], seconds: u64, rate: Option<f64>) -> Result<()> {
        for &p in pairs {
            let runs = self
                .each(|target, progress| async move {
                    let result = chat::run(&target, p, Duration::from_secs(seconds), rate, &progress).await;
                    target.stop().await?;
                    result
                })
                .await?;
            report.chat.extend(runs.into_iter().map(Into::into));
        }
        Ok(())
    }

    /// One soak run on petchat-server (it is petchat's own stability that is judged).
    async fn soak(&self, report: &mut Report, settings: SoakSettings) -> Result<()> {
        target::settle().await?;
        let flags = ["--heartbeat-interval-ms".to_owned(), settings.heartbeat_interval_ms.to_string()];
        let target = Target::start_with(Kind::Petchat, &self.programs, &flags).await?;
        let result = soak::run(&target, settings, &self.progress).await;
        target.stop().await?;
        let result = result?;
        println!("soak: {}", result.verdict);
        report.soak.push(Run { server: Kind::Petchat, result });
        Ok(())
    }

    /// Reconnect runs on the servers that keep history (not the peer).
    async fn reconnect(&self, report: &mut Report, clients: &[usize], agents: usize, missed: usize) -> Result<()> {
        let servers: Vec<Kind> =
            self.options.servers.iter().copied().filter(|&k| !matches!(k, Kind::Peer | Kind::Socketio)).collect();
        for &n in clients {
            let runs = self
                .each_of(&servers, |target, progress| async move {
                    let result = reconnect::run(&target, n, agents, missed, &progress).await;
                    target.stop().await?;
                    result
                })
                .await?;
            report.reconnect.extend(runs.into_iter().map(Into::into));
        }
        Ok(())
    }

    /// Fanout runs: over the WebSocket on `--servers` and the Socket.IO
    /// peer, then over SSE on the petchat servers among them.
    async fn fanout(&self, report: &mut Report, subscribers: &[usize], publishing: Publishing) -> Result<()> {
        let mut ws: Vec<Kind> = self.options.servers.clone();
        if !ws.contains(&Kind::Socketio) {
            ws.push(Kind::Socketio);
        }
        report.include(Kind::Socketio);
        let sse: Vec<Kind> = ws.iter().copied().filter(|&k| matches!(k, Kind::Petchat | Kind::Cluster)).collect();
        for &s in subscribers {
            for (servers, sse) in [(&ws, false), (&sse, true)] {
                let runs = self
                    .each_of(servers, |target, progress| async move {
                        let transport = match (target.kind, sse) {
                            (_, true) => Transport::Sse,
                            (Kind::Socketio, false) => Transport::Socketio,
                            (_, false) => Transport::Ws,
                        };
                        let kind = target.kind;
                        let result = fanout::run(&target, transport, s, publishing, &progress).await;
                        target.stop().await?;
                        if let Ok(r) = &result {
                            eprintln!(
                                "fanout {} {}, S = {s}: {:.0} deliveries/s, p99 {:.1} ms, {} lost",
                                kind.name(),
                                transport.name(),
                                r.deliveries_per_second,
                                r.latency.p99_ms,
                                r.lost
                            );
                        }
                        result
                    })
                    .await?;
                report.fanout.extend(runs.into_iter().map(Into::into));
            }
        }
        Ok(())
    }

    async fn assign(&self, report: &mut Report, customers: &[usize], agents: usize) -> Result<()> {
        for &c in customers {
            let runs = self
                .each(|target, progress| async move {
                    let result = assign::run(&target, c, agents, &progress).await;
                    target.stop().await?;
                    result
                })
                .await?;
            report.assign.extend(runs.into_iter().map(Into::into));
        }
        Ok(())
    }
}
