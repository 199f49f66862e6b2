//! The commit log: which Parquet files are committed, and the per-source watermarks and WAL
//! position they correspond to. It lives in object storage beside the data, under
//! `_verdict/INSTANCE/`:
//!
//! - `log/VERSION.json` (20 digits): one commit each — files added and removed, watermarks
//!   changed or forgotten, and for flushes the WAL position now covered by committed files;
//! - `checkpoints/VERSION.json`: the whole state after commit VERSION, written every
//!   [`CHECKPOINT_EVERY`] commits so start-up reads one checkpoint and a few commits.
//!
//! A commit is one object PUT, visible completely or not at all: that PUT is the atomic step
//! that makes new files (and the watermarks of the rows in them) part of the table. Files not
//! named by the committed state are invisible to the collector's readers and are deleted at the
//! next start (leftovers of a flush or compaction a crash interrupted). One collector instance
//! writes its log; instances sharing a storage root have distinct instance ids.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::Storage;
use crate::table::{Hour, Table};

/// A checkpoint is written after this many commits.
pub const CHECKPOINT_EVERY: u64 = 50;
/// Commits kept in the log before the latest checkpoint (for inspection; not needed to load).
const KEEP_COMMITS_BEFORE_CHECKPOINT: u64 = 10;

/// (node name, source id): the unit of exactly-once (docs/design.md, "Contract 3: node to
/// collector").
pub type SourceKey = (String, String);

/// One committed Parquet file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the storage root: `TABLE/dt=…/hour=…/NAME.parquet`.
    pub path: String,
    pub table: Table,
    pub hour: Hour,
    pub rows: u64,
    pub bytes: u64,
    /// Smallest and largest event time in the file, nanoseconds since the epoch.
    pub min_time: i64,
    pub max_time: i64,
}

/// A source's watermark: every record at or below `sequence` is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceWatermark {
    pub sequence: u64,
    /// Receive time (ns) of the source's last batch; drives forgetting idle sources.
    pub last_seen: i64,
}

/// Forgets watermarks of sources idle longer than `retention` (as of `now_nanos`).
pub fn forget_idle_sources(
    marks: &mut HashMap<SourceKey, SourceWatermark>,
    now_nanos: i64,
    retention: Duration,
) -> usize {
    let cutoff = now_nanos.saturating_sub(i64::try_from(retention.as_nanos()).unwrap_or(i64::MAX));
    let before = marks.len();
    marks.retain(|_, w| w.last_seen >= cutoff);
    before - marks.len()
}

/// The committed state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ManifestState {
    pub version: u64,
    /// Every WAL entry at or below this position is in committed files.
    pub wal_lsn: u64,
    /// Watermarks as of `wal_lsn`.
    pub watermarks: HashMap<SourceKey, SourceWatermark>,
    pub files: BTreeMap<String, FileEntry>,
}

/// What a commit is for (recorded for operators).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommitKind {
    Flush,
    Compaction,
    Retention,
}

