//! Inputs: what the shipper reads records from, and the positions it checkpoints.
//!
//! An input yields *runs*: consecutive records of one source (docs/design.md, "Contract 3: node to
//! collector"), each with its sequence. A source is one file generation (its [`Origin`] is the
//! tailer's [`Generation`]) or one boot's `/dev/kmsg`. A [`Position`] is a source plus the last
//! acknowledged sequence: written only after the collector acknowledged it, and where the input
//! resumes after a restart.
//!
//! The log inputs forward each line's bytes unparsed (the collector parses them anyway); a line
//! that cannot be a record (empty, not a JSON object, longer than the line limit) is counted as
//! malformed with its file and offset and skipped here. A line the collector still refuses is
//! handled by the shipping loop (see `ship`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use verdict_schema::proto::v1;

use crate::metrics::{DropReason, InputMetrics};
use crate::tailer::{Checkpoint, FileTailer, Generation, Line, save_checkpoint};

/// What a source is, for resuming it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    File(Generation),
    Kmsg { boot_id: String },
}

/// A source and the last acknowledged sequence in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    File(Checkpoint),
    Kmsg { boot_id: String, sequence: u64 },
}

impl Origin {
    pub fn at(&self, sequence: u64) -> Position {
        match self {
            Origin::File(g) => Position::File(Checkpoint {
                generation: g.clone(),
                offset: sequence,
            }),
            Origin::Kmsg { boot_id } => Position::Kmsg {
                boot_id: boot_id.clone(),
                sequence,
            },
        }
    }
}

/// One source as batches name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceInfo {
    pub id: String,
    pub kind: v1::SourceKind,
    /// The file (or device) read, for the batch and for error reports.
    pub path: PathBuf,
    pub origin: Origin,
}

/// One record to ship.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub sequence: u64,
    pub log_id: v1::LogId,
    pub payload: v1::record::Payload,
    /// Payload size, for batch limits.
    pub bytes: usize,
}

/// Consecutive records of one source.
#[derive(Debug, Clone)]
pub struct Run {
    pub source: Arc<SourceInfo>,
    pub entries: Vec<Entry>,
}

/// Something records are read from.
pub trait Input: Send + std::fmt::Debug {
    /// The input's name: metrics label and checkpoint file name.
    fn name(&self) -> &'static str;
    /// Reads what is available now, about `max_bytes` of it, in order.
    fn read(&mut self, max_bytes: usize) -> std::io::Result<Vec<Run>>;
    /// Bytes written to the input and not read yet (0 where unknown).
    fn unread_bytes(&self) -> u64;
}

/// The checkpoint file of input `name`.
pub fn checkpoint_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.checkpoint.json"))
}

/// Writes a position atomically (temporary file, fsync, rename).
pub fn save_position(path: &Path, position: &Position) -> std::io::Result<()> {
    match position {
        // Kept in the tailer's own format so a file checkpoint is one shape everywhere.
        Position::File(cp) => save_checkpoint(path, cp),
        Position::Kmsg { .. } => {
            use std::io::Write;
            let tmp = path.with_extension("tmp");
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec(position).map_err(std::io::Error::other)?)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        }
    }
}

/// The largest checkpoint file read; a real one is a few hundred bytes.
pub const MAX_CHECKPOINT_BYTES: u64 = 64 * 1024;

/// Reads a position written by [`save_position`]; none if there is no file. A file that is not
/// a checkpoint (or larger than [`MAX_CHECKPOINT_BYTES`]) is an `InvalidData` error naming it.
pub fn load_position(path: &Path) -> std::io::Result<Option<Position>> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let invalid = |what: String| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: not a checkpoint: {what}", path.display()),
        )
    };
    let mut bytes = Vec::new();
    file.take(MAX_CHECKPOINT_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CHECKPOINT_BYTES {
        return Err(invalid(format!("larger than {MAX_CHECKPOINT_BYTES} bytes")));
    }
    if let Ok(cp) = serde_json::from_slice::<Checkpoint>(&bytes) {
        return Ok(Some(Position::File(cp)));
    }
    serde_json::from_slice::<Position>(&bytes)
        .map(Some)
        .map_err(|e| invalid(e.to_string()))
}

/// Where input `name` resumes. A checkpoint that cannot be read as one (torn, edited, filled
/// with garbage) must not stop the shipper at every start: it is moved aside to
/// `<file>.corrupt`, counted in `verdict_shipper_checkpoints_discarded` and logged, and the input
/// starts over from the beginning. Nothing is lost and nothing is stored twice: the collector
/// discards the records it already has by (source, sequence).
pub fn resume_position(
    dir: &Path,
    name: &str,
    metrics: &InputMetrics,
) -> std::io::Result<Option<Position>> {
    let path = checkpoint_path(dir, name);
    match load_position(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            let aside = path.with_extension("json.corrupt");
            std::fs::rename(&path, &aside)?;
            metrics.checkpoints_discarded.inc();
            tracing::error!(
                input = name,
                "{e}; moved to {} and reading the input from its beginning (the collector \
                 discards records it already stored)",
                aside.display()
            );
            Ok(None)
        }
        other => other,
    }
}

/// `policy_action.log` or `policy_action_loss.log`: one JSON record per line, forwarded as is.
#[derive(Debug)]
pub struct LogFileInput {
    name: &'static str,
    log_id: v1::LogId,
    kind: v1::SourceKind,
    tailer: FileTailer,
    current: Option<Arc<SourceInfo>>,
    metrics: Arc<InputMetrics>,
    unaccounted_seen: u64,
}

