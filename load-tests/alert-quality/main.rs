//! `alert-quality`: how well the collector's deny-spike detectors
//! (`verdict_collector::alerts::engine`) find labelled attacks in synthetic traffic, how often
//! they page on nothing, and what detection costs in CPU.
//!
//! # Scenario (default mode)
//!
//! Simulated time, in steps of one second, no sleeping: `--hours` (default 24) from midnight
//! UTC. The detectors are the collector's default flow rules (`default_rules()` without the
//! node rules, which need no flows): `VerdictDenyFlood`, `VerdictDenySpike`, `VerdictDenyRatio`
//! and `VerdictPortScan`, with the collector's default `max_lateness` (2 min) and
//! `resend_interval` (1 min), evaluated every 2 s (`evaluation_interval`).
//!
//! - **Background.** `--namespaces` (200) namespaces, each with its own normal deny rate
//!   (log-normal, median 0.5 denied connections/s, clipped to 0.05–5/s) and allowed traffic
//!   10–50× its denies, both modulated by a smooth diurnal curve (0.3 at 04:00 to 1.0 at 16:00,
//!   each namespace shifted by up to ±1 h), with Poisson noise per second. Each namespace has
//!   2–5 workloads (1–3 pods each, one service port each) and 8–20 clients (in other namespaces
//!   or outside the cluster), each calling one workload. Per second and namespace, the denies
//!   are aggregated into 1–3 rows and the allows into 1–2 rows (`count` = the connections),
//!   each from a different client. A row's event time is in its second; it reaches the
//!   collector 5–6 s later (the node's deny aggregation plus shipping), and the detectors count
//!   it by that arrival time, in the batch of its arrival second.
//! - **Attacks** (labelled: kind, target, start, end), at random times after `--warmup-minutes`
//!   (60), on random namespaces, never within 15 min of another labelled interval on the same
//!   namespace:
//!   - `--floods` (20): the namespace's denies jump to 20–100× its normal for 2–10 min, from 20
//!     new source addresses;
//!   - `--ramps` (20): the denies ramp linearly from 1× to 15× its normal over 10–20 min, then
//!     hold 15× for 5 min (5 new sources);
//!   - `--scans` (20): one new source address is denied on a new destination port of the
//!     namespace's pods at each connection, 1–5 connections/s for 1–3 min (100–500 distinct
//!     ports): invisible to the rate rules, the target of `VerdictPortScan` (scope `src_ip`).
//! - **Benign batch jobs** (labelled, not attacks): `--batch-namespaces` (3) namespaces with a
//!   normal deny rate of 0.5/s or more at the diurnal peak run a job every
//!   `--batch-every-minutes` (120, random phase) for 10 min, during which their deny rate is
//!   2–3× normal (drawn per run) times a log-normal burst factor (mean 1, σ
//!   `--batch-burst-sigma` 0.6) redrawn every 5 s: noisy, and benign.
//!
//! # Matching
//!
//! Only `Fired` events count (not re-sends). A fired alert whose scope is an attack's target
//! (`dest_namespace` = the namespace for floods and ramps, `src_ip` = the scanner for scans) at
//! a time within [attack start, attack end + 2 min] detects it; the detection delay is the
//! first such fire minus the attack's start (it includes the 5–6 s arrival delay). An attack
//! with no such fire is missed. A `dest_namespace` alert on a scan's namespace within its
//! interval is a true alert on another scope (the scan's own denies raised the namespace's
//! rate), counted apart and not as a false alert. Every other fired alert is a false alert;
//! those on a batch job's namespace within [job start, job end + 2 min] are reported separately
//! as caused by the benign job. False alerts are scaled to a day (× 24 / hours).
//!
//! # Cost
//!
//! The time spent in `Engine::observe_flows` + `Engine::evaluate`, and apart in the log-based
//! metrics (`FlowMetrics::observe_flows`, default labels), is measured with a monotonic clock
//! around each call (single thread). The default mode reports observing per row and evaluating
//! per evaluation, extrapolated to 200,000 records/s (observing scales with the rows,
//! evaluating with the tracked scopes). `--throughput` measures it at that rate: `--rate`
//! (200,000) rows per simulated second for `--seconds` (60), in ingest-sized batches of
//! `--batch-rows` (4096), 80 % allows (count 1) and 20 % aggregated denies (count 1–10) from
//! 20,000 sources over the namespaces' pods, evaluated every 2 s; it reports the engine's CPU
//! time (the thread's, from `/proc/thread-self/schedstat` when the kernel keeps it, else wall
//! time) as a percentage of one core at 200,000 records/s, and the rows/s the engine alone
//! sustains on one core.
//!
//! Prints Markdown tables (missed attacks listed with their rates; `--details`: every attack
//! and job run) and a last line of `key=value` pairs. Deterministic for a given `--seed` and
//! flags (the timings aside).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, TimestampNanosecondType};
use arrow_array::{
    ArrayRef, DictionaryArray, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampNanosecondArray,
};
use clap::Parser;
use verdict_collector::alerts::engine::{AlertEvent, Change, Engine, EngineSettings};
use verdict_collector::alerts::flow_metrics::FlowMetrics;
use verdict_collector::config::alerts::{
    DEFAULT_EVALUATION_INTERVAL, DEFAULT_MAX_LATENESS, DEFAULT_RESEND_INTERVAL, FlowMetricsConfig,
    RuleConfig, RuleKind, default_rules,
};
use verdict_schema::flat_schema::{col, log_entry_schema};
use verdict_service::metrics::Registry;

