//! Cluster state from the Kubernetes API server.
//!
//! - [`ApiOptions`] / [`connect`]: in-cluster configuration when running in a pod (the service
//!   account's token, re-read as kubelet rotates it, and CA), otherwise a kubeconfig
//!   (`--kubeconfig`, `$KUBECONFIG`, `~/.kube/config`) and its current or a chosen context.
//! - [`ApiSource`]: a [`crate::ClusterSource`] over watchers (list, then watch from the list's
//!   `resourceVersion`; relist after `410 Gone`; reconnect with backoff) that keep a compact
//!   store per kind — Pods, Namespaces, Nodes, Services, EndpointSlices, NetworkPolicies and
//!   NetworkLogging — and produce a whole state once every kind has listed, then after each
//!   change.
//! - [`list_state`]: one consistent read of the same kinds (the CLI's read-only view).
//! - [`crd`]: the NetworkLogging custom resource and its CustomResourceDefinition.
//! - [`events`]: posting core/v1 Events with a rate limit and backoff.
//! - [`review`]: who a node's ServiceAccount token belongs to (TokenReview), for the collector.

pub mod crd;
pub mod events;
mod kinds;
pub mod review;
mod watch;

use std::path::PathBuf;

pub use kinds::Kind;
pub use watch::{ApiSource, ApiSourceOptions, list_state};

use crate::source::SourceError;

/// How to reach the API server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiOptions {
    /// A kubeconfig file; default: in-cluster when running in a pod
    /// (`$KUBERNETES_SERVICE_HOST` set), else `$KUBECONFIG` or `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// A context of the kubeconfig; default: its current context.
    pub context: Option<String>,
}

/// The name errors about the API server carry.
pub(crate) const API_SOURCE: &str = "the Kubernetes API";

pub(crate) fn api_error(message: impl Into<String>) -> SourceError {
    SourceError {
        source_name: API_SOURCE.to_owned(),
        message: message.into(),
    }
}

/// A client for the API server that `options` name.
pub async fn connect(options: &ApiOptions) -> Result<kube::Client, SourceError> {
    client_for(config(options).await?)
}

/// A client for `config` (e.g. with kube's own retries off, for a caller that retries and counts
/// retries itself).
pub fn client_for(config: kube::Config) -> Result<kube::Client, SourceError> {
    // rustls picks a process-wide crypto provider only when exactly one is compiled in; a build
    // that links both ring and aws-lc-rs (the CLI with the collector) must choose. Ring, as the
    // rest of Verdict's TLS; an already installed provider is kept.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = config.cluster_url.to_string();
    kube::Client::try_from(config).map_err(|e| api_error(format!("client for {server}: {e}")))
}

/// Whether [`ApiOptions::default`] finds an API server: running in a pod, or a kubeconfig named
/// by `$KUBECONFIG` or at `~/.kube/config`.
pub fn default_available() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        || std::env::var_os("KUBECONFIG").is_some()
        || std::env::var_os("HOME")
            .is_some_and(|h| std::path::Path::new(&h).join(".kube/config").is_file())
}

/// The client configuration that `options` name.
pub async fn config(options: &ApiOptions) -> Result<kube::Config, SourceError> {
    let in_pod = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let config = if options.kubeconfig.is_none() && options.context.is_none() && in_pod {
        kube::Config::incluster()
            .map_err(|e| api_error(format!("in-cluster configuration: {e}")))?
    } else {
        let kubeconfig = match &options.kubeconfig {
            Some(path) => kube::config::Kubeconfig::read_from(path)
                .map_err(|e| api_error(format!("kubeconfig {}: {e}", path.display())))?,
            None => kube::config::Kubeconfig::read().map_err(|e| {
                api_error(format!("kubeconfig ($KUBECONFIG or ~/.kube/config): {e}"))
            })?,
        };
        let chosen = kube::config::KubeConfigOptions {
            context: options.context.clone(),
            ..Default::default()
        };
        kube::Config::from_custom_kubeconfig(kubeconfig, &chosen)
            .await
            .map_err(|e| api_error(format!("kubeconfig: {e}")))?
    };
    Ok(config)
}

/// Says what a failed API call means for the operator: RBAC refusals name the permission to
/// grant, a missing resource names what to install.
pub(crate) fn explain_error(kind: Kind, error: &kube::Error) -> String {
    let resource = kind.plural();
    match error {
        kube::Error::Api(status) if status.code == 403 => format!(
            "forbidden: this identity may not list/watch {resource} ({}); grant list and \
             watch on {resource}{} (the Helm chart's ClusterRole in deploy/helm/verdict does)",
            status.message,
            kind.api_group_suffix()
        ),
        kube::Error::Api(status) if status.code == 401 => format!(
            "unauthorized reading {resource}: the credentials were refused ({})",
            status.message
        ),
        kube::Error::Api(status) if status.code == 404 => format!(
            "{resource}: the API server does not serve this resource{} ({})",
            if kind == Kind::NetworkLogging {
                " (install deploy/helm/verdict/crds/networklogging.yaml)"
            } else {
                ""
            },
            status.message
        ),
        kube::Error::Api(status) => format!(
            "{resource}: HTTP {} {}: {}",
            status.code, status.reason, status.message
        ),
        other => format!("{resource}: {other}"),
    }
}
