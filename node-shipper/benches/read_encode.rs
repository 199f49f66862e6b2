//! The shipper's per-record path without the network: read `policy_action.log` (20,000
//! realistic lines, ~540 bytes each, in the page cache) through the input, group the lines into
//! batches of up to 4,096 records, and encode each batch as the protobuf message sent to the
//! collector (into a buffer of its exact size, as the stream's codec does).
//!
//! Run: `cargo bench -p verdict-shipper --bench read_encode`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use verdict_schema::proto::v1;
use verdict_shipper::input::{Input, LogFileInput};
use verdict_shipper::metrics::Metrics;

const LINES: usize = 20_000;

fn line(i: usize) -> String {
    let ns = ["default", "shop", "payments", "kube-system"][i % 4];
    let deny = i.is_multiple_of(3);
    let policies = if deny {
        String::new()
    } else {
        format!(r#","policies":[{{"name":"allow-{ns}","namespace":"{ns}"}}]"#)
    };
    format!(
        r#"{{"connection":{{"src_ip":"10.0.{}.{}","dest_ip":"10.1.0.{}","src_port":{},"dest_port":{},"protocol":"tcp","direction":"ingress"}},"disposition":"{}"{policies},"src":{{"pod_name":"client-{}","pod_namespace":"shop","namespace":"shop","workload_name":"client-5d9f","workload_kind":"ReplicaSet"}},"dest":{{"pod_name":"api-{}","pod_namespace":"{ns}","namespace":"{ns}","workload_name":"api-7c4b","workload_kind":"ReplicaSet"}},"count":1,"node_name":"bench-node","timestamp":"2026-01-01T00:{:02}:{:02}.{:09}Z"}}"#,
        i % 7,
        i % 11,
        i % 13,
        32768 + (i * 7919) % 28000,
        [80, 443, 8080, 5432][i % 4],
        if deny { "deny" } else { "allow" },
        i % 13,
        i % 11,
        (i / 60) % 60,
        i % 60,
        (i % 1000) * 1_000_000
    )
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy_action.log");
    let text: String = (0..LINES).map(|i| line(i) + "\n").collect();
    std::fs::write(&path, &text).unwrap();
    let node = v1::NodeIdentity {
        node_name: "bench-node".into(),
        cluster_name: "bench".into(),
        location: "europe-west1-b".into(),
        project_id: "bench".into(),
    };

    let mut g = c.benchmark_group("shipper");
    g.throughput(Throughput::Elements(LINES as u64));
    let all_metrics = Metrics::default();
    g.bench_function("read_batch_encode_20k_lines", |b| {
        b.iter(|| {
            let metrics = all_metrics.input(LogFileInput::POLICY_ACTION);
            let mut input = LogFileInput::open(
                LogFileInput::POLICY_ACTION,
                &path,
                None,
                1024 * 1024,
                metrics,
            )
            .unwrap();
            let (mut records, mut encoded) = (0usize, 0usize);
            let mut batch = Vec::with_capacity(4096);
            let send = |records: Vec<v1::Record>, source: &str| {
                let batch = v1::Batch {
                    schema_version: verdict_schema::proto::SCHEMA_VERSION as i32,
                    batch_id: 0,
                    node: Some(node.clone()),
                    source: Some(v1::Source {
                        id: source.to_owned(),
                        kind: v1::SourceKind::PolicyActionLog as i32,
                        path: path.display().to_string(),
                    }),
                    records,
                };
                let mut buf = bytes::BytesMut::with_capacity(batch.encoded_len());
                batch.encode_raw(&mut buf);
                buf.len()
            };
            loop {
                let runs = input.read(2 * 1024 * 1024).unwrap();
                if runs.is_empty() {
                    break;
                }
                for run in runs {
                    for e in run.entries {
                        records += 1;
                        batch.push(v1::Record {
                            sequence: e.sequence,
                            log_id: e.log_id as i32,
                            payload: Some(e.payload),
                        });
                        if batch.len() == 4096 {
                            encoded += send(std::mem::take(&mut batch), &run.source.id);
                        }
                    }
                    if !batch.is_empty() {
                        encoded += send(std::mem::take(&mut batch), &run.source.id);
                    }
                }
            }
            assert_eq!(records, LINES);
            black_box(encoded)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
