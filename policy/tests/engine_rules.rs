//! One test per semantic rule of the engine that the reachability matrices don't isolate:
//! node-local traffic, self traffic, host-network pods, external peers, named ports on egress,
//! terminated pods, IPv6, record shapes, and the Dataplane V2 warnings.

use std::path::Path;

use verdict_policy::dataplane_v2::dataplane_v2_warnings;
use verdict_policy::engine::{EndpointKind, Flow};
use verdict_policy::manifests::load_str;
use verdict_policy::{EndpointSpec, Engine, Error, IpBlockMode, Reason};
use verdict_schema::{Direction, Disposition, Endpoint, PolicyRef, Protocol, Timestamp};

const BASE: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: n1}
spec: {podCIDR: 10.2.1.0/24}
status: {addresses: [{type: InternalIP, address: 172.18.0.2}]}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
status: {addresses: [{type: InternalIP, address: 172.18.0.3}, {type: InternalIP, address: 'fc00::3'}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-5d8f7-abcde
  namespace: shop
  labels: {app: web}
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-5d8f7, controller: true}]
spec:
  nodeName: n1
  containers:
  - name: web
    ports: [{name: http, containerPort: 8080}, {name: dns, containerPort: 5353, protocol: UDP}]
status:
  podIP: 10.2.1.10
  podIPs: [{ip: 10.2.1.10}, {ip: 'fd00::10'}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, labels: {app: client}}
spec: {nodeName: n2}
status:
  podIP: 10.2.2.20
  podIPs: [{ip: 10.2.2.20}, {ip: 'fd00::20'}]
---
apiVersion: v1
kind: Pod
metadata: {name: agent, namespace: kube-system, labels: {app: web}}
spec: {nodeName: n1, hostNetwork: true}
status: {podIP: 172.18.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: old-job, namespace: shop, labels: {app: client}}
spec: {nodeName: n2}
status: {phase: Succeeded, podIP: 10.2.2.99}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.96.0.10, selector: {app: web}}
"#;

fn engine_with(policies: &str, mode: IpBlockMode) -> (Engine, verdict_policy::manifests::Loaded) {
    let loaded = load_str(&format!("{BASE}---\n{policies}"), Path::new("t.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    (Engine::build(&loaded.state, mode).unwrap(), loaded)
}

fn engine(policies: &str) -> Engine {
    engine_with(policies, IpBlockMode::DataplaneV2).0
}

fn flow(e: &Engine, src: &str, dest: &str, proto: Protocol, port: u16) -> Flow {
    let (s, d) = e
        .resolve_pair(
            &EndpointSpec::parse(src).unwrap(),
            &EndpointSpec::parse(dest).unwrap(),
        )
        .unwrap();
    Flow {
        src: s,
        dest: d,
        protocol: proto,
        dest_port: port,
    }
}

const DENY_ALL_SHOP: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-all, namespace: shop}\nspec: {podSelector: {}, policyTypes: [Ingress, Egress]}\n";

#[test]
fn kubelet_traffic_from_the_pods_own_node_is_always_allowed() {
    let e = engine(DENY_ALL_SHOP);
    for src in ["node:n1", "ip:172.18.0.2", "ip:10.2.1.1"] {
        let v = e.evaluate(&flow(&e, src, "shop/web-5d8f7-abcde", Protocol::Tcp, 8080));
        assert!(v.allowed(), "{src}");
        assert_eq!(v.ingress.reason, Reason::NodeLocal);
        assert!(v.ingress.isolated);
    }
    // Another node's address is just another peer: denied.
    let v = e.evaluate(&flow(
        &e,
        "node:n2",
        "shop/web-5d8f7-abcde",
        Protocol::Tcp,
        8080,
    ));
    assert!(!v.allowed());
    assert_eq!(v.ingress.reason, Reason::NoRuleMatched);
}

#[test]
fn a_pod_always_reaches_itself() {
    let e = engine(DENY_ALL_SHOP);
    let v = e.evaluate(&flow(
        &e,
        "shop/web-5d8f7-abcde",
        "shop/web-5d8f7-abcde",
        Protocol::Tcp,
        8080,
    ));
    assert!(v.allowed());
    assert_eq!(v.ingress.reason, Reason::SamePod);
    assert_eq!(v.egress.reason, Reason::SamePod);
    assert!(!e.log_decision(&v.ingress).is_logged());
}

#[test]
fn host_network_pods_are_the_node() {
    let e = engine(DENY_ALL_SHOP);
    let (s, d) = e
        .resolve_pair(
            &EndpointSpec::parse("kube-system/agent").unwrap(),
            &EndpointSpec::parse("shop/client").unwrap(),
        )
        .unwrap();
    assert!(matches!(s.kind, EndpointKind::Node(_)));
    let v = e.evaluate(&Flow {
        src: s,
        dest: d,
        protocol: Protocol::Tcp,
        dest_port: 80,
    });
    assert_eq!(v.egress.reason, Reason::NotAPod);
    assert!(
        !v.ingress.allowed,
        "client runs on n2: n1's address is not node-local to it"
    );
    // Pod selectors never pick host-network pods: `app: web` selects only the web pod.
    let p = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web, namespace: kube-system}\nspec: {podSelector: {matchLabels: {app: web}}}\n";
    let e = engine(p);
    assert!(e.policies()[0].source.metadata.name == "web");
    let agent = e.find_pod("kube-system", "agent").unwrap();
    assert!(e.isolating(agent, Direction::Ingress).is_empty());
}

