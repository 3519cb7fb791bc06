//! The servers under test: petchat-server on SQLite, a cluster of three
//! petchat-servers on PostgreSQL and Redis, the Node.js `ws` peer and (for
//! the fanout scenario) the Socket.IO peer, started
//! by the bench on loopback with the limits lifted, their memory and CPU read
//! from /proc.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tokio::process::{Child, Command};

use crate::engines::{EngineCpu, EnginePrograms, Engines};

/// The JWT secret of every petchat-server the bench starts.
pub(crate) const SECRET: &str = "petchat-bench-secret-0123456789abcdef";

/// The server API key of every server the bench starts (`--api-keys`; the peers take any).
pub(crate) const API_KEY: &str = "petchat-bench-api-key";

/// Which server a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    /// petchat-server on SQLite: every message durable before its ack.
    Petchat,
    /// Three petchat-servers on one PostgreSQL and one Redis (SPEC §10); its
    /// CPU counts the nodes and both engines.
    Cluster,
    /// The in-memory Node.js `ws` server of benches/peers/node-ws.
    Peer,
    /// The in-memory Socket.IO server of benches/peers/socket-io (the fanout scenario only).
    Socketio,
}

impl Kind {
    /// The name in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Petchat => "petchat",
            Kind::Cluster => "cluster",
            Kind::Peer => "peer",
            Kind::Socketio => "socketio",
        }
    }
}

/// Where the servers' programs are.
#[derive(Debug, Clone)]
pub(crate) struct Programs {
    /// The release build of petchat-server.
    pub(crate) petchat: PathBuf,
    /// benches/peers/node-ws/server.mjs (its `ws` installed with npm).
    pub(crate) peer: PathBuf,
    /// benches/peers/socket-io/server.mjs (its `socket.io` installed with npm).
    pub(crate) socketio: PathBuf,
    /// PostgreSQL and Redis, for the cluster.
    pub(crate) engines: EnginePrograms,
}

/// The nodes of the `cluster` target.
pub(crate) const CLUSTER_NODES: usize = 3;

/// Hub shards per cluster node (`--hub-shards`).
pub(crate) const CLUSTER_SHARDS_PER_NODE: usize = 1;

/// A running server under test (one process, or the cluster's nodes and
/// engines); killed when dropped.
pub(crate) struct Target {
    /// Which server it is.
    pub(crate) kind: Kind,
    /// Where its first node listens: the scenarios that drive one node use it.
    pub(crate) addr: SocketAddr,
    /// Where every node listens (one, or the cluster's three).
    pub(crate) nodes: Vec<SocketAddr>,
    children: Vec<Child>,
    engines: Option<Engines>,
    _dir: tempfile::TempDir,
}

impl Target {
    /// Starts `kind` on a free loopback port and waits until it accepts connections.
    pub(crate) async fn start(kind: Kind, programs: &Programs) -> Result<Target> {
        Self::start_with(kind, programs, &[]).await
    }

    /// As [`Self::start`], with more flags for petchat-server (the peer ignores them).
    pub(crate) async fn start_with(kind: Kind, programs: &Programs, extra: &[String]) -> Result<Target> {
        let dir = tempfile::tempdir()?;
        let (engines, commands) = match kind {
            Kind::Petchat => {
                let addr = free_addr()?;
                let database = format!("sqlite://{}/bench.db", dir.path().display());
                (None, vec![(addr, petchat_command(&programs.petchat, addr, &database, extra))])
            }
            Kind::Cluster => {
                let engines = Engines::start(&programs.engines).await?;
                let mut commands = Vec::new();
                for index in 0..CLUSTER_NODES {
                    let addr = free_addr()?;
                    let mut command = petchat_command(&programs.petchat, addr, &engines.database_url(), extra);
                    command.args(["--redis-url", &engines.redis_url(), "--node-id", &format!("node-{index}")]);
                    // Three nodes share this machine's cores: one shard each
                    // (the default, one per core, would run six on two cores).
                    command.args(["--hub-shards", &CLUSTER_SHARDS_PER_NODE.to_string()]);
                    commands.push((addr, command));
                }
                (Some(engines), commands)
            }
            Kind::Peer | Kind::Socketio => {
                let addr = free_addr()?;
                let mut command = Command::new("node");
                let script = if kind == Kind::Peer { &programs.peer } else { &programs.socketio };
                command.arg(script).args(["--port", &addr.port().to_string()]);
                (None, vec![(addr, command)])
            }
        };
        let nodes: Vec<SocketAddr> = commands.iter().map(|(addr, _)| *addr).collect();
        let mut children = Vec::new();
        for (_, mut command) in commands {
            let child = command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting the {} server", kind.name()))?;
            children.push(child);
        }
        let target = Target { kind, addr: nodes[0], nodes, children, engines, _dir: dir };
        for &node in &target.nodes {
            wait_listening(node, kind.name()).await?;
        }
        Ok(target)
    }

