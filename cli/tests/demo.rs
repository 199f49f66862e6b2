//! `verdict demo` as a new user runs it: it starts, says which datapath it uses and where to
//! look, the commands it suggests answer from the live collector, and a clean stop leaves every
//! record the node wrote stored exactly once. The eBPF run needs root (network namespaces,
//! eBPF) and fails under CI=true without it.

use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn verdict() -> Command {
    Command::new(env!("CARGO_BIN_EXE_verdict"))
}

struct Demo {
    child: Option<Child>,
    http: u16,
    dir: tempfile::TempDir,
}

impl Demo {
    fn start(datapath: &str, duration: &str) -> Demo {
        Demo::start_with(
            datapath,
            duration,
            &["--status-every", "2s", "--speed", "3"],
        )
    }

    fn start_with(datapath: &str, duration: &str, extra: &[&str]) -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let (grpc, http) = (free_port(), free_port());
        let child = verdict()
            .args(["demo", "--datapath", datapath, "--duration", duration])
            .args(extra)
            .arg("--dir")
            .arg(dir.path())
            .args(["--grpc-listen", &format!("127.0.0.1:{grpc}")])
            .args(["--http-listen", &format!("127.0.0.1:{http}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Demo {
            child: Some(child),
            http,
            dir,
        }
    }

    fn collector(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    /// Waits for the demo to stop; its folder stays until the returned handle is dropped.
    fn wait(mut self) -> (Output, tempfile::TempDir) {
        let out = self.child.take().unwrap().wait_with_output().unwrap();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (out, dir)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls the suggested `verdict logs read` until it returns denies from the live demo.
fn denies_while_running(demo: &Demo) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = verdict()
            .args([
                "logs",
                "read",
                r#"jsonPayload.disposition="deny""#,
                "--collector",
                &demo.collector(),
                "--format",
                "json",
            ])
            .output()
            .unwrap();
        let n = if out.status.success() {
            String::from_utf8_lossy(&out.stdout).lines().count()
        } else {
            0
        };
        if n > 0 || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// "stopped cleanly: W records written by the node, S stored by the collector; …"
fn written_and_stored(stderr: &str) -> (u64, u64) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("stopped cleanly:"))
        .unwrap_or_else(|| panic!("no clean stop:\n{stderr}"));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

fn check_run(datapath: &str) {
    let demo = Demo::start(datapath, "14s");
    let denies = denies_while_running(&demo);
    let (out, dir) = demo.wait();
    let manifests = dir.path().join("manifests");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("datapath: {datapath}")),
        "the banner says which datapath runs:\n{stdout}"
    );
    for suggested in ["verdict logs read", "verdict sql", "verdict policy explain"] {
        assert!(
            stdout.contains(suggested),
            "suggests {suggested}:\n{stdout}"
        );
    }
    assert!(stdout.contains("shipped"), "status lines:\n{stdout}");
    assert!(
        denies > 0,
        "the suggested logs read found no deny while the demo ran"
    );
    let (written, stored) = written_and_stored(&stderr);
    assert!(written > 0, "{stderr}");
    assert_eq!(written, stored, "every record the node wrote is stored");
    // The suggested `policy explain` works on the demo's manifests.
    let explain = verdict()
        .args(["policy", "explain", "--manifests"])
        .arg(&manifests)
        .arg("sandbox/rogue-client-8c7b6d5f4-zz9kd -> shop/redis-0:6379")
        .output()
        .unwrap();
    assert!(explain.status.success());
    assert!(
        String::from_utf8_lossy(&explain.stdout).contains("Verdict: DENIED"),
        "{}",
        String::from_utf8_lossy(&explain.stdout)
    );
}

#[test]
fn demo_with_the_userspace_datapath() {
    check_run("userspace");
}

#[test]
fn demo_with_the_ebpf_datapath_and_real_traffic() {
    let root = verdict_probe::lab::running_as_root();
    if !root {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "the eBPF demo needs root"
        );
        eprintln!("SKIPPED: the eBPF demo needs root");
        return;
    }
    check_run("ebpf");
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&netns.stdout).contains("vdemo-"),
        "the demo removes its namespaces"
    );
}

