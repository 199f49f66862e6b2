//! Reachability matrices on the model of the upstream Kubernetes network-policy e2e suite:
//! namespaces x, y, z (labelled `kubernetes.io/metadata.name=<ns>`), each with pods a, b, c
//! (labelled `pod=<name>`) serving TCP, UDP and SCTP on ports 80 and 81 (container ports named
//! `serve-80-tcp`, ...). Each case applies policies written from the Kubernetes documentation and
//! compares the full 9×9 matrix (rows: from, columns: to) with a truth table written by hand:
//! `.` connects, `X` is blocked. A pod always reaches itself.

use std::path::Path;

use verdict_policy::engine::Flow;
use verdict_policy::manifests::load_str;
use verdict_policy::{EndpointSpec, Engine, IpBlockMode};
use verdict_schema::Protocol;

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];

/// The model's manifests; pod `<ns>/<pod>` has IP 10.0.<ns#>.<pod#> and fd00::<ns#>:<pod#>.
fn model_yaml() -> String {
    let mut y = String::from(
        "apiVersion: v1\nkind: Node\nmetadata: {name: node-1}\nstatus: {addresses: [{type: InternalIP, address: 172.18.0.2}]}\n",
    );
    for (i, ns) in NAMESPACES.iter().enumerate() {
        y.push_str(&format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"
        ));
        for (j, pod) in PODS.iter().enumerate() {
            let mut ports = String::new();
            for port in [80, 81] {
                for proto in ["TCP", "UDP", "SCTP"] {
                    ports.push_str(&format!(
                        "    - {{name: serve-{port}-{}, containerPort: {port}, protocol: {proto}}}\n",
                        proto.to_lowercase()
                    ));
                }
            }
            y.push_str(&format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: {ns}, labels: {{pod: {pod}}}}}\nspec:\n  nodeName: node-1\n  containers:\n  - name: c\n    ports:\n{ports}status:\n  podIP: 10.0.{}.{}\n  podIPs: [{{ip: 10.0.{}.{}}}, {{ip: 'fd00::{}:{}'}}]\n",
                i + 1, j + 1, i + 1, j + 1, i + 1, j + 1
            ));
        }
    }
    y
}

fn engine(policies: &str, mode: IpBlockMode) -> Engine {
    let text = format!("{}---\n{policies}", model_yaml());
    let loaded = load_str(&text, Path::new("model.yaml")).unwrap_or_else(|e| panic!("{e}"));
    Engine::build(&loaded.state, mode).unwrap()
}

fn names() -> Vec<String> {
    NAMESPACES
        .iter()
        .flat_map(|ns| PODS.iter().map(move |p| format!("{ns}/{p}")))
        .collect()
}

fn spec(name: &str, v6: bool) -> EndpointSpec {
    if !v6 {
        return EndpointSpec::parse(name).unwrap();
    }
    let (ns, pod) = name.split_once('/').unwrap();
    let i = NAMESPACES.iter().position(|n| *n == ns).unwrap() + 1;
    let j = PODS.iter().position(|p| *p == pod).unwrap() + 1;
    EndpointSpec::Ip(format!("fd00::{i}:{j}").parse().unwrap())
}

fn observed(e: &Engine, protocol: Protocol, port: u16, v6: bool) -> Vec<Vec<bool>> {
    let names = names();
    names
        .iter()
        .map(|from| {
            names
                .iter()
                .map(|to| {
                    let (src, dest) = e.resolve_pair(&spec(from, v6), &spec(to, v6)).unwrap();
                    e.evaluate(&Flow {
                        src,
                        dest,
                        protocol: protocol.clone(),
                        dest_port: port,
                    })
                    .allowed()
                })
                .collect()
        })
        .collect()
}

fn parse_table(table: &str) -> Vec<Vec<bool>> {
    let rows: Vec<&str> = table
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let header: Vec<&str> = rows[0].split_whitespace().collect();
    assert_eq!(header, names(), "table header");
    rows[1..]
        .iter()
        .zip(names())
        .map(|(row, name)| {
            let cells: Vec<&str> = row.split_whitespace().collect();
            assert_eq!(cells[0], name, "row label");
            assert_eq!(cells.len(), 10, "row {name}");
            cells[1..]
                .iter()
                .map(|c| match *c {
                    "." => true,
                    "X" => false,
                    other => panic!("bad cell {other:?}"),
                })
                .collect()
        })
        .collect()
}

