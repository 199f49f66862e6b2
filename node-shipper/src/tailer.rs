//! Tailing one node-local log file (`policy_action.log`) across rotations, without loss or
//! duplication, and saying exactly which *source* (file generation) every line came from.
//!
//! Invariants (docs/design.md, "Contract 3: node to collector"):
//! - A **source** is one generation of the file: its id is derived from the device, the inode, a
//!   hash of its first line and a generation counter — never from the path alone. A rename
//!   rotation (a new inode at the path) and a copy-truncate (the same inode, shorter than what we
//!   read) both start a new generation.
//! - A line's **sequence** is the byte offset just past its newline in its generation: strictly
//!   increasing within a source, and the position to resume from once it is acknowledged.
//! - Only complete lines are returned; a partially written last line waits for its newline.
//! - On a rename rotation, the old file is read to its end before the new one is started, so
//!   lines written to the old file after the rotation are not lost; rotated files the tailer
//!   never opened (several rotations between two polls, or while the shipper was down) are
//!   found as `NAME.1` … `NAME.9` and read, oldest first, before the live file.
//! - On a copy-truncate, the lines not read yet are read from the copy (`NAME.1`, recognised by
//!   its first line) under the old source, then the truncated file is a new generation. Lines
//!   written between the copy and the truncate are lost: that is copy-truncate's own race.
//! - Reads are bounded ([`FileTailer::poll_up_to`]) so a backlog never has to fit in memory,
//!   and a line longer than the limit is cut and marked, never buffered whole.
//!
//! Lines are not copied: the file is read into shared chunks ([`READ_CHUNK`] bytes) and each
//! [`Line`] is a slice of one (a line split across two reads is the exception: it is joined).
//! A chunk is freed when the last line of it is (the batch holding it was acknowledged).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
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
    /// Shared by every line of the generation (no allocation per line).
    pub source_id: std::sync::Arc<str>,
    /// Offset just past the newline, in this generation.
    pub sequence: u64,
    /// Offset of the line's first byte.
    pub start: u64,
    /// The line without its newline (cut at the tailer's line limit); a slice of the chunk
    /// it was read into.
    pub bytes: Bytes,
    /// The line was longer than the limit and `bytes` holds only its beginning.
    pub truncated: bool,
}

/// Where to resume: the last acknowledged position of a generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub generation: Generation,
    pub offset: u64,
}

/// A rotated file found beside the log: (index k of `NAME.k`, (device, inode), path, file).
type Sibling = (usize, (u64, u64), PathBuf, File);

/// A file opened to be read after the current one.
#[derive(Debug)]
struct Pending {
    path: PathBuf,
    file: File,
    live: bool,
    /// The generation counter (set for a file truncated in place: same inode, new generation).
    counter: Option<u64>,
}

#[derive(Debug)]
struct Open {
    file: File,
    path: PathBuf,
    generation: Generation,
    /// Bytes consumed (up to the end of the last complete line).
    offset: u64,
    partial: Vec<u8>,
    /// Bytes of the partial line seen so far (`partial` keeps at most the line limit).
    partial_len: u64,
    /// The generation's source id, once its first line (and so its hash) is known.
    source_id: Option<std::sync::Arc<str>>,
    /// Length of the generation's first line (once known), to notice a copy-truncate that
    /// the file has already outgrown by comparing the first line again.
    first_line_len: Option<u64>,
    /// Whether this is the live file at the tailed path (rather than a rotated file or a
    /// copy being drained).
    live: bool,
}

/// Follows one log file across rotations. See the module documentation for the invariants.
#[derive(Debug)]
pub struct FileTailer {
    path: PathBuf,
    open: Option<Open>,
    /// Files to read next, oldest first, already open (so a rotation while they wait cannot
    /// swap what a name refers to); the last one may be the live file.
    queued: std::collections::VecDeque<Pending>,
    /// (device, inode) of the file read last, to find the generations rotated after it; kept
    /// open so its inode number cannot be reused by a new file meanwhile.
    last_finished: Option<((u64, u64), File)>,
    /// Read every rotated file before the first live file (a fresh start with backlog).
    backlog: bool,
    /// Generation counter for copy-truncates of the current inode.
    counter: u64,
    /// Free room of the current read chunk (zeroed once, when allocated; see [`READ_CHUNK`]).
    read_buf: BytesMut,
    max_line_bytes: usize,
    /// Rotations after which the previous generation was not found among the rotated files, so
    /// the generations between it and the live file (if any) could not be read.
    pub unaccounted_rotations: u64,
}

