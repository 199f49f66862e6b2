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
    // Each denied attempt waits for its client's timeout, so three take seconds (more on a busy
    // machine): a window far longer than that keeps them in one record; stopping the probe
    // emits the open window.
    let probe = t.start_probe(&["--deny-aggregation-window", "60s"]);
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

fn records_where(
    records: &[verdict_schema::PolicyActionRecord],
    f: impl Fn(&verdict_schema::PolicyActionRecord) -> bool,
) -> Vec<verdict_schema::PolicyActionRecord> {
    records.iter().filter(|r| f(r)).cloned().collect()
}

#[test]
fn default_deny_namespace_with_dns_egress_on_udp_and_tcp_53() {
    if !can_run() {
        return;
    }
    let mut t = Topology::new(vec![
        pod("shop", "cart", "{app: cart}", 20, ""),
        pod(
            "shop",
            "redis",
            "{app: redis}",
            21,
            "{name: redis, containerPort: 6379}",
        ),
        pod(
            "kube-system",
            "coredns",
            "{k8s-app: kube-dns}",
            22,
            "{name: dns, containerPort: 53, protocol: UDP}, {name: dns-tcp, containerPort: 53}",
        ),
    ]);
    t.write_manifests(&format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: default-deny, namespace: shop}}\nspec: {{podSelector: {{}}, policyTypes: [Ingress, Egress]}}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: allow-allpods-to-dns, namespace: shop}}\nspec:\n  policyTypes: [Egress]\n  podSelector: {{}}\n  egress:\n  - to: [{{namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: kube-system}}}}}}]\n    ports: [{{port: 53, protocol: UDP}}, {{port: 53, protocol: TCP}}]\n---\n{LOG_ALL}"
    ));
    let dns = t.pod("kube-system/coredns").1.clone();
    let redis = t.pod("shop/redis").1.clone();
    let cart = t.pod("shop/cart").1.clone();
    t.serve(&dns, &["udp:53", "tcp:53"]);
    t.serve(&redis, &["tcp:6379"]);
    let probe = t.start_probe(&["--deny-aggregation-window", "1s"]);
    assert!(
        t.connect(&cart, "udp", "10.244.1.22", 53, 40000),
        "DNS over UDP"
    );
    assert!(
        t.connect(&cart, "tcp", "10.244.1.22", 53, 40001),
        "DNS over TCP"
    );
    assert!(
        !t.connect(&cart, "tcp", "10.244.1.21", 6379, 40002),
        "default deny: cart may not reach redis"
    );
    assert!(
        !t.connect(&cart, "udp", "10.244.1.22", 5353, 40003),
        "only port 53"
    );
    let records = t.stop_probe(probe);
    let dns_allows = records_where(&records, |r| {
        r.disposition == Disposition::Allow && r.connection.dest_port == 53
    });
    assert_eq!(dns_allows.len(), 2, "{records:#?}");
    for r in &dns_allows {
        assert_eq!(r.connection.direction, verdict_schema::Direction::Egress);
        assert_eq!(
            r.policies,
            Some(vec![PolicyRef::network_policy(
                "shop",
                "allow-allpods-to-dns"
            )])
        );
        assert!(matches!(&r.dest, Endpoint::Pod(p) if p.pod_namespace == "kube-system"));
    }
    assert_eq!(
        dns_allows
            .iter()
            .map(|r| r.connection.protocol.clone())
            .collect::<std::collections::BTreeSet<_>>(),
        [Protocol::Tcp, Protocol::Udp].into_iter().collect()
    );
    let denies = records_where(&records, |r| r.disposition == Disposition::Deny);
    assert_eq!(denies.len(), 2, "{records:#?}");
    assert!(denies.iter().all(
        |r| r.connection.direction == verdict_schema::Direction::Egress
            && r.connection.src_ip.to_string() == "10.244.1.20"
    ));
}

