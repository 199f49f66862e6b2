//! `query-lake-gen`: writes a synthetic policy-action lake straight into the collector's layout
//! (`policy_action/dt=…/hour=…/FILE.parquet` plus a commit log naming every file), for the
//! query benchmark (`load-tests/query-bench.sh`). Files are encoded by the collector's own
//! `parquet_file::encode` with the default `[parquet]` settings (sort order, dictionaries,
//! statistics, bloom filters), in chunks of `flush.max_rows` rows, as its flushes write them.
//!
//! The traffic: 20 namespaces × 10 workloads × 5 pods on 50 nodes; 80 % allows (one or two
//! policies each), 20 % denies (count 1–10); 60 % ingress; one destination in ten outside the
//! cluster. Deterministic for a given `--records`/`--hours`/`--seed`.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use verdict_collector::config::{Config, ParquetConfig};
use verdict_collector::manifest::{Change, CommitKind, CommitLog, FileEntry};
use verdict_collector::storage::Storage;
use verdict_collector::{Hour, Table};
use verdict_schema::flat_schema::{Envelope, LogEntryBatchBuilder};
use verdict_schema::log_entry::{ResourceLabels, insert_id, log_name};
use verdict_schema::record::{
    Connection, Direction, Disposition, Endpoint, PodEndpoint, PolicyActionRecord, PolicyRef,
    Protocol,
};
use verdict_schema::{Severity, Timestamp};

#[derive(Debug, Parser)]
struct Args {
    /// The lake folder (the collector's storage URL); must be empty or absent.
    #[arg(long)]
    dir: PathBuf,
    /// Records to write.
    #[arg(long, default_value_t = 100_000_000)]
    records: u64,
    /// Hours of event time the records spread over, from --start.
    #[arg(long, default_value_t = 24)]
    hours: u64,
    /// First hour (RFC 3339).
    #[arg(long, default_value = "2026-11-01T00:00:00Z")]
    start: String,
    /// Rows per file (the collector's flush.max_rows).
    #[arg(long, default_value_t = 2_000_000)]
    file_rows: u64,
    /// The collector instance id the commit log belongs to (use the same for the collector).
    #[arg(long, default_value = "bench")]
    instance_id: String,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

const NAMESPACES: [&str; 20] = [
    "shop",
    "payments",
    "frontend",
    "checkout",
    "cart",
    "search",
    "auth",
    "billing",
    "inventory",
    "catalog",
    "ads",
    "recommend",
    "email",
    "shipping",
    "kube-system",
    "monitoring",
    "logging",
    "data",
    "ml",
    "staging",
];
const WORKLOADS: [&str; 10] = [
    "api",
    "web",
    "worker",
    "db",
    "cache",
    "queue",
    "gateway",
    "scheduler",
    "exporter",
    "proxy",
];
const NODES: usize = 50;

/// xorshift64*: fast, deterministic, good enough for synthetic traffic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A pod of the synthetic cluster.
struct Pod {
    endpoint: PodEndpoint,
    ip: IpAddr,
    node: usize,
    namespace: usize,
    workload: usize,
}

fn cluster() -> Vec<Pod> {
    let mut pods = Vec::new();
    for (n, ns) in NAMESPACES.iter().enumerate() {
        for (w, wl) in WORKLOADS.iter().enumerate() {
            let rs = format!("{wl}-{:08x}", (n * 31 + w) * 2_654_435_761 % 0xffff_ffff);
            for _ in 0..5 {
                let i = pods.len();
                pods.push(Pod {
                    endpoint: PodEndpoint {
                        pod_name: format!("{rs}-{:05x}", (i * 7919) % 0xfffff),
                        pod_namespace: (*ns).to_owned(),
                        namespace: Some((*ns).to_owned()),
                        workload_name: Some(rs.clone()),
                        workload_kind: Some("ReplicaSet".to_owned()),
                    },
                    ip: IpAddr::V4(Ipv4Addr::new(10, 84, (i / 250) as u8, (i % 250) as u8 + 2)),
                    node: (i * 13) % NODES,
                    namespace: n,
                    workload: w,
                });
            }
        }
    }
    pods
}

/// The synthetic cluster and what every record shares.
struct Traffic<'a> {
    pods: &'a [Pod],
    labels: &'a [ResourceLabels],
    log: &'a str,
    per_hour: u64,
    seed: u64,
}