impl LogFileInput {
    /// The probe's policy-action log.
    pub const POLICY_ACTION: &'static str = "policy_action";
    /// The probe's loss markers.
    pub const POLICY_ACTION_LOSS: &'static str = "policy_action_loss";

    /// Tails `path`, resuming from `checkpoint` when it still applies.
    pub fn open(
        name: &'static str,
        path: &Path,
        checkpoint: Option<&Checkpoint>,
        max_line_bytes: usize,
        metrics: Arc<InputMetrics>,
    ) -> std::io::Result<Self> {
        let (log_id, kind) = if name == Self::POLICY_ACTION_LOSS {
            (
                v1::LogId::PolicyActionLoss,
                v1::SourceKind::PolicyActionLossLog,
            )
        } else {
            (v1::LogId::PolicyAction, v1::SourceKind::PolicyActionLog)
        };
        Ok(LogFileInput {
            name,
            log_id,
            kind,
            tailer: FileTailer::new(path, checkpoint)?
                .with_max_line_bytes(max_line_bytes)
                .with_rotated_backlog()?,
            current: None,
            metrics,
            unaccounted_seen: 0,
        })
    }
}

/// The source of a line, reusing `current` while the generation does not change.
pub(crate) fn source_of(
    current: &mut Option<Arc<SourceInfo>>,
    tailer: &FileTailer,
    line: &Line,
    kind: v1::SourceKind,
) -> Arc<SourceInfo> {
    if let Some(s) = current
        && *s.id == *line.source_id
    {
        return Arc::clone(s);
    }
    let path = match (tailer.position(), tailer.generation()) {
        (Some((p, _)), Some(g)) if g.source_id() == *line.source_id => p.to_owned(),
        _ => tailer.path().to_owned(),
    };
    let s = Arc::new(SourceInfo {
        id: line.source_id.to_string(),
        kind,
        path,
        origin: Origin::File(generation_of(&line.source_id)),
    });
    *current = Some(Arc::clone(&s));
    s
}

/// The generation a source id was made from ([`Generation::source_id`] in reverse).
pub fn generation_of(source_id: &str) -> Generation {
    let mut parts = source_id.split('-');
    let dev = parts.next().and_then(|p| u64::from_str_radix(p, 16).ok());
    let ino = parts.next().and_then(|p| u64::from_str_radix(p, 16).ok());
    let counter = parts.next().and_then(|p| p.parse().ok());
    let hash = parts.next().and_then(|p| u64::from_str_radix(p, 16).ok());
    Generation {
        dev: dev.unwrap_or(0),
        ino: ino.unwrap_or(0),
        counter: counter.unwrap_or(0),
        first_line_hash: hash,
    }
}

impl Input for LogFileInput {
    fn name(&self) -> &'static str {
        self.name
    }

    fn read(&mut self, max_bytes: usize) -> std::io::Result<Vec<Run>> {
        let lines = self.tailer.poll_up_to(max_bytes)?;
        if self.tailer.unaccounted_rotations != self.unaccounted_seen {
            let n = self.tailer.unaccounted_rotations - self.unaccounted_seen;
            self.unaccounted_seen = self.tailer.unaccounted_rotations;
            self.metrics.rotations_unaccounted.inc_by(n);
            tracing::warn!(input = self.name, path = %self.tailer.path().display(),
                "{n} rotated generation(s) were gone before they could be read");
        }
        let mut runs: Vec<Run> = Vec::new();
        let (mut read, mut malformed) = (0u64, 0u64);
        let total = lines.len();
        for line in lines {
            read += 1;
            let source = source_of(&mut self.current, &self.tailer, &line, self.kind);
            if line.truncated || line.bytes.first() != Some(&b'{') {
                malformed += 1;
                let why = if line.truncated {
                    "longer than the line limit".to_owned()
                } else {
                    format!(
                        "not a JSON object: {:?}",
                        String::from_utf8_lossy(&line.bytes[..line.bytes.len().min(80)])
                    )
                };
                tracing::warn!(
                    input = self.name,
                    "malformed line skipped: {} offset {} (source {}): {why}",
                    source.path.display(),
                    line.start,
                    source.id
                );
                continue;
            }
            let entry = Entry {
                sequence: line.sequence,
                log_id: self.log_id,
                bytes: line.bytes.len(),
                payload: v1::record::Payload::JsonLine(line.bytes),
            };
            match runs.last_mut() {
                Some(r) if Arc::ptr_eq(&r.source, &source) => r.entries.push(entry),
                _ => {
                    let mut entries = Vec::with_capacity(total - read as usize + 1);
                    entries.push(entry);
                    runs.push(Run { source, entries });
                }
            }
        }
        self.metrics.records_read.inc_by(read - malformed);
        if malformed > 0 {
            self.metrics.count_drop(DropReason::Malformed, malformed);
        }
        Ok(runs)
    }

    fn unread_bytes(&self) -> u64 {
        let Some((path, offset)) = self.tailer.position() else {
            return std::fs::metadata(self.tailer.path()).map_or(0, |m| m.len());
        };
        let mut unread = std::fs::metadata(path).map_or(0, |m| m.len().saturating_sub(offset));
        if path != self.tailer.path() {
            unread += std::fs::metadata(self.tailer.path()).map_or(0, |m| m.len());
        }
        unread
    }
}
