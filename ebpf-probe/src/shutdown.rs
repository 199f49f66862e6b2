//! Stop requests a node process honours: SIGINT (Ctrl-C) and SIGTERM (how Kubernetes stops a
//! pod). Install them first thing, so a request that comes early is never fatal.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Both stop signals, caught from the moment of [`StopSignals::install`].
#[derive(Debug)]
pub struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    pub fn install() -> std::io::Result<Self> {
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Resolves at the next SIGINT or SIGTERM.
    pub async fn requested(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
