//! A synthetic cluster and traffic mix for benchmarks and load runs: 50 namespaces × 20 pods on
//! one node, a default-deny and an allow policy per namespace, NetworkLogging logging everything.
//! About a third of the connections are denied.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use verdict_policy::engine::EnforcementMode;
use verdict_policy::{Engine, IpBlockMode};
use verdict_schema::{Protocol, Timestamp};

use crate::datapath::{Attempt, DEFAULT_IDLE_WINDOW, UserspaceDatapath};
use crate::event::VerdictEvent;
use verdict_cluster::PolicySnapshot;

pub const NAMESPACES: usize = 50;
pub const PODS_PER_NAMESPACE: usize = 20;

/// The manifests of the synthetic cluster.
pub fn cluster_yaml() -> String {
    let mut y = String::from(
        "apiVersion: v1\nkind: Node\nmetadata: {name: node-1}\nstatus: {addresses: [{type: InternalIP, address: 172.18.0.2}]}\n---\napiVersion: networking.gke.io/v1alpha1\nkind: NetworkLogging\nmetadata: {name: default}\nspec: {cluster: {allow: {log: true}, deny: {log: true}}}\n",
    );
    for n in 0..NAMESPACES {
        y.push_str(&format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: ns{n}}}\n"
        ));
        for p in 0..PODS_PER_NAMESPACE {
            y.push_str(&format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: app{}-{p}, namespace: ns{n}, labels: {{app: app{}}}, ownerReferences: [{{kind: ReplicaSet, name: app{}-rs, controller: true}}]}}\nspec: {{nodeName: node-1}}\nstatus: {{podIP: {}}}\n",
                p % 4,
                p % 4,
                p % 4,
                pod_ip(n, p)
            ));
        }
        y.push_str(&format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: default-deny, namespace: ns{n}}}\nspec: {{podSelector: {{}}}}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: allow-web, namespace: ns{n}}}\nspec:\n  podSelector: {{matchLabels: {{app: app0}}}}\n  ingress:\n  - from: [{{namespaceSelector: {{}}, podSelector: {{matchExpressions: [{{key: app, operator: In, values: [app1, app2]}}]}}}}]\n    ports: [{{port: 8080}}]\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: allow-same-ns, namespace: ns{n}}}\nspec:\n  podSelector: {{matchExpressions: [{{key: app, operator: NotIn, values: [app0]}}]}}\n  ingress: [{{from: [{{podSelector: {{}}}}]}}]\n"
        ));
    }
    y
}

fn pod_ip(n: usize, p: usize) -> IpAddr {
    format!("10.{}.{}.{}", 1 + n / 200, n % 200, p + 1)
        .parse()
        .expect("valid")
}

/// The compiled synthetic cluster.
pub fn snapshot() -> Arc<PolicySnapshot> {
    let loaded = verdict_policy::manifests::load_str(&cluster_yaml(), Path::new("synthetic.yaml"))
        .expect("synthetic cluster loads");
    Arc::new(PolicySnapshot {
        generation: 1,
        engine: Engine::build(&loaded.state, IpBlockMode::DataplaneV2).expect("compiles"),
    })
}

/// `n` verdict events from a deterministic mix of TCP connections between random pods.
pub fn events(snapshot: &Arc<PolicySnapshot>, n: usize, start: Timestamp) -> Vec<VerdictEvent> {
    let mut datapath = UserspaceDatapath::new(
        snapshot.clone(),
        None,
        EnforcementMode::Enforce,
        DEFAULT_IDLE_WINDOW,
    );
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = Vec::with_capacity(n);
    let mut i: i64 = 0;
    while out.len() < n {
        let (s, d) = (next() as usize, next() as usize);
        let same_ns = next() % 2 == 0;
        let sn = s % NAMESPACES;
        let dn = if same_ns { sn } else { d % NAMESPACES };
        let a = Attempt {
            src_ip: pod_ip(sn, (s >> 8) % PODS_PER_NAMESPACE),
            dest_ip: pod_ip(dn, (d >> 8) % PODS_PER_NAMESPACE),
            src_port: 30_000 + (next() % 30_000) as u16,
            dest_port: [8080, 8080, 5432, 80][(next() % 4) as usize],
            protocol: Protocol::Tcp,
            timestamp: Some(Timestamp::from_unix_nanos(start.unix_nanos() + i * 1_000)),
        };
        i += 1;
        datapath.process(&a, start, &mut out);
    }
    out.truncate(n);
    out
}

/// The large benchmark cluster (1,000 pods × 500 policies with `(50, 20, 10)`); one generator
/// shared with the policy engine's benchmark.
pub use verdict_policy::synthetic::cluster_yaml as large_cluster_yaml;
