//! Logging. `JISR_LOG` (or `RUST_LOG`) sets the filter, e.g. `JISR_LOG=jisr=debug`.

use tracing_subscriber::EnvFilter;

pub fn init() {
    init_with_default("info");
}

/// Like `init`, with another level when neither variable is set.
pub fn init_with_default(default: &str) {
    let filter = std::env::var("JISR_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
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