#[derive(Debug, Parser)]
#[command(
    name = "alert-quality",
    about = "Detection quality and cost of the deny-spike detectors on labelled synthetic traffic"
)]
struct Args {
    /// Simulated hours (from midnight UTC).
    #[arg(long, default_value_t = 24)]
    hours: u64,
    /// Namespaces of background traffic.
    #[arg(long, default_value_t = 200)]
    namespaces: usize,
    /// Floods injected (20–100× the normal deny rate for 2–10 min).
    #[arg(long, default_value_t = 20)]
    floods: usize,
    /// Slow ramps injected (1× to 15× over 10–20 min, then 5 min at 15×).
    #[arg(long, default_value_t = 20)]
    ramps: usize,
    /// Port scans injected (one new source, 1–5 connections/s on new ports for 1–3 min).
    #[arg(long, default_value_t = 20)]
    scans: usize,
    /// Namespaces running a noisy, benign batch job every 2 h for 10 min.
    #[arg(long, default_value_t = 3)]
    batch_namespaces: usize,
    /// Minutes between two runs of a batch job (each runs 10 min).
    #[arg(long, default_value_t = 120)]
    batch_every_minutes: u64,
    /// σ of the batch jobs' log-normal burst factor (mean 1, redrawn every 5 s).
    #[arg(long, default_value_t = 0.6)]
    batch_burst_sigma: f64,
    /// No attack starts before this (the baselines learn their first hour).
    #[arg(long, default_value_t = 60)]
    warmup_minutes: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also list every attack and batch job run with its outcome.
    #[arg(long)]
    details: bool,
    /// Measure the detection's cost at `--rate` rows per simulated second instead.
    #[arg(long)]
    throughput: bool,
    /// `--throughput`: simulated seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// `--throughput`: rows per simulated second.
    #[arg(long, default_value_t = 200_000)]
    rate: usize,
    /// `--throughput`: rows per batch (as ingest hands them to the detectors).
    #[arg(long, default_value_t = 4096)]
    batch_rows: usize,
}

const NANOS: i64 = 1_000_000_000;
/// 2026-11-02T00:00:00Z: the simulation's midnight.
const START_SEC: i64 = 1_793_577_600;
/// Rows reach the collector this long after their event time, plus up to 1 s.
const ARRIVAL_DELAY_SECS: i64 = 5;
/// Arrival seconds buffered ahead (more than the arrival delay).
const RING: usize = 8;
/// An alert this long after an attack (or a batch job) ended still belongs to it.
const GRACE_SECS: i64 = 120;
/// Labelled intervals on one namespace are at least this far apart.
const SPACING_SECS: i64 = 900;
/// The cost is reported at this rate.
const REFERENCE_RATE: f64 = 200_000.0;
const NODES: usize = 50;
const SERVICE_PORTS: [i32; 12] = [
    80, 443, 8080, 8443, 9090, 5432, 6379, 3306, 9200, 27017, 5672, 11211,
];
/// A batch job runs this long, its burst factor redrawn this often.
const BATCH_RUN_SECS: i64 = 600;
const BATCH_BURST_SECS: i64 = 5;
/// The columns of the flat schema the batches carry: every one the detectors and the
/// log-based metrics read. Timestamps first (the throughput mode replaces them).
const COLUMNS: [&str; 14] = [
    col::TIMESTAMP,
    col::RECEIVE_TIMESTAMP,
    col::CLUSTER_NAME,
    col::SRC_IP,
    col::DEST_IP,
    col::DEST_PORT,
    col::DIRECTION,
    col::DISPOSITION,
    col::SRC_POD_NAMESPACE,
    col::DEST_POD_NAME,
    col::DEST_POD_NAMESPACE,
    col::DEST_WORKLOAD_NAME,
    col::COUNT,
    col::NODE_NAME,
];

/// SplitMix64: small, fast and deterministic.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform in [lo, hi] (integers).
    fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as i64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit();
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Log-normal with mean 1.
    fn burst(&mut self, sigma: f64) -> f64 {
        (sigma * self.normal() - sigma * sigma / 2.0).exp()
    }

    fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda <= 0.0 {
            0
        } else if lambda < 30.0 {
            let limit = (-lambda).exp();
            let (mut k, mut p) = (0, self.unit());
            while p > limit {
                k += 1;
                p *= self.unit();
            }
            k
        } else {
            (lambda + lambda.sqrt() * self.normal()).round().max(0.0) as u64
        }
    }

    /// Nanoseconds within a second.
    fn nanos(&mut self) -> i64 {
        (self.unit() * NANOS as f64) as i64
    }
}

/// The deny and allow rate multiple of the hour of day: 0.3 at 04:00, 1.0 at 16:00, smooth.
fn diurnal(sec: f64) -> f64 {
    let hour = (sec / 3600.0).rem_euclid(24.0);
    0.3 + 0.35 * (1.0 - (std::f64::consts::TAU * (hour - 4.0) / 24.0).cos())
}

#[derive(Debug)]
struct Workload {
    /// Index in the workload dictionary.
    id: i32,
    port: i32,
    pods: Vec<u32>,
}

#[derive(Debug)]
struct Client {
    ip: u32,
    src_ns: Option<i32>,
    workload: usize,
}

#[derive(Debug)]
struct Namespace {
    /// Normal denied connections/s at the diurnal peak.
    rate: f64,
    /// Allowed connections per denied one.
    allow_ratio: f64,
    /// Seconds added to the time of day (its users' time zone).
    shift: f64,
    workloads: Vec<Workload>,
    clients: Vec<Client>,
}

impl Namespace {
    /// The normal deny rate at `t` (seconds since the simulation's start).
    fn normal(&self, t: i64) -> f64 {
        self.rate * diurnal(t as f64 + self.shift)
    }
}

#[derive(Debug)]
struct Pod {
    ip: u32,
    node: i32,
}

/// The cluster: namespaces, pods, addresses, and the dictionaries of the batches.
#[derive(Debug)]
struct World {
    namespaces: Vec<Namespace>,
    ns_names: Vec<String>,
    pods: Vec<Pod>,
    pod_names: Vec<String>,
    /// Every address, by id.
    ips: Vec<String>,
    /// An empty batch of the projected schema: its schema for every batch (this crate does
    /// not name arrow-schema's types).
    empty: RecordBatch,
    ns_values: ArrayRef,
    workload_values: ArrayRef,
    node_values: ArrayRef,
    disposition_values: ArrayRef,
    direction_values: ArrayRef,
    cluster_values: ArrayRef,
}

fn strings<S: AsRef<str>>(v: impl IntoIterator<Item = S>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(v))
}

