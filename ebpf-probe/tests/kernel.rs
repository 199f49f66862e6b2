//! The eBPF datapath in the kernel: real network namespaces, veth pairs, TCP and UDP. Allowed
//! connections succeed, denied ones fail, and policy_action.log holds exactly GKE's records.
//! These tests need root; in CI (CI=true) they fail rather than skip when they cannot run.

mod support;

use support::netns::{PodSpec, Topology, can_run};
use verdict_schema::{Disposition, Endpoint, PolicyRef, Protocol};

fn pod(
    namespace: &'static str,
    name: &'static str,
    labels: &'static str,
    i: u8,
    ports: &'static str,
) -> PodSpec {
    PodSpec {
        namespace,
        name,
        labels,
        ipv4: format!("10.244.1.{i}"),
        ipv6: format!("fd00:244::{i}"),
        ports,
    }
}

const LOG_ALL: &str = "apiVersion: networking.gke.io/v1alpha1\nkind: NetworkLogging\nmetadata: {name: default}\nspec: {cluster: {allow: {log: true}, deny: {log: true}}}\n";

#[test]
fn seed_allow_green_example_in_the_kernel() {
    if !can_run() {
        return;
    }
    let mut t = Topology::new(vec![
        pod(
            "default",
            "test-service",
            "{app: test-service}",
            10,
            "{name: http, containerPort: 8080}",
        ),
        pod("default", "client-green", "{app: client-green}", 11, ""),
        pod("default", "client-red", "{app: client-red}", 12, ""),
    ]);
    t.write_manifests(&format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: allow-green\n  namespace: default\n  annotations: {{policy.network.gke.io/enable-logging: \"true\"}}\nspec:\n  podSelector: {{matchLabels: {{app: test-service}}}}\n  ingress: [{{from: [{{podSelector: {{matchLabels: {{app: client-green}}}}}}]}}]\n  policyTypes: [Ingress]\n---\n{LOG_ALL}"
    ));
    let server = t.pod("default/test-service").1.clone();
    t.serve(&server, &["tcp:8080"]);
    let probe = t.start_probe(&["--deny-aggregation-window", "3s"]);
    let green = t.pod("default/client-green").1.clone();
    let red = t.pod("default/client-red").1.clone();
    assert!(
        t.connect(&green, "tcp", "10.244.1.10", 8080, 52648),
        "client-green is allowed"
    );
    for port in [39610, 39611, 39612] {
        assert!(
            !t.connect(&red, "tcp", "10.244.1.10", 8080, port),
            "client-red is denied"
        );
    }
    // Kubelet probe from the node's own address: always allowed, even though isolated.
    assert!(
        t.node(&[
            "python3",
            "-c",
            support::netns::CLIENT,
            "tcp",
            "10.244.1.10",
            "8080"
        ])
        .contains("ok"),
        "probe traffic from the node passes"
    );
    let records = t.stop_probe(probe);
    let allow: Vec<_> = records
        .iter()
        .filter(|r| r.disposition == Disposition::Allow && r.connection.src_port == 52648)
        .collect();
    assert_eq!(allow.len(), 1, "{records:#?}");
    let a = allow[0];
    assert_eq!(a.connection.src_ip.to_string(), "10.244.1.11");
    assert_eq!(a.connection.dest_ip.to_string(), "10.244.1.10");
    assert_eq!(
        (a.connection.dest_port, a.connection.protocol.clone()),
        (8080, Protocol::Tcp)
    );
    assert_eq!(a.connection.direction, verdict_schema::Direction::Ingress);
    assert_eq!(
        a.policies,
        Some(vec![PolicyRef::network_policy("default", "allow-green")])
    );
    assert_eq!(a.count, 1);
    assert_eq!(a.node_name, "node-1");
    match (&a.src, &a.dest) {
        (Endpoint::Pod(s), Endpoint::Pod(d)) => {
            assert_eq!(
                (
                    s.pod_name.as_str(),
                    s.workload_name.as_deref(),
                    s.workload_kind.as_deref()
                ),
                ("client-green", Some("client-green-rs"), Some("ReplicaSet"))
            );
            assert_eq!(d.pod_name, "test-service");
        }
        other => panic!("{other:?}"),
    }
    let denies: Vec<_> = records
        .iter()
        .filter(|r| r.disposition == Disposition::Deny)
        .collect();
    assert_eq!(
        denies.len(),
        1,
        "three attempts within the window: one record\n{records:#?}"
    );
    let d = denies[0];
    assert_eq!(
        (d.count, d.connection.src_port),
        (3, 39610),
        "count 3, the first attempt's src_port"
    );
    assert_eq!(d.policies, None);
    assert!(matches!(&d.src, Endpoint::Pod(p) if p.pod_name == "client-red"));
    let probes: Vec<_> = records
        .iter()
        .filter(|r| matches!(r.src, Endpoint::Instance { .. }))
        .collect();
    assert_eq!(probes.len(), 1, "{records:#?}");
    assert_eq!(probes[0].policies, Some(vec![PolicyRef::node_local()]));
    assert_eq!(
        probes[0].src,
        Endpoint::Instance {
            instance: "172.31.255.1".parse().unwrap()
        }
    );
}
