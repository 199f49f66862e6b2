//! The dead-letter file of a sink: records its destination refused for good (or kept refusing
//! past `delivery.max_attempts` while accepting others), one JSON object per line with the
//! error, so nothing is dropped silently and an operator can replay them. A batch of dead
//! letters is appended and fsynced before the sink's cursor moves past them.

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

/// Appends dead letters to one file.
#[derive(Debug, Clone)]
pub struct DeadLetterFile {
    path: PathBuf,
}

impl DeadLetterFile {
    pub fn new(path: PathBuf) -> DeadLetterFile {
        DeadLetterFile { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends encoded dead letters ([`encode`]) and fsyncs.
    pub fn append(&self, buf: &[u8]) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
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
        f.sync_data().map_err(io)
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
