//! The API source against a fake Kubernetes API server on loopback
//! (`verdict_cluster::fake_apiserver`): no real API server can run on this machine, so these
//! tests use one written from the Kubernetes API reference (list with resourceVersion and
//! chunks, watch streams with ADDED/MODIFIED/DELETED/BOOKMARK, 410 Gone, 403 Forbidden).

use std::time::Duration;

use serde_json::{Value, json};
use verdict_cluster::api::{ApiOptions, ApiSource, ApiSourceOptions, connect, list_state};
use verdict_cluster::fake_apiserver::FakeApiServer;
use verdict_cluster::{ClusterSource, PolicyCompiler, SourceError, StateUpdate};
use verdict_policy::{EndpointSpec, Engine, Flow, IpBlockMode};
use verdict_schema::Protocol;

const TOKEN: &str = "agent-token";

fn ns(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

fn pod(namespace: &str, name: &str, ip: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": namespace, "labels": labels,
                        "managedFields": [{"manager": "kubelet", "operation": "Update"}]},
           "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "nginx:1.27",
                    "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                    "env": [{"name": "A", "value": "B"}]}]},
           "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
}

/// Ingress to `app=db` in `data` only from namespaces labelled `team=shop`.
fn db_policy() -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": "db-from-shop", "namespace": "data"},
           "spec": {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"],
                    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "shop"}}}],
                                 "ports": [{"protocol": "TCP", "port": 5432}]}]}})
}

fn logging(allow: (bool, bool), deny: (bool, bool)) -> Value {
    json!({"apiVersion": "networking.gke.io/v1alpha1", "kind": "NetworkLogging",
           "metadata": {"name": "default"},
           "spec": {"cluster": {"allow": {"log": allow.0, "delegate": allow.1},
                                "deny": {"log": deny.0, "delegate": deny.1}}}})
}

fn seed(server: &FakeApiServer) {
    server.apply(ns("shop", json!({"team": "shop"})));
    server.apply(ns("data", json!({})));
    server.apply(ns("web", json!({})));
    server.apply(pod("shop", "cart", "10.0.1.10", json!({"app": "cart"})));
    server.apply(pod("web", "front", "10.0.2.10", json!({"app": "front"})));
    server.apply(pod("data", "db-0", "10.0.3.10", json!({"app": "db"})));
    server.apply(json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-a"}, "spec": {"podCIDR": "10.0.0.0/16"},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.2"}]}}));
    server.apply(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "db", "namespace": "data"},
        "spec": {"clusterIP": "10.96.0.20", "selector": {"app": "db"}}}));
    server.apply(
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "db-x1", "namespace": "data",
                     "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.3.10"], "conditions": {"ready": true}},
                      {"addresses": ["10.0.3.11"], "conditions": {"ready": false}}],
        "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}),
    );
    server.apply(db_policy());
    server.apply(logging((true, false), (true, false)));
}

async fn source(server: &FakeApiServer, dir: &std::path::Path, report: bool) -> ApiSource {
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, server.kubeconfig()).unwrap();
    let client = connect(&ApiOptions {
        kubeconfig: Some(kubeconfig),
        context: Some("fake".into()),
    })
    .await
    .unwrap();
    ApiSource::start(
        client,
        ApiSourceOptions {
            report_as: report.then(|| "node-a".to_owned()),
            settle: Duration::from_millis(20),
            probe_interval: Duration::from_millis(100),
        },
    )
}

async fn next(source: &mut ApiSource) -> Result<StateUpdate, SourceError> {
    tokio::time::timeout(Duration::from_secs(30), source.next_state())
        .await
        .expect("a state within 30 s")
}

/// Waits for a state for which `cond` holds (states arrive after each change).
async fn until(
    source: &mut ApiSource,
    what: &str,
    cond: impl Fn(&StateUpdate) -> bool,
) -> StateUpdate {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let update = tokio::time::timeout(left, source.next_state())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
        if let Ok(u) = update
            && cond(&u)
        {
            return u;
        }
    }
}

fn engine(update: &StateUpdate) -> Engine {
    let mut compiler = PolicyCompiler::new(IpBlockMode::DataplaneV2);
    compiler
        .compile(update.clone())
        .unwrap()
        .snapshot
        .engine
        .clone()
}

