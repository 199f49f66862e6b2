//! The configured choice of cluster-state source ([`StateSource`]) and the flags that make it
//! ([`StateArgs`]): the Kubernetes API server, or a folder of manifests.

use std::path::PathBuf;
use std::time::Duration;

use crate::api::{ApiOptions, ApiSource, ApiSourceOptions};
use crate::source::{ClusterSource, ManifestDirSource, SourceError, StateUpdate};

/// Where a part reads cluster state from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateSource {
    /// A folder of manifests, checked for changes every `interval`.
    Manifests { dir: PathBuf, interval: Duration },
    /// The Kubernetes API server (in-cluster, or a kubeconfig).
    Api(ApiOptions),
}

impl StateSource {
    /// Connects. `report_as` is the node an API source reports an invalid NetworkLogging from
    /// (the node agent); `None` only reads.
    pub async fn open(&self, report_as: Option<String>) -> Result<OpenSource, SourceError> {
        Ok(match self {
            StateSource::Manifests { dir, interval } => {
                OpenSource::Manifests(ManifestDirSource::new(dir.clone(), *interval))
            }
            StateSource::Api(options) => {
                let client = crate::api::connect(options).await?;
                OpenSource::Api(Box::new(ApiSource::start(
                    client,
                    ApiSourceOptions {
                        report_as,
                        ..ApiSourceOptions::default()
                    },
                )))
            }
        })
    }

    /// One read of the state, without watching (the CLI).
    pub async fn read_once(&self) -> Result<StateUpdate, SourceError> {
        match self {
            StateSource::Manifests { dir, interval } => {
                ManifestDirSource::new(dir.clone(), *interval)
                    .next_state()
                    .await
            }
            StateSource::Api(options) => {
                crate::api::list_state(&crate::api::connect(options).await?).await
            }
        }
    }

    /// What the source is, for logs.
    pub fn describe(&self) -> String {
        match self {
            StateSource::Manifests { dir, .. } => format!("manifests in {}", dir.display()),
            StateSource::Api(o) => match (&o.kubeconfig, &o.context) {
                (Some(k), c) => format!(
                    "the Kubernetes API (kubeconfig {}{})",
                    k.display(),
                    c.as_ref()
                        .map(|c| format!(", context {c}"))
                        .unwrap_or_default()
                ),
                (None, Some(c)) => format!("the Kubernetes API (context {c})"),
                (None, None) => "the Kubernetes API".to_owned(),
            },
        }
    }
}

/// An open [`StateSource`].
#[derive(Debug)]
pub enum OpenSource {
    Manifests(ManifestDirSource),
    Api(Box<ApiSource>),
}

impl ClusterSource for OpenSource {
    async fn next_state(&mut self) -> Result<StateUpdate, SourceError> {
        match self {
            OpenSource::Manifests(s) => s.next_state().await,
            OpenSource::Api(s) => s.next_state().await,
        }
    }
}

/// The command-line flags that choose a [`StateSource`], shared by the node agent, the shipper
/// and the CLI: `--manifests DIR`, or the API server (`--kubeconfig`, `--context`; in-cluster
/// when running in a pod).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StateArgs {
    /// A folder of manifests (`.yaml`, `.yml`, `.json`: Namespaces, Pods, Nodes, Services,
    /// EndpointSlices, NetworkPolicies, NetworkLogging), re-read when it changes, instead of the
    /// Kubernetes API.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["kubeconfig", "context"])]
    pub manifests: Option<PathBuf>,
    /// The kubeconfig to reach the API server with (default: in-cluster when running in a pod,
    /// else $KUBECONFIG or ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

impl StateArgs {
    /// The source these flags choose; a manifest folder is checked every `interval`.
    pub fn source(&self, interval: Duration) -> StateSource {
        match &self.manifests {
            Some(dir) => StateSource::Manifests {
                dir: dir.clone(),
                interval,
            },
            None => StateSource::Api(ApiOptions {
                kubeconfig: self.kubeconfig.clone(),
                context: self.context.clone(),
            }),
        }
    }
}
