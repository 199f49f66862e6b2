//! The alert history: every alert that fired or resolved, one JSON object per line in
//! `DATA_DIR/alerts/history.jsonl` (appended and fsynced), compacted to its newest half past
//! `alerts.history_max_bytes` (the alerts still firing are always kept). After a restart the
//! alerts firing in it are put back into the detectors, so they are neither fired again nor
//! left unresolved.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read as _, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use verdict_schema::Timestamp;

use super::engine::{Alert, Change};

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub time: Timestamp,
    /// `fired` or `resolved`.
    pub change: String,
    pub alert: Alert,
}

/// The history file.
#[derive(Debug)]
pub struct History {
    path: PathBuf,
    file: File,
    bytes: u64,
    max_bytes: u64,
}

/// A line longer than this is not an entry this collector wrote (skipped when read).
const MAX_LINE: usize = 1 << 20;

impl History {
    /// Opens (creating) the history in `dir`; returns it with its entries, oldest first. Lines
    /// that do not parse (a torn last line after a crash) are skipped and reported.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<(History, Vec<HistoryEntry>)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("history.jsonl");
        let entries = read(&path)?;
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let bytes = file.metadata()?.len();
        Ok((
            History {
                path,
                file,
                bytes,
                max_bytes,
            },
            entries,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends an entry (fsynced); compacts when the file passed its bound.
    pub fn append(&mut self, entry: &HistoryEntry) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.sync_data()?;
        self.bytes += line.len() as u64;
        if self.bytes > self.max_bytes {
            self.compact()?;
        }
        Ok(())
    }

    /// Keeps the newest half of the bound (and every entry of an alert still firing).
    fn compact(&mut self) -> std::io::Result<()> {
        let entries = read(&self.path)?;
        let firing = active(&entries);
        let mut keep: Vec<&HistoryEntry> = Vec::new();
        let mut size = 0u64;
        for e in entries.iter().rev() {
            let len = serde_json::to_vec(e).map_or(0, |v| v.len() as u64 + 1);
            let still_firing = e.change == "fired" && firing.iter().any(|a| a.id == e.alert.id);
            if size + len <= self.max_bytes / 2 || still_firing {
                size += len;
                keep.push(e);
            }
        }
        keep.reverse();
        let tmp = self.path.with_extension("jsonl.tmp");
        {
            let mut f = File::create(&tmp)?;
            for e in &keep {
                let mut line = serde_json::to_vec(e).map_err(std::io::Error::other)?;
                line.push(b'\n');
                f.write_all(&line)?;
            }
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.bytes = size;
        Ok(())
    }

    /// The newest `limit` entries, newest first.
    pub fn recent(&self, limit: usize) -> std::io::Result<Vec<HistoryEntry>> {
        let mut entries = read(&self.path)?;
        entries.reverse();
        entries.truncate(limit);
        Ok(entries)
    }
}

fn read(path: &Path) -> std::io::Result<Vec<HistoryEntry>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let mut number = 0usize;
    loop {
        line.clear();
        // Bounded: a line is read up to MAX_LINE bytes, the rest of it skipped.
        let n = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        number += 1;
        if line.len() > MAX_LINE {
            tracing::warn!(path = %path.display(), line = number, "alert history: skipping an over-long line");
            let mut rest = Vec::new();
            reader.read_until(b'\n', &mut rest)?;
            continue;
        }
        match serde_json::from_slice::<HistoryEntry>(&line) {
            Ok(e) => out.push(e),
            Err(e) => {
                tracing::warn!(path = %path.display(), line = number, error = %e, "alert history: skipping a line that does not parse")
            }
        }
    }
    Ok(out)
}

/// The alerts firing at the end of `entries` (fired, not resolved since).
pub fn active(entries: &[HistoryEntry]) -> Vec<Alert> {
    let mut by_id: HashMap<&str, &HistoryEntry> = HashMap::new();
    for e in entries {
        by_id.insert(e.alert.id.as_str(), e);
    }
    let mut out: Vec<Alert> = by_id
        .into_values()
        .filter(|e| e.change == "fired")
        .map(|e| e.alert.clone())
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// The history line of an event (`Resent` events are not kept).
pub fn entry(change: Change, alert: &Alert, now: Timestamp) -> Option<HistoryEntry> {
    let change = match change {
        Change::Fired => "fired",
        Change::Resolved => "resolved",
        Change::Resent => return None,
    };
    Some(HistoryEntry {
        time: now,
        change: change.to_owned(),
        alert: alert.clone(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn alert(id: &str) -> Alert {
        Alert {
            id: id.into(),
            rule: "r".into(),
            kind: "threshold".into(),
            severity: "warning".into(),
            scope: "dest_namespace".into(),
            scope_value: "shop".into(),
            labels: BTreeMap::new(),
            value: 1.0,
            threshold: 1.0,
            summary: "s".repeat(200),
            filter: String::new(),
            sql_condition: "TRUE".into(),
            status: "firing".into(),
            started_at: Timestamp::from_unix_nanos(1),
            resolved_at: None,
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn a_torn_or_foreign_line_is_skipped_and_the_rest_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let (mut h, entries) = History::open(dir.path(), 1 << 20).unwrap();
        assert!(entries.is_empty());
        h.append(&entry(Change::Fired, &alert("a"), Timestamp::from_unix_nanos(5)).unwrap())
            .unwrap();
        drop(h);
        let path = dir.path().join("history.jsonl");
        let mut text = std::fs::read(&path).unwrap();
        text.extend_from_slice(b"{\"not\": \"an entry\"}\n");
        text.extend_from_slice(&vec![b'x'; MAX_LINE + 10]);
        text.extend_from_slice(b"\n{\"time\":\"2026-01-01T00:00:00Z\",\"change\":\"fi");
        std::fs::write(&path, text).unwrap();
        let (_, entries) = History::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(active(&entries)[0].id, "a");
    }

    #[test]
    fn resolved_alerts_are_not_active_and_compaction_keeps_the_firing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (mut h, _) = History::open(dir.path(), 64 << 10).unwrap();
        let t = Timestamp::from_unix_nanos(1);
        h.append(&entry(Change::Fired, &alert("old"), t).unwrap())
            .unwrap();
        assert!(entry(Change::Resent, &alert("old"), t).is_none());
        for i in 0..400 {
            let a = alert(&format!("x{i}"));
            h.append(&entry(Change::Fired, &a, t).unwrap()).unwrap();
            h.append(&entry(Change::Resolved, &a, t).unwrap()).unwrap();
        }
        let size = std::fs::metadata(h.path()).unwrap().len();
        assert!(size <= 64 << 10, "{size}");
        let (_, entries) = History::open(dir.path(), 64 << 10).unwrap();
        let firing = active(&entries);
        assert_eq!(firing.len(), 1, "{firing:?}");
        assert_eq!(firing[0].id, "old");
        assert_eq!(h.recent(1).unwrap()[0].change, "resolved");
    }
}
