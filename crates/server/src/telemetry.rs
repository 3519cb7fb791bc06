//! Logs (tracing, text or JSON) and metrics (Prometheus), set up once per process.
//!
//! Neither ever sees a token: HTTP spans carry the path without the query,
//! and no metric label holds request data.

use std::sync::OnceLock;

use axum::http::Request;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::TraceLayer;
use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

/// Crates whose lines print payloads (chat text), capped whatever `RUST_LOG`
/// says, since message text never reaches a log (SPEC §5): tungstenite's
/// `trace` lines print frames, tokio-postgres's `debug` lines every
/// statement's parameters. A cap only lowers: `RUST_LOG=warn` keeps them at warn.
const PAYLOAD_LOGGERS: [(&str, LevelFilter); 3] = [
    ("tungstenite", LevelFilter::DEBUG),
    ("tokio_tungstenite", LevelFilter::DEBUG),
    ("tokio_postgres", LevelFilter::INFO),
];

/// Installs the global log subscriber (`RUST_LOG` filters; default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::registry().with(log_layer(format, filter, std::io::stderr)).try_init();
}

/// The formatting layer, behind `filter` and the payload caps.
fn log_layer<S, W>(format: LogFormat, filter: EnvFilter, writer: W) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    let caps = Targets::new().with_default(LevelFilter::TRACE).with_targets(PAYLOAD_LOGGERS);
    // One filter, both conditions: its level hint is the stricter of the two
    // (`RUST_LOG`'s), where two nested filters would report the caps'
    // TRACE and send every `log::trace!` line into the subscriber.
    fmt.with_filter(filter.and(caps))
}

/// The `node` label every metric carries in a cluster (`--node-id`).
static NODE_LABEL: OnceLock<String> = OnceLock::new();

/// Labels every metric of this process with the node's id; only before the
/// recorder is installed (the first server of a process wins).
pub(crate) fn label_metrics_with_node(node: &str) {
    let _ = NODE_LABEL.set(node.to_owned());
}

/// The process's Prometheus recorder, installed on first use.
pub(crate) fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new();
            if let Some(node) = NODE_LABEL.get() {
                builder = builder.add_global_label("node", node);
            }
            // Histograms are durations in seconds, except the batch sizes.
            let recorder = builder
                .set_buckets(&[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5])
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("petchat_store_commit_writes".into()),
                        &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0],
                    )
                })
                .expect("the bucket lists are not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding program):
            // then /metrics stays empty rather than failing.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

type MakeSpan = fn(&Request<axum::body::Body>) -> tracing::Span;

/// HTTP request spans with method and path only: the query (`?token=`) is never logged.
pub(crate) fn trace_layer() -> TraceLayer<SharedClassifier<ServerErrorsAsFailures>, MakeSpan> {
    TraceLayer::new_for_http().make_span_with(span as MakeSpan)
}

fn span(request: &Request<axum::body::Body>) -> tracing::Span {
    tracing::debug_span!("http", method = %request.method(), path = %request.uri().path())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// What `emit` logs through the layer under `RUST_LOG=env`.
    fn logged(env: &str, emit: impl FnOnce()) -> String {
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let writer = move || Sink(sink.clone());
        let subscriber = tracing_subscriber::registry().with(log_layer(LogFormat::Text, EnvFilter::new(env), writer));
        tracing::subscriber::with_default(subscriber, emit);
        String::from_utf8(out.lock().expect("not poisoned").clone()).expect("UTF-8")
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn payload_lines_stay_out_whatever_rust_log_allows() {
        let out = logged("trace", || {
            tracing::trace!(target: "tungstenite", "frame payload");
            tracing::debug!(target: "tokio_postgres", "statement parameters");
            tracing::debug!(target: "tungstenite", "handshake done");
            tracing::trace!(target: "petchat_server", "ours");
        });
        assert!(!out.contains("frame payload") && !out.contains("statement parameters"), "{out}");
        assert!(out.contains("handshake done") && out.contains("ours"), "{out}");
    }

    #[test]
    fn a_cap_never_raises_a_quieter_rust_log() {
        let out = logged("warn", || {
            tracing::debug!(target: "tokio_tungstenite", "start_send error");
            tracing::info!(target: "tokio_postgres", "NOTICE: relation exists");
            tracing::warn!(target: "tokio_tungstenite", "kept");
        });
        assert!(!out.contains("start_send error") && !out.contains("NOTICE"), "{out}");
        assert!(out.contains("kept"), "{out}");
    }

    /// The hint sets the process's maximum level: tracing's callsites and
    /// `log`'s `max_level`, which every `log::trace!` of tungstenite (one per
    /// frame) checks before it calls into the subscriber at all.
    #[test]
    fn the_level_hint_is_rust_logs_so_quieter_lines_cost_one_comparison() {
        let hint = |env: &str| {
            let layer =
                log_layer::<tracing_subscriber::Registry, _>(LogFormat::Json, EnvFilter::new(env), std::io::sink);
            layer.max_level_hint()
        };
        assert_eq!(hint("warn"), Some(LevelFilter::WARN));
        assert_eq!(hint("info,petchat_server=debug"), Some(LevelFilter::DEBUG));
        assert_eq!(hint("tungstenite=trace,warn"), Some(LevelFilter::TRACE), "a named target may still ask for more");
    }
}
