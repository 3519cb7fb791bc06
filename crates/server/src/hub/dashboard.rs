//! The live support dashboard's feed: the server publishes its own
//! [`SupportStats`](petchat_protocol::api::SupportStats) on `support:stats`
//! (event `support.stats`) every `--support-stats-interval-ms`, when they
//! changed since the last publish, so an idle shop's topic stays quiet and
//! its kept history is a chart of the last changes. In a cluster one node
//! publishes, the holder of a lease in Redis; another takes over within three
//! intervals when it stops.

use std::time::Duration;

use petchat_protocol::api::PublishRequest;
use petchat_protocol::{EventName, TopicName};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, warn};

use super::Hub;

/// The topic.
pub(crate) const TOPIC: &str = "support:stats";
/// The event name.
pub(crate) const EVENT: &str = "support.stats";

/// Publishes the stats every `interval` until `stop`.
pub(crate) fn spawn(hub: Hub, interval: Duration, stop: CancellationToken) {
    if interval.is_zero() {
        return;
    }
    tokio::spawn(
        async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last = None;
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                if !hub.holds_lease("support-stats", 3 * interval).await {
                    last = None;
                    continue;
                }
                let Some(stats) = hub.support_stats().await else { continue };
                if last.as_ref() == Some(&stats) {
                    continue;
                }
                let data = match serde_json::to_value(&stats) {
                    Ok(serde_json::Value::Object(data)) => data,
                    _ => continue,
                };
                let request = PublishRequest {
                    topic: TopicName::new(TOPIC).expect("a valid topic"),
                    event: EventName::new(EVENT).expect("a valid event name"),
                    data,
                    idempotency_key: None,
                };
                match hub.feeds().publish(request).await {
                    Ok(posted) => {
                        debug!(seq = posted.seq.get(), "published the support stats");
                        last = Some(stats);
                    }
                    Err(e) => warn!(error = %e, "publishing the support stats failed"),
                }
            }
        }
        .in_current_span(),
    );
}
