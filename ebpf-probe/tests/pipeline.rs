//! The logging pipeline, driven with explicit times: the seed's allow-green example, NetworkLogging
//! through the pipeline, rate limiting with loss markers, aggregation overflow, audit mode, UDP
//! windows, kubelet probes, attribution across policy generations, lost events.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use verdict_cluster::PolicySnapshot;
use verdict_policy::engine::EnforcementMode;
use verdict_policy::manifests::load_str;
use verdict_policy::{Engine, IpBlockMode};
use verdict_probe::datapath::{Attempt, DEFAULT_IDLE_WINDOW, Datapath, UserspaceDatapath};
use verdict_probe::event::VerdictEvent;
use verdict_probe::pipeline::{LoggingPipeline, PipelineConfig};
use verdict_schema::{LossMarker, LossReason, PolicyActionRecord, Protocol, Timestamp};

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn snapshot_from_dir(dir: &str, generation: u64) -> Arc<PolicySnapshot> {
    let loaded = verdict_policy::manifests::load_dir(&repo().join(dir)).unwrap();
    Arc::new(PolicySnapshot {
        generation,
        engine: Engine::build(&loaded.state, IpBlockMode::DataplaneV2).unwrap(),
    })
}

fn snapshot_from_str(text: &str, generation: u64) -> Arc<PolicySnapshot> {
    let loaded = load_str(text, Path::new("test.yaml")).unwrap_or_else(|e| panic!("{e}"));
    Arc::new(PolicySnapshot {
        generation,
        engine: Engine::build(&loaded.state, IpBlockMode::DataplaneV2).unwrap(),
    })
}

const T0: i64 = 1_592_277_037_993_712_906; // 2020-06-16T03:10:37.993712906Z

fn at(offset_ms: i64) -> Timestamp {
    Timestamp::from_unix_nanos(T0 + offset_ms * 1_000_000)
}

fn attempt(
    src: &str,
    dest: &str,
    src_port: u16,
    dest_port: u16,
    protocol: Protocol,
    ts: Timestamp,
) -> Attempt {
    Attempt {
        src_ip: src.parse().unwrap(),
        dest_ip: dest.parse().unwrap(),
        src_port,
        dest_port,
        protocol,
        timestamp: Some(ts),
    }
}

/// A datapath and a pipeline on one snapshot.
struct Node {
    datapath: UserspaceDatapath,
    pipeline: LoggingPipeline,
    events: Vec<VerdictEvent>,
}

impl Node {
    fn new(snapshot: Arc<PolicySnapshot>, config: PipelineConfig, mode: EnforcementMode) -> Self {
        Node {
            datapath: UserspaceDatapath::new(snapshot.clone(), None, mode, DEFAULT_IDLE_WINDOW),
            pipeline: LoggingPipeline::new(config, snapshot),
            events: Vec::new(),
        }
    }

    fn send(&mut self, a: &Attempt) -> bool {
        let ts = a.timestamp.unwrap();
        let d = self.datapath.process(a, ts, &mut self.events);
        for ev in self.events.drain(..) {
            self.pipeline.handle(ev, ts);
        }
        d.delivered
    }

    fn records(&mut self) -> Vec<PolicyActionRecord> {
        let out = self.pipeline.take_output();
        String::from_utf8(out.records)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect::<Vec<_>>()
    }

    fn take(&mut self) -> (Vec<PolicyActionRecord>, Vec<LossMarker>) {
        let out = self.pipeline.take_output();
        let records = String::from_utf8(out.records)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let losses = String::from_utf8(out.loss_markers)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (records, losses)
    }
}

const GREEN: &str = "10.84.0.252";
const RED: &str = "10.84.0.180";
const SERVICE: &str = "10.84.0.165";

