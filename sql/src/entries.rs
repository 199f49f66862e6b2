//! `entries:list`: Logging-filter queries returning LogEntries, shaped like Cloud Logging's
//! `POST /v2/entries:list` (`resourceNames`, `filter`, `orderBy`, `pageSize`, `pageToken`).
//!
//! Pages are keyset pages on `(timestamp, insertId)`: the token names the last entry returned
//! and the query it belongs to, so a page never repeats or skips entries that existed when the
//! first page was read, and a later page still prunes by time.

use datafusion::arrow::compute::cast;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::{Expr as DfExpr, SortExpr, col, lit};
use serde::{Deserialize, Serialize};
use verdict_filter::Filter;

use crate::error::{QueryError, Result};
use crate::session::{Engine, QueryEngine};
use crate::translate::{timestamp_literal, translate};

/// The table entries are listed from.
pub const ENTRIES_TABLE: &str = "policy_action";
/// Default and largest `pageSize` (Cloud Logging's).
pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 1000;

/// The request body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListEntriesRequest {
    /// `projects/PROJECT` (or `projects/PROJECT/locations/…/buckets/…/views/…`): entries of
    /// these projects. Empty: every project.
    #[serde(default)]
    pub resource_names: Vec<String>,
    /// A query in the Logging query language; empty: every entry.
    #[serde(default)]
    pub filter: String,
    /// `timestamp asc` (default) or `timestamp desc`.
    #[serde(default)]
    pub order_by: Option<String>,
    /// Entries per page, 1..=1000 (default 50).
    #[serde(default)]
    pub page_size: Option<i64>,
    /// `nextPageToken` of the previous page of the same query.
    #[serde(default)]
    pub page_token: Option<String>,
}

/// The response body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListEntriesResponse {
    pub entries: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// Sort direction of `orderBy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

impl Order {
    pub fn parse(text: Option<&str>) -> Result<Order> {
        let Some(text) = text else {
            return Ok(Order::Asc);
        };
        let words: Vec<String> = text.split_whitespace().map(str::to_lowercase).collect();
        match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            [] | ["timestamp"] | ["timestamp", "asc"] => Ok(Order::Asc),
            ["timestamp", "desc"] => Ok(Order::Desc),
            _ => Err(QueryError::InvalidRequest(format!(
                "orderBy {text:?}: only \"timestamp asc\" and \"timestamp desc\" are supported"
            ))),
        }
    }
}

/// The position after the last entry of a page, and a fingerprint of its query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PageToken {
    /// `timestamp` of the last entry, ns.
    t: i64,
    /// Its `insertId`.
    i: String,
    /// Fingerprint of (resourceNames, filter, orderBy).
    q: String,
}