fn allowed(e: &Engine, src: &str, dest: &str, port: u16) -> bool {
    let (s, d) = e
        .resolve_pair(
            &EndpointSpec::parse(src).unwrap(),
            &EndpointSpec::parse(dest).unwrap(),
        )
        .unwrap();
    e.evaluate(&Flow {
        src: s,
        dest: d,
        protocol: Protocol::Tcp,
        dest_port: port,
    })
    .allowed()
}

fn pod_ip(u: &StateUpdate, name: &str) -> Option<String> {
    u.state
        .pods
        .iter()
        .find(|p| p.metadata.name == name)
        .and_then(|p| p.status.pod_ip.map(|ip| ip.to_string()))
}

#[tokio::test]
async fn the_first_state_is_the_whole_cluster_after_every_kind_has_listed() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeApiServer::start(TOKEN).await;
    seed(&server);
    // More pods than one list chunk (500): the list is read in chunks with `continue`.
    for i in 0..1200 {
        server.apply(pod(
            "web",
            &format!("w-{i}"),
            &format!("10.1.{}.{}", i / 250, i % 250),
            json!({"app": "w"}),
        ));
    }
    let mut s = source(&server, dir.path(), false).await;
    let first = next(&mut s).await.unwrap();
    assert_eq!(first.state.pods.len(), 1203);
    assert!(
        server.requests("list:pods") >= 3,
        "chunked: {}",
        server.requests("list:pods")
    );
    let names: Vec<&str> = first
        .state
        .namespaces
        .iter()
        .map(|n| n.metadata.name.as_str())
        .collect();
    for n in ["shop", "data", "web", "default", "kube-system"] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    let shop = first
        .state
        .namespaces
        .iter()
        .find(|n| n.metadata.name == "shop")
        .unwrap();
    assert_eq!(shop.metadata.labels["kubernetes.io/metadata.name"], "shop");
    assert_eq!(first.state.policies.len(), 1);
    assert_eq!(
        first.state.policies[0].metadata.namespace.as_deref(),
        Some("data")
    );
    assert_eq!(first.state.nodes.len(), 1);
    let nl = first
        .state
        .network_logging
        .as_ref()
        .expect("NetworkLogging");
    assert!(nl.spec.cluster.allow.log && nl.spec.cluster.deny.log);
    // Service backends come from the EndpointSlice (ready endpoints only).
    let svc = &first.state.services[0];
    assert_eq!(
        first.state.service_backends(svc),
        vec!["10.0.3.10".parse::<std::net::IpAddr>().unwrap()]
    );
    let e = engine(&first);
    assert!(allowed(&e, "shop/cart", "data/db-0", 5432));
    assert!(!allowed(&e, "web/front", "data/db-0", 5432));
}

#[tokio::test]
async fn pod_ip_and_namespace_label_changes_reach_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeApiServer::start(TOKEN).await;
    seed(&server);
    let mut s = source(&server, dir.path(), false).await;
    let first = next(&mut s).await.unwrap();
    assert_eq!(pod_ip(&first, "cart").as_deref(), Some("10.0.1.10"));

    // The pod is recreated with a new IP.
    server.apply(pod("shop", "cart", "10.0.1.99", json!({"app": "cart"})));
    let moved = until(&mut s, "the new pod IP", |u| {
        pod_ip(u, "cart").as_deref() == Some("10.0.1.99")
    })
    .await;
    assert!(allowed(&engine(&moved), "shop/cart", "data/db-0", 5432));

    // Labelling `web` team=shop makes the policy's namespaceSelector select it.
    server.apply(ns("web", json!({"team": "shop"})));
    let relabelled = until(&mut s, "web labelled", |u| {
        u.state
            .namespaces
            .iter()
            .any(|n| n.metadata.name == "web" && n.metadata.labels.contains_key("team"))
    })
    .await;
    assert!(allowed(
        &engine(&relabelled),
        "web/front",
        "data/db-0",
        5432
    ));
    // ...and taking the label off `shop` deselects it.
    server.apply(ns("shop", json!({})));
    let unlabelled = until(&mut s, "shop unlabelled", |u| {
        u.state
            .namespaces
            .iter()
            .any(|n| n.metadata.name == "shop" && !n.metadata.labels.contains_key("team"))
    })
    .await;
    assert!(!allowed(
        &engine(&unlabelled),
        "shop/cart",
        "data/db-0",
        5432
    ));

    // Deleting the policy un-isolates the database.
    server.delete("NetworkPolicy", "data", "db-from-shop");
    let open = until(&mut s, "the policy deleted", |u| {
        u.state.policies.is_empty()
    })
    .await;
    assert!(allowed(&engine(&open), "shop/cart", "data/db-0", 5432));
}

