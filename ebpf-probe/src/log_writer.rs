//! Writing `policy_action.log` and `policy_action_loss.log` on a dedicated thread, so disk IO never
//! blocks the async runtime. Files are rotated GKE's way: when the next line would take the file
//! past `max_bytes` (10 MB), `policy_action.log` becomes `policy_action.log.1` (older ones shift
//! up) and at most `keep` (5) previous files are kept. Rotation happens between lines only.
//!
//! A write that fails loses its records: they are counted (`policy_logging_write_failures_total`)
//! and a `write_failure` loss marker is attempted in the loss log.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::mpsc;
use verdict_schema::{Disposition, LossMarker, LossReason, PolicyActionRecord, Timestamp};

use crate::metrics::Metrics;

/// GKE's rotation size.
pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;
/// GKE keeps five previous files.
pub const DEFAULT_KEEP: usize = 5;

/// One append-only JSON-lines file with size-based rotation.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: BufWriter<File>,
    size: u64,
}

impl RotatingFile {
    /// Opens (appending to) `path`, creating its folder.
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_owned(),
            max_bytes,
            keep,
            file: BufWriter::with_capacity(64 * 1024, file),
            size,
        })
    }

    fn numbered(&self, n: usize) -> PathBuf {
        let mut s = self.path.as_os_str().to_owned();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for n in (1..self.keep).rev() {
                let from = self.numbered(n);
                if from.exists() {
                    std::fs::rename(&from, self.numbered(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.numbered(1))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.file = BufWriter::with_capacity(64 * 1024, file);
        self.size = 0;
        Ok(())
    }

    /// Appends complete lines (each ending in `\n`), rotating between lines as needed. Returns the
    /// number of bytes of `lines` written before an error, with the error.
    pub fn write_lines(&mut self, lines: &[u8]) -> Result<(), (usize, io::Error)> {
        let mut done = 0;
        while done < lines.len() {
            let room = self.max_bytes.saturating_sub(self.size);
            // Take as many whole lines as fit; at least one into an empty file.
            let rest = &lines[done..];
            let mut take = 0;
            for (i, b) in rest.iter().enumerate() {
                if *b == b'\n' {
                    if (i + 1) as u64 <= room {
                        take = i + 1;
                    } else {
                        break;
                    }
                }
            }
            if take == 0 {
                if self.size > 0 {
                    self.rotate().map_err(|e| (done, e))?;
                    continue;
                }
                take = rest
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(rest.len(), |i| i + 1);
            }
            self.file.write_all(&rest[..take]).map_err(|e| (done, e))?;
            self.size += take as u64;
            done += take;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// What the pipeline hands the writer: complete JSON lines for each file.
#[derive(Debug, Default)]
pub struct Output {
    pub records: Vec<u8>,
    pub loss_markers: Vec<u8>,
}

/// The writer thread and the channel that feeds it.
#[derive(Debug)]
pub struct LogWriter {
    pub sender: mpsc::Sender<Output>,
    handle: std::thread::JoinHandle<()>,
}

/// The loss log's path: `policy_action_loss.log` beside `policy_action.log`.
pub fn loss_log_path(log_path: &Path) -> PathBuf {
    log_path.with_file_name("policy_action_loss.log")
}

impl LogWriter {
    /// Opens both files (failing now, with the path, if they can't be) and starts the thread.
    pub fn spawn(
        log_path: &Path,
        max_bytes: u64,
        keep: usize,
        node_name: String,
        metrics: Arc<Metrics>,
    ) -> io::Result<Self> {
        let with_path = |p: &Path, e: io::Error| {
            io::Error::new(e.kind(), format!("opening {}: {e}", p.display()))
        };
        let mut records =
            RotatingFile::open(log_path, max_bytes, keep).map_err(|e| with_path(log_path, e))?;
        let loss_path = loss_log_path(log_path);
        let mut losses = RotatingFile::open(&loss_path, max_bytes, keep)
            .map_err(|e| with_path(&loss_path, e))?;
        let (sender, mut rx) = mpsc::channel::<Output>(64);
        let handle = std::thread::Builder::new()
            .name("policy-log-writer".into())
            .spawn(move || {
                while let Some(out) = rx.blocking_recv() {
                    if let Err((written, e)) = records
                        .write_lines(&out.records)
                        .and_then(|()| records.flush().map_err(|e| (out.records.len(), e)))
                    {
                        let failed = &out.records[written.min(out.records.len())..];
                        tracing::error!(error = %e, "writing policy_action.log failed");
                        let markers = write_failure_markers(failed, &node_name);
                        let n: u64 = markers.iter().map(|m| m.dropped_records).sum();
                        metrics.write_failures.inc_by(n.max(1));
                        let mut buf = Vec::new();
                        for m in markers {
                            let _ = serde_json::to_writer(&mut buf, &m);
                            buf.push(b'\n');
                        }
                        let _ = losses.write_lines(&buf);
                    }
                    if !out.loss_markers.is_empty()
                        && let Err((_, e)) = losses
                            .write_lines(&out.loss_markers)
                            .and_then(|()| losses.flush().map_err(|e| (0, e)))
                    {
                        tracing::error!(error = %e, "writing policy_action_loss.log failed");
                    }
                }
                let _ = records.flush();
                let _ = losses.flush();
            })?;
        Ok(LogWriter { sender, handle })
    }

    /// Closes the channel and waits for everything sent to be written.
    pub async fn finish(self) {
        drop(self.sender);
        let handle = self.handle;
        let _ = tokio::task::spawn_blocking(move || handle.join()).await;
    }
}

/// Loss markers for lines that could not be written, by disposition.
fn write_failure_markers(lines: &[u8], node_name: &str) -> Vec<LossMarker> {
    let mut by: BTreeMap<Option<Disposition>, (u64, u64)> = BTreeMap::new();
    for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let (d, c) = match serde_json::from_slice::<PolicyActionRecord>(line) {
            Ok(r) => (Some(r.disposition), r.count),
            Err(_) => (None, 1),
        };
        let e = by.entry(d).or_default();
        e.0 += 1;
        e.1 += c;
    }
    let now = Timestamp::now();
    by.into_iter()
        .map(|(disposition, (records, connections))| LossMarker {
            timestamp: now,
            interval_start: now,
            node_name: node_name.to_owned(),
            reason: LossReason::WriteFailure,
            disposition,
            dropped_records: records,
            dropped_connections: connections,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_between_lines_and_keeps_n_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("policy_action.log");
        let mut f = RotatingFile::open(&p, 100, 2).unwrap();
        let line = format!("{}\n", "x".repeat(39)); // 40 bytes: two per file
        for _ in 0..9 {
            f.write_lines(line.as_bytes()).unwrap();
        }
        f.flush().unwrap();
        let size = |n: &str| std::fs::metadata(d.path().join(n)).map(|m| m.len()).ok();
        assert_eq!(size("policy_action.log"), Some(40));
        assert_eq!(size("policy_action.log.1"), Some(80));
        assert_eq!(size("policy_action.log.2"), Some(80));
        assert_eq!(
            size("policy_action.log.3"),
            None,
            "only two previous files kept"
        );
    }

    #[test]
    fn a_line_longer_than_the_limit_still_goes_into_a_fresh_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.log");
        let mut f = RotatingFile::open(&p, 10, 1).unwrap();
        f.write_lines(b"short\n").unwrap();
        f.write_lines(b"a much longer line than ten bytes\n")
            .unwrap();
        f.flush().unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "a much longer line than ten bytes\n"
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join("a.log.1")).unwrap(),
            "short\n"
        );
    }

    #[test]
    fn reopening_appends() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.log");
        RotatingFile::open(&p, 1000, 1)
            .unwrap()
            .write_lines(b"one\n")
            .unwrap();
        let mut f = RotatingFile::open(&p, 1000, 1).unwrap();
        f.write_lines(b"two\n").unwrap();
        f.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "one\ntwo\n");
    }
}
