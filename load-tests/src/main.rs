//! `collector-load`: end-to-end throughput of the collector's storage path.
//!
//! N simulated nodes stream realistic policy-action records (JSON lines as a tailing shipper
//! forwards them: allow and deny, dozens of namespaces, hundreds of workloads, thousands of
//! pods, service ports, ephemeral source ports, kubelet probes, aggregated denies, egress to
//! external IPs) over loopback gRPC into an in-process collector with its default settings
//! (WAL fsync per group commit, zstd Parquet, rollups) storing in a local folder. The clock
//! runs from the first batch sent until the last record is in a committed Parquet file.
//!
//! Then, in the same process and on the same rows (read back from the committed files), a bare
//! arrow-rs `ArrowWriter` writes them again: the ceiling the collector is measured against.
//!
//! Prints one line of `key=value` pairs (load-tests/collector-bench.sh turns runs into a table).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use arrow_array::RecordBatch;
use clap::Parser;
use prost::Message as _;
use tokio::sync::mpsc;
use verdict_collector::{Collector, Config, Table};
use verdict_schema::proto::v1;

#[derive(Debug, Parser)]
#[command(
    name = "collector-load",
    about = "End-to-end collector throughput to committed Parquet"
)]
struct Args {
    /// Simulated nodes (one gRPC stream each).
    #[arg(long, default_value_t = 8)]
    nodes: usize,
    /// Records each node sends.
    #[arg(long, default_value_t = 500_000)]
    records_per_node: u64,
    /// Records per batch.
    #[arg(long, default_value_t = 2_000)]
    batch: usize,
    /// Unacknowledged batches per stream.
    #[arg(long, default_value_t = 4)]
    in_flight: usize,
    /// Storage URL (default: a fresh temporary folder).
    #[arg(long)]
    storage: Option<String>,
    /// Rows the ceiling writer is timed on (read back from the committed files).
    #[arg(long, default_value_t = 2_000_000)]
    ceiling_rows: usize,
}

/// splitmix64: a small deterministic generator (the workload is the same on every run).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Skewed towards small values (a few hot connections, a long tail).
    fn skewed(&mut self, n: u64) -> u64 {
        let a = self.below(n);
        let b = self.below(n);
        a.min(b).min(self.below(n))
    }
}

struct Pod {
    name: String,
    namespace: String,
    workload: String,
    ip: String,
    node: usize,
}

/// A connection shape with its JSON pre-rendered around two fixed-width slots: the source port
/// (ephemeral ports are 5 digits) and the timestamp (RFC 3339 with 9 fractional digits).
struct Template {
    head: Vec<u8>,
    middle: Vec<u8>,
    tail: Vec<u8>,
}

const SERVICE_PORTS: [u16; 9] = [80, 443, 8080, 8443, 5432, 6379, 9090, 3306, 53];

fn cluster(nodes: usize, rng: &mut Rng) -> Vec<Pod> {
    let mut pods = Vec::new();
    for n in 0..40 {
        let ns = format!("team-{n:02}");
        for w in 0..10 {
            let workload = format!("svc-{n:02}-{w}-{:08x}", rng.next() as u32);
            for p in 0..10 {
                let i = pods.len();
                pods.push(Pod {
                    name: format!("{workload}-{:05x}", (rng.next() as u32) & 0xfffff),
                    namespace: ns.clone(),
                    workload: workload.clone(),
                    ip: format!("10.{}.{}.{}", 64 + i / 65536, (i / 256) % 256, i % 256),
                    node: (n * 10 + w + p) % nodes,
                });
            }
        }
    }
    pods
}

fn pod_json(p: &Pod) -> String {
    format!(
        r#"{{"pod_name":"{}","pod_namespace":"{ns}","namespace":"{ns}","workload_name":"{}","workload_kind":"ReplicaSet"}}"#,
        p.name,
        p.workload,
        ns = p.namespace
    )
}