fn render(m: &[Vec<bool>]) -> String {
    let names = names();
    let mut s = format!("     {}\n", names.join(" "));
    for (i, row) in m.iter().enumerate() {
        s.push_str(&names[i]);
        for c in row {
            s.push_str(if *c { "   ." } else { "   X" });
        }
        s.push('\n');
    }
    s
}

#[track_caller]
fn assert_reachability(e: &Engine, protocol: Protocol, port: u16, table: &str) {
    for v6 in [false, true] {
        let got = observed(e, protocol.clone(), port, v6);
        let want = parse_table(table);
        assert!(
            got == want,
            "{protocol}/{port} ({}):\nexpected\n{}\ngot\n{}",
            if v6 { "IPv6" } else { "IPv4" },
            render(&want),
            render(&got)
        );
    }
}

const ALL: &str = "
         x/a x/b x/c y/a y/b y/c z/a z/b z/c
     x/a  .   .   .   .   .   .   .   .   .
     x/b  .   .   .   .   .   .   .   .   .
     x/c  .   .   .   .   .   .   .   .   .
     y/a  .   .   .   .   .   .   .   .   .
     y/b  .   .   .   .   .   .   .   .   .
     y/c  .   .   .   .   .   .   .   .   .
     z/a  .   .   .   .   .   .   .   .   .
     z/b  .   .   .   .   .   .   .   .   .
     z/c  .   .   .   .   .   .   .   .   .";

fn policy(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}\n"
    )
}

#[test]
fn no_policies_everything_connects() {
    let e = engine("", IpBlockMode::DataplaneV2);
    for proto in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
        assert_reachability(&e, proto, 80, ALL);
    }
}

#[test]
fn default_deny_ingress_in_x() {
    let e = engine(
        &policy(
            "x",
            "deny-all",
            "  podSelector: {}\n  policyTypes: [Ingress]",
        ),
        IpBlockMode::DataplaneV2,
    );
    assert_reachability(
        &e,
        Protocol::Tcp,
        80,
        "
         x/a x/b x/c y/a y/b y/c z/a z/b z/c
     x/a  .   X   X   .   .   .   .   .   .
     x/b  X   .   X   .   .   .   .   .   .
     x/c  X   X   .   .   .   .   .   .   .
     y/a  X   X   X   .   .   .   .   .   .
     y/b  X   X   X   .   .   .   .   .   .
     y/c  X   X   X   .   .   .   .   .   .
     z/a  X   X   X   .   .   .   .   .   .
     z/b  X   X   X   .   .   .   .   .   .
     z/c  X   X   X   .   .   .   .   .   .",
    );
}

#[test]
fn default_deny_ingress_without_policy_types() {
    // policyTypes defaults to [Ingress] when there are no egress rules.
    let e = engine(
        &policy("x", "deny-all", "  podSelector: {}"),
        IpBlockMode::DataplaneV2,
    );
    let table = "
         x/a x/b x/c y/a y/b y/c z/a z/b z/c
     x/a  .   X   X   .   .   .   .   .   .
     x/b  X   .   X   .   .   .   .   .   .
     x/c  X   X   .   .   .   .   .   .   .
     y/a  X   X   X   .   .   .   .   .   .
     y/b  X   X   X   .   .   .   .   .   .
     y/c  X   X   X   .   .   .   .   .   .
     z/a  X   X   X   .   .   .   .   .   .
     z/b  X   X   X   .   .   .   .   .   .
     z/c  X   X   X   .   .   .   .   .   .";
    assert_reachability(&e, Protocol::Udp, 81, table);
    assert_reachability(&e, Protocol::Sctp, 80, table);
}

#[test]
fn allow_all_ingress_in_x() {
    let e = engine(
        &policy(
            "x",
            "allow-all",
            "  podSelector: {}\n  ingress: [{}]\n  policyTypes: [Ingress]",
        ),
        IpBlockMode::DataplaneV2,
    );
    assert_reachability(&e, Protocol::Tcp, 80, ALL);
}

