//! The write-ahead log: where a batch becomes durable before it is acknowledged.
//!
//! Files: `wal-FIRSTLSN.log` segments in `wal.dir`. Each entry is one accepted batch — the
//! records that passed dedup exactly as received, the node identity, the source, the receive
//! time and the source's new watermark — framed as
//! `[payload length: u32 LE][crc32 of lsn+payload: u32 LE][lsn: u64 LE][payload]`.
//! Entries get consecutive log sequence numbers (LSN). A group of entries is written with one
//! `write` and one `fdatasync`; only then are its batches applied and acknowledged.
//!
//! The entry is a redo record of a decision: replay applies it unconditionally (its rows to the
//! buffer, its watermark to the source), so a replayed collector holds exactly what the live one
//! held. A crash can tear only the tail of the newest segment (a group that was never
//! acknowledged); replay cuts it off. Any other damage is reported, never skipped.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use prost::Message as _;
use verdict_schema::proto::v1;

use crate::error::{Error, Result};

const HEADER: usize = 16;

/// One WAL entry's payload (protobuf). The records field comes last, so a suffix of a batch's
/// pre-encoded records can be appended to an encoded header as-is (protobuf concatenation is
/// merge).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WalEntry {
    #[prost(message, optional, tag = "1")]
    pub node: Option<v1::NodeIdentity>,
    #[prost(string, tag = "2")]
    pub source_id: String,
    #[prost(int64, tag = "3")]
    pub receive_unix_nanos: i64,
    /// The source's watermark after this entry (its last record's sequence).
    #[prost(uint64, tag = "4")]
    pub watermark: u64,
    #[prost(message, repeated, tag = "15")]
    pub records: Vec<v1::Record>,
}

/// The protobuf field number of [`WalEntry::records`].
pub const RECORDS_FIELD: u32 = 15;

/// Appends the field-15 encoding of `record` to `buf` (the unit [`WalEntry`] payloads are built
/// from).
pub fn encode_record(record: &v1::Record, buf: &mut Vec<u8>) {
    prost::encoding::message::encode(RECORDS_FIELD, record, buf);
}