/// Rows `first..first+rows` of the hour starting at `hour_start`, in time order.
fn chunk(
    traffic: &Traffic<'_>,
    hour_start: i64,
    first: u64,
    rows: u64,
) -> anyhow::Result<arrow_array::RecordBatch> {
    let Traffic {
        pods,
        labels,
        log,
        per_hour,
        seed,
    } = *traffic;
    let mut rng =
        Rng(seed ^ (hour_start as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ first.wrapping_add(1));
    let mut b = LogEntryBatchBuilder::with_capacity(rows as usize);
    let step = 3_600_000_000_000 / per_hour.max(1) as i64;
    for k in first..first + rows {
        let t = Timestamp::from_unix_nanos(
            hour_start + k as i64 * step + (rng.below(step.max(1) as u64) as i64),
        );
        let src = &pods[rng.below(pods.len() as u64) as usize];
        let external = rng.below(10) == 0;
        let dest = &pods[rng.below(pods.len() as u64) as usize];
        let ingress = !external && rng.below(10) < 6;
        let deny = rng.below(10) < 2;
        let enforced = if ingress { dest } else { src };
        let policies = (!deny).then(|| {
            let ns = NAMESPACES[enforced.namespace];
            let mut v = vec![PolicyRef {
                name: format!("allow-{}", WORKLOADS[enforced.workload]),
                namespace: Some(ns.to_owned()),
                kind: None,
            }];
            if rng.below(4) == 0 {
                v.push(PolicyRef {
                    name: "allow-monitoring".to_owned(),
                    namespace: Some(ns.to_owned()),
                    kind: Some("NetworkPolicy".to_owned()),
                });
            }
            v
        });
        let (dest_endpoint, dest_ip) = if external {
            let ip = IpAddr::V4(Ipv4Addr::new(203, 0, 113, rng.below(200) as u8 + 1));
            (Endpoint::Instance { instance: ip }, ip)
        } else {
            (Endpoint::Pod(dest.endpoint.clone()), dest.ip)
        };
        let record = PolicyActionRecord {
            connection: Connection {
                src_ip: src.ip,
                dest_ip,
                src_port: 32768 + rng.below(28000) as u16,
                dest_port: [80, 443, 8080, 9090, 5432, 53][rng.below(6) as usize],
                protocol: if rng.below(20) == 0 {
                    Protocol::Udp
                } else {
                    Protocol::Tcp
                },
                direction: if ingress {
                    Direction::Ingress
                } else {
                    Direction::Egress
                },
            },
            disposition: if deny {
                Disposition::Deny
            } else {
                Disposition::Allow
            },
            policies,
            src: Endpoint::Pod(src.endpoint.clone()),
            dest: dest_endpoint,
            count: if deny { 1 + rng.below(10) } else { 1 },
            node_name: labels[enforced.node].node_name.clone(),
            timestamp: t,
            enforcement: None,
        };
        let env = Envelope {
            log_name: log,
            resource_type: verdict_schema::log_entry::RESOURCE_TYPE,
            labels: &labels[enforced.node],
            receive_timestamp: Timestamp::from_unix_nanos(t.unix_nanos() + 1_000_000_000),
            severity: Severity::Default,
        };
        let id = insert_id(
            &labels[enforced.node].node_name,
            "bench",
            (hour_start as u64) ^ k,
        );
        b.append(&env, &id, &record);
    }
    Ok(b.finish()?)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let start = Timestamp::parse(&args.start)
        .map_err(|e| anyhow::anyhow!("--start {}: {e}", args.start))?
        .unix_nanos();
    std::fs::create_dir_all(&args.dir)?;
    if std::fs::read_dir(&args.dir)?.next().is_some() {
        anyhow::bail!("{} is not empty", args.dir.display());
    }
    let mut config = Config::default();
    config.instance_id.clone_from(&args.instance_id);
    config.storage.url = Some(args.dir.canonicalize()?.display().to_string());
    let storage = Storage::open(&config.storage_url(), &config.storage.options)?;
    let pods = cluster();
    let labels: Vec<ResourceLabels> = (0..NODES)
        .map(|n| ResourceLabels {
            project_id: "bench-proj".into(),
            location: "us-central1".into(),
            cluster_name: "bench-cluster".into(),
            node_name: format!("gke-bench-pool-1-{n:03}"),
        })
        .collect();
    let log = log_name(
        "bench-proj",
        verdict_schema::log_entry::POLICY_ACTION_LOG_ID,
    );
    let per_hour = args.records.div_ceil(args.hours);
    // (hour index, first row, rows) of every file.
    let mut jobs = Vec::new();
    let mut left = args.records;
    for h in 0..args.hours {
        let in_hour = per_hour.min(left);
        left -= in_hour;
        let mut first = 0;
        while first < in_hour {
            let rows = args.file_rows.min(in_hour - first);
            jobs.push((h, first, rows));
            first += rows;
        }
    }
    let traffic = Traffic {
        pods: &pods,
        labels: &labels,
        log: &log,
        per_hour,
        seed: args.seed,
    };
    let parquet = ParquetConfig::default();
    let next = AtomicUsize::new(0);
    let entries = Mutex::new(Vec::new());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let began = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let workers: Vec<_> = (0..args.threads.max(1))
            .map(|_| {
                s.spawn(|| -> anyhow::Result<()> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&(h, first, rows)) = jobs.get(i) else {
                            return Ok(());
                        };
                        let hour_start = start + h as i64 * 3_600_000_000_000;
                        let batch = chunk(&traffic, hour_start, first, rows)?;
                        let file = verdict_collector::parquet_file::encode(
                            &parquet,
                            Table::Flows,
                            &[batch],
                        )?;
                        let hour = Hour::of_nanos(hour_start);
                        let name = format!(
                            "{:013}-{i:06}.{}.parquet",
                            hour_start / 1_000_000,
                            args.instance_id
                        );
                        let path = Storage::data_file(Table::Flows, hour, &name);
                        let entry = FileEntry {
                            path: path.clone(),
                            table: Table::Flows,
                            hour,
                            rows: file.rows,
                            bytes: file.bytes.len() as u64,
                            min_time: file.min_time,
                            max_time: file.max_time,
                        };
                        rt.block_on(storage.put(&path, file.bytes))?;
                        eprintln!(
                            "file {}/{}: {} rows, {:.1} MB ({:.0}s)",
                            i + 1,
                            jobs.len(),
                            entry.rows,
                            entry.bytes as f64 / 1e6,
                            began.elapsed().as_secs_f64()
                        );
                        entries.lock().expect("entries lock").push(entry);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a writer thread panicked"))??;
        }
        Ok(())
    })?;
    let mut added = entries.into_inner().expect("entries lock");
    added.sort_by(|a, b| a.path.cmp(&b.path));
    let (rows, bytes) = added
        .iter()
        .fold((0, 0), |(r, b), f| (r + f.rows, b + f.bytes));
    runtime
        .block_on(async {
            let mut log = CommitLog::open(storage.clone(), &args.instance_id).await?;
            log.commit(Change {
                kind: CommitKind::Flush,
                checkpoint: Some((0, Default::default())),
                added,
                removed: Vec::new(),
            })
            .await?;
            Ok::<_, anyhow::Error>(())
        })
        .context("committing the files")?;
    println!(
        "wrote {rows} records in {} files, {:.2} GB ({:.1} bytes/record) in {:.0}s",
        jobs.len(),
        bytes as f64 / 1e9,
        bytes as f64 / rows.max(1) as f64,
        began.elapsed().as_secs_f64()
    );
    Ok(())
}