#[test]
fn default_deny_egress_in_x() {
    let e = engine(
        &policy(
            "x",
            "deny-egress",
            "  podSelector: {}\n  policyTypes: [Egress]",
        ),
        IpBlockMode::DataplaneV2,
    );
    assert_reachability(
        &e,
        Protocol::Tcp,
        80,
        "
         x/a x/b x/c y/a y/b y/c z/a z/b z/c
     x/a  .   X   X   X   X   X   X   X   X
     x/b  X   .   X   X   X   X   X   X   X
     x/c  X   X   .   X   X   X   X   X   X
     y/a  .   .   .   .   .   .   .   .   .
     y/b  .   .   .   .   .   .   .   .   .
     y/c  .   .   .   .   .   .   .   .   .
     z/a  .   .   .   .   .   .   .   .   .
     z/b  .   .   .   .   .   .   .   .   .
     z/c  .   .   .   .   .   .   .   .   .",
    );
}

#[test]
fn default_deny_all_in_x() {
    let e = engine(
        &policy(
            "x",
            "deny-all",
            "  podSelector: {}\n  policyTypes: [Ingress, Egress]",
        ),
        IpBlockMode::DataplaneV2,
    );
    assert_reachability(
        &e,
        Protocol::Tcp,
        80,
        "
         x/a x/b x/c y/a y/b y/c z/a z/b z/c
     x/a  .   X   X   X   X   X   X   X   X
     x/b  X   .   X   X   X   X   X   X   X
     x/c  X   X   .   X   X   X   X   X   X
     y/a  X   X   X   .   .   .   .   .   .
     y/b  X   X   X   .   .   .   .   .   .
     y/c  X   X   X   .   .   .   .   .   .
     z/a  X   X   X   .   .   .   .   .   .
     z/b  X   X   X   .   .   .   .   .   .
     z/c  X   X   X   .   .   .   .   .   .",
    );
}

#[test]
fn allow_ingress_to_x_a_from_same_namespace_pod_b() {
    let e = engine(
        &policy(
            "x",
            "allow-b",
            "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {pod: b}}",
        ),
        IpBlockMode::DataplaneV2,
    );
    assert_reachability(
        &e,
        Protocol::Tcp,
        80,
        "
         x/a x/b x/c y/a y/b y/c z/a z/b z/c
     x/a  .   .   .   .   .   .   .   .   .
     x/b  .   .   .   .   .   .   .   .   .
     x/c  X   .   .   .   .   .   .   .   .
     y/a  X   .   .   .   .   .   .   .   .
     y/b  X   .   .   .   .   .   .   .   .
     y/c  X   .   .   .   .   .   .   .   .
     z/a  X   .   .   .   .   .   .   .   .
     z/b  X   .   .   .   .   .   .   .   .
     z/c  X   .   .   .   .   .   .   .   .",
    );
}

#[test]
fn allow_ingress_from_namespace_y_by_label() {
    let e = engine(
        &policy(
            "x",
            "allow-y",
            "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}",
        ),
        IpBlockMode::DataplaneV2,
    );
    assert_reachability(
        &e,
        Protocol::Tcp,
        80,
        "
         x/a x/b x/c y/a y/b y/c z/a z/b z/c
     x/a  .   .   .   .   .   .   .   .   .
     x/b  X   .   .   .   .   .   .   .   .
     x/c  X   .   .   .   .   .   .   .   .
     y/a  .   .   .   .   .   .   .   .   .
     y/b  .   .   .   .   .   .   .   .   .
     y/c  .   .   .   .   .   .   .   .   .
     z/a  X   .   .   .   .   .   .   .   .
     z/b  X   .   .   .   .   .   .   .   .
     z/c  X   .   .   .   .   .   .   .   .",
    );
}

#[test]
fn namespace_and_pod_selector_in_one_peer_is_an_and() {
    let e = engine(
        &policy(
            "x",
            "and",
            "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [y, z]}]}\n      podSelector: {matchLabels: {pod: b}}",
        ),
        IpBlockMode::DataplaneV2,
    );
    assert_reachability(
        &e,
        Protocol::Tcp,
        80,
        "
         x/a x/b x/c y/a y/b y/c z/a z/b z/c
     x/a  .   .   .   .   .   .   .   .   .
     x/b  X   .   .   .   .   .   .   .   .
     x/c  X   .   .   .   .   .   .   .   .
     y/a  X   .   .   .   .   .   .   .   .
     y/b  .   .   .   .   .   .   .   .   .
     y/c  X   .   .   .   .   .   .   .   .
     z/a  X   .   .   .   .   .   .   .   .
     z/b  .   .   .   .   .   .   .   .   .
     z/c  X   .   .   .   .   .   .   .   .",
    );
}

