//! The Helm chart's ClusterRoles grant exactly what the code asks of the API server: the calls
//! are recorded on the fake API server (no real API server runs on this machine — see
//! `verdict_cluster::fake_apiserver`) while the node agent's watchers read a cluster, report an
//! invalid NetworkLogging (Event and status), a PacketDrop Event is posted and the collector
//! reviews a node's token; each call becomes (API group, resource, verb) as the API server's
//! authorizer sees it, and the set must equal the rules the chart renders
//! (`scripts/render-chart.sh`, Helm's own engine).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;
use verdict_cluster::api::events::post_event;
use verdict_cluster::api::review::TokenReviewer;
use verdict_cluster::api::{ApiOptions, ApiSource, ApiSourceOptions, connect};
use verdict_cluster::fake_apiserver::FakeApiServer;
use verdict_cluster::{ClusterSource, StateUpdate};

type Permission = (String, String, String);

/// (group, resource[/subresource], verb) of a request, as RBAC names it; None for non-resource
/// URLs (`/version`).
fn permission(method: &str, path: &str, query: &str) -> Option<Permission> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let rest = match rest {
        ["namespaces", _ns, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let (resource, named) = match rest {
        [plural] => (plural.to_string(), false),
        [plural, _name] => (plural.to_string(), true),
        [plural, _name, sub] => (format!("{plural}/{sub}"), true),
        _ => return None,
    };
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match (method, named) {
        ("GET", _) if watch => "watch",
        ("GET", false) => "list",
        ("GET", true) => "get",
        ("POST", _) => "create",
        ("PATCH", _) => "patch",
        ("PUT", _) => "update",
        ("DELETE", false) => "deletecollection",
        ("DELETE", true) => "delete",
        _ => return None,
    };
    Some((group.to_owned(), resource, verb.to_owned()))
}

fn recorded(server: &FakeApiServer) -> BTreeSet<Permission> {
    server
        .calls()
        .iter()
        .filter_map(|(m, p, q)| permission(m, p, q))
        .collect()
}

/// The rules of the chart's ClusterRole `NAME`, one permission per (group, resource, verb).
fn chart_rules(documents: &[serde_yaml::Value], name: &str) -> BTreeSet<Permission> {
    let role = documents
        .iter()
        .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("the chart renders no ClusterRole {name}"));
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_sequence().expect("rules") {
        let strings = |key: &str| -> Vec<String> {
            rule[key]
                .as_sequence()
                .unwrap_or_else(|| panic!("{name}: a rule without {key}"))
                .iter()
                .map(|v| v.as_str().expect("a string").to_owned())
                .collect()
        };
        for g in strings("apiGroups") {
            for r in strings("resources") {
                for v in strings("verbs") {
                    assert!(
                        g != "*" && r != "*" && v != "*",
                        "{name}: wildcard rule {rule:?}"
                    );
                    out.insert((g.clone(), r.clone(), v));
                }
            }
        }
    }
    out
}

fn render_chart() -> Vec<serde_yaml::Value> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new("bash")
        .arg(root.join("scripts/render-chart.sh"))
        .current_dir(&root)
        .output()
        .expect("run scripts/render-chart.sh (python3 with helm-python-sdk: scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "scripts/render-chart.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("a YAML document"))
        .filter(|v: &serde_yaml::Value| !v.is_null())
        .collect()
}

async fn client(server: &FakeApiServer, dir: &std::path::Path) -> kube::Client {
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, server.kubeconfig()).unwrap();
    connect(&ApiOptions {
        kubeconfig: Some(kubeconfig),
        context: None,
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_grants_exactly_the_api_calls_the_code_makes() {
    let documents = render_chart();
    let dir = tempfile::tempdir().unwrap();
    let server = FakeApiServer::start("agent-token").await;
    server.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}));
    server.apply(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "cart", "namespace": "shop", "labels": {"app": "cart"}},
        "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "x"}]},
        "status": {"phase": "Running", "podIP": "10.0.1.10", "podIPs": [{"ip": "10.0.1.10"}]}}));
    // Invalid (delegate without log): the agent reports it with an Event and a status condition.
    server.apply(
        json!({"apiVersion": "networking.gke.io/v1alpha1", "kind": "NetworkLogging",
        "metadata": {"name": "default"},
        "spec": {"cluster": {"allow": {"log": false, "delegate": true},
                             "deny": {"log": true, "delegate": false}}}}),
    );

    // The node agent (and the shipper's iptables source: the same watchers).
    let mut source = ApiSource::start(
        client(&server, dir.path()).await,
        ApiSourceOptions {
            report_as: Some("node-a".into()),
            settle: Duration::from_millis(20),
            probe_interval: Duration::from_millis(100),
        },
    );
    let state: StateUpdate = tokio::time::timeout(Duration::from_secs(30), source.next_state())
        .await
        .expect("a state within 30 s")
        .expect("a state");
    assert_eq!(state.state.pods.len(), 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while server.events().is_empty()
        || server.get("NetworkLogging", "", "default").unwrap()["status"].is_null()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the invalid NetworkLogging was not reported"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The shipper's PacketDrop Event.
    let event = json!({"apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "cart.packetdrop", "namespace": "shop"},
        "involvedObject": {"kind": "Pod", "namespace": "shop", "name": "cart"},
        "reason": "PacketDrop", "message": "dropped", "type": "Warning"});
    let outcome = post_event(&client(&server, dir.path()).await, "shop", &event).await;
    assert!(
        matches!(outcome, verdict_cluster::api::events::PostOutcome::Created),
        "{outcome:?}"
    );
    let agent = recorded(&server);

    // The collector reviews a node's token.
    server.add_service_account_token(
        "t",
        "verdict",
        "verdict-agent",
        Some("node-a"),
        &["verdict-collector"],
    );
    let reviewer = TokenReviewer::new(
        client(&server, dir.path()).await,
        "verdict-collector",
        &["verdict:verdict-agent".to_owned()],
        Duration::from_secs(60),
    );
    assert_eq!(reviewer.node_of("t").await.unwrap(), "node-a");
    let collector: BTreeSet<Permission> = recorded(&server).difference(&agent).cloned().collect();

    assert_eq!(
        agent,
        chart_rules(&documents, "verdict-agent"),
        "the agent's calls vs its ClusterRole"
    );
    assert_eq!(
        collector,
        chart_rules(&documents, "verdict-collector"),
        "the collector's calls vs its ClusterRole"
    );
}

#[test]
fn requests_map_to_rbac_permissions() {
    let p = |m, path, q| permission(m, path, q).map(|(g, r, v)| format!("{g}/{r}:{v}"));
    assert_eq!(
        p("GET", "/api/v1/pods", "limit=500"),
        Some("/pods:list".into())
    );
    assert_eq!(
        p("GET", "/api/v1/pods", "watch=true&resourceVersion=5"),
        Some("/pods:watch".into())
    );
    assert_eq!(
        p(
            "PATCH",
            "/apis/networking.gke.io/v1alpha1/networkloggings/default/status",
            ""
        ),
        Some("networking.gke.io/networkloggings/status:patch".into())
    );
    assert_eq!(
        p("POST", "/api/v1/namespaces/shop/events", ""),
        Some("/events:create".into())
    );
    assert_eq!(
        p("GET", "/api/v1/namespaces/shop/pods/cart", ""),
        Some("/pods:get".into())
    );
    assert_eq!(
        p("GET", "/api/v1/namespaces", ""),
        Some("/namespaces:list".into())
    );
    assert_eq!(p("GET", "/version", ""), None);
}