fn seed_record(name: &str) -> Value {
    let text = std::fs::read_to_string(repo().join("schema/tests/fixtures").join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn seed_allow_green_end_to_end() {
    let mut node = Node::new(
        snapshot_from_dir("examples/allow-green", 1),
        PipelineConfig::default(),
        EnforcementMode::Enforce,
    );
    assert!(node.send(&attempt(GREEN, SERVICE, 52648, 8080, Protocol::Tcp, at(0))));
    // client-red retries three times within 5 s, from different source ports.
    assert!(!node.send(&attempt(RED, SERVICE, 39610, 8080, Protocol::Tcp, at(100))));
    assert!(!node.send(&attempt(
        RED,
        SERVICE,
        39611,
        8080,
        Protocol::Tcp,
        at(1_100)
    )));
    assert!(!node.send(&attempt(
        RED,
        SERVICE,
        39612,
        8080,
        Protocol::Tcp,
        at(4_000)
    )));

    let records = node.records();
    assert_eq!(
        records.len(),
        1,
        "only the allow so far: the deny window is open"
    );
    assert_eq!(
        serde_json::to_value(&records[0]).unwrap(),
        seed_record("seed000_allow_client_green.json")
    );

    node.pipeline.tick(at(5_099));
    assert!(
        node.records().is_empty(),
        "window closes 5 s after the first attempt"
    );
    node.pipeline.tick(at(5_100));
    let denies = node.records();
    assert_eq!(denies.len(), 1);
    let mut expected = seed_record("seed000_deny_client_red.json");
    expected["timestamp"] = Value::from(at(100).to_string());
    assert_eq!(
        serde_json::to_value(&denies[0]).unwrap(),
        expected,
        "count 3, first src_port"
    );

    // A fourth attempt after the window starts a new one.
    node.send(&attempt(
        RED,
        SERVICE,
        39613,
        8080,
        Protocol::Tcp,
        at(6_000),
    ));
    node.pipeline.tick(at(11_000));
    let next = node.records();
    assert_eq!(
        (next.len(), next[0].count, next[0].connection.src_port),
        (1, 1, 39613)
    );
    let c = node.pipeline.counters();
    assert_eq!(
        (
            c.allowed_connections,
            c.denied_connections,
            c.generated_allow,
            c.generated_deny
        ),
        (1, 4, 1, 2)
    );
}

const DELEGATE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: quiet}
---
apiVersion: v1
kind: Namespace
metadata: {name: loud, annotations: {policy.network.gke.io/enable-deny-logging: "true"}}
---
apiVersion: v1
kind: Pod
metadata: {name: q, namespace: quiet, labels: {app: q}}
status: {podIP: 10.9.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: l, namespace: loud, labels: {app: l}}
status: {podIP: 10.9.0.2}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: annotated, namespace: quiet, annotations: {policy.network.gke.io/enable-logging: "true"}}
spec: {podSelector: {}, ingress: [{ports: [{port: 80}]}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: plain, namespace: quiet}
spec: {podSelector: {}, ingress: [{ports: [{port: 80}, {port: 81}]}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: loud}
spec: {podSelector: {}}
---
apiVersion: networking.gke.io/v1alpha1
kind: NetworkLogging
metadata: {name: default}
spec: {cluster: {allow: {log: true, delegate: true}, deny: {log: true, delegate: true}}}
"#;

#[test]
fn delegate_through_the_pipeline() {
    let mut node = Node::new(
        snapshot_from_str(DELEGATE, 1),
        PipelineConfig::default(),
        EnforcementMode::Enforce,
    );
    // Port 80: allowed by both; only the annotated one is listed.
    node.send(&attempt(
        "10.9.0.2",
        "10.9.0.1",
        1,
        80,
        Protocol::Tcp,
        at(0),
    ));
    // Port 81: allowed only by the unannotated one: not logged.
    node.send(&attempt(
        "10.9.0.2",
        "10.9.0.1",
        2,
        81,
        Protocol::Tcp,
        at(0),
    ));
    // Denied into `quiet` (no deny annotation): not logged. Denied into `loud`: logged.
    node.send(&attempt(
        "10.9.0.2",
        "10.9.0.1",
        3,
        82,
        Protocol::Tcp,
        at(0),
    ));
    node.send(&attempt(
        "10.9.0.1",
        "10.9.0.2",
        4,
        80,
        Protocol::Tcp,
        at(0),
    ));
    node.pipeline.tick(at(6_000));
    let r = node.records();
    assert_eq!(r.len(), 2, "{r:#?}");
    assert_eq!(
        r[0].policies
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        ["annotated"]
    );
    assert_eq!(r[1].connection.dest_ip.to_string(), "10.9.0.2");
    assert_eq!(r[1].disposition, verdict_schema::Disposition::Deny);
}

#[test]
fn rate_limit_drops_records_counts_them_and_writes_loss_markers() {
    let config = PipelineConfig {
        rate_limit: 10,
        node_name: "gke-demo-default-pool-5dad52ed-k0h1".into(),
        ..PipelineConfig::default()
    };
    let mut node = Node::new(
        snapshot_from_dir("examples/allow-green", 1),
        config,
        EnforcementMode::Enforce,
    );
    for i in 0..25 {
        node.send(&attempt(
            GREEN,
            SERVICE,
            10_000 + i,
            8080,
            Protocol::Tcp,
            at(i64::from(i) * 10),
        ));
    }
    // Seven denied attempts aggregate into one record of count 7, emitted at 5.0 s (limit free again).
    for i in 0..7 {
        node.send(&attempt(
            RED,
            SERVICE,
            20_000 + i,
            8080,
            Protocol::Tcp,
            at(300 + i64::from(i)),
        ));
    }
    let (records, losses) = node.take();
    assert_eq!(records.len(), 10, "10 records per second");
    assert!(losses.is_empty(), "the interval is still open");
    // Loss intervals are whole wall-clock seconds: the drops began at 38.09 s, so the marker for
    // [38 s, 39 s) is written once the clock passes 39 s.
    node.pipeline.tick(at(900));
    assert!(node.take().1.is_empty());
    node.pipeline.tick(at(1_100));
    let (_, losses) = node.take();
    assert_eq!(losses.len(), 1);
    let m = &losses[0];
    assert_eq!(
        (m.reason, m.dropped_records, m.dropped_connections),
        (LossReason::RateLimit, 15, 15)
    );
    assert_eq!(m.disposition, Some(verdict_schema::Disposition::Allow));
    assert_eq!(m.node_name, "gke-demo-default-pool-5dad52ed-k0h1");
    assert_eq!(
        m.timestamp.unix_nanos() - m.interval_start.unix_nanos(),
        1_000_000_000
    );
    let c = node.pipeline.counters();
    assert_eq!(
        (c.ratelimit_dropped_logs, c.ratelimit_dropped_connections),
        (15, 15)
    );

    // Fill the limit again at 5.3 s, so the aggregated deny (7 connections) emitted then is dropped.
    for i in 0..10 {
        node.send(&attempt(
            GREEN,
            SERVICE,
            30_000 + i,
            8080,
            Protocol::Tcp,
            at(5_250 + i64::from(i)),
        ));
    }
    node.pipeline.tick(at(5_300));
    node.pipeline.tick(at(6_500));
    let (records, losses) = node.take();
    assert_eq!(
        records
            .iter()
            .filter(|r| r.disposition == verdict_schema::Disposition::Deny)
            .count(),
        0
    );
    let deny_loss = losses
        .iter()
        .find(|m| m.disposition == Some(verdict_schema::Disposition::Deny))
        .unwrap();
    assert_eq!(
        (deny_loss.dropped_records, deny_loss.dropped_connections),
        (1, 7),
        "a dropped aggregate counts its connections"
    );
    assert_eq!(
        node.pipeline.counters().ratelimit_dropped_connections,
        15 + 7
    );
}

#[test]
fn aggregation_table_overflow_is_dropped_and_counted() {
    let config = PipelineConfig {
        max_aggregation_entries: 2,
        ..PipelineConfig::default()
    };
    let mut node = Node::new(
        snapshot_from_dir("examples/allow-green", 1),
        config,
        EnforcementMode::Enforce,
    );
    for port in [8080, 8081, 8082, 8082] {
        node.send(&attempt(RED, SERVICE, 1, port, Protocol::Tcp, at(0)));
    }
    node.pipeline.tick(at(5_000));
    let (records, losses) = node.take();
    assert_eq!(records.len(), 2);
    assert_eq!(node.pipeline.counters().aggregation_failures, 2);
    assert_eq!(losses.len(), 1);
    assert_eq!(
        (
            losses[0].reason,
            losses[0].dropped_records,
            losses[0].dropped_connections
        ),
        (LossReason::AggregationOverflow, 2, 2)
    );
}

#[test]
fn audit_mode_logs_and_never_drops() {
    let mut node = Node::new(
        snapshot_from_dir("examples/allow-green", 1),
        PipelineConfig::default(),
        EnforcementMode::Audit,
    );
    assert!(
        node.send(&attempt(RED, SERVICE, 39610, 8080, Protocol::Tcp, at(0))),
        "audit never drops"
    );
    node.pipeline.tick(at(5_000));
    let r = node.records();
    assert_eq!(r.len(), 1);
    assert_eq!(
        r[0].disposition,
        verdict_schema::Disposition::Deny,
        "disposition is what policy decided"
    );
    let v = serde_json::to_value(&r[0]).unwrap();
    assert_eq!(v["enforcement"], "audit");
    assert_eq!(node.pipeline.counters().audit_denied_connections, 1);

    // Per namespace: globally enforcing, but the namespace is annotated audit.
    let text = std::fs::read_to_string(repo().join("examples/allow-green/cluster.yaml")).unwrap().replace(
        "kind: Namespace\nmetadata:\n  name: default\n",
        "kind: Namespace\nmetadata:\n  name: default\n  annotations: {verdict.dev/enforcement: audit}\n",
    );
    let policies =
        std::fs::read_to_string(repo().join("examples/allow-green/policies.yaml")).unwrap();
    let nl =
        std::fs::read_to_string(repo().join("examples/allow-green/network-logging.yaml")).unwrap();
    let mut node = Node::new(
        snapshot_from_str(&format!("{text}---\n{policies}---\n{nl}"), 1),
        PipelineConfig::default(),
        EnforcementMode::Enforce,
    );
    assert!(node.send(&attempt(RED, SERVICE, 39610, 8080, Protocol::Tcp, at(0))));
    node.pipeline.tick(at(5_000));
    assert_eq!(
        serde_json::to_value(&node.records()[0]).unwrap()["enforcement"],
        "audit"
    );
    // And an allowed connection in audit mode is marked too (nothing of it was enforced).
    node.send(&attempt(GREEN, SERVICE, 1, 8080, Protocol::Tcp, at(6_000)));
    assert_eq!(
        serde_json::to_value(&node.records()[0]).unwrap()["enforcement"],
        "audit"
    );
}

#[test]
fn udp_packets_form_connections_per_idle_window() {
    let mut node = Node::new(
        snapshot_from_dir("examples/allow-green", 1),
        PipelineConfig::default(),
        EnforcementMode::Enforce,
    );
    let pkt = |ms| attempt(GREEN, SERVICE, 5353, 8080, Protocol::Udp, at(ms));
    assert!(node.send(&pkt(0)));
    assert!(node.send(&pkt(10_000)));
    assert!(node.send(&pkt(39_000)), "idle 29 s: same connection");
    assert_eq!(node.records().len(), 1);
    assert!(node.send(&pkt(70_000)), "idle 31 s: a new connection");
    assert_eq!(node.records().len(), 1);
    // A denied UDP flow is decided once too: one deny record, however many packets.
    for ms in [0, 100, 200] {
        assert!(!node.send(&attempt(RED, SERVICE, 5353, 8080, Protocol::Udp, at(ms))));
    }
    node.pipeline.tick(at(80_000));
    let r = node.records();
    assert_eq!((r.len(), r[0].count), (1, 1));
    assert_eq!(node.pipeline.counters().denied_connections, 1);
}

#[test]
fn kubelet_probe_traffic_is_logged_with_an_empty_policy_name() {
    let mut node = Node::new(
        snapshot_from_dir("examples/kubelet-probe", 1),
        PipelineConfig::default(),
        EnforcementMode::Enforce,
    );
    let ts = Timestamp::parse("2021-04-01T12:42:32.1898720941Z").unwrap();
    assert!(node.send(&attempt(
        "10.88.1.1",
        "10.88.1.4",
        35848,
        15021,
        Protocol::Tcp,
        ts
    )));
    let r = node.records();
    let mut expected = seed_record("seed000_kubelet_probe.json");
    expected["timestamp"] = Value::from("2021-04-01T12:42:32.189872094Z");
    assert_eq!(serde_json::to_value(&r[0]).unwrap(), expected);
}

const BEFORE: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: old-owner, namespace: default, labels: {app: db}}\nspec: {nodeName: n1}\nstatus: {podIP: 10.7.0.5}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: client, namespace: default}\nspec: {nodeName: n1}\nstatus: {podIP: 10.7.0.9}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: db, namespace: default}\nspec: {podSelector: {matchLabels: {app: db}}}\n---\napiVersion: networking.gke.io/v1alpha1\nkind: NetworkLogging\nmetadata: {name: default}\nspec: {cluster: {allow: {log: true}, deny: {log: true}}}\n";

