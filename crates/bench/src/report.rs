//! The results of one invocation: JSON (every run), a markdown table
//! (medians side by side, with the ratio) and SVG plots.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;
use serde::Serialize;

use crate::assign::AssignResult;
use crate::chat::ChatResult;
use crate::fanout::{FanoutResult, Transport};
use crate::idle::IdleResult;
use crate::reconnect::ReconnectResult;
use crate::soak::SoakResult;
use crate::stats::median;
use crate::target::Kind;

/// One run of a scenario on one server.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Run<R> {
    /// The server measured.
    pub(crate) server: Kind,
    /// What was measured.
    #[serde(flatten)]
    pub(crate) result: R,
}

impl<R> From<(Kind, R)> for Run<R> {
    fn from((server, result): (Kind, R)) -> Self {
        Run { server, result }
    }
}

/// Everything one invocation measured.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// The command line.
    pub(crate) command: String,
    /// The machine, from /proc.
    pub(crate) machine: String,
    /// The servers compared.
    pub(crate) servers: Vec<Kind>,
    /// `idle` runs.
    pub(crate) idle: Vec<Run<IdleResult>>,
    /// `chat` runs.
    pub(crate) chat: Vec<Run<ChatResult>>,
    /// `assign` runs.
    pub(crate) assign: Vec<Run<AssignResult>>,
    /// `soak` runs (petchat only).
    pub(crate) soak: Vec<Run<SoakResult>>,
    /// `reconnect` runs (petchat and cluster).
    pub(crate) reconnect: Vec<Run<ReconnectResult>>,
    /// `fanout` runs.
    pub(crate) fanout: Vec<Run<FanoutResult>>,
}

/// A row of the markdown table: a figure and its median per server.
struct Row {
    scenario: String,
    figure: &'static str,
    values: BTreeMap<&'static str, f64>,
}

impl Report {
    /// An empty report.
    pub(crate) fn new(command: &str, servers: &[Kind]) -> Report {
        Report {
            command: command.to_owned(),
            machine: machine(),
            servers: servers.to_vec(),
            idle: Vec::new(),
            chat: Vec::new(),
            assign: Vec::new(),
            soak: Vec::new(),
            reconnect: Vec::new(),
            fanout: Vec::new(),
        }
    }

    /// Adds a column for `kind` (a server measured beside `--servers`).
    pub(crate) fn include(&mut self, kind: Kind) {
        if !self.servers.contains(&kind) {
            self.servers.push(kind);
        }
    }

    /// The best median relayed messages/s of `kind` over the as-fast-as-acked chat runs.
    pub(crate) fn peak_relayed(&self, kind: Kind) -> f64 {
        group(&self.chat, |r| (r.pairs, r.offered_per_second.is_none()))
            .into_iter()
            .filter(|((_, closed), _)| *closed)
            .filter_map(|(_, runs)| medians(&runs, |r| r.relayed_per_second).get(kind.name()).copied())
            .fold(0.0, f64::max)
    }

    fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        for (n, runs) in group(&self.idle, |r| r.connections) {
            let scenario = format!("idle, N = {n}");
            rows.push(row(&scenario, "connects/s", medians(&runs, |r| r.connects_per_second)));
            rows.push(row(
                &scenario,
                "RSS per connection (KB)",
                medians(&runs, |r| r.rss_per_connection_bytes / 1000.0),
            ));
            rows.push(row(&scenario, "CPU while idle (% of a core)", medians(&runs, |r| r.idle_cpu_percent)));
        }
        for ((p, rate), runs) in group(&self.chat, |r| (r.pairs, r.offered_per_second.map(|x| x as u64))) {
            let scenario = match rate {
                None => format!("chat, P = {p}"),
                Some(rate) => format!("chat, P = {p}, {rate} msg/s offered"),
            };
            rows.push(row(&scenario, "relayed messages/s", medians(&runs, |r| r.relayed_per_second)));
            rows.push(row(&scenario, "ack p50 (ms)", medians(&runs, |r| r.ack.p50_ms)));
            rows.push(row(&scenario, "ack p99 (ms)", medians(&runs, |r| r.ack.p99_ms)));
            rows.push(row(&scenario, "ack max (ms)", medians(&runs, |r| r.ack.max_ms)));
            rows.push(row(&scenario, "delivery p50 (ms)", medians(&runs, |r| r.delivery.p50_ms)));
            rows.push(row(&scenario, "delivery p99 (ms)", medians(&runs, |r| r.delivery.p99_ms)));
            rows.push(row(&scenario, "lost messages", medians(&runs, |r| r.lost as f64)));
            rows.push(row(&scenario, "server CPU (% of a core)", medians(&runs, |r| r.server_cpu_percent)));
            rows.push(row(
                &scenario,
                "server CPU per relayed message (µs)",
                medians(&runs, |r| 10_000.0 * r.server_cpu_percent / r.relayed_per_second.max(1.0)),
            ));
            let cluster: Vec<Run<ChatResult>> = runs.iter().filter(|r| r.server == Kind::Cluster).cloned().collect();
            if !cluster.is_empty() {
                rows.push(row(
                    &scenario,
                    "of which PostgreSQL (% of a core)",
                    medians(&cluster, |r| r.postgres_cpu_percent),
                ));
                rows.push(row(&scenario, "of which Redis (% of a core)", medians(&cluster, |r| r.redis_cpu_percent)));
            }
            rows.push(row(&scenario, "load generator CPU (% of a core)", medians(&runs, |r| r.bench_cpu_percent)));
        }
        for ((c, k), runs) in group(&self.assign, |r| (r.customers, r.agents)) {
            let scenario = format!("assign, C = {c}, K = {k}");
            rows.push(row(&scenario, "assigned/s", medians(&runs, |r| r.assigned_per_second)));
            rows.push(row(
                &scenario,
                "time to the last agent.assigned (ms)",
                medians(&runs, |r| r.seconds_to_last * 1000.0),
            ));
            rows.push(row(&scenario, "open → assigned p99 (ms)", medians(&runs, |r| r.open_to_assigned.p99_ms)));
        }
        for ((n, m), runs) in group(&self.reconnect, |r| (r.clients, r.missed_per_client)) {
            let scenario = format!("reconnect, N = {n}, {m} missed each");
            rows.push(row(&scenario, "time until all rejoined (s)", medians(&runs, |r| r.seconds_to_all_ready)));
            rows.push(row(&scenario, "time until all caught up (s)", medians(&runs, |r| r.seconds_to_all_caught_up)));
            rows.push(row(&scenario, "return → session.ready p99 (ms)", medians(&runs, |r| r.ready.p99_ms)));
            rows.push(row(&scenario, "return → caught up p50 (ms)", medians(&runs, |r| r.caught_up.p50_ms)));
            rows.push(row(&scenario, "return → caught up p99 (ms)", medians(&runs, |r| r.caught_up.p99_ms)));
            rows.push(row(&scenario, "connection attempts retried", medians(&runs, |r| r.retries as f64)));
            rows.push(row(&scenario, "lost messages", medians(&runs, |r| r.lost as f64)));
            rows.push(row(&scenario, "duplicated messages", medians(&runs, |r| r.duplicated as f64)));
            rows.push(row(
                &scenario,
                "server CPU per client caught up (ms)",
                medians(&runs, |r| 1000.0 * r.server_cpu_seconds / r.clients as f64),
            ));
        }
        let fanout_key = |r: &FanoutResult| {
            (r.transport == Transport::Sse, r.subscribers, r.events, r.offered_per_second.map(|x| x as u64))
        };
        for ((sse, s, events, rate), runs) in group(&self.fanout, fanout_key) {
            let over = if sse { " over SSE" } else { "" };
            let scenario = match rate {
                None => format!("fanout{over}, S = {s}, {events} events"),
                Some(rate) => format!("fanout{over}, S = {s}, {events} events at {rate}/s"),
            };
            rows.push(row(&scenario, "deliveries/s", medians(&runs, |r| r.deliveries_per_second)));
            rows.push(row(&scenario, "publish → deliver p50 (ms)", medians(&runs, |r| r.latency.p50_ms)));
            rows.push(row(&scenario, "publish → deliver p99 (ms)", medians(&runs, |r| r.latency.p99_ms)));
            rows.push(row(&scenario, "publish → deliver max (ms)", medians(&runs, |r| r.latency.max_ms)));
            rows.push(row(
                &scenario,
                "RSS per subscriber (KB)",
                medians(&runs, |r| r.rss_per_subscriber_bytes / 1000.0),
            ));
            rows.push(row(&scenario, "lost events", medians(&runs, |r| r.lost as f64)));
            rows.push(row(&scenario, "events twice or out of order", medians(&runs, |r| r.disordered as f64)));
            rows.push(row(&scenario, "server CPU (% of a core)", medians(&runs, |r| r.server_cpu_percent)));
            rows.push(row(
                &scenario,
                "server CPU per delivery (µs)",
                medians(&runs, |r| 10_000.0 * r.server_cpu_percent / r.deliveries_per_second.max(1.0)),
            ));
            rows.push(row(&scenario, "load generator CPU (% of a core)", medians(&runs, |r| r.bench_cpu_percent)));
        }
        for run in &self.soak {
            let r = &run.result;
            let scenario = format!("soak, N = {}, {:.0} s, {} msg/s", r.connections, r.seconds, r.offered_per_second);
            let one = |v: f64| BTreeMap::from([(run.server.name(), v)]);
            rows.push(row(&scenario, "RSS, middle third (MB)", one(r.rss_middle_third_bytes / 1e6)));
            rows.push(row(&scenario, "RSS, last third (MB)", one(r.rss_last_third_bytes / 1e6)));
            rows.push(row(&scenario, "RSS growth, last vs middle third (%)", one(r.rss_growth_percent)));
            rows.push(row(&scenario, "server CPU, middle third (% of a core)", one(r.cpu_middle_third_percent)));
            rows.push(row(&scenario, "server CPU, last third (% of a core)", one(r.cpu_last_third_percent)));
            rows.push(row(&scenario, "connections open, fewest at a sample", one(r.min_connections as f64)));
            rows.push(row(&scenario, "closed for a missed heartbeat", one(r.heartbeat_closes as f64)));
            rows.push(row(&scenario, "messages acked", one(r.chat.acked as f64)));
            rows.push(row(&scenario, "lost messages", one(r.chat.lost as f64)));
            rows.push(row(&scenario, "ack p99 (ms)", one(r.chat.ack.p99_ms)));
        }
        rows
    }

    /// The markdown table: medians per server, in the order measured, and
    /// each server's ratio to the peer (or, without the peer, the cluster's
    /// to the single node).
    pub(crate) fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Machine: {}  \nCommand: `{}`\n", self.machine, self.command);
        let base = [Kind::Peer, Kind::Petchat].into_iter().find(|k| self.servers.contains(k) && self.servers.len() > 1);
        let ratios: Vec<Kind> = base.map_or(Vec::new(), |b| self.servers.iter().copied().filter(|&k| k != b).collect());
        let mut header = String::from("| scenario | figure |");
        let mut rule = String::from("|---|---|");
        for kind in &self.servers {
            let _ = write!(header, " {} |", kind.name());
            rule.push_str("---:|");
        }
        for kind in &ratios {
            let _ = write!(header, " {} ÷ {} |", kind.name(), base.map_or("", Kind::name));
            rule.push_str("---:|");
        }
        let _ = writeln!(out, "{header}\n{rule}");
        for row in self.rows() {
            let mut line = format!("| {} | {} |", row.scenario, row.figure);
            for kind in &self.servers {
                let _ = write!(line, " {} |", row.values.get(kind.name()).map_or("–".to_owned(), |v| number(*v)));
            }
            for kind in &ratios {
                let ratio = match (row.values.get(kind.name()), base.and_then(|b| row.values.get(b.name()))) {
                    (Some(a), Some(b)) if *b != 0.0 => format!("{:.2}", a / b),
                    _ => "–".to_owned(),
                };
                let _ = write!(line, " {ratio} |");
            }
            let _ = writeln!(out, "{line}");
        }
        for run in &self.soak {
            let _ = writeln!(out, "\nSoak, N = {}: {}.", run.result.connections, run.result.verdict);
        }
        out
    }

    /// Writes results.json, results.md and the plots into `dir`.
    pub(crate) fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("results.json"), serde_json::to_string_pretty(self)? + "\n")?;
        std::fs::write(dir.join("results.md"), self.markdown())?;
        if !self.idle.is_empty() {
            let series = self.series(&self.idle, |r| r.connections as f64, |r| r.rss_per_connection_bytes / 1000.0);
            plot(
                &dir.join("idle-memory.svg"),
                "Server RSS per idle connection",
                "connections",
                "KB per connection",
                &series,
            )?;
        }
        let closed: Vec<Run<ChatResult>> =
            self.chat.iter().filter(|r| r.result.offered_per_second.is_none()).cloned().collect();
        if !closed.is_empty() {
            let mut series = self.series(&closed, |r| r.relayed_per_second, |r| r.ack.p50_ms);
            for s in &mut series {
                s.0 = format!("{} ack p50", s.0);
            }
            let mut p99 = self.series(&closed, |r| r.relayed_per_second, |r| r.ack.p99_ms);
            for s in &mut p99 {
                s.0 = format!("{} ack p99", s.0);
            }
            series.extend(p99);
            plot(&dir.join("chat-latency.svg"), "Ack latency against load", "relayed messages/s", "ms", &series)?;
        }
        if !self.assign.is_empty() {
            let series = self.series(&self.assign, |r| r.customers as f64, |r| r.seconds_to_last * 1000.0);
            plot(&dir.join("assign.svg"), "Time until every conversation has an agent", "customers", "ms", &series)?;
        }
        let burst: Vec<Run<FanoutResult>> =
            self.fanout.iter().filter(|r| r.result.offered_per_second.is_none()).cloned().collect();
        if !burst.is_empty() {
            let (sse, ws): (Vec<_>, Vec<_>) = burst.into_iter().partition(|r| r.result.transport == Transport::Sse);
            let mut series = self.series(&ws, |r| r.subscribers as f64, |r| r.deliveries_per_second);
            for (name, points) in self.series(&sse, |r| r.subscribers as f64, |r| r.deliveries_per_second) {
                series.push((format!("{name} SSE"), points));
            }
            series.retain(|(_, points)| !points.is_empty());
            plot(
                &dir.join("fanout.svg"),
                "Fan-out: events delivered per second",
                "subscribers",
                "deliveries/s",
                &series,
            )?;
        }
        if !self.soak.is_empty() {
            let over_time = |y: fn(&crate::soak::Sample) -> f64| -> Vec<(String, Vec<(f64, f64)>)> {
                let series = |r: &Run<SoakResult>| r.result.samples.iter().map(|s| (s.seconds / 60.0, y(s))).collect();
                self.soak.iter().map(|r| (format!("petchat, N = {}", r.result.connections), series(r))).collect()
            };
            let rss = over_time(|s| s.rss_bytes as f64 / 1e6);
            plot(&dir.join("soak-rss.svg"), "Soak: server RSS over time", "minutes", "MB", &rss)?;
            let cpu = over_time(|s| s.cpu_percent);
            plot(&dir.join("soak-cpu.svg"), "Soak: server CPU per sample interval", "minutes", "% of a core", &cpu)?;
        }
        Ok(())
    }

    /// Per server, the median (x, y) of the runs at each sweep point, in sweep order.
    fn series<R: Clone + PointKey>(
        &self,
        runs: &[Run<R>],
        x: impl Fn(&R) -> f64,
        y: impl Fn(&R) -> f64,
    ) -> Vec<(String, Vec<(f64, f64)>)> {
        self.servers
            .iter()
            .map(|kind| {
                let points = group(runs, PointKey::key)
                    .into_values()
                    .filter_map(|runs| {
                        let mine: Vec<&R> = runs.iter().filter(|r| r.server == *kind).map(|r| &r.result).collect();
                        (!mine.is_empty()).then(|| {
                            (median(mine.iter().map(|r| x(r)).collect()), median(mine.iter().map(|r| y(r)).collect()))
                        })
                    })
                    .collect();
                (kind.name().to_owned(), points)
            })
            .collect()
    }
}