#[test]
fn named_port_and_end_port_range() {
    if !can_run() {
        return;
    }
    let mut t = Topology::new(vec![
        pod(
            "web",
            "frontend",
            "{app: frontend}",
            30,
            "{name: http, containerPort: 8080}",
        ),
        pod("web", "client", "{app: client}", 31, ""),
    ]);
    t.write_manifests(&format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: ports, namespace: web}}\nspec:\n  podSelector: {{matchLabels: {{app: frontend}}}}\n  ingress:\n  - ports: [{{port: http}}, {{port: 9000, endPort: 9100}}]\n---\n{LOG_ALL}"
    ));
    let fe = t.pod("web/frontend").1.clone();
    let client = t.pod("web/client").1.clone();
    t.serve(&fe, &["tcp:8080", "tcp:9050", "tcp:9200"]);
    let probe = t.start_probe(&[]);
    assert!(
        t.connect(&client, "tcp", "10.244.1.30", 8080, 0),
        "named port http = 8080"
    );
    assert!(
        t.connect(&client, "tcp", "10.244.1.30", 9050, 0),
        "inside 9000-9100"
    );
    assert!(
        !t.connect(&client, "tcp", "10.244.1.30", 9200, 0),
        "outside the range"
    );
    let records = t.stop_probe(probe);
    let ports: Vec<(u16, Disposition)> = records
        .iter()
        .map(|r| (r.connection.dest_port, r.disposition))
        .collect();
    assert!(
        ports.contains(&(8080, Disposition::Allow))
            && ports.contains(&(9050, Disposition::Allow))
            && ports.contains(&(9200, Disposition::Deny)),
        "{ports:?}"
    );
}

#[test]
fn ip_block_with_except_for_external_hosts() {
    if !can_run() {
        return;
    }
    let mut t = Topology::new(vec![pod("app", "api", "{app: api}", 40, "")]);
    let ok = t.add_external("198.18.0.10");
    let excluded = t.add_external("198.18.0.11");
    t.write_manifests(&format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: to-partner, namespace: app}}\nspec:\n  podSelector: {{}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{{ipBlock: {{cidr: 198.18.0.0/24, except: [198.18.0.11/32]}}}}]\n    ports: [{{port: 80}}]\n---\n{LOG_ALL}"
    ));
    t.serve(&ok, &["tcp:80"]);
    t.serve(&excluded, &["tcp:80"]);
    let api = t.pod("app/api").1.clone();
    let probe = t.start_probe(&[]);
    assert!(
        t.connect(&api, "tcp", "198.18.0.10", 80, 0),
        "inside the cidr"
    );
    assert!(!t.connect(&api, "tcp", "198.18.0.11", 80, 0), "the except");
    let records = t.stop_probe(probe);
    let allow = records_where(&records, |r| r.disposition == Disposition::Allow);
    assert_eq!(allow.len(), 1, "{records:#?}");
    assert_eq!(
        allow[0].dest,
        Endpoint::Instance {
            instance: "198.18.0.10".parse().unwrap()
        }
    );
    assert_eq!(
        allow[0].policies,
        Some(vec![PolicyRef::network_policy("app", "to-partner")])
    );
    let deny = records_where(&records, |r| r.disposition == Disposition::Deny);
    assert_eq!(deny.len(), 1);
    assert_eq!(
        deny[0].dest,
        Endpoint::Instance {
            instance: "198.18.0.11".parse().unwrap()
        }
    );
}

fn green_red_cluster() -> (Topology, String, String, String) {
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
    t.write_manifests(&green_only());
    let server = t.pod("default/test-service").1.clone();
    t.serve(&server, &["tcp:8080", "udp:8080"]);
    let green = t.pod("default/client-green").1.clone();
    let red = t.pod("default/client-red").1.clone();
    (t, server, green, red)
}

/// A TCP connection from `client` to the test service exchanging every 100 ms for 3 s, returned
/// once its first exchange is done (so it is established before whatever the test changes).
fn established(t: &Topology, client: &str) -> std::process::Child {
    let mut long_lived = t.spawn_client(client, "tcp", "10.244.1.10", 8080, 30, 0.1);
    use std::io::BufRead;
    let out = long_lived.stdout.as_mut().expect("piped stdout");
    let mut first = String::new();
    std::io::BufReader::new(out).read_line(&mut first).unwrap();
    assert_eq!(first.trim(), "ok 0", "the connection is established first");
    long_lived
}

