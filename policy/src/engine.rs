//! The compiled NetworkPolicy engine.
//!
//! [`Engine::build`] compiles a [`ClusterState`] once: selectors are matched against every pod up
//! front, so each policy knows the pods it isolates and each rule peer holds the set of pods it
//! admits as a bitset. [`Engine::evaluate`] then does no selector or YAML work: a connection costs
//! a few hash lookups, bit tests and port comparisons per policy that isolates the pod.
//!
//! Semantics (`networking.k8s.io/v1`, as GKE Dataplane V2 enforces it):
//! - a pod is isolated for a direction when at least one policy of its namespace selects it with
//!   that policy type; then only what some rule of those policies allows passes (the union);
//! - a connection passes only if the source's egress and the destination's ingress both allow it;
//!   only pod sides are enforced;
//! - a rule matches when a peer matches the other side (no peers: everything) and a port matches
//!   (no ports: every port and protocol); named ports resolve against the destination pod;
//! - traffic from the destination pod's own node (kubelet probes) is always allowed;
//! - a pod can always reach itself (that traffic never leaves its network namespace);
//! - `ipBlock` never matches pod IPs in [`IpBlockMode::DataplaneV2`]; it does in `Calico` mode;
//! - host-network pods are not enforced and are not selected by pod selectors: their traffic is
//!   the node's.

use std::collections::HashMap;
use std::net::IpAddr;

use verdict_schema::network_logging::{
    ENABLE_DENY_LOGGING_ANNOTATION, ENABLE_LOGGING_ANNOTATION, annotation_enabled,
};
use verdict_schema::{ClusterLogging, Direction, PodEndpoint, PolicyRef, Protocol};

use crate::cluster::ClusterState;
use crate::error::{Error, Result};
use crate::labels::{CompiledSelector, Labels};
use crate::model::{IpBlock, NetworkPolicy, NetworkPolicyPort, PolicyProtocol, PortSpec};

pub type PodId = u32;
pub type NamespaceId = u32;
pub type NodeId = u32;
pub type PolicyId = u32;

/// How `ipBlock` treats pod IPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IpBlockMode {
    /// GKE Dataplane V2 (Cilium): an ipBlock never matches a pod IP.
    #[default]
    DataplaneV2,
    /// Calico: an ipBlock matches pod IPs like any other address.
    Calico,
}

impl IpBlockMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "dataplane-v2" => Some(IpBlockMode::DataplaneV2),
            "calico" => Some(IpBlockMode::Calico),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IpBlockMode::DataplaneV2 => "dataplane-v2",
            IpBlockMode::Calico => "calico",
        }
    }
}

/// A rule as written: its peers (`from`/`to`) and its ports.
pub type RuleSource<'a> = (
    Option<&'a Vec<crate::model::Peer>>,
    Option<&'a Vec<NetworkPolicyPort>>,
);

/// A fixed-size set of pod ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSet(Vec<u64>);

impl PodSet {
    fn new(n: usize) -> Self {
        PodSet(vec![0; n.div_ceil(64)])
    }
    fn insert(&mut self, id: PodId) {
        self.0[id as usize / 64] |= 1 << (id % 64);
    }
    pub fn contains(&self, id: PodId) -> bool {
        self.0
            .get(id as usize / 64)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }
}

/// Namespace annotation that sets the enforcement mode of its pods (`audit` or `enforce`),
/// overriding the node agent's global mode.
pub const ENFORCEMENT_ANNOTATION: &str = "verdict.dev/enforcement";

/// Whether denied traffic is dropped (`enforce`) or only logged (`audit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EnforcementMode {
    #[default]
    Enforce,
    Audit,
}

impl EnforcementMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "enforce" => Some(EnforcementMode::Enforce),
            "audit" => Some(EnforcementMode::Audit),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NamespaceInfo {
    pub name: String,
    pub labels: Labels,
    /// `policy.network.gke.io/enable-deny-logging: "true"`.
    pub deny_logging: bool,
    /// `verdict.dev/enforcement` if set to a valid mode.
    pub enforcement: Option<EnforcementMode>,
}

#[derive(Debug, Clone)]
pub struct PodInfo {
    pub namespace: NamespaceId,
    pub name: String,
    pub labels: Labels,
    pub node_name: Option<String>,
    pub node: Option<NodeId>,
    pub ips: Vec<IpAddr>,
    pub host_network: bool,
    /// (name, protocol, port) of every named container port.
    pub named_ports: Vec<(String, PolicyProtocol, u16)>,
    /// The pod as it appears in records.
    pub endpoint: PodEndpoint,
}