#[test]
fn late_events_are_attributed_with_the_state_they_were_decided_under() {
    let gen1 = snapshot_from_str(BEFORE, 1);
    // Generation 2: old-owner is gone and a new pod (not isolated) holds its IP.
    let gen2 = snapshot_from_str(
        &BEFORE.replace(
            "name: old-owner, namespace: default, labels: {app: db}",
            "name: new-owner, namespace: default, labels: {app: web}",
        ),
        2,
    );
    let config = PipelineConfig {
        generation_grace: Duration::from_secs(60),
        ..PipelineConfig::default()
    };
    let mut pipeline = LoggingPipeline::new(config, gen1.clone());
    let mut datapath =
        UserspaceDatapath::new(gen1, None, EnforcementMode::Enforce, DEFAULT_IDLE_WINDOW);
    let mut events = Vec::new();
    datapath.process(
        &attempt("10.7.0.9", "10.7.0.5", 1, 5432, Protocol::Tcp, at(0)),
        at(0),
        &mut events,
    );
    // The state changes before the pipeline sees the event.
    pipeline.install(gen2.clone(), at(10));
    for ev in events.drain(..) {
        pipeline.handle(ev, at(20));
    }
    pipeline.tick(at(5_000));
    let out = String::from_utf8(pipeline.take_output().records).unwrap();
    let r: PolicyActionRecord = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(
        r.dest.pod().unwrap().pod_name,
        "old-owner",
        "never the later holder of the IP"
    );
    // New decisions use generation 2: new-owner is not isolated, nothing logged.
    datapath.install(gen2);
    datapath.process(
        &attempt("10.7.0.9", "10.7.0.5", 2, 5432, Protocol::Tcp, at(30)),
        at(30),
        &mut events,
    );
    assert_eq!(events[0].generation, 2);
    for ev in events.drain(..) {
        pipeline.handle(ev, at(30));
    }
    pipeline.tick(at(6_000));
    assert!(pipeline.take_output().records.is_empty());
    // Past the grace period generation 1 is forgotten: counted, judged with the current one.
    let late = VerdictEvent {
        generation: 1,
        ..events_for(&snapshot_from_str(BEFORE, 1))
    };
    pipeline.tick(at(70_100));
    pipeline.handle(late, at(70_200));
    assert_eq!(pipeline.counters().unknown_generation_events, 1);
}

