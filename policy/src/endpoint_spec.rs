//! How users name the sides of a connection: `NS/POD`, `ip:ADDR` (a pod's IP means that pod) and
//! `node:NODE` (traffic from that node's address, e.g. kubelet) — and resolving them to IPs of
//! one address family.

use std::net::IpAddr;

use crate::engine::{EndpointKind, Engine, ResolvedEndpoint};
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointSpec {
    Pod { namespace: String, name: String },
    Ip(IpAddr),
    Node(String),
}

impl EndpointSpec {
    /// Parses `NS/POD`, `ip:ADDR` (IPv6 may be bracketed) or `node:NODE`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Endpoint(format!(
                "{s:?}: {why} (expected \"NS/POD\", \"ip:ADDR\" or \"node:NODE\")"
            ))
        };
        if let Some(addr) = s.strip_prefix("ip:") {
            let addr = addr.trim_start_matches('[').trim_end_matches(']');
            return addr
                .parse()
                .map(EndpointSpec::Ip)
                .map_err(|_| bad("not an IP address"));
        }
        if let Some(node) = s.strip_prefix("node:") {
            return if node.is_empty() {
                Err(bad("empty node name"))
            } else {
                Ok(EndpointSpec::Node(node.to_owned()))
            };
        }
        match s.split_once('/') {
            Some((ns, pod)) if !ns.is_empty() && !pod.is_empty() && !pod.contains('/') => {
                Ok(EndpointSpec::Pod {
                    namespace: ns.to_owned(),
                    name: pod.to_owned(),
                })
            }
            _ => Err(bad("not an endpoint")),
        }
    }

    fn explicit_ip(&self) -> Option<IpAddr> {
        match self {
            EndpointSpec::Ip(ip) => Some(*ip),
            _ => None,
        }
    }
}

impl std::fmt::Display for EndpointSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndpointSpec::Pod { namespace, name } => write!(f, "{namespace}/{name}"),
            EndpointSpec::Ip(ip) => write!(f, "ip:{ip}"),
            EndpointSpec::Node(n) => write!(f, "node:{n}"),
        }
    }
}

impl Engine {
    /// The addresses an endpoint spec stands for, primary first.
    fn spec_ips(&self, spec: &EndpointSpec) -> Result<Vec<IpAddr>> {
        match spec {
            EndpointSpec::Ip(ip) => Ok(vec![*ip]),
            EndpointSpec::Pod { namespace, name } => {
                let id = self.find_pod(namespace, name)?;
                let ips = &self.pod(id).ips;
                if ips.is_empty() {
                    return Err(Error::Endpoint(format!(
                        "pod {namespace}/{name} has no IP (status.podIP / status.podIPs), or has terminated"
                    )));
                }
                Ok(ips.clone())
            }
            EndpointSpec::Node(n) => {
                let id = self.find_node(n)?;
                let ips = &self.node(id).ips;
                if ips.is_empty() {
                    return Err(Error::Endpoint(format!(
                        "node {n} has no InternalIP or ExternalIP address"
                    )));
                }
                Ok(ips.clone())
            }
        }
    }

    /// Resolves both sides to addresses of the same family: an explicit `ip:` decides the family,
    /// else the destination's primary address does.
    pub fn resolve_pair(
        &self,
        src: &EndpointSpec,
        dest: &EndpointSpec,
    ) -> Result<(ResolvedEndpoint, ResolvedEndpoint)> {
        let src_ips = self.spec_ips(src)?;
        let dest_ips = self.spec_ips(dest)?;
        let family_v4 = dest
            .explicit_ip()
            .or_else(|| src.explicit_ip())
            .unwrap_or(dest_ips[0])
            .is_ipv4();
        let pick = |ips: &[IpAddr], spec: &EndpointSpec| {
            ips.iter()
                .copied()
                .find(|ip| ip.is_ipv4() == family_v4)
                .ok_or_else(|| {
                    Error::Endpoint(format!(
                        "{spec} has no {} address to match the other side",
                        if family_v4 { "IPv4" } else { "IPv6" }
                    ))
                })
        };
        let s = self.resolve_ip(pick(&src_ips, src)?);
        let d = self.resolve_ip(pick(&dest_ips, dest)?);
        // A host-network pod named as NS/POD resolves to its node; say so rather than surprise.
        for (spec, r) in [(src, s), (dest, d)] {
            if let (
                EndpointSpec::Pod { namespace, name },
                EndpointKind::Node(_) | EndpointKind::External,
            ) = (spec, r.kind)
            {
                let id = self.find_pod(namespace, name)?;
                if !self.pod(id).host_network {
                    return Err(Error::Endpoint(format!(
                        "{spec}: IP {} does not resolve to the pod",
                        r.ip
                    )));
                }
            }
        }
        Ok((s, d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(
            EndpointSpec::parse("default/web").unwrap(),
            EndpointSpec::Pod {
                namespace: "default".into(),
                name: "web".into()
            }
        );
        assert_eq!(
            EndpointSpec::parse("ip:10.0.0.1").unwrap(),
            EndpointSpec::Ip("10.0.0.1".parse().unwrap())
        );
        assert_eq!(
            EndpointSpec::parse("ip:[fd00::1]").unwrap(),
            EndpointSpec::Ip("fd00::1".parse().unwrap())
        );
        assert_eq!(
            EndpointSpec::parse("node:n1").unwrap(),
            EndpointSpec::Node("n1".into())
        );
        for bad in ["web", "ip:nope", "node:", "/x", "a/b/c"] {
            assert!(EndpointSpec::parse(bad).is_err(), "{bad}");
        }
    }
}
