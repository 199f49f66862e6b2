//! The node agent reading cluster state from the Kubernetes API. No API server can run on this
//! machine: these tests use the fake one on loopback (`verdict_cluster::fake_apiserver`, written
//! from the Kubernetes API reference), seeded with the objects of `examples/allow-green`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use verdict_cluster::api::{ApiOptions, ApiSource, ApiSourceOptions, connect};
use verdict_cluster::fake_apiserver::FakeApiServer;
use verdict_policy::IpBlockMode;
use verdict_policy::engine::EnforcementMode;
use verdict_probe::agent::{Agent, AgentConfig};
use verdict_probe::clock::Clock;
use verdict_probe::datapath::{Attempt, DEFAULT_IDLE_WINDOW, UserspaceDatapath};
use verdict_probe::log_writer::{DEFAULT_KEEP, DEFAULT_MAX_BYTES};
use verdict_probe::pipeline::PipelineConfig;
use verdict_schema::{PolicyActionRecord, Protocol};

const TOKEN: &str = "probe-token";
const NODE: &str = "gke-demo-default-pool-5dad52ed-k0h1";
const GREEN: &str = "10.84.0.252";
const RED: &str = "10.84.0.180";
const SERVICE: &str = "10.84.0.165";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A fake API server holding the example's objects, and a kubeconfig for it.
async fn cluster(dir: &Path) -> (FakeApiServer, PathBuf) {
    let server = FakeApiServer::start(TOKEN).await;
    server
        .apply_manifest_dir(&repo().join("examples/allow-green"))
        .unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, server.kubeconfig()).unwrap();
    (server, kubeconfig)
}

fn records(log: &Path) -> Vec<PolicyActionRecord> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_probe_binary_enforces_the_state_the_api_server_holds() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (server, kubeconfig) = runtime.block_on(cluster(dir.path()));
    let attempts = dir.path().join("attempts.jsonl");
    std::fs::write(
        &attempts,
        format!(
            "{{\"src_ip\":\"{GREEN}\",\"dest_ip\":\"{SERVICE}\",\"src_port\":1001,\"dest_port\":8080,\"protocol\":\"tcp\"}}\n\
             {{\"src_ip\":\"{RED}\",\"dest_ip\":\"{SERVICE}\",\"src_port\":1002,\"dest_port\":8080,\"protocol\":\"tcp\"}}\n"
        ),
    )
    .unwrap();
    let log = dir.path().join("policy_action.log");
    let probe = |kubeconfig: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_verdict-probe"))
            .args(["--kubeconfig", kubeconfig.to_str().unwrap()])
            .args(["--log-path", log.to_str().unwrap()])
            .args(["--metrics-addr", "127.0.0.1:0", "--node-name", NODE])
            .args(["--attempts", attempts.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let out = probe(&kubeconfig);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = records(&log);
    assert_eq!(r.len(), 2, "{r:#?}");
    assert_eq!(r[0].policies.as_ref().unwrap()[0].name, "allow-green");
    assert_eq!(
        r[0].src.pod().map(|p| p.pod_name.as_str()),
        Some("client-green-7b78d7c957-68mv4")
    );
    assert_eq!(r[1].disposition, verdict_schema::Disposition::Deny);

    // Without the right to list NetworkPolicies the agent does not start, and says what to grant.
    server.set_forbidden("networkpolicies", true);
    let out = probe(&kubeconfig);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("forbidden")
            && stderr.contains("networkpolicies")
            && stderr.contains("grant"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_outage_keeps_the_last_state_in_force_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (server, kubeconfig) = cluster(dir.path()).await;
    let client = connect(&ApiOptions {
        kubeconfig: Some(kubeconfig),
        context: None,
    })
    .await
    .unwrap();
    let source = ApiSource::start(
        client,
        ApiSourceOptions {
            settle: Duration::from_millis(20),
            probe_interval: Duration::from_millis(100),
            ..ApiSourceOptions::default()
        },
    );
    let config = AgentConfig {
        log_path: dir.path().join("policy_action.log"),
        max_log_bytes: DEFAULT_MAX_BYTES,
        keep_log_files: DEFAULT_KEEP,
        pipeline: PipelineConfig {
            node_name: NODE.into(),
            ..PipelineConfig::default()
        },
        ipblock_mode: IpBlockMode::DataplaneV2,
        event_queue: 1024,
    };
    let agent = Agent::start(config, source, Clock::new()).await.unwrap();
    let judge = |agent: &Agent, src: &str| {
        let mut datapath = UserspaceDatapath::new(
            agent.snapshots.borrow().clone(),
            None,
            EnforcementMode::Enforce,
            DEFAULT_IDLE_WINDOW,
        );
        let a = Attempt {
            src_ip: src.parse().unwrap(),
            dest_ip: SERVICE.parse().unwrap(),
            src_port: 4000,
            dest_port: 8080,
            protocol: Protocol::Tcp,
            timestamp: None,
        };
        datapath
            .process(&a, agent.clock.now(), &mut Vec::new())
            .delivered
    };
    assert!(judge(&agent, GREEN) && !judge(&agent, RED));
    let stale = |agent: &Agent| {
        agent
            .metrics
            .render()
            .lines()
            .any(|l| l == "verdict_probe_cluster_state_stale 1")
    };
    assert!(
        !stale(&agent),
        "{:?}",
        agent.status.state_error.lock().unwrap()
    );

    server.stop();
    eventually("the stale metric", || stale(&agent)).await;
    let error = agent.status.state_error.lock().unwrap().clone().unwrap();
    assert!(error.contains("enforcing the last state"), "{error}");
    // The last state stays in force.
    assert!(judge(&agent, GREEN) && !judge(&agent, RED));

    server.resume().await;
    eventually("the state current again", || !stale(&agent)).await;
    // And changes flow again: deleting the policy un-isolates the service.
    server.delete("NetworkPolicy", "default", "allow-green");
    eventually("the policy deleted", || judge(&agent, RED)).await;
    agent.shutdown().await;
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}