fn dict(keys: Int32Array, values: &ArrayRef) -> Result<ArrayRef> {
    Ok(Arc::new(DictionaryArray::<Int32Type>::try_new(
        keys,
        values.clone(),
    )?))
}

impl World {
    fn new(namespaces: usize, rng: &mut Rng) -> Result<World> {
        let full = log_entry_schema();
        let indices = COLUMNS
            .iter()
            .map(|c| full.index_of(c))
            .collect::<Result<Vec<_>, _>>()?;
        let empty = RecordBatch::new_empty(Arc::new(full.project(&indices)?));
        let ns_names: Vec<String> = (0..namespaces).map(|i| format!("ns-{i:03}")).collect();
        let mut ips = Vec::new();
        let mut intern = |base: [u8; 4], k: usize| -> u32 {
            ips.push(Ipv4Addr::from(u32::from(Ipv4Addr::from(base)) + k as u32).to_string());
            (ips.len() - 1) as u32
        };
        let (mut pods, mut pod_names, mut workload_names) = (Vec::new(), Vec::new(), Vec::new());
        let mut clients_made = 0;
        let mut out = Vec::with_capacity(namespaces);
        for ns_name in &ns_names {
            let rate = (0.5f64.ln() + rng.normal()).exp().clamp(0.05, 5.0);
            let mut workloads = Vec::new();
            for w in 0..rng.int(2, 5) {
                let name = format!("app-{w}");
                let mut wl = Workload {
                    id: workload_names.len() as i32,
                    port: *rng.pick(&SERVICE_PORTS),
                    pods: Vec::new(),
                };
                workload_names.push(name.clone());
                for p in 0..rng.int(1, 3) {
                    wl.pods.push(pods.len() as u32);
                    pod_names.push(format!("{name}-{p}-{ns_name}"));
                    pods.push(Pod {
                        ip: intern([10, 64, 0, 0], pods.len()),
                        node: rng.below(NODES) as i32,
                    });
                }
                workloads.push(wl);
            }
            // Callers: up to three other namespaces, and outside the cluster.
            let callers: Vec<i32> = (0..3).map(|_| rng.below(namespaces) as i32).collect();
            let clients = (0..rng.int(8, 20))
                .map(|_| {
                    clients_made += 1;
                    Client {
                        ip: intern([10, 128, 0, 0], clients_made),
                        src_ns: (rng.unit() < 0.75).then(|| *rng.pick(&callers)),
                        workload: rng.below(workloads.len()),
                    }
                })
                .collect();
            out.push(Namespace {
                rate,
                allow_ratio: rng.range(10.0, 50.0),
                shift: rng.range(-3600.0, 3600.0),
                workloads,
                clients,
            });
        }
        Ok(World {
            namespaces: out,
            ns_values: strings(&ns_names),
            ns_names,
            pods,
            pod_names,
            ips,
            empty,
            workload_values: strings(&workload_names),
            node_values: strings((0..NODES).map(|i| format!("node-{i:02}"))),
            disposition_values: strings(["allow", "deny"]),
            direction_values: strings(["ingress"]),
            cluster_values: strings(["prod"]),
        })
    }

    /// A new address outside the cluster (attackers).
    fn new_ip(&mut self, base: [u8; 4], k: usize) -> u32 {
        self.ips
            .push(Ipv4Addr::from(u32::from(Ipv4Addr::from(base)) + k as u32).to_string());
        (self.ips.len() - 1) as u32
    }

    /// The rows as a batch of the flat schema (the columns of [`COLUMNS`]).
    fn batch(&self, rows: &[Row]) -> Result<RecordBatch> {
        let zeros = || Int32Array::from_iter_values(rows.iter().map(|_| 0));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(
                TimestampNanosecondArray::from_iter_values(rows.iter().map(|r| r.ts))
                    .with_timezone("UTC"),
            ),
            Arc::new(
                TimestampNanosecondArray::from_iter_values(rows.iter().map(|r| r.recv))
                    .with_timezone("UTC"),
            ),
            dict(zeros(), &self.cluster_values)?,
            strings(rows.iter().map(|r| &self.ips[r.src_ip as usize])),
            strings(
                rows.iter()
                    .map(|r| &self.ips[self.pods[r.pod as usize].ip as usize]),
            ),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.port))),
            dict(zeros(), &self.direction_values)?,
            dict(
                Int32Array::from_iter_values(rows.iter().map(|r| i32::from(r.deny))),
                &self.disposition_values,
            )?,
            dict(
                Int32Array::from_iter(rows.iter().map(|r| r.src_ns)),
                &self.ns_values,
            )?,
            strings(rows.iter().map(|r| &self.pod_names[r.pod as usize])),
            dict(
                Int32Array::from_iter_values(rows.iter().map(|r| r.ns)),
                &self.ns_values,
            )?,
            dict(
                Int32Array::from_iter_values(rows.iter().map(|r| r.workload)),
                &self.workload_values,
            )?,
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.count))),
            dict(
                Int32Array::from_iter_values(rows.iter().map(|r| self.pods[r.pod as usize].node)),
                &self.node_values,
            )?,
        ];
        Ok(RecordBatch::try_new(self.empty.schema(), columns)?)
    }
}

/// One aggregated flow row (ids into the [`World`]).
#[derive(Debug, Clone, Copy)]
struct Row {
    ts: i64,
    recv: i64,
    count: i64,
    deny: bool,
    src_ip: u32,
    src_ns: Option<i32>,
    ns: i32,
    workload: i32,
    pod: u32,
    port: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Flood,
    Ramp,
    Scan,
    Batch,
}

impl Kind {
    const ATTACKS: [Kind; 3] = [Kind::Flood, Kind::Ramp, Kind::Scan];

    fn label(self) -> &'static str {
        match self {
            Kind::Flood => "flood (20–100× normal, 2–10 min)",
            Kind::Ramp => "slow ramp (1× → 15× over 10–20 min, 5 min hold)",
            Kind::Scan => "port scan (1 source, 1–5 conn/s, 100–500 ports, 1–3 min)",
            Kind::Batch => "benign batch job",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Kind::Flood => "flood",
            Kind::Ramp => "ramp",
            Kind::Scan => "scan",
            Kind::Batch => "batch",
        }
    }
}