#[tokio::test]
async fn an_outage_keeps_the_last_state_and_recovery_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeApiServer::start(TOKEN).await;
    seed(&server);
    let mut s = source(&server, dir.path(), false).await;
    next(&mut s).await.unwrap();

    server.stop();
    let outage = next(&mut s).await.expect_err("the outage is reported");
    assert!(
        outage.to_string().contains("enforcing the last state"),
        "{outage}"
    );

    // While it is down, nothing else comes (the caller keeps the last state in force)...
    let quiet = tokio::time::timeout(Duration::from_millis(700), s.next_state()).await;
    assert!(
        quiet.is_err(),
        "no state while the API server is down: {quiet:?}"
    );

    // ...and when it is back, a state comes even though nothing changed.
    server.resume().await;
    let back = next(&mut s).await.expect("a state after recovery");
    assert_eq!(back.state.policies.len(), 1);

    // Changes made after recovery flow again.
    server.delete("NetworkPolicy", "data", "db-from-shop");
    until(&mut s, "the policy deleted after recovery", |u| {
        u.state.policies.is_empty()
    })
    .await;
}

#[tokio::test]
async fn an_expired_watch_relists_and_sees_what_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeApiServer::start(TOKEN).await;
    seed(&server);
    let mut s = source(&server, dir.path(), false).await;
    next(&mut s).await.unwrap();
    let lists = server.requests("list:networkpolicies");

    // Changes happen, the history is compacted, and the watches drop: re-watching from the
    // old version gets 410 Gone, so the watcher lists again.
    server.stop();
    server.delete("NetworkPolicy", "data", "db-from-shop");
    server.delete("Pod", "web", "front");
    server.compact();
    server.resume().await;
    let relisted = until(&mut s, "the relisted state", |u| {
        u.state.policies.is_empty() && pod_ip(u, "front").is_none()
    })
    .await;
    assert!(pod_ip(&relisted, "cart").is_some());
    assert!(
        server.requests("gone:networkpolicies") >= 1,
        "the watch got 410 Gone"
    );
    assert!(
        server.requests("list:networkpolicies") > lists,
        "the policies were listed again after 410 Gone"
    );
}

#[tokio::test]
async fn an_invalid_network_logging_keeps_the_previous_one_and_gets_one_event_per_change() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeApiServer::start(TOKEN).await;
    seed(&server);
    let mut s = source(&server, dir.path(), true).await;
    let first = next(&mut s).await.unwrap();
    assert!(first.rejected_network_logging.is_none());

    server.apply(logging((false, true), (true, false)));
    let rejected = until(&mut s, "the rejection", |u| {
        u.rejected_network_logging.is_some()
    })
    .await;
    let message = "cluster allow log action is invalid: delegate cannot be true when log is false";
    assert_eq!(rejected.rejected_network_logging.as_deref(), Some(message));
    // The compiler keeps the previous valid object in force.
    let mut compiler = PolicyCompiler::new(IpBlockMode::DataplaneV2);
    compiler.compile(first.clone()).unwrap();
    let compiled = compiler.compile(rejected).unwrap();
    assert_eq!(compiled.network_logging_error.as_deref(), Some(message));

    let events = eventually_events(&server, 1).await;
    let e = &events[0];
    assert_eq!(e["reason"], "InvalidNetworkLogging");
    assert_eq!(e["type"], "Warning");
    assert_eq!(e["message"], message);
    assert_eq!(e["involvedObject"]["kind"], "NetworkLogging");
    assert_eq!(e["involvedObject"]["name"], "default");
    assert_eq!(e["source"]["component"], "network-logging-controller");
    assert_eq!(e["source"]["host"], "node-a");
    let status = eventually_condition(&server, "False").await;
    assert_eq!(status["reason"], "InvalidNetworkLogging");
    assert_eq!(status["message"], message);

    // Another object changing does not repeat the Event...
    server.apply(pod("shop", "cart-2", "10.0.1.11", json!({"app": "cart"})));
    until(&mut s, "cart-2", |u| pod_ip(u, "cart-2").is_some()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        server.events().len(),
        1,
        "one Event per change of the object"
    );
    // ...a new invalid version of the object gets its own...
    server.apply(logging((false, true), (false, true)));
    until(&mut s, "the second rejection", |u| {
        u.rejected_network_logging
            .as_deref()
            .is_some_and(|m| m.contains("deny"))
    })
    .await;
    eventually_events(&server, 2).await;
    // ...and a valid one is applied and marked valid.
    server.apply(logging((true, true), (true, false)));
    let fixed = until(&mut s, "the valid object", |u| {
        u.rejected_network_logging.is_none()
    })
    .await;
    assert!(
        fixed
            .state
            .network_logging
            .unwrap()
            .spec
            .cluster
            .allow
            .delegate
    );
    eventually_condition(&server, "True").await;
    assert_eq!(server.events().len(), 2);
}

