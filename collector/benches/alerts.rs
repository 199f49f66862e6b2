//! The alerting hot path, per applied batch of 4,096 flow rows (200 destination namespaces,
//! 2,000 source IPs, a third denied): the log-based metrics' counting, the six default
//! detectors' counting, and one evaluation of every rule over the scopes that traffic creates.
//! The whole-system cost (CPU at 200,000 records/s, detection quality) is measured by
//! `load-tests/alert-quality.sh`.
//!
//! Run: `cargo bench -p verdict-collector --bench alerts`

use std::hint::black_box;

use arrow_array::RecordBatch;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use verdict_collector::alerts::engine::{Engine, EngineSettings};
use verdict_collector::alerts::flow_metrics::FlowMetrics;
use verdict_collector::config::alerts::{FlowMetricsConfig, default_rules};
use verdict_schema::Timestamp;
use verdict_schema::flat_schema::log_entries_to_batch;
use verdict_schema::log_entry::{LogEntry, NodeIdentity};

const ROWS: usize = 4096;
const NOW: i64 = 1_780_000_000_000_000_000;

fn batch(offset: usize) -> RecordBatch {
    let node = NodeIdentity {
        project_id: "p".into(),
        location: "l".into(),
        cluster_name: "c".into(),
        node_name: "n1".into(),
    };
    let entries: Vec<LogEntry> = (0..ROWS)
        .map(|k| {
            let i = k + offset;
            let deny = i.is_multiple_of(3);
            let ns = format!("ns-{}", i % 200);
            let src = format!("10.{}.{}.{}", i % 2000 / 250, i % 250, 7);
            let port = [80, 443, 8080, 5432][i % 4];
            let mut json = serde_json::json!({
                "connection": {"src_ip": src, "dest_ip": format!("10.64.{}.{}", i % 200, i % 50),
                    "src_port": 30000 + i % 30000, "dest_port": port,
                    "protocol": "tcp", "direction": "ingress"},
                "disposition": if deny { "deny" } else { "allow" },
                "src": {"pod_name": format!("client-{}", i % 500), "pod_namespace": "clients",
                    "namespace": "clients", "workload_name": "client", "workload_kind": "ReplicaSet"},
                "dest": {"pod_name": format!("api-{}", i % 50), "pod_namespace": ns, "namespace": ns,
                    "workload_name": "api", "workload_kind": "ReplicaSet"},
                "count": if deny { 1 + i % 4 } else { 1 }, "node_name": "n1",
                "timestamp": Timestamp::from_unix_nanos(NOW - 6_000_000_000),
            });
            if !deny {
                json["policies"] = serde_json::json!([{"name": "allow", "namespace": ns}]);
            }
            let record = serde_json::from_value(json).expect("a valid record");
            LogEntry::policy_action(record, &node, Timestamp::from_unix_nanos(NOW), format!("{i:032x}"))
        })
        .collect();
    log_entries_to_batch(&entries).expect("a batch")
}

fn engine() -> Engine {
    Engine::new(
        &default_rules(),
        EngineSettings {
            max_lateness_nanos: 120_000_000_000,
            resend_nanos: 60_000_000_000,
        },
    )
}

fn bench(c: &mut Criterion) {
    let batches: Vec<RecordBatch> = (0..4).map(|i| batch(i * ROWS)).collect();
    let mut g = c.benchmark_group("alerts");
    g.throughput(Throughput::Elements(ROWS as u64));
    let mut registry = verdict_service::metrics::Registry::default();
    let metrics = FlowMetrics::register(&mut registry, &FlowMetricsConfig::default());
    let mut i = 0;
    g.bench_function("flow_metrics_observe_4096_rows", |b| {
        b.iter(|| {
            i += 1;
            metrics.observe_flows(black_box(&batches[i % 4])).unwrap();
        })
    });
    let mut e = engine();
    g.bench_function("detectors_observe_4096_rows", |b| {
        b.iter(|| {
            i += 1;
            e.observe_flows(black_box(&batches[i % 4])).unwrap();
        })
    });
    g.finish();
    let mut e = engine();
    for b in &batches {
        e.observe_flows(b).unwrap();
    }
    // At the same instant every time: the windows keep their rows and no scope goes idle.
    e.evaluate(NOW);
    c.bench_function(
        &format!("alerts/evaluate_{}_scopes", e.tracked_scopes()),
        |b| b.iter(|| black_box(e.evaluate(NOW))),
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
