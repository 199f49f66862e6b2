//! The GKE logging decision for every allow/deny × log/delegate × annotation combination, plus
//! kubelet probes, unisolated pods and which namespace `deny.delegate` looks at.

use std::path::Path;

use verdict_policy::engine::Flow;
use verdict_policy::manifests::load_str;
use verdict_policy::{EndpointSpec, Engine, IpBlockMode, LogDecision};
use verdict_schema::{Disposition, PolicyRef, Protocol};

#[derive(Debug, Clone, Copy)]
struct Case {
    allow: (bool, bool),
    deny: (bool, bool),
    policy_annotated: bool,
    namespace_annotated: bool,
}

fn annotations(on: bool, key: &str) -> String {
    if on {
        format!("annotations: {{{key}: \"true\"}}")
    } else {
        "annotations: {}".into()
    }
}

fn cluster(c: Case) -> String {
    format!(
        r#"apiVersion: v1
kind: Node
metadata: {{name: n1}}
status: {{addresses: [{{type: InternalIP, address: 172.18.0.2}}]}}
---
apiVersion: v1
kind: Namespace
metadata:
  name: app
  {ns_ann}
---
apiVersion: v1
kind: Namespace
metadata:
  name: other
  {ns_ann}
---
apiVersion: v1
kind: Pod
metadata: {{name: server, namespace: app, labels: {{role: server}}}}
spec: {{nodeName: n1}}
status: {{podIP: 10.1.0.10}}
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: app, labels: {{role: client}}}}
spec: {{nodeName: n1}}
status: {{podIP: 10.1.0.11}}
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: other, labels: {{role: client}}}}
spec: {{nodeName: n1}}
status: {{podIP: 10.1.0.12}}
---
apiVersion: v1
kind: Pod
metadata: {{name: free, namespace: other, labels: {{role: free}}}}
spec: {{nodeName: n1}}
status: {{podIP: 10.1.0.13}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: p1-annotated-or-not
  namespace: app
  {p_ann}
spec:
  podSelector: {{matchLabels: {{role: server}}}}
  ingress:
  - from:
    - podSelector: {{matchLabels: {{role: client}}}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: p2-never-annotated, namespace: app}}
spec:
  podSelector: {{matchLabels: {{role: server}}}}
  ingress:
  - from:
    - podSelector: {{}}
      namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: app}}}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: other-egress, namespace: other}}
spec:
  podSelector: {{matchLabels: {{role: client}}}}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock: {{cidr: 192.0.2.0/24}}
---
apiVersion: networking.gke.io/v1alpha1
kind: NetworkLogging
metadata: {{name: default}}
spec:
  cluster:
    allow: {{log: {}, delegate: {}}}
    deny: {{log: {}, delegate: {}}}
"#,
        c.allow.0,
        c.allow.1,
        c.deny.0,
        c.deny.1,
        ns_ann = annotations(
            c.namespace_annotated,
            "policy.network.gke.io/enable-deny-logging"
        ),
        p_ann = annotations(c.policy_annotated, "policy.network.gke.io/enable-logging"),
    )
}

fn flow(e: &Engine, src: &str, dest: &str, port: u16) -> Flow {
    let (s, d) = e
        .resolve_pair(
            &EndpointSpec::parse(src).unwrap(),
            &EndpointSpec::parse(dest).unwrap(),
        )
        .unwrap();
    Flow {
        src: s,
        dest: d,
        protocol: Protocol::Tcp,
        dest_port: port,
    }
}

const VALID: [(bool, bool); 3] = [(false, false), (true, false), (true, true)];

fn both_policies() -> Vec<PolicyRef> {
    vec![
        PolicyRef::network_policy("app", "p1-annotated-or-not"),
        PolicyRef::network_policy("app", "p2-never-annotated"),
    ]
}

