//! The Kubernetes objects the engine needs, as they appear in manifests or the API:
//! Namespaces, Pods, Nodes, Services and `networking.k8s.io/v1` NetworkPolicies.
//!
//! Objects other than NetworkPolicy keep only the fields Verdict uses and ignore the rest, so real
//! `kubectl get -o yaml` output loads. NetworkPolicy specs are parsed strictly
//! (`deny_unknown_fields`) and validated as the API server would, because a misspelt field in a
//! policy silently changes what it allows.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::labels::{LabelSelector, Labels};

/// The namespace objects land in when their metadata names none (as `kubectl apply`).
pub const DEFAULT_NAMESPACE: &str = "default";
/// The label the API server puts on every Namespace (Kubernetes ≥ 1.21).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: Labels,
    #[serde(default, deserialize_with = "null_as_default")]
    pub annotations: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub owner_references: Vec<OwnerReference>,
}

impl ObjectMeta {
    pub fn namespace_or_default(&self) -> &str {
        self.namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(DEFAULT_NAMESPACE)
    }
}

/// `null` in YAML means "not set" for Kubernetes; serde's `default` only covers "absent".
pub(crate) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn push_unique(ips: &mut Vec<IpAddr>, ip: IpAddr) {
    if !ips.contains(&ip) {
        ips.push(ip);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerReference {
    #[serde(default)]
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub controller: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Namespace {
    pub metadata: ObjectMeta,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Pod {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodSpec,
    #[serde(default)]
    pub status: PodStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default)]
    pub host_network: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub containers: Vec<Container>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub init_containers: Vec<Container>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Container {
    #[serde(default)]
    pub name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub ports: Vec<ContainerPort>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub container_port: u16,
    #[serde(default)]
    pub protocol: PolicyProtocol,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<IpAddr>,
    #[serde(default, rename = "podIPs", deserialize_with = "null_as_default")]
    pub pod_ips: Vec<PodIp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodIp {
    pub ip: IpAddr,
}

impl Pod {
    /// All the pod's IPs: `status.podIPs`, plus `status.podIP` if it is not among them; the
    /// primary (`podIP`) first.
    pub fn ips(&self) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = self.status.pod_ip.into_iter().collect();
        for p in &self.status.pod_ips {
            push_unique(&mut ips, p.ip);
        }
        ips
    }

    /// Terminated pods hold no IP any more (their IP may already belong to another pod).
    pub fn is_terminated(&self) -> bool {
        matches!(self.status.phase.as_deref(), Some("Succeeded" | "Failed"))
    }

    /// The pod's workload for records: the controller owner reference, else the first one.
    pub fn workload(&self) -> Option<&OwnerReference> {
        let refs = &self.metadata.owner_references;
        refs.iter()
            .find(|r| r.controller == Some(true))
            .or_else(|| refs.first())
    }

    /// Every declared container port (init containers too, as kube-proxy and Cilium do).
    pub fn container_ports(&self) -> impl Iterator<Item = &ContainerPort> {
        self.spec
            .containers
            .iter()
            .chain(&self.spec.init_containers)
            .flat_map(|c| &c.ports)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Node {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: NodeSpec,
    #[serde(default)]
    pub status: NodeStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSpec {
    #[serde(default, rename = "podCIDR", skip_serializing_if = "Option::is_none")]
    pub pod_cidr: Option<String>,
    #[serde(default, rename = "podCIDRs", deserialize_with = "null_as_default")]
    pub pod_cidrs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeStatus {
    #[serde(default, deserialize_with = "null_as_default")]
    pub addresses: Vec<NodeAddress>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddress {
    #[serde(rename = "type")]
    pub address_type: String,
    pub address: String,
}

impl Node {
    /// The node's IP addresses: InternalIP first, then ExternalIP, then the router address of
    /// each pod CIDR (its first host address, where Dataplane V2/Cilium put `cilium_host`: the
    /// source of kubelet probes, which seed 000 notes "does not correspond to any Pods or
    /// nodes"). Host names are skipped.
    pub fn ips(&self) -> Vec<IpAddr> {
        let mut ips = Vec::new();
        for kind in ["InternalIP", "ExternalIP"] {
            let addresses = self
                .status
                .addresses
                .iter()
                .filter(|a| a.address_type == kind);
            for ip in addresses.filter_map(|a| a.address.parse::<IpAddr>().ok()) {
                push_unique(&mut ips, ip);
            }
        }
        for cidr in self.spec.pod_cidr.iter().chain(&self.spec.pod_cidrs) {
            if let Ok(net) = cidr.parse::<IpNet>() {
                push_unique(&mut ips, net.hosts().next().unwrap_or(net.network()));
            }
        }
        ips
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Service {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ServiceSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(default, rename = "clusterIP", skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
    #[serde(default, rename = "clusterIPs", deserialize_with = "null_as_default")]
    pub cluster_ips: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub selector: Labels,
}

impl Service {
    /// ClusterIPs that are addresses (not `None` for headless services).
    pub fn ips(&self) -> Vec<IpAddr> {
        let mut ips = Vec::new();
        let all = self.spec.cluster_ip.iter().chain(&self.spec.cluster_ips);
        for ip in all.filter_map(|s| s.parse::<IpAddr>().ok()) {
            push_unique(&mut ips, ip);
        }
        ips
    }
}

/// The label that names an EndpointSlice's Service (`discovery.k8s.io/v1`).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A `discovery.k8s.io/v1` EndpointSlice: where a Service's connections go. Service backends
/// come from these (as kube-proxy and Dataplane V2 route), not from the Service's selector:
/// a Service without a selector, or one whose slices list a backend outside it, is seen as the
/// cluster routes it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSlice {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub address_type: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub endpoints: Vec<SliceEndpoint>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub ports: Vec<SlicePort>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SliceEndpoint {
    #[serde(default, deserialize_with = "null_as_default")]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub conditions: SliceConditions,
}

/// `ready` absent means ready (the API reference: "nil should be interpreted as true").
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SliceConditions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlicePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default)]
    pub protocol: PolicyProtocol,
}

impl EndpointSlice {
    /// The Service this slice belongs to (`namespace`, `name`), from its label.
    pub fn service(&self) -> Option<(&str, &str)> {
        let name = self.metadata.labels.get(SERVICE_NAME_LABEL)?;
        Some((self.metadata.namespace_or_default(), name.as_str()))
    }

    /// Addresses of the ready endpoints.
    pub fn ready_ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.endpoints
            .iter()
            .filter(|e| e.conditions.ready != Some(false))
            .flat_map(|e| &e.addresses)
            .filter_map(|a| a.parse::<IpAddr>().ok())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPolicy {
    pub metadata: ObjectMeta,
    pub spec: NetworkPolicySpec,
}

impl NetworkPolicy {
    /// `policyTypes` after the API server's defaulting: as written if non-empty; otherwise
    /// Ingress, plus Egress when the spec has at least one egress rule.
    pub fn effective_policy_types(&self) -> (bool, bool) {
        match &self.spec.policy_types {
            Some(types) if !types.is_empty() => (
                types.contains(&PolicyType::Ingress),
                types.contains(&PolicyType::Egress),
            ),
            _ => (
                true,
                self.spec.egress.as_ref().is_some_and(|e| !e.is_empty()),
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicySpec {
    pub pod_selector: LabelSelector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Vec<IngressRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<EgressRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_types: Option<Vec<PolicyType>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyType {
    Ingress,
    Egress,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressRule {
    /// Absent, null or empty: from anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<Peer>>,
    /// Absent, null or empty: every port and protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<NetworkPolicyPort>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressRule {
    /// Absent, null or empty: to anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<Peer>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<NetworkPolicyPort>>,
}

/// One `from`/`to` entry. Exactly as the API validates: at least one field; `ipBlock` alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "RawPeer")]
pub struct Peer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_block: Option<IpBlock>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawPeer {
    #[serde(default)]
    pod_selector: Option<LabelSelector>,
    #[serde(default)]
    namespace_selector: Option<LabelSelector>,
    #[serde(default)]
    ip_block: Option<IpBlock>,
}

impl TryFrom<RawPeer> for Peer {
    type Error = String;
    fn try_from(r: RawPeer) -> Result<Self, String> {
        let selectors = r.pod_selector.is_some() || r.namespace_selector.is_some();
        if r.ip_block.is_some() && selectors {
            return Err(
                "a peer may not combine ipBlock with podSelector or namespaceSelector".into(),
            );
        }
        if r.ip_block.is_none() && !selectors {
            return Err("a peer must specify podSelector, namespaceSelector or ipBlock".into());
        }
        for s in r.pod_selector.iter().chain(&r.namespace_selector) {
            s.validate()?;
        }
        Ok(Peer {
            pod_selector: r.pod_selector,
            namespace_selector: r.namespace_selector,
            ip_block: r.ip_block,
        })
    }
}

/// `ipBlock`: `cidr` minus every `except` (each must be strictly inside `cidr`, same family).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawIpBlock")]
pub struct IpBlock {
    pub cidr: IpNet,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<IpNet>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIpBlock {
    cidr: String,
    #[serde(default)]
    except: Option<Vec<String>>,
}

/// Parses a CIDR; host bits are masked as the API server's ParseCIDR does. A bare address is
/// rejected (the API requires a prefix length).
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    s.trim()
        .parse::<IpNet>()
        .map(|n| n.trunc())
        .map_err(|_| format!("{s:?} is not a CIDR (expected e.g. 10.0.0.0/8 or fd00::/64)"))
}

impl TryFrom<RawIpBlock> for IpBlock {
    type Error = String;
    fn try_from(r: RawIpBlock) -> Result<Self, String> {
        let cidr = parse_cidr(&r.cidr).map_err(|e| format!("ipBlock.cidr: {e}"))?;
        let mut except = Vec::new();
        for e in r.except.unwrap_or_default() {
            let net = parse_cidr(&e).map_err(|m| format!("ipBlock.except: {m}"))?;
            let inside = match (cidr, net) {
                (IpNet::V4(c), IpNet::V4(n)) => c.contains(&n) && n.prefix_len() > c.prefix_len(),
                (IpNet::V6(c), IpNet::V6(n)) => c.contains(&n) && n.prefix_len() > c.prefix_len(),
                _ => false,
            };
            if !inside {
                return Err(format!(
                    "ipBlock.except {e:?} must be a strict subset of cidr {:?}",
                    r.cidr
                ));
            }
            except.push(net);
        }
        Ok(IpBlock { cidr, except })
    }
}

impl IpBlock {
    /// Whether `ip` is in `cidr` and in no `except`.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.cidr.contains(ip) && !self.except.iter().any(|e| e.contains(ip))
    }
}

/// `protocol` of a NetworkPolicyPort or container port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum PolicyProtocol {
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

impl PolicyProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyProtocol::Tcp => "TCP",
            PolicyProtocol::Udp => "UDP",
            PolicyProtocol::Sctp => "SCTP",
        }
    }

    /// Parses the Kubernetes spelling (case-insensitively, for the CLI).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "TCP" => Some(PolicyProtocol::Tcp),
            "UDP" => Some(PolicyProtocol::Udp),
            "SCTP" => Some(PolicyProtocol::Sctp),
            _ => None,
        }
    }

    pub fn to_record_protocol(self) -> verdict_schema::Protocol {
        match self {
            PolicyProtocol::Tcp => verdict_schema::Protocol::Tcp,
            PolicyProtocol::Udp => verdict_schema::Protocol::Udp,
            PolicyProtocol::Sctp => verdict_schema::Protocol::Sctp,
        }
    }
}

/// A port: a number, or an IANA service name resolved against the destination pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortSpec {
    Number(u16),
    Name(String),
}

/// One `ports` entry. Validated as the API server does: number 1–65535, a valid service name,
/// `endPort` only with a numeric `port` and not below it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "RawPort")]
pub struct NetworkPolicyPort {
    /// Absent means TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<PolicyProtocol>,
    /// Absent means every port of the protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<u16>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawPort {
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    port: Option<serde_yaml::Value>,
    #[serde(default)]
    end_port: Option<i64>,
}

/// IANA_SVC_NAME: 1–15 lowercase alphanumerics or '-', at least one letter, no leading,
/// trailing or double '-'.
pub fn validate_port_name(name: &str) -> Result<(), String> {
    let b = name.as_bytes();
    let ok = !name.is_empty()
        && name.len() <= 15
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.iter().any(u8::is_ascii_lowercase)
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "port name {name:?} is not a valid IANA service name (1-15 lowercase letters, digits \
             and '-', with at least one letter)"
        ))
    }
}

impl TryFrom<RawPort> for NetworkPolicyPort {
    type Error = String;
    fn try_from(r: RawPort) -> Result<Self, String> {
        let protocol = match r.protocol.as_deref() {
            None => None,
            Some(p @ ("TCP" | "UDP" | "SCTP")) => PolicyProtocol::parse(p),
            Some(other) => {
                return Err(format!("protocol {other:?} is not one of TCP, UDP, SCTP"));
            }
        };
        let port = match r.port {
            None | Some(serde_yaml::Value::Null) => None,
            Some(serde_yaml::Value::Number(n)) => match n.as_i64() {
                Some(v @ 1..=65535) => Some(PortSpec::Number(v as u16)),
                _ => return Err(format!("port {n} is not between 1 and 65535")),
            },
            Some(serde_yaml::Value::String(s)) => {
                validate_port_name(&s)?;
                Some(PortSpec::Name(s))
            }
            Some(other) => return Err(format!("port must be a number or a name, got {other:?}")),
        };
        let end_port = match (r.end_port, &port) {
            (None, _) => None,
            (Some(e), Some(PortSpec::Number(p))) => {
                let e = u16::try_from(e)
                    .ok()
                    .filter(|e| *e >= 1)
                    .ok_or_else(|| format!("endPort {e} is not between 1 and 65535"))?;
                if e < *p {
                    return Err(format!("endPort {e} must not be less than port {p}"));
                }
                Some(e)
            }
            (Some(_), Some(PortSpec::Name(n))) => {
                return Err(format!("endPort may not be used with a named port ({n:?})"));
            }
            (Some(_), None) => return Err("endPort requires port".into()),
        };
        Ok(NetworkPolicyPort {
            protocol,
            port,
            end_port,
        })
    }
}

impl NetworkPolicyPort {
    pub fn protocol_or_default(&self) -> PolicyProtocol {
        self.protocol.unwrap_or_default()
    }

    /// `TCP/80`, `UDP/53`, `TCP/32000-32768`, `TCP/http`, `TCP/<any>`.
    pub fn describe(&self) -> String {
        let proto = self.protocol_or_default().as_str();
        match (&self.port, self.end_port) {
            (None, _) => format!("{proto}/<any>"),
            (Some(PortSpec::Number(p)), Some(e)) => format!("{proto}/{p}-{e}"),
            (Some(PortSpec::Number(p)), None) => format!("{proto}/{p}"),
            (Some(PortSpec::Name(n)), _) => format!("{proto}/{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> Result<NetworkPolicy, String> {
        serde_yaml::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn policy_types_default_like_the_api_server() {
        let p = policy("metadata: {name: a}\nspec: {podSelector: {}}").unwrap();
        assert_eq!(p.effective_policy_types(), (true, false));
        let p = policy("metadata: {name: a}\nspec: {podSelector: {}, egress: [{}]}").unwrap();
        assert_eq!(p.effective_policy_types(), (true, true));
        let p = policy("metadata: {name: a}\nspec: {podSelector: {}, egress: []}").unwrap();
        assert_eq!(
            p.effective_policy_types(),
            (true, false),
            "an empty egress list adds no Egress"
        );
        let p =
            policy("metadata: {name: a}\nspec: {podSelector: {}, policyTypes: [Egress]}").unwrap();
        assert_eq!(p.effective_policy_types(), (false, true));
    }

    #[test]
    fn ports_validate() {
        let ok = |y: &str| serde_yaml::from_str::<NetworkPolicyPort>(y).unwrap();
        let bad = |y: &str| {
            serde_yaml::from_str::<NetworkPolicyPort>(y)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(ok("{port: 80}").port, Some(PortSpec::Number(80)));
        assert_eq!(
            ok("{port: http, protocol: UDP}").port,
            Some(PortSpec::Name("http".into()))
        );
        assert_eq!(ok("{port: 32000, endPort: 32768}").end_port, Some(32768));
        assert_eq!(ok("{protocol: SCTP}").protocol, Some(PolicyProtocol::Sctp));
        assert!(bad("{port: 0}").contains("between 1 and 65535"));
        assert!(bad("{port: 70000}").contains("between 1 and 65535"));
        assert!(bad("{port: '80'}").contains("IANA service name"));
        assert!(bad("{port: Http}").contains("IANA service name"));
        assert!(bad("{port: http, endPort: 90}").contains("named port"));
        assert!(bad("{port: 90, endPort: 80}").contains("must not be less"));
        assert!(bad("{endPort: 80}").contains("requires port"));
        assert!(bad("{protocol: tcp, port: 80}").contains("not one of TCP"));
        assert!(bad("{port: 80, prot: TCP}").contains("unknown field"));
    }

    #[test]
    fn peers_validate() {
        let bad = |y: &str| serde_yaml::from_str::<Peer>(y).unwrap_err().to_string();
        assert!(bad("{}").contains("must specify"));
        assert!(bad("{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}").contains("may not combine"));
        assert!(
            bad("{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}}").contains("strict subset")
        );
        assert!(
            bad("{ipBlock: {cidr: 10.0.0.0/8, except: [10.0.0.0/8]}}").contains("strict subset")
        );
        assert!(bad("{ipBlock: {cidr: 10.0.0.1}}").contains("not a CIDR"));
        let p: Peer = serde_yaml::from_str("{ipBlock: {cidr: 10.1.2.3/8}}").unwrap();
        assert_eq!(
            p.ip_block.unwrap().cidr.to_string(),
            "10.0.0.0/8",
            "host bits masked"
        );
    }

    #[test]
    fn ip_block_except() {
        let b: IpBlock = serde_yaml::from_str("{cidr: 0.0.0.0/0, except: [10.0.0.0/8]}").unwrap();
        assert!(b.contains(&"8.8.8.8".parse().unwrap()));
        assert!(!b.contains(&"10.1.1.1".parse().unwrap()));
        assert!(!b.contains(&"::1".parse().unwrap()), "families never mix");
        let b6: IpBlock =
            serde_yaml::from_str("{cidr: 'fd00::/8', except: ['fd00:1::/32']}").unwrap();
        assert!(b6.contains(&"fd00:2::1".parse().unwrap()));
        assert!(!b6.contains(&"fd00:1::5".parse().unwrap()));
    }

    #[test]
    fn workload_prefers_the_controller() {
        let pod: Pod = serde_yaml::from_str(
            "metadata: {name: p, ownerReferences: [{kind: Foo, name: f}, {kind: ReplicaSet, name: rs, controller: true}]}",
        )
        .unwrap();
        assert_eq!(pod.workload().unwrap().name, "rs");
    }
}