/// A labelled interval: an attack, or a run of a benign batch job.
#[derive(Debug)]
struct Labelled {
    kind: Kind,
    ns: usize,
    /// Seconds since the simulation's start, [start, end).
    start: i64,
    end: i64,
    /// Flood: the multiple of the normal deny rate; ramp: the final multiple; batch: the run's
    /// mean multiple; scan: connections per second.
    factor: f64,
    /// Ramp: seconds from 1× to `factor`.
    ramp: i64,
    /// The attacker's source addresses.
    sources: Vec<u32>,
    /// Scan: the ports still to probe.
    ports: Vec<i32>,
    /// Batch: the current burst multiple.
    burst: f64,
}

impl Labelled {
    /// The attack's (or the job's) multiple of the normal deny rate at `t`.
    fn multiple(&self, t: i64) -> f64 {
        match self.kind {
            Kind::Flood => self.factor,
            Kind::Ramp => {
                1.0 + (self.factor - 1.0) * ((t - self.start) as f64 / self.ramp as f64).min(1.0)
            }
            Kind::Batch => self.factor * self.burst,
            Kind::Scan => 1.0,
        }
    }

    fn active(&self, t: i64) -> bool {
        self.start <= t && t < self.end
    }
}

/// A fired alert, as observed.
#[derive(Debug)]
struct Fired {
    /// Seconds since the simulation's start.
    at: f64,
    rule: String,
    scope: String,
    value: String,
}

/// What a fired alert was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Detects(usize),
    /// On a scan's namespace, by a rate rule.
    OtherScope(usize),
    Benign(usize),
    False,
}

/// The traffic generator.
#[derive(Debug)]
struct Sim {
    world: World,
    labelled: Vec<Labelled>,
    /// Indices into `labelled`, per namespace.
    by_ns: Vec<Vec<usize>>,
    rng: Rng,
    burst_sigma: f64,
}

impl Sim {
    fn new(args: &Args) -> Result<Sim> {
        let mut rng = Rng(args.seed);
        let mut world = World::new(args.namespaces, &mut rng)?;
        let total = args.hours as i64 * 3600;
        let warmup = args.warmup_minutes as i64 * 60;
        let mut labelled: Vec<Labelled> = Vec::new();
        // Batch jobs, on namespaces whose denies are above the rules' floor.
        let mut candidates: Vec<usize> = (0..args.namespaces)
            .filter(|&n| world.namespaces[n].rate >= 0.5)
            .collect();
        if candidates.len() < args.batch_namespaces {
            bail!("only {} namespaces fit a batch job", candidates.len());
        }
        let mut batch_ns = Vec::new();
        for _ in 0..args.batch_namespaces {
            let n = candidates.swap_remove(rng.below(candidates.len()));
            batch_ns.push(n);
            let every = (args.batch_every_minutes as i64 * 60).max(BATCH_RUN_SECS + 60);
            let mut start = rng.int(0, every - 1);
            while start < total {
                labelled.push(Labelled {
                    kind: Kind::Batch,
                    ns: n,
                    start,
                    end: start + BATCH_RUN_SECS,
                    factor: rng.range(2.0, 3.0),
                    ramp: 0,
                    sources: Vec::new(),
                    ports: Vec::new(),
                    burst: 1.0,
                });
                start += every;
            }
        }
        let mut attackers = 0;
        let plan = [
            (Kind::Flood, args.floods),
            (Kind::Ramp, args.ramps),
            (Kind::Scan, args.scans),
        ];
        for (kind, count) in plan {
            for _ in 0..count {
                let (duration, factor, ramp) = match kind {
                    Kind::Flood => (rng.int(120, 600), rng.range(20.0, 100.0), 0),
                    Kind::Ramp => {
                        let ramp = rng.int(600, 1200);
                        (ramp + 300, 15.0, ramp)
                    }
                    _ => {
                        let rate = rng.range(1.0, 5.0);
                        let lo = (100.0 / rate).max(60.0);
                        let hi = (500.0 / rate).min(180.0);
                        (rng.range(lo, hi).round() as i64, rate, 0)
                    }
                };
                let latest = total - duration - GRACE_SECS;
                if latest <= warmup {
                    bail!(
                        "--hours {} leaves no room for attacks after the warm-up",
                        args.hours
                    );
                }
                let mut tries = 0;
                let (ns, start) = loop {
                    tries += 1;
                    if tries > 10_000 {
                        bail!("cannot place {count} {} attacks apart", kind.short());
                    }
                    let ns = rng.below(args.namespaces);
                    let start = rng.int(warmup, latest);
                    let clash = batch_ns.contains(&ns)
                        || labelled.iter().any(|l| {
                            l.ns == ns
                                && start < l.end + SPACING_SECS
                                && l.start < start + duration + SPACING_SECS
                        });
                    if !clash {
                        break (ns, start);
                    }
                };
                let (sources, ports) = match kind {
                    Kind::Scan => {
                        attackers += 1;
                        let ip = world.new_ip([192, 168, 0, 0], attackers);
                        // Distinct ports, shuffled: one per connection.
                        let mut ports: Vec<i32> = (1..=65_535).collect();
                        let want = (factor * duration as f64).ceil() as usize + 10;
                        for i in 0..want {
                            let j = i + rng.below(ports.len() - i);
                            ports.swap(i, j);
                        }
                        ports.truncate(want);
                        (vec![ip], ports)
                    }
                    _ => {
                        let n = if kind == Kind::Flood { 20 } else { 5 };
                        let ips = (0..n)
                            .map(|_| {
                                attackers += 1;
                                world.new_ip([172, 16, 0, 0], attackers)
                            })
                            .collect();
                        (ips, Vec::new())
                    }
                };
                labelled.push(Labelled {
                    kind,
                    ns,
                    start,
                    end: start + duration,
                    factor,
                    ramp,
                    sources,
                    ports,
                    burst: 1.0,
                });
            }
        }
        let mut by_ns = vec![Vec::new(); args.namespaces];
        for (i, l) in labelled.iter().enumerate() {
            by_ns[l.ns].push(i);
        }
        Ok(Sim {
            world,
            labelled,
            by_ns,
            rng,
            burst_sigma: args.batch_burst_sigma,
        })
    }