fn green_only() -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: allow-green, namespace: default}}\nspec:\n  podSelector: {{matchLabels: {{app: test-service}}}}\n  ingress: [{{from: [{{podSelector: {{matchLabels: {{app: client-green}}}}}}]}}]\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: test-service, namespace: default}}\nspec: {{clusterIP: 10.96.0.10}}\n---\n{LOG_ALL}"
    )
}

#[test]
fn audit_mode_logs_denies_and_drops_nothing() {
    if !can_run() {
        return;
    }
    let (mut t, _, _, red) = green_red_cluster();
    let probe = t.start_probe(&["--mode", "audit", "--deny-aggregation-window", "1s"]);
    assert!(
        t.connect(&red, "tcp", "10.244.1.10", 8080, 41000),
        "audit never drops"
    );
    let records = t.stop_probe(probe);
    let deny = records_where(&records, |r| r.disposition == Disposition::Deny);
    assert_eq!(deny.len(), 1, "{records:#?}");
    assert_eq!(
        serde_json::to_value(&deny[0]).unwrap()["enforcement"],
        "audit"
    );
}

#[test]
fn service_traffic_is_judged_after_kube_proxy_dnat() {
    if !can_run() {
        return;
    }
    let (mut t, _, green, red) = green_red_cluster();
    // kube-proxy's iptables mode: the Service address is DNATed to the backend in PREROUTING.
    t.node(&[
        "iptables",
        "-t",
        "nat",
        "-A",
        "PREROUTING",
        "-d",
        "10.96.0.10/32",
        "-p",
        "tcp",
        "--dport",
        "80",
        "-j",
        "DNAT",
        "--to-destination",
        "10.244.1.10:8080",
    ]);
    let probe = t.start_probe(&["--deny-aggregation-window", "1s"]);
    assert!(
        t.connect(&green, "tcp", "10.96.0.10", 80, 42000),
        "green reaches the backend through the Service"
    );
    assert!(
        !t.connect(&red, "tcp", "10.96.0.10", 80, 42001),
        "red is denied by the backend's policy"
    );
    let records = t.stop_probe(probe);
    assert_eq!(records.len(), 2, "{records:#?}");
    for r in &records {
        assert_eq!(
            r.connection.dest_ip.to_string(),
            "10.244.1.10",
            "judged and logged against the backend, not the ClusterIP"
        );
        assert_eq!(r.connection.dest_port, 8080);
        assert!(matches!(&r.dest, Endpoint::Pod(p) if p.pod_name == "test-service"));
    }
    assert_eq!(
        records_where(&records, |r| r.disposition == Disposition::Allow)[0]
            .connection
            .src_port,
        42000
    );
    assert_eq!(
        records_where(&records, |r| r.disposition == Disposition::Deny)[0]
            .connection
            .src_port,
        42001
    );
}

#[test]
fn live_policy_change_keeps_established_connections_it_still_allows() {
    if !can_run() {
        return;
    }
    let (mut t, _, green, red) = green_red_cluster();
    let probe = t.start_probe(&[]);
    // An established connection from green, exchanging every 100 ms for 3 s. The policy changes
    // only once its first exchange is done (a fixed wait raced the client's start on a loaded
    // machine: the "established" connection was then a new one). A revocation ends connections
    // (datapath_attacks.rs); a change that still allows them must not.
    let mut long_lived = established(&t, &green);
    // Now red may connect too.
    std::fs::write(
        t.manifests_dir().join("policies.yaml"),
        green_only().replace(
            "matchLabels: {app: client-green}",
            "matchExpressions: [{key: app, operator: In, values: [client-green, client-red]}]",
        ),
    )
    .unwrap();
    t.eventually("the new policy in force", || {
        t.connect(&red, "tcp", "10.244.1.10", 8080, 0)
    });
    let status = long_lived.wait().unwrap();
    assert!(
        status.success(),
        "the established connection kept working through the change"
    );
    drop(t.stop_probe(probe));
}

