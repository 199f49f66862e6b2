//! A synthetic cluster for benchmarks of the engine and of the datapaths built on it.

/// A cluster for benchmarks: `namespaces` × `pods_per_namespace` pods on
/// node-1 and `policies_per_namespace` policies per namespace mixing selectors, expressions,
/// ports, ranges, named ports and ipBlocks with excepts.
pub fn cluster_yaml(
    namespaces: usize,
    pods_per_namespace: usize,
    policies_per_namespace: usize,
) -> String {
    let mut y = String::from(
        "apiVersion: v1\nkind: Node\nmetadata: {name: node-1}\nstatus: {addresses: [{type: InternalIP, address: 172.18.0.2}]}\n",
    );
    for n in 0..namespaces {
        y.push_str(&format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: ns{n}, labels: {{team: t{}, env: {}}}}}\n",
            n % 7,
            if n % 3 == 0 { "prod" } else { "dev" }
        ));
        for p in 0..pods_per_namespace {
            y.push_str(&format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: pod{p}, namespace: ns{n}, labels: {{app: app{}, tier: t{}, version: v{}}}}}\nspec: {{nodeName: node-1, containers: [{{name: c, ports: [{{name: http, containerPort: 8080}}, {{name: metrics, containerPort: 9090}}]}}]}}\nstatus: {{podIP: 10.{}.{}.{}}}\n",
                p % 10,
                p % 3,
                p % 2,
                100 + n / 200,
                n % 200,
                p + 1
            ));
        }
        for k in 0..policies_per_namespace {
            let spec = match k % 5 {
                0 => format!("  podSelector: {{matchLabels: {{app: app{k}}}}}\n  ingress:\n  - from:\n    - podSelector: {{matchLabels: {{tier: t{}}}}}\n    ports: [{{port: 8080}}, {{port: metrics}}]\n", k % 3),
                1 => format!("  podSelector: {{matchExpressions: [{{key: app, operator: In, values: [app{}, app{}]}}]}}\n  ingress:\n  - from:\n    - namespaceSelector: {{matchLabels: {{team: t{}}}}}\n      podSelector: {{matchExpressions: [{{key: version, operator: NotIn, values: [v1]}}]}}\n", k % 10, (k + 1) % 10, k % 7),
                2 => format!("  podSelector: {{matchLabels: {{tier: t{}}}}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - namespaceSelector: {{matchLabels: {{env: prod}}}}\n    ports: [{{port: 8000, endPort: 8100}}]\n  - to:\n    - ipBlock: {{cidr: 0.0.0.0/0, except: [10.0.0.0/8]}}\n", k % 3),
                3 => format!("  podSelector: {{matchLabels: {{app: app{}}}}}\n  ingress:\n  - from:\n    - namespaceSelector: {{}}\n      podSelector: {{matchLabels: {{app: app{}}}}}\n  - from:\n    - ipBlock: {{cidr: 192.0.2.0/24}}\n", k % 10, (k + 3) % 10),
                _ => "  podSelector: {matchLabels: {version: v0}}\n  policyTypes: [Ingress, Egress]\n  ingress: [{from: [{podSelector: {}}]}]\n  egress: [{ports: [{port: 53, protocol: UDP}, {port: 53}]}, {to: [{namespaceSelector: {matchExpressions: [{key: env, operator: Exists}]}}]}]\n".to_owned(),
            };
            y.push_str(&format!("---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p{k}, namespace: ns{n}}}\nspec:\n{spec}"));
        }
    }
    y
}
