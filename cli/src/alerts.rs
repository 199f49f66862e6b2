//! `verdict alerts list|history`: the alerts a collector's detectors fired (`GET /v1/alerts`,
//! `GET /v1/alerts/history`).

use std::io::Write;

use anyhow::Context;
use verdict_collector::alerts::engine::Alert;
use verdict_collector::alerts::history::HistoryEntry;

use crate::query_client::QueryClient;
use crate::sql::write_columns;

/// How alerts are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    /// The API's JSON.
    Json,
}

#[derive(Debug)]
pub struct AlertsOptions {
    pub collector: String,
    pub token: Option<String>,
    pub format: Format,
    /// `history`: entries at most (newest first); `None`: the alerts firing now.
    pub history: Option<usize>,
}

#[derive(serde::Deserialize)]
struct List {
    alerts: Vec<Alert>,
}

#[derive(serde::Deserialize)]
struct History {
    entries: Vec<HistoryEntry>,
}

fn scope(a: &Alert) -> String {
    format!("{}={}", a.scope, a.scope_value)
}

pub fn run(o: AlertsOptions) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = QueryClient::new(&o.collector, o.token.clone())?;
        let limit = o.history.map(|n| n.to_string());
        let body = match &limit {
            None => client.get("/v1/alerts", &[]).await?,
            Some(n) => client.get("/v1/alerts/history", &[("limit", n)]).await?,
        };
        let mut out = std::io::BufWriter::new(std::io::stdout());
        if o.format == Format::Json {
            out.write_all(&body)?;
            out.flush()?;
            return Ok(());
        }
        match o.history {
            None => {
                let list: List = serde_json::from_slice(&body)
                    .context("the collector's answer is not an alert list")?;
                let rows: Vec<Vec<String>> = list
                    .alerts
                    .iter()
                    .map(|a| {
                        vec![
                            a.started_at.to_string(),
                            a.rule.clone(),
                            a.severity.clone(),
                            scope(a),
                            a.summary.clone(),
                        ]
                    })
                    .collect();
                write_columns(
                    &mut out,
                    &["SINCE", "ALERT", "SEVERITY", "SCOPE", "SUMMARY"],
                    &rows,
                )?;
                writeln!(out, "({} firing)", rows.len())?;
                for a in &list.alerts {
                    for (k, v) in &a.annotations {
                        writeln!(out, "  {} {}: {v}", a.id, k)?;
                    }
                    if !a.filter.is_empty() {
                        writeln!(
                            out,
                            "  {} records: verdict logs read '{}'",
                            a.id,
                            a.filter.replace('\'', "'\\''")
                        )?;
                    }
                }
            }
            Some(_) => {
                let history: History = serde_json::from_slice(&body)
                    .context("the collector's answer is not an alert history")?;
                let rows: Vec<Vec<String>> = history
                    .entries
                    .iter()
                    .map(|e| {
                        vec![
                            e.time.to_string(),
                            e.change.clone(),
                            e.alert.rule.clone(),
                            scope(&e.alert),
                            e.alert.summary.clone(),
                        ]
                    })
                    .collect();
                write_columns(
                    &mut out,
                    &["TIME", "CHANGE", "ALERT", "SCOPE", "SUMMARY"],
                    &rows,
                )?;
                writeln!(out, "({} entries)", rows.len())?;
            }
        }
        out.flush()?;
        Ok(())
    })
}
