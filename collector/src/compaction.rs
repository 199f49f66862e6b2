//! Compaction: small files of one partition merged into one, so readers open few files per hour.
//!
//! Flushes every few seconds leave many small files in the current hour. A partition is
//! compacted when it has `compaction.min_files` small files (below half of
//! `compaction.target_file_bytes`), or two once its hour has passed. The merged file is
//! uploaded, then one commit replaces the inputs by it (only if every input is still committed),
//! then the inputs are deleted. A crash at any point leaves either the inputs or the output
//! committed, and the other as uncommitted leftovers that the next start deletes.
//!
//! Rows are re-sorted (flows, loss) or re-aggregated (rollups: one row per minute and key).
//! Memory: the inputs are decoded whole, so a compaction holds up to roughly eight times
//! `target_file_bytes` of Arrow data at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use verdict_schema::Timestamp;

use crate::config::sections::{CompactionConfig, ParquetConfig};
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::manifest::{Change, CommitKind, FileEntry};
use crate::metrics::MaintenanceMetrics;
use crate::parquet_file;
use crate::rollup;
use crate::table::{Hour, Table};

/// Late records keep arriving for a while after an hour ends; a partition counts as closed
/// this long after its hour.
const CLOSED_AFTER: i64 = 15 * 60 * 1_000_000_000;

/// Picks the files to merge in each partition that needs it.
pub fn plan(
    files: &BTreeMap<String, FileEntry>,
    now_nanos: i64,
    min_files: usize,
    target_bytes: u64,
) -> Vec<(Table, Hour, Vec<FileEntry>)> {
    let mut by_partition: BTreeMap<(Table, Hour), Vec<&FileEntry>> = BTreeMap::new();
    for f in files.values() {
        if f.bytes < target_bytes / 2 {
            by_partition.entry((f.table, f.hour)).or_default().push(f);
        }
    }
    let mut out = Vec::new();
    for ((table, hour), small) in by_partition {
        let closed = hour.end_nanos().saturating_add(CLOSED_AFTER) <= now_nanos;
        if small.len() < min_files && !(closed && small.len() >= 2) {
            continue;
        }
        // Names start with the write time: oldest first.
        let mut pick = Vec::new();
        let mut sum = 0u64;
        for f in small {
            if pick.len() >= 2 && sum + f.bytes > target_bytes {
                break;
            }
            sum += f.bytes;
            pick.push(f.clone());
        }
        if pick.len() >= 2 {
            out.push((table, hour, pick));
        }
    }
    out
}

/// Merges `inputs` (all of `table`/`hour`) into one committed file. Returns false when an
/// input was removed meanwhile (nothing changed).
async fn merge(
    lake: &Lake,
    parquet: &ParquetConfig,
    table: Table,
    hour: Hour,
    inputs: Vec<FileEntry>,
) -> Result<bool> {
    let mut batches = Vec::new();
    for f in &inputs {
        let Some(decoded) = lake.read(f).await? else {
            // Removed meanwhile (retention): nothing to merge.
            return Ok(false);
        };
        batches.extend(decoded);
    }
    let cfg = parquet.clone();
    let expected_rows: u64 = inputs.iter().map(|f| f.rows).sum();
    let encoded = tokio::task::spawn_blocking(move || match table {
        Table::Rollups => {
            let merged =
                rollup::merge_rollups(&batches).map_err(|e| Error::arrow("merging rollups", e))?;
            parquet_file::encode_sorted(&cfg, table, &merged)
        }
        Table::Flows | Table::Loss => parquet_file::encode(&cfg, table, &batches),
    })
    .await
    .map_err(|e| Error::io("encoding task", std::io::Error::other(e)))??;
    if table != Table::Rollups && encoded.rows != expected_rows {
        return Err(Error::Manifest {
            path: inputs[0].path.clone(),
            message: format!(
                "compaction read {} rows where the commit log says {expected_rows}; files left as they are",
                encoded.rows
            ),
        });
    }
    let added = lake.upload(vec![(table, hour, encoded)]).await?;
    let change = Change {
        kind: CommitKind::Compaction,
        checkpoint: None,
        added: added.clone(),
        removed: inputs.iter().map(|f| f.path.clone()).collect(),
    };
    // On error the output stays (an ambiguous failure may have committed it); if it was not
    // committed, the next start deletes it.
    if lake.commit(change).await? {
        Ok(true)
    } else {
        lake.discard(&added).await;
        Ok(false)
    }
}

/// Compacts every partition that needs it (as of `now_nanos`); returns the merges done.
pub async fn compact_once(
    lake: &Lake,
    config: &CompactionConfig,
    parquet: &ParquetConfig,
    metrics: &MaintenanceMetrics,
    now_nanos: i64,
) -> Result<usize> {
    let files = lake.committed();
    let mut done = 0;
    for (table, hour, inputs) in plan(
        &files,
        now_nanos,
        config.min_files,
        config.target_file_bytes.0,
    ) {
        let merged = inputs.len() as u64;
        match merge(lake, parquet, table, hour, inputs).await {
            Ok(true) => {
                done += 1;
                metrics.compactions.inc();
                metrics.compacted_files.inc_by(merged);
            }
            Ok(false) => {}
            Err(e) => {
                metrics.compaction_failures.inc();
                return Err(e);
            }
        }
    }
    Ok(done)
}

/// Compacts every `compaction.interval` until `stop`.
pub async fn run(
    lake: Arc<Lake>,
    config: CompactionConfig,
    parquet: ParquetConfig,
    metrics: Arc<crate::metrics::Metrics>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(config.interval) => {}
        }
        let now = Timestamp::now().unix_nanos();
        if let Err(e) = compact_once(&lake, &config, &parquet, &metrics.maintenance, now).await {
            tracing::warn!(error = %e, "compaction failed; retried at the next interval");
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(table: Table, hour: i64, name: &str, bytes: u64) -> (String, FileEntry) {
        let path = format!("{}/{name}", table.dir());
        (
            path.clone(),
            FileEntry {
                path,
                table,
                hour: Hour(hour),
                rows: 1,
                bytes,
                min_time: 0,
                max_time: 0,
            },
        )
    }

    #[test]
    fn plans_merge_small_files_of_busy_or_closed_partitions() {
        let now = Hour(100).start_nanos() + 1;
        let mut files = BTreeMap::new();
        // Current hour: 3 small files (below min_files 4) and one big one: not yet.
        for i in 0..3 {
            files.extend([file(Table::Flows, 100, &format!("a{i}"), 10)]);
        }
        files.extend([file(Table::Flows, 100, "big", 1000)]);
        // A closed hour with two small files: merged.
        files.extend([
            file(Table::Loss, 90, "l1", 10),
            file(Table::Loss, 90, "l2", 10),
        ]);
        // A busy hour with 5 small files, capped by the target size.
        for i in 0..5 {
            files.extend([file(Table::Rollups, 100, &format!("r{i}"), 300)]);
        }
        let p = plan(&files, now, 4, 1000);
        let shape: Vec<_> = p
            .iter()
            .map(|(t, h, fs)| {
                (
                    *t,
                    h.0,
                    fs.iter().map(|f| f.path.clone()).collect::<Vec<_>>(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            [
                (
                    Table::Loss,
                    90,
                    vec![
                        "policy_action_loss/l1".to_owned(),
                        "policy_action_loss/l2".to_owned()
                    ]
                ),
                (
                    Table::Rollups,
                    100,
                    vec![
                        "policy_action_1m/r0".to_owned(),
                        "policy_action_1m/r1".to_owned(),
                        "policy_action_1m/r2".to_owned()
                    ]
                ),
            ]
        );
    }
}
