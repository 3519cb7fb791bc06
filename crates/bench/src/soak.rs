//! `soak`: N connections held for a long time (10 minutes by default), chat
//! at a low rate across some of them and the server's heartbeats running,
//! while the server's RSS and CPU are sampled from /proc every few seconds.
//! The verdict says whether anything grows: the RSS of the last third of the
//! samples against the middle third, the CPU per interval likewise, and
//! every idle connection still open (none closed for a missed heartbeat).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::chat::{self, ChatResult};
use crate::idle;
use crate::progress::Progress;
use crate::target::Target;

/// RSS of the last third may differ from the middle third by this much.
const RSS_TOLERANCE_PERCENT: f64 = 5.0;
/// CPU of the last third may differ from the middle third by this share of it…
const CPU_TOLERANCE_SHARE: f64 = 0.25;
/// …or by this many points of a core, whichever is larger (a nearly idle
/// server's CPU is a few ticks per interval, where a quarter is noise).
const CPU_TOLERANCE_POINTS: f64 = 2.0;

/// What a soak run is asked to do.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SoakSettings {
    /// Connections in all: idle ones plus two per conversation.
    pub(crate) connections: usize,
    /// Conversations that chat.
    pub(crate) pairs: usize,
    /// Their total rate, messages per second.
    pub(crate) rate: f64,
    /// How long the chat runs (the idle connections are held throughout).
    pub(crate) duration: Duration,
    /// Time between two samples.
    pub(crate) sample_every: Duration,
    /// The server's `--heartbeat-interval-ms`.
    pub(crate) heartbeat_interval_ms: u64,
}

/// One sample of the server.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sample {
    /// Seconds since the idle connections were all open.
    pub(crate) seconds: f64,
    /// Resident memory (/proc/PID/status).
    pub(crate) rss_bytes: u64,
    /// CPU since the previous sample, percent of one core (/proc/PID/stat).
    pub(crate) cpu_percent: f64,
    /// Open connections, by the server's `petchat_connections` gauge.
    pub(crate) connections: u64,
}

/// What one soak run measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SoakResult {
    /// Connections in all.
    pub(crate) connections: usize,
    /// Conversations that chatted.
    pub(crate) pairs: usize,
    /// The chat's total offered rate, messages per second.
    pub(crate) offered_per_second: f64,
    /// The server's heartbeat interval.
    pub(crate) heartbeat_interval_ms: u64,
    /// The chat's measured window, in seconds.
    pub(crate) seconds: f64,
    /// The samples, in order.
    pub(crate) samples: Vec<Sample>,
    /// Mean RSS over the middle third of the samples.
    pub(crate) rss_middle_third_bytes: f64,
    /// Mean RSS over the last third.
    pub(crate) rss_last_third_bytes: f64,
    /// (last − middle) / middle, percent.
    pub(crate) rss_growth_percent: f64,
    /// Mean CPU over the middle third, percent of one core.
    pub(crate) cpu_middle_third_percent: f64,
    /// Mean CPU over the last third.
    pub(crate) cpu_last_third_percent: f64,
    /// The fewest connections any sample saw.
    pub(crate) min_connections: u64,
    /// Connections the server closed with 4000 (a missed heartbeat).
    pub(crate) heartbeat_closes: u64,
    /// The chat's figures (acked, relayed, lost, latencies).
    pub(crate) chat: ChatResult,
    /// Whether RSS and CPU stayed flat and every connection stayed open.
    pub(crate) no_growth: bool,
    /// The verdict in a sentence.
    pub(crate) verdict: String,
}