#[test]
fn namespace_and_pod_selector_in_two_peers_is_an_or() {
    let e = engine(
        &policy(
            "x",
            "or",
            "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}\n    - podSelector: {matchLabels: {pod: c}}",
        ),
        IpBlockMode::DataplaneV2,
    );
    assert_reachability(
        &e,
        Protocol::Tcp,
        80,
        "
         x/a x/b x/c y/a y/b y/c z/a z/b z/c
     x/a  .   .   .   .   .   .   .   .   .
     x/b  X   .   .   .   .   .   .   .   .
     x/c  .   .   .   .   .   .   .   .   .
     y/a  .   .   .   .   .   .   .   .   .
     y/b  .   .   .   .   .   .   .   .   .
     y/c  .   .   .   .   .   .   .   .   .
     z/a  X   .   .   .   .   .   .   .   .
     z/b  X   .   .   .   .   .   .   .   .
     z/c  X   .   .   .   .   .   .   .   .",
    );
}

#[test]
fn namespace_selector_not_in_and_empty_namespace_selector() {
    // NotIn y: from namespaces x and z. Second peer: pod=b in every namespace.
    let e = engine(
        &policy(
            "x",
            "notin",
            "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [y]}]}\n    - namespaceSelector: {}\n      podSelector: {matchLabels: {pod: b}}",
        ),
        IpBlockMode::DataplaneV2,
    );
    assert_reachability(
        &e,
        Protocol::Tcp,
        80,
        "
         x/a x/b x/c y/a y/b y/c z/a z/b z/c
     x/a  .   .   .   .   .   .   .   .   .
     x/b  .   .   .   .   .   .   .   .   .
     x/c  .   .   .   .   .   .   .   .   .
     y/a  X   .   .   .   .   .   .   .   .
     y/b  .   .   .   .   .   .   .   .   .
     y/c  X   .   .   .   .   .   .   .   .
     z/a  .   .   .   .   .   .   .   .   .
     z/b  .   .   .   .   .   .   .   .   .
     z/c  .   .   .   .   .   .   .   .   .",
    );
}

const ONLY_X_A_BLOCKED: &str = "
         x/a x/b x/c y/a y/b y/c z/a z/b z/c
     x/a  .   .   .   .   .   .   .   .   .
     x/b  X   .   .   .   .   .   .   .   .
     x/c  X   .   .   .   .   .   .   .   .
     y/a  X   .   .   .   .   .   .   .   .
     y/b  X   .   .   .   .   .   .   .   .
     y/c  X   .   .   .   .   .   .   .   .
     z/a  X   .   .   .   .   .   .   .   .
     z/b  X   .   .   .   .   .   .   .   .
     z/c  X   .   .   .   .   .   .   .   .";

#[test]
fn ingress_on_one_port_number() {
    let e = engine(
        &policy(
            "x",
            "port-81",
            "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports:\n    - port: 81\n      protocol: TCP",
        ),
        IpBlockMode::DataplaneV2,
    );
    assert_reachability(&e, Protocol::Tcp, 81, ALL);
    assert_reachability(&e, Protocol::Tcp, 80, ONLY_X_A_BLOCKED);
    assert_reachability(&e, Protocol::Udp, 81, ONLY_X_A_BLOCKED);
}

#[test]
fn ingress_on_a_named_port() {
    let e = engine(
        &policy(
            "x",
            "named",
            "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports:\n    - port: serve-81-udp\n      protocol: UDP",
        ),
        IpBlockMode::DataplaneV2,
    );
    assert_reachability(&e, Protocol::Udp, 81, ALL);
    assert_reachability(&e, Protocol::Udp, 80, ONLY_X_A_BLOCKED);
    assert_reachability(&e, Protocol::Tcp, 81, ONLY_X_A_BLOCKED);
}

#[test]
fn named_port_with_the_wrong_protocol_never_matches() {
    // serve-80-tcp is a TCP port; the rule asks for it over UDP (protocol defaults matter).
    let e = engine(
        &policy(
            "x",
            "named",
            "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports:\n    - port: serve-80-tcp\n      protocol: UDP",
        ),
        IpBlockMode::DataplaneV2,
    );
    assert_reachability(&e, Protocol::Udp, 80, ONLY_X_A_BLOCKED);
    assert_reachability(&e, Protocol::Tcp, 80, ONLY_X_A_BLOCKED);
}