/// The sweep point a result belongs to.
trait PointKey {
    fn key(&self) -> (usize, usize);
}

impl PointKey for IdleResult {
    fn key(&self) -> (usize, usize) {
        (self.connections, 0)
    }
}

impl PointKey for ChatResult {
    fn key(&self) -> (usize, usize) {
        (self.pairs, self.offered_per_second.map_or(0, |r| r as usize))
    }
}

impl PointKey for FanoutResult {
    fn key(&self) -> (usize, usize) {
        (self.subscribers, self.events)
    }
}

impl PointKey for AssignResult {
    fn key(&self) -> (usize, usize) {
        (self.customers, self.agents)
    }
}

fn group<R: Clone, K: Ord>(runs: &[Run<R>], key: impl Fn(&R) -> K) -> BTreeMap<K, Vec<Run<R>>> {
    let mut groups: BTreeMap<K, Vec<Run<R>>> = BTreeMap::new();
    for run in runs {
        groups.entry(key(&run.result)).or_default().push(run.clone());
    }
    groups
}

fn medians<R>(runs: &[Run<R>], figure: impl Fn(&R) -> f64) -> BTreeMap<&'static str, f64> {
    let mut by_server: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    for run in runs {
        by_server.entry(run.server.name()).or_default().push(figure(&run.result));
    }
    by_server.into_iter().map(|(k, v)| (k, median(v))).collect()
}

