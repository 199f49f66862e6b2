//! End-to-end tests of `verdict policy check` and `verdict policy explain` as a user runs them:
//! the seed's records reproduced exactly, exit statuses, and error messages that name the file,
//! line and field.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use verdict_schema::Timestamp;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn verdict(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn stdout_lines(o: &Output) -> Vec<Value> {
    String::from_utf8(o.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Seed 000's records, timestamps as nanoseconds so instants compare exactly.
fn seed(name: &str) -> Value {
    let text = std::fs::read_to_string(repo().join("schema/tests/fixtures").join(name)).unwrap();
    normalize(serde_json::from_str(&text).unwrap())
}

fn normalize(mut v: Value) -> Value {
    if let Some(ts) = v.get("timestamp").and_then(Value::as_str) {
        v["timestamp"] = Value::from(Timestamp::parse(ts).unwrap().unix_nanos());
    }
    v
}

#[test]
fn seed_allow_green_example_reproduces_gkes_records() {
    let o = verdict(
        &[
            "policy",
            "check",
            "--manifests",
            "examples/allow-green",
            "--connections",
            "examples/allow-green.connections.jsonl",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = stdout_lines(&o);
    assert_eq!(lines.len(), 3);

    let green = &lines[0];
    assert_eq!(green["verdict"], "allow");
    assert_eq!(
        green["ingress"]["policies"],
        serde_json::json!([{"name": "allow-green", "namespace": "default"}])
    );
    assert_eq!(green["ingress"]["logged"], true);
    assert_eq!(
        normalize(green["ingress"]["record"].clone()),
        seed("seed000_allow_client_green.json")
    );
    assert_eq!(
        green["egress"],
        serde_json::json!({"isolated": false, "verdict": "allow", "policies": [], "isolated_by": [], "logged": false, "record": null})
    );

    let red = &lines[1];
    assert_eq!(red["verdict"], "deny");
    assert_eq!(red["ingress"]["verdict"], "deny");
    assert_eq!(
        red["ingress"]["isolated_by"],
        serde_json::json!([{"name": "allow-green", "namespace": "default"}])
    );
    // One attempt: count 1. The seed's record aggregates three attempts (count 3).
    let mut expected = seed("seed000_deny_client_red.json");
    expected["count"] = Value::from(1);
    assert_eq!(normalize(red["ingress"]["record"].clone()), expected);
    assert!(red["ingress"]["record"].get("policies").is_none());

    let probe = &lines[2];
    assert_eq!(probe["verdict"], "allow");
    assert_eq!(
        probe["ingress"]["record"]["policies"],
        serde_json::json!([{"name": ""}])
    );
    assert_eq!(
        probe["ingress"]["record"]["src"],
        serde_json::json!({"instance": "10.84.0.1"})
    );
}

#[test]
fn seed_kubelet_probe_record_is_reproduced_exactly() {
    let o = verdict(
        &[
            "policy",
            "check",
            "--manifests",
            "examples/kubelet-probe",
            "--connections",
            "-",
        ],
        Some(
            &std::fs::read_to_string(repo().join("examples/kubelet-probe.connections.jsonl"))
                .unwrap(),
        ),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = stdout_lines(&o);
    assert_eq!(
        normalize(lines[0]["ingress"]["record"].clone()),
        seed("seed000_kubelet_probe.json")
    );
    assert_eq!(lines[0]["ingress"]["policies"], serde_json::json!([]));
}

#[test]
fn output_keeps_input_order_and_defaults() {
    let input = "{\"src\":\"default/client-red-5689846f5b-b5ccx\",\"dest\":\"ip:10.84.0.165\",\"protocol\":\"udp\",\"port\":53}\n\n{\"src\":\"node:gke-demo-default-pool-5dad52ed-k0h1\",\"dest\":\"default/test-service-745c798fc9-sfd9h\",\"protocol\":\"SCTP\",\"port\":9}\n";
    let o = verdict(
        &[
            "policy",
            "check",
            "--manifests",
            "examples/allow-green",
            "--connections",
            "-",
        ],
        Some(input),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = stdout_lines(&o);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["protocol"], "UDP");
    assert_eq!(lines[0]["dest"], "ip:10.84.0.165");
    let rec = &lines[0]["ingress"]["record"];
    assert_eq!(rec["connection"]["src_port"], 0);
    assert_eq!(rec["connection"]["protocol"], "udp");
    // No timestamp given: now.
    let ts = Timestamp::parse(rec["timestamp"].as_str().unwrap()).unwrap();
    assert!((Timestamp::now().unix_nanos() - ts.unix_nanos()).abs() < 600_000_000_000);
    // From the pod's own node (InternalIP): always allowed, logged as a probe.
    assert_eq!(lines[1]["verdict"], "allow");
    assert_eq!(
        lines[1]["ingress"]["record"]["src"],
        serde_json::json!({"instance": "10.128.0.5"})
    );
}

fn temp_manifests(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(d.path().join(name), text).unwrap();
    }
    d
}

#[test]
fn bad_input_lines_name_file_line_and_field() {
    let cases = [
        (
            "{\"src\":\"default/nope\",\"dest\":\"default/test-service-745c798fc9-sfd9h\",\"protocol\":\"TCP\",\"port\":1}",
            "field `src`: unknown pod default/nope",
        ),
        (
            "{\"src\":\"ghost/x\",\"dest\":\"default/test-service-745c798fc9-sfd9h\",\"protocol\":\"TCP\",\"port\":1}",
            "field `src`: unknown namespace \"ghost\"",
        ),
        (
            "{\"src\":\"default/client-red-5689846f5b-b5ccx\",\"dest\":\"default/gone\",\"protocol\":\"TCP\",\"port\":1}",
            "field `dest`: unknown pod default/gone",
        ),
        (
            "{\"src\":\"node:n9\",\"dest\":\"default/test-service-745c798fc9-sfd9h\",\"protocol\":\"TCP\",\"port\":1}",
            "field `src`: unknown node",
        ),
        (
            "{\"src\":\"default/client-red-5689846f5b-b5ccx\",\"dest\":\"ip:1.2.3.4\",\"protocol\":\"ICMP\",\"port\":1}",
            "field `protocol`",
        ),
        (
            "{\"src\":\"default/client-red-5689846f5b-b5ccx\",\"dest\":\"ip:1.2.3.4\",\"protocol\":\"TCP\",\"port\":0}",
            "field `port`: 0 is not between 1 and 65535",
        ),
        (
            "{\"src\":\"default/client-red-5689846f5b-b5ccx\",\"dest\":\"ip:1.2.3.4\",\"protocol\":\"TCP\",\"port\":80,\"timestamp\":\"yesterday\"}",
            "field `timestamp`",
        ),
        (
            "{\"src\":\"default/client-red-5689846f5b-b5ccx\",\"dest\":\"ip:1.2.3.4\",\"protocol\":\"TCP\",\"port\":80,\"prot\":1}",
            "unknown field `prot`",
        ),
        (
            "{\"dest\":\"ip:1.2.3.4\",\"protocol\":\"TCP\",\"port\":80}",
            "missing field `src`",
        ),
        ("not json", "invalid connection"),
    ];
    for (line, want) in cases {
        let input = format!(
            "{{\"src\":\"default/client-red-5689846f5b-b5ccx\",\"dest\":\"ip:1.2.3.4\",\"protocol\":\"TCP\",\"port\":80}}\n{line}\n"
        );
        let d = temp_manifests(&[("conns.jsonl", &input)]);
        let conns = d.path().join("conns.jsonl");
        let o = verdict(
            &[
                "policy",
                "check",
                "--manifests",
                "examples/allow-green",
                "--connections",
                conns.to_str().unwrap(),
            ],
            None,
        );
        assert_eq!(o.status.code(), Some(2), "{line}");
        let err = stderr(&o);
        assert!(
            err.contains(&format!("{}:2: ", conns.display())),
            "{line}: {err}"
        );
        assert!(err.contains(want), "{line}: {err}");
        assert!(o.stdout.is_empty(), "no partial output on error");
    }
}

#[test]
fn bad_manifests_are_errors_with_file_and_line() {
    let policy = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec:\n  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/8, except: [192.168.0.0/16]}\n";
    let cases: [(&str, &str, &str); 5] = [
        ("p.yaml", policy, "p.yaml:8"),
        (
            "q.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nstatus: {podIP: not-an-ip}\n",
            "q.yaml:4",
        ),
        ("r.yaml", "kind: Pod\n  bad: [indent\n", "r.yaml:"),
        (
            "nl.yaml",
            "apiVersion: networking.gke.io/v1alpha1\nkind: NetworkLogging\nmetadata: {name: default}\nspec: {cluster: {deny: {log: false, delegate: true}}}\n",
            "cluster deny log action is invalid: delegate cannot be true when log is false",
        ),
        (
            "s.yaml",
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec:\n  podSelectr: {}\n",
            "unknown field `podSelectr`",
        ),
    ];
    for (name, text, want) in cases {
        let d = temp_manifests(&[(name, text)]);
        let o = verdict(
            &[
                "policy",
                "check",
                "--manifests",
                d.path().to_str().unwrap(),
                "--connections",
                "-",
            ],
            Some(""),
        );
        assert_eq!(o.status.code(), Some(2), "{name}");
        let err = stderr(&o);
        assert!(err.contains(want), "{name}: {err}");
        assert!(err.contains(name), "{name}: {err}");
    }
    let o = verdict(
        &[
            "policy",
            "check",
            "--manifests",
            "/nonexistent/dir",
            "--connections",
            "-",
        ],
        Some(""),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/nonexistent/dir"));
}

#[test]
fn dataplane_v2_warnings_go_to_stderr_and_calico_mode_matches_pods() {
    let files = [
        (
            "ns.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a, labels: {app: a}}\nstatus: {podIP: 10.0.0.5}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: b}\nstatus: {podIP: 10.0.0.6}\n",
        ),
        (
            "pol.yaml",
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: from-b}\nspec:\n  podSelector: {matchLabels: {app: a}}\n  ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.6/32}}]\n",
        ),
    ];
    let d = temp_manifests(&files);
    let input = "{\"src\":\"default/b\",\"dest\":\"default/a\",\"protocol\":\"TCP\",\"port\":80}\n";
    let dpv2 = verdict(
        &[
            "policy",
            "check",
            "--manifests",
            d.path().to_str().unwrap(),
            "--connections",
            "-",
        ],
        Some(input),
    );
    assert!(dpv2.status.success());
    assert!(
        stderr(&dpv2).contains("GKE Dataplane V2 rejects a Pod IP"),
        "{}",
        stderr(&dpv2)
    );
    assert_eq!(stdout_lines(&dpv2)[0]["verdict"], "deny");
    let calico = verdict(
        &[
            "policy",
            "check",
            "--manifests",
            d.path().to_str().unwrap(),
            "--ipblock-mode",
            "calico",
            "--connections",
            "-",
        ],
        Some(input),
    );
    assert!(calico.status.success());
    assert!(!stderr(&calico).contains("Dataplane V2"));
    assert_eq!(stdout_lines(&calico)[0]["verdict"], "allow");
}

