//! Where cluster state comes from, behind one trait ([`ClusterSource`]): a consistent state
//! first, then a new whole state at every change. [`ManifestDirSource`] watches a folder of
//! manifests (tests, the demo, offline use); [`crate::api::ApiSource`] watches the Kubernetes
//! API server. [`crate::choice::StateSource`] is the choice between them as parts configure it.
//! See docs/design.md, "Contract 4: configuration".

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::time::Duration;

use verdict_policy::ClusterState;
use verdict_policy::manifests::load_dir_lenient;

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
        let Ok(files) = verdict_policy::manifests::manifest_files(&self.dir) else {
            return 0;
        };
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
