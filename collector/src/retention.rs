//! Retention: partitions whose hour ended longer ago than their table's retention are removed
//! — first from the commit log (one commit), then from storage.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;
use verdict_schema::Timestamp;

use crate::collector::Inner;
use crate::config::RetentionConfig;
use crate::error::Result;
use crate::manifest::{Change, CommitKind, FileEntry};
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
pub async fn apply_once(inner: &Inner, now_nanos: i64) -> Result<usize> {
    let cfg = &inner.config.retention;
    let removed: Vec<String> = {
        let mut log = inner.commit_log.lock().await;
        let removed: Vec<String> = log
            .state()
            .files
            .values()
            .filter(|f| expired(cfg, f, now_nanos))
            .map(|f| f.path.clone())
            .collect();
        if removed.is_empty() {
            return Ok(0);
        }
        log.commit(Change {
            kind: CommitKind::Retention,
            checkpoint: None,
            added: Vec::new(),
            removed: removed.clone(),
        })
        .await?;
        let committed = Arc::new(log.state().files.clone());
        inner.shared.lock().committed = committed;
        removed
    };
    for p in &removed {
        if let Err(e) = inner.storage.delete(p).await {
            tracing::warn!(path = %p, error = %e, "could not delete an expired file (removed at next start)");
        }
    }
    inner
        .metrics
        .retention_files_deleted
        .fetch_add(removed.len() as u64, Ordering::Relaxed);
    tracing::info!(
        files = removed.len(),
        "retention removed expired partitions"
    );
    Ok(removed.len())
}

/// Applies retention at start and every `retention.interval` until `shutdown`.
pub async fn run(inner: Arc<Inner>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if let Err(e) = apply_once(&inner, Timestamp::now().unix_nanos()).await {
            tracing::warn!(error = %e, "retention failed; retried at the next interval");
        }
        tokio::select! {
            _ = crate::collector::stopped(&mut shutdown) => return,
            _ = tokio::time::sleep(inner.config.retention.interval) => {}
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
