//! The agent wired together — watched manifest folder, datapath, pipeline, writer thread, metrics —
//! on a paused tokio clock (no sleeping): live policy changes, an invalid NetworkLogging, rotation
//! and the metrics endpoint. Plus the `verdict-probe` binary run as a user runs it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use verdict_cluster::ManifestDirSource;
use verdict_policy::IpBlockMode;
use verdict_policy::engine::EnforcementMode;
use verdict_probe::agent::{Agent, AgentConfig};
use verdict_probe::clock::Clock;
use verdict_probe::datapath::{Attempt, DEFAULT_IDLE_WINDOW, Datapath, UserspaceDatapath};
use verdict_probe::log_writer::{DEFAULT_KEEP, DEFAULT_MAX_BYTES, RotatingFile};
use verdict_probe::pipeline::PipelineConfig;
use verdict_schema::{PolicyActionRecord, Protocol, Timestamp};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

const T0: &str = "2026-03-01T10:00:00Z";
const GREEN: &str = "10.84.0.252";
const RED: &str = "10.84.0.180";
const SERVICE: &str = "10.84.0.165";

struct Setup {
    _dir: tempfile::TempDir,
    manifests: PathBuf,
    log: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    for f in ["cluster.yaml", "policies.yaml", "network-logging.yaml"] {
        std::fs::copy(
            repo().join("examples/allow-green").join(f),
            manifests.join(f),
        )
        .unwrap();
    }
    let log = dir.path().join("log/policy_action.log");
    Setup {
        _dir: dir,
        manifests,
        log,
    }
}

fn config(log: &Path) -> AgentConfig {
    AgentConfig {
        log_path: log.to_owned(),
        max_log_bytes: DEFAULT_MAX_BYTES,
        keep_log_files: DEFAULT_KEEP,
        pipeline: PipelineConfig {
            node_name: "gke-demo-default-pool-5dad52ed-k0h1".into(),
            ..PipelineConfig::default()
        },
        ipblock_mode: IpBlockMode::DataplaneV2,
        event_queue: 1024,
    }
}

async fn start(s: &Setup, config: AgentConfig) -> Agent {
    let source = ManifestDirSource::new(s.manifests.clone(), Duration::from_secs(1));
    Agent::start(
        config,
        source,
        Clock::starting_at(Timestamp::parse(T0).unwrap()),
    )
    .await
    .unwrap()
}

/// Lets the agent's tasks run until `cond` holds (no time passes).
async fn settle(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..100_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("timed out waiting for {what}");
}

async fn send(
    agent: &Agent,
    datapath: &mut UserspaceDatapath,
    src: &str,
    dest: &str,
    src_port: u16,
) -> bool {
    let a = Attempt {
        src_ip: src.parse().unwrap(),
        dest_ip: dest.parse().unwrap(),
        src_port,
        dest_port: 8080,
        protocol: Protocol::Tcp,
        timestamp: None,
    };
    let mut events = Vec::new();
    let d = datapath.process(&a, agent.clock.now(), &mut events);
    for ev in events {
        agent.events.send(ev).await.unwrap();
    }
    d.delivered
}

fn records(log: &Path) -> Vec<PolicyActionRecord> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn generation(agent: &Agent) -> u64 {
    agent.snapshots.borrow().generation
}

#[tokio::test(start_paused = true)]
async fn live_policy_change_applies_to_new_connections() {
    let s = setup();
    let agent = start(&s, config(&s.log)).await;
    let mut datapath = UserspaceDatapath::new(
        agent.snapshots.borrow().clone(),
        None,
        EnforcementMode::Enforce,
        DEFAULT_IDLE_WINDOW,
    );
    assert!(!send(&agent, &mut datapath, RED, SERVICE, 1000).await);

    // Let client-red in too.
    let policies = std::fs::read_to_string(s.manifests.join("policies.yaml")).unwrap();
    let widened = policies.replacen(
        "app: client-green\n",
        "app: client-green\n    - podSelector:\n        matchLabels:\n          app: client-red\n",
        1,
    );
    assert_ne!(widened, policies);
    std::fs::write(s.manifests.join("policies.yaml"), widened).unwrap();
    tokio::time::advance(Duration::from_millis(1100)).await;
    settle("the new generation", || generation(&agent) == 2).await;
    datapath.install(agent.snapshots.borrow().clone());
    assert!(
        send(&agent, &mut datapath, RED, SERVICE, 1001).await,
        "new connections follow the new policy"
    );

    // The deny window of the first attempt closes 5 s after it.
    tokio::time::advance(Duration::from_secs(4)).await;
    settle("the deny record", || {
        agent
            .metrics
            .render()
            .contains("policy_logging_generated_logs_total{disposition=\"deny\"} 1")
    })
    .await;
    agent.shutdown().await;
    let r = records(&s.log);
    assert_eq!(r.len(), 2, "{r:#?}");
    assert_eq!(r[0].disposition, verdict_schema::Disposition::Allow);
    assert_eq!(r[0].connection.src_port, 1001);
    assert_eq!(r[1].disposition, verdict_schema::Disposition::Deny);
    assert_eq!(r[1].connection.src_port, 1000);
    assert_eq!(r[1].timestamp, Timestamp::parse(T0).unwrap());
}