    /// `n` connections to a pod of the namespace's `workload` (a random one if None), split
    /// over `rows` rows (fewer if `n` is smaller), sources picked by `source`.
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        out: &mut [Vec<Row>],
        t: i64,
        ns: usize,
        deny: bool,
        n: u64,
        rows: u64,
        source: Source<'_>,
    ) {
        let k = rows.min(n);
        for j in 0..k {
            let count = n / k + u64::from(j < n % k);
            let (src_ip, src_ns, workload) = match source {
                Source::Clients => {
                    let c = self.rng.pick(&self.world.namespaces[ns].clients);
                    (c.ip, c.src_ns, c.workload)
                }
                Source::Attackers(ips) => (
                    *self.rng.pick(ips),
                    None,
                    self.rng.below(self.world.namespaces[ns].workloads.len()),
                ),
            };
            let wl = &self.world.namespaces[ns].workloads[workload];
            let pod = *self.rng.pick(&wl.pods);
            let (id, port) = (wl.id, wl.port);
            self.push(
                out,
                t,
                deny,
                count as i64,
                src_ip,
                src_ns,
                ns,
                id,
                pod,
                port,
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        out: &mut [Vec<Row>],
        t: i64,
        deny: bool,
        count: i64,
        src_ip: u32,
        src_ns: Option<i32>,
        ns: usize,
        workload: i32,
        pod: u32,
        port: i32,
    ) {
        let ts = (START_SEC + t) * NANOS + self.rng.nanos();
        let recv = ts + ARRIVAL_DELAY_SECS * NANOS + self.rng.nanos();
        let slot = (recv.div_euclid(NANOS) - START_SEC) as usize % RING;
        out[slot].push(Row {
            ts,
            recv,
            count,
            deny,
            src_ip,
            src_ns,
            ns: ns as i32,
            workload,
            pod,
            port,
        });
    }

    /// The rows of event second `t`, into the ring slot of their arrival second.
    fn second(&mut self, t: i64, out: &mut [Vec<Row>]) {
        for ns in 0..self.world.namespaces.len() {
            let normal = self.world.namespaces[ns].normal(t);
            let allow_ratio = self.world.namespaces[ns].allow_ratio;
            let mut deny_multiple = 1.0;
            let mut extra = None;
            for i in 0..self.by_ns[ns].len() {
                let li = self.by_ns[ns][i];
                let l = &mut self.labelled[li];
                if !l.active(t) {
                    continue;
                }
                match l.kind {
                    Kind::Batch => {
                        if (t - l.start) % BATCH_BURST_SECS == 0 {
                            l.burst = self.rng.burst(self.burst_sigma);
                        }
                        deny_multiple = l.multiple(t);
                    }
                    Kind::Flood | Kind::Ramp => extra = Some((li, l.multiple(t) - 1.0)),
                    Kind::Scan => extra = Some((li, 0.0)),
                }
            }
            let n = self.rng.poisson(normal * deny_multiple);
            let rows = self.rng.int(1, 3) as u64;
            self.emit(out, t, ns, true, n, rows, Source::Clients);
            let n = self.rng.poisson(normal * allow_ratio);
            let rows = self.rng.int(1, 2) as u64;
            self.emit(out, t, ns, false, n, rows, Source::Clients);
            let Some((li, more)) = extra else { continue };
            // Attack traffic (the attack's sources are taken out to borrow the generator).
            let l = &mut self.labelled[li];
            let sources = std::mem::take(&mut l.sources);
            if l.kind == Kind::Scan {
                let rate = l.factor;
                let n = self.rng.poisson(rate);
                for _ in 0..n {
                    let Some(port) = self.labelled[li].ports.pop() else {
                        break;
                    };
                    let ws = &self.world.namespaces[ns].workloads;
                    let wl = &ws[self.rng.below(ws.len())];
                    let (id, pod) = (wl.id, *self.rng.pick(&wl.pods));
                    self.push(out, t, true, 1, sources[0], None, ns, id, pod, port);
                }
            } else {
                let n = self.rng.poisson(normal * more);
                let rows = self.rng.int(1, 4) as u64;
                self.emit(out, t, ns, true, n, rows, Source::Attackers(&sources));
            }
            self.labelled[li].sources = sources;
        }
    }

    /// What a fired alert was (the first labelled interval it belongs to).
    fn verdict(&self, f: &Fired) -> Verdict {
        let within = |l: &Labelled| f.at >= l.start as f64 && f.at <= (l.end + GRACE_SECS) as f64;
        for (i, l) in self.labelled.iter().enumerate() {
            if !within(l) {
                continue;
            }
            let on_ns = f.scope == "dest_namespace" && f.value == self.world.ns_names[l.ns];
            match l.kind {
                Kind::Flood | Kind::Ramp if on_ns => return Verdict::Detects(i),
                Kind::Scan if on_ns => return Verdict::OtherScope(i),
                Kind::Scan
                    if f.scope == "src_ip" && f.value == self.world.ips[l.sources[0] as usize] =>
                {
                    return Verdict::Detects(i);
                }
                Kind::Batch if on_ns => return Verdict::Benign(i),
                _ => {}
            }
        }
        Verdict::False
    }
}

#[derive(Debug, Clone, Copy)]
enum Source<'a> {
    Clients,
    Attackers(&'a [u32]),
}

/// The collector's default flow rules (the node rules need no flows).
fn flow_rules() -> Vec<RuleConfig> {
    default_rules()
        .into_iter()
        .filter(|r| !matches!(r.kind, RuleKind::NodeSilent | RuleKind::Loss))
        .collect()
}

fn engine() -> Engine {
    Engine::new(
        &flow_rules(),
        EngineSettings {
            max_lateness_nanos: DEFAULT_MAX_LATENESS.as_nanos() as i64,
            resend_nanos: DEFAULT_RESEND_INTERVAL.as_nanos() as i64,
        },
    )
}

/// This thread's CPU time (the kernel's scheduler statistics), if it keeps them.
fn thread_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    (ns > 0).then(|| Duration::from_nanos(ns))
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.0} s"))
}

