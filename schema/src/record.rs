//! The GKE policy-action flow record (docs/design.md, "Contract 1: the flow record"), field for
//! field as in seed 000.
//!
//! Field order on output follows GKE's (`connection`, `disposition`, `policies`, `src`, `dest`,
//! `count`, `node_name`, `timestamp`); absent optional fields stay absent, so a record read from a
//! GKE node serializes back to equal JSON. Verdict's only extension is `enforcement: "audit"`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::timestamp::Timestamp;

/// One line of `policy_action.log`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyActionRecord {
    pub connection: Connection,
    pub disposition: Disposition,
    /// Policies that allowed the connection, from the enforced pod's view. Present on allow
    /// records only; `[{"name": ""}]` for kubelet probe traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<Vec<PolicyRef>>,
    pub src: Endpoint,
    pub dest: Endpoint,
    /// 1 for allowed connections; the number of attempts for an aggregated deny.
    pub count: u64,
    /// The node that runs the enforced pod and wrote this record.
    pub node_name: String,
    /// When the (first) connection attempt occurred.
    pub timestamp: Timestamp,
    /// Verdict extension: `audit` when the decision was logged but not enforced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<Enforcement>,
}

impl PolicyActionRecord {
    /// The pod the record is about: destination for ingress, source for egress.
    pub fn enforced_endpoint(&self) -> &Endpoint {
        match self.connection.direction {
            Direction::Ingress => &self.dest,
            Direction::Egress => &self.src,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    pub src_ip: IpAddr,
    pub dest_ip: IpAddr,
    pub src_port: u16,
    pub dest_port: u16,
    pub protocol: Protocol,
    pub direction: Direction,
}

/// IP protocol as GKE writes it: lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
    Icmp,
    Icmpv6,
    /// Anything else, kept as written.
    Other(String),
}

impl Protocol {
    pub fn as_str(&self) -> &str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
            Protocol::Icmp => "icmp",
            Protocol::Icmpv6 => "icmpv6",
            Protocol::Other(s) => s,
        }
    }

    /// The Kubernetes API spelling (`TCP`, `UDP`, `SCTP`), for the protocols NetworkPolicy knows.
    pub fn kubernetes_name(&self) -> Option<&'static str> {
        match self {
            Protocol::Tcp => Some("TCP"),
            Protocol::Udp => Some("UDP"),
            Protocol::Sctp => Some("SCTP"),
            _ => None,
        }
    }

    /// Whether one record is written per connection (TCP, SCTP) rather than per idle window.
    pub fn is_connection_oriented(&self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Sctp)
    }
}

impl FromStr for Protocol {
    type Err = std::convert::Infallible;
    /// Case-insensitive for the known protocols.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "sctp" => Protocol::Sctp,
            "icmp" => Protocol::Icmp,
            "icmpv6" | "ipv6-icmp" => Protocol::Icmpv6,
            _ => Protocol::Other(s.to_owned()),
        })
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(s.parse().unwrap_or_else(|never| match never {}))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Disposition {
    Allow,
    Deny,
}

impl Disposition {
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Allow => "allow",
            Disposition::Deny => "deny",
        }
    }
}

impl fmt::Display for Disposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Verdict extension to the record: present only in audit mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    /// The decision was logged but nothing was dropped.
    Audit,
}

impl Enforcement {
    pub fn as_str(self) -> &'static str {
        "audit"
    }
}

/// A policy named in an allow record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PolicyRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

impl PolicyRef {
    /// A namespaced NetworkPolicy, as GKE writes it (`{name, namespace}`).
    pub fn network_policy(namespace: &str, name: &str) -> Self {
        PolicyRef {
            name: name.to_owned(),
            namespace: Some(namespace.to_owned()),
            kind: None,
        }
    }

    /// The nameless entry GKE writes for kubelet probe traffic (`{"name": ""}`).
    pub fn node_local() -> Self {
        PolicyRef {
            name: String::new(),
            namespace: None,
            kind: None,
        }
    }
}

/// One side of a connection: a pod, or (for anything that is not a pod) `{instance: IP}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Pod(PodEndpoint),
    Instance { instance: IpAddr },
}

impl Endpoint {
    pub fn pod(&self) -> Option<&PodEndpoint> {
        match self {
            Endpoint::Pod(p) => Some(p),
            Endpoint::Instance { .. } => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodEndpoint {
    pub pod_name: String,
    pub pod_namespace: String,
    /// Same as `pod_namespace` in GKE's records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The pod's direct owner (controller ownerReference), e.g. the ReplicaSet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_kind: Option<String>,
}

impl Serialize for Endpoint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Instance<'a> {
            instance: &'a IpAddr,
        }
        match self {
            Endpoint::Pod(p) => p.serialize(s),
            Endpoint::Instance { instance } => Instance { instance }.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    /// Decided by the fields present, with a clear error rather than serde's "did not match any
    /// variant".
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Any {
            instance: Option<IpAddr>,
            pod_name: Option<String>,
            pod_namespace: Option<String>,
            namespace: Option<String>,
            workload_name: Option<String>,
            workload_kind: Option<String>,
        }
        let a = Any::deserialize(d)?;
        match (a.instance, a.pod_name) {
            (Some(ip), None) => Ok(Endpoint::Instance { instance: ip }),
            (None, Some(pod_name)) => Ok(Endpoint::Pod(PodEndpoint {
                pod_name,
                pod_namespace: a.pod_namespace.ok_or_else(|| {
                    serde::de::Error::custom("pod endpoint is missing `pod_namespace`")
                })?,
                namespace: a.namespace,
                workload_name: a.workload_name,
                workload_kind: a.workload_kind,
            })),
            (Some(_), Some(_)) => Err(serde::de::Error::custom(
                "endpoint has both `instance` and `pod_name`; expected one of them",
            )),
            (None, None) => Err(serde::de::Error::custom(
                "endpoint has neither `pod_name` nor `instance`",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_is_lower_case_and_case_insensitive_on_input() {
        assert_eq!("TCP".parse::<Protocol>().unwrap(), Protocol::Tcp);
        assert_eq!(serde_json::to_string(&Protocol::Sctp).unwrap(), "\"sctp\"");
        let p: Protocol = serde_json::from_str("\"gre\"").unwrap();
        assert_eq!(p, Protocol::Other("gre".into()));
    }

    #[test]
    fn endpoint_errors_are_clear() {
        let e = serde_json::from_str::<Endpoint>(r#"{"namespace":"x"}"#).unwrap_err();
        assert!(
            e.to_string().contains("neither `pod_name` nor `instance`"),
            "{e}"
        );
        let e = serde_json::from_str::<Endpoint>(r#"{"pod_name":"p"}"#).unwrap_err();
        assert!(e.to_string().contains("pod_namespace"), "{e}");
        let e = serde_json::from_str::<Endpoint>(r#"{"instance":"nope"}"#).unwrap_err();
        assert!(e.to_string().contains("invalid IP"), "{e}");
    }
}