    /// A reader of [`Self::cpu_seconds`] that a task can own.
    pub(crate) fn cpu_seconds_reader(&self) -> impl Fn() -> Result<f64> + Send + 'static {
        let pids = self.pids();
        let engines = self.engines.as_ref().map(Engines::cpu_seconds_reader);
        move || {
            let engines = engines.as_ref().map_or(Ok(EngineCpu::default()), |read| read())?;
            let mut total = engines.postgres + engines.redis;
            for pid in &pids {
                total += cpu_seconds_of(pid.as_deref().context("the server has exited")?)?;
            }
            Ok(total)
        }
    }

    /// A reader of [`Self::rss_bytes`] that a task can own.
    pub(crate) fn rss_bytes_reader(&self) -> impl Fn() -> Result<u64> + Send + 'static {
        let pids = self.pids();
        move || pids.iter().map(|pid| rss_bytes_of(pid.as_deref().context("the server has exited")?)).sum()
    }

    /// The server processes' pids (the engines' excluded), as /proc names them.
    fn pids(&self) -> Vec<Option<String>> {
        self.children.iter().map(|child| child.id().map(|pid| pid.to_string())).collect()
    }

    /// Resident memory of the server processes (the engines' excluded), from /proc/PID/status.
    pub(crate) fn rss_bytes(&self) -> Result<u64> {
        self.rss_bytes_reader()()
    }

    /// User plus system CPU time so far, in seconds, from /proc/PID/stat:
    /// every thread of every server process, and the cluster's engines.
    pub(crate) fn cpu_seconds(&self) -> Result<f64> {
        self.cpu_seconds_reader()()
    }

    /// The CPU seconds of the cluster's engines alone (zero for one process).
    pub(crate) fn engine_cpu_seconds_reader(&self) -> impl Fn() -> Result<EngineCpu> + Send + 'static {
        let engines = self.engines.as_ref().map(Engines::cpu_seconds_reader);
        move || engines.as_ref().map_or(Ok(EngineCpu::default()), |read| read())
    }

    /// Stops the server and waits for it.
    pub(crate) async fn stop(mut self) -> Result<()> {
        for child in &mut self.children {
            child.start_kill()?;
            child.wait().await?;
        }
        drop(self.engines.take());
        Ok(())
    }
}

/// A free loopback address (port 0 bound and released).
fn free_addr() -> Result<SocketAddr> {
    Ok(([127, 0, 0, 1], free_port()?).into())
}

/// A free loopback port.
pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until `addr` accepts TCP connections (10 s at most).
pub(crate) async fn wait_listening(addr: SocketAddr, what: &str) -> Result<()> {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the {what} server did not listen on {addr}")
}

/// Writes back what earlier runs left dirty (`sync`) and waits a moment, so
/// that a run does not pay for the disk work of the one before it.
pub(crate) async fn settle() -> Result<()> {
    let status = Command::new("sync").status().await.context("running sync")?;
    if !status.success() {
        bail!("sync failed: {status}");
    }
    tokio::time::sleep(SETTLE).await;
    Ok(())
}

/// The pause after `sync` before each run.
const SETTLE: Duration = Duration::from_millis(500);

/// Resident memory of process `pid`, from /proc/PID/status.
fn rss_bytes_of(pid: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("no VmRSS in /proc/PID/status")?;
    Ok(kib * 1024)
}

/// User plus system CPU time so far of process `pid` (or `self`), in seconds,
/// from /proc/PID/stat; all its threads count.
pub(crate) fn cpu_seconds_of(pid: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').context("odd /proc/PID/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(ticks as f64 / CLOCK_TICKS_PER_SECOND)
}

/// `sysconf(_SC_CLK_TCK)`, 100 on every Linux this runs on.
pub(crate) const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// petchat-server on `database` with the per-user and per-connection limits
/// lifted, so that the load generator is the only bound, then `extra`.
fn petchat_command(program: &Path, addr: SocketAddr, database: &str, extra: &[String]) -> Command {
    let mut command = Command::new(program);
    command
        .args(["--bind", &addr.to_string()])
        .args(["--database-url", database])
        .args(["--jwt-secret", SECRET])
        .args(["--messages-per-second", "1000000"])
        .args(["--max-connections", "100000"])
        .args(["--max-connections-per-user", "100"])
        .args(["--max-conversations-per-agent", "100000"])
        .args(["--api-keys", API_KEY, "--public-topics", "bench:*"])
        .args(["--log-format", "json"])
        .args(extra)
        .env("RUST_LOG", std::env::var("PETCHAT_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()));
    command
}