/// Appends one framed entry to `group`: the encoded `header` followed by `records` (field-15
/// encodings).
pub fn frame_entry(group: &mut Vec<u8>, lsn: u64, header: &WalEntry, records: &[u8]) {
    let start = group.len();
    group.extend_from_slice(&[0u8; 8]);
    group.extend_from_slice(&lsn.to_le_bytes());
    header
        .encode(group)
        .expect("a Vec grows to fit the message");
    group.extend_from_slice(records);
    let payload_len = group.len() - start - HEADER;
    let len = u32::try_from(payload_len).expect("entries are bounded by grpc.max_batch_bytes");
    let crc = crc32fast::hash(&group[start + 8..]);
    group[start..start + 4].copy_from_slice(&len.to_le_bytes());
    group[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn segment_name(first_lsn: u64) -> String {
    format!("wal-{first_lsn:020}.log")
}

fn segment_lsn(name: &str) -> Option<u64> {
    name.strip_prefix("wal-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

/// Segments in `dir`, sorted by first LSN.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        if let Some(lsn) = segment_lsn(&entry.file_name().to_string_lossy()) {
            out.push((lsn, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("fsync {}", dir.display()), e))
}

/// What replay found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayOutcome {
    /// The LSN the next entry gets.
    pub next_lsn: u64,
    /// Entries handed to the callback (those after `after_lsn`).
    pub replayed: u64,
    /// Bytes of a torn tail that were cut off (an unacknowledged group a crash interrupted).
    pub torn_bytes: u64,
}

/// Reads every entry of the log in `dir` with LSN greater than `after_lsn`, in order, cutting a
/// torn tail off the newest segment.
pub fn replay(
    dir: &Path,
    after_lsn: u64,
    mut apply: impl FnMut(u64, WalEntry) -> Result<()>,
) -> Result<ReplayOutcome> {
    let segs = segments(dir)?;
    let mut outcome = ReplayOutcome {
        next_lsn: after_lsn + 1,
        replayed: 0,
        torn_bytes: 0,
    };
    let mut expected: Option<u64> = None;
    for (i, (first, path)) in segs.iter().enumerate() {
        let last_segment = i + 1 == segs.len();
        let data =
            std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let corrupt = |message: String| Error::WalCorrupt {
            path: path.clone(),
            message,
        };
        if let Some(e) = expected
            && *first != e
            && !data.is_empty()
        {
            return Err(corrupt(format!("starts at LSN {first}, expected {e}")));
        }
        let mut pos = 0usize;
        while pos < data.len() {
            let torn = |why: &str| -> Result<()> {
                if last_segment {
                    Ok(())
                } else {
                    Err(corrupt(format!("{why} at byte {pos} of a closed segment")))
                }
            };
            if data.len() - pos < HEADER {
                torn("a truncated entry header")?;
                break;
            }
            let len = u32::from_le_bytes(data[pos..pos + 4].try_into().expect("4 bytes")) as usize;
            let crc = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().expect("4 bytes"));
            if data.len() - pos - HEADER < len {
                torn("a truncated entry")?;
                break;
            }
            let body = &data[pos + 8..pos + HEADER + len];
            if crc32fast::hash(body) != crc {
                torn("a checksum mismatch")?;
                break;
            }
            let lsn = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
            let want = expected.unwrap_or(*first);
            if lsn != want {
                return Err(corrupt(format!(
                    "entry at byte {pos} has LSN {lsn}, expected {want}"
                )));
            }
            if lsn > after_lsn {
                let entry = WalEntry::decode(&body[8..])
                    .map_err(|e| corrupt(format!("entry {lsn} does not decode: {e}")))?;
                apply(lsn, entry)?;
                outcome.replayed += 1;
            }
            expected = Some(lsn + 1);
            pos += HEADER + len;
        }
        if pos < data.len() {
            // Only reachable for the newest segment: cut the torn group off.
            outcome.torn_bytes = (data.len() - pos) as u64;
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
            f.set_len(pos as u64)
                .and_then(|()| f.sync_all())
                .map_err(|e| Error::io(format!("truncating {}", path.display()), e))?;
        }
        if expected.is_none() && data.is_empty() {
            expected = Some(*first);
        }
    }
    if let Some(e) = expected {
        outcome.next_lsn = outcome.next_lsn.max(e);
    }
    Ok(outcome)
}

/// Deletes closed segments whose every entry is at or below `lsn`. The newest segment is never
/// deleted (the writer appends to it).
pub fn truncate_through(dir: &Path, lsn: u64) -> Result<usize> {
    let segs = segments(dir)?;
    let mut removed = 0;
    for pair in segs.windows(2) {
        let ((_, path), (next_first, _)) = (&pair[0], &pair[1]);
        if *next_first <= lsn + 1 {
            std::fs::remove_file(path)
                .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
            removed += 1;
        }
    }
    if removed > 0 {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// One entry read back by a [`WalTail`].
#[derive(Debug, Clone)]
pub struct TailEntry {
    pub lsn: u64,
    pub entry: WalEntry,
}

/// What [`WalTail::read`] found.
#[derive(Debug, Default)]
pub struct TailRead {
    pub entries: Vec<TailEntry>,
    /// Entries the tail wanted that no segment holds any more (deleted before it read them),
    /// as the LSN range `start..end`; the tail continues after them.
    pub missing: Option<std::ops::Range<u64>>,
}

/// A read-only reader of the log from a position onwards, for consumers other than recovery
/// (the sinks). It never modifies a segment: an incomplete entry at the end of the newest
/// segment is either being written or torn, and is simply not read yet. Callers bound reads by
/// an LSN known durable (`through`), so they never see an entry that is not yet fsynced.
#[derive(Debug)]
pub struct WalTail {
    dir: PathBuf,
    /// The LSN of the next entry to hand out.
    next_lsn: u64,
    /// The open segment: its first LSN, the file, and the byte offset of entry `next_lsn`.
    segment: Option<(u64, File, u64)>,
}

impl WalTail {
    /// A tail that hands out entries from `next_lsn` on.
    pub fn new(dir: &Path, next_lsn: u64) -> WalTail {
        WalTail {
            dir: dir.to_owned(),
            next_lsn,
            segment: None,
        }
    }

    /// The LSN of the next entry [`read`](Self::read) returns.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Opens the segment holding `next_lsn` (or reports the entries no segment holds).
    fn open(&mut self) -> Result<Option<std::ops::Range<u64>>> {
        let segs = segments(&self.dir)?;
        let Some(idx) = segs.iter().rposition(|(first, _)| *first <= self.next_lsn) else {
            // Everything from next_lsn up to the oldest segment is gone.
            return Ok(match segs.first() {
                Some((first, _)) if *first > self.next_lsn => {
                    let gap = self.next_lsn..*first;
                    self.next_lsn = *first;
                    Some(gap)
                }
                _ => None,
            });
        };
        let (first, path) = &segs[idx];
        let file =
            File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        self.segment = Some((*first, file, 0));
        Ok(None)
    }

    /// The first LSN of the segment after the open one, if the writer has started one.
    fn next_segment(&self) -> Result<Option<u64>> {
        let Some((open_first, _, _)) = &self.segment else {
            return Ok(None);
        };
        Ok(segments(&self.dir)?
            .iter()
            .map(|(first, _)| *first)
            .find(|first| first > open_first))
    }

    /// Reads entries with LSN up to `through`, stopping after `max_records` records (at least
    /// one entry is returned when one is available).
    pub fn read(&mut self, through: u64, max_records: usize) -> Result<TailRead> {
        use std::io::{Seek as _, SeekFrom};
        let mut out = TailRead::default();
        let mut records = 0usize;
        while self.next_lsn <= through && (out.entries.is_empty() || records < max_records) {
            if self.segment.is_none() {
                match self.open()? {
                    Some(gap) => {
                        // Entries were deleted before this tail read them; go on after them.
                        out.missing = Some(match out.missing.take() {
                            Some(m) => m.start..gap.end,
                            None => gap,
                        });
                        continue;
                    }
                    None if self.segment.is_none() => break,
                    None => {}
                }
            }
            let dir = self.dir.clone();
            let (first, file, offset) = self.segment.as_mut().expect("opened above");
            let at = |o: u64| format!("{} at byte {o}", dir.join(segment_name(*first)).display());
            file.seek(SeekFrom::Start(*offset))
                .map_err(|e| Error::io(at(*offset), e))?;
            let mut header = [0u8; HEADER];
            let complete = read_full(file, &mut header).map_err(|e| Error::io(at(*offset), e))?;
            if !complete {
                // The end of the open segment. If the writer moved on, continue in the next
                // segment — or, when the segments holding `next_lsn` were deleted meanwhile
                // (the open file stays readable), let `open` report the gap.
                let open_path = dir.join(segment_name(*first));
                match self.next_segment()? {
                    Some(next) if next == self.next_lsn => {}
                    Some(next) if open_path.exists() => {
                        return Err(Error::WalCorrupt {
                            path: open_path,
                            message: format!(
                                "ends before LSN {}, but the next segment starts at {next}",
                                self.next_lsn
                            ),
                        });
                    }
                    Some(_) => {}
                    None => break,
                }
                self.segment = None;
                continue;
            }
            let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
            let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
            let lsn = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
            if lsn > through && lsn >= self.next_lsn {
                break;
            }
            let mut body = vec![0u8; len];
            let complete = read_full(file, &mut body).map_err(|e| Error::io(at(*offset), e))?;
            if !complete {
                break;
            }
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(&header[8..16]);
            hasher.update(&body);
            if hasher.finalize() != crc {
                return Err(Error::WalCorrupt {
                    path: dir.join(segment_name(*first)),
                    message: format!(
                        "checksum mismatch at byte {offset} (LSN {lsn}), read by a sink"
                    ),
                });
            }
            *offset += (HEADER + len) as u64;
            if lsn < self.next_lsn {
                continue; // before the tail's position in this segment
            }
            if lsn != self.next_lsn {
                return Err(Error::WalCorrupt {
                    path: dir.join(segment_name(*first)),
                    message: format!("entry has LSN {lsn}, expected {}", self.next_lsn),
                });
            }
            let entry = WalEntry::decode(body.as_slice()).map_err(|e| Error::WalCorrupt {
                path: dir.join(segment_name(*first)),
                message: format!("entry {lsn} does not decode: {e}"),
            })?;
            records += entry.records.len();
            out.entries.push(TailEntry { lsn, entry });
            self.next_lsn += 1;
        }
        Ok(out)
    }
}

/// Reads exactly `buf.len()` bytes, or returns `false` at end of file (nothing or a part read).
fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<bool> {
    use std::io::Read as _;
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// The LSN and record count of every complete entry of the segment starting at `first_lsn`
/// (counted without decoding the records).
pub fn segment_record_counts(dir: &Path, first_lsn: u64) -> Result<Vec<(u64, u64)>> {
    let path = dir.join(segment_name(first_lsn));
    let data =
        std::fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let mut out = Vec::new();
    let mut pos = 0usize;
    while data.len() - pos >= HEADER {
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        if data.len() - pos - HEADER < len {
            break;
        }
        let lsn = u64::from_le_bytes(data[pos + 8..pos + 16].try_into().expect("8 bytes"));
        out.push((
            lsn,
            count_payload_records(&data[pos + HEADER..pos + HEADER + len]),
        ));
        pos += HEADER + len;
    }
    Ok(out)
}

/// Counts the records of the entries `after+1..=through` the log still holds.
pub fn count_records(dir: &Path, after: u64, through: u64) -> Result<u64> {
    let segs = segments(dir)?;
    let mut total = 0;
    for (i, (first, _)) in segs.iter().enumerate() {
        let next_first = segs.get(i + 1).map_or(u64::MAX, |(f, _)| *f);
        if next_first <= after + 1 || *first > through {
            continue;
        }
        total += segment_record_counts(dir, *first)?
            .into_iter()
            .filter(|(lsn, _)| *lsn > after && *lsn <= through)
            .map(|(_, n)| n)
            .sum::<u64>();
    }
    Ok(total)
}

/// Records (field 15) in an encoded [`WalEntry`], counted by walking the protobuf fields.
pub fn count_payload_records(mut payload: &[u8]) -> u64 {
    use prost::encoding::{WireType, decode_key, decode_varint};
    let mut n = 0;
    while !payload.is_empty() {
        let Ok((tag, wire)) = decode_key(&mut payload) else {
            break;
        };
        let skip = match wire {
            WireType::Varint => decode_varint(&mut payload).map(|_| 0).ok(),
            WireType::SixtyFourBit => Some(8),
            WireType::ThirtyTwoBit => Some(4),
            WireType::LengthDelimited => decode_varint(&mut payload)
                .ok()
                .and_then(|l| usize::try_from(l).ok()),
            _ => None,
        };
        let Some(skip) = skip else { break };
        if skip > payload.len() {
            break;
        }
        if tag == RECORDS_FIELD && wire == WireType::LengthDelimited {
            n += 1;
        }
        payload = &payload[skip..];
    }
    n
}

/// Segments with their first LSN and size, oldest first.
pub fn segment_sizes(dir: &Path) -> Result<Vec<(u64, u64)>> {
    segments(dir)?
        .into_iter()
        .map(|(first, path)| {
            let len = std::fs::metadata(&path)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
                .len();
            Ok((first, len))
        })
        .collect()
}

/// Appends groups of entries, one fsync per group.
#[derive(Debug)]
pub struct WalWriter {
    dir: PathBuf,
    file: File,
    written: u64,
    max_segment_bytes: u64,
    next_lsn: u64,
}

impl WalWriter {
    /// Starts a new segment at `next_lsn` (after [`replay`]).
    pub fn create(dir: &Path, next_lsn: u64, max_segment_bytes: u64) -> Result<WalWriter> {
        let file = Self::new_segment(dir, next_lsn)?;
        Ok(WalWriter {
            dir: dir.to_owned(),
            file,
            written: 0,
            max_segment_bytes,
            next_lsn,
        })
    }

    fn new_segment(dir: &Path, lsn: u64) -> Result<File> {
        let path = dir.join(segment_name(lsn));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        sync_dir(dir)?;
        Ok(file)
    }

    /// The LSN the next framed entry must carry.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Reserves the next LSN for an entry being framed.
    pub fn take_lsn(&mut self) -> u64 {
        let lsn = self.next_lsn;
        self.next_lsn += 1;
        lsn
    }

    /// Writes a group of framed entries and waits until they are on disk. After an error the
    /// file's tail is unknown: nothing more may be written until [`recover`](Self::recover)
    /// succeeds.
    pub fn write_group(&mut self, group: &[u8]) -> std::io::Result<()> {
        if group.is_empty() {
            return Ok(());
        }
        self.file.write_all(group)?;
        self.file.sync_data()?;
        self.written += group.len() as u64;
        self.rotate_if_full()
    }

    fn rotate_if_full(&mut self) -> std::io::Result<()> {
        if self.written >= self.max_segment_bytes {
            self.file = Self::new_segment(&self.dir, self.next_lsn)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            self.written = 0;
        }
        Ok(())
    }

    /// After a failed [`write_group`](Self::write_group) whose first entry was `first_lsn`:
    /// cuts the segment back to what was written and synced before it (whatever part of the
    /// failed group reached the file goes; none of it was acknowledged), makes that durable,
    /// continues in a new segment and hands out `first_lsn` again. On error nothing changed and
    /// it may be tried again later (a full disk that gets space, a device that comes back).
    pub fn recover(&mut self, first_lsn: u64) -> Result<()> {
        let io = |what: &str, e: std::io::Error| {
            Error::io(
                format!(
                    "recovering the write-ahead log in {}: {what}",
                    self.dir.display()
                ),
                e,
            )
        };
        self.file
            .set_len(self.written)
            .map_err(|e| io("cutting the failed group off", e))?;
        self.file
            .sync_all()
            .map_err(|e| io("syncing the cut segment", e))?;
        let file = Self::new_segment(&self.dir, first_lsn)?;
        self.file = file;
        self.written = 0;
        self.next_lsn = first_lsn;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(source: &str, watermark: u64, lines: &[&str]) -> (WalEntry, Vec<u8>) {
        let header = WalEntry {
            node: Some(v1::NodeIdentity {
                node_name: "n1".into(),
                ..Default::default()
            }),
            source_id: source.into(),
            receive_unix_nanos: 42,
            watermark,
            records: vec![],
        };
        let mut recs = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            let r = v1::Record {
                sequence: watermark - (lines.len() - 1 - i) as u64,
                log_id: v1::LogId::PolicyAction as i32,
                payload: Some(v1::record::Payload::JsonLine(l.as_bytes().to_vec().into())),
            };
            encode_record(&r, &mut recs);
        }
        (header, recs)
    }

    fn write(w: &mut WalWriter, entries: &[(WalEntry, Vec<u8>)]) {
        let mut g = Vec::new();
        for (h, r) in entries {
            let lsn = w.take_lsn();
            frame_entry(&mut g, lsn, h, r);
        }
        w.write_group(&g).unwrap();
    }

    fn read_all(dir: &Path, after: u64) -> (Vec<(u64, WalEntry)>, ReplayOutcome) {
        let mut got = Vec::new();
        let o = replay(dir, after, |lsn, e| {
            got.push((lsn, e));
            Ok(())
        })
        .unwrap();
        (got, o)
    }

    #[test]
    fn entries_round_trip_across_segments_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(dir.path(), 1, 1 << 20).unwrap();
        write(
            &mut w,
            &[entry("s", 10, &["a", "b"]), entry("t", 5, &["c"])],
        );
        // Force a rotation with a big group.
        let big = "x".repeat(1 << 20);
        write(&mut w, &[entry("s", 11, &[&big])]);
        write(&mut w, &[entry("s", 12, &["d"])]);
        assert_eq!(segments(dir.path()).unwrap().len(), 2);

        let (got, o) = read_all(dir.path(), 0);
        assert_eq!(
            o,
            ReplayOutcome {
                next_lsn: 5,
                replayed: 4,
                torn_bytes: 0
            }
        );
        assert_eq!(
            got.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        assert_eq!(got[0].1.records.len(), 2);
        assert_eq!(
            got[0].1.records[1].payload,
            Some(v1::record::Payload::JsonLine(b"b".to_vec().into()))
        );
        assert_eq!(got[1].1.source_id, "t");
        assert_eq!(read_all(dir.path(), 3).0.len(), 1);

        // Entries 1–3 are in the first segment; once they are committed it goes.
        assert_eq!(truncate_through(dir.path(), 2).unwrap(), 0);
        assert_eq!(truncate_through(dir.path(), 3).unwrap(), 1);
        let (got, o) = read_all(dir.path(), 3);
        assert_eq!(got.len(), 1);
        assert_eq!(o.next_lsn, 5);
    }

    #[test]
    fn a_torn_tail_is_cut_and_earlier_entries_survive() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(dir.path(), 1, 1 << 30).unwrap();
        write(&mut w, &[entry("s", 10, &["a"])]);
        write(&mut w, &[entry("s", 11, &["b"])]);
        drop(w);
        let (_, path) = segments(dir.path()).unwrap().pop().unwrap();
        let full = std::fs::read(&path).unwrap();
        // Every cut inside the second entry loses exactly that entry.
        let first_len = HEADER + u32::from_le_bytes(full[0..4].try_into().unwrap()) as usize;
        for cut in [first_len + 1, first_len + HEADER, full.len() - 1] {
            std::fs::write(&path, &full[..cut]).unwrap();
            let (got, o) = read_all(dir.path(), 0);
            assert_eq!(got.len(), 1, "cut at {cut}");
            assert_eq!(o.next_lsn, 2);
            assert_eq!(o.torn_bytes, (cut - first_len) as u64);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), first_len as u64);
        }
        // A flipped byte in the last entry is a torn tail too.
        let mut bad = full.clone();
        *bad.last_mut().unwrap() ^= 1;
        std::fs::write(&path, &bad).unwrap();
        assert_eq!(read_all(dir.path(), 0).0.len(), 1);
        // Starting again continues the LSNs in a new segment.
        let mut w = WalWriter::create(dir.path(), 2, 1 << 30).unwrap();
        write(&mut w, &[entry("s", 12, &["c"])]);
        let (got, o) = read_all(dir.path(), 0);
        assert_eq!(got.iter().map(|(l, _)| *l).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(o.next_lsn, 3);
    }

    #[test]
    fn a_tail_follows_segments_up_to_the_durable_lsn_and_reports_deleted_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(dir.path(), 1, 1 << 20).unwrap();
        write(
            &mut w,
            &[entry("s", 10, &["a", "b"]), entry("t", 5, &["c"])],
        );
        let big = "x".repeat(1 << 20);
        write(&mut w, &[entry("s", 11, &[&big])]); // closes segment 1 (LSNs 1–3)
        write(&mut w, &[entry("s", 12, &["d"])]);
        let lsns = |r: &TailRead| r.entries.iter().map(|e| e.lsn).collect::<Vec<_>>();

        let mut tail = WalTail::new(dir.path(), 2);
        // Only up to the durable LSN, at least one entry per read, at most max_records.
        let r = tail.read(2, 100).unwrap();
        assert_eq!((lsns(&r), r.missing.clone()), (vec![2], None));
        assert!(tail.read(2, 100).unwrap().entries.is_empty());
        let r = tail.read(10, 1).unwrap();
        assert_eq!(lsns(&r), [3]);
        let r = tail.read(10, 100).unwrap();
        assert_eq!(lsns(&r), [4]);
        assert_eq!(r.entries[0].entry.records.len(), 1);
        assert_eq!(tail.next_lsn(), 5);
        // Counting without decoding.
        assert_eq!(count_records(dir.path(), 0, 4).unwrap(), 5);
        assert_eq!(count_records(dir.path(), 1, 3).unwrap(), 2);

        // A tail behind a deleted segment hears which entries it lost and goes on.
        let mut late = WalTail::new(dir.path(), 1);
        assert_eq!(truncate_through(dir.path(), 3).unwrap(), 1);
        let r = late.read(10, 100).unwrap();
        assert_eq!(r.missing, Some(1..4));
        assert_eq!(lsns(&r), [4]);
    }

    #[test]
    fn a_tail_reading_a_deleted_segment_finishes_it_then_reports_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(dir.path(), 1, 1 << 20).unwrap();
        let big = "x".repeat(1 << 20);
        write(&mut w, &[entry("s", 1, &["a"]), entry("s", 2, &[&big])]); // segment 1: LSNs 1–2
        write(&mut w, &[entry("s", 3, &[&big])]); // segment 3: LSN 3
        write(&mut w, &[entry("s", 4, &["b"])]); // segment 4: LSN 4
        let mut tail = WalTail::new(dir.path(), 1);
        assert_eq!(tail.read(10, 1).unwrap().entries[0].lsn, 1);
        // Segments 1 and 3 go while the tail has segment 1 open.
        assert_eq!(truncate_through(dir.path(), 3).unwrap(), 2);
        let r = tail.read(10, 100).unwrap();
        assert_eq!(r.entries.iter().map(|e| e.lsn).collect::<Vec<_>>(), [2, 4]);
        assert_eq!(r.missing, Some(3..4));
    }

    #[test]
    fn damage_in_a_closed_segment_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(dir.path(), 1, 1 << 20).unwrap();
        let big = "x".repeat(1 << 20);
        write(&mut w, &[entry("s", 10, &[&big])]);
        write(&mut w, &[entry("s", 11, &["b"])]);
        let (_, first) = segments(dir.path()).unwrap().remove(0);
        let mut data = std::fs::read(&first).unwrap();
        data[40] ^= 0xff;
        std::fs::write(&first, &data).unwrap();
        let e = replay(dir.path(), 0, |_, _| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("checksum mismatch at byte 0 of a closed segment"),
            "{e}"
        );
    }
}
