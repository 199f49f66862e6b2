//! `verdict sql 'SELECT …'`: one read-only SQL statement against a collector's lake (tables
//! `policy_action`, `policy_action_loss`, `policy_action_1m` and the views of `sql/`).

use std::io::Write;

use anyhow::Context;
use serde_json::Value;

use crate::query_client::QueryClient;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns with a header.
    Table,
    /// The API's JSON (`columns`, `rows`, `rowCount`).
    Json,
    /// CSV with a header row.
    Csv,
}

#[derive(Debug)]
pub struct SqlOptions {
    pub query: String,
    pub collector: String,
    pub token: Option<String>,
    pub format: Format,
}

pub fn run(o: SqlOptions) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = QueryClient::new(&o.collector, o.token.clone())?;
        let format = match o.format {
            Format::Csv => "csv",
            Format::Table | Format::Json => "json",
        };
        let body = client
            .post_json(
                "/v1/sql",
                &serde_json::json!({"query": o.query, "format": format}),
            )
            .await?;
        let mut out = std::io::BufWriter::new(std::io::stdout());
        match o.format {
            Format::Csv | Format::Json => out.write_all(&body)?,
            Format::Table => {
                let result: verdict_query::api::SqlJsonResult = serde_json::from_slice(&body)
                    .context("the collector's answer is not a SQL result")?;
                write_table(&mut out, &result)?;
            }
        }
        if o.format == Format::Json {
            writeln!(out)?;
        }
        out.flush()?;
        Ok(())
    })
}

/// Writes `rows` under `names` as aligned columns, a rule under the header.
pub fn write_columns(
    out: &mut impl Write,
    names: &[&str],
    rows: &[Vec<String>],
) -> anyhow::Result<()> {
    let mut widths: Vec<usize> = names.iter().map(|n| n.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            let longest = c.lines().map(|l| l.chars().count()).max().unwrap_or(0);
            *w = (*w).max(longest);
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_owned()
    };
    writeln!(
        out,
        "{}",
        line(&names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
    )?;
    writeln!(
        out,
        "{}",
        line(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>())
    )?;
    for r in rows {
        writeln!(out, "{}", line(r))?;
    }
    Ok(())
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Writes `result` as aligned columns (EXPLAIN plans keep their own line breaks).
pub fn write_table(
    out: &mut impl Write,
    result: &verdict_query::api::SqlJsonResult,
) -> anyhow::Result<()> {
    let names: Vec<&str> = result.columns.iter().map(|c| c.name.as_str()).collect();
    let rows: Vec<Vec<String>> = result
        .rows
        .iter()
        .map(|r| r.iter().map(cell).collect())
        .collect();
    write_columns(out, &names, &rows)?;
    writeln!(out, "({} rows)", result.row_count)?;
    Ok(())
}