/// Connection templates for `node` (records are written by the node of the enforced pod).
fn templates(pods: &[Pod], node: usize, node_name: &str, rng: &mut Rng) -> Vec<Template> {
    let local: Vec<&Pod> = pods.iter().filter(|p| p.node == node).collect();
    let mut out = Vec::new();
    for _ in 0..20_000 {
        let kind = rng.below(100);
        let enforced = local[rng.skewed(local.len() as u64) as usize];
        let (src, dest, src_ip, dest_ip, direction, port, disposition, policies, count, protocol);
        if kind < 3 {
            // kubelet probe from the node
            let node_ip = format!("10.128.0.{}", 2 + node);
            src = format!(r#"{{"instance":"{node_ip}"}}"#);
            dest = pod_json(enforced);
            src_ip = node_ip;
            dest_ip = enforced.ip.clone();
            direction = "ingress";
            port = 8080;
            disposition = "allow";
            policies = r#","policies":[{"name":""}]"#.to_owned();
            count = 1;
            protocol = "tcp";
        } else if kind < 13 {
            // egress to an external address
            let ext = format!("203.0.{}.{}", rng.below(4), 1 + rng.below(250));
            src = pod_json(enforced);
            dest = format!(r#"{{"instance":"{ext}"}}"#);
            src_ip = enforced.ip.clone();
            dest_ip = ext;
            direction = "egress";
            port = if rng.below(2) == 0 { 443 } else { 80 };
            let deny = rng.below(100) < 30;
            disposition = if deny { "deny" } else { "allow" };
            policies = if deny {
                String::new()
            } else {
                format!(
                    r#","policies":[{{"name":"allow-egress","namespace":"{}"}}]"#,
                    enforced.namespace
                )
            };
            count = if deny { 1 + rng.skewed(20) } else { 1 };
            protocol = "tcp";
        } else {
            // pod to pod ingress, mostly within a namespace
            let peer = &pods[rng.skewed(pods.len() as u64) as usize];
            src = pod_json(peer);
            dest = pod_json(enforced);
            src_ip = peer.ip.clone();
            dest_ip = enforced.ip.clone();
            direction = "ingress";
            port = SERVICE_PORTS[rng.below(SERVICE_PORTS.len() as u64) as usize];
            let deny = rng.below(100) < 12;
            disposition = if deny { "deny" } else { "allow" };
            policies = if deny {
                String::new()
            } else if rng.below(4) == 0 {
                format!(
                    r#","policies":[{{"name":"allow-{}","namespace":"{ns}"}},{{"name":"default-allow","namespace":"{ns}"}}]"#,
                    peer.namespace,
                    ns = enforced.namespace
                )
            } else {
                format!(
                    r#","policies":[{{"name":"allow-{}","namespace":"{}"}}]"#,
                    peer.namespace, enforced.namespace
                )
            };
            count = if deny { 1 + rng.skewed(10) } else { 1 };
            protocol = if port == 53 { "udp" } else { "tcp" };
        }
        out.push(Template {
            head: format!(r#"{{"connection":{{"src_ip":"{src_ip}","dest_ip":"{dest_ip}","src_port":"#)
                .into_bytes(),
            middle: format!(
                r#","dest_port":{port},"protocol":"{protocol}","direction":"{direction}"}},"disposition":"{disposition}"{policies},"src":{src},"dest":{dest},"count":{count},"node_name":"{node_name}","timestamp":""#
            )
            .into_bytes(),
            tail: b"\"}".to_vec(),
        });
    }
    out
}

/// Writes `n` as exactly `width` decimal digits.
fn put_digits(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for i in (0..width).rev() {
        out[start + i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// RFC 3339 UTC with nine fractional digits (30 bytes).
fn put_timestamp(out: &mut Vec<u8>, unix_nanos: i64) {
    let secs = unix_nanos.div_euclid(1_000_000_000);
    let nanos = unix_nanos.rem_euclid(1_000_000_000) as u64;
    let t = chrono::DateTime::from_timestamp(secs, 0).expect("in range");
    use chrono::{Datelike, Timelike};
    put_digits(out, t.year() as u64, 4);
    out.push(b'-');
    put_digits(out, u64::from(t.month()), 2);
    out.push(b'-');
    put_digits(out, u64::from(t.day()), 2);
    out.push(b'T');
    put_digits(out, u64::from(t.hour()), 2);
    out.push(b':');
    put_digits(out, u64::from(t.minute()), 2);
    out.push(b':');
    put_digits(out, u64::from(t.second()), 2);
    out.push(b'.');
    put_digits(out, nanos, 9);
    out.push(b'Z');
}

fn now_nanos() -> i64 {
    verdict_schema::Timestamp::now().unix_nanos()
}

struct NodeStats {
    latencies_us: Vec<u64>,
    wire_bytes: u64,
    json_bytes: u64,
}

/// One node: streams `total` records, `in_flight` batches unacknowledged at most.
async fn run_node(
    addr: SocketAddr,
    node: usize,
    templates: Vec<Template>,
    args: Arc<Args>,
    sent: Arc<AtomicU64>,
) -> Result<NodeStats> {
    let node_name = format!("gke-bench-pool-{node:04}");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut client = v1::ingest_client::IngestClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let (tx, mut rx) = mpsc::channel::<v1::Batch>(args.in_flight);
    let outbound = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let (sent_at_tx, mut sent_at_rx) = mpsc::unbounded_channel::<(u64, Instant)>();
    let mut responses = client.stream(outbound).await?.into_inner();
    let identity = v1::NodeIdentity {
        node_name: node_name.clone(),
        cluster_name: "bench-cluster".into(),
        location: "europe-west1-b".into(),
        project_id: "bench-project".into(),
    };
    let source = v1::Source {
        id: format!("{node_name}:policy_action.log:gen-1"),
        kind: v1::SourceKind::PolicyActionLog as i32,
        path: "/var/log/network/policy_action.log".into(),
    };
    let total = args.records_per_node;
    let batch_size = args.batch as u64;
    // A shipper's window: at most `in_flight` batches sent and not yet acknowledged.
    let window = Arc::new(tokio::sync::Semaphore::new(args.in_flight));
    let sender = {
        let sent = Arc::clone(&sent);
        let window = Arc::clone(&window);
        tokio::spawn(async move {
            let mut rng = Rng(0x5eed_0000 + node as u64);
            let mut offset = 0u64;
            let mut json_bytes = 0u64;
            let mut wire_bytes = 0u64;
            let mut line = Vec::with_capacity(1024);
            let mut next = 0u64;
            let mut batch_id = 0u64;
            while next < total {
                match window.acquire().await {
                    Ok(p) => p.forget(),
                    Err(_) => break,
                }
                let n = batch_size.min(total - next);
                let base = now_nanos();
                let mut records = Vec::with_capacity(n as usize);
                for i in 0..n {
                    let t = &templates[rng.skewed(templates.len() as u64) as usize];
                    line.clear();
                    line.extend_from_slice(&t.head);
                    put_digits(&mut line, 32768 + rng.below(28232), 5);
                    line.extend_from_slice(&t.middle);
                    put_timestamp(&mut line, base + (i as i64) * 997 + rng.below(900) as i64);
                    line.extend_from_slice(&t.tail);
                    offset += line.len() as u64 + 1;
                    json_bytes += line.len() as u64 + 1;
                    records.push(v1::Record {
                        sequence: offset,
                        log_id: v1::LogId::PolicyAction as i32,
                        payload: Some(v1::record::Payload::JsonLine(line.clone().into())),
                    });
                }
                batch_id += 1;
                let batch = v1::Batch {
                    schema_version: v1::SchemaVersion::V1 as i32,
                    batch_id,
                    node: Some(identity.clone()),
                    source: Some(source.clone()),
                    records,
                };
                wire_bytes += batch.encoded_len() as u64;
                let _ = sent_at_tx.send((batch_id, Instant::now()));
                if tx.send(batch).await.is_err() {
                    break;
                }
                next += n;
                sent.fetch_add(n, Ordering::Relaxed);
            }
            (json_bytes, wire_bytes)
        })
    };
    let mut latencies_us = Vec::new();
    let mut acked = 0u64;
    while acked < total {
        let r = responses
            .message()
            .await?
            .context("the collector ended the stream")?;
        if let Some(rej) = r.rejection {
            bail!("batch {} rejected: {}", r.batch_id, rej.message);
        }
        let (id, at) = sent_at_rx.recv().await.context("send times")?;
        if id != r.batch_id {
            bail!("answer for batch {} while {id} was next", r.batch_id);
        }
        latencies_us.push(at.elapsed().as_micros() as u64);
        window.add_permits(1);
        acked += r.stored + r.duplicates;
    }
    let (json_bytes, wire_bytes) = sender.await?;
    Ok(NodeStats {
        latencies_us,
        wire_bytes,
        json_bytes,
    })
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Times a bare `ArrowWriter` over `batches` with `props`; returns (rows/s, bytes).
fn time_writer(
    batches: &[RecordBatch],
    props: parquet::file::properties::WriterProperties,
) -> Result<(f64, usize)> {
    let schema = batches[0].schema();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let started = Instant::now();
    let mut out = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, schema, Some(props))?;
    for b in batches {
        w.write(b)?;
    }
    w.close()?;
    let secs = started.elapsed().as_secs_f64();
    Ok((rows as f64 / secs, out.len()))
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Arc::new(Args::parse());
    let dir = tempfile::tempdir()?;
    let mut config = Config {
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
    config.storage.url = args.storage.clone();
    config.compaction.enabled = false;
    config.retention.flows = Duration::ZERO;
    let parquet_cfg = config.parquet.clone();
    let (collector, _) = Collector::open(config).await?;
    let collector = Arc::new(collector);
    let listeners = verdict_collector::Listeners {
        grpc: tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        http: tokio::net::TcpListener::bind("127.0.0.1:0").await?,
    };
    let addr = listeners.grpc.local_addr()?;
    let stop = verdict_service::shutdown::CancellationToken::new();
    let server = {
        let c = Arc::clone(&collector);
        let stop = stop.clone();
        tokio::spawn(async move { c.serve(listeners, stop).await })
    };

    let mut rng = Rng(42);
    let pods = cluster(args.nodes, &mut rng);
    let sent = Arc::new(AtomicU64::new(0));
    let mut nodes = Vec::new();
    let prepared: Vec<Vec<Template>> = (0..args.nodes)
        .map(|n| templates(&pods, n, &format!("gke-bench-pool-{n:04}"), &mut rng))
        .collect();
    let started = Instant::now();
    for (n, t) in prepared.into_iter().enumerate() {
        nodes.push(tokio::spawn(run_node(
            addr,
            n,
            t,
            Arc::clone(&args),
            Arc::clone(&sent),
        )));
    }
    let mut latencies = Vec::new();
    let (mut wire, mut json) = (0u64, 0u64);
    for n in nodes {
        let s = n.await??;
        latencies.extend(s.latencies_us);
        wire += s.wire_bytes;
        json += s.json_bytes;
    }
    let acked_at = started.elapsed();
    collector.flush().await?;
    let committed_at = started.elapsed();
    let total = args.records_per_node * args.nodes as u64;

    let flows = collector.committed_files(Table::Flows);
    let rows: u64 = flows.iter().map(|f| f.rows).sum();
    if rows != total {
        bail!("{rows} rows committed, {total} sent");
    }
    let flow_bytes: u64 = flows.iter().map(|f| f.bytes).sum();
    let rollups = collector.committed_files(Table::Rollups);
    let rollup_bytes: u64 = rollups.iter().map(|f| f.bytes).sum();
    latencies.sort_unstable();

    // Compacted size: one file per hour, as the lake settles.
    let compacted_bytes = {
        let future =
            verdict_schema::Timestamp::from_unix_nanos(now_nanos() + 2 * 3_600_000_000_000);
        while collector.compact(future).await? > 0 {}
        collector
            .committed_files(Table::Flows)
            .iter()
            .map(|f| f.bytes)
            .sum::<u64>()
    };

    // The ceiling: the same rows through a bare ArrowWriter, single-threaded.
    let mut sample: Vec<RecordBatch> = Vec::new();
    let mut sample_rows = 0;
    for b in collector.read_committed(Table::Flows).await? {
        if sample_rows >= args.ceiling_rows {
            break;
        }
        sample_rows += b.num_rows();
        sample.push(b);
    }
    let default_props = parquet::file::properties::WriterProperties::builder().build();
    let zstd_props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(
            parquet::basic::ZstdLevel::try_new(parquet_cfg.zstd_level)?,
        ))
        .build();
    let (ceiling_default, _) = time_writer(&sample, default_props)?;
    let (ceiling_zstd, zstd_bytes) = time_writer(&sample, zstd_props)?;
    // Where a flush's CPU goes, on the same rows: sorting, rolling up, encoding.
    let ours_props =
        verdict_collector::parquet_file::writer_properties(&parquet_cfg, Table::Flows, sample_rows);
    let t = Instant::now();
    let sorted = verdict_collector::parquet_file::sort_rows(Table::Flows, &sample)?;
    let sort_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let _rollup = verdict_collector::rollup::aggregate_flows(&sample)?;
    let rollup_s = t.elapsed().as_secs_f64();
    let (ours_writer, _) = time_writer(std::slice::from_ref(&sorted), ours_props)?;
    let ours_with_sort = sample_rows as f64 / (sort_s + sample_rows as f64 / ours_writer);
    eprintln!(
        "flush cost per million rows: sort {:.2}s, rollup {:.2}s, encode {:.2}s",
        sort_s * 1e6 / sample_rows as f64,
        rollup_s * 1e6 / sample_rows as f64,
        1e6 / ours_writer
    );

    stop.cancel();
    server.await??;
    collector.close().await?;

    let e2e = total as f64 / committed_at.as_secs_f64();
    println!(
        "nodes={} records={} batch={} in_flight={} acked_s={:.2} committed_s={:.2} records_per_s={:.0} \
         ack_p50_ms={:.1} ack_p99_ms={:.1} json_bytes_per_record={:.1} wire_bytes_per_record={:.1} \
         stored_bytes_per_record={:.2} compacted_bytes_per_record={:.2} rollup_bytes_per_record={:.3} \
         files={} ceiling_default_rows_per_s={:.0} ceiling_zstd_rows_per_s={:.0} ceiling_zstd_bytes_per_record={:.2} \
         our_writer_rows_per_s={:.0} ratio_to_zstd_ceiling={:.3} ratio_to_default_ceiling={:.3} cores={}",
        args.nodes,
        total,
        args.batch,
        args.in_flight,
        acked_at.as_secs_f64(),
        committed_at.as_secs_f64(),
        e2e,
        percentile(&latencies, 0.50) as f64 / 1000.0,
        percentile(&latencies, 0.99) as f64 / 1000.0,
        json as f64 / total as f64,
        wire as f64 / total as f64,
        flow_bytes as f64 / total as f64,
        compacted_bytes as f64 / total as f64,
        rollup_bytes as f64 / total as f64,
        flows.len(),
        ceiling_default,
        ceiling_zstd,
        zstd_bytes as f64 / sample_rows as f64,
        ours_with_sort,
        e2e / ceiling_zstd,
        e2e / ceiling_default,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    Ok(())
}
