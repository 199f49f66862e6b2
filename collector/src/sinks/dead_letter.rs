//! The dead-letter file of a sink: records its destination refused for good (or kept refusing
//! past `delivery.max_attempts` while accepting others), one JSON object per line with the
//! error, so nothing is dropped silently and an operator can replay them. A batch of dead
//! letters is appended and fsynced before the sink's cursor moves past them. The file is bounded
//! (`delivery.max_dead_letter_bytes`): once full, further refused records are counted as
//! dropped (`reason="dead_letter_full"`) instead of filling the disk.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};

/// One refused record.
#[derive(Debug, Serialize)]
pub struct DeadLetter<'a> {
    pub sink: &'a str,
    pub destination: &'a str,
    /// When it was given up on (RFC 3339).
    pub time: String,
    pub error: &'a str,
    pub attempts: u32,
    /// The write-ahead log entry it came from.
    pub lsn: u64,
    /// The LogEntry as it would have been sent.
    pub entry: &'a serde_json::Value,
}

/// Appends dead letters to one file of bounded size.
#[derive(Debug, Clone)]
pub struct DeadLetterFile {
    path: PathBuf,
    max_bytes: u64,
}

/// What became of a batch of dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Written and fsynced.
    Written,
    /// Not written: the file would pass its size bound.
    Full,
}

impl DeadLetterFile {
    pub fn new(path: PathBuf, max_bytes: u64) -> DeadLetterFile {
        DeadLetterFile { path, max_bytes }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends encoded dead letters ([`encode`]) and fsyncs, unless the file would pass its
    /// size bound.
    pub fn append(&self, buf: &[u8]) -> Result<Appended> {
        if buf.is_empty() {
            return Ok(Appended::Written);
        }
        let size = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        if size.saturating_add(buf.len() as u64) > self.max_bytes {
            return Ok(Appended::Full);
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        let io = |e| Error::io(format!("appending to {}", self.path.display()), e);
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        f.write_all(buf).map_err(io)?;
        f.sync_data().map_err(io)?;
        Ok(Appended::Written)
    }
}

/// JSON lines of `letters`.
pub fn encode(letters: &[DeadLetter<'_>]) -> Vec<u8> {
    let mut buf = Vec::new();
    for l in letters {
        serde_json::to_writer(&mut buf, l).expect("dead letters serialize");
        buf.push(b'\n');
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_stops_growing_at_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let f = DeadLetterFile::new(dir.path().join("dl").join("s.jsonl"), 100);
        assert_eq!(f.append(&[b'x'; 60]).unwrap(), Appended::Written);
        assert_eq!(f.append(&[b'y'; 60]).unwrap(), Appended::Full);
        assert_eq!(f.append(&[b'z'; 40]).unwrap(), Appended::Written);
        assert_eq!(std::fs::metadata(f.path()).unwrap().len(), 100);
    }
}
