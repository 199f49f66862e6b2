//! A snapshot of the cluster state the engine is built from.

use std::collections::{BTreeMap, BTreeSet};

use verdict_schema::NetworkLogging;

use crate::model::{
    EndpointSlice, NAMESPACE_NAME_LABEL, Namespace, NetworkPolicy, Node, ObjectMeta, Pod, Service,
};

/// Namespaces every cluster has; referring to them without declaring them is not worth a warning.
pub const BUILTIN_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Where an object was read from (for warnings and errors that point at it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: std::path::PathBuf,
    pub line: usize,
}

/// Everything the engine needs to know about a cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    pub namespaces: Vec<Namespace>,
    pub pods: Vec<Pod>,
    pub nodes: Vec<Node>,
    pub services: Vec<Service>,
    /// `discovery.k8s.io/v1` EndpointSlices: the Services' backends.
    pub endpoint_slices: Vec<EndpointSlice>,
    pub policies: Vec<NetworkPolicy>,
    /// The cluster's NetworkLogging, if any (absent: nothing is logged).
    pub network_logging: Option<NetworkLogging>,
    /// Source locations, keyed by `Kind namespace/name` (or `Kind name` for cluster objects).
    pub origins: BTreeMap<String, Origin>,
}

/// `Kind namespace/name`, the key of [`ClusterState::origins`].
pub fn object_key(kind: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

impl ClusterState {
    /// The ready backend addresses of `service`, from the EndpointSlices labelled with its
    /// name, without duplicates (a backend can be listed by several slices).
    pub fn service_backends(&self, service: &Service) -> Vec<std::net::IpAddr> {
        let key = (
            service.metadata.namespace_or_default(),
            service.metadata.name.as_str(),
        );
        let mut ips: Vec<std::net::IpAddr> = Vec::new();
        for slice in self
            .endpoint_slices
            .iter()
            .filter(|s| s.service() == Some(key))
        {
            for ip in slice.ready_ips() {
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
        }
        ips
    }

    /// Adds the Namespaces that pods or policies refer to but that were not declared, with only
    /// the automatic `kubernetes.io/metadata.name` label, and returns their names.
    pub fn add_implicit_namespaces(&mut self) -> Vec<String> {
        let declared: BTreeSet<String> = self
            .namespaces
            .iter()
            .map(|n| n.metadata.name.clone())
            .collect();
        let mut referenced: BTreeSet<String> = BTreeSet::new();
        for p in &self.pods {
            referenced.insert(p.metadata.namespace_or_default().to_owned());
        }
        for p in &self.policies {
            referenced.insert(p.metadata.namespace_or_default().to_owned());
        }
        for b in BUILTIN_NAMESPACES {
            referenced.insert(b.to_owned());
        }
        let mut added = Vec::new();
        for name in referenced.difference(&declared) {
            self.namespaces.push(Namespace {
                metadata: ObjectMeta {
                    name: name.clone(),
                    ..ObjectMeta::default()
                },
            });
            added.push(name.clone());
        }
        self.apply_namespace_name_labels();
        added
    }

    /// Sets `kubernetes.io/metadata.name=<name>` on every Namespace, as the API server does
    /// (Kubernetes ≥ 1.21) whatever the manifest said.
    pub fn apply_namespace_name_labels(&mut self) {
        for ns in &mut self.namespaces {
            ns.metadata
                .labels
                .insert(NAMESPACE_NAME_LABEL.to_owned(), ns.metadata.name.clone());
        }
    }
}
