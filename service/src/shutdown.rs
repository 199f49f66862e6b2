//! One stop request per service: a [`CancellationToken`]. A service's `run(config, listeners,
//! shutdown)` returns once the token is cancelled and everything it started has drained; its
//! tasks are spawned on a [`TaskTracker`] so "everything it started" is one `wait()`.
//!
//! Binaries get their token from [`on_signals`]: SIGINT (Ctrl-C) and SIGTERM (how Kubernetes
//! stops a pod) are caught from the moment it returns, so a signal that comes early — right
//! after a "listening" line a script waits for — is a stop request, never fatal.

use tokio::signal::unix::{SignalKind, signal};
pub use tokio_util::sync::CancellationToken;
pub use tokio_util::task::TaskTracker;

/// A token cancelled at the first SIGINT or SIGTERM. The handlers are installed before it
/// returns; must be called inside a tokio runtime.
pub fn on_signals() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    cancel_on_signals(token.clone())?;
    Ok(token)
}

/// Cancels `token` at the first SIGINT or SIGTERM (handlers installed before it returns).
pub fn cancel_on_signals(token: CancellationToken) -> std::io::Result<()> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = token.cancelled() => return,
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        tracing::info!(signal = name, "stop requested");
        token.cancel();
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_signal_cancels_the_token() {
        let token = on_signals().expect("signal handlers install");
        assert!(!token.is_cancelled());
        // The handler is installed: SIGTERM to this test process is caught, not fatal.
        std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .expect("kill runs");
        tokio::time::timeout(std::time::Duration::from_secs(10), token.cancelled())
            .await
            .expect("SIGTERM cancels the token");
    }
}