#[tokio::test(start_paused = true)]
async fn invalid_network_logging_keeps_the_previous_configuration() {
    let s = setup();
    let agent = start(&s, config(&s.log)).await;
    std::fs::write(
        s.manifests.join("network-logging.yaml"),
        "kind: NetworkLogging\napiVersion: networking.gke.io/v1alpha1\nmetadata: {name: default}\nspec:\n  cluster:\n    allow: {log: false, delegate: true}\n    deny: {log: false, delegate: false}\n",
    )
    .unwrap();
    tokio::time::advance(Duration::from_millis(1100)).await;
    settle("the rejected configuration", || generation(&agent) == 2).await;
    let error = agent
        .status
        .network_logging_error
        .lock()
        .unwrap()
        .clone()
        .unwrap();
    assert!(
        error.contains(
            "cluster allow log action is invalid: delegate cannot be true when log is false"
        ),
        "{error}"
    );
    assert!(
        agent
            .metrics
            .render()
            .contains("policy_logging_config_valid 0")
    );
    assert!(
        agent
            .metrics
            .render()
            .contains("policy_logging_config_errors_total 1")
    );

    // The previous configuration (log allows and denies) is still in force.
    let mut datapath = UserspaceDatapath::new(
        agent.snapshots.borrow().clone(),
        None,
        EnforcementMode::Enforce,
        DEFAULT_IDLE_WINDOW,
    );
    send(&agent, &mut datapath, GREEN, SERVICE, 7).await;

    // A broken manifest keeps the whole previous state, and says so.
    std::fs::write(
        s.manifests.join("broken.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nstatus: {podIP: nope}\n",
    )
    .unwrap();
    tokio::time::advance(Duration::from_millis(1100)).await;
    settle("the state error", || {
        agent.status.state_error.lock().unwrap().is_some()
    })
    .await;
    assert!(
        agent
            .status
            .state_error
            .lock()
            .unwrap()
            .as_ref()
            .unwrap()
            .contains("broken.yaml:4")
    );
    assert_eq!(generation(&agent), 2);

    // Fixing the NetworkLogging clears the error.
    std::fs::remove_file(s.manifests.join("broken.yaml")).unwrap();
    std::fs::copy(
        repo().join("examples/allow-green/network-logging.yaml"),
        s.manifests.join("network-logging.yaml"),
    )
    .unwrap();
    tokio::time::advance(Duration::from_millis(1100)).await;
    settle("the fixed configuration", || generation(&agent) == 3).await;
    assert!(agent.status.network_logging_error.lock().unwrap().is_none());
    assert!(
        agent
            .metrics
            .render()
            .contains("policy_logging_config_valid 1")
    );
    agent.shutdown().await;
    let r = records(&s.log);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].connection.src_port, 7);
}

#[tokio::test(start_paused = true)]
async fn rotation_keeps_five_files_through_the_agent() {
    let s = setup();
    let mut c = config(&s.log);
    c.max_log_bytes = 4_000;
    c.pipeline.rate_limit = 0;
    let agent = start(&s, c).await;
    let mut datapath = UserspaceDatapath::new(
        agent.snapshots.borrow().clone(),
        None,
        EnforcementMode::Enforce,
        DEFAULT_IDLE_WINDOW,
    );
    for port in 0..200 {
        send(&agent, &mut datapath, GREEN, SERVICE, port).await;
    }
    agent.shutdown().await;
    let dir = s.log.parent().unwrap();
    let mut total = 0;
    for n in [
        "policy_action.log",
        "policy_action.log.1",
        "policy_action.log.2",
        "policy_action.log.3",
        "policy_action.log.4",
        "policy_action.log.5",
    ] {
        let text = std::fs::read_to_string(dir.join(n)).unwrap_or_else(|e| panic!("{n}: {e}"));
        assert!(text.len() <= 4_000, "{n} is {} bytes", text.len());
        for line in text.lines() {
            serde_json::from_str::<PolicyActionRecord>(line).unwrap();
            total += 1;
        }
    }
    assert!(!dir.join("policy_action.log.6").exists());
    assert!(
        total < 200 && total > 30,
        "older records rotated away ({total} kept)"
    );
    // The newest record is in the current file.
    assert_eq!(records(&s.log).last().unwrap().connection.src_port, 199);
}