#[test]
fn end_port_ranges() {
    let e = engine(
        &policy(
            "x",
            "range",
            "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports:\n    - port: 81\n      endPort: 90",
        ),
        IpBlockMode::DataplaneV2,
    );
    assert_reachability(&e, Protocol::Tcp, 81, ALL);
    assert_reachability(&e, Protocol::Tcp, 90, ALL);
    assert_reachability(&e, Protocol::Tcp, 80, ONLY_X_A_BLOCKED);
    assert_reachability(&e, Protocol::Tcp, 91, ONLY_X_A_BLOCKED);
}

#[test]
fn sctp_only_rule() {
    let e = engine(
        &policy(
            "x",
            "sctp",
            "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports:\n    - port: 80\n      protocol: SCTP",
        ),
        IpBlockMode::DataplaneV2,
    );
    assert_reachability(&e, Protocol::Sctp, 80, ALL);
    assert_reachability(&e, Protocol::Tcp, 80, ONLY_X_A_BLOCKED);
    assert_reachability(&e, Protocol::Udp, 80, ONLY_X_A_BLOCKED);
}

#[test]
fn protocol_without_port_matches_every_port_of_that_protocol() {
    let e = engine(
        &policy(
            "x",
            "udp-any",
            "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports:\n    - protocol: UDP",
        ),
        IpBlockMode::DataplaneV2,
    );
    assert_reachability(&e, Protocol::Udp, 80, ALL);
    assert_reachability(&e, Protocol::Udp, 81, ALL);
    assert_reachability(&e, Protocol::Tcp, 80, ONLY_X_A_BLOCKED);
}

#[test]
fn union_of_two_policies() {
    let p1 = policy(
        "x",
        "from-x-b",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {pod: b}}",
    );
    let p2 = policy(
        "x",
        "from-z",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: z}}\n      podSelector: {matchLabels: {pod: c}}",
    );
    let e = engine(&format!("{p1}---\n{p2}"), IpBlockMode::DataplaneV2);
    assert_reachability(
        &e,
        Protocol::Tcp,
        80,
        "
         x/a x/b x/c y/a y/b y/c z/a z/b z/c
     x/a  .   .   .   .   .   .   .   .   .
     x/b  .   .   .   .   .   .   .   .   .
     x/c  X   .   .   .   .   .   .   .   .
     y/a  X   .   .   .   .   .   .   .   .
     y/b  X   .   .   .   .   .   .   .   .
     y/c  X   .   .   .   .   .   .   .   .
     z/a  X   .   .   .   .   .   .   .   .
     z/b  X   .   .   .   .   .   .   .   .
     z/c  .   .   .   .   .   .   .   .   .",
    );
}

#[test]
fn egress_to_one_namespace_and_ingress_must_both_allow() {
    // x/a may only send to namespace y; y/b accepts only from x/* pods with pod=a.
    let p1 = policy(
        "x",
        "egress-to-y",
        "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}",
    );
    let p2 = policy(
        "y",
        "b-from-x-a",
        "  podSelector: {matchLabels: {pod: b}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: x}}\n      podSelector: {matchLabels: {pod: a}}",
    );
    let e = engine(&format!("{p1}---\n{p2}"), IpBlockMode::DataplaneV2);
    assert_reachability(
        &e,
        Protocol::Tcp,
        80,
        "
         x/a x/b x/c y/a y/b y/c z/a z/b z/c
     x/a  .   X   X   .   .   .   X   X   X
     x/b  .   .   .   .   X   .   .   .   .
     x/c  .   .   .   .   X   .   .   .   .
     y/a  .   .   .   .   X   .   .   .   .
     y/b  .   .   .   .   .   .   .   .   .
     y/c  .   .   .   .   X   .   .   .   .
     z/a  .   .   .   .   X   .   .   .   .
     z/b  .   .   .   .   X   .   .   .   .
     z/c  .   .   .   .   X   .   .   .   .",
    );
}