fn events_for(s: &Arc<PolicySnapshot>) -> VerdictEvent {
    let mut d = UserspaceDatapath::new(
        s.clone(),
        None,
        EnforcementMode::Enforce,
        DEFAULT_IDLE_WINDOW,
    );
    let mut ev = Vec::new();
    d.process(
        &attempt("10.7.0.9", "10.7.0.5", 9, 5432, Protocol::Tcp, at(0)),
        at(0),
        &mut ev,
    );
    ev.pop().unwrap()
}

#[test]
fn lost_events_become_loss_markers() {
    let mut node = Node::new(
        snapshot_from_dir("examples/allow-green", 1),
        PipelineConfig::default(),
        EnforcementMode::Enforce,
    );
    node.pipeline.lost_events(42, at(0));
    node.pipeline.tick(at(1_100));
    let (_, losses) = node.take();
    assert_eq!(losses.len(), 1);
    assert_eq!(
        (
            losses[0].reason,
            losses[0].disposition,
            losses[0].dropped_records
        ),
        (LossReason::LostEvents, None, 42)
    );
    assert_eq!(node.pipeline.counters().lost_events, 42);
}

#[test]
fn finish_emits_open_windows() {
    let mut node = Node::new(
        snapshot_from_dir("examples/allow-green", 1),
        PipelineConfig::default(),
        EnforcementMode::Enforce,
    );
    node.send(&attempt(RED, SERVICE, 1, 8080, Protocol::Tcp, at(0)));
    node.send(&attempt(RED, SERVICE, 2, 8080, Protocol::Tcp, at(1)));
    node.pipeline.finish(at(2));
    let r = node.records();
    assert_eq!((r.len(), r[0].count), (1, 2));
}