fn row(scenario: &str, figure: &'static str, values: BTreeMap<&'static str, f64>) -> Row {
    Row { scenario: scenario.to_owned(), figure, values }
}

fn number(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A line chart of `series` (name, points) into an SVG file.
fn plot(path: &Path, title: &str, x_label: &str, y_label: &str, series: &[(String, Vec<(f64, f64)>)]) -> Result<()> {
    let points = series.iter().flat_map(|(_, p)| p.iter().copied());
    let (x_max, y_max) = points.fold((0f64, 0f64), |(x, y), (px, py)| (x.max(px), y.max(py)));
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..x_max * 1.05 + 1e-9, 0f64..y_max * 1.1 + 1e-9)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart.configure_mesh().x_desc(x_label).y_desc(y_label).draw().map_err(|e| anyhow::anyhow!("{e}"))?;
    for (index, (name, points)) in series.iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// "N cores, MODEL, M GiB, Linux VERSION", from /proc.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map_or("unknown CPU", |m| m.trim_start_matches([' ', '\t', ':']).trim());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find_map(|l| l.strip_prefix("MemTotal:")).map(|v| v.trim().to_owned()))
        .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0.0, |kib| kib as f64 / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores, {model}, {memory:.0} GiB, Linux {}", kernel.trim())
}
