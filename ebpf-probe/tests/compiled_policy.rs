//! The compiled kernel tables, read by a Rust mirror of the kernel's lookup, agree with the
//! policy engine on every pair of the x/y/z × a/b/c model for several policy sets, every protocol
//! and a spread of ports, in both ipBlock modes — verdict, isolation and allowing policies alike.
//! (The netns tests then check the kernel against the same tables.)

use std::net::IpAddr;
use std::path::Path;

use verdict_policy::engine::{EnforcementMode, Flow, Reason};
use verdict_policy::manifests::load_str;
use verdict_policy::{Engine, IpBlockMode};
use verdict_probe::kernel::abi::{DIR_EGRESS, DIR_INGRESS, PROTO_SCTP, PROTO_TCP, PROTO_UDP};
use verdict_probe::kernel::compile::{NodeContext, Numbering, compile, simulate};
use verdict_schema::{Direction, Protocol};

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];

fn model(policies: &str) -> String {
    let mut y = String::from(
        "apiVersion: v1\nkind: Node\nmetadata: {name: node-1}\nspec: {podCIDR: 10.0.0.0/16}\nstatus: {addresses: [{type: InternalIP, address: 172.18.0.2}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: svc, namespace: x}\nspec: {clusterIP: 10.96.0.10}\n",
    );
    for (i, ns) in NAMESPACES.iter().enumerate() {
        y.push_str(&format!("---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{team: t{i}}}}}\n"));
        for (j, pod) in PODS.iter().enumerate() {
            let mut ports = String::new();
            for port in [80, 81] {
                for proto in ["TCP", "UDP", "SCTP"] {
                    ports.push_str(&format!("    - {{name: serve-{port}-{}, containerPort: {port}, protocol: {proto}}}\n", proto.to_lowercase()));
                }
            }
            // c pods listen on 8080 under the name "http" too; b pods on 9090.
            let extra = match *pod {
                "c" => "    - {name: http, containerPort: 8080}\n",
                "b" => "    - {name: http, containerPort: 9090}\n",
                _ => "",
            };
            y.push_str(&format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: {ns}, labels: {{pod: {pod}}}}}\nspec:\n  nodeName: node-1\n  containers:\n  - name: c\n    ports:\n{ports}{extra}status:\n  podIP: 10.0.{}.{}\n  podIPs: [{{ip: 10.0.{}.{}}}, {{ip: 'fd00::{}:{}'}}]\n",
                i + 1, j + 1, i + 1, j + 1, i + 1, j + 1
            ));
        }
    }
    format!("{y}---\n{policies}")
}

const POLICY_SETS: &[&str] = &[
    "",
    // default deny all in x, plus allow-dns style egress and ingress from y
    "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-all, namespace: x}\nspec: {podSelector: {}, policyTypes: [Ingress, Egress]}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: dns, namespace: x}\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: z}}}]\n    ports: [{port: 80, protocol: UDP}, {port: 80, protocol: TCP}]\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: from-y, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {team: t1}}, podSelector: {matchExpressions: [{key: pod, operator: NotIn, values: [c]}]}}]}]\n",
    // named ports, endPort ranges, SCTP, union of policies, many ports (a split rule)
    "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: named, namespace: y}\nspec:\n  podSelector: {}\n  ingress: [{ports: [{port: http}, {port: serve-81-udp, protocol: UDP}]}]\n  egress: [{ports: [{port: http}]}, {to: [{podSelector: {matchLabels: {pod: a}}}], ports: [{port: 80, endPort: 81, protocol: SCTP}]}]\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: many, namespace: y}\nspec:\n  podSelector: {matchLabels: {pod: b}}\n  ingress: [{from: [{namespaceSelector: {}}], ports: [{port: 1}, {port: 2}, {port: 3}, {port: 4}, {port: 5}, {port: 6}, {port: 7}, {port: 8}, {port: 80, protocol: UDP}, {port: 81}]}]\n",
    // ipBlocks with excepts (both families), overlapping, egress and ingress
    "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: cidrs, namespace: z}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress, Egress]\n  ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.1.0/24, 10.0.2.2/32]}}, {ipBlock: {cidr: 'fd00::/64', except: ['fd00::1:0/112']}}]\n  - from: [{ipBlock: {cidr: 10.0.1.0/24, except: [10.0.1.3/32]}}]\n    ports: [{port: 81}]\n  egress:\n  - to: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.0.0.0/8]}}, {ipBlock: {cidr: '::/0', except: ['fd00::/16']}}]\n  - to: [{podSelector: {matchLabels: {pod: c}}, namespaceSelector: {}}]\n    ports: [{port: 80, protocol: UDP}]\n",
    // policyTypes Egress ignoring ingress rules; egress rules implying Egress; empty ingress list
    "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: egress-only, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: b}}\n  policyTypes: [Egress]\n  ingress: [{from: [{podSelector: {}}]}]\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: implied, namespace: y}\nspec:\n  podSelector: {matchLabels: {pod: c}}\n  egress: [{to: [{namespaceSelector: {matchExpressions: [{key: team, operator: In, values: [t0, t2]}]}}]}]\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: none, namespace: z}\nspec: {podSelector: {matchLabels: {pod: a}}, ingress: []}\n",
];