impl PageToken {
    fn encode(&self) -> String {
        let json = serde_json::to_vec(self).expect("token serializes");
        json.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn decode(text: &str) -> Option<PageToken> {
        if !text.len().is_multiple_of(2) || !text.is_ascii() {
            return None;
        }
        let bytes: Option<Vec<u8>> = (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
            .collect();
        serde_json::from_slice(&bytes?).ok()
    }
}

fn fingerprint(req: &ListEntriesRequest, order: Order) -> String {
    // FNV-1a 64: stable across releases, enough to tell queries apart.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |s: &str| {
        for b in s.bytes().chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for r in &req.resource_names {
        feed(r);
    }
    feed(&req.filter);
    feed(if order == Order::Asc { "asc" } else { "desc" });
    format!("{h:016x}")
}

/// The project of a resource name.
fn project_of(name: &str) -> Result<&str> {
    let mut parts = name.split('/');
    match (parts.next(), parts.next()) {
        (Some("projects"), Some(p)) if !p.is_empty() => Ok(p),
        _ => Err(QueryError::InvalidRequest(format!(
            "resourceNames: {name:?} is not \"projects/PROJECT_ID\" (Verdict stores project-level logs only)"
        ))),
    }
}

impl QueryEngine {
    /// Lists entries matching `req` (on the query threads, within the limits).
    pub async fn list_entries(&self, req: &ListEntriesRequest) -> Result<ListEntriesResponse> {
        let req = req.clone();
        self.run(move |engine| async move { engine.list_entries(&req).await })
            .await
    }
}

impl Engine {
    async fn list_entries(&self, req: &ListEntriesRequest) -> Result<ListEntriesResponse> {
        let order = Order::parse(req.order_by.as_deref())?;
        let page_size = match req.page_size {
            None | Some(0) => DEFAULT_PAGE_SIZE,
            Some(n) if (1..=MAX_PAGE_SIZE as i64).contains(&n) => n as usize,
            Some(n) => {
                return Err(QueryError::InvalidRequest(format!(
                    "pageSize {n}: must be between 1 and {MAX_PAGE_SIZE}"
                )));
            }
        };
        let filter = Filter::parse(&req.filter)?;
        let projects = req
            .resource_names
            .iter()
            .map(|n| project_of(n))
            .collect::<Result<Vec<_>>>()?;
        let fp = fingerprint(req, order);
        let after = match req.page_token.as_deref().filter(|t| !t.is_empty()) {
            None => None,
            Some(t) => {
                let token = PageToken::decode(t).ok_or_else(|| {
                    QueryError::InvalidRequest("pageToken is not a token this server issued".into())
                })?;
                if token.q != fp {
                    return Err(QueryError::InvalidRequest(
                        "pageToken belongs to a different query (resourceNames, filter and orderBy must stay the same)".into(),
                    ));
                }
                Some(token)
            }
        };

        let mut predicates: Vec<DfExpr> = Vec::new();
        if let Some(p) = translate(&filter)?.predicate {
            predicates.push(p);
        }
        if !projects.is_empty() {
            predicates
                .push(col("project_id").in_list(projects.iter().map(|p| lit(*p)).collect(), false));
        }
        if let Some(a) = &after {
            let t = || timestamp_literal(a.t);
            let (bound, strictly, tie) = match order {
                Order::Asc => (
                    col("timestamp").gt_eq(t()),
                    col("timestamp").gt(t()),
                    col("insert_id").gt(lit(a.i.clone())),
                ),
                Order::Desc => (
                    col("timestamp").lt_eq(t()),
                    col("timestamp").lt(t()),
                    col("insert_id").lt(lit(a.i.clone())),
                ),
            };
            predicates.push(bound);
            predicates.push(strictly.or(col("timestamp").eq(t()).and(tie)));
        }
        let asc = order == Order::Asc;
        let sort = vec![
            SortExpr::new(col("timestamp"), asc, false),
            SortExpr::new(col("insert_id"), asc, false),
        ];
        // Late materialization: the page's keys first, reading only the key and predicate
        // columns of every matching row; then the whole rows of those keys only, from the few
        // row groups and pages their time range covers.
        let run = async {
            let mut df = self.context().table(ENTRIES_TABLE).await?;
            for p in predicates {
                df = df.filter(p)?;
            }
            let keys = df
                .select(vec![col("timestamp"), col("insert_id")])?
                .sort(sort.clone())?
                .limit(0, Some(page_size + 1))?
                .collect()
                .await?;
            let Some((low, high, ids)) = key_bounds(&keys)? else {
                return Ok::<Vec<RecordBatch>, QueryError>(Vec::new());
            };
            let rows = self
                .context()
                .table(ENTRIES_TABLE)
                .await?
                .filter(col("timestamp").gt_eq(timestamp_literal(low)))?
                .filter(col("timestamp").lt_eq(timestamp_literal(high)))?
                .filter(col("insert_id").in_list(ids.into_iter().map(lit).collect(), false))?
                .sort(sort)?
                .limit(0, Some(page_size + 1))?;
            Ok(rows.collect().await?)
        };
        let batches: Vec<RecordBatch> = run.await?;
        let mut entries = Vec::new();
        let mut last: Option<(i64, String)> = None;
        let mut more = false;
        'outer: for batch in &batches {
            for entry in to_log_entries(batch)? {
                if entries.len() == page_size {
                    more = true;
                    break 'outer;
                }
                last = Some((entry.timestamp.unix_nanos(), entry.insert_id.clone()));
                entries.push(serde_json::to_value(&entry).map_err(QueryError::Json)?);
            }
        }
        let next_page_token = match (more, last) {
            (true, Some((t, i))) => Some(PageToken { t, i, q: fp }.encode()),
            _ => None,
        };
        Ok(ListEntriesResponse {
            entries,
            next_page_token,
        })
    }
}

/// The smallest and largest timestamp and the insert ids of a page's keys (`timestamp`,
/// `insert_id` columns); `None` for no rows.
fn key_bounds(
    batches: &[RecordBatch],
) -> datafusion::error::Result<Option<(i64, i64, Vec<String>)>> {
    use datafusion::arrow::array::{Array, StringArray, TimestampNanosecondArray};
    use datafusion::arrow::datatypes::{DataType, TimeUnit};
    let mut out: Option<(i64, i64, Vec<String>)> = None;
    for b in batches {
        let t = cast(
            b.column(0),
            &DataType::Timestamp(TimeUnit::Nanosecond, None),
        )?;
        let id = cast(b.column(1), &DataType::Utf8)?;
        let (Some(t), Some(id)) = (
            t.as_any().downcast_ref::<TimestampNanosecondArray>(),
            id.as_any().downcast_ref::<StringArray>(),
        ) else {
            return Err(datafusion::error::DataFusionError::Internal(
                "page keys are not (timestamp, insert_id)".into(),
            ));
        };
        for i in 0..b.num_rows() {
            if t.is_null(i) || id.is_null(i) {
                continue;
            }
            let (v, key) = (t.value(i), id.value(i).to_owned());
            match &mut out {
                None => out = Some((v, v, vec![key])),
                Some((low, high, ids)) => {
                    *low = (*low).min(v);
                    *high = (*high).max(v);
                    ids.push(key);
                }
            }
        }
    }
    Ok(out)
}

/// Rows of `policy_action` (in whatever encoding the plan produced) as LogEntries.
pub fn to_log_entries(batch: &RecordBatch) -> Result<Vec<verdict_schema::LogEntry>> {
    let schema = verdict_schema::flat_schema::log_entry_schema();
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            batch.column_by_name(f.name()).cloned().ok_or_else(|| {
                QueryError::InvalidRequest(format!("result has no column {}", f.name()))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let batch = crate::lake::batch_in_types(columns, &schema).map_err(QueryError::Encode)?;
    verdict_schema::flat_schema::batch_to_log_entries(&batch).map_err(QueryError::Encode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let t = PageToken {
            t: -5,
            i: "abc".into(),
            q: "00ff".into(),
        };
        assert_eq!(PageToken::decode(&t.encode()), Some(t));
        assert_eq!(PageToken::decode("zz"), None);
        assert_eq!(PageToken::decode("abc"), None);
    }

    #[test]
    fn order_by_accepts_only_timestamp() {
        assert_eq!(Order::parse(None).unwrap(), Order::Asc);
        assert_eq!(Order::parse(Some("TIMESTAMP Desc")).unwrap(), Order::Desc);
        assert!(Order::parse(Some("insertId asc")).is_err());
    }

    #[test]
    fn resource_names_are_projects() {
        assert_eq!(project_of("projects/p1").unwrap(), "p1");
        assert_eq!(
            project_of("projects/p1/locations/global/buckets/_Default/views/_AllLogs").unwrap(),
            "p1"
        );
        assert!(project_of("organizations/1").is_err());
    }
}
