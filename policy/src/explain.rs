//! `verdict policy explain`: a readable account of a connection's verdict — which policies
//! select each side, which rule matched or why none did — and the smallest change that would
//! allow a denied connection (label a namespace or pod, add a port to a rule, or add a policy,
//! with DNS egress and external hosts handled the way seed 003 recommends).
//!
//! This is the slow path: it re-reads the policies' source rather than the compiled form, so it
//! can say *why*; the verdict it reports is always the compiled engine's.

use std::fmt::Write as _;

use verdict_schema::Direction;

use crate::engine::{
    EndpointKind, Engine, Flow, IpBlockMode, PodId, Reason, ResolvedEndpoint, RuleSource,
    SideVerdict,
};
use crate::labels::{CompiledRequirement, LabelSelector, Labels};
use crate::logging::LogDecision;
use crate::model::{NAMESPACE_NAME_LABEL, Peer, PortSpec};

/// Labels Kubernetes controllers add that make poor selectors.
const GENERATED_LABELS: [&str; 3] = [
    "pod-template-hash",
    "controller-revision-hash",
    "statefulset.kubernetes.io/pod-name",
];

/// Candidate fixes, cheapest first.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Suggestion {
    cost: usize,
    text: String,
}

/// Explains the verdict on `flow` as text.
pub fn explain(engine: &Engine, flow: &Flow) -> String {
    let verdict = engine.evaluate(flow);
    let mut out = String::new();
    let proto = flow
        .protocol
        .kubernetes_name()
        .unwrap_or(flow.protocol.as_str());
    let _ = writeln!(
        out,
        "Connection: {} -> {} {proto}/{}",
        describe_endpoint(engine, flow.src),
        describe_endpoint(engine, flow.dest),
        flow.dest_port
    );
    let headline = match (verdict.egress.allowed, verdict.ingress.allowed) {
        (true, true) => "ALLOWED".to_owned(),
        (false, true) => "DENIED by the source's egress policies".to_owned(),
        (true, false) => "DENIED by the destination's ingress policies".to_owned(),
        (false, false) => {
            "DENIED by both the source's egress and the destination's ingress policies".to_owned()
        }
    };
    let _ = writeln!(
        out,
        "Verdict: {headline} (ipBlock mode: {})\n",
        engine.mode().as_str()
    );
    for side in [&verdict.egress, &verdict.ingress] {
        explain_side(engine, flow, side, &mut out);
        out.push('\n');
    }
    if !verdict.allowed() {
        let _ = writeln!(out, "Smallest change that would allow it:");
        for side in [&verdict.egress, &verdict.ingress]
            .into_iter()
            .filter(|s| !s.allowed)
        {
            let mut suggestions = suggest(engine, flow, side);
            suggestions.sort_by_key(|s| s.cost);
            suggestions.dedup();
            let _ = writeln!(out, "  for {}:", side.direction);
            for (i, s) in suggestions.iter().take(3).enumerate() {
                let prefix = if i == 0 { "    - " } else { "    - or: " };
                let mut lines = s.text.lines();
                let _ = writeln!(out, "{prefix}{}", lines.next().unwrap_or(""));
                for l in lines {
                    let _ = writeln!(out, "        {l}");
                }
            }
        }
    }
    out
}

fn describe_endpoint(engine: &Engine, e: ResolvedEndpoint) -> String {
    match e.kind {
        EndpointKind::Pod(p) => format!("{} ({})", pod_name(engine, p), e.ip),
        EndpointKind::Node(n) => format!("node {} ({})", engine.node(n).name, e.ip),
        EndpointKind::External => format!("{} (not a pod or node)", e.ip),
    }
}

fn pod_name(engine: &Engine, p: PodId) -> String {
    let pod = engine.pod(p);
    format!("{}/{}", engine.namespace(pod.namespace).name, pod.name)
}

fn type_name(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "Ingress",
        Direction::Egress => "Egress",
    }
}

