//! Warnings about policy forms GKE Dataplane V2 rejects or treats differently (seed 002,
//! "Migrating from Calico to GKE Dataplane V2" and "ipBlock behavior in GKE Dataplane V2"):
//! - a Pod or Service IP as `ipBlock.cidr`;
//! - a `ports` entry without `port` (a protocol alone);
//! - an `ipBlock` narrower than `/0` that covers pod IPs, which Dataplane V2 never matches.

use std::net::IpAddr;

use crate::cluster::{ClusterState, object_key};
use crate::manifests::Warning;
use crate::model::{NetworkPolicy, NetworkPolicyPort, Peer};

/// Warnings for every policy in `state`, in policy order.
pub fn dataplane_v2_warnings(state: &ClusterState) -> Vec<Warning> {
    let mut pod_ips: Vec<(IpAddr, String)> = Vec::new();
    for p in &state.pods {
        if p.spec.host_network || p.is_terminated() {
            continue;
        }
        for ip in p.ips() {
            pod_ips.push((
                ip,
                format!("{}/{}", p.metadata.namespace_or_default(), p.metadata.name),
            ));
        }
    }
    let mut service_ips: Vec<(IpAddr, String)> = Vec::new();
    for s in &state.services {
        for ip in s.ips() {
            service_ips.push((
                ip,
                format!("{}/{}", s.metadata.namespace_or_default(), s.metadata.name),
            ));
        }
    }
    let mut out = Vec::new();
    for policy in &state.policies {
        check_policy(policy, state, &pod_ips, &service_ips, &mut out);
    }
    out
}

fn check_policy(
    policy: &NetworkPolicy,
    state: &ClusterState,
    pod_ips: &[(IpAddr, String)],
    service_ips: &[(IpAddr, String)],
    out: &mut Vec<Warning>,
) {
    let key = object_key(
        "NetworkPolicy",
        Some(policy.metadata.namespace_or_default()),
        &policy.metadata.name,
    );
    let origin = state.origins.get(&key);
    let mut warn = |message: String| {
        out.push(Warning {
            file: origin.map(|o| o.file.clone()),
            line: origin.map(|o| o.line),
            object: Some(key.clone()),
            message,
        })
    };
    let ingress = policy
        .spec
        .ingress
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| {
            (
                format!("ingress[{i}]"),
                "from",
                r.from.as_ref(),
                r.ports.as_ref(),
            )
        });
    let egress = policy
        .spec
        .egress
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| {
            (
                format!("egress[{i}]"),
                "to",
                r.to.as_ref(),
                r.ports.as_ref(),
            )
        });
    for (rule, peer_field, peers, ports) in ingress.chain(egress) {
        for (j, port) in ports.into_iter().flatten().enumerate() {
            check_port(port, &format!("spec.{rule}.ports[{j}]"), &mut warn);
        }
        for (j, peer) in peers.into_iter().flatten().enumerate() {
            check_peer(
                peer,
                &format!("spec.{rule}.{peer_field}[{j}]"),
                pod_ips,
                service_ips,
                &mut warn,
            );
        }
    }
}

fn check_port(port: &NetworkPolicyPort, at: &str, warn: &mut impl FnMut(String)) {
    if port.port.is_none() {
        warn(format!(
            "{at}: protocol {} without a port; GKE Dataplane V2 rejects a ports entry without \
             `port` (omit `ports` to allow every port)",
            port.protocol_or_default().as_str()
        ));
    }
}

fn check_peer(
    peer: &Peer,
    at: &str,
    pod_ips: &[(IpAddr, String)],
    service_ips: &[(IpAddr, String)],
    warn: &mut impl FnMut(String),
) {
    let Some(block) = &peer.ip_block else { return };
    let cidr = block.cidr;
    let host_prefix = cidr.prefix_len() == cidr.max_prefix_len();
    if host_prefix {
        let ip = cidr.addr();
        if let Some((_, pod)) = pod_ips.iter().find(|(p, _)| *p == ip) {
            warn(format!(
                "{at}.ipBlock.cidr {cidr} is the IP of pod {pod}; GKE Dataplane V2 rejects a Pod IP \
                 in ipBlock.cidr: select the pod with podSelector/namespaceSelector"
            ));
        }
        if let Some((_, svc)) = service_ips.iter().find(|(p, _)| *p == ip) {
            warn(format!(
                "{at}.ipBlock.cidr {cidr} is the ClusterIP of service {svc}; GKE Dataplane V2 rejects \
                 a Service IP in ipBlock.cidr: select the backend pods by label"
            ));
        }
        return;
    }
    if cidr.prefix_len() == 0 {
        return; // "everything outside the cluster": the documented, intended use
    }
    let covered: Vec<&str> = pod_ips
        .iter()
        .filter(|(ip, _)| block.contains(ip))
        .map(|(_, name)| name.as_str())
        .collect();
    if !covered.is_empty() {
        let shown = covered
            .iter()
            .take(3)
            .copied()
            .collect::<Vec<_>>()
            .join(", ");
        let more = if covered.len() > 3 {
            format!(" and {} more", covered.len() - 3)
        } else {
            String::new()
        };
        warn(format!(
            "{at}.ipBlock {cidr} covers pod IPs ({shown}{more}); in dataplane-v2 mode an ipBlock \
             never matches pods (Calico's does): select pods with podSelector/namespaceSelector"
        ));
    }
}