fn ips() -> Vec<IpAddr> {
    let mut v = Vec::new();
    for i in 1..=3 {
        for j in 1..=3 {
            v.push(format!("10.0.{i}.{j}").parse().unwrap());
            v.push(format!("fd00::{i}:{j}").parse().unwrap());
        }
    }
    // Non-pods: the node (kubelet), its router address, an external host in and out of the
    // ipBlocks, and a Service address.
    for s in [
        "172.18.0.2",
        "10.0.0.1",
        "8.8.8.8",
        "10.0.9.9",
        "10.1.0.5",
        "2001:db8::1",
        "fd00::9:9",
    ] {
        v.push(s.parse().unwrap());
    }
    v
}

fn proto_number(p: &Protocol) -> u8 {
    match p {
        Protocol::Tcp => PROTO_TCP,
        Protocol::Udp => PROTO_UDP,
        Protocol::Sctp => PROTO_SCTP,
        _ => unreachable!(),
    }
}

fn check(policies: &str, mode: IpBlockMode) -> usize {
    let loaded =
        load_str(&model(policies), Path::new("model.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let engine = Engine::build(&loaded.state, mode).unwrap();
    let node = NodeContext {
        node_name: "node-1".into(),
        default_mode: EnforcementMode::Enforce,
        idle_ns: 30_000_000_000,
    };
    let tables = compile(&engine, &node, &mut Numbering::default(), None, 1);
    let mut checked = 0;
    for src in ips() {
        for dst in ips() {
            if src == dst || src.is_ipv4() != dst.is_ipv4() {
                continue;
            }
            for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
                for port in [1, 8, 79, 80, 81, 82, 443, 8080, 9090] {
                    let flow = Flow {
                        src: engine.resolve_ip(src),
                        dest: engine.resolve_ip(dst),
                        protocol: protocol.clone(),
                        dest_port: port,
                    };
                    let verdict = engine.evaluate(&flow);
                    for (dir, side) in [
                        (DIR_EGRESS, &verdict.egress),
                        (DIR_INGRESS, &verdict.ingress),
                    ] {
                        let sim = simulate(&tables, src, dst, proto_number(&protocol), port, dir);
                        let what = format!(
                            "{src} -> {dst} {protocol}/{port} dir {dir} ({mode:?})\npolicies:\n{policies}"
                        );
                        match sim {
                            None => assert!(
                                side.enforced_pod.is_none(),
                                "engine enforces, tables don't: {what}"
                            ),
                            Some(s) => {
                                assert!(side.enforced_pod.is_some(), "{what}");
                                assert_eq!(s.isolated, side.isolated, "isolated: {what}");
                                assert_eq!(s.allowed, side.allowed, "verdict: {what}");
                                if side.isolated {
                                    // The kernel reports only isolated decisions; their policies must match.
                                    let pd = tables
                                        .pod_dirs
                                        .get(&verdict_probe::kernel::abi::PodDirKey {
                                            local_id: tables.endpoints
                                                [&verdict_probe::kernel::abi::EpKey {
                                                    ip: verdict_probe::kernel::abi::ip_key(
                                                        if dir == DIR_EGRESS { src } else { dst },
                                                    ),
                                                }]
                                                .local_id,
                                            dir,
                                        })
                                        .unwrap();
                                    let from_mask: Vec<(String, String)> =
                                        s.allowing().map(|b| pd.policies[b].clone()).collect();
                                    let from_engine: Vec<(String, String)> = side
                                        .allowing
                                        .iter()
                                        .map(|&id| {
                                            (
                                                engine.policy(id).namespace.clone(),
                                                engine.policy(id).name.clone(),
                                            )
                                        })
                                        .collect();
                                    if side.reason != Reason::NodeLocal {
                                        assert_eq!(
                                            from_mask, from_engine,
                                            "allowing policies: {what}"
                                        );
                                    }
                                }
                            }
                        }
                        checked += 1;
                    }
                }
            }
        }
    }
    let _ = Direction::Ingress;
    checked
}

#[test]
fn compiled_tables_agree_with_the_engine_in_dataplane_v2_mode() {
    let n: usize = POLICY_SETS
        .iter()
        .map(|p| check(p, IpBlockMode::DataplaneV2))
        .sum();
    assert!(n > 50_000, "{n} decisions compared");
}

#[test]
fn compiled_tables_agree_with_the_engine_in_calico_mode() {
    let n: usize = POLICY_SETS
        .iter()
        .map(|p| check(p, IpBlockMode::Calico))
        .sum();
    assert!(n > 50_000, "{n} decisions compared");
}

#[test]
fn unchanged_pod_tables_keep_their_version() {
    let loaded = load_str(&model(POLICY_SETS[1]), Path::new("m.yaml")).unwrap();
    let engine = Engine::build(&loaded.state, IpBlockMode::DataplaneV2).unwrap();
    let node = NodeContext {
        node_name: "node-1".into(),
        default_mode: EnforcementMode::Enforce,
        idle_ns: 1,
    };
    let mut numbering = Numbering::default();
    let first = compile(&engine, &node, &mut numbering, None, 1);
    // Add a policy in z: x's tables are untouched, z's change.
    let loaded = load_str(&model(&format!("{}---\n{}", POLICY_SETS[1], "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: zz, namespace: z}\nspec: {podSelector: {}}\n")), Path::new("m.yaml")).unwrap();
    let engine = Engine::build(&loaded.state, IpBlockMode::DataplaneV2).unwrap();
    let second = compile(&engine, &node, &mut numbering, Some(&first), 2);
    let mut same = 0;
    let mut changed = 0;
    for (k, t) in &second.pod_dirs {
        match first.pod_dirs.get(k) {
            Some(p) if p.version == t.version => same += 1,
            _ => changed += 1,
        }
    }
    assert!(same >= 3 && changed >= 3, "same {same}, changed {changed}");
    assert_eq!(
        first.endpoints, second.endpoints,
        "identities and local ids are stable"
    );
}

/// `count` policies isolating `pod` in x for ingress, policy i allowing y/b on TCP port 1000 + i.
fn many_policies(pod: &str, count: usize) -> String {
    (0..count)
        .map(|i| format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {pod}-{i}, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: {pod}}}}}\n  ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{team: t1}}}}, podSelector: {{matchLabels: {{pod: b}}}}}}], ports: [{{port: {}, protocol: TCP}}]}}]\n",
            1000 + i
        ))
        .collect::<Vec<_>>()
        .join("---\n")
}

