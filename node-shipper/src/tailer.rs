//! Tailing one node-local log file (`policy_action.log`) across rotations, without loss or
//! duplication, and saying exactly which *source* (file generation) every line came from.
//!
//! Invariants (DESIGN.md Contract 3):
//! - A **source** is one generation of the file: its id is derived from the device, the inode, a
//!   hash of its first line and a generation counter — never from the path alone. A rename
//!   rotation (a new inode at the path) and a copy-truncate (the same inode, shorter than what we
//!   read) both start a new generation.
//! - A line's **sequence** is the byte offset just past its newline in its generation: strictly
//!   increasing within a source, and the position to resume from once it is acknowledged.
//! - Only complete lines are returned; a partially written last line waits for its newline.
//! - On a rename rotation, the old file is read to its end before the new one is started, so
//!   lines written to the old file after the rotation are not lost.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The identity of one file generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    pub dev: u64,
    pub ino: u64,
    /// Increases on every copy-truncate of the same inode.
    pub counter: u64,
    /// FNV-1a of the generation's first line (set once it has one).
    pub first_line_hash: Option<u64>,
}

impl Generation {
    /// The source id sent to the collector: stable for the generation's whole life.
    pub fn source_id(&self) -> String {
        format!(
            "{:x}-{:x}-{}-{:016x}",
            self.dev,
            self.ino,
            self.counter,
            self.first_line_hash.unwrap_or(0)
        )
    }
}

/// One complete line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub source_id: String,
    /// Offset just past the newline, in this generation.
    pub sequence: u64,
    /// The line without its newline.
    pub bytes: Vec<u8>,
}

/// Where to resume: the last acknowledged position of a generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub generation: Generation,
    pub offset: u64,
}

#[derive(Debug)]
struct Open {
    file: File,
    generation: Generation,
    /// Bytes consumed (up to the end of the last complete line).
    offset: u64,
    partial: Vec<u8>,
}

#[derive(Debug)]
pub struct FileTailer {
    path: PathBuf,
    open: Option<Open>,
    /// Generation counter for copy-truncates of the current inode.
    counter: u64,
    read_buf: Vec<u8>,
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The hash of a file's first line, if it has a complete one.
fn first_line_hash(path: &Path) -> io::Result<Option<u64>> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 64 * 1024];
    let n = f.read(&mut buf)?;
    Ok(buf[..n]
        .iter()
        .position(|b| *b == b'\n')
        .map(|i| fnv1a(&buf[..i])))
}

impl FileTailer {
    /// Tails `path` from its beginning (or from `checkpoint`, if it still names this file).
    pub fn new(path: &Path, checkpoint: Option<&Checkpoint>) -> io::Result<Self> {
        let mut t = FileTailer {
            path: path.to_owned(),
            open: None,
            counter: 0,
            read_buf: vec![0; 256 * 1024],
        };
        if let Some(cp) = checkpoint {
            t.resume(cp)?;
        }
        Ok(t)
    }

    fn resume(&mut self, cp: &Checkpoint) -> io::Result<()> {
        let Ok(meta) = std::fs::metadata(&self.path) else {
            return Ok(());
        };
        let same_file = meta.dev() == cp.generation.dev
            && meta.ino() == cp.generation.ino
            && meta.len() >= cp.offset
            && first_line_hash(&self.path)? == cp.generation.first_line_hash;
        if same_file {
            let mut file = File::open(&self.path)?;
            file.seek(SeekFrom::Start(cp.offset))?;
            self.counter = cp.generation.counter;
            self.open = Some(Open {
                file,
                generation: cp.generation.clone(),
                offset: cp.offset,
                partial: Vec::new(),
            });
        }
        // Otherwise the file was rotated or replaced while we were down: start at the current
        // file's beginning (its lines are all new to the collector).
        Ok(())
    }

    /// The generation being read, if a file is open.
    pub fn generation(&self) -> Option<&Generation> {
        self.open.as_ref().map(|o| &o.generation)
    }

    /// Reads every complete line available now, following rotations. Returns them in order.
    pub fn poll(&mut self) -> io::Result<Vec<Line>> {
        let mut out = Vec::new();
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if let Some(open) = &self.open {
            let renamed = meta
                .as_ref()
                .is_none_or(|m| m.dev() != open.generation.dev || m.ino() != open.generation.ino);
            if renamed {
                // Drain the old generation to its end, then move to the new file.
                self.read_available(&mut out)?;
                self.open = None;
                self.counter = 0;
            } else if meta.as_ref().is_some_and(|m| m.len() < open.offset) {
                // Copy-truncate: same inode, shorter than what we read.
                self.counter += 1;
                self.open = None;
            }
        }
        if self.open.is_none() {
            let Some(meta) = meta else { return Ok(out) };
            let file = File::open(&self.path)?;
            self.open = Some(Open {
                file,
                generation: Generation {
                    dev: meta.dev(),
                    ino: meta.ino(),
                    counter: self.counter,
                    first_line_hash: None,
                },
                offset: 0,
                partial: Vec::new(),
            });
        }
        self.read_available(&mut out)?;
        Ok(out)
    }

    fn read_available(&mut self, out: &mut Vec<Line>) -> io::Result<()> {
        let Some(open) = self.open.as_mut() else {
            return Ok(());
        };
        loop {
            let n = open.file.read(&mut self.read_buf)?;
            if n == 0 {
                return Ok(());
            }
            let mut chunk = &self.read_buf[..n];
            while let Some(i) = chunk.iter().position(|b| *b == b'\n') {
                let mut line = std::mem::take(&mut open.partial);
                line.extend_from_slice(&chunk[..i]);
                open.offset += (line.len() + 1) as u64;
                if open.generation.first_line_hash.is_none() {
                    open.generation.first_line_hash = Some(fnv1a(&line));
                }
                out.push(Line {
                    source_id: open.generation.source_id(),
                    sequence: open.offset,
                    bytes: line,
                });
                chunk = &chunk[i + 1..];
            }
            open.partial.extend_from_slice(chunk);
        }
    }

    /// The checkpoint for having had everything up to `sequence` of the current generation
    /// acknowledged.
    pub fn checkpoint_at(&self, sequence: u64) -> Option<Checkpoint> {
        self.open.as_ref().map(|o| Checkpoint {
            generation: o.generation.clone(),
            offset: sequence,
        })
    }
}

/// Writes a checkpoint atomically (temporary file, fsync, rename).
pub fn save_checkpoint(path: &Path, cp: &Checkpoint) -> io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(cp).map_err(io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Reads a checkpoint; none if the file does not exist.
pub fn load_checkpoint(path: &Path) -> io::Result<Option<Checkpoint>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