#[test]
fn egress_to_an_external_host_by_ip_block() {
    let p = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: to-example, namespace: shop}\nspec:\n  podSelector: {matchLabels: {app: client}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{ipBlock: {cidr: 93.184.216.34/32}}]\n    ports: [{protocol: TCP, port: 80}]\n";
    let e = engine(p);
    let v = e.evaluate(&flow(
        &e,
        "shop/client",
        "ip:93.184.216.34",
        Protocol::Tcp,
        80,
    ));
    assert!(v.allowed());
    assert_eq!(v.egress.allowing.len(), 1);
    assert_eq!(v.ingress.reason, Reason::NotAPod);
    let v = e.evaluate(&flow(
        &e,
        "shop/client",
        "ip:93.184.216.35",
        Protocol::Tcp,
        80,
    ));
    assert!(!v.allowed());
    let v = e.evaluate(&flow(
        &e,
        "shop/client",
        "ip:93.184.216.34",
        Protocol::Tcp,
        443,
    ));
    assert!(!v.allowed());
}

#[test]
fn named_ports_resolve_against_the_destination_pod() {
    let p = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: named, namespace: shop}\nspec:\n  podSelector: {matchLabels: {app: client}}\n  policyTypes: [Egress]\n  egress:\n  - ports: [{port: http}, {port: dns, protocol: UDP}]\n";
    let e = engine(p);
    assert!(
        e.evaluate(&flow(
            &e,
            "shop/client",
            "shop/web-5d8f7-abcde",
            Protocol::Tcp,
            8080
        ))
        .allowed()
    );
    assert!(
        e.evaluate(&flow(
            &e,
            "shop/client",
            "shop/web-5d8f7-abcde",
            Protocol::Udp,
            5353
        ))
        .allowed()
    );
    assert!(
        !e.evaluate(&flow(
            &e,
            "shop/client",
            "shop/web-5d8f7-abcde",
            Protocol::Tcp,
            5353
        ))
        .allowed()
    );
    // An external destination has no named ports.
    assert!(
        !e.evaluate(&flow(
            &e,
            "shop/client",
            "ip:203.0.113.9",
            Protocol::Tcp,
            8080
        ))
        .allowed()
    );
}

#[test]
fn terminated_pods_hold_no_ip() {
    let e = engine("");
    let r = e.resolve_ip("10.2.2.99".parse().unwrap());
    assert_eq!(r.kind, EndpointKind::External);
    let err = e
        .resolve_pair(
            &EndpointSpec::parse("shop/old-job").unwrap(),
            &EndpointSpec::parse("shop/client").unwrap(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("has no IP"), "{err}");
}

#[test]
fn unknown_names_are_errors() {
    let e = engine("");
    assert!(matches!(
        e.find_pod("nope", "x"),
        Err(Error::UnknownNamespace(_))
    ));
    assert!(matches!(
        e.find_pod("shop", "nope"),
        Err(Error::UnknownPod { .. })
    ));
    assert!(matches!(e.find_node("n9"), Err(Error::UnknownNode(_))));
}

#[test]
fn two_running_pods_with_one_ip_are_refused() {
    let dup = "apiVersion: v1\nkind: Pod\nmetadata: {name: dup, namespace: shop}\nstatus: {podIP: 10.2.2.20}\n";
    let loaded = load_str(&format!("{BASE}---\n{dup}"), Path::new("t.yaml")).unwrap();
    let e = Engine::build(&loaded.state, IpBlockMode::DataplaneV2)
        .unwrap_err()
        .to_string();
    assert!(e.contains("both have IP 10.2.2.20"), "{e}");
}

#[test]
fn ipv6_flows_are_judged_and_recorded() {
    let p = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web-from-client, namespace: shop}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {app: client}}}]\n---\napiVersion: networking.gke.io/v1alpha1\nkind: NetworkLogging\nmetadata: {name: default}\nspec: {cluster: {allow: {log: true}, deny: {log: true}}}\n";
    let e = engine(p);
    let f = flow(&e, "shop/client", "ip:fd00::10", Protocol::Tcp, 8080);
    assert_eq!(
        f.src.ip.to_string(),
        "fd00::20",
        "source picked in the destination's family"
    );
    let v = e.evaluate(&f);
    assert!(v.allowed());
    let ts = Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
    let r = e.record(&f, 40000, &v.ingress, ts).unwrap();
    assert_eq!(r.connection.src_ip.to_string(), "fd00::20");
    assert_eq!(
        r.policies,
        Some(vec![PolicyRef::network_policy("shop", "web-from-client")])
    );
    assert_eq!(
        r.node_name, "n1",
        "ingress records are written by the destination's node"
    );
    match &r.dest {
        Endpoint::Pod(p) => {
            assert_eq!(p.workload_name.as_deref(), Some("web-5d8f7"));
            assert_eq!(p.workload_kind.as_deref(), Some("ReplicaSet"));
        }
        other => panic!("{other:?}"),
    }
    match &r.src {
        Endpoint::Pod(p) => {
            assert_eq!(p.workload_name, None, "a pod without owner has no workload")
        }
        other => panic!("{other:?}"),
    }
    // An external IPv6 source is an instance.
    let f = flow(
        &e,
        "ip:2001:db8::1",
        "shop/web-5d8f7-abcde",
        Protocol::Tcp,
        8080,
    );
    let v = e.evaluate(&f);
    let r = e.record(&f, 1, &v.ingress, ts).unwrap();
    assert_eq!(r.disposition, Disposition::Deny);
    assert_eq!(
        r.src,
        Endpoint::Instance {
            instance: "2001:db8::1".parse().unwrap()
        }
    );
    assert_eq!(r.policies, None);
}

