//! Whole node-logging path under a fixed offered load: a producer offers verdict events to the
//! agent's bounded channel with `try_send` (as the kernel ring buffer would: no waiting), the
//! pipeline task judges and serializes them, the writer thread appends them to a real
//! policy_action.log. The rate limit is raised above the offered load, so any loss is the
//! pipeline's own. Prints one table row per offered rate: events delivered, events lost, records
//! written, and process CPU per 10,000 events/s (generator included).
//!
//! Run: `cargo run --release -p verdict-probe --example pipeline_load -- [SECONDS] [RATE ...]`

use std::time::{Duration, Instant};

use verdict_cluster::{ClusterSource, SourceError, StateUpdate};
use verdict_policy::IpBlockMode;
use verdict_probe::agent::{Agent, AgentConfig};
use verdict_probe::clock::Clock;
use verdict_probe::pipeline::PipelineConfig;
use verdict_probe::synthetic;

/// The synthetic cluster as a source that never changes.
struct Fixed(Option<StateUpdate>);

impl ClusterSource for Fixed {
    async fn next_state(&mut self) -> Result<StateUpdate, SourceError> {
        match self.0.take() {
            Some(u) => Ok(u),
            None => std::future::pending().await,
        }
    }
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(5);
    let rates: Vec<u64> = if args.len() > 1 {
        args[1..].iter().filter_map(|s| s.parse().ok()).collect()
    } else {
        vec![10_000, 50_000, 100_000, 200_000, 400_000]
    };
    let snapshot = synthetic::snapshot();
    let events = synthetic::events(&snapshot, 200_000, verdict_schema::Timestamp::now());
    println!(
        "| offered events/s | delivered events/s | lost events | records generated | CPU (cores) | CPU per 10k events/s |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for rate in rates {
        let dir = tempfile::tempdir().expect("tempdir");
        let loaded = verdict_policy::manifests::load_str(
            &synthetic::cluster_yaml(),
            std::path::Path::new("synthetic.yaml"),
        )
        .expect("loads");
        let source = Fixed(Some(StateUpdate {
            state: loaded.state,
            ..StateUpdate::default()
        }));
        let config = AgentConfig {
            log_path: dir.path().join("policy_action.log"),
            max_log_bytes: 10 * 1024 * 1024,
            keep_log_files: 5,
            pipeline: PipelineConfig {
                node_name: "node-1".into(),
                rate_limit: 0,
                ..PipelineConfig::default()
            },
            ipblock_mode: IpBlockMode::DataplaneV2,
            event_queue: 65_536,
        };
        let agent = Agent::start(config, source, Clock::new())
            .await
            .expect("agent starts");
        let cpu0 = cpu_seconds();
        let t0 = Instant::now();
        let (mut sent, mut lost) = (0u64, 0u64);
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        let mut i = 0usize;
        let deadline = t0 + Duration::from_secs(seconds);
        while Instant::now() < deadline {
            tick.tick().await;
            let due = (t0.elapsed().as_secs_f64() * rate as f64) as u64;
            while sent + lost < due {
                let mut ev = events[i % events.len()].clone();
                ev.generation = 1;
                i += 1;
                match agent.events.try_send(ev) {
                    Ok(()) => sent += 1,
                    Err(_) => lost += 1,
                }
            }
        }
        let elapsed = t0.elapsed().as_secs_f64();
        let metrics = agent.metrics.clone();
        agent.shutdown().await;
        let cpu = (cpu_seconds() - cpu0) / elapsed;
        // Records generated (rotation keeps only the newest 5 × 10 MB on disk, so count them
        // from the metrics), and check that what is on disk parses.
        let generated = metrics.generated_logs_allow.get() + metrics.generated_logs_deny.get();
        let on_disk = std::fs::read_to_string(dir.path().join("policy_action.log")).expect("log");
        assert!(
            on_disk
                .lines()
                .all(|l| serde_json::from_str::<verdict_schema::PolicyActionRecord>(l).is_ok())
        );
        println!(
            "| {rate} | {:.0} | {lost} | {generated} | {cpu:.3} | {:.1} mCPU |",
            sent as f64 / elapsed,
            cpu * 1000.0 * 10_000.0 / (sent as f64 / elapsed).max(1.0)
        );
    }
}