/// How many rotated siblings (`NAME.1` … `NAME.N`) are searched: GKE keeps 5, logrotate
/// configurations rarely keep more than a handful uncompressed.
pub const MAX_ROTATED_FILES: usize = 9;

/// Size of the chunks the file is read into. A new chunk is started when the current one has
/// less than [`MIN_READ`] bytes of room left.
pub const READ_CHUNK: usize = 256 * 1024;
const MIN_READ: usize = 32 * 1024;

/// Longest line kept whole; longer lines are cut here and marked (they cannot be valid records).
pub const DEFAULT_MAX_LINE_BYTES: usize = 1024 * 1024;

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The length (with its newline) and hash of a file's first line, if it has a complete one.
fn first_line(path: &Path) -> io::Result<Option<(u64, u64)>> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 64 * 1024];
    let n = f.read(&mut buf)?;
    Ok(memchr::memchr(b'\n', &buf[..n]).map(|i| (i as u64 + 1, fnv1a(&buf[..i]))))
}

/// The hash of a file's first line, if it has a complete one.
fn first_line_hash(path: &Path) -> io::Result<Option<u64>> {
    Ok(first_line(path)?.map(|(_, hash)| hash))
}

/// Whether the open file no longer starts with the generation's first line (it was truncated
/// and written again past our offset between two polls).
fn first_line_changed(open: &Open) -> io::Result<bool> {
    use std::os::unix::fs::FileExt;
    // The start of a line not finished yet must still be there (it may be the first line).
    if open.partial_len > 0 && open.partial.len() as u64 == open.partial_len {
        let mut buf = vec![0u8; open.partial.len()];
        let n = open.file.read_at(&mut buf, open.offset)?;
        if n < buf.len() || buf != open.partial {
            return Ok(true);
        }
    }
    let (Some(len), Some(hash)) = (open.first_line_len, open.generation.first_line_hash) else {
        return Ok(false);
    };
    let mut buf = vec![0u8; len as usize];
    let n = open.file.read_at(&mut buf, 0)?;
    Ok(n < buf.len() || buf.last() != Some(&b'\n') || fnv1a(&buf[..n - 1]) != hash)
}

/// `NAME.k` beside `path`.
fn rotated(path: &Path, k: usize) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{k}"));
    path.with_file_name(name)
}

/// Whether the file at `path` is `generation` (same inode and first line), at least `len` long.
fn is_generation(path: &Path, generation: &Generation, len: u64) -> io::Result<bool> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(false);
    };
    Ok(meta.dev() == generation.dev
        && meta.ino() == generation.ino
        && meta.len() >= len
        && first_line_hash(path)? == generation.first_line_hash)
}

impl FileTailer {
    /// Tails `path` from its beginning (or from `checkpoint`, if it still names this file or
    /// one of its rotated files).
    pub fn new(path: &Path, checkpoint: Option<&Checkpoint>) -> io::Result<Self> {
        let mut t = FileTailer {
            path: path.to_owned(),
            open: None,
            queued: Default::default(),
            last_finished: None,
            backlog: false,
            counter: 0,
            read_buf: BytesMut::new(),
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            unaccounted_rotations: 0,
        };
        if let Some(cp) = checkpoint {
            t.resume(cp)?;
        }
        Ok(t)
    }

    /// On a fresh start (no checkpoint), reads the rotated files still on disk (oldest first)
    /// before the live file, so nothing the node kept is left out — including generations
    /// rotated between this call and the first poll.
    pub fn with_rotated_backlog(mut self) -> io::Result<Self> {
        self.backlog = self.open.is_none() && self.queued.is_empty();
        Ok(self)
    }

    /// Sets the longest line kept whole (default [`DEFAULT_MAX_LINE_BYTES`]).
    pub fn with_max_line_bytes(mut self, max: usize) -> Self {
        self.max_line_bytes = max.max(1);
        self
    }