#[test]
fn policy_types_egress_only_ignores_ingress_rules() {
    // The ingress section is ignored: policyTypes says Egress only, and egress allows nothing.
    let e = engine(
        &policy(
            "x",
            "egress-only",
            "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {pod: b}}",
        ),
        IpBlockMode::DataplaneV2,
    );
    assert_reachability(
        &e,
        Protocol::Tcp,
        80,
        "
         x/a x/b x/c y/a y/b y/c z/a z/b z/c
     x/a  .   X   X   X   X   X   X   X   X
     x/b  .   .   .   .   .   .   .   .   .
     x/c  .   .   .   .   .   .   .   .   .
     y/a  .   .   .   .   .   .   .   .   .
     y/b  .   .   .   .   .   .   .   .   .
     y/c  .   .   .   .   .   .   .   .   .
     z/a  .   .   .   .   .   .   .   .   .
     z/b  .   .   .   .   .   .   .   .   .
     z/c  .   .   .   .   .   .   .   .   .",
    );
}

#[test]
fn egress_rules_imply_egress_policy_type() {
    // No policyTypes and an egress section: both Ingress (no rules: deny) and Egress apply.
    let e = engine(
        &policy(
            "x",
            "implied",
            "  podSelector: {matchLabels: {pod: a}}\n  egress:\n  - to:\n    - podSelector: {matchLabels: {pod: c}}",
        ),
        IpBlockMode::DataplaneV2,
    );
    assert_reachability(
        &e,
        Protocol::Tcp,
        80,
        "
         x/a x/b x/c y/a y/b y/c z/a z/b z/c
     x/a  .   X   .   X   X   X   X   X   X
     x/b  X   .   .   .   .   .   .   .   .
     x/c  X   .   .   .   .   .   .   .   .
     y/a  X   .   .   .   .   .   .   .   .
     y/b  X   .   .   .   .   .   .   .   .
     y/c  X   .   .   .   .   .   .   .   .
     z/a  X   .   .   .   .   .   .   .   .
     z/b  X   .   .   .   .   .   .   .   .
     z/c  X   .   .   .   .   .   .   .   .",
    );
}

#[test]
fn ip_block_never_matches_pods_in_dataplane_v2_but_does_in_calico() {
    // 10.0.2.0/24 holds y's pods (fd00::2:0/112 in IPv6 — written as two peers).
    let p = policy(
        "x",
        "from-cidr",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.2.0/24, except: [10.0.2.2/32]}\n    - ipBlock: {cidr: 'fd00::2:0/112', except: ['fd00::2:2/128']}",
    );
    let dpv2 = engine(&p, IpBlockMode::DataplaneV2);
    assert_reachability(&dpv2, Protocol::Tcp, 80, ONLY_X_A_BLOCKED);
    let calico = engine(&p, IpBlockMode::Calico);
    assert_reachability(
        &calico,
        Protocol::Tcp,
        80,
        "
         x/a x/b x/c y/a y/b y/c z/a z/b z/c
     x/a  .   .   .   .   .   .   .   .   .
     x/b  X   .   .   .   .   .   .   .   .
     x/c  X   .   .   .   .   .   .   .   .
     y/a  .   .   .   .   .   .   .   .   .
     y/b  X   .   .   .   .   .   .   .   .
     y/c  .   .   .   .   .   .   .   .   .
     z/a  X   .   .   .   .   .   .   .   .
     z/b  X   .   .   .   .   .   .   .   .
     z/c  X   .   .   .   .   .   .   .   .",
    );
}

#[test]
fn egress_ip_block_with_except_in_calico_mode() {
    // From x/b: everything in 10.0.0.0/16 except namespace z's /24 (and the same in IPv6).
    let p = policy(
        "x",
        "egress-cidr",
        "  podSelector: {matchLabels: {pod: b}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - ipBlock: {cidr: 10.0.0.0/16, except: [10.0.3.0/24]}\n    - ipBlock: {cidr: 'fd00::/64', except: ['fd00::3:0/112']}",
    );
    let calico = engine(&p, IpBlockMode::Calico);
    assert_reachability(
        &calico,
        Protocol::Tcp,
        80,
        "
         x/a x/b x/c y/a y/b y/c z/a z/b z/c
     x/a  .   .   .   .   .   .   .   .   .
     x/b  .   .   .   .   .   .   X   X   X
     x/c  .   .   .   .   .   .   .   .   .
     y/a  .   .   .   .   .   .   .   .   .
     y/b  .   .   .   .   .   .   .   .   .
     y/c  .   .   .   .   .   .   .   .   .
     z/a  .   .   .   .   .   .   .   .   .
     z/b  .   .   .   .   .   .   .   .   .
     z/c  .   .   .   .   .   .   .   .   .",
    );
    let dpv2 = engine(&p, IpBlockMode::DataplaneV2);
    assert_reachability(
        &dpv2,
        Protocol::Tcp,
        80,
        "
         x/a x/b x/c y/a y/b y/c z/a z/b z/c
     x/a  .   .   .   .   .   .   .   .   .
     x/b  X   .   X   X   X   X   X   X   X
     x/c  .   .   .   .   .   .   .   .   .
     y/a  .   .   .   .   .   .   .   .   .
     y/b  .   .   .   .   .   .   .   .   .
     y/c  .   .   .   .   .   .   .   .   .
     z/a  .   .   .   .   .   .   .   .   .
     z/b  .   .   .   .   .   .   .   .   .
     z/c  .   .   .   .   .   .   .   .   .",
    );
}