/// Cluster state from the Kubernetes API instead of a folder: the fake API server (no real one
/// can run here; `verdict_cluster::fake_apiserver`, written from the API reference) listens in
/// the node's network namespace, where the agent runs.
#[test]
fn a_policy_deleted_through_the_api_server_opens_the_pod_while_connections_run() {
    if !can_run() {
        return;
    }
    let (mut t, _, green, red) = green_red_cluster();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _in_runtime = runtime.enter();
    let listener =
        verdict_probe::lab::in_netns(&t.node_ns, || std::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
    let server = verdict_cluster::fake_apiserver::FakeApiServer::start_on(listener, "kernel");
    server.apply_manifest_dir(&t.manifests_dir()).unwrap();
    let kubeconfig = t.manifests_dir().with_file_name("kubeconfig");
    std::fs::write(&kubeconfig, server.kubeconfig()).unwrap();
    let probe = t.start_probe(&["--kubeconfig", kubeconfig.to_str().unwrap()]);
    assert!(
        !t.connect(&red, "tcp", "10.244.1.10", 8080, 0),
        "red denied"
    );
    // An established connection from green, exchanging every 100 ms for 3 s.
    let mut long_lived = established(&t, &green);
    // The only policy is deleted in the API server: the server's pod is no longer isolated.
    server.delete("NetworkPolicy", "default", "allow-green");
    t.eventually("red allowed once the policy is gone", || {
        t.connect(&red, "tcp", "10.244.1.10", 8080, 0)
    });
    assert!(
        long_lived.wait().unwrap().success(),
        "the established connection kept working through the deletion"
    );
    // A deny-all applied through the API closes the pod again.
    server.apply(
        serde_json::json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "deny-all", "namespace": "default"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}),
    );
    t.eventually("green denied by the new deny-all", || {
        !t.connect(&green, "tcp", "10.244.1.10", 8080, 0)
    });
    drop(t.stop_probe(probe));
}

#[test]
fn ipv6_connections_are_enforced_and_logged() {
    if !can_run() {
        return;
    }
    let (mut t, _, green, red) = green_red_cluster();
    let probe = t.start_probe(&["--deny-aggregation-window", "1s"]);
    assert!(t.connect(&green, "tcp", "fd00:244::10", 8080, 43000));
    assert!(!t.connect(&red, "tcp", "fd00:244::10", 8080, 43001));
    assert!(t.connect(&green, "udp", "fd00:244::10", 8080, 43002));
    let records = t.stop_probe(probe);
    assert_eq!(records.len(), 3, "{records:#?}");
    assert!(
        records
            .iter()
            .all(|r| r.connection.dest_ip.to_string() == "fd00:244::10")
    );
    let deny = records_where(&records, |r| r.disposition == Disposition::Deny);
    assert_eq!(deny[0].connection.src_ip.to_string(), "fd00:244::12");
}

#[test]
fn enforcement_survives_an_agent_crash_and_uninstall_removes_everything() {
    if !can_run() {
        return;
    }
    let (mut t, _, green, red) = green_red_cluster();
    let probe = t.start_probe(&[]);
    assert!(!t.connect(&red, "tcp", "10.244.1.10", 8080, 0));
    probe.kill9();
    // No agent: the kernel still enforces.
    assert!(
        !t.connect(&red, "tcp", "10.244.1.10", 8080, 0),
        "still denied with the agent dead"
    );
    assert!(
        t.connect(&green, "tcp", "10.244.1.10", 8080, 0),
        "still allowed with the agent dead"
    );
    // A new agent takes over the pinned maps and the attached programs, and logs again.
    let probe = t.start_probe(&[]);
    assert!(t.connect(&green, "tcp", "10.244.1.10", 8080, 44000));
    let records = t.stop_probe(probe);
    assert!(
        records.iter().any(|r| r.connection.src_port == 44000),
        "{records:#?}"
    );
    // Uninstall: programs and pins gone, traffic unrestricted.
    uninstall(&t, None);
    for (_, _, veth) in &t.pods {
        assert!(
            !t.node(&["tc", "filter", "show", "dev", veth, "ingress"])
                .contains("verdict")
        );
        assert!(
            !t.node(&["tc", "filter", "show", "dev", veth, "egress"])
                .contains("verdict")
        );
    }
    assert!(!t.pin_dir.exists());
    assert!(
        t.connect(&red, "tcp", "10.244.1.10", 8080, 0),
        "no enforcement after uninstall"
    );
}