/// A GET of a JSON body over HTTP/1.0 (never chunked).
fn get_json(port: u16, path: &str) -> Option<serde_json::Value> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    serde_json::from_str(out.split_once("\r\n\r\n")?.1).ok()
}

/// `verdict demo --alertmanager URL`: the rogue client's port-scan burst (10 s after the start)
/// fires a deny alert for the attacked namespace in a real Alertmanager (Debian
/// `prometheus-alertmanager`) within 15 s, which then resolves; the demo prints both.
#[test]
fn demo_sends_the_port_scan_alert_to_alertmanager_and_resolves_it() {
    let bin = ["prometheus-alertmanager", "alertmanager"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    let Some(bin) = bin else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "Alertmanager (Debian prometheus-alertmanager) is required when CI=true"
        );
        eprintln!("SKIPPED: Alertmanager (Debian prometheus-alertmanager) is not installed");
        return;
    };
    let am_dir = tempfile::tempdir().unwrap();
    let config = am_dir.path().join("am.yml");
    std::fs::write(
        &config,
        "route:\n  receiver: none\nreceivers:\n  - name: none\n",
    )
    .unwrap();
    let am_port = free_port();
    let mut am = Command::new(bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.path={}",
            am_dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while get_json(am_port, "/api/v2/status").is_none() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = Instant::now();
    let am_url = format!("http://127.0.0.1:{am_port}");
    let demo = Demo::start_with(
        "userspace",
        "38s",
        &["--status-every", "10s", "--alertmanager", &am_url],
    );
    let shop_flood = |v: &serde_json::Value| {
        v.as_array().is_some_and(|a| {
            a.iter().any(|x| {
                x["labels"]["alertname"] == "VerdictDenyFlood"
                    && x["labels"]["dest_namespace"] == "shop"
            })
        })
    };
    let (mut fired, mut resolved) = (None, None);
    let mut listed = String::new();
    while started.elapsed() < Duration::from_secs(38) && resolved.is_none() {
        if let Some(v) = get_json(am_port, "/api/v2/alerts?active=true") {
            match (fired, shop_flood(&v)) {
                (None, true) => {
                    fired = Some(started.elapsed());
                    // `verdict alerts list` shows it too, with its top sources.
                    let out = verdict()
                        .args(["alerts", "list", "--collector", &demo.collector()])
                        .output()
                        .unwrap();
                    listed = String::from_utf8_lossy(&out.stdout).into_owned();
                }
                (Some(_), false) => resolved = Some(started.elapsed()),
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let history = verdict()
        .args([
            "alerts",
            "history",
            "--limit",
            "5",
            "--format",
            "json",
            "--collector",
            &demo.collector(),
        ])
        .output()
        .unwrap();
    let history: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap_or_default();
    let (out, _dir) = demo.wait();
    let _ = am.kill();
    let _ = am.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fired = fired
        .unwrap_or_else(|| panic!("no VerdictDenyFlood alert for shop in Alertmanager:\n{stdout}"));
    // The burst comes 10 s after the demo is up (which takes a second or two).
    assert!(
        fired < Duration::from_secs(10 + 15 + 3),
        "fired after {fired:?}"
    );
    let resolved = resolved.unwrap_or_else(|| panic!("the alert did not resolve:\n{stdout}"));
    assert!(resolved > fired);
    assert!(
        stdout.contains(&format!("sent to the Alertmanager at {am_url}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("ALERT fired VerdictDenyFlood dest_namespace=shop")
            && stdout.contains("top sources: sandbox/rogue-client-8c7b6d5f4-zz9kd"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ALERT resolved VerdictDenyFlood dest_namespace=shop"),
        "{stdout}"
    );
    assert!(
        listed.contains("VerdictDenyFlood")
            && listed.contains("dest_namespace=shop")
            && listed.contains("top_sources: sandbox/rogue-client"),
        "{listed}"
    );
    let changes: Vec<(&str, &str)> = history["entries"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["change"].as_str().unwrap_or(""),
                        e["alert"]["rule"].as_str().unwrap_or(""),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(
        changes.contains(&("resolved", "VerdictDenyFlood")),
        "{history}"
    );
    assert!(
        changes.contains(&("fired", "VerdictDenyFlood")),
        "{history}"
    );
}
