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
    /// file's tail is unknown: the caller must stop writing (replay at the next start decides
    /// what survived).
    pub fn write_group(&mut self, group: &[u8]) -> std::io::Result<()> {
        if group.is_empty() {
            return Ok(());
        }
        self.file.write_all(group)?;
        self.file.sync_data()?;
        self.written += group.len() as u64;
        if self.written >= self.max_segment_bytes {
            self.file = Self::new_segment(&self.dir, self.next_lsn)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            self.written = 0;
        }
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
                payload: Some(v1::record::Payload::JsonLine(l.as_bytes().to_vec())),
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
            Some(v1::record::Payload::JsonLine(b"b".to_vec()))
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
