//! The write-ahead log's disk fills up: the batches of the group that could not be written are
//! refused (nothing acknowledged is lost), the failed write is undone, and ingest resumes on
//! its own once there is space again — before, it stopped until the collector was restarted.
//! Needs root (a 4 MiB tmpfs for the WAL); in CI it fails rather than skips without it.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::*;
use verdict_collector::Table;
use verdict_schema::proto::v1;

fn root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs at {}", at.display());
        Tmpfs(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the file system of `dir` with `filler` until no byte more fits.
fn fill(filler: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(filler).unwrap();
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).and_then(|()| f.flush()).is_ok() {}
    let _ = f.sync_all();
}

fn flows(from: u64, n: u64) -> Vec<v1::Record> {
    (from..from + n)
        .map(|s| {
            json_record(
                s,
                v1::LogId::PolicyAction,
                &flow_json("n1", s, 1_767_225_600),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_its_batches_and_ingest_resumes_when_space_is_back() {
    if !require(
        root(),
        "the WAL failure test needs root (it mounts a tmpfs)",
    ) {
        return;
    }
    let (_guard, dir) = tempdir();
    let wal = dir.join("wal");
    let mount = Tmpfs::mount(&wal, "4m");
    let mut cfg = config(&dir);
    cfg.wal.dir = Some(wal.clone());
    cfg.wal.segment_bytes = verdict_collector::config::ByteSize(1 << 20);
    let served = Served::start(cfg.clone()).await;
    let mut s = served.stream().await;
    assert_eq!(
        s.call(&batch("n1", "src", 1, flows(1, 100))).await.stored,
        100
    );

    let filler = wal.join("filler");
    fill(&filler);
    s.send(&batch("n1", "src", 2, flows(101, 200))).await;
    let refused = s.next().await;
    let status = refused.expect_err("a batch the disk cannot take is not acknowledged");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("not durable"), "{status:?}");
    // Still full: refused again, the collector stays up and says why.
    let mut s = served.stream().await;
    s.send(&batch("n1", "src", 2, flows(101, 200))).await;
    assert!(s.next().await.is_err());
    assert!(http_get(served.http, "/healthz").await.contains("ok"));

    // Space is back: the same batch is stored, and what follows, without a restart.
    std::fs::remove_file(&filler).unwrap();
    let mut stored = None;
    for _ in 0..50 {
        let mut s = served.stream().await;
        s.send(&batch("n1", "src", 2, flows(101, 200))).await;
        if let Ok(r) = s.next().await {
            stored = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = stored.expect("ingest resumed once the disk had space");
    assert_eq!((r.stored, r.rejection), (200, None));
    let mut s = served.stream().await;
    assert_eq!(
        s.call(&batch("n1", "src", 3, flows(301, 50))).await.stored,
        50
    );

    // Killed now: the WAL replays cleanly (the failed write left no torn entry) and every
    // acknowledged record is there once.
    served.abandon().await;
    let served = Served::start(cfg).await;
    served.collector.flush().await.unwrap();
    let rows = committed_rows(&served.collector, Table::Flows).await;
    assert_eq!(rows, 350);
    served.stop().await;
    drop(mount);
}