/// A change to commit.
#[derive(Debug, Clone)]
pub struct Change {
    pub kind: CommitKind,
    /// For a flush: the WAL position and the watermarks as of it (the whole map; the commit
    /// stores only the difference).
    pub checkpoint: Option<(u64, HashMap<SourceKey, SourceWatermark>)>,
    pub added: Vec<FileEntry>,
    pub removed: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct WatermarkRow {
    node: String,
    source: String,
    sequence: u64,
    last_seen: i64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitRecord {
    version: u64,
    kind: CommitKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wal_lsn: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    watermarks: Vec<WatermarkRow>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    forgotten_sources: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    added: Vec<FileEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    removed: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Checkpoint {
    version: u64,
    wal_lsn: u64,
    watermarks: Vec<WatermarkRow>,
    files: Vec<FileEntry>,
}

fn rows(w: &HashMap<SourceKey, SourceWatermark>) -> Vec<WatermarkRow> {
    let mut v: Vec<WatermarkRow> = w
        .iter()
        .map(|((node, source), m)| WatermarkRow {
            node: node.clone(),
            source: source.clone(),
            sequence: m.sequence,
            last_seen: m.last_seen,
        })
        .collect();
    v.sort_by(|a, b| (&a.node, &a.source).cmp(&(&b.node, &b.source)));
    v
}

/// The commit log of one instance.
#[derive(Debug)]
pub struct CommitLog {
    storage: Storage,
    prefix: String,
    state: ManifestState,
}

impl CommitLog {
    /// Loads the committed state (the latest checkpoint, then every later commit).
    pub async fn open(storage: Storage, instance_id: &str) -> Result<CommitLog> {
        let prefix = format!("{}/{instance_id}", crate::storage::METADATA_DIR);
        let mut log = CommitLog {
            storage,
            prefix,
            state: ManifestState::default(),
        };
        let checkpoints = log
            .storage
            .list(&format!("{}/checkpoints", log.prefix))
            .await?;
        let latest = checkpoints.iter().filter_map(|(p, _)| version_of(p)).max();
        if let Some(v) = latest {
            let path = log.checkpoint_path(v);
            let bytes = log
                .storage
                .get(&path)
                .await?
                .ok_or_else(|| Error::Manifest {
                    path: path.clone(),
                    message: "listed but missing".into(),
                })?;
            let c: Checkpoint = serde_json::from_slice(&bytes).map_err(|e| Error::Manifest {
                path: path.clone(),
                message: e.to_string(),
            })?;
            log.state = ManifestState {
                version: c.version,
                wal_lsn: c.wal_lsn,
                watermarks: c
                    .watermarks
                    .into_iter()
                    .map(|r| {
                        (
                            (r.node, r.source),
                            SourceWatermark {
                                sequence: r.sequence,
                                last_seen: r.last_seen,
                            },
                        )
                    })
                    .collect(),
                files: c.files.into_iter().map(|f| (f.path.clone(), f)).collect(),
            };
        }
        loop {
            let next = log.state.version + 1;
            let path = log.commit_path(next);
            let Some(bytes) = log.storage.get(&path).await? else {
                break;
            };
            let c: CommitRecord = serde_json::from_slice(&bytes).map_err(|e| Error::Manifest {
                path: path.clone(),
                message: e.to_string(),
            })?;
            if c.version != next {
                return Err(Error::Manifest {
                    path,
                    message: format!("holds version {}, expected {next}", c.version),
                });
            }
            apply(&mut log.state, c);
        }
        Ok(log)
    }

    pub fn state(&self) -> &ManifestState {
        &self.state
    }

    fn commit_path(&self, v: u64) -> String {
        format!("{}/log/{v:020}.json", self.prefix)
    }

    fn checkpoint_path(&self, v: u64) -> String {
        format!("{}/checkpoints/{v:020}.json", self.prefix)
    }

    /// Commits `change` as the next version. On error nothing is committed (a retry may reuse
    /// the version: only one writer appends to this log).
    pub async fn commit(&mut self, change: Change) -> Result<u64> {
        let version = self.state.version + 1;
        let mut record = CommitRecord {
            version,
            kind: change.kind,
            wal_lsn: None,
            watermarks: Vec::new(),
            forgotten_sources: Vec::new(),
            added: change.added,
            removed: change.removed,
        };
        if let Some((lsn, marks)) = change.checkpoint {
            record.wal_lsn = Some(lsn);
            record.watermarks = rows(&marks)
                .into_iter()
                .filter(|r| {
                    self.state
                        .watermarks
                        .get(&(r.node.clone(), r.source.clone()))
                        .is_none_or(|m| m.sequence != r.sequence || m.last_seen != r.last_seen)
                })
                .collect();
            record.forgotten_sources = self
                .state
                .watermarks
                .keys()
                .filter(|k| !marks.contains_key(*k))
                .cloned()
                .collect();
            record.forgotten_sources.sort();
        }
        let json = serde_json::to_vec(&record).expect("commit records serialize");
        self.storage
            .put(&self.commit_path(version), Bytes::from(json))
            .await?;
        apply(&mut self.state, record);
        if version.is_multiple_of(CHECKPOINT_EVERY) {
            // Best effort: a missing checkpoint only makes the next start read more commits.
            if let Err(e) = self.write_checkpoint().await {
                tracing::warn!(error = %e, version, "writing a commit-log checkpoint failed");
            }
        }
        Ok(version)
    }

    async fn write_checkpoint(&self) -> Result<()> {
        let s = &self.state;
        let c = Checkpoint {
            version: s.version,
            wal_lsn: s.wal_lsn,
            watermarks: rows(&s.watermarks),
            files: s.files.values().cloned().collect(),
        };
        let json = serde_json::to_vec(&c).expect("checkpoints serialize");
        self.storage
            .put(&self.checkpoint_path(s.version), Bytes::from(json))
            .await?;
        // Older checkpoints and the commits they cover are no longer needed to load.
        for (p, _) in self
            .storage
            .list(&format!("{}/checkpoints", self.prefix))
            .await?
        {
            if version_of(&p).is_some_and(|v| v < s.version) {
                self.storage.delete(&p).await?;
            }
        }
        let keep_from = s.version.saturating_sub(KEEP_COMMITS_BEFORE_CHECKPOINT);
        for (p, _) in self.storage.list(&format!("{}/log", self.prefix)).await? {
            if version_of(&p).is_some_and(|v| v < keep_from) {
                self.storage.delete(&p).await?;
            }
        }
        Ok(())
    }
}

fn version_of(path: &str) -> Option<u64> {
    path.rsplit('/').next()?.strip_suffix(".json")?.parse().ok()
}

fn apply(state: &mut ManifestState, c: CommitRecord) {
    state.version = c.version;
    if let Some(lsn) = c.wal_lsn {
        state.wal_lsn = lsn;
    }
    for r in c.watermarks {
        state.watermarks.insert(
            (r.node, r.source),
            SourceWatermark {
                sequence: r.sequence,
                last_seen: r.last_seen,
            },
        );
    }
    for k in c.forgotten_sources {
        state.watermarks.remove(&k);
    }
    for p in c.removed {
        state.files.remove(&p);
    }
    for f in c.added {
        state.files.insert(f.path.clone(), f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> FileEntry {
        FileEntry {
            path: path.into(),
            table: Table::Flows,
            hour: Hour(10),
            rows: 3,
            bytes: 100,
            min_time: 1,
            max_time: 2,
        }
    }

    fn marks(pairs: &[(&str, u64)]) -> HashMap<SourceKey, SourceWatermark> {
        pairs
            .iter()
            .map(|(s, seq)| {
                (
                    ("n".to_owned(), (*s).to_owned()),
                    SourceWatermark {
                        sequence: *seq,
                        last_seen: 7,
                    },
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn commits_and_checkpoints_reload_to_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(
            &dir.path().display().to_string(),
            &crate::config::values::StorageOptions::default(),
        )
        .unwrap();
        let mut log = CommitLog::open(storage.clone(), "i").await.unwrap();
        assert_eq!(log.state(), &ManifestState::default());
        // A model of the file set, to compare with.
        let mut model = std::collections::BTreeSet::new();
        for v in 1..=(CHECKPOINT_EVERY + 3) {
            let change = if v % 2 == 0 {
                model.remove(&format!("f{}", v - 1));
                model.insert(format!("f{v}"));
                Change {
                    kind: CommitKind::Compaction,
                    checkpoint: None,
                    added: vec![file(&format!("f{v}"))],
                    removed: vec![format!("f{}", v - 1)],
                }
            } else {
                model.insert(format!("f{v}"));
                let m = if v == 5 {
                    marks(&[("b", v)])
                } else {
                    marks(&[("a", v), ("b", v)])
                };
                Change {
                    kind: CommitKind::Flush,
                    checkpoint: Some((v * 10, m)),
                    added: vec![file(&format!("f{v}"))],
                    removed: vec![],
                }
            };
            assert_eq!(log.commit(change).await.unwrap(), v);
        }
        let last = CHECKPOINT_EVERY + 3;
        let s = log.state().clone();
        assert_eq!(s.version, last);
        assert_eq!(s.wal_lsn, last * 10);
        assert_eq!(
            s.files
                .keys()
                .cloned()
                .collect::<std::collections::BTreeSet<_>>(),
            model
        );
        assert_eq!(s.watermarks, marks(&[("a", last), ("b", last)]));
        let reloaded = CommitLog::open(storage.clone(), "i").await.unwrap();
        assert_eq!(reloaded.state(), &s);
        // The checkpoint replaced the early commits.
        let logs = storage.list("_verdict/i/log").await.unwrap();
        assert!(logs.len() < 20, "{logs:?}");
        assert_eq!(
            storage.list("_verdict/i/checkpoints").await.unwrap().len(),
            1
        );
        // Another instance's log is separate.
        let other = CommitLog::open(storage, "j").await.unwrap();
        assert_eq!(other.state().version, 0);
    }
}
