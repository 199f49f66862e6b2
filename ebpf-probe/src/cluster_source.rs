//! Where cluster state comes from, behind one trait: today a watched folder of manifests; the
//! Kubernetes API (kube-rs watchers) implements the same trait later.
//!
//! [`PolicyCompiler`] turns successive states into [`PolicySnapshot`]s. It applies GKE's rule for
//! a NetworkLogging that fails validation: the previous valid configuration stays in force and the
//! error (GKE's text) is reported. A state that cannot be loaded at all keeps the previous
//! snapshot in force too.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use verdict_policy::manifests::load_dir_lenient;
use verdict_policy::{ClusterState, Engine, IpBlockMode};
use verdict_schema::NetworkLogging;

use crate::snapshot::PolicySnapshot;

/// A new cluster state, with what was wrong in it but did not stop it.
#[derive(Debug, Clone, Default)]
pub struct StateUpdate {
    pub state: ClusterState,
    /// An invalid NetworkLogging (GKE's error text), not applied.
    pub rejected_network_logging: Option<String>,
    pub warnings: Vec<String>,
}

/// Produces cluster states. The first call returns the initial state; later calls wait for a
/// change.
pub trait ClusterSource: Send + 'static {
    fn next_state(
        &mut self,
    ) -> impl std::future::Future<Output = Result<StateUpdate, SourceError>> + Send;
}

#[derive(Debug, thiserror::Error)]
#[error("cluster state from {source_name}: {message}")]
pub struct SourceError {
    pub source_name: String,
    pub message: String,
}

/// A folder of manifests, polled for changes (by content, so an edit within the same second and
/// size is still seen).
#[derive(Debug)]
pub struct ManifestDirSource {
    dir: PathBuf,
    interval: Duration,
    fingerprint: Option<u64>,
}

impl ManifestDirSource {
    pub fn new(dir: PathBuf, interval: Duration) -> Self {
        ManifestDirSource {
            dir,
            interval,
            fingerprint: None,
        }
    }

    fn fingerprint(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for f in files {
            f.hash(&mut h);
            if let Ok(bytes) = std::fs::read(&f) {
                bytes.hash(&mut h);
            }
        }
        h.finish()
    }
}

impl ClusterSource for ManifestDirSource {
    async fn next_state(&mut self) -> Result<StateUpdate, SourceError> {
        loop {
            let fp = self.fingerprint();
            if self.fingerprint != Some(fp) {
                self.fingerprint = Some(fp);
                let loaded = load_dir_lenient(&self.dir).map_err(|e| SourceError {
                    source_name: self.dir.display().to_string(),
                    message: e.to_string(),
                })?;
                return Ok(StateUpdate {
                    state: loaded.state,
                    rejected_network_logging: loaded
                        .rejected_network_logging
                        .map(|e| e.to_string()),
                    warnings: loaded.warnings.iter().map(ToString::to_string).collect(),
                });
            }
            tokio::time::sleep(self.interval).await;
        }
    }
}

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
