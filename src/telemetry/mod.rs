//! Logs, traces and metrics.
//!
//! - Logs: `JISR_LOG` (or `RUST_LOG`) sets the filter, e.g. `JISR_LOG=jisr=debug`.
//! - Traces ([`traces`]): OpenTelemetry spans over OTLP/gRPC when `[telemetry]` or the
//!   `OTEL_*` variables name a collector.
//! - Metrics ([`metrics`]): the Prometheus registry the admin listener exposes.

pub mod metrics;
pub mod traces;

use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{filter_fn, FilterExt, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub use traces::TelemetryConfig;

/// The process's telemetry; [`Telemetry::shutdown`] sends the spans still buffered.
#[derive(Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown() {
                eprintln!("warning: the last spans could not be exported: {e}");
            }
        }
    }
}

fn log_filter(default: &str) -> EnvFilter {
    std::env::var("JISR_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default))
}

pub fn init() {
    init_with_default("info");
}

/// Like `init`, with another level when neither variable is set.
pub fn init_with_default(default: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(log_filter(default))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Logs at `default` (unless `JISR_LOG` says otherwise) and, when `traces` is configured,
/// exports the gateway's spans. Call inside the tokio runtime.
pub fn init_with_traces(
    default: &str,
    traces: &TelemetryConfig,
    node_id: &str,
) -> anyhow::Result<Telemetry> {
    if !traces.enabled() {
        init_with_default(default);
        return Ok(Telemetry::default());
    }
    let provider = traces::provider(traces, node_id)?;
    // The exported spans are not log lines; the logs keep their own filter.
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(log_filter(default).and(filter_fn(|m| {
            !(m.is_span() && m.target() == traces::TARGET)
        })));
    // Only the gateway's own spans are exported, with its warnings as their events. Each
    // span carries the attributes the gateway gives it and no more: no source location,
    // thread, target or busy/idle time (each an attribute per span, and the last a clock
    // read on every poll), and no OpenTelemetry context activation on every poll (nothing
    // here reads the ambient context: traceparents come from the span itself).
    let spans = tracing_opentelemetry::layer()
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_context_activation(false)
        .with_tracer(traces::tracer(&provider))
        .with_filter(
            Targets::new()
                .with_target(traces::TARGET, tracing::Level::INFO)
                .with_target("jisr", tracing::Level::WARN),
        );
    tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()?;
    Ok(Telemetry {
        provider: Some(provider),
    })
}

/// Logs into the test harness's captured output (shown only for failing tests).
pub fn init_for_tests() {
    let filter = std::env::var("JISR_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("jisr=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
