//! `verdict logs read` and `verdict logs tail`: Logging-filter queries, like `gcloud logging
//! read` / `gcloud alpha logging tail`, against a collector's query API or (`--file`) over local
//! files with no server.
//!
//! `--file` lines are LogEntries (they have `jsonPayload`; used and printed unchanged) or bare
//! policy-action records from a node's `policy_action.log*`, wrapped in the LogEntry the
//! collector would store: `projects/PROJECT/logs/policy-action`, a `k8s_node` resource from
//! `--project`/`--location`/`--cluster` (default `local`) and the record's `node_name`, both
//! timestamps from the record, and an `insertId` derived from the file name and line number.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use verdict_filter::Filter;
use verdict_filter::ast::{Expr, Operand, ValueExpr};
use verdict_schema::{LogEntry, NodeIdentity, PolicyActionRecord};

use crate::query_client::QueryClient;

/// How entries are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One LogEntry (JSON) per line.
    Json,
    /// Aligned columns: time, disposition, direction, source, destination, protocol/port,
    /// count, policies.
    Table,
}

/// Sort order of results from the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

/// `verdict logs read`.
#[derive(Debug)]
pub struct ReadOptions {
    pub filter: String,
    pub collector: String,
    pub token: Option<String>,
    /// Only entries newer than this (when the filter does not restrict `timestamp` itself).
    /// Default: 1 day from a collector, none over files.
    pub freshness: Option<Duration>,
    pub limit: Option<usize>,
    pub order: Option<Order>,
    pub format: Format,
    pub files: Vec<PathBuf>,
    pub project: Option<String>,
    pub location: Option<String>,
    pub cluster: Option<String>,
}

/// `verdict logs tail`.
#[derive(Debug)]
pub struct TailOptions {
    pub filter: String,
    pub collector: String,
    pub token: Option<String>,
    pub format: Format,
}

/// Default `--freshness` against a collector (gcloud's).
pub const DEFAULT_FRESHNESS: Duration = Duration::from_secs(86_400);

/// Parses the user's filter; its errors carry line and column.
fn parse_filter(text: &str) -> anyhow::Result<Filter> {
    verdict_filter::parse(text).map_err(|e| anyhow::anyhow!("invalid filter: {e}"))
}

/// Whether the filter restricts `timestamp` anywhere (then no freshness window is added).
fn mentions_timestamp(e: &Expr) -> bool {
    fn operand(o: &Operand) -> bool {
        match o {
            Operand::Field(f) => matches!(f.canonical(), "timestamp" | "jsonPayload.timestamp"),
            Operand::Cast(c) => operand(&c.operand),
            Operand::RegexpExtract(r) => operand(&r.operand),
        }
    }
    match e {
        Expr::And(v) | Expr::Or(v) => v.iter().any(mentions_timestamp),
        Expr::Not(inner) => mentions_timestamp(inner),
        Expr::Compare(c) => operand(&c.left) && !matches!(c.right, ValueExpr::Not(_)),
        Expr::Exists(_) | Expr::Global(_) | Expr::Call(_) => false,
    }
}

/// The filter with the freshness window added (as gcloud does, unless it names `timestamp`).
fn windowed(filter: &Filter, freshness: Option<Duration>) -> anyhow::Result<String> {
    let Some(freshness) = freshness else {
        return Ok(filter.text().to_owned());
    };
    if filter.expr().is_some_and(mentions_timestamp) {
        return Ok(filter.text().to_owned());
    }
    let since = chrono::Utc::now() - chrono::Duration::from_std(freshness)?;
    let bound = format!(
        "timestamp >= \"{}\"",
        since.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
    );
    Ok(if filter.is_match_all() {
        bound
    } else {
        // Newlines keep a trailing `--` comment of the user's filter from eating the `)`.
        format!("{bound} AND (\n{}\n)", filter.text())
    })
}

