//! `idle`: N authenticated connections held T seconds. Measures the connect
//! rate, the server's resident memory per connection and its CPU while only
//! heartbeats flow. The connections live in worker processes (at most
//! [`PER_WORKER`] each, one loopback source address each), since one process
//! may hold at most 20,000 open files here.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use petchat_protocol::Role;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::conn;
use crate::progress::Progress;
use crate::target::Target;

/// Connections per worker process.
pub(crate) const PER_WORKER: usize = 8_000;

/// Connection attempts in flight per worker.
const IN_FLIGHT: usize = 64;

/// What one idle run measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct IdleResult {
    /// Connections held.
    pub(crate) connections: usize,
    /// Connections that got `session.ready`, per second, from the first attempt to the last ready.
    pub(crate) connects_per_second: f64,
    /// Server RSS before the connections, in bytes.
    pub(crate) rss_before_bytes: u64,
    /// Server RSS with every connection open, in bytes.
    pub(crate) rss_bytes: u64,
    /// (RSS with − RSS before) / connections.
    pub(crate) rss_per_connection_bytes: f64,
    /// Server CPU while holding, as a share of one core.
    pub(crate) idle_cpu_percent: f64,
    /// How long the connections were held.
    pub(crate) hold_seconds: f64,
}

/// Runs the scenario against `target`.
pub(crate) async fn run(
    target: &Target,
    connections: usize,
    hold_for: Duration,
    progress: &Progress,
) -> Result<IdleResult> {
    let rss_before = target.rss_bytes()?;
    let start = Instant::now();
    let held = hold(target, connections, progress, "idle").await?;
    let connect_seconds = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await; // let allocations settle
    let rss = target.rss_bytes()?;
    let cpu_before = target.cpu_seconds()?;
    let hold_bar = progress.timer(hold_for, &format!("idle {}: holding {connections}", target.kind.name()));
    tokio::time::sleep(hold_for).await;
    hold_bar.finish_and_clear();
    let cpu = target.cpu_seconds()? - cpu_before;
    held.release().await?;
    Ok(IdleResult {
        connections,
        connects_per_second: connections as f64 / connect_seconds,
        rss_before_bytes: rss_before,
        rss_bytes: rss,
        rss_per_connection_bytes: (rss.saturating_sub(rss_before)) as f64 / connections as f64,
        idle_cpu_percent: 100.0 * cpu / hold_for.as_secs_f64(),
        hold_seconds: hold_for.as_secs_f64(),
    })
}

/// Idle connections held open by worker processes, until released.
pub(crate) struct Held {
    workers: Vec<Child>,
}

/// Opens `connections` idle connections to `target` from worker processes
/// and returns once every one got `session.ready`.
pub(crate) async fn hold(target: &Target, connections: usize, progress: &Progress, label: &str) -> Result<Held> {
    let bar = progress.bar(connections as u64, &format!("{label} {}: connecting", target.kind.name()));
    let start = Instant::now();
    let exe = std::env::current_exe()?;
    let mut workers = Vec::new();
    for (index, first) in (0..connections).step_by(PER_WORKER).enumerate() {
        let count = PER_WORKER.min(connections - first);
        let mut child = Command::new(&exe)
            .args(["worker-idle", "--server", &target.addr.to_string()])
            .args(["--count", &count.to_string(), "--source", &conn::fresh_source_address().to_string()])
            .args(["--prefix", &format!("{label}-{}-{index}", start.elapsed().as_nanos())])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting a worker")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        workers.push((child, BufReader::new(stdout).lines()));
    }
    // Every worker prints one line per 100 connections and "ready" when done.
    for (_, lines) in &mut workers {
        loop {
            let line = lines.next_line().await?.context("a worker exited before it was ready")?;
            if line == "ready" {
                break;
            }
            let done: u64 = line.parse().context("a worker's progress line")?;
            bar.inc(done);
        }
    }
    bar.finish_and_clear();
    Ok(Held { workers: workers.into_iter().map(|(child, _)| child).collect() })
}

impl Held {
    /// Closes the connections: each worker leaves at the end of its stdin.
    pub(crate) async fn release(self) -> Result<()> {
        for mut child in self.workers {
            drop(child.stdin.take());
            let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await??;
            if !status.success() {
                bail!("a worker failed: {status}");
            }
        }
        Ok(())
    }
}

/// The worker process: opens `count` connections from `source`, prints its
/// progress and "ready", holds them until stdin closes, then leaves.
pub(crate) async fn worker(server: SocketAddr, source: std::net::IpAddr, count: usize, prefix: &str) -> Result<()> {
    let connected = Arc::new(AtomicUsize::new(0));
    let sockets = futures_util::stream::iter(0..count)
        .map(|i| {
            let (prefix, connected) = (prefix.to_owned(), connected.clone());
            async move {
                let ws = conn::connect(server, source, &format!("{prefix}-{i}"), Role::Customer).await?;
                if connected.fetch_add(1, Ordering::Relaxed) % 100 == 99 {
                    println!("100");
                }
                anyhow::Ok(ws)
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    println!("{}", count % 100);
    println!("ready");
    // Hold: read (and so answer the server's pings) until the parent says stop.
    let mut holders = Vec::new();
    for mut ws in sockets {
        holders.push(tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} }));
    }
    let mut stdin = tokio::io::stdin();
    let mut sink = Vec::new();
    stdin.read_to_end(&mut sink).await?;
    for holder in holders {
        holder.abort();
    }
    Ok(())
}