#[test]
fn every_combination() {
    let mut checked = 0;
    for allow in VALID {
        for deny in VALID {
            for policy_annotated in [false, true] {
                for namespace_annotated in [false, true] {
                    let c = Case {
                        allow,
                        deny,
                        policy_annotated,
                        namespace_annotated,
                    };
                    let loaded = load_str(&cluster(c), Path::new("c.yaml")).unwrap();
                    let e = Engine::build(&loaded.state, IpBlockMode::DataplaneV2).unwrap();

                    // Allowed by both policies (ingress to app/server from app/client).
                    let f = flow(&e, "app/client", "app/server", 80);
                    let v = e.evaluate(&f);
                    assert!(v.allowed());
                    let expected = match allow {
                        (false, _) => LogDecision::NotLogged,
                        (true, false) => LogDecision::Logged {
                            disposition: Disposition::Allow,
                            policies: Some(both_policies()),
                        },
                        (true, true) if policy_annotated => LogDecision::Logged {
                            disposition: Disposition::Allow,
                            policies: Some(vec![PolicyRef::network_policy(
                                "app",
                                "p1-annotated-or-not",
                            )]),
                        },
                        (true, true) => LogDecision::NotLogged,
                    };
                    assert_eq!(e.log_decision(&v.ingress), expected, "allow {c:?}");
                    // The source's egress is not isolated: never logged.
                    assert_eq!(e.log_decision(&v.egress), LogDecision::NotLogged, "{c:?}");

                    // Denied: other/client -> app/server (ingress, enforced in namespace app).
                    let f = flow(&e, "other/client", "app/server", 80);
                    let v = e.evaluate(&f);
                    assert!(!v.ingress.allowed);
                    let logged = deny.0 && (!deny.1 || namespace_annotated);
                    let expected = if logged {
                        LogDecision::Logged {
                            disposition: Disposition::Deny,
                            policies: None,
                        }
                    } else {
                        LogDecision::NotLogged
                    };
                    assert_eq!(e.log_decision(&v.ingress), expected, "deny {c:?}");

                    // Kubelet probe from the pod's own node, pod isolated for ingress.
                    let f = flow(&e, "node:n1", "app/server", 8080);
                    let v = e.evaluate(&f);
                    assert!(v.allowed());
                    let expected = if allow == (true, false) {
                        LogDecision::Logged {
                            disposition: Disposition::Allow,
                            policies: Some(vec![PolicyRef::node_local()]),
                        }
                    } else {
                        LogDecision::NotLogged
                    };
                    assert_eq!(e.log_decision(&v.ingress), expected, "probe {c:?}");

                    // A pod no policy isolates: allowed by default and never logged.
                    let f = flow(&e, "app/client", "other/free", 80);
                    let v = e.evaluate(&f);
                    assert!(v.allowed() && !v.ingress.isolated);
                    assert_eq!(e.log_decision(&v.ingress), LogDecision::NotLogged, "{c:?}");
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 36);
}

#[test]
fn deny_delegate_looks_at_the_enforced_pods_namespace() {
    // Egress deny from other/client: enforced in namespace `other`. Annotate only `other`.
    let text = cluster(Case {
        allow: (true, false),
        deny: (true, true),
        policy_annotated: false,
        namespace_annotated: false,
    })
    .replacen(
        "name: other\n  annotations: {}",
        "name: other\n  annotations: {policy.network.gke.io/enable-deny-logging: \"true\"}",
        1,
    );
    let e = Engine::build(
        &load_str(&text, Path::new("c.yaml")).unwrap().state,
        IpBlockMode::DataplaneV2,
    )
    .unwrap();
    let v = e.evaluate(&flow(&e, "other/client", "app/server", 80));
    assert!(!v.egress.allowed && !v.ingress.allowed);
    assert!(
        e.log_decision(&v.egress).is_logged(),
        "egress deny: `other` is annotated"
    );
    assert!(
        !e.log_decision(&v.ingress).is_logged(),
        "ingress deny: `app` is not annotated"
    );
}

#[test]
fn invalid_network_logging_is_refused_with_gkes_text() {
    for which in ["allow", "deny"] {
        let c = Case {
            allow: (true, false),
            deny: (true, false),
            policy_annotated: false,
            namespace_annotated: false,
        };
        let text = cluster(c).replace(
            &format!("{which}: {{log: true, delegate: false}}"),
            &format!("{which}: {{log: false, delegate: true}}"),
        );
        let e = load_str(&text, Path::new("c.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!(
                "cluster {which} log action is invalid: delegate cannot be true when log is false"
            )),
            "{e}"
        );
    }
}

#[test]
fn no_network_logging_logs_nothing() {
    let text = cluster(Case {
        allow: (true, false),
        deny: (true, false),
        policy_annotated: true,
        namespace_annotated: true,
    });
    let text = &text[..text.find("---\napiVersion: networking.gke.io").unwrap()];
    let e = Engine::build(
        &load_str(text, Path::new("c.yaml")).unwrap().state,
        IpBlockMode::DataplaneV2,
    )
    .unwrap();
    for (s, d) in [
        ("app/client", "app/server"),
        ("other/client", "app/server"),
        ("node:n1", "app/server"),
    ] {
        let v = e.evaluate(&flow(&e, s, d, 80));
        assert!(
            !e.log_decision(&v.ingress).is_logged() && !e.log_decision(&v.egress).is_logged(),
            "{s} -> {d}"
        );
    }
}