async fn eventually_events(server: &FakeApiServer, n: usize) -> Vec<Value> {
    for _ in 0..300 {
        let events = server.events();
        if events.len() >= n {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("expected {n} Events, got {:?}", server.events());
}

async fn eventually_condition(server: &FakeApiServer, status: &str) -> Value {
    for _ in 0..300 {
        let object = server.get("NetworkLogging", "", "default").unwrap();
        let c = &object["status"]["conditions"][0];
        if c["status"] == status {
            assert_eq!(c["type"], "Valid");
            return c.clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "no Valid={status} condition: {:?}",
        server.get("NetworkLogging", "", "default")
    );
}

#[tokio::test]
async fn an_rbac_refusal_is_a_clear_error_naming_the_permission() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeApiServer::start(TOKEN).await;
    seed(&server);
    server.set_forbidden("networkpolicies", true);
    let mut s = source(&server, dir.path(), false).await;
    let e = next(&mut s).await.expect_err("RBAC refusal").to_string();
    assert!(e.contains("forbidden"), "{e}");
    assert!(e.contains("networkpolicies"), "{e}");
    assert!(e.contains("grant list and watch"), "{e}");
    assert!(e.contains("networking.k8s.io"), "{e}");

    // The one-shot read says the same.
    let kubeconfig = dir.path().join("kubeconfig");
    let client = connect(&ApiOptions {
        kubeconfig: Some(kubeconfig),
        context: None,
    })
    .await
    .unwrap();
    let e = list_state(&client)
        .await
        .expect_err("RBAC refusal")
        .to_string();
    assert!(
        e.contains("forbidden") && e.contains("networkpolicies"),
        "{e}"
    );
    server.set_forbidden("networkpolicies", false);
    let state = list_state(&client).await.unwrap();
    assert_eq!(state.state.policies.len(), 1);
}

#[tokio::test]
async fn wrong_credentials_and_a_missing_crd_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeApiServer::start(TOKEN).await;
    seed(&server);
    // A missing NetworkLogging CRD is no NetworkLogging (nothing logged), not an error.
    server.set_forbidden("networkloggings", false);
    server.delete("NetworkLogging", "", "default");
    let mut s = source(&server, dir.path(), false).await;
    let u = next(&mut s).await.unwrap();
    assert!(u.state.network_logging.is_none());

    let bad = dir.path().join("bad-kubeconfig");
    std::fs::write(&bad, server.kubeconfig().replace(TOKEN, "stolen")).unwrap();
    let client = connect(&ApiOptions {
        kubeconfig: Some(bad),
        context: None,
    })
    .await
    .unwrap();
    let e = list_state(&client).await.expect_err("401").to_string();
    assert!(e.contains("unauthorized"), "{e}");

    let Err(e) = connect(&ApiOptions {
        kubeconfig: Some(dir.path().join("kubeconfig")),
        context: Some("nope".into()),
    })
    .await
    else {
        panic!("an unknown context is an error")
    };
    let e = e.to_string();
    assert!(e.contains("kubeconfig") && e.contains("nope"), "{e}");
}
