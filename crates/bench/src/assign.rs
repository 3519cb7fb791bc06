//! `assign`: a burst of C customers opening conversations at once against K
//! available agents. Measures conversations assigned per second and the time
//! until the last `agent.assigned`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::StreamExt;
use petchat_protocol::Role;
use serde::Serialize;
use serde_json::json;

use crate::conn;
use crate::progress::Progress;
use crate::stats::{self, Latency};
use crate::target::Target;

/// What one assign run measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AssignResult {
    /// Customers opening at once.
    pub(crate) customers: usize,
    /// Agents available.
    pub(crate) agents: usize,
    /// From the first `conversation.open` to the last `agent.assigned`, in seconds.
    pub(crate) seconds_to_last: f64,
    /// `customers / seconds_to_last`.
    pub(crate) assigned_per_second: f64,
    /// Each customer's `conversation.open` → `agent.assigned`.
    pub(crate) open_to_assigned: Latency,
}

/// Runs the scenario against `target`.
pub(crate) async fn run(target: &Target, customers: usize, agents: usize, progress: &Progress) -> Result<AssignResult> {
    let run = format!("{:x}", conn::wall_micros());
    let (server, source) = (target.addr, conn::fresh_source_address());
    let bar = progress.bar((customers + agents) as u64, &format!("assign {}: connecting", target.kind.name()));
    let mut agent_sockets = Vec::new();
    for i in 0..agents {
        let mut ws = conn::connect(server, source, &format!("agent-{run}-{i}"), Role::Agent).await?;
        conn::send(&mut ws, "agent.status", json!({"available": true})).await?;
        while conn::next_frame(&mut ws).await?.kind != "agent.status" {}
        bar.inc(1);
        agent_sockets.push(ws);
    }
    // Agents keep reading, so their queues never fill.
    let drains: Vec<_> = agent_sockets
        .into_iter()
        .map(|mut ws| tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} }))
        .collect();
    let sockets: Vec<conn::Ws> = futures_util::stream::iter(0..customers)
        .map(|i| {
            let user = format!("customer-{run}-{i}");
            let bar = &bar;
            async move {
                let ws = conn::connect(server, source, &user, Role::Customer).await;
                bar.inc(1);
                ws
            }
        })
        .buffered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    bar.finish_and_clear();

    let bar = progress.bar(customers as u64, &format!("assign {}: {customers} opening", target.kind.name()));
    let start = Instant::now();
    let opens: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let sent = Instant::now();
                conn::send(&mut ws, "conversation.open", json!({"topic": "bench"})).await?;
                loop {
                    let frame = tokio::time::timeout(Duration::from_secs(60), conn::next_frame(&mut ws))
                        .await
                        .context("no agent.assigned within 60 s")??;
                    if frame.kind == "agent.assigned" {
                        return anyhow::Ok((Instant::now(), sent));
                    }
                }
            })
        })
        .collect();
    let mut last = start;
    let mut latency = stats::histogram();
    for open in opens {
        let (assigned, sent) = open.await??;
        last = last.max(assigned);
        latency.saturating_record(assigned.duration_since(sent).as_micros() as u64);
        bar.inc(1);
    }
    bar.finish_and_clear();
    for drain in drains {
        drain.abort();
    }
    let seconds = last.duration_since(start).as_secs_f64();
    Ok(AssignResult {
        customers,
        agents,
        seconds_to_last: seconds,
        assigned_per_second: customers as f64 / seconds,
        open_to_assigned: Latency::of(&latency),
    })
}
