//! Logs: structured `tracing` events on stderr (stdout is kept for the lines scripts read, such
//! as "listening" announcements), filtered by `RUST_LOG`, else by the process's default (`info`
//! for services, `warn` for the CLI).

/// Installs the process's log subscriber, filtered by `RUST_LOG` or else `default` (a
/// `tracing` filter directive such as `info`). Call once, first thing in `main`.
pub fn init(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default.into()),
        )
        .with_writer(std::io::stderr)
        .init();
}