fn explain_side(engine: &Engine, flow: &Flow, side: &SideVerdict, out: &mut String) {
    let d = side.direction;
    let (what, peer) = match d {
        Direction::Egress => ("Egress from the source", flow.dest),
        Direction::Ingress => ("Ingress to the destination", flow.src),
    };
    let Some(pod) = side.enforced_pod else {
        let _ = writeln!(out, "{what}: not enforced (not a pod).");
        return;
    };
    let name = pod_name(engine, pod);
    let ns = &engine.namespace(engine.pod(pod).namespace).name;
    match side.reason {
        Reason::NotAPod => {}
        Reason::NotIsolated => {
            let _ = writeln!(
                out,
                "{what} {name}: ALLOWED — no NetworkPolicy in namespace {ns} selects this pod for {}, so it is not isolated (and not logged).",
                type_name(d)
            );
        }
        Reason::SamePod => {
            let _ = writeln!(
                out,
                "{what} {name}: ALLOWED — a pod can always reach itself (never logged)."
            );
        }
        Reason::NodeLocal => {
            let _ = writeln!(
                out,
                "{what} {name}: ALLOWED — traffic from the pod's own node (kubelet probes) is always allowed{}.",
                if side.isolated {
                    "; as the pod is isolated it is logged with policies [{\"name\": \"\"}] unless allow.delegate is set"
                } else {
                    ""
                }
            );
        }
        Reason::AllowedByPolicy | Reason::NoRuleMatched => {
            let verdict = if side.allowed { "ALLOWED" } else { "DENIED" };
            let _ = writeln!(out, "{what} {name}: {verdict}");
            let _ = writeln!(out, "  isolated for {} by:", type_name(d));
            for &id in &side.isolating {
                let p = engine.policy(id);
                let _ = writeln!(
                    out,
                    "    {}/{} (podSelector: {})",
                    p.namespace,
                    p.name,
                    p.source.spec.pod_selector.describe()
                );
                for (i, rule) in rules_of(p, d).iter().enumerate() {
                    let label = format!("{}[{i}]", d.as_str());
                    let (port_ok, port_text) = ports_account(engine, flow, rule.1);
                    let peer_accounts: Vec<(bool, String)> = match rule.0.filter(|v| !v.is_empty())
                    {
                        None => vec![(true, format!("{} anywhere", peer_word(d)))],
                        Some(peers) => peers
                            .iter()
                            .map(|peer_spec| peer_account(engine, p, peer_spec, peer, d))
                            .collect(),
                    };
                    let peer_ok = peer_accounts.iter().any(|(ok, _)| *ok);
                    let mark = if port_ok && peer_ok {
                        "matches"
                    } else {
                        "does not match"
                    };
                    let _ = writeln!(out, "      rule {label} {mark}:");
                    let _ = writeln!(out, "        ports: {port_text}");
                    for (ok, text) in peer_accounts {
                        let _ = writeln!(out, "        {} {text}", if ok { "✓" } else { "✗" });
                    }
                }
                if rules_of(p, d).is_empty() {
                    let _ = writeln!(
                        out,
                        "      no {} rules: this policy allows nothing in this direction",
                        d.as_str()
                    );
                }
            }
        }
    }
    let _ = writeln!(out, "  logging: {}", logging_account(engine, side));
}

fn peer_word(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "from",
        Direction::Egress => "to",
    }
}

fn rules_of(p: &crate::engine::CompiledPolicy, d: Direction) -> Vec<RuleSource<'_>> {
    match d {
        Direction::Ingress => p
            .source
            .spec
            .ingress
            .iter()
            .flatten()
            .map(|r| (r.from.as_ref(), r.ports.as_ref()))
            .collect(),
        Direction::Egress => p
            .source
            .spec
            .egress
            .iter()
            .flatten()
            .map(|r| (r.to.as_ref(), r.ports.as_ref()))
            .collect(),
    }
}

