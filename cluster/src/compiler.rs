//! [`PolicyCompiler`] turns successive cluster states into numbered [`PolicySnapshot`]s. It
//! applies GKE's rule for a NetworkLogging that fails validation: the previous valid
//! configuration stays in force and the error (GKE's text) is reported. A state that cannot be
//! compiled at all is an error; the caller keeps the previous snapshot in force.

use std::sync::Arc;

use verdict_policy::{Engine, IpBlockMode};
use verdict_schema::NetworkLogging;

use crate::snapshot::PolicySnapshot;
use crate::source::StateUpdate;

/// Compiles states into numbered snapshots, keeping the last valid NetworkLogging.
#[derive(Debug)]
pub struct PolicyCompiler {
    mode: IpBlockMode,
    generation: u64,
    last_valid_logging: Option<NetworkLogging>,
}

/// What compiling a state produced.
#[derive(Debug)]
pub struct Compiled {
    pub snapshot: Arc<PolicySnapshot>,
    /// Set when the state's NetworkLogging was invalid and the previous one was kept.
    pub network_logging_error: Option<String>,
}

impl PolicyCompiler {
    pub fn new(mode: IpBlockMode) -> Self {
        PolicyCompiler {
            mode,
            generation: 0,
            last_valid_logging: None,
        }
    }

    pub fn compile(&mut self, mut update: StateUpdate) -> Result<Compiled, verdict_policy::Error> {
        let network_logging_error = update.rejected_network_logging.take();
        if network_logging_error.is_some() {
            update.state.network_logging = self.last_valid_logging.clone();
        }
        let engine = Engine::build(&update.state, self.mode)?;
        if network_logging_error.is_none() {
            self.last_valid_logging = update.state.network_logging.clone();
        }
        self.generation += 1;
        Ok(Compiled {
            snapshot: Arc::new(PolicySnapshot {
                generation: self.generation,
                engine,
            }),
            network_logging_error,
        })
    }
}
