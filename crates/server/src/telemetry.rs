//! Logs (tracing, text or JSON) and metrics (Prometheus), set up once per process.
//!
//! Neither ever sees a token: HTTP spans carry the path without the query,
//! and no metric label holds request data.

use std::sync::OnceLock;

use axum::http::Request;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::TraceLayer;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Crates whose lines print payloads (chat text), capped whatever `RUST_LOG`
/// says, since message text never reaches a log (SPEC §5): tungstenite's
/// `trace` lines print frames, tokio-postgres's `debug` lines every
/// statement's parameters.
const PAYLOAD_LOGGERS: [&str; 3] = ["tungstenite=debug", "tokio_tungstenite=debug", "tokio_postgres=info"];

/// Installs the global log subscriber (`RUST_LOG` filters; default `info`).
pub fn init_logging(format: LogFormat) {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    for directive in PAYLOAD_LOGGERS {
        filter = filter.add_directive(directive.parse().expect("a valid directive"));
    }
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
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