fn ports_account(
    engine: &Engine,
    flow: &Flow,
    ports: Option<&Vec<crate::model::NetworkPolicyPort>>,
) -> (bool, String) {
    let Some(ports) = ports.filter(|v| !v.is_empty()) else {
        return (true, "any port and protocol".into());
    };
    let proto = flow.protocol.kubernetes_name();
    let mut ok = false;
    let mut parts = Vec::new();
    for p in ports {
        ok |= engine.port_spec_matches(p, flow);
        let mut text = p.describe();
        if let Some(PortSpec::Name(name)) = &p.port {
            let resolved = flow.dest.pod().and_then(|d| {
                engine
                    .pod(d)
                    .named_ports
                    .iter()
                    .find(|(n, pr, _)| n == name && *pr == p.protocol_or_default())
                    .map(|x| x.2)
            });
            text.push_str(&match resolved {
                Some(num) => format!(" (= {num} on the destination pod)"),
                None => " (the destination declares no such container port)".to_owned(),
            });
        }
        parts.push(text);
    }
    let verdict = if ok { "include" } else { "do not include" };
    (
        ok,
        format!(
            "{} {verdict} {}/{}",
            parts.join(", "),
            proto.unwrap_or("?"),
            flow.dest_port
        ),
    )
}

fn unmet_text(reqs: &[&CompiledRequirement]) -> String {
    reqs.iter()
        .map(|r| r.describe())
        .collect::<Vec<_>>()
        .join(", ")
}