/// Maps are pinned in the node's bpffs (where they outlive the agent).
fn pinned(t: &Topology) -> bool {
    t.pin_dir
        .read_dir()
        .is_ok_and(|mut entries| entries.next().is_some())
}

/// `verdict-probe --uninstall` on the node (with only `capabilities`, if given), after the maps
/// were seen pinned.
fn uninstall(t: &Topology, capabilities: Option<&[&str]>) {
    assert!(pinned(t), "no maps pinned in {}", t.pin_dir.display());
    let out = t
        .agent_command(capabilities)
        .args(["--uninstall", "--bpf-pin-dir"])
        .arg(&t.pin_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Helm chart's agent holds exactly these capabilities (deploy/helm/verdict: the probe BPF,
/// NET_ADMIN, PERFMON; the uninstaller BPF, NET_ADMIN): with nothing else the probe loads,
/// enforces and logs, and the uninstaller cleans up.
#[test]
fn the_charts_capabilities_are_enough_to_enforce_and_to_uninstall() {
    if !can_run() {
        return;
    }
    let (mut t, _, green, red) = green_red_cluster();
    let probe = t.start_probe_with_capabilities(&["bpf", "net_admin", "perfmon"], &[]);
    assert!(t.connect(&green, "tcp", "10.244.1.10", 8080, 44001));
    assert!(!t.connect(&red, "tcp", "10.244.1.10", 8080, 44002));
    let records = t.stop_probe(probe);
    for (port, disposition) in [(44001, Disposition::Allow), (44002, Disposition::Deny)] {
        assert!(
            records
                .iter()
                .any(|r| r.connection.src_port == port && r.disposition == disposition),
            "{port}: {records:#?}"
        );
    }
    // The chart's uninstall mode: clean, then ready (/healthz) and staying until stopped.
    assert!(pinned(&t), "no maps pinned in {}", t.pin_dir.display());
    let mut cleaner = t
        .agent_command(Some(&["bpf", "net_admin"]))
        .args(["--uninstall", "--stay", "--metrics-addr", "127.0.0.1:19990"])
        .arg("--bpf-pin-dir")
        .arg(&t.pin_dir)
        .spawn()
        .unwrap();
    let healthz = "import sys, urllib.request\ntry:\n    sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:19990/healthz', timeout=1).status == 200 else 1)\nexcept OSError:\n    sys.exit(1)";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !support::netns::python_succeeds(&t.node_ns, healthz, &[]) {
        assert!(
            cleaner.try_wait().unwrap().is_none(),
            "the uninstaller exited"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the uninstaller never became ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!t.pin_dir.exists(), "ready before the pins were removed");
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &cleaner.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert!(cleaner.wait().unwrap().success());
    assert!(!t.pin_dir.exists());
    assert!(t.connect(&red, "tcp", "10.244.1.10", 8080, 0));

    // And none of the three can be left out: without any one the probe stops with an error.
    for missing in ["bpf", "net_admin", "perfmon"] {
        let caps: Vec<&str> = ["bpf", "net_admin", "perfmon"]
            .into_iter()
            .filter(|c| *c != missing)
            .collect();
        // Its stderr to a file: the verifier's log can outgrow a pipe nobody reads yet.
        let stderr_path = t.dir.path().join(format!("without-{missing}.stderr"));
        let mut probe = t
            .probe_command(Some(&caps), &[])
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let status = loop {
            if let Some(status) = probe.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = probe.kill();
                panic!("without {missing} the probe kept running");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let stderr = std::fs::read_to_string(&stderr_path).unwrap();
        assert!(!status.success(), "without {missing}: {stderr}");
        assert!(stderr.contains("eBPF"), "without {missing}: {stderr}");
    }
}

#[test]
fn a_clear_error_when_ebpf_cannot_load() {
    if !can_run() {
        return;
    }
    let t = Topology::new(vec![pod("default", "a", "{app: a}", 50, "")]);
    t.write_manifests(LOG_ALL);
    let not_bpffs = t.dir.path().join("not-bpffs");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_verdict-probe"))
        .args([
            "--datapath",
            "ebpf",
            "--node-name",
            "node-1",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .arg("--manifests")
        .arg(t.manifests_dir())
        .arg("--log-path")
        .arg(t.log_path())
        .arg("--bpf-pin-dir")
        .arg(&not_bpffs)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot load eBPF programs") && err.contains("bpffs"),
        "{err}"
    );
}

/// Every pair's kernel verdict equals the engine's (`verdict policy check`), on the upstream e2e
/// model, for several policy sets applied one after another to one running probe.
#[test]
fn kernel_matrix_equals_the_engine() {
    if !can_run() {
        return;
    }
    let mut pods = Vec::new();
    for (i, ns) in ["x", "y", "z"].into_iter().enumerate() {
        for (j, (name, labels)) in [("a", "{pod: a}"), ("b", "{pod: b}"), ("c", "{pod: c}")]
            .into_iter()
            .enumerate()
        {
            pods.push(PodSpec {
                namespace: ns,
                name,
                labels,
                ipv4: format!("10.244.1.{}", 10 * (i + 1) + j + 1),
                ipv6: format!("fd00:244::{}", 10 * (i + 1) + j + 1),
                ports: "{name: serve-80-tcp, containerPort: 80}, {name: serve-81-udp, containerPort: 81, protocol: UDP}",
            });
        }
    }
    let mut t = Topology::new(pods);
    let sets = [
        "",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-all, namespace: x}\nspec: {podSelector: {}, policyTypes: [Ingress, Egress]}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: from-y, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}, podSelector: {matchExpressions: [{key: pod, operator: NotIn, values: [c]}]}}]}]\n",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: named, namespace: y}\nspec:\n  podSelector: {}\n  ingress: [{ports: [{port: serve-81-udp, protocol: UDP}]}]\n  egress: [{to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: z}}}], ports: [{port: serve-80-tcp}]}, {to: [{podSelector: {matchLabels: {pod: a}}}]}]\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: cidr, namespace: z}\nspec:\n  podSelector: {matchLabels: {pod: b}}\n  ingress: [{from: [{ipBlock: {cidr: 10.244.1.0/24, except: [10.244.1.11/32]}}, {podSelector: {}}]}]\n",
    ];
    for (_, ns, _) in t.pods.clone() {
        t.serve(&ns, &["tcp:80", "udp:81"]);
    }
    t.write_manifests(&format!("{}---\n{LOG_ALL}", sets[0]));
    let probe = t.start_probe(&[]);
    let mut applied = 0;
    for (n, set) in sets.iter().enumerate() {
        if n > 0 {
            std::fs::write(
                t.manifests_dir().join("policies.yaml"),
                format!("{set}---\n{LOG_ALL}"),
            )
            .unwrap();
            t.eventually("the policy update", || {
                t.probe_log().matches("policy maps updated").count() > applied
            });
            applied = t.probe_log().matches("policy maps updated").count();
        }
        let loaded = verdict_policy::manifests::load_dir(&t.manifests_dir()).unwrap();
        let engine =
            verdict_policy::Engine::build(&loaded.state, verdict_policy::IpBlockMode::DataplaneV2)
                .unwrap();
        let pairs: Vec<(String, String, String, String)> = t
            .pods
            .iter()
            .flat_map(|(a, ans, _)| t.pods.iter().map(move |(b, _, _)| (a, ans, b)))
            .filter(|(a, _, b)| a.ipv4 != b.ipv4)
            .map(|(a, ans, b)| {
                (
                    format!("{}/{}", a.namespace, a.name),
                    ans.clone(),
                    format!("{}/{}", b.namespace, b.name),
                    b.ipv4.clone(),
                )
            })
            .collect();
        let mismatches = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for chunk in pairs.chunks(pairs.len().div_ceil(8)) {
                let (t, engine, mismatches) = (&t, &engine, &mismatches);
                scope.spawn(move || {
                    for (src, src_ns, dest, dest_ip) in chunk {
                        for (proto, port) in [("tcp", 80u16), ("udp", 81)] {
                            let (s, d) = engine
                                .resolve_pair(&verdict_policy::EndpointSpec::parse(src).unwrap(), &verdict_policy::EndpointSpec::parse(dest).unwrap())
                                .unwrap();
                            let protocol = if proto == "tcp" { Protocol::Tcp } else { Protocol::Udp };
                            let want = engine.evaluate(&verdict_policy::Flow { src: s, dest: d, protocol, dest_port: port }).allowed();
                            let got = t.connect(src_ns, proto, dest_ip, port, 0);
                            if got != want {
                                mismatches.lock().unwrap().push(format!("set {n}: {src} -> {dest} {proto}/{port}: kernel {got}, engine {want}"));
                            }
                        }
                    }
                });
            }
        });
        let m = mismatches.into_inner().unwrap();
        assert!(m.is_empty(), "{m:#?}");
    }
    drop(t.stop_probe(probe));
}

