//! The retention task: partitions whose hour ended longer ago than their table's retention are
//! removed — first from the lake (one commit), then from storage.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use verdict_schema::Timestamp;

use crate::config::sections::RetentionConfig;
use crate::error::Result;
use crate::lake::Lake;
use crate::manifest::{Change, CommitKind, FileEntry};
use crate::metrics::MaintenanceMetrics;
use crate::table::Table;

fn keep(cfg: &RetentionConfig, table: Table) -> Duration {
    match table {
        Table::Flows => cfg.flows,
        Table::Loss => cfg.loss,
        Table::Rollups => cfg.rollups,
    }
}

/// Whether `f` is past its table's retention at `now_nanos`.
pub fn expired(cfg: &RetentionConfig, f: &FileEntry, now_nanos: i64) -> bool {
    let k = keep(cfg, f.table);
    !k.is_zero()
        && f.hour.end_nanos()
            <= now_nanos.saturating_sub(i64::try_from(k.as_nanos()).unwrap_or(i64::MAX))
}

/// Deletes every expired file (as of `now_nanos`); returns how many.
pub async fn apply_once(
    lake: &Lake,
    config: &RetentionConfig,
    metrics: &MaintenanceMetrics,
    now_nanos: i64,
) -> Result<usize> {
    let removed: Vec<String> = lake
        .committed()
        .values()
        .filter(|f| expired(config, f, now_nanos))
        .map(|f| f.path.clone())
        .collect();
    if removed.is_empty() {
        return Ok(0);
    }
    let change = Change {
        kind: CommitKind::Retention,
        checkpoint: None,
        added: Vec::new(),
        removed: removed.clone(),
    };
    // Refused only when a compaction replaced some of these files meanwhile: its output is
    // just as expired and goes at the next interval.
    if !lake.commit(change).await? {
        return Ok(0);
    }
    metrics.retention_deleted_files.inc_by(removed.len() as u64);
    tracing::info!(
        files = removed.len(),
        "retention removed expired partitions"
    );
    Ok(removed.len())
}

/// Applies retention at start and every `retention.interval` until `stop`.
pub async fn run(
    lake: Arc<Lake>,
    config: RetentionConfig,
    metrics: Arc<crate::metrics::Metrics>,
    stop: CancellationToken,
) {
    loop {
        let now = Timestamp::now().unix_nanos();
        if let Err(e) = apply_once(&lake, &config, &metrics.maintenance, now).await {
            tracing::warn!(error = %e, "retention failed; retried at the next interval");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(config.interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Hour;

    #[test]
    fn partitions_expire_by_hour_end() {
        let cfg = RetentionConfig {
            flows: Duration::from_secs(2 * 3600),
            loss: Duration::ZERO,
            ..RetentionConfig::default()
        };
        let f = |table, hour| FileEntry {
            path: String::new(),
            table,
            hour: Hour(hour),
            rows: 1,
            bytes: 1,
            min_time: 0,
            max_time: 0,
        };
        let now = Hour(10).start_nanos();
        assert!(expired(&cfg, &f(Table::Flows, 7), now));
        assert!(!expired(&cfg, &f(Table::Flows, 8), now + 1));
        assert!(expired(&cfg, &f(Table::Flows, 8), Hour(11).start_nanos()));
        assert!(!expired(&cfg, &f(Table::Loss, 0), now), "0s keeps forever");
        assert!(!expired(&cfg, &f(Table::Rollups, 7), now));
    }
}
