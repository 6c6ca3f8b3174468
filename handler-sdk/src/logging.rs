//! Logs on stderr through `tracing`: JSON lines when stderr is not a terminal (so
//! CloudWatch can parse them), readable text on one.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// For bootstraps: `AWS_LAMBDA_LOG_LEVEL` or `RUST_LOG` filter (default `info`); no
/// timestamps in JSON lines, since Lambda stamps each line itself.
pub fn init() {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .ok()
        .and_then(|level| EnvFilter::try_new(level.to_ascii_lowercase()).ok());
    install(level, false);
}

/// For command-line tools (the runner): `RUST_LOG` filters (default `info`), timestamps kept.
pub fn init_cli() {
    install(None, true);
}

/// Installs the global subscriber once (later calls do nothing).
fn install(filter: Option<EnvFilter>, timestamps: bool) {
    let filter = filter
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match (std::io::stderr().is_terminal(), timestamps) {
        (true, _) => builder.try_init(),
        (false, true) => builder.json().flatten_event(true).with_current_span(false).try_init(),
        (false, false) => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .without_time()
            .try_init(),
    };
}