/// This kernel has no SCTP stack, so SCTP is exercised with crafted raw packets (IP protocol 132,
/// an SCTP common header and an INIT chunk): the datapath judges and logs them like any
/// connection-oriented protocol; nothing answers them.
#[test]
fn sctp_is_judged_and_logged_from_crafted_packets() {
    if !can_run() {
        return;
    }
    let t = Topology::new(vec![
        pod("default", "test-service", "{app: test-service}", 10, ""),
        pod("default", "client-green", "{app: client-green}", 11, ""),
        pod("default", "client-red", "{app: client-red}", 12, ""),
    ]);
    t.write_manifests(&format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: sctp-green, namespace: default}}\nspec:\n  podSelector: {{matchLabels: {{app: test-service}}}}\n  ingress: [{{from: [{{podSelector: {{matchLabels: {{app: client-green}}}}}}], ports: [{{port: 9999, protocol: SCTP}}]}}]\n---\n{LOG_ALL}"
    ));
    let mut t = t;
    let probe = t.start_probe(&["--deny-aggregation-window", "1s"]);
    const SEND: &str = "import socket,struct,sys\ns=socket.socket(socket.AF_INET, socket.SOCK_RAW, 132)\nsport=int(sys.argv[2])\nhdr=struct.pack('!HHII', sport, 9999, 0, 0)\ninit=struct.pack('!BBHIIHHI', 1, 0, 20, 0x1234, 65535, 1, 1, 42)\ns.sendto(hdr+init, (sys.argv[1], 0))\n";
    for (ns, port) in [
        ("default/client-green", "45000"),
        ("default/client-red", "45001"),
    ] {
        let ns = t.pod(ns).1.clone();
        t.pod_cmd(&ns, &["python3", "-c", SEND, "10.244.1.10", port]);
    }
    t.eventually("both SCTP decisions logged", || {
        std::fs::read_to_string(t.log_path())
            .map(|s| s.lines().count() >= 1)
            .unwrap_or(false)
    });
    let records = t.stop_probe(probe);
    assert_eq!(records.len(), 2, "{records:#?}");
    for r in &records {
        assert_eq!(r.connection.protocol, Protocol::Sctp);
        assert_eq!(r.connection.dest_port, 9999);
    }
    let allow = records_where(&records, |r| r.disposition == Disposition::Allow);
    assert_eq!(allow.len(), 1);
    assert_eq!(
        (allow[0].connection.src_port, allow[0].policies.clone()),
        (
            45000,
            Some(vec![PolicyRef::network_policy("default", "sctp-green")])
        )
    );
    assert_eq!(
        records_where(&records, |r| r.disposition == Disposition::Deny)[0]
            .connection
            .src_port,
        45001
    );
}