#[test]
fn egress_records_are_written_by_the_source_node() {
    let p = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: client-out, namespace: shop}\nspec:\n  podSelector: {matchLabels: {app: client}}\n  egress: [{to: [{podSelector: {}}]}]\n---\napiVersion: networking.gke.io/v1alpha1\nkind: NetworkLogging\nmetadata: {name: default}\nspec: {cluster: {allow: {log: true}, deny: {log: true}}}\n";
    let e = engine(p);
    let f = flow(
        &e,
        "shop/client",
        "shop/web-5d8f7-abcde",
        Protocol::Tcp,
        8080,
    );
    let v = e.evaluate(&f);
    let r = e
        .record(&f, 1, &v.egress, Timestamp::from_unix_nanos(0))
        .unwrap();
    assert_eq!(r.connection.direction, Direction::Egress);
    assert_eq!(r.node_name, "n2");
    assert_eq!(
        r.policies,
        Some(vec![PolicyRef::network_policy("shop", "client-out")])
    );
}

#[test]
fn allow_records_list_every_allowing_policy_in_order() {
    let mk = |name: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  podSelector: {{matchLabels: {{app: web}}}}\n  ingress: [{{}}]\n"
        )
    };
    let nl = "apiVersion: networking.gke.io/v1alpha1\nkind: NetworkLogging\nmetadata: {name: default}\nspec: {cluster: {allow: {log: true}}}\n";
    let e = engine(&format!(
        "{}---\n{}---\n{}---\n{nl}",
        mk("zeta"),
        mk("alpha"),
        mk("mid")
    ));
    let f = flow(
        &e,
        "shop/client",
        "shop/web-5d8f7-abcde",
        Protocol::Tcp,
        8080,
    );
    let v = e.evaluate(&f);
    let names: Vec<String> = e
        .record(&f, 1, &v.ingress, Timestamp::from_unix_nanos(0))
        .unwrap()
        .policies
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["alpha", "mid", "zeta"]);
}

#[test]
fn dataplane_v2_warnings_name_the_rejected_forms() {
    let p = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: calico-style, namespace: shop}\nspec:\n  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.2.1.10/32}\n    - ipBlock: {cidr: 10.96.0.10/32}\n    - ipBlock: {cidr: 10.2.0.0/16}\n    - ipBlock: {cidr: 0.0.0.0/0}\n    ports:\n    - protocol: TCP\n";
    let (_, loaded) = engine_with(p, IpBlockMode::DataplaneV2);
    let w: Vec<String> = dataplane_v2_warnings(&loaded.state)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(w.len(), 4, "{w:#?}");
    assert!(w.iter().any(|m| {
        m.contains("from[0].ipBlock.cidr 10.2.1.10/32 is the IP of pod shop/web-5d8f7-abcde")
    }));
    assert!(
        w.iter()
            .any(|m| m.contains("ClusterIP of service shop/web"))
    );
    assert!(
        w.iter()
            .any(|m| m.contains("from[2].ipBlock 10.2.0.0/16 covers pod IPs"))
    );
    assert!(
        w.iter()
            .any(|m| m.contains("ports[0]: protocol TCP without a port"))
    );
    assert!(
        w.iter()
            .all(|m| m.starts_with("t.yaml:") && m.contains("NetworkPolicy shop/calico-style")),
        "{w:#?}"
    );
}