fn labels_text(l: &Labels) -> String {
    if l.is_empty() {
        return "no labels".into();
    }
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn peer_account(
    engine: &Engine,
    policy: &crate::engine::CompiledPolicy,
    spec: &Peer,
    peer: ResolvedEndpoint,
    d: Direction,
) -> (bool, String) {
    let w = peer_word(d);
    if let Some(b) = &spec.ip_block {
        let desc = if b.except.is_empty() {
            format!("ipBlock {}", b.cidr)
        } else {
            format!(
                "ipBlock {} except {}",
                b.cidr,
                b.except
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            )
        };
        if peer.pod().is_some() && engine.mode() == IpBlockMode::DataplaneV2 {
            return (
                false,
                format!(
                    "{w} {desc}: never matches pod IPs in dataplane-v2 mode ({} is a pod)",
                    peer.ip
                ),
            );
        }
        return if b.contains(&peer.ip) {
            (true, format!("{w} {desc}: contains {}", peer.ip))
        } else if b.cidr.contains(&peer.ip) {
            (
                false,
                format!("{w} {desc}: {} is in an except range", peer.ip),
            )
        } else {
            (false, format!("{w} {desc}: does not contain {}", peer.ip))
        };
    }
    let ns_desc = match &spec.namespace_selector {
        None => format!("namespace {}", policy.namespace),
        Some(s) => format!("namespaces {}", s.describe()),
    };
    let pod_desc = spec
        .pod_selector
        .as_ref()
        .map_or("all pods".to_owned(), |s| format!("pods {}", s.describe()));
    let desc = format!("{w} {pod_desc} in {ns_desc}");
    let EndpointKind::Pod(p) = peer.kind else {
        return (
            false,
            format!("{desc}: {} is not a pod (use an ipBlock for it)", peer.ip),
        );
    };
    let pod = engine.pod(p);
    let ns = engine.namespace(pod.namespace);
    let mut why = Vec::new();
    match &spec.namespace_selector {
        None if ns.name != policy.namespace => {
            why.push(format!("{} is in namespace {}", pod.name, ns.name))
        }
        None => {}
        Some(s) => {
            let c = s.compile();
            let unmet = c.unmet(&ns.labels);
            if !unmet.is_empty() {
                why.push(format!(
                    "namespace {} ({}) lacks {}",
                    ns.name,
                    labels_text(&ns.labels),
                    unmet_text(&unmet)
                ));
            }
        }
    }
    if let Some(s) = &spec.pod_selector {
        let c = s.compile();
        let unmet = c.unmet(&pod.labels);
        if !unmet.is_empty() {
            why.push(format!(
                "pod {} ({}) lacks {}",
                pod.name,
                labels_text(&pod.labels),
                unmet_text(&unmet)
            ));
        }
    }
    if why.is_empty() {
        (true, format!("{desc}: includes {}/{}", ns.name, pod.name))
    } else {
        (false, format!("{desc}: {}", why.join("; ")))
    }
}

fn logging_account(engine: &Engine, side: &SideVerdict) -> String {
    let l = engine.logging();
    match engine.log_decision(side) {
        LogDecision::Logged {
            policies: Some(p), ..
        } => format!(
            "logged as allow with policies [{}]",
            p.iter()
                .map(|p| match &p.namespace {
                    Some(ns) => format!("{ns}/{}", p.name),
                    None => format!("{:?}", p.name),
                })
                .collect::<Vec<_>>()
                .join(", ")
        ),
        LogDecision::Logged { policies: None, .. } => "logged as deny".into(),
        LogDecision::NotLogged => {
            let why = if side.enforced_pod.is_none() {
                "not an enforced pod"
            } else if !side.allowed && !l.deny.log {
                "NetworkLogging deny.log is false"
            } else if !side.allowed {
                "deny.delegate is set and the namespace lacks policy.network.gke.io/enable-deny-logging: \"true\""
            } else if matches!(side.reason, Reason::NotIsolated | Reason::SamePod) {
                "allowed by default, not by a policy"
            } else if !l.allow.log {
                "NetworkLogging allow.log is false"
            } else {
                "allow.delegate is set and no allowing policy has policy.network.gke.io/enable-logging: \"true\""
            };
            format!("not logged ({why})")
        }
    }
}

/// A label change that would satisfy a requirement; None if labels can't do it.
fn label_fix(r: &CompiledRequirement) -> Option<String> {
    match r {
        CompiledRequirement::Equals(k, _) | CompiledRequirement::In(k, _)
            if k == NAMESPACE_NAME_LABEL =>
        {
            None
        }
        CompiledRequirement::Equals(k, v) => Some(format!("{k}={v}")),
        CompiledRequirement::In(k, vs) => Some(format!("{k}={}", vs[0])),
        CompiledRequirement::Exists(k) => Some(format!("{k}=true")),
        CompiledRequirement::NotIn(k, _) | CompiledRequirement::DoesNotExist(k) => {
            Some(format!("{k}-"))
        }
    }
}

fn suggest(engine: &Engine, flow: &Flow, side: &SideVerdict) -> Vec<Suggestion> {
    let d = side.direction;
    let peer = match d {
        Direction::Egress => flow.dest,
        Direction::Ingress => flow.src,
    };
    let mut out = Vec::new();
    for &id in &side.isolating {
        let policy = engine.policy(id);
        for (i, (peers, ports)) in rules_of(policy, d).into_iter().enumerate() {
            let (port_ok, _) = ports_account(engine, flow, ports);
            let peer_fixes: Vec<Vec<String>> = match peers.filter(|v| !v.is_empty()) {
                None => vec![Vec::new()],
                Some(list) => list
                    .iter()
                    .filter_map(|p| peer_label_fixes(engine, policy, p, peer))
                    .collect(),
            };
            let Some(best) = peer_fixes.into_iter().min_by_key(Vec::len) else {
                continue;
            };
            if !port_ok {
                if best.is_empty() {
                    out.push(Suggestion {
                        cost: 1,
                        text: format!(
                            "add {}/{} to spec.{}[{i}].ports of NetworkPolicy {}/{} (kubectl edit networkpolicy -n {} {})",
                            flow.protocol.kubernetes_name().unwrap_or("TCP"),
                            flow.dest_port,
                            d.as_str(),
                            policy.namespace,
                            policy.name,
                            policy.namespace,
                            policy.name
                        ),
                    });
                }
                continue;
            }
            if best.is_empty() {
                continue; // already matches: can't be (the side is denied)
            }
            out.push(Suggestion {
                cost: best.len(),
                text: format!(
                    "{} (to match spec.{}[{i}] of NetworkPolicy {}/{}; check what else selects these labels)",
                    best.join(" && "),
                    d.as_str(),
                    policy.namespace,
                    policy.name
                ),
            });
        }
    }
    out.push(Suggestion {
        cost: 3,
        text: new_policy(engine, flow, side),
    });
    out
}

/// The kubectl label commands that make `spec` match `peer`, or None if labels cannot.
fn peer_label_fixes(
    engine: &Engine,
    policy: &crate::engine::CompiledPolicy,
    spec: &Peer,
    peer: ResolvedEndpoint,
) -> Option<Vec<String>> {
    if spec.ip_block.is_some() {
        return None;
    }
    let EndpointKind::Pod(p) = peer.kind else {
        return None;
    };
    let pod = engine.pod(p);
    let ns = engine.namespace(pod.namespace);
    let mut cmds = Vec::new();
    match &spec.namespace_selector {
        None if ns.name != policy.namespace => return None,
        None => {}
        Some(s) => {
            let c = s.compile();
            let fixes: Option<Vec<String>> =
                c.unmet(&ns.labels).into_iter().map(label_fix).collect();
            let fixes = fixes?;
            if !fixes.is_empty() {
                cmds.push(format!(
                    "kubectl label namespace {} {} --overwrite",
                    ns.name,
                    fixes.join(" ")
                ));
            }
        }
    }
    if let Some(s) = &spec.pod_selector {
        let c = s.compile();
        let fixes: Option<Vec<String>> = c.unmet(&pod.labels).into_iter().map(label_fix).collect();
        let fixes = fixes?;
        if !fixes.is_empty() {
            cmds.push(format!(
                "kubectl label pod -n {} {} {} --overwrite",
                ns.name,
                pod.name,
                fixes.join(" ")
            ));
        }
    }
    Some(cmds)
}

/// A selector for one pod: its `app`-style label if it has one, else its labels minus the ones
/// controllers generate.
fn selector_for(labels: &Labels) -> LabelSelector {
    for key in ["app.kubernetes.io/name", "app", "k8s-app", "name"] {
        if let Some(v) = labels.get(key) {
            return LabelSelector {
                match_labels: Some(Labels::from([(key.to_owned(), v.clone())])),
                match_expressions: None,
            };
        }
    }
    let l: Labels = labels
        .iter()
        .filter(|(k, _)| !GENERATED_LABELS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    LabelSelector {
        match_labels: (!l.is_empty()).then_some(l),
        match_expressions: None,
    }
}

fn yaml_selector(s: &LabelSelector, indent: &str) -> String {
    match &s.match_labels {
        None => " {}".to_owned(),
        Some(l) => {
            let mut t = format!("\n{indent}  matchLabels:");
            for (k, v) in l {
                let _ = write!(t, "\n{indent}    {k}: {v}");
            }
            t
        }
    }
}

/// A NetworkPolicy that allows exactly this connection on the denied side.
fn new_policy(engine: &Engine, flow: &Flow, side: &SideVerdict) -> String {
    let d = side.direction;
    let Some(enforced) = side.enforced_pod else {
        return String::new();
    };
    let pod = engine.pod(enforced);
    let ns = &engine.namespace(pod.namespace).name;
    let proto = flow.protocol.kubernetes_name().unwrap_or("TCP");
    let peer = match d {
        Direction::Egress => flow.dest,
        Direction::Ingress => flow.src,
    };
    let dns = d == Direction::Egress
        && flow.dest_port == 53
        && matches!(flow.protocol.kubernetes_name(), Some("UDP" | "TCP"));
    let (name, pod_selector, peer_yaml, ports_yaml) = if dns {
        let target_ns = match peer.kind {
            EndpointKind::Pod(p) => engine.namespace(engine.pod(p).namespace).name.clone(),
            _ => "kube-system".to_owned(),
        };
        let to = match peer.kind {
            EndpointKind::Pod(_) => format!(
                "    - namespaceSelector:\n        matchLabels:\n          {NAMESPACE_NAME_LABEL}: {target_ns}\n"
            ),
            _ => format!("    - ipBlock:\n        cidr: {}\n", host_cidr(peer.ip)),
        };
        ("allow-dns-egress".to_owned(), " {}".to_owned(), to, "    ports:\n    - protocol: UDP\n      port: 53\n    - protocol: TCP\n      port: 53\n".to_owned())
    } else {
        let peer_yaml = match peer.kind {
            EndpointKind::Pod(p) => {
                let pp = engine.pod(p);
                let pns = &engine.namespace(pp.namespace).name;
                let mut y = String::new();
                if pns != ns {
                    let _ = write!(
                        y,
                        "    - namespaceSelector:\n        matchLabels:\n          {NAMESPACE_NAME_LABEL}: {pns}\n      podSelector:{}\n",
                        yaml_selector(&selector_for(&pp.labels), "      ")
                    );
                } else {
                    let _ = writeln!(
                        y,
                        "    - podSelector:{}",
                        yaml_selector(&selector_for(&pp.labels), "      ")
                    );
                }
                y
            }
            _ => format!("    - ipBlock:\n        cidr: {}\n", host_cidr(peer.ip)),
        };
        let other = match peer.kind {
            EndpointKind::Pod(p) => engine.pod(p).name.clone(),
            _ => peer.ip.to_string().replace([':', '.'], "-"),
        };
        let name = match d {
            Direction::Ingress => format!("allow-{}-from-{}", short(&pod.name), short(&other)),
            Direction::Egress => format!("allow-{}-to-{}", short(&pod.name), short(&other)),
        };
        (
            name,
            yaml_selector(&selector_for(&pod.labels), "  "),
            peer_yaml,
            format!(
                "    ports:\n    - protocol: {proto}\n      port: {}\n",
                flow.dest_port
            ),
        )
    };
    let (types, rules_key, peer_key) = match d {
        Direction::Ingress => ("Ingress", "ingress", "from"),
        Direction::Egress => ("Egress", "egress", "to"),
    };
    format!(
        "apply a NetworkPolicy that allows it{}:\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  podSelector:{pod_selector}\n  policyTypes:\n  - {types}\n  {rules_key}:\n  - {peer_key}:\n{peer_yaml}{ports_yaml}",
        if dns {
            " (DNS for every pod of the namespace, as is usual)"
        } else {
            ""
        }
    )
}

fn host_cidr(ip: std::net::IpAddr) -> String {
    if ip.is_ipv4() {
        format!("{ip}/32")
    } else {
        format!("{ip}/128")
    }
}

/// Pod names with their generated suffixes trimmed, for policy names.
fn short(name: &str) -> String {
    let parts: Vec<&str> = name.split('-').collect();
    let keep = parts
        .iter()
        .rposition(|p| {
            !(p.len() >= 5
                && p.chars().all(|c| c.is_ascii_alphanumeric())
                && p.chars().any(|c| c.is_ascii_digit()))
        })
        .map_or(parts.len(), |i| i + 1);
    parts[..keep.max(1)].join("-")
}

#[cfg(test)]
mod tests {
    use super::short;

    #[test]
    fn short_names_drop_generated_suffixes() {
        assert_eq!(short("client-red-5689846f5b-b5ccx"), "client-red");
        assert_eq!(short("redis"), "redis");
        assert_eq!(short("web-0"), "web-0");
    }
}