/// A Service whose backend runs on another node: the client's egress policy is judged on this
/// node's uplink (`--uplink`), after kube-proxy's DNAT, against the remote backend pod.
#[test]
fn service_traffic_to_a_backend_on_another_node_is_judged_at_the_uplink() {
    if !can_run() {
        return;
    }
    let mut t = Topology::new(vec![
        pod("default", "client-green", "{app: client-green}", 11, ""),
        pod("default", "client-red", "{app: client-red}", 12, ""),
    ]);
    let uplink = t.add_remote_node(vec![PodSpec {
        namespace: "default",
        name: "backend",
        labels: "{app: backend}",
        ipv4: "10.244.2.10".into(),
        ipv6: "fd00:244:2::10".into(),
        ports: "{name: http, containerPort: 8080}",
    }]);
    t.write_manifests(&format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: green-out, namespace: default}}\nspec:\n  podSelector: {{matchLabels: {{app: client-green}}}}\n  policyTypes: [Egress]\n  egress: [{{to: [{{podSelector: {{matchLabels: {{app: backend}}}}}}]}}]\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: red-out, namespace: default}}\nspec:\n  podSelector: {{matchLabels: {{app: client-red}}}}\n  policyTypes: [Egress]\n  egress: [{{to: [{{podSelector: {{matchLabels: {{app: somebody-else}}}}}}]}}]\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: backend, namespace: default}}\nspec: {{clusterIP: 10.96.0.20}}\n---\n{LOG_ALL}"
    ));
    let backend = t.remote_pods[0].1.clone();
    t.serve(&backend, &["tcp:8080"]);
    t.node(&[
        "iptables",
        "-t",
        "nat",
        "-A",
        "PREROUTING",
        "-d",
        "10.96.0.20/32",
        "-p",
        "tcp",
        "--dport",
        "80",
        "-j",
        "DNAT",
        "--to-destination",
        "10.244.2.10:8080",
    ]);
    let green = t.pod("default/client-green").1.clone();
    let red = t.pod("default/client-red").1.clone();
    // `auto`: the node's default route leaves by the uplink.
    let probe = t.start_probe(&["--uplink", "auto", "--deny-aggregation-window", "1s"]);
    assert!(
        t.node(&["tc", "filter", "show", "dev", &uplink, "egress"])
            .contains("verdict_to_pod")
    );
    assert!(
        t.connect(&green, "tcp", "10.96.0.20", 80, 46000),
        "green may reach the backend"
    );
    assert!(
        !t.connect(&red, "tcp", "10.96.0.20", 80, 46001),
        "red's egress policy forbids the backend"
    );
    let records = t.stop_probe(probe);
    assert_eq!(records.len(), 2, "{records:#?}");
    for r in &records {
        assert_eq!(r.connection.direction, verdict_schema::Direction::Egress);
        assert_eq!(
            (r.connection.dest_ip.to_string(), r.connection.dest_port),
            ("10.244.2.10".to_owned(), 8080)
        );
        assert!(matches!(&r.dest, Endpoint::Pod(p) if p.pod_name == "backend"));
        assert_eq!(r.node_name, "node-1");
    }
    let allow = records_where(&records, |r| r.disposition == Disposition::Allow);
    assert_eq!(
        allow[0].policies,
        Some(vec![PolicyRef::network_policy("default", "green-out")])
    );
    assert_eq!(
        records_where(&records, |r| r.disposition == Disposition::Deny)[0]
            .connection
            .src_port,
        46001
    );
}