pub fn read(o: ReadOptions) -> anyhow::Result<()> {
    let filter = parse_filter(&o.filter)?;
    if o.files.is_empty() {
        if o.location.is_some() || o.cluster.is_some() {
            bail!("--location and --cluster describe records read with --file");
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(read_remote(&o, &filter))
    } else {
        if o.order.is_some() {
            bail!("--order applies to a collector; --file entries come in file order");
        }
        read_files(&o, &filter)
    }
}

async fn read_remote(o: &ReadOptions, filter: &Filter) -> anyhow::Result<()> {
    let client = QueryClient::new(&o.collector, o.token.clone())?;
    let text = windowed(filter, Some(o.freshness.unwrap_or(DEFAULT_FRESHNESS)))?;
    let order = match o.order.unwrap_or(Order::Desc) {
        Order::Asc => "timestamp asc",
        Order::Desc => "timestamp desc",
    };
    let mut printer = Printer::new(o.format);
    let mut remaining = o.limit;
    let mut token: Option<String> = None;
    loop {
        let page_size = remaining.map_or(1000, |r| r.min(1000));
        if page_size == 0 {
            break;
        }
        let mut request = serde_json::json!({
            "filter": text,
            "orderBy": order,
            "pageSize": page_size,
        });
        if let Some(p) = &o.project {
            request["resourceNames"] = serde_json::json!([format!("projects/{p}")]);
        }
        if let Some(t) = &token {
            request["pageToken"] = Value::String(t.clone());
        }
        let body = client.post_json("/v2/entries:list", &request).await?;
        let page: verdict_query::ListEntriesResponse = serde_json::from_slice(&body)
            .context("the collector's answer is not a list of entries")?;
        for entry in &page.entries {
            printer.entry(entry, None)?;
        }
        if let Some(r) = remaining.as_mut() {
            *r = r.saturating_sub(page.entries.len());
        }
        match page.next_page_token {
            Some(t) if !page.entries.is_empty() => token = Some(t),
            _ => break,
        }
    }
    printer.finish()
}

fn read_files(o: &ReadOptions, filter: &Filter) -> anyhow::Result<()> {
    let text = windowed(filter, o.freshness)?;
    let filter = parse_filter(&text)?;
    let node = |node_name: &str| NodeIdentity {
        project_id: o.project.clone().unwrap_or_else(|| "local".into()),
        location: o.location.clone().unwrap_or_else(|| "local".into()),
        cluster_name: o.cluster.clone().unwrap_or_else(|| "local".into()),
        node_name: node_name.to_owned(),
    };
    let mut printer = Printer::new(o.format);
    let mut printed = 0usize;
    for path in &o.files {
        if o.limit.is_some_and(|l| printed >= l) {
            break;
        }
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let n = i + 1;
            let line = line.with_context(|| format!("{}:{n}: cannot read", path.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            let (entry, raw) = file_entry(path, n, &line, &node)?;
            if filter.matches(&entry) {
                printer.entry(&entry, raw.then_some(line.as_str()))?;
                printed += 1;
                if o.limit.is_some_and(|l| printed >= l) {
                    break;
                }
            }
        }
    }
    printer.finish()
}

/// A line of a file as a LogEntry (JSON), and whether it was one already (print it as is).
fn file_entry(
    path: &Path,
    n: usize,
    line: &str,
    node: &dyn Fn(&str) -> NodeIdentity,
) -> anyhow::Result<(Value, bool)> {
    let value: Value = serde_json::from_str(line)
        .with_context(|| format!("{}:{n}: not a JSON object", path.display()))?;
    if value.get("jsonPayload").is_some() {
        return Ok((value, true));
    }
    let record: PolicyActionRecord = serde_json::from_value(value).with_context(|| {
        format!(
            "{}:{n}: neither a LogEntry (no jsonPayload) nor a policy-action record",
            path.display()
        )
    })?;
    let identity = node(&record.node_name);
    let insert_id =
        verdict_schema::log_entry::insert_id(&path.display().to_string(), "file", n as u64);
    let receive = record.timestamp;
    let entry = LogEntry::policy_action(record, &identity, receive, insert_id);
    Ok((serde_json::to_value(&entry)?, false))
}

/// Writes entries to standard output in the chosen format.
struct Printer {
    format: Format,
    out: std::io::BufWriter<std::io::Stdout>,
    header: bool,
}

impl Printer {
    fn new(format: Format) -> Printer {
        Printer {
            format,
            out: std::io::BufWriter::new(std::io::stdout()),
            header: false,
        }
    }

    /// Prints one entry; `raw` is its original line when it must be printed unchanged.
    fn entry(&mut self, entry: &Value, raw: Option<&str>) -> anyhow::Result<()> {
        match self.format {
            Format::Json => match raw {
                Some(line) => writeln!(self.out, "{line}")?,
                None => writeln!(self.out, "{}", serde_json::to_string(entry)?)?,
            },
            Format::Table => {
                if !self.header {
                    self.header = true;
                    self.row(&[
                        "TIMESTAMP",
                        "DISPOSITION",
                        "DIRECTION",
                        "SRC",
                        "DEST",
                        "PROTO/PORT",
                        "COUNT",
                        "POLICIES",
                    ])?;
                }
                let p = &entry["jsonPayload"];
                let c = &p["connection"];
                let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
                let endpoint =
                    |e: &Value, ip: &Value| match e.get("pod_name").and_then(Value::as_str) {
                        Some(pod) => format!("{}/{pod}", text(&e["pod_namespace"])),
                        None => e
                            .get("instance")
                            .and_then(Value::as_str)
                            .map_or_else(|| text(ip), str::to_owned),
                    };
                let policies: Vec<String> = p["policies"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|x| match x.get("namespace").and_then(Value::as_str) {
                                Some(ns) => format!("{ns}/{}", text(&x["name"])),
                                None => text(&x["name"]),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let cells = [
                    text(&entry["timestamp"]),
                    text(&p["disposition"]),
                    text(&c["direction"]),
                    endpoint(&p["src"], &c["src_ip"]),
                    endpoint(&p["dest"], &c["dest_ip"]),
                    format!("{}/{}", text(&c["protocol"]), c["dest_port"]),
                    p["count"].to_string(),
                    policies.join(","),
                ];
                let cells: Vec<&str> = cells.iter().map(String::as_str).collect();
                self.row(&cells)?;
            }
        }
        Ok(())
    }

    fn row(&mut self, cells: &[&str]) -> anyhow::Result<()> {
        const WIDTHS: [usize; 8] = [31, 11, 9, 40, 40, 10, 5, 0];
        let mut line = String::new();
        for (cell, width) in cells.iter().zip(WIDTHS) {
            line.push_str(&format!("{cell:<width$} "));
        }
        writeln!(self.out, "{}", line.trim_end())?;
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<()> {
        self.out.flush()?;
        Ok(())
    }
}

pub fn tail(o: TailOptions) -> anyhow::Result<()> {
    let filter = parse_filter(&o.filter)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = QueryClient::new(&o.collector, o.token.clone())?;
        let mut printer = Printer::new(o.format);
        client
            .get_lines("/v1/tail", &[("filter", filter.text())], |line| {
                let message: Value = serde_json::from_slice(line)
                    .context("the tail stream sent a line that is not JSON")?;
                if let Some(entries) = message["entries"].as_array() {
                    for e in entries {
                        printer.entry(e, None)?;
                    }
                    printer.out.flush()?;
                }
                if let Some(s) = message.get("suppressionInfo") {
                    eprintln!(
                        "warning: the collector skipped entries this client read too slowly: {s}"
                    );
                }
                if let Some(e) = message.get("error") {
                    eprintln!("error from the collector: {e}");
                }
                Ok(true)
            })
            .await?;
        printer.finish()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_is_added_only_without_a_timestamp_restriction() {
        let f = parse_filter("jsonPayload.disposition=deny -- note").unwrap();
        let w = windowed(&f, Some(Duration::from_secs(3600))).unwrap();
        assert!(w.starts_with("timestamp >= \""), "{w}");
        assert!(
            w.ends_with("AND (\njsonPayload.disposition=deny -- note\n)"),
            "{w}"
        );
        parse_filter(&w).unwrap();
        let f = parse_filter("timestamp > \"2020-01-01\" severity=INFO").unwrap();
        assert_eq!(
            windowed(&f, Some(Duration::from_secs(60))).unwrap(),
            f.text()
        );
        let all = parse_filter("").unwrap();
        assert!(
            windowed(&all, Some(Duration::from_secs(60)))
                .unwrap()
                .starts_with("timestamp >= ")
        );
        assert_eq!(windowed(&all, None).unwrap(), "");
    }
}