#[test]
fn match_expressions_exists_and_does_not_exist_on_pods() {
    // x/a from pods without label `pod`? none; from pods with `pod` in (a, c) but not in z.
    let e = engine(
        &policy(
            "x",
            "expr",
            "  podSelector: {matchExpressions: [{key: pod, operator: Exists}]}\n  ingress:\n  - from:\n    - podSelector: {matchExpressions: [{key: pod, operator: In, values: [a, c]}]}\n      namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [z]}]}\n    - podSelector: {matchExpressions: [{key: pod, operator: DoesNotExist}]}",
        ),
        IpBlockMode::DataplaneV2,
    );
    assert_reachability(
        &e,
        Protocol::Tcp,
        80,
        "
         x/a x/b x/c y/a y/b y/c z/a z/b z/c
     x/a  .   .   .   .   .   .   .   .   .
     x/b  X   .   X   .   .   .   .   .   .
     x/c  .   .   .   .   .   .   .   .   .
     y/a  .   .   .   .   .   .   .   .   .
     y/b  X   X   X   .   .   .   .   .   .
     y/c  .   .   .   .   .   .   .   .   .
     z/a  X   X   X   .   .   .   .   .   .
     z/b  X   X   X   .   .   .   .   .   .
     z/c  X   X   X   .   .   .   .   .   .",
    );
}

#[test]
fn empty_ingress_list_with_allow_all_egress() {
    let e = engine(
        &policy(
            "y",
            "isolate",
            "  podSelector: {}\n  policyTypes: [Ingress, Egress]\n  ingress: []\n  egress: [{}]",
        ),
        IpBlockMode::DataplaneV2,
    );
    assert_reachability(
        &e,
        Protocol::Tcp,
        80,
        "
         x/a x/b x/c y/a y/b y/c z/a z/b z/c
     x/a  .   .   .   X   X   X   .   .   .
     x/b  .   .   .   X   X   X   .   .   .
     x/c  .   .   .   X   X   X   .   .   .
     y/a  .   .   .   .   X   X   .   .   .
     y/b  .   .   .   X   .   X   .   .   .
     y/c  .   .   .   X   X   .   .   .   .
     z/a  .   .   .   X   X   X   .   .   .
     z/b  .   .   .   X   X   X   .   .   .
     z/c  .   .   .   X   X   X   .   .   .",
    );
}

#[test]
fn policies_in_other_namespaces_do_not_select_pods() {
    // A policy in z with podSelector pod=a selects z/a only, never x/a.
    let e = engine(
        &policy(
            "z",
            "deny-a",
            "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Ingress]",
        ),
        IpBlockMode::DataplaneV2,
    );
    assert_reachability(
        &e,
        Protocol::Tcp,
        80,
        "
         x/a x/b x/c y/a y/b y/c z/a z/b z/c
     x/a  .   .   .   .   .   .   X   .   .
     x/b  .   .   .   .   .   .   X   .   .
     x/c  .   .   .   .   .   .   X   .   .
     y/a  .   .   .   .   .   .   X   .   .
     y/b  .   .   .   .   .   .   X   .   .
     y/c  .   .   .   .   .   .   X   .   .
     z/a  .   .   .   .   .   .   .   .   .
     z/b  .   .   .   .   .   .   X   .   .
     z/c  .   .   .   .   .   .   X   .   .",
    );
}