#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub name: String,
    pub ips: Vec<IpAddr>,
}

/// The ports a compiled rule port admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortMatch {
    /// Every port of the protocol.
    Any,
    /// An inclusive range (a single port is `Range(p, p)`).
    Range(u16, u16),
    /// A named container port of the destination pod.
    Named(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledPort {
    pub protocol: PolicyProtocol,
    pub port: PortMatch,
}

/// A rule peer, compiled: the pods it admits, or an ipBlock.
#[derive(Debug, Clone)]
pub enum CompiledPeer {
    Pods(PodSet),
    IpBlock(IpBlock),
}

/// One ingress or egress rule, compiled (the datapath compiler reads these).
#[derive(Debug, Clone)]
pub struct CompiledRule {
    /// None: every peer.
    pub peers: Option<Vec<CompiledPeer>>,
    /// None: every port and protocol.
    pub ports: Option<Vec<CompiledPort>>,
}

/// A policy as compiled, with its source kept for explanations.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    pub namespace: String,
    pub name: String,
    /// `policy.network.gke.io/enable-logging: "true"`.
    pub logging_enabled: bool,
    pub affects_ingress: bool,
    pub affects_egress: bool,
    pub source: NetworkPolicy,
    pub pod_selector: CompiledSelector,
    ingress: Vec<CompiledRule>,
    egress: Vec<CompiledRule>,
}

impl CompiledPolicy {
    /// The policy's rules for a direction (empty if it does not affect that direction).
    pub fn rules(&self, d: Direction) -> &[CompiledRule] {
        match d {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    pub fn policy_ref(&self) -> PolicyRef {
        PolicyRef::network_policy(&self.namespace, &self.name)
    }
}

/// What one side of a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointKind {
    Pod(PodId),
    Node(NodeId),
    External,
}

/// One side of a connection, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResolvedEndpoint {
    pub ip: IpAddr,
    pub kind: EndpointKind,
}

impl ResolvedEndpoint {
    pub fn pod(&self) -> Option<PodId> {
        match self.kind {
            EndpointKind::Pod(p) => Some(p),
            _ => None,
        }
    }
}

/// A connection attempt to judge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub src: ResolvedEndpoint,
    pub dest: ResolvedEndpoint,
    pub protocol: Protocol,
    pub dest_port: u16,
}

/// Why a side reached its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The side is not a pod (or is a host-network pod): nothing to enforce.
    NotAPod,
    /// No policy isolates the pod in this direction: allowed by default.
    NotIsolated,
    /// At least one rule of an isolating policy matched.
    AllowedByPolicy,
    /// Traffic from the pod's own node (kubelet probes): always allowed.
    NodeLocal,
    /// A pod talking to itself.
    SamePod,
    /// Isolated and no rule matched.
    NoRuleMatched,
}

/// The verdict of one direction of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SideVerdict {
    pub direction: Direction,
    /// The pod this side enforces (source for egress, destination for ingress).
    pub enforced_pod: Option<PodId>,
    pub isolated: bool,
    pub allowed: bool,
    pub reason: Reason,
    /// Every policy that allows the connection, in (namespace, name) order.
    pub allowing: Vec<PolicyId>,
    /// Every policy that isolates the pod in this direction.
    pub isolating: Vec<PolicyId>,
}

/// Both directions of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub egress: SideVerdict,
    pub ingress: SideVerdict,
}

impl Verdict {
    /// A connection passes only if both directions allow it.
    pub fn allowed(&self) -> bool {
        self.egress.allowed && self.ingress.allowed
    }