#[test]
fn gke_rotation_defaults_at_full_size() {
    assert_eq!((DEFAULT_MAX_BYTES, DEFAULT_KEEP), (10 * 1024 * 1024, 5));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy_action.log");
    let mut f = RotatingFile::open(&path, DEFAULT_MAX_BYTES, DEFAULT_KEEP).unwrap();
    let line = format!("{}\n", "r".repeat(999));
    let chunk = line.repeat(1000); // 1,000,000 bytes
    for _ in 0..65 {
        f.write_lines(chunk.as_bytes()).unwrap();
    }
    f.flush().unwrap();
    for n in 1..=5 {
        let len = std::fs::metadata(dir.path().join(format!("policy_action.log.{n}")))
            .unwrap()
            .len();
        assert!(
            len <= DEFAULT_MAX_BYTES && len > DEFAULT_MAX_BYTES - 1000,
            "file .{n}: {len}"
        );
    }
    assert!(!dir.path().join("policy_action.log.6").exists());
}

#[tokio::test]
async fn metrics_are_served_with_the_policy_logging_prefix() {
    let s = setup();
    let agent = start(&s, config(&s.log)).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = verdict_service::shutdown::CancellationToken::new();
    let server = tokio::spawn(verdict_service::metrics::serve(
        listener,
        agent.metrics.registry().clone(),
        stop.clone(),
    ));
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).await.unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    for name in [
        "policy_logging_allowed_connections_total",
        "policy_logging_denied_connections_total",
        "policy_logging_generated_logs_total{disposition=\"allow\"}",
        "policy_logging_ratelimit_dropped_logs_total",
        "policy_logging_ratelimit_dropped_connections_total",
        "policy_logging_aggregation_failures_total",
        "policy_logging_write_failures_total",
        "policy_logging_lost_events_total",
    ] {
        assert!(body.contains(name), "missing {name}");
    }
    stop.cancel();
    server.await.unwrap().unwrap();
    agent.shutdown().await;
}

#[test]
fn the_binary_logs_the_seed_example() {
    let dir = tempfile::tempdir().unwrap();
    let attempts = dir.path().join("attempts.jsonl");
    std::fs::write(
        &attempts,
        format!(
            "{{\"src_ip\":\"{GREEN}\",\"dest_ip\":\"{SERVICE}\",\"src_port\":52648,\"dest_port\":8080,\"protocol\":\"tcp\"}}\n\
             {{\"src_ip\":\"{RED}\",\"dest_ip\":\"{SERVICE}\",\"src_port\":39610,\"dest_port\":8080,\"protocol\":\"tcp\"}}\n\
             {{\"src_ip\":\"{RED}\",\"dest_ip\":\"{SERVICE}\",\"src_port\":39611,\"dest_port\":8080,\"protocol\":\"tcp\"}}\n"
        ),
    )
    .unwrap();
    let log = dir.path().join("policy_action.log");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_verdict-probe"))
        .args([
            "--manifests",
            repo().join("examples/allow-green").to_str().unwrap(),
            "--log-path",
            log.to_str().unwrap(),
            "--metrics-addr",
            "127.0.0.1:0",
            "--attempts",
            attempts.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = records(&log);
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].policies.as_ref().unwrap()[0].name, "allow-green");
    assert_eq!(
        (r[1].count, r[1].connection.src_port),
        (2, 39610),
        "stopping emits the open deny window"
    );
    assert!(dir.path().join("policy_action_loss.log").exists());

    // Bad input names the line; a bad manifest folder fails to start.
    std::fs::write(&attempts, "{\"src_ip\":\"nope\"}\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_verdict-probe"))
        .args([
            "--manifests",
            repo().join("examples/allow-green").to_str().unwrap(),
            "--log-path",
            log.to_str().unwrap(),
            "--metrics-addr",
            "127.0.0.1:0",
            "--attempts",
            attempts.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("attempts line 1"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_verdict-probe"))
        .args([
            "--manifests",
            "/nonexistent",
            "--log-path",
            log.to_str().unwrap(),
            "--metrics-addr",
            "127.0.0.1:0",
            "--attempts",
            attempts.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent"));
}