    /// The tailed path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn resume(&mut self, cp: &Checkpoint) -> io::Result<()> {
        if is_generation(&self.path, &cp.generation, cp.offset)? {
            self.counter = cp.generation.counter;
            self.open_at(self.path.clone(), cp.generation.clone(), cp.offset, true)?;
            if let Some(open) = self.open.as_mut() {
                open.first_line_len = first_line(&self.path)?.map(|(len, _)| len);
            }
            return Ok(());
        }
        // Rotated while we were down: finish that generation from the checkpoint, then every
        // newer rotated file, then the live one.
        for k in 1..=MAX_ROTATED_FILES {
            let candidate = rotated(&self.path, k);
            if is_generation(&candidate, &cp.generation, cp.offset)? {
                self.open_at(candidate, cp.generation.clone(), cp.offset, false)?;
                return Ok(());
            }
        }
        // The generation is gone (deleted by rotation while we were down): what it held after
        // the checkpoint is lost, and so are any generations rotated away since. Start at the
        // live file and count it.
        self.unaccounted_rotations += 1;
        Ok(())
    }

    fn open_at(
        &mut self,
        path: PathBuf,
        generation: Generation,
        offset: u64,
        live: bool,
    ) -> io::Result<()> {
        let mut file = File::open(&path)?;
        file.seek(SeekFrom::Start(offset))?;
        self.open = Some(Open {
            file,
            path,
            generation,
            offset,
            partial: Vec::new(),
            partial_len: 0,
            source_id: None,
            first_line_len: None,
            live,
        });
        Ok(())
    }

    /// Starts reading an opened file as a new generation from its beginning.
    fn start(&mut self, p: Pending) -> io::Result<()> {
        let meta = p.file.metadata()?;
        self.open = Some(Open {
            file: p.file,
            path: p.path,
            generation: Generation {
                dev: meta.dev(),
                ino: meta.ino(),
                counter: p.counter.unwrap_or(if p.live { self.counter } else { 0 }),
                first_line_hash: None,
            },
            offset: 0,
            partial: Vec::new(),
            partial_len: 0,
            source_id: None,
            first_line_len: None,
            live: p.live,
        });
        Ok(())
    }

    /// The rotated files present now, opened, one entry per file, by index.
    fn siblings(&self) -> io::Result<Vec<Sibling>> {
        let mut siblings: Vec<Sibling> = Vec::new();
        for k in 1..=MAX_ROTATED_FILES {
            let path = rotated(&self.path, k);
            if let Ok(file) = File::open(&path) {
                let m = file.metadata()?;
                let id = (m.dev(), m.ino());
                // A rotation running while we look can show one file under two names: keep
                // its first (newest) place; newer files never appear further down.
                if !siblings.iter().any(|s| s.1 == id) {
                    siblings.push((k, id, path, file));
                }
            }
        }
        Ok(siblings)
    }

    /// Queues what comes after the last finished generation: the rotated files newer than it
    /// and older than the live file, then the live file. Files are opened first and matched by
    /// inode, so rotations happening meanwhile cannot make us skip or repeat one.
    fn queue_next(&mut self) -> io::Result<()> {
        let live = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let live_id = {
            let m = live.metadata()?;
            (m.dev(), m.ino())
        };
        if std::mem::take(&mut self.backlog) {
            // Everything rotated is older than the live file we just opened, except the live
            // file itself if it was rotated meanwhile (then only what is older than it).
            let mut siblings = self.siblings()?;
            let j = siblings.iter().find(|s| s.1 == live_id).map_or(0, |s| s.0);
            siblings.retain(|s| s.0 > j);
            siblings.sort_by_key(|s| std::cmp::Reverse(s.0));
            for (_, _, path, file) in siblings {
                self.queued.push_back(Pending {
                    path,
                    file,
                    live: false,
                    counter: None,
                });
            }
        } else if let Some(last) = self.last_finished.as_ref().map(|l| l.0) {
            let mut siblings = self.siblings()?;
            let index_of = |id: (u64, u64)| siblings.iter().find(|s| s.1 == id).map(|s| s.0);
            match index_of(last) {
                Some(k) => {
                    // The live file we opened may itself have been rotated meanwhile.
                    let j = index_of(live_id).unwrap_or(0);
                    siblings.retain(|s| s.0 > j && s.0 < k);
                    siblings.sort_by_key(|s| std::cmp::Reverse(s.0));
                    for (_, _, path, file) in siblings {
                        self.queued.push_back(Pending {
                            path,
                            file,
                            live: false,
                            counter: None,
                        });
                    }
                }
                None if last != live_id && !siblings.is_empty() => {
                    // Gone (rotated out of the kept set, or renamed in a way we do not know):
                    // generations between it and the live file cannot be found.
                    self.unaccounted_rotations += 1;
                }
                None => {}
            }
        }
        self.queued.push_back(Pending {
            path: self.path.clone(),
            file: live,
            live: true,
            counter: None,
        });
        Ok(())
    }

    /// The generation being read, if a file is open.
    pub fn generation(&self) -> Option<&Generation> {
        self.open.as_ref().map(|o| &o.generation)
    }

    /// The file being read and the offset read up to (for lag and error reports).
    pub fn position(&self) -> Option<(&Path, u64)> {
        self.open.as_ref().map(|o| (o.path.as_path(), o.offset))
    }

    /// Reads every complete line available now, following rotations. Returns them in order.
    pub fn poll(&mut self) -> io::Result<Vec<Line>> {
        self.poll_up_to(usize::MAX)
    }

    /// Reads complete lines, following rotations, until about `max_bytes` have been returned
    /// (at least one read's worth). The rest stays in the file for the next call.
    pub fn poll_up_to(&mut self, max_bytes: usize) -> io::Result<Vec<Line>> {
        // Room for as many records of a few hundred bytes as the budget holds.
        let mut out = Vec::with_capacity((max_bytes / 256).clamp(64, 16 * 1024));
        let mut budget = max_bytes;
        loop {
            if self.open.is_none() {
                if self.queued.is_empty() {
                    self.queue_next()?;
                }
                match self.queued.pop_front() {
                    Some(next) => self.start(next)?,
                    None => return Ok(out),
                }
            }
            let open = self.open.as_ref().expect("opened above");
            let (live, generation, offset) = (open.live, open.generation.clone(), open.offset);
            if !live {
                // A rotated file or a copy: read it to its end, then move on.
                let drained = self.read_available(&mut out, &mut budget)?;
                if !drained {
                    return Ok(out);
                }
                self.finish_open(&mut out);
                continue;
            }
            // Look at the path before reading, so everything written to the old file before a
            // rename is read from it.
            let meta = match std::fs::metadata(&self.path) {
                Ok(m) => Some(m),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            };
            let renamed = meta
                .as_ref()
                .is_none_or(|m| m.dev() != generation.dev || m.ino() != generation.ino);
            if renamed {
                // Truncated in place before it was renamed (copy-truncate, then a rotation)?
                if self.truncated_since_read(None)? {
                    self.restart_after_truncate(generation, offset)?;
                    continue;
                }
                if !self.read_available(&mut out, &mut budget)? {
                    return Ok(out);
                }
                self.finish_open(&mut out);
                self.counter = 0;
                continue;
            }
            if self.truncated_since_read(meta.as_ref().map(|m| m.len()))? {
                self.restart_after_truncate(generation, offset)?;
                continue;
            }
            let before = out.len();
            self.read_available(&mut out, &mut budget)?;
            // A copy-truncate may have happened between the check and the read, in which case
            // what we just read at the old offset belongs to the new generation: forget it and
            // take the old generation's rest from the copy, the new one from its start.
            if self.truncated_since_read(None)? {
                out.truncate(before);
                self.restart_after_truncate(generation, offset)?;
                continue;
            }
            return Ok(out);
        }
    }

    /// Whether the open file is shorter than what we read of it, or no longer starts the way
    /// it did (truncated and written again): a copy-truncate. `len`: the size if known.
    fn truncated_since_read(&self, len: Option<u64>) -> io::Result<bool> {
        let open = self.open.as_ref().expect("open");
        let len = match len {
            Some(l) => l,
            None => open.file.metadata()?.len(),
        };
        Ok(len < open.offset + open.partial_len || first_line_changed(open)?)
    }

    /// After a copy-truncate of the open generation: finish it from its copy (a rotated file
    /// that starts with its first line and holds at least what we read), under the same source;
    /// then read the truncated file from its start as the next generation.
    fn restart_after_truncate(&mut self, generation: Generation, offset: u64) -> io::Result<()> {
        let open = self.open.take().expect("open");
        let mut file = open.file;
        file.seek(SeekFrom::Start(0))?;
        let live = std::fs::metadata(&self.path)
            .is_ok_and(|m| m.dev() == generation.dev && m.ino() == generation.ino);
        self.counter += 1;
        self.last_finished = None;
        self.queued.push_front(Pending {
            path: open.path,
            file,
            live,
            counter: Some(self.counter),
        });
        let copy = self
            .siblings()?
            .into_iter()
            .filter(|s| s.1 != (generation.dev, generation.ino))
            .find_map(|(_, _, path, _)| {
                is_generation_copy(&path, &generation, offset)
                    .ok()
                    .filter(|ok| *ok)
                    .map(|_| path)
            });
        match copy {
            Some(c) => self.open_at(c, generation, offset, false)?,
            None => self.unaccounted_rotations += 1,
        }
        Ok(())
    }

    /// Ends the open generation; a last line without newline in a finished file is returned as
    /// it is (nothing will ever complete it).
    fn finish_open(&mut self, out: &mut Vec<Line>) {
        let Some(mut open) = self.open.take() else {
            return;
        };
        // The file actually read (for a copy-truncate copy, not the generation's own inode).
        if !open.partial.is_empty() {
            let line = std::mem::take(&mut open.partial);
            let start = open.offset;
            open.offset += open.partial_len;
            emit(
                &mut open,
                Bytes::from(line),
                start,
                out,
                self.max_line_bytes,
            );
        }
        self.last_finished = open
            .file
            .metadata()
            .ok()
            .map(|m| ((m.dev(), m.ino()), open.file));
    }

    /// Reads until EOF (true) or until the byte budget is spent (false).
    fn read_available(&mut self, out: &mut Vec<Line>, budget: &mut usize) -> io::Result<bool> {
        let max_line = self.max_line_bytes;
        let Some(open) = self.open.as_mut() else {
            return Ok(true);
        };
        loop {
            if *budget == 0 {
                return Ok(false);
            }
            if self.read_buf.len() < MIN_READ {
                // The lines of the previous chunk keep it alive; this one is new (calloc'd, so
                // zeroing is free for fresh pages).
                self.read_buf = BytesMut::zeroed(READ_CHUNK);
            }
            let n = open.file.read(&mut self.read_buf)?;
            if n == 0 {
                return Ok(true);
            }
            *budget = budget.saturating_sub(n);
            let data = self.read_buf.split_to(n).freeze();
            let mut at = 0;
            while let Some(i) = memchr::memchr(b'\n', &data[at..]) {
                let whole_len = open.partial_len + i as u64;
                let line = if open.partial.is_empty() {
                    data.slice(at..at + i.min(max_line + 1))
                } else {
                    let mut line = std::mem::take(&mut open.partial);
                    let room = (max_line + 1).saturating_sub(line.len());
                    line.extend_from_slice(&data[at..at + i.min(room)]);
                    Bytes::from(line)
                };
                open.partial_len = 0;
                let start = open.offset;
                open.offset += whole_len + 1;
                emit(open, line, start, out, max_line);
                at += i + 1;
            }
            open.keep_partial(&data[at..], max_line);
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

impl Open {
    /// Keeps the start of a line that has no newline yet (at most `max_line` bytes of it).
    fn keep_partial(&mut self, chunk: &[u8], max_line: usize) {
        let room = (max_line + 1).saturating_sub(self.partial.len());
        self.partial
            .extend_from_slice(&chunk[..chunk.len().min(room)]);
        self.partial_len += chunk.len() as u64;
    }
}

/// A copy made by copy-truncate keeps the first line (and so the hash) of the generation.
fn is_generation_copy(path: &Path, generation: &Generation, len: u64) -> io::Result<bool> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(false);
    };
    Ok(meta.len() >= len && first_line_hash(path)? == generation.first_line_hash)
}

fn emit(open: &mut Open, mut line: Bytes, start: u64, out: &mut Vec<Line>, max_line: usize) {
    let truncated = line.len() > max_line;
    line.truncate(max_line);
    if open.generation.first_line_hash.is_none() {
        open.generation.first_line_hash = Some(fnv1a(&line));
        open.source_id = None;
        // A cut first line cannot be compared again (its hash covers only the kept part).
        open.first_line_len = (!truncated).then_some(open.offset - start);
    }
    out.push(Line {
        source_id: std::sync::Arc::clone(
            open.source_id
                .get_or_insert_with(|| open.generation.source_id().into()),
        ),
        sequence: open.offset,
        start,
        bytes: line,
        truncated,
    });
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