    pub fn side(&self, d: Direction) -> &SideVerdict {
        match d {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// The compiled engine. Immutable: rebuild it when cluster state changes.
#[derive(Debug, Clone)]
pub struct Engine {
    mode: IpBlockMode,
    logging: ClusterLogging,
    namespaces: Vec<NamespaceInfo>,
    namespace_index: HashMap<String, NamespaceId>,
    pods: Vec<PodInfo>,
    pod_index: HashMap<(String, String), PodId>,
    pod_by_ip: HashMap<IpAddr, PodId>,
    nodes: Vec<NodeInfo>,
    node_index: HashMap<String, NodeId>,
    node_by_ip: HashMap<IpAddr, NodeId>,
    policies: Vec<CompiledPolicy>,
    ingress_of: Vec<Vec<PolicyId>>,
    egress_of: Vec<Vec<PolicyId>>,
    service_ips: Vec<IpAddr>,
}

impl Engine {
    /// Compiles cluster state. Fails on an invalid NetworkLogging (GKE's error text) and on two
    /// running pods claiming one IP.
    pub fn build(state: &ClusterState, mode: IpBlockMode) -> Result<Engine> {
        let logging = match &state.network_logging {
            Some(nl) => {
                nl.validate()?;
                nl.spec.cluster
            }
            None => ClusterLogging::default(),
        };
        let mut namespaces = Vec::new();
        let mut namespace_index = HashMap::new();
        for ns in &state.namespaces {
            let mut labels = ns.metadata.labels.clone();
            labels.insert(
                crate::model::NAMESPACE_NAME_LABEL.to_owned(),
                ns.metadata.name.clone(),
            );
            namespace_index.insert(ns.metadata.name.clone(), namespaces.len() as NamespaceId);
            namespaces.push(NamespaceInfo {
                name: ns.metadata.name.clone(),
                labels,
                deny_logging: annotation_enabled(
                    ns.metadata
                        .annotations
                        .get(ENABLE_DENY_LOGGING_ANNOTATION)
                        .map(String::as_str),
                ),
                enforcement: ns
                    .metadata
                    .annotations
                    .get(ENFORCEMENT_ANNOTATION)
                    .and_then(|v| EnforcementMode::parse(v)),
            });
        }
        let mut ns_id = |name: &str, namespaces: &mut Vec<NamespaceInfo>| -> NamespaceId {
            if let Some(id) = namespace_index.get(name) {
                return *id;
            }
            let id = namespaces.len() as NamespaceId;
            let labels = Labels::from([(
                crate::model::NAMESPACE_NAME_LABEL.to_owned(),
                name.to_owned(),
            )]);
            namespaces.push(NamespaceInfo {
                name: name.to_owned(),
                labels,
                deny_logging: false,
                enforcement: None,
            });
            namespace_index.insert(name.to_owned(), id);
            id
        };

        let mut nodes = Vec::new();
        let mut node_index = HashMap::new();
        let mut node_by_ip = HashMap::new();
        for n in &state.nodes {
            let id = nodes.len() as NodeId;
            let ips = n.ips();
            for ip in &ips {
                node_by_ip.insert(*ip, id);
            }
            node_index.insert(n.metadata.name.clone(), id);
            nodes.push(NodeInfo {
                name: n.metadata.name.clone(),
                ips,
            });
        }

        let mut pods = Vec::new();
        let mut pod_index = HashMap::new();
        let mut pod_by_ip: HashMap<IpAddr, PodId> = HashMap::new();
        for p in &state.pods {
            let ns_name = p.metadata.namespace_or_default();
            let namespace = ns_id(ns_name, &mut namespaces);
            let id = pods.len() as PodId;
            let ips = if p.is_terminated() {
                Vec::new()
            } else {
                p.ips()
            };
            let host_network = p.spec.host_network;
            if !host_network {
                for ip in &ips {
                    if let Some(other) = pod_by_ip.insert(*ip, id) {
                        let o: &PodInfo = &pods[other as usize];
                        return Err(Error::Endpoint(format!(
                            "pods {}/{} and {ns_name}/{} both have IP {ip}",
                            namespaces[o.namespace as usize].name, o.name, p.metadata.name
                        )));
                    }
                }
            }
            let workload = p.workload();
            let named_ports = p
                .container_ports()
                .filter_map(|c| c.name.clone().map(|n| (n, c.protocol, c.container_port)))
                .collect();
            let node_name = p.spec.node_name.clone();
            pod_index.insert((ns_name.to_owned(), p.metadata.name.clone()), id);
            pods.push(PodInfo {
                namespace,
                name: p.metadata.name.clone(),
                labels: p.metadata.labels.clone(),
                node: node_name.as_ref().and_then(|n| node_index.get(n).copied()),
                node_name,
                ips,
                host_network,
                named_ports,
                endpoint: PodEndpoint {
                    pod_name: p.metadata.name.clone(),
                    pod_namespace: ns_name.to_owned(),
                    namespace: Some(ns_name.to_owned()),
                    workload_name: workload.map(|w| w.name.clone()),
                    workload_kind: workload.map(|w| w.kind.clone()),
                },
            });
        }

        // Pods per namespace, for selector matching.
        let mut pods_in_ns: Vec<Vec<PodId>> = vec![Vec::new(); namespaces.len()];
        for (id, p) in pods.iter().enumerate() {
            if !p.host_network {
                pods_in_ns[p.namespace as usize].push(id as PodId);
            }
        }

        let mut sorted: Vec<&NetworkPolicy> = state.policies.iter().collect();
        sorted.sort_by(|a, b| {
            (a.metadata.namespace_or_default(), &a.metadata.name)
                .cmp(&(b.metadata.namespace_or_default(), &b.metadata.name))
        });
        let mut policies = Vec::with_capacity(sorted.len());
        let mut ingress_of = vec![Vec::new(); pods.len()];
        let mut egress_of = vec![Vec::new(); pods.len()];
        for p in sorted {
            let ns_name = p.metadata.namespace_or_default().to_owned();
            let ns = ns_id(&ns_name, &mut namespaces);
            if pods_in_ns.len() < namespaces.len() {
                pods_in_ns.resize(namespaces.len(), Vec::new());
            }
            let id = policies.len() as PolicyId;
            let (affects_ingress, affects_egress) = p.effective_policy_types();
            let pod_selector = p.spec.pod_selector.compile();
            for &pod in &pods_in_ns[ns as usize] {
                if pod_selector.matches(&pods[pod as usize].labels) {
                    if affects_ingress {
                        ingress_of[pod as usize].push(id);
                    }
                    if affects_egress {
                        egress_of[pod as usize].push(id);
                    }
                }
            }
            let compile_rules = |rules: Vec<RuleSource<'_>>| {
                rules
                    .into_iter()
                    .map(|(peers, ports)| CompiledRule {
                        peers: peers.filter(|v| !v.is_empty()).map(|v| {
                            v.iter()
                                .map(|peer| compile_peer(peer, ns, &namespaces, &pods_in_ns, &pods))
                                .collect()
                        }),
                        ports: ports
                            .filter(|v| !v.is_empty())
                            .map(|v| v.iter().map(compile_port).collect()),
                    })
                    .collect::<Vec<_>>()
            };
            let ingress = if affects_ingress {
                compile_rules(
                    p.spec
                        .ingress
                        .iter()
                        .flatten()
                        .map(|r| (r.from.as_ref(), r.ports.as_ref()))
                        .collect(),
                )
            } else {
                Vec::new()
            };
            let egress = if affects_egress {
                compile_rules(
                    p.spec
                        .egress
                        .iter()
                        .flatten()
                        .map(|r| (r.to.as_ref(), r.ports.as_ref()))
                        .collect(),
                )
            } else {
                Vec::new()
            };
            policies.push(CompiledPolicy {
                namespace: ns_name,
                name: p.metadata.name.clone(),
                logging_enabled: annotation_enabled(
                    p.metadata
                        .annotations
                        .get(ENABLE_LOGGING_ANNOTATION)
                        .map(String::as_str),
                ),
                affects_ingress,
                affects_egress,
                source: p.clone(),
                pod_selector,
                ingress,
                egress,
            });
        }

        Ok(Engine {
            mode,
            logging,
            namespaces,
            namespace_index,
            pods,
            pod_index,
            pod_by_ip,
            nodes,
            node_index,
            node_by_ip,
            policies,
            ingress_of,
            egress_of,
            service_ips: state.services.iter().flat_map(|s| s.ips()).collect(),
        })
    }

    /// Every Service ClusterIP (connections to them are judged after DNAT, by backend).
    pub fn service_ips(&self) -> &[IpAddr] {
        &self.service_ips
    }

    pub fn mode(&self) -> IpBlockMode {
        self.mode
    }

    /// The NetworkLogging settings in force.
    pub fn logging(&self) -> ClusterLogging {
        self.logging
    }

    pub fn pods(&self) -> &[PodInfo] {
        &self.pods
    }

    pub fn pod(&self, id: PodId) -> &PodInfo {
        &self.pods[id as usize]
    }

    pub fn namespace(&self, id: NamespaceId) -> &NamespaceInfo {
        &self.namespaces[id as usize]
    }

    pub fn namespaces(&self) -> &[NamespaceInfo] {
        &self.namespaces
    }

    pub fn node(&self, id: NodeId) -> &NodeInfo {
        &self.nodes[id as usize]
    }

    pub fn policies(&self) -> &[CompiledPolicy] {
        &self.policies
    }

    pub fn policy(&self, id: PolicyId) -> &CompiledPolicy {
        &self.policies[id as usize]
    }

    /// Policies isolating a pod in a direction.
    pub fn isolating(&self, pod: PodId, d: Direction) -> &[PolicyId] {
        match d {
            Direction::Ingress => &self.ingress_of[pod as usize],
            Direction::Egress => &self.egress_of[pod as usize],
        }
    }

    pub fn namespace_id(&self, name: &str) -> Option<NamespaceId> {
        self.namespace_index.get(name).copied()
    }

    pub fn find_pod(&self, namespace: &str, name: &str) -> Result<PodId> {
        if !self.namespace_index.contains_key(namespace) {
            return Err(Error::UnknownNamespace(namespace.to_owned()));
        }
        self.pod_index
            .get(&(namespace.to_owned(), name.to_owned()))
            .copied()
            .ok_or_else(|| Error::UnknownPod {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            })
    }

    /// The id of a policy by namespace and name.
    pub fn find_policy(&self, namespace: &str, name: &str) -> Option<PolicyId> {
        self.policies
            .iter()
            .position(|p| p.namespace == namespace && p.name == name)
            .map(|i| i as PolicyId)
    }

    /// Every address of a node.
    pub fn node_ips(&self, id: NodeId) -> &[IpAddr] {
        &self.nodes[id as usize].ips
    }

    pub fn find_node(&self, name: &str) -> Result<NodeId> {
        self.node_index
            .get(name)
            .copied()
            .ok_or_else(|| Error::UnknownNode(name.to_owned()))
    }

    /// What an IP is: a (non-host-network) pod, a node, or something outside the cluster.
    pub fn resolve_ip(&self, ip: IpAddr) -> ResolvedEndpoint {
        let kind = if let Some(p) = self.pod_by_ip.get(&ip) {
            EndpointKind::Pod(*p)
        } else if let Some(n) = self.node_by_ip.get(&ip) {
            EndpointKind::Node(*n)
        } else {
            EndpointKind::External
        };
        ResolvedEndpoint { ip, kind }
    }

    /// Judges both directions of a connection.
    pub fn evaluate(&self, flow: &Flow) -> Verdict {
        Verdict {
            egress: self.evaluate_side(flow, Direction::Egress),
            ingress: self.evaluate_side(flow, Direction::Ingress),
        }
    }

    /// Judges one direction: egress on the source pod, ingress on the destination pod.
    pub fn evaluate_side(&self, flow: &Flow, direction: Direction) -> SideVerdict {
        let (enforced, peer) = match direction {
            Direction::Egress => (flow.src, flow.dest),
            Direction::Ingress => (flow.dest, flow.src),
        };
        let Some(pod) = enforced.pod() else {
            return SideVerdict {
                direction,
                enforced_pod: None,
                isolated: false,
                allowed: true,
                reason: Reason::NotAPod,
                allowing: Vec::new(),
                isolating: Vec::new(),
            };
        };
        let isolating = self.isolating(pod, direction).to_vec();
        let isolated = !isolating.is_empty();
        let mut verdict = SideVerdict {
            direction,
            enforced_pod: Some(pod),
            isolated,
            allowed: true,
            reason: Reason::NotIsolated,
            allowing: Vec::new(),
            isolating,
        };
        if flow.src.pod().is_some() && flow.src.pod() == flow.dest.pod() {
            verdict.reason = Reason::SamePod;
            verdict.allowing = self.allowing_policies(flow, direction, pod, peer);
            return verdict;
        }
        if direction == Direction::Ingress && self.is_from_own_node(pod, flow.src.ip) {
            verdict.reason = Reason::NodeLocal;
            return verdict;
        }
        if !isolated {
            return verdict;
        }
        verdict.allowing = self.allowing_policies(flow, direction, pod, peer);
        if verdict.allowing.is_empty() {
            verdict.allowed = false;
            verdict.reason = Reason::NoRuleMatched;
        } else {
            verdict.reason = Reason::AllowedByPolicy;
        }
        verdict
    }

    /// The enforcement mode of a pod: its namespace's annotation, else `default`.
    pub fn enforcement_mode(&self, pod: PodId, default: EnforcementMode) -> EnforcementMode {
        self.namespace(self.pod(pod).namespace)
            .enforcement
            .unwrap_or(default)
    }

    /// Whether `ip` is an address of the node the pod runs on.
    pub fn is_from_own_node(&self, pod: PodId, ip: IpAddr) -> bool {
        self.pods[pod as usize]
            .node
            .is_some_and(|n| self.nodes[n as usize].ips.contains(&ip))
    }

    fn allowing_policies(
        &self,
        flow: &Flow,
        direction: Direction,
        pod: PodId,
        peer: ResolvedEndpoint,
    ) -> Vec<PolicyId> {
        self.isolating(pod, direction)
            .iter()
            .copied()
            .filter(|&id| {
                let p = &self.policies[id as usize];
                let rules = match direction {
                    Direction::Ingress => &p.ingress,
                    Direction::Egress => &p.egress,
                };
                rules.iter().any(|r| self.rule_matches(r, flow, peer))
            })
            .collect()
    }

    fn rule_matches(&self, rule: &CompiledRule, flow: &Flow, peer: ResolvedEndpoint) -> bool {
        let ports_ok = match &rule.ports {
            None => true,
            Some(ports) => ports.iter().any(|p| self.port_matches(p, flow)),
        };
        ports_ok
            && match &rule.peers {
                None => true,
                Some(peers) => peers.iter().any(|p| self.peer_matches(p, peer)),
            }
    }

    fn peer_matches(&self, peer: &CompiledPeer, endpoint: ResolvedEndpoint) -> bool {
        match (peer, endpoint.kind) {
            (CompiledPeer::Pods(set), EndpointKind::Pod(id)) => set.contains(id),
            (CompiledPeer::Pods(_), _) => false,
            (CompiledPeer::IpBlock(_), EndpointKind::Pod(_))
                if self.mode == IpBlockMode::DataplaneV2 =>
            {
                false
            }
            (CompiledPeer::IpBlock(b), _) => b.contains(&endpoint.ip),
        }
    }

    /// Whether one `ports` entry of a rule admits the flow (named ports resolved against the
    /// destination pod) — the rule semantics, for explanations of source rules.
    pub fn port_spec_matches(&self, port: &NetworkPolicyPort, flow: &Flow) -> bool {
        self.port_matches(&compile_port(port), flow)
    }

    fn port_matches(&self, port: &CompiledPort, flow: &Flow) -> bool {
        if Some(port.protocol.as_str()) != flow.protocol.kubernetes_name() {
            return false;
        }
        match &port.port {
            PortMatch::Any => true,
            PortMatch::Range(lo, hi) => (*lo..=*hi).contains(&flow.dest_port),
            PortMatch::Named(name) => flow.dest.pod().is_some_and(|d| {
                self.pods[d as usize]
                    .named_ports
                    .iter()
                    .any(|(n, proto, num)| {
                        n == name && *proto == port.protocol && *num == flow.dest_port
                    })
            }),
        }
    }
}

fn compile_port(p: &NetworkPolicyPort) -> CompiledPort {
    CompiledPort {
        protocol: p.protocol_or_default(),
        port: match (&p.port, p.end_port) {
            (None, _) => PortMatch::Any,
            (Some(PortSpec::Number(n)), None) => PortMatch::Range(*n, *n),
            (Some(PortSpec::Number(n)), Some(e)) => PortMatch::Range(*n, e),
            (Some(PortSpec::Name(name)), _) => PortMatch::Named(name.clone()),
        },
    }
}

fn compile_peer(
    peer: &crate::model::Peer,
    policy_ns: NamespaceId,
    namespaces: &[NamespaceInfo],
    pods_in_ns: &[Vec<PodId>],
    pods: &[PodInfo],
) -> CompiledPeer {
    if let Some(b) = &peer.ip_block {
        return CompiledPeer::IpBlock(b.clone());
    }
    let mut set = PodSet::new(pods.len());
    let pod_sel = peer.pod_selector.as_ref().map(|s| s.compile());
    let ns_ids: Vec<NamespaceId> = match &peer.namespace_selector {
        None => vec![policy_ns],
        Some(s) => {
            let s = s.compile();
            (0..namespaces.len() as NamespaceId)
                .filter(|&i| s.matches(&namespaces[i as usize].labels))
                .collect()
        }
    };
    for ns in ns_ids {
        for &pod in pods_in_ns
            .get(ns as usize)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            if pod_sel
                .as_ref()
                .is_none_or(|s| s.matches(&pods[pod as usize].labels))
            {
                set.insert(pod);
            }
        }
    }
    CompiledPeer::Pods(set)
}