fn clock(t: i64) -> String {
    format!("{:02}:{:02}", t / 3600, t % 3600 / 60)
}

#[derive(Debug, Default)]
struct Cost {
    rows: u64,
    observe: Duration,
    evaluate: Duration,
    evaluations: u64,
    metrics: Duration,
}

fn quality(args: &Args) -> Result<()> {
    let mut sim = Sim::new(args)?;
    let mut engine = engine();
    let mut registry = Registry::default();
    let metrics = FlowMetrics::register(&mut registry, &FlowMetricsConfig::default());
    let total = args.hours as i64 * 3600;
    let every = DEFAULT_EVALUATION_INTERVAL.as_secs().max(1) as i64;
    let mut ring: Vec<Vec<Row>> = (0..RING).map(|_| Vec::new()).collect();
    let mut fired = Vec::new();
    let mut cost = Cost::default();
    let mut changes: BTreeMap<&'static str, u64> = BTreeMap::new();
    let began = Instant::now();
    for t in 0..total {
        sim.second(t, &mut ring);
        let mut rows = std::mem::take(&mut ring[t as usize % RING]);
        for chunk in rows.chunks(4096) {
            let batch = sim.world.batch(chunk)?;
            cost.rows += batch.num_rows() as u64;
            let clock = Instant::now();
            engine.observe_flows(&batch)?;
            cost.observe += clock.elapsed();
            let clock = Instant::now();
            metrics.observe_flows(&batch)?;
            cost.metrics += clock.elapsed();
        }
        rows.clear();
        ring[t as usize % RING] = rows;
        if (t + 1) % every == 0 {
            let now = (START_SEC + t + 1) * NANOS - 1;
            let clock = Instant::now();
            let events: Vec<AlertEvent> = engine.evaluate(now);
            cost.evaluate += clock.elapsed();
            cost.evaluations += 1;
            for e in events {
                *changes
                    .entry(match e.change {
                        Change::Fired => "fired",
                        Change::Resent => "resent",
                        Change::Resolved => "resolved",
                    })
                    .or_default() += 1;
                if e.change == Change::Fired {
                    fired.push(Fired {
                        at: (now as f64 / NANOS as f64) - START_SEC as f64,
                        rule: e.alert.rule,
                        scope: e.alert.scope,
                        value: e.alert.scope_value,
                    });
                }
            }
        }
    }
    let run_time = began.elapsed();
    report_quality(args, &sim, &fired, &cost, run_time, &changes);
    Ok(())
}