fn explain(conn: &str) -> String {
    let o = verdict(
        &[
            "policy",
            "explain",
            "--manifests",
            "examples/debugging",
            conn,
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn explain_dns_egress() {
    let text = explain("demo/my-deployment -> kube-system/kube-dns:53/UDP");
    assert!(
        text.contains("DENIED by the source's egress policies"),
        "{text}"
    );
    assert!(text.contains("demo/my-deployment-egress"), "{text}");
    assert!(
        text.contains(
            "TCP/https (the destination declares no such container port) do not include UDP/53"
        ),
        "{text}"
    );
    assert!(text.contains("name: allow-dns-egress"), "{text}");
    assert!(
        text.contains("kubernetes.io/metadata.name: kube-system"),
        "{text}"
    );
    assert!(
        text.contains("- protocol: UDP\n") && text.contains("port: 53"),
        "{text}"
    );
}

#[test]
fn explain_external_host_suggests_an_ip_block() {
    let text = explain("demo/my-deployment -> ip:93.184.216.34:80");
    assert!(
        text.contains("93.184.216.34 is not a pod (use an ipBlock for it)"),
        "{text}"
    );
    assert!(text.contains("cidr: 93.184.216.34/32"), "{text}");
    assert!(
        text.contains("Egress from the source demo/my-deployment: DENIED"),
        "{text}"
    );
}

#[test]
fn explain_missing_namespace_label_suggests_labelling_it_first() {
    let text = explain("demo/my-deployment -> payments/api:8443/TCP");
    assert!(text.contains("namespace payments (kubernetes.io/metadata.name=payments,team=billing) lacks team=payments"), "{text}");
    let first = text
        .lines()
        .skip_while(|l| !l.contains("for egress:"))
        .nth(1)
        .unwrap();
    assert!(
        first.contains("kubectl label namespace payments team=payments --overwrite"),
        "{text}"
    );
    // Allowed connections are explained too.
    let o = verdict(
        &[
            "policy",
            "explain",
            "--manifests",
            "examples/allow-green",
            "default/client-green-7b78d7c957-68mv4 -> default/test-service-745c798fc9-sfd9h:8080",
        ],
        None,
    );
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("Verdict: ALLOWED"), "{text}");
    assert!(text.contains("rule ingress[0] matches"), "{text}");
    assert!(
        text.contains("logged as allow with policies [default/allow-green]"),
        "{text}"
    );
}

#[test]
fn explain_rejects_malformed_connections() {
    for (arg, want) in [
        ("default/a default/b:80", "missing '->'"),
        ("default/a -> default/b", "missing ':PORT'"),
        ("default/a -> default/b:99999", "not between 1 and 65535"),
    ] {
        let o = verdict(
            &[
                "policy",
                "explain",
                "--manifests",
                "examples/debugging",
                arg,
            ],
            None,
        );
        assert_eq!(o.status.code(), Some(2), "{arg}");
        assert!(stderr(&o).contains(want), "{arg}: {}", stderr(&o));
    }
}

/// `--kubeconfig` reads a live cluster's state once, read only. No API server can run on this
/// machine: the fake one on loopback (`verdict_cluster::fake_apiserver`, written from the
/// Kubernetes API reference) serves the objects of `examples/debugging`.
#[test]
fn explain_against_a_live_cluster_gives_what_the_manifests_give() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(verdict_cluster::fake_apiserver::FakeApiServer::start("cli"));
    server
        .apply_manifest_dir(&repo().join("examples/debugging"))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, server.kubeconfig()).unwrap();
    let conn = "demo/my-deployment -> kube-system/kube-dns:53/UDP";
    let live = verdict(
        &[
            "policy",
            "explain",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--context",
            "fake",
            conn,
        ],
        None,
    );
    assert!(live.status.success(), "{}", stderr(&live));
    assert_eq!(String::from_utf8(live.stdout).unwrap(), explain(conn));

    // RBAC refusals and unknown contexts are errors that say what is wrong.
    server.set_forbidden("pods", true);
    let refused = verdict(
        &[
            "policy",
            "explain",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            conn,
        ],
        None,
    );
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("forbidden") && stderr(&refused).contains("pods"),
        "{}",
        stderr(&refused)
    );
    let unknown = verdict(
        &[
            "policy",
            "explain",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--context",
            "prod",
            conn,
        ],
        None,
    );
    assert!(!unknown.status.success());
    assert!(stderr(&unknown).contains("prod"), "{}", stderr(&unknown));
}

/// `verdict policy check` against a live cluster (the fake API server of
/// `verdict_cluster::fake_apiserver`: no real API server runs here) judges and logs exactly as it
/// does from the same objects in a manifest folder.
#[test]
fn check_against_a_live_cluster_gives_what_the_manifests_give() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(verdict_cluster::fake_apiserver::FakeApiServer::start("cli"));
    server
        .apply_manifest_dir(&repo().join("examples/allow-green"))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, server.kubeconfig()).unwrap();
    let connections = "examples/allow-green.connections.jsonl";
    let from_files = verdict(
        &[
            "policy",
            "check",
            "--manifests",
            "examples/allow-green",
            "--connections",
            connections,
        ],
        None,
    );
    assert!(from_files.status.success(), "{}", stderr(&from_files));
    let live = verdict(
        &[
            "policy",
            "check",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--connections",
            connections,
        ],
        None,
    );
    assert!(live.status.success(), "{}", stderr(&live));
    assert_eq!(stdout_lines(&live).len(), 3);
    assert_eq!(stdout_lines(&live), stdout_lines(&from_files));
}
