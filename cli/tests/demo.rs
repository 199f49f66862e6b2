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
        let dir = tempfile::tempdir().unwrap();
        let (grpc, http) = (free_port(), free_port());
        let child = verdict()
            .args(["demo", "--datapath", datapath, "--duration", duration])
            .args(["--status-every", "2s", "--speed", "3"])
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