#[test]
fn hundreds_of_policies_are_enforced_and_a_pod_past_the_limit_fails_closed_alone() {
    use verdict_probe::kernel::abi::MAX_POLICIES;
    // x/a: 400 policies (within the datapath's 512); x/b: 600 (past it).
    let policies = format!(
        "{}---\n{}",
        many_policies("a", 400),
        many_policies("b", MAX_POLICIES + 88)
    );
    let loaded = load_str(&model(&policies), Path::new("m.yaml")).unwrap();
    let engine = Engine::build(&loaded.state, IpBlockMode::DataplaneV2).unwrap();
    let node = NodeContext {
        node_name: "node-1".into(),
        default_mode: EnforcementMode::Enforce,
        idle_ns: 1,
    };
    let tables = compile(&engine, &node, &mut Numbering::default(), None, 1);
    // Only x/b's ingress failed, with an error naming it and the limit.
    assert_eq!(tables.failed.len(), 1, "{:?}", tables.failed);
    let error = tables.failed[0].to_string();
    assert!(
        error.contains("x/b") && error.contains("600 policies") && error.contains("512"),
        "{error}"
    );
    let (xa, xb, yb, yc): (IpAddr, IpAddr, IpAddr, IpAddr) = (
        "10.0.1.1".parse().unwrap(),
        "10.0.1.2".parse().unwrap(),
        "10.0.2.2".parse().unwrap(),
        "10.0.2.3".parse().unwrap(),
    );
    // x/a: every one of its 400 policies allows its own port, and names itself as the allower.
    for i in 0..400u16 {
        let d = simulate(&tables, yb, xa, PROTO_TCP, 1000 + i, DIR_INGRESS).unwrap();
        assert!(d.isolated && d.allowed, "port {}", 1000 + i);
        let allowing: Vec<usize> = d.allowing().collect();
        assert_eq!(allowing.len(), 1, "port {}: {allowing:?}", 1000 + i);
        let flow = Flow {
            src: engine.resolve_ip(yb),
            dest: engine.resolve_ip(xa),
            protocol: Protocol::Tcp,
            dest_port: 1000 + i,
        };
        let verdict = engine.evaluate(&flow);
        assert!(
            verdict.ingress.allowed,
            "the engine agrees on port {}",
            1000 + i
        );
    }
    for (peer, port) in [(yb, 999), (yb, 1400), (yc, 1000)] {
        let d = simulate(&tables, peer, xa, PROTO_TCP, port, DIR_INGRESS).unwrap();
        assert!(d.isolated && !d.allowed, "{peer} port {port} is denied");
    }
    // x/b fails closed: even the ports its policies allow are denied — never allowed by accident.
    for port in [1000, 1001, 1599] {
        let d = simulate(&tables, yb, xb, PROTO_TCP, port, DIR_INGRESS).unwrap();
        assert!(d.isolated && !d.allowed, "x/b port {port} fails closed");
    }
    // Its egress, and the other pods, are untouched.
    let d = simulate(&tables, xb, yc, PROTO_TCP, 80, DIR_EGRESS).unwrap();
    assert!(!d.isolated && d.allowed);
    let d = simulate(&tables, yb, yc, PROTO_TCP, 80, DIR_INGRESS).unwrap();
    assert!(!d.isolated && d.allowed);
}
