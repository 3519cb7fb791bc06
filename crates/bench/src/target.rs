//! The servers under test: petchat-server and the Node.js `ws` peer, started
//! by the bench on loopback with the limits lifted, their memory and CPU read
//! from /proc.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tokio::process::{Child, Command};

/// The JWT secret of every petchat-server the bench starts.
pub(crate) const SECRET: &str = "petchat-bench-secret-0123456789abcdef";

/// Which server a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    /// petchat-server on SQLite: every message durable before its ack.
    Petchat,
    /// The in-memory Node.js `ws` server of benches/peers/node-ws.
    Peer,
}

impl Kind {
    /// The name in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Petchat => "petchat",
            Kind::Peer => "peer",
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
}

/// A running server under test; killed when dropped.
pub(crate) struct Target {
    /// Which server it is.
    pub(crate) kind: Kind,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Target {
    /// Starts `kind` on a free loopback port and waits until it accepts connections.
    pub(crate) async fn start(kind: Kind, programs: &Programs) -> Result<Target> {
        Self::start_with(kind, programs, &[]).await
    }

    /// As [`Self::start`], with more flags for petchat-server (the peer ignores them).
    pub(crate) async fn start_with(kind: Kind, programs: &Programs, extra: &[String]) -> Result<Target> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let dir = tempfile::tempdir()?;
        let mut command = match kind {
            Kind::Petchat => {
                let mut command = petchat_command(&programs.petchat, addr, dir.path());
                command.args(extra);
                command
            }
            Kind::Peer => {
                let mut command = Command::new("node");
                command.arg(&programs.peer).args(["--port", &port.to_string()]);
                command
            }
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting the {} server", kind.name()))?;
        let target = Target { kind, addr, child, _dir: dir };
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(target);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the {} server did not listen on {addr}", kind.name())
    }

    /// A reader of [`Self::cpu_seconds`] that a task can own.
    pub(crate) fn cpu_seconds_reader(&self) -> impl Fn() -> Result<f64> + Send + 'static {
        let pid = self.child.id().map(|pid| pid.to_string());
        move || cpu_seconds_of(pid.as_deref().context("the server has exited")?)
    }

    /// A reader of [`Self::rss_bytes`] that a task can own.
    pub(crate) fn rss_bytes_reader(&self) -> impl Fn() -> Result<u64> + Send + 'static {
        let pid = self.child.id().map(|pid| pid.to_string());
        move || rss_bytes_of(pid.as_deref().context("the server has exited")?)
    }

    fn pid(&self) -> Result<u32> {
        self.child.id().context("the server has exited")
    }

    /// Resident memory, from /proc/PID/status.
    pub(crate) fn rss_bytes(&self) -> Result<u64> {
        rss_bytes_of(&self.pid()?.to_string())
    }

    /// User plus system CPU time so far, in seconds, from /proc/PID/stat.
    pub(crate) fn cpu_seconds(&self) -> Result<f64> {
        cpu_seconds_of(&self.pid()?.to_string())
    }

    /// Stops the server and waits for it.
    pub(crate) async fn stop(mut self) -> Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }
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
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// petchat-server with a fresh SQLite file and the per-user and per-connection
/// limits lifted, so that the load generator is the only bound.
fn petchat_command(program: &Path, addr: SocketAddr, dir: &Path) -> Command {
    let mut command = Command::new(program);
    command
        .args(["--bind", &addr.to_string()])
        .args(["--database-url", &format!("sqlite://{}/bench.db", dir.display())])
        .args(["--jwt-secret", SECRET])
        .args(["--messages-per-second", "1000000"])
        .args(["--max-connections", "100000"])
        .args(["--max-connections-per-user", "100"])
        .args(["--max-conversations-per-agent", "100000"])
        .args(["--log-format", "json"])
        .env("RUST_LOG", "warn");
    command
}
