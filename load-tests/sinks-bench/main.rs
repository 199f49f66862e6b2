//! `sinks-bench`: what each sink sustains, and what a dead sink costs ingest.
//!
//! An in-process collector (default settings, Parquet in a temporary folder) gets the sinks of
//! `--sinks FILE` (`[[sinks]]` tables); `--nodes` simulated nodes stream `--records` policy-action
//! JSON lines over loopback gRPC. Two clocks start at the first batch: ingest stops when the last
//! batch is acknowledged (durable); each sink named by `--wait` stops when it has finished with
//! every record (its lag is 0). A sink's figure is therefore end to end with ingest running
//! concurrently: it cannot exceed the ingest rate, and a sink slower than ingest shows its own
//! rate. Prints one line of `key=value` pairs (load-tests/sinks-bench.sh makes a table).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use tokio::sync::mpsc;
use verdict_collector::{Collector, Config};
use verdict_schema::proto::v1;

#[derive(Debug, Parser)]
#[command(
    name = "sinks-bench",
    about = "Sink throughput and the effect of a dead sink"
)]
struct Args {
    /// TOML file with `[[sinks]]` (none: no sinks).
    #[arg(long)]
    sinks: Option<std::path::PathBuf>,
    /// Sinks whose catch-up is timed (all of `--sinks` that are not dead, typically).
    #[arg(long)]
    wait: Vec<String>,
    /// Simulated nodes (one gRPC stream each).
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// Records in total.
    #[arg(long, default_value_t = 400_000)]
    records: u64,
    /// Records per batch.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Give up waiting for a sink after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

const NAMESPACES: [&str; 8] = [
    "shop",
    "payments",
    "default",
    "kube-system",
    "search",
    "auth",
    "ledger",
    "web",
];

fn line(node: &str, seq: u64, unix_nanos: i64) -> String {
    let ns = NAMESPACES[(seq % 8) as usize];
    let deny = seq.is_multiple_of(5);
    let policies = if deny {
        String::new()
    } else {
        format!(r#","policies":[{{"name":"allow-{ns}","namespace":"{ns}"}}]"#)
    };
    let t = chrono::DateTime::from_timestamp_nanos(unix_nanos)
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    format!(
        r#"{{"connection":{{"src_ip":"10.8.{a}.{b}","dest_ip":"10.9.{c}.{d}","src_port":{sp},"dest_port":{dp},"protocol":"tcp","direction":"ingress"}},"disposition":"{disp}"{policies},"src":{{"pod_name":"client-{c}-{b}","pod_namespace":"web","namespace":"web","workload_name":"client-5d9f","workload_kind":"ReplicaSet"}},"dest":{{"pod_name":"api-{d}","pod_namespace":"{ns}","namespace":"{ns}","workload_name":"api-7c4b","workload_kind":"ReplicaSet"}},"count":1,"node_name":"{node}","timestamp":"{t}"}}"#,
        a = seq % 13,
        b = seq % 251,
        c = seq % 7,
        d = seq % 97,
        sp = 32768 + seq % 28000,
        dp = [80, 443, 8080, 5432][(seq % 4) as usize],
        disp = if deny { "deny" } else { "allow" },
    )
}

async fn run_node(addr: SocketAddr, node: usize, records: u64, batch: usize) -> Result<()> {
    let node_name = format!("bench-node-{node:03}");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut client = v1::ingest_client::IngestClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let (tx, mut rx) = mpsc::channel::<v1::Batch>(8);
    let outbound = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut responses = client.stream(outbound).await?.into_inner();
    let identity = v1::NodeIdentity {
        node_name: node_name.clone(),
        cluster_name: "bench".into(),
        location: "europe-west1-b".into(),
        project_id: "bench-project".into(),
    };
    let source = v1::Source {
        id: format!("{node_name}:gen-1"),
        kind: v1::SourceKind::PolicyActionLog as i32,
        path: "/var/log/network/policy_action.log".into(),
    };
    let sender = tokio::spawn(async move {
        let mut seq = 0u64;
        let mut batch_id = 0u64;
        while seq < records {
            let n = (batch as u64).min(records - seq);
            let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
            let recs = (0..n)
                .map(|i| {
                    let s = seq + i + 1;
                    v1::Record {
                        sequence: s,
                        log_id: v1::LogId::PolicyAction as i32,
                        payload: Some(v1::record::Payload::JsonLine(
                            line(&node_name, s, now + i as i64 * 1000)
                                .into_bytes()
                                .into(),
                        )),
                    }
                })
                .collect();
            batch_id += 1;
            let b = v1::Batch {
                schema_version: v1::SchemaVersion::V1 as i32,
                batch_id,
                node: Some(identity.clone()),
                source: Some(source.clone()),
                records: recs,
            };
            if tx.send(b).await.is_err() {
                break;
            }
            seq += n;
        }
    });
    let mut acked = 0;
    while acked < records {
        let r = responses
            .message()
            .await?
            .context("the collector ended the stream")?;
        if let Some(rej) = r.rejection {
            bail!("batch {} rejected: {}", r.batch_id, rej.message);
        }
        acked += r.stored + r.duplicates;
    }
    sender.await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let mut config = Config {
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
    config.grpc.listen = "127.0.0.1:0".parse()?;
    config.http.listen = "127.0.0.1:0".parse()?;
    config.compaction.enabled = false;
    if let Some(path) = &args.sinks {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let text = text.replace("@TMP@", &dir.path().display().to_string());
        let table: toml::Table = text.parse()?;
        let raw: Vec<toml::Table> = table
            .get("sinks")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|v| v.as_table().cloned()).collect())
            .unwrap_or_default();
        config.sinks = verdict_collector::sinks::registry::parse_definitions(&raw);
    }
    let (collector, _) = Collector::open(config).await?;
    let collector = std::sync::Arc::new(collector);
    let report = collector.sinks().status();
    if let Some(bad) = report.iter().find(|s| s.state == "rejected") {
        bail!("sink {} rejected: {:?}", bad.name, bad.error);
    }
    let listeners = verdict_collector::Listeners {
        grpc: tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        http: tokio::net::TcpListener::bind("127.0.0.1:0").await?,
    };
    let addr = listeners.grpc.local_addr()?;
    let stop = verdict_service::shutdown::CancellationToken::new();
    let server = {
        let c = std::sync::Arc::clone(&collector);
        let stop = stop.clone();
        tokio::spawn(async move { c.serve(listeners, stop).await })
    };

    let per_node = args.records / args.nodes as u64;
    let total = per_node * args.nodes as u64;
    let start = Instant::now();
    let nodes: Vec<_> = (0..args.nodes)
        .map(|n| tokio::spawn(run_node(addr, n, per_node, args.batch)))
        .collect();
    for n in nodes {
        n.await??;
    }
    let ingest = start.elapsed();
    let mut out = format!(
        "records={total} ingest_s={:.2} ingest_records_per_s={:.0}",
        ingest.as_secs_f64(),
        total as f64 / ingest.as_secs_f64()
    );
    let deadline = start + Duration::from_secs(args.timeout);
    for name in &args.wait {
        loop {
            let s = collector
                .sinks()
                .status()
                .into_iter()
                .find(|s| &s.name == name)
                .with_context(|| format!("no sink {name}"))?;
            if s.lag_records == Some(0) {
                let t = start.elapsed();
                out.push_str(&format!(
                    " sink_{name}_s={:.2} sink_{name}_records_per_s={:.0}",
                    t.as_secs_f64(),
                    total as f64 / t.as_secs_f64()
                ));
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "sink {name} did not catch up within {}s: {s:?}",
                    args.timeout
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    for s in collector.sinks().status() {
        out.push_str(&format!(" lag_{}={}", s.name, s.lag_records.unwrap_or(-1)));
    }
    println!("{out}");
    stop.cancel();
    server.await??;
    collector.close().await?;
    Ok(())
}
