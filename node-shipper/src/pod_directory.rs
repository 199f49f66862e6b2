//! Who an IP address is, from cluster state: the pod that holds it (with its workload and
//! node), else a Service or a node by name. Built from a [`ClusterState`] (which a
//! [`verdict_cluster::ClusterSource`] produces), replaced whole on every change.
//!
//! IPs that are none of these are named by reverse DNS ([`ReverseDns`], cached) for Kubernetes
//! Events only; records keep `{"instance": IP}` as GKE writes non-pod endpoints.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use verdict_policy::ClusterState;
use verdict_schema::{Endpoint, PodEndpoint};

/// A pod as records and Events need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub name: String,
    pub namespace: String,
    pub workload_name: Option<String>,
    pub workload_kind: Option<String>,
    pub node_name: Option<String>,
}

impl PodInfo {
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::Pod(PodEndpoint {
            pod_name: self.name.clone(),
            pod_namespace: self.namespace.clone(),
            namespace: Some(self.namespace.clone()),
            workload_name: self.workload_name.clone(),
            workload_kind: self.workload_kind.clone(),
        })
    }
}

/// IP → pod / Service / node of one cluster state.
#[derive(Debug, Default)]
pub struct PodDirectory {
    pods: HashMap<IpAddr, PodInfo>,
    /// Services (ClusterIPs) and nodes by address, for naming the other side in Events.
    names: HashMap<IpAddr, String>,
}

impl PodDirectory {
    pub fn from_state(state: &ClusterState) -> Self {
        let mut d = PodDirectory::default();
        for pod in &state.pods {
            if pod.is_terminated() || pod.spec.host_network {
                continue;
            }
            let workload = pod.workload();
            let info = PodInfo {
                name: pod.metadata.name.clone(),
                namespace: pod.metadata.namespace_or_default().to_owned(),
                workload_name: workload.map(|w| w.name.clone()),
                workload_kind: workload.map(|w| w.kind.clone()),
                node_name: pod.spec.node_name.clone(),
            };
            for ip in pod.ips() {
                d.pods.insert(ip, info.clone());
            }
        }
        for svc in &state.services {
            for ip in svc.ips() {
                d.names.insert(ip, svc.metadata.name.clone());
            }
        }
        for node in &state.nodes {
            for ip in node.ips() {
                d.names
                    .entry(ip)
                    .or_insert_with(|| node.metadata.name.clone());
            }
        }
        d
    }

    pub fn pod(&self, ip: &IpAddr) -> Option<&PodInfo> {
        self.pods.get(ip)
    }

    /// The record endpoint for `ip`: its pod, else `{"instance": ip}`.
    pub fn endpoint(&self, ip: IpAddr) -> Endpoint {
        self.pods
            .get(&ip)
            .map_or(Endpoint::Instance { instance: ip }, PodInfo::endpoint)
    }

    /// A Service or node name for `ip`, if the cluster state has one.
    pub fn name(&self, ip: &IpAddr) -> Option<&str> {
        self.names.get(ip).map(String::as_str)
    }
}

/// Reverse DNS (PTR through the system resolver), cached with a time to live, negative
/// answers included.
#[derive(Debug)]
pub struct ReverseDns {
    ttl: Duration,
    max_entries: usize,
    cache: Mutex<HashMap<IpAddr, (Instant, Option<String>)>>,
}

impl ReverseDns {
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        ReverseDns {
            ttl,
            max_entries: max_entries.max(1),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The cached answer, if fresh.
    fn cached(&self, ip: &IpAddr) -> Option<Option<String>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(ip)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, name)| name.clone())
    }

    /// The host name of `ip`, or None. Blocking lookups run on the blocking pool.
    pub async fn lookup(&self, ip: IpAddr) -> Option<String> {
        if let Some(answer) = self.cached(&ip) {
            return answer;
        }
        let answer = tokio::task::spawn_blocking(move || dns_lookup::lookup_addr(&ip).ok())
            .await
            .ok()
            .flatten()
            // getnameinfo answers with the address itself when there is no name.
            .filter(|name| name.parse::<IpAddr>().is_err());
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= self.max_entries {
            let ttl = self.ttl;
            cache.retain(|_, (at, _)| at.elapsed() < ttl);
            if cache.len() >= self.max_entries {
                cache.clear();
            }
        }
        cache.insert(ip, (Instant::now(), answer.clone()));
        answer
    }
}