/// Runs the scenario against `target` (a petchat-server started with
/// `settings.heartbeat_interval_ms`).
pub(crate) async fn run(target: &Target, settings: SoakSettings, progress: &Progress) -> Result<SoakResult> {
    let Some(idle_count) = settings.connections.checked_sub(2 * settings.pairs) else {
        bail!("{} connections cannot hold {} conversations of two", settings.connections, settings.pairs);
    };
    let held = idle::hold(target, idle_count, progress, "soak").await?;
    let (stop, stopped) = oneshot::channel();
    let sampler = tokio::spawn(sample(
        target.addr,
        target.rss_bytes_reader(),
        target.cpu_seconds_reader(),
        settings.sample_every,
        stopped,
    ));
    let chat = chat::run(target, settings.pairs, settings.duration, Some(settings.rate), progress).await;
    let _ = stop.send(());
    let samples = sampler.await??;
    let heartbeat_closes = metric(&metrics(target.addr).await?, "petchat_closes_total{code=\"4000\"}").unwrap_or(0.0);
    held.release().await?;
    let chat = chat?;
    if samples.len() < 3 {
        bail!("{} samples are too few for a verdict: sample more often or soak longer", samples.len());
    }

    let third = samples.len() / 3;
    let (middle, last) = (&samples[third..samples.len() - third], &samples[samples.len() - third..]);
    let mean = |s: &[Sample], f: fn(&Sample) -> f64| s.iter().map(f).sum::<f64>() / s.len() as f64;
    let rss_middle = mean(middle, |s| s.rss_bytes as f64);
    let rss_last = mean(last, |s| s.rss_bytes as f64);
    let rss_growth = 100.0 * (rss_last - rss_middle) / rss_middle;
    let cpu_middle = mean(middle, |s| s.cpu_percent);
    let cpu_last = mean(last, |s| s.cpu_percent);
    let min_connections = samples.iter().map(|s| s.connections).min().unwrap_or(0);
    let rss_flat = rss_growth.abs() <= RSS_TOLERANCE_PERCENT;
    let cpu_flat = (cpu_last - cpu_middle).abs() <= (CPU_TOLERANCE_SHARE * cpu_middle).max(CPU_TOLERANCE_POINTS);
    let held_all = min_connections >= idle_count as u64 && heartbeat_closes == 0.0;
    let no_growth = rss_flat && cpu_flat && held_all && chat.lost == 0;
    let verdict = format!(
        "{}: RSS {:.1} MB in the middle third, {:.1} MB in the last ({rss_growth:+.2} %, tolerance ±{RSS_TOLERANCE_PERCENT} %); \
         CPU {cpu_middle:.2} → {cpu_last:.2} % of a core; at least {min_connections} of {} connections open at every \
         sample, {heartbeat_closes} closed for a missed heartbeat; {} messages acked, {} lost",
        if no_growth { "no growth" } else { "GROWTH OR LOSS" },
        rss_middle / 1e6,
        rss_last / 1e6,
        settings.connections,
        chat.acked,
        chat.lost,
    );
    Ok(SoakResult {
        connections: settings.connections,
        pairs: settings.pairs,
        offered_per_second: settings.rate,
        heartbeat_interval_ms: settings.heartbeat_interval_ms,
        seconds: chat.seconds,
        samples,
        rss_middle_third_bytes: rss_middle,
        rss_last_third_bytes: rss_last,
        rss_growth_percent: rss_growth,
        cpu_middle_third_percent: cpu_middle,
        cpu_last_third_percent: cpu_last,
        min_connections,
        heartbeat_closes: heartbeat_closes as u64,
        chat,
        no_growth,
        verdict,
    })
}

/// Samples the server every `every` until `stop` fires.
async fn sample(
    server: SocketAddr,
    rss: impl Fn() -> Result<u64>,
    cpu: impl Fn() -> Result<f64>,
    every: Duration,
    mut stop: oneshot::Receiver<()>,
) -> Result<Vec<Sample>> {
    let start = Instant::now();
    let mut ticks = tokio::time::interval_at((start + every).into(), every);
    let (mut cpu_before, mut at_before) = (cpu()?, start);
    let mut samples = Vec::new();
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(samples),
            _ = ticks.tick() => {}
        }
        let (cpu_now, at) = (cpu()?, Instant::now());
        let connections = metric(&metrics(server).await?, "petchat_connections").context("no petchat_connections")?;
        samples.push(Sample {
            seconds: at.duration_since(start).as_secs_f64(),
            rss_bytes: rss()?,
            cpu_percent: 100.0 * (cpu_now - cpu_before) / at.duration_since(at_before).as_secs_f64(),
            connections: connections as u64,
        });
        (cpu_before, at_before) = (cpu_now, at);
    }
}

/// The server's /metrics page. HTTP/1.0, so the body ends with the connection.
async fn metrics(server: SocketAddr) -> Result<String> {
    let mut stream = tokio::net::TcpStream::connect(server).await.context("connecting for /metrics")?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").await?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut response))
        .await
        .context("/metrics did not answer in 10 s")??;
    Ok(response)
}

/// The value of the sample named exactly `name` (with its labels) in a Prometheus text page.
fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::metric;

    #[test]
    fn a_metric_is_found_by_its_whole_name() {
        let page = "# TYPE petchat_connections gauge\npetchat_connections 19000\n\
                    petchat_connections_total 5\npetchat_closes_total{code=\"4000\"} 2\n";
        assert_eq!(metric(page, "petchat_connections"), Some(19_000.0));
        assert_eq!(metric(page, "petchat_closes_total{code=\"4000\"}"), Some(2.0));
        assert_eq!(metric(page, "petchat_closes_total{code=\"4001\"}"), None);
    }
}