fn report_quality(
    args: &Args,
    sim: &Sim,
    fired: &[Fired],
    cost: &Cost,
    run_time: Duration,
    changes: &BTreeMap<&'static str, u64>,
) {
    let day_scale = 24.0 / args.hours as f64;
    // The first detecting fire of each attack, and every verdict.
    let mut first: Vec<Option<(f64, &str)>> = vec![None; sim.labelled.len()];
    let mut false_by_rule: BTreeMap<String, (u64, u64)> =
        flow_rules().into_iter().map(|r| (r.name, (0, 0))).collect();
    // Every fired alert that belongs to an attack, per attack kind and rule.
    let mut on_attacks: BTreeMap<(Kind, &str), u64> = BTreeMap::new();
    let (mut true_alerts, mut other_scope) = (0u64, 0u64);
    // Fired alerts per labelled interval.
    let mut fires = vec![0u64; sim.labelled.len()];
    for f in fired {
        let verdict = sim.verdict(f);
        if let Verdict::Detects(i) | Verdict::OtherScope(i) | Verdict::Benign(i) = verdict {
            fires[i] += 1;
        }
        match verdict {
            Verdict::Detects(i) => {
                true_alerts += 1;
                *on_attacks
                    .entry((sim.labelled[i].kind, &f.rule))
                    .or_default() += 1;
                if first[i].is_none() {
                    first[i] = Some((f.at, f.rule.as_str()));
                }
            }
            Verdict::OtherScope(i) => {
                true_alerts += 1;
                other_scope += 1;
                *on_attacks
                    .entry((sim.labelled[i].kind, &f.rule))
                    .or_default() += 1;
            }
            Verdict::Benign(_) => {
                let e = false_by_rule.entry(f.rule.clone()).or_default();
                e.0 += 1;
                e.1 += 1;
            }
            Verdict::False => false_by_rule.entry(f.rule.clone()).or_default().0 += 1,
        }
    }
    println!(
        "## Detection quality: {} h simulated, {} namespaces, seed {}",
        args.hours, args.namespaces, args.seed
    );
    println!();
    println!(
        "| attack | injected | detected | missed | delay p50 | delay p99 | first alert by | alerts fired on the attacks |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut summary = Vec::new();
    for kind in Kind::ATTACKS {
        let ids: Vec<usize> = (0..sim.labelled.len())
            .filter(|&i| sim.labelled[i].kind == kind)
            .collect();
        let mut delays: Vec<f64> = ids
            .iter()
            .filter_map(|&i| first[i].map(|(at, _)| at - sim.labelled[i].start as f64))
            .collect();
        delays.sort_by(f64::total_cmp);
        let mut by: BTreeMap<&str, usize> = BTreeMap::new();
        for &i in &ids {
            if let Some((_, rule)) = first[i] {
                *by.entry(rule).or_default() += 1;
            }
        }
        let by = by
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let all: Vec<(&str, u64)> = on_attacks
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|((_, r), n)| (*r, *n))
            .collect();
        let all = format!(
            "{} ({})",
            all.iter().map(|(_, n)| n).sum::<u64>(),
            all.iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let (p50, p99) = (percentile(&delays, 50.0), percentile(&delays, 99.0));
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            kind.label(),
            ids.len(),
            delays.len(),
            ids.len() - delays.len(),
            secs(p50),
            secs(p99),
            if by.is_empty() { "–".into() } else { by },
            all
        );
        summary.push(format!(
            "{}={}/{} {}_p50_s={:.0} {}_p99_s={:.0}",
            kind.short(),
            delays.len(),
            ids.len(),
            kind.short(),
            p50.unwrap_or(f64::NAN),
            kind.short(),
            p99.unwrap_or(f64::NAN)
        ));
    }
    println!();
    let benign_runs = sim
        .labelled
        .iter()
        .filter(|l| l.kind == Kind::Batch)
        .count();
    let alerted_runs = (0..sim.labelled.len())
        .filter(|&i| sim.labelled[i].kind == Kind::Batch && fires[i] > 0)
        .count();
    let total_false: u64 = false_by_rule.values().map(|v| v.0).sum();
    let total_benign: u64 = false_by_rule.values().map(|v| v.1).sum();
    println!(
        "| false alerts (fired) | per day | of which on the benign batch job ({benign_runs} runs, {alerted_runs} with an alert) |"
    );
    println!("|---|---|---|");
    for (rule, (n, benign)) in &false_by_rule {
        println!(
            "| {rule} | {:.1} | {:.1} |",
            *n as f64 * day_scale,
            *benign as f64 * day_scale
        );
    }
    println!(
        "| **total** | **{:.1}** | **{:.1}** |",
        total_false as f64 * day_scale,
        total_benign as f64 * day_scale
    );
    println!();
    println!(
        "True alerts fired: {true_alerts} (of which {other_scope} rate alerts on a scanned namespace); \
         alert changes: {}.",
        changes
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // Every missed attack (and with --details, every labelled interval).
    let listed: Vec<usize> = (0..sim.labelled.len())
        .filter(|&i| args.details || (sim.labelled[i].kind != Kind::Batch && first[i].is_none()))
        .collect();
    if !listed.is_empty() {
        println!();
        println!(
            "| {} | namespace | start | duration | multiple (scan: conn/s) | normal denies/s at start | peak denies/s (with the normal) | first alert | alerts fired on it |",
            if args.details { "labelled" } else { "missed" }
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for i in listed {
            let l = &sim.labelled[i];
            let ns = &sim.world.namespaces[l.ns];
            let peak = match l.kind {
                Kind::Scan => ns.normal(l.start) + l.factor,
                Kind::Batch => ns.normal(l.start) * l.factor,
                _ => ns.normal(l.end - 1) * l.multiple(l.end - 1),
            };
            let outcome = match first[i] {
                Some((at, rule)) => format!("{rule} after {:.0} s", at - l.start as f64),
                None => "–".to_owned(),
            };
            println!(
                "| {} | {} | {} | {} s | {:.1} | {:.2} | {:.2}{} | {outcome} | {} |",
                l.kind.short(),
                sim.world.ns_names[l.ns],
                clock(l.start),
                l.end - l.start,
                l.factor,
                ns.normal(l.start),
                peak,
                if l.kind == Kind::Batch { " (mean)" } else { "" },
                fires[i]
            );
        }
    }
    let sim_secs = args.hours as f64 * 3600.0;
    let per_row = |d: Duration| d.as_secs_f64() * 1e9 / cost.rows.max(1) as f64;
    // Observing scales with the rows, evaluating with the scopes (not the rows).
    let evaluate_per_s = cost.evaluate.as_secs_f64() / sim_secs;
    let engine_at_ref = per_row(cost.observe) * REFERENCE_RATE / 1e9 + evaluate_per_s;
    let metrics_at_ref = per_row(cost.metrics) * REFERENCE_RATE / 1e9;
    println!();
    println!(
        "| detection cost (this run, one thread) | rows/simulated s | Engine::observe_flows per row | Engine::evaluate per evaluation | engine CPU s per s, extrapolated to 200k rows/s | FlowMetrics::observe_flows per row | its CPU s per s at 200k rows/s |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} rows, {} evaluations | {:.0} | {:.0} ns | {:.2} ms | {:.3} | {:.0} ns | {:.3} |",
        cost.rows,
        cost.evaluations,
        cost.rows as f64 / sim_secs,
        per_row(cost.observe),
        cost.evaluate.as_secs_f64() * 1e3 / cost.evaluations.max(1) as f64,
        engine_at_ref,
        per_row(cost.metrics),
        metrics_at_ref,
    );
    println!();
    println!(
        "summary: {} false_per_day={:.1} benign_false_per_day={:.1} rows={} observe_ns_per_row={:.0} evaluate_ms={:.2} engine_cpu_s_per_s_at_200k={:.3} metrics_ns_per_row={:.0} run_s={:.1}",
        summary.join(" "),
        total_false as f64 * day_scale,
        total_benign as f64 * day_scale,
        cost.rows,
        per_row(cost.observe),
        cost.evaluate.as_secs_f64() * 1e3 / cost.evaluations.max(1) as f64,
        engine_at_ref,
        per_row(cost.metrics),
        run_time.as_secs_f64()
    );
}

/// Steady traffic at `--rate` rows per simulated second, for the cost alone.
fn throughput(args: &Args) -> Result<()> {
    let mut rng = Rng(args.seed);
    let mut world = World::new(args.namespaces, &mut rng)?;
    // 20,000 sources, each calling one workload; 80 % allows, 20 % aggregated denies.
    let sources: Vec<(u32, Option<i32>, usize, usize)> = (0..20_000)
        .map(|k| {
            let ns = rng.below(args.namespaces);
            let wl = rng.below(world.namespaces[ns].workloads.len());
            let src_ns = (rng.unit() < 0.75).then(|| rng.below(args.namespaces) as i32);
            (world.new_ip([10, 192, 0, 0], k), src_ns, ns, wl)
        })
        .collect();
    let batch_rows = args.batch_rows.max(1);
    let templates: Vec<RecordBatch> = (0..128)
        .map(|_| {
            let rows: Vec<Row> = (0..batch_rows)
                .map(|_| {
                    let &(src_ip, src_ns, ns, wl) = rng.pick(&sources);
                    let w = &world.namespaces[ns].workloads[wl];
                    let deny = rng.unit() < 0.2;
                    // Arrival within the second, its event time 5–6 s earlier: offsets from
                    // the second's start, shifted per use.
                    let recv = rng.nanos();
                    Row {
                        ts: recv - ARRIVAL_DELAY_SECS * NANOS - rng.nanos(),
                        recv,
                        count: if deny { rng.int(1, 10) } else { 1 },
                        deny,
                        src_ip,
                        src_ns,
                        ns: ns as i32,
                        workload: w.id,
                        pod: *rng.pick(&w.pods),
                        port: w.port,
                    }
                })
                .collect();
            world.batch(&rows)
        })
        .collect::<Result<_>>()?;
    let mut engine = engine();
    let mut registry = Registry::default();
    let metrics = FlowMetrics::register(&mut registry, &FlowMetricsConfig::default());
    let every = DEFAULT_EVALUATION_INTERVAL.as_secs().max(1) as i64;
    let mut cost = Cost::default();
    let mut evaluations = Vec::new();
    let (mut engine_cpu, mut metrics_cpu) = (Some(Duration::ZERO), Some(Duration::ZERO));
    let mut next = 0;
    for t in 0..args.seconds as i64 {
        // This second's batches, built before the clocks run.
        let base = (START_SEC + t) * NANOS;
        let mut batches = Vec::new();
        let mut left = args.rate;
        while left > 0 {
            let n = left.min(batch_rows);
            let template = templates[next % templates.len()].slice(0, n);
            next += 1;
            batches.push(shift_times(&template, base)?);
            left -= n;
        }
        let cpu0 = thread_cpu();
        for b in &batches {
            let clock = Instant::now();
            engine.observe_flows(b)?;
            cost.observe += clock.elapsed();
            cost.rows += b.num_rows() as u64;
        }
        if (t + 1) % every == 0 {
            let clock = Instant::now();
            let _ = engine.evaluate((START_SEC + t + 1) * NANOS - 1);
            let took = clock.elapsed();
            cost.evaluate += took;
            evaluations.push(took.as_secs_f64() * 1e3);
        }
        let cpu1 = thread_cpu();
        for b in &batches {
            let clock = Instant::now();
            metrics.observe_flows(b)?;
            cost.metrics += clock.elapsed();
        }
        let cpu2 = thread_cpu();
        engine_cpu = match (engine_cpu, cpu0, cpu1) {
            (Some(sum), Some(a), Some(b)) => Some(sum + b.saturating_sub(a)),
            _ => None,
        };
        metrics_cpu = match (metrics_cpu, cpu1, cpu2) {
            (Some(sum), Some(a), Some(b)) => Some(sum + b.saturating_sub(a)),
            _ => None,
        };
    }
    evaluations.sort_by(f64::total_cmp);
    let seconds = args.seconds as f64;
    let engine_wall = cost.observe + cost.evaluate;
    let (engine_time, metrics_time, source) = match (engine_cpu, metrics_cpu) {
        (Some(e), Some(m)) => (e, m, "thread CPU time"),
        _ => (engine_wall, cost.metrics, "wall time"),
    };
    // As a share of one core at the reference rate.
    let pct = |d: Duration| d.as_secs_f64() / seconds * (REFERENCE_RATE / args.rate as f64) * 100.0;
    let sustained = |d: Duration| cost.rows as f64 / d.as_secs_f64();
    println!(
        "## Detection cost: {} rows/s for {} simulated s, batches of {}, {} namespaces, 20,000 sources",
        args.rate, args.seconds, batch_rows, args.namespaces
    );
    println!();
    println!(
        "| part | CPU at 200k records/s (% of one core, {source}) | rows/s one core sustains | per row |"
    );
    println!("|---|---|---|---|");
    let line = |name: &str, d: Duration| {
        println!(
            "| {name} | {:.1} % | {:.0} | {:.0} ns |",
            pct(d),
            sustained(d),
            d.as_secs_f64() * 1e9 / cost.rows as f64
        );
    };
    line(
        "detectors (Engine::observe_flows + evaluate every 2 s)",
        engine_time,
    );
    line(
        "log-based metrics (FlowMetrics::observe_flows)",
        metrics_time,
    );
    line("both", engine_time + metrics_time);
    println!();
    println!(
        "Engine::evaluate: p50 {:.2} ms, max {:.2} ms per evaluation ({} scopes tracked at the end); observe {:.2} s, evaluate {:.2} s (wall).",
        percentile(&evaluations, 50.0).unwrap_or(0.0),
        evaluations.last().copied().unwrap_or(0.0),
        engine.tracked_scopes(),
        cost.observe.as_secs_f64(),
        cost.evaluate.as_secs_f64()
    );
    println!();
    println!(
        "summary: rows={} rate={} engine_pct_of_core={:.1} metrics_pct_of_core={:.1} engine_rows_per_s={:.0} metrics_rows_per_s={:.0} evaluate_p50_ms={:.2} evaluate_max_ms={:.2} clock={}",
        cost.rows,
        args.rate,
        pct(engine_time),
        pct(metrics_time),
        sustained(engine_time),
        sustained(metrics_time),
        percentile(&evaluations, 50.0).unwrap_or(0.0),
        evaluations.last().copied().unwrap_or(0.0),
        source.replace(' ', "_")
    );
    Ok(())
}

/// The template with its time columns (offsets within a second) moved to second `base`.
fn shift_times(template: &RecordBatch, base: i64) -> Result<RecordBatch> {
    let mut columns = template.columns().to_vec();
    for c in &mut columns[..2] {
        let shifted: TimestampNanosecondArray = c
            .as_primitive::<TimestampNanosecondType>()
            .iter()
            .map(|v| v.map(|v| v + base))
            .collect();
        *c = Arc::new(shifted.with_timezone("UTC"));
    }
    RecordBatch::try_new(template.schema(), columns).context("shifted batch")
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.throughput {
        throughput(&args)
    } else {
        quality(&args)
    }
}
