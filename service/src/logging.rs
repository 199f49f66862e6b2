//! Logs: structured `tracing` events on stderr (stdout is kept for the lines scripts read, such
//! as "listening" announcements), filtered by `RUST_LOG`, `info` by default.

/// Installs the process's log subscriber. Call once, first thing in `main`.
pub fn init() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}
