//! The `verdict-shipper` binary as an operator runs it, against the real collector on loopback:
//! kill -9 in the middle of a stream and restart (every record stored exactly once), SIGTERM
//! (flush and final checkpoint), malformed lines reported with file and offset, and start-up
//! errors that name the setting.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

struct Running {
    child: Child,
    metrics: SocketAddr,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(logs: &Path, state: &Path, grpc: SocketAddr, extra: &[&str]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_verdict-shipper"))
        .args(["--log-dir", logs.to_str().unwrap()])
        .args(["--checkpoint-dir", state.to_str().unwrap()])
        .args(["--collector", &format!("http://{grpc}")])
        .args([
            "--node-name",
            NODE,
            "--cluster",
            "cluster-a",
            "--project",
            "proj",
        ])
        .args([
            "--location",
            "europe-west1-b",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .args(["--poll-interval", "20ms", "--batch-max-age", "50ms"])
        .args([
            "--batch-max-records",
            "500",
            "--checkpoint-interval",
            "100ms",
        ])
        .args(["--backoff-initial", "20ms", "--backoff-max", "300ms"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the shipper binary starts");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let captured = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let c = std::sync::Arc::clone(&captured);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut s = c.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("verdict-shipper started metrics=") {
                let _ = tx.send(addr.parse::<SocketAddr>().unwrap());
            }
        }
    });
    let metrics = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("the shipper did not start: {}", captured.lock().unwrap()));
    Running {
        child,
        metrics,
        stderr: captured,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_mid_stream_then_restart_stores_every_record_once() {
    let (_g, dir) = tempdir();
    let logs = dir.join("logs");
    let state = dir.join("state");
    std::fs::create_dir_all(&logs).unwrap();
    let served = Served::start(collector_config(&dir)).await;
    let total = 6_000u64;

    // The probe's side: a writer appending and rotating (GKE style) the whole time.
    let path = logs.join("policy_action.log");
    let writer = std::thread::spawn(move || {
        let mut log = RotatingLog::new(path, 200_000, 5);
        for i in 1..=total {
            log.write_line(&flow(i));
            if i % 100 == 0 {
                std::thread::sleep(Duration::from_millis(15));
            }
        }
        log.rotations
    });

    let mut shipper = start(&logs, &state, served.grpc, &[]);
    let deadline = Instant::now() + Duration::from_secs(120);
    for kill_at in [1_500u64, 3_500] {
        while flows_stored(&served) < kill_at {
            assert!(Instant::now() < deadline, "no progress");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // SIGKILL: no flush, no final checkpoint.
        shipper.child.kill().unwrap();
        shipper.child.wait().unwrap();
        shipper = start(&logs, &state, served.grpc, &[]);
    }
    let rotations = writer.join().unwrap();
    assert!(rotations >= 5, "{rotations} rotations");
    while flows_stored(&served) < total {
        assert!(
            Instant::now() < deadline,
            "stored {} of {total}; shipper: {}",
            flows_stored(&served),
            shipper.stderr.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // SIGTERM: a clean stop writes the final checkpoint.
    let pid = shipper.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = shipper.child.wait().unwrap();
    assert!(status.success(), "{status:?}");

    let stored = stored_flows(&served).await;
    assert_eq!(stored.len() as u64, total, "nothing lost, nothing twice");
    let counts = payload_counts(&stored);
    for i in 1..=total {
        assert_eq!(counts.get(&canonical(&flow(i))), Some(&1), "record {i}");
    }
    let dups = served.collector.metrics().writer.records_deduplicated.get();
    println!("records re-sent after the kills and dropped by the collector as duplicates: {dups}");
    let cp = std::fs::read_to_string(state.join("policy_action.checkpoint.json")).unwrap();
    assert!(cp.contains("\"offset\""), "{cp}");
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_lines_are_reported_with_file_and_offset() {
    let (_g, dir) = tempdir();
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let served = Served::start(collector_config(&dir)).await;
    let path = logs.join("policy_action.log");
    let good = flow(1);
    let bad = r#"{"connection": "nope"}"#;
    std::fs::write(&path, format!("{good}\nnot json\n{bad}\n{}\n", flow(2))).unwrap();
    let shipper = start(&logs, &dir.join("state"), served.grpc, &[]);
    eventually(Duration::from_secs(60), "two records stored", || {
        flows_stored(&served) >= 2
    })
    .await;
    let not_json_at = good.len() + 1;
    let bad_ends_at = not_json_at + "not json\n".len() + bad.len() + 1;
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let err = shipper.stderr.lock().unwrap().clone();
        let first = format!("{} offset {not_json_at}", path.display());
        let second = format!("line ending at offset {bad_ends_at}");
        if err.contains(&first) && err.contains(&second) {
            break;
        }
        assert!(
            Instant::now() < end,
            "expected {first:?} and {second:?} in:\n{err}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m = collector::http_get(shipper.metrics, "/metrics").await;
    assert_eq!(
        metric(
            &m,
            "verdict_shipper_records_dropped_total{input=\"policy_action\",reason=\"malformed\"}"
        ),
        Some(2.0)
    );
    drop(shipper);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_shipper_on_the_same_checkpoint_dir_is_refused() {
    let (_g, dir) = tempdir();
    let logs = dir.join("logs");
    let state = dir.join("state");
    std::fs::create_dir_all(&logs).unwrap();
    let served = Served::start(collector_config(&dir)).await;
    std::fs::write(logs.join("policy_action.log"), format!("{}\n", flow(1))).unwrap();
    let first = start(&logs, &state, served.grpc, &[]);
    eventually(Duration::from_secs(60), "the first shipper ships", || {
        flows_stored(&served) >= 1
    })
    .await;

    // Same directory, second process: refused before it reads anything.
    let out = Command::new(env!("CARGO_BIN_EXE_verdict-shipper"))
        .args(["--log-dir", logs.to_str().unwrap()])
        .args(["--checkpoint-dir", state.to_str().unwrap()])
        .args(["--collector", &format!("http://{}", served.grpc)])
        .args(["--node-name", NODE, "--project", "proj"])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let pid = format!("pid {}", first.child.id());
    assert!(
        err.contains("checkpoint-dir")
            && err.contains("in use by another verdict-shipper")
            && err.contains(&pid),
        "{err}"
    );

    // The lock goes with the process, however it ends: after kill -9 a new one starts.
    drop(first);
    let again = start(&logs, &state, served.grpc, &[]);
    std::fs::write(
        logs.join("policy_action.log"),
        format!("{}\n{}\n", flow(1), flow(2)),
    )
    .unwrap();
    eventually(
        Duration::from_secs(60),
        "the restarted shipper ships",
        || flows_stored(&served) >= 2,
    )
    .await;
    drop(again);
    served.stop().await;
}

#[test]
fn unusable_settings_are_named_and_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_verdict-shipper"))
        .args(["--collector", "127.0.0.1:9000", "--project", ""])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("collector: must be an http:// or https:// URL"),
        "{err}"
    );
    assert!(err.contains("project: must not be empty"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_checkpoint_is_moved_aside_and_nothing_is_lost_or_stored_twice() {
    let (_g, dir) = tempdir();
    let logs = dir.join("logs");
    let state = dir.join("state");
    std::fs::create_dir_all(&logs).unwrap();
    let served = Served::start(collector_config(&dir)).await;
    let path = logs.join("policy_action.log");
    std::fs::write(&path, format!("{}\n{}\n{}\n", flow(1), flow(2), flow(3))).unwrap();
    let mut first = start(&logs, &state, served.grpc, &[]);
    eventually(Duration::from_secs(60), "three records stored", || {
        flows_stored(&served) >= 3
    })
    .await;
    let pid = first.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(first.child.wait().unwrap().success());

    // A torn or overwritten checkpoint: before the fix every start failed on it (a crash loop
    // that silenced the node).
    let cp = state.join("policy_action.checkpoint.json");
    std::fs::write(&cp, b"{\"generation\": {\"dev\": 1, \"in\x00\xff garbage").unwrap();
    std::fs::write(
        &path,
        format!("{}\n{}\n{}\n{}\n", flow(1), flow(2), flow(3), flow(4)),
    )
    .unwrap();
    let second = start(&logs, &state, served.grpc, &[]);
    eventually(Duration::from_secs(60), "the fourth record stored", || {
        flows_stored(&served) >= 4
    })
    .await;
    let aside = state.join("policy_action.checkpoint.json.corrupt");
    assert!(
        aside.exists(),
        "the unreadable checkpoint is kept for inspection"
    );
    let err = second.stderr.lock().unwrap().clone();
    assert!(
        err.contains(&format!("{}: not a checkpoint", cp.display()))
            && err.contains("reading the input from its beginning"),
        "{err}"
    );
    let m = collector::http_get(second.metrics, "/metrics").await;
    assert_eq!(
        metric(
            &m,
            "verdict_shipper_checkpoints_discarded_total{input=\"policy_action\"}"
        ),
        Some(1.0)
    );
    // Read again from the beginning; the collector dropped what it already had.
    let stored = stored_flows(&served).await;
    assert_eq!(stored.len(), 4, "nothing lost, nothing twice");
    let counts = payload_counts(&stored);
    for i in 1..=4 {
        assert_eq!(counts.get(&canonical(&flow(i))), Some(&1), "record {i}");
    }
    drop(second);
    served.stop().await;
}
