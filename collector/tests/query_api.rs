//! The query API of a real collector on loopback (`/v2/entries:list`, `/v1/sql`, `/v1/tail`):
//! a hand-written table of filters over the conformance fixture records — each with the exact
//! records it selects, read off the fixture table in verdict-filter's `cases.test` — run
//! through the JSON evaluator and through the API, over rows in committed Parquet files and
//! rows not yet flushed; paging; the SQL formats; live tail; errors; authentication.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use support::{Served, config, json_record, tempdir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use verdict_collector::config::Secret;
use verdict_schema::proto::v1;

/// Filters over payload and resource-label fields (the envelope the collector writes differs
/// from the fixtures' own logName, severity and insertId) and the fixture indices they select.
const CASES: &[(&str, &[usize])] = &[
    (r#"jsonPayload.disposition = "deny""#, &[1, 4, 6, 8, 11]),
    ("jsonPayload.dest.pod_namespace = shop", &[2, 3, 6, 10]),
    (
        "-jsonPayload.dest.pod_namespace = shop",
        &[0, 1, 4, 5, 7, 8, 9, 11, 12],
    ),
    (
        "jsonPayload.connection.dest_port >= 8080",
        &[0, 2, 3, 6, 7, 10],
    ),
    (r#"jsonPayload.src.pod_name =~ "^client-allow""#, &[0, 12]),
    ("NOT jsonPayload.src.pod_name:*", &[3, 6, 8]),
    (r#"jsonPayload.policies.name = "allow-dns""#, &[12]),
    (
        r#"ip_in_net(jsonPayload.connection.dest_ip, "10.84.0.0/16")"#,
        &[0, 2, 3, 4, 8, 9, 10, 12],
    ),
    (
        "jsonPayload.connection.protocol = (udp OR icmp)",
        &[1, 8, 12],
    ),
    (
        r#"jsonPayload.timestamp >= "2020-06-14" AND jsonPayload.timestamp < "2020-06-15""#,
        &[3, 4, 5, 6],
    ),
    ("jsonPayload.count > 2", &[1, 6, 8]),
    (r#"resource.labels.cluster_name = "edge-cluster""#, &[7]),
    (r#"SEARCH("coredns")"#, &[8, 12]),
    (
        "jsonPayload.disposition = deny jsonPayload.connection.direction = egress",
        &[1, 11],
    ),
];

/// The fixture entries as the records a node would ship, each with its node identity.
fn fixture_records() -> Vec<(v1::NodeIdentity, String)> {
    verdict_filter::conformance::entries()
        .iter()
        .map(|e| {
            let l = &e["resource"]["labels"];
            let s = |k: &str| l[k].as_str().unwrap().to_owned();
            (
                v1::NodeIdentity {
                    node_name: s("node_name"),
                    cluster_name: s("cluster_name"),
                    location: s("location"),
                    project_id: s("project_id"),
                },
                serde_json::to_string(&e["jsonPayload"]).unwrap(),
            )
        })
        .collect()
}

/// Sends fixture records `range` (one batch each, source `fixture-I`) and returns their
/// insertIds by fixture index.
async fn ship(served: &Served, range: std::ops::Range<usize>) -> HashMap<String, usize> {
    let records = fixture_records();
    let mut stream = served.stream().await;
    let mut ids = HashMap::new();
    for i in range {
        let (node, line) = &records[i];
        let source = format!("fixture-{i}");
        let batch = v1::Batch {
            schema_version: v1::SchemaVersion::V1 as i32,
            batch_id: i as u64,
            node: Some(node.clone()),
            source: Some(v1::Source {
                id: source.clone(),
                kind: v1::SourceKind::PolicyActionLog as i32,
                path: "/var/log/network/policy_action.log".into(),
            }),
            records: vec![json_record(1, v1::LogId::PolicyAction, line)],
        };
        let result = stream.call(&batch).await;
        assert_eq!(result.durable_sequence, 1, "{result:?}");
        ids.insert(
            verdict_schema::log_entry::insert_id(&node.node_name, &source, 1),
            i,
        );
    }
    ids
}

/// One HTTP/1.1 request; (status, body).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{headers}\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

async fn post(addr: SocketAddr, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let (status, text) = http(addr, "POST", path, "", &body.to_string()).await;
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status} {text}: {e}"));
    (status, json)
}

/// Every page of `filter`, as fixture indices in the order returned.
async fn list_all(
    addr: SocketAddr,
    ids: &HashMap<String, usize>,
    filter: &str,
    order: &str,
    page_size: usize,
) -> Vec<usize> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..100 {
        let mut body =
            serde_json::json!({"filter": filter, "orderBy": order, "pageSize": page_size});
        if let Some(t) = &token {
            body["pageToken"] = t.clone().into();
        }
        let (status, page) = post(addr, "/v2/entries:list", body).await;
        assert_eq!(status, 200, "{filter}: {page}");
        let entries = page["entries"].as_array().unwrap();
        assert!(entries.len() <= page_size);
        for e in entries {
            let id = e["insertId"].as_str().unwrap();
            out.push(
                *ids.get(id)
                    .unwrap_or_else(|| panic!("unknown insertId {id}")),
            );
        }
        match page["nextPageToken"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => return out,
        }
    }
    panic!("{filter}: more than 100 pages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_sql_and_tail_through_the_api() {
    let (_guard, dir) = tempdir();
    let mut cfg = config(&dir);
    // Rows stay unflushed until the test flushes: half the fixture is read from Parquet files,
    // half from memory.
    cfg.flush.max_age = Duration::from_secs(3600);
    cfg.query.max_rows = 20;
    let served = Served::start(cfg).await;
    let mut ids = ship(&served, 0..7).await;
    served.collector.flush().await.unwrap();
    ids.extend(ship(&served, 7..13).await);
    let files = served
        .collector
        .committed_files(verdict_collector::Table::Flows);
    assert!(!files.is_empty());
    assert_eq!(
        served
            .collector
            .unflushed_batches(verdict_collector::Table::Flows)
            .iter()
            .map(|b| b.num_rows())
            .sum::<usize>(),
        6
    );
    let addr = served.http;

    // Every filter: the JSON evaluator over the fixture entries, and the API.
    let fixture = verdict_filter::conformance::entries();
    for (filter, want) in CASES {
        let f = verdict_filter::parse(filter).unwrap();
        let by_json: Vec<usize> = (0..fixture.len())
            .filter(|&i| f.matches(&fixture[i]))
            .collect();
        assert_eq!(&by_json, want, "JSON evaluator: {filter}");
        let mut by_api = list_all(addr, &ids, filter, "timestamp asc", 3).await;
        by_api.sort_unstable();
        assert_eq!(&by_api, want, "API: {filter}");
    }

    // Pages in time order, both ways; a project restriction.
    let by_time = {
        let mut v: Vec<(String, usize)> = fixture
            .iter()
            .enumerate()
            .map(|(i, e)| (e["timestamp"].as_str().unwrap().to_owned(), i))
            .collect();
        v.sort_by(|a, b| {
            let t = |s: &str| verdict_schema::Timestamp::parse(s).unwrap().unix_nanos();
            t(&a.0).cmp(&t(&b.0))
        });
        v.into_iter().map(|(_, i)| i).collect::<Vec<_>>()
    };
    assert_eq!(list_all(addr, &ids, "", "timestamp asc", 4).await, by_time);
    let mut desc = by_time.clone();
    desc.reverse();
    assert_eq!(list_all(addr, &ids, "", "timestamp desc", 5).await, desc);
    let (status, page) = post(
        addr,
        "/v2/entries:list",
        serde_json::json!({"resourceNames": ["projects/edge-proj"]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(page["entries"].as_array().unwrap().len(), 1);
    assert_eq!(
        page["entries"][0]["resource"]["labels"]["cluster_name"],
        "edge-cluster"
    );

    // SQL in the three formats, over files and unflushed rows alike.
    let (status, out) = post(
        addr,
        "/v1/sql",
        serde_json::json!({"query": "SELECT count(*) AS n, sum(\"count\") AS c FROM policy_action"}),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["rows"], serde_json::json!([[13, 33]]));
    assert_eq!(out["columns"][0]["name"], "n");
    let (status, csv) = http(
        addr,
        "POST",
        "/v1/sql",
        "",
        r#"{"query": "SELECT namespace, connections FROM denies_by_namespace ORDER BY connections DESC LIMIT 2", "format": "csv"}"#,
    )
    .await;
    assert_eq!(
        (status, csv.as_str()),
        (200, "namespace,connections\nkube-system,12\nshop,7\n")
    );
    let (status, arrow) = http(
        addr,
        "POST",
        "/v1/sql",
        "Accept: application/vnd.apache.arrow.stream\r\n",
        r#"{"query": "SELECT disposition, count(*) AS n FROM policy_action GROUP BY 1 ORDER BY 1"}"#,
    )
    .await;
    assert_eq!(status, 200);
    let _ = arrow; // binary: decoded below from the raw bytes
    let bytes = http_bytes(
        addr,
        r#"{"query": "SELECT disposition, count(*) AS n FROM policy_action GROUP BY 1 ORDER BY 1", "format": "arrow"}"#,
    )
    .await;
    let reader = verdict_query::datafusion::arrow::ipc::reader::StreamReader::try_new(
        std::io::Cursor::new(bytes),
        None,
    )
    .unwrap();
    let batches: Vec<_> = reader.map(Result::unwrap).collect();
    let text = verdict_query::datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    assert!(
        text.contains("| allow       | 8 |") && text.contains("| deny        | 5 |"),
        "{text}"
    );

    // Errors: what and where.
    for (path, body, status, text, position) in [
        (
            "/v2/entries:list",
            serde_json::json!({"filter": "jsonPayload.disposition="}),
            400,
            "expected a value after '='",
            Some((1, 25)),
        ),
        (
            "/v2/entries:list",
            serde_json::json!({"filter": "jsonPayload.dest.pod_nmae = x"}),
            400,
            "did you mean \"jsonPayload.dest.pod_name\"",
            Some((1, 1)),
        ),
        (
            "/v2/entries:list",
            serde_json::json!({"pageSize": 5000}),
            400,
            "pageSize 5000",
            None,
        ),
        (
            "/v2/entries:list",
            serde_json::json!({"orderBy": "insertId"}),
            400,
            "orderBy",
            None,
        ),
        (
            "/v2/entries:list",
            serde_json::json!({"pageToken": "zz"}),
            400,
            "pageToken",
            None,
        ),
        (
            "/v2/entries:list",
            serde_json::json!({"filtr": "x"}),
            400,
            "unknown field `filtr`",
            None,
        ),
        (
            "/v2/entries:list",
            serde_json::json!({"resourceNames": ["folders/1"]}),
            400,
            "projects/PROJECT_ID",
            None,
        ),
        (
            "/v1/sql",
            serde_json::json!({"query": "DELETE FROM policy_action"}),
            400,
            "got DELETE FROM",
            None,
        ),
        (
            "/v1/sql",
            serde_json::json!({"query": "SELECT *\nFROM policy_action\nWHERE = 1"}),
            400,
            "Line: 3",
            Some((3, 7)),
        ),
        (
            "/v1/sql",
            serde_json::json!({"query": "SELECT nope FROM policy_action"}),
            400,
            "nope",
            Some((1, 8)),
        ),
        (
            "/v1/sql",
            serde_json::json!({"query": "SELECT a.count FROM policy_action a, policy_action b"}),
            422,
            "more than 20 rows",
            None,
        ),
        (
            "/v1/sql",
            serde_json::json!({"query": "SELECT 1", "format": "xml"}),
            400,
            "use json, csv or arrow",
            None,
        ),
    ] {
        let (got, out) = post(addr, path, body.clone()).await;
        assert_eq!(got, status, "{body}: {out}");
        let message = out["error"]["message"].as_str().unwrap();
        assert!(message.contains(text), "{body}: {message}");
        let pos = position.map(|(l, c)| serde_json::json!({"line": l, "column": c}));
        assert_eq!(out["error"].get("position").cloned(), pos, "{body}: {out}");
    }
    // A page token of another query.
    let (_, page) = post(addr, "/v2/entries:list", serde_json::json!({"pageSize": 1})).await;
    let token = page["nextPageToken"].as_str().unwrap();
    let (status, out) = post(
        addr,
        "/v2/entries:list",
        serde_json::json!({"pageSize": 1, "filter": "jsonPayload.count > 1", "pageToken": token}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("different query")
    );

    // Live tail: only new entries that match, as they become durable.
    let mut tail = tokio::net::TcpStream::connect(addr).await.unwrap();
    tail.write_all(
        b"GET /v1/tail?filter=jsonPayload.disposition%3Ddeny HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    )
    .await
    .unwrap();
    let mut seen = read_until(&mut tail, "\r\n\r\n").await;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    let allow = flow(0, "allow", "2026-01-01T00:00:01Z");
    let deny = flow(1, "deny", "2026-01-01T00:00:02Z");
    let mut stream = served.stream().await;
    let node = support::node("tail-node");
    for (n, line) in [(1, &allow), (2, &deny)] {
        let mut b = support::batch(
            "tail-node",
            "tail",
            n,
            vec![json_record(n, v1::LogId::PolicyAction, line)],
        );
        b.node = Some(node.clone());
        assert_eq!(stream.call(&b).await.durable_sequence, n);
    }
    let deny_id = verdict_schema::log_entry::insert_id("tail-node", "tail", 2);
    let allow_id = verdict_schema::log_entry::insert_id("tail-node", "tail", 1);
    seen.push_str(&read_until(&mut tail, &deny_id).await);
    assert!(!seen.contains(&allow_id), "{seen}");
    assert!(seen.contains("\"entries\":["), "{seen}");

    // Shutting down ends the open tail stream instead of waiting for it.
    tokio::time::timeout(Duration::from_secs(30), served.stop())
        .await
        .expect("the collector stops with a tail open");
}

/// A policy-action record of pod `tail/p{i}`.
fn flow(i: u32, disposition: &str, ts: &str) -> String {
    format!(
        r#"{{"connection":{{"src_ip":"10.9.0.{i}","dest_ip":"10.9.1.1","src_port":4000{i},"dest_port":80,"protocol":"tcp","direction":"ingress"}},"disposition":"{disposition}"{p},"src":{{"pod_name":"p{i}","pod_namespace":"tail","namespace":"tail"}},"dest":{{"pod_name":"web","pod_namespace":"tail","namespace":"tail"}},"count":1,"node_name":"tail-node","timestamp":"{ts}"}}"#,
        p = if disposition == "allow" {
            r#","policies":[{"name":"allow-web","namespace":"tail"}]"#
        } else {
            ""
        }
    )
}

/// Reads from `s` until the text read contains `marker` (30 s deadline).
async fn read_until(s: &mut tokio::net::TcpStream, marker: &str) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&out).contains(marker) {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no {marker} within 30 s; read {}",
                    String::from_utf8_lossy(&out)
                )
            })
            .unwrap();
        assert!(n > 0, "stream ended before {marker}");
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The raw body of a `POST /v1/sql`.
async fn http_bytes(addr: SocketAddr, body: &str) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /v1/sql HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let at = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    out.split_off(at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_are_required_when_configured() {
    let (_guard, dir) = tempdir();
    let mut cfg = config(&dir);
    cfg.query.auth_tokens = vec![Secret::new("s3cret")];
    let served = Served::start(cfg).await;
    let body = r#"{"query": "SELECT 1 AS one"}"#;
    let (status, out) = http(served.http, "POST", "/v1/sql", "", body).await;
    assert_eq!(status, 401, "{out}");
    assert!(
        out.contains("missing \\\"Authorization: Bearer TOKEN\\\""),
        "{out}"
    );
    let (status, _) = http(
        served.http,
        "POST",
        "/v1/sql",
        "Authorization: Bearer nope\r\n",
        body,
    )
    .await;
    assert_eq!(status, 401);
    let (status, out) = http(
        served.http,
        "POST",
        "/v1/sql",
        "Authorization: Bearer s3cret\r\n",
        body,
    )
    .await;
    assert_eq!(
        (status, out.as_str()),
        (
            200,
            r#"{"columns":[{"name":"one","type":"Int64"}],"rows":[[1]],"rowCount":1}"#
        )
    );
    // The metrics and the sinks (destinations, errors) need the token too; health does not.
    for path in ["/metrics", "/sinks"] {
        let (status, out) = http(served.http, "GET", path, "", "").await;
        assert_eq!(status, 401, "{path}: {out}");
        let (status, _) = http(
            served.http,
            "GET",
            path,
            "Authorization: Bearer s3cret\r\n",
            "",
        )
        .await;
        assert_eq!(status, 200, "{path}");
    }
    assert!(
        support::http_get(served.http, "/healthz")
            .await
            .contains("ok")
    );
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_only_direct_loopback_clients_are_answered() {
    let (_guard, dir) = tempdir();
    let served = Served::start(config(&dir)).await;
    let body = r#"{"query": "SELECT 1 AS one"}"#;
    let (status, _) = http(served.http, "POST", "/v1/sql", "", body).await;
    assert_eq!(status, 200, "a direct loopback client");
    // A local reverse proxy relays the whole network: loopback is not trust then.
    for (path, method, headers) in [
        ("/v1/sql", "POST", "X-Forwarded-For: 203.0.113.9\r\n"),
        ("/metrics", "GET", "Forwarded: for=203.0.113.9\r\n"),
        ("/sinks", "GET", "X-Real-IP: 203.0.113.9\r\n"),
    ] {
        let (status, out) = http(served.http, method, path, headers, body).await;
        assert_eq!(status, 403, "{path} {headers}: {out}");
    }
    // DNS rebinding: a page of another site whose name resolves to 127.0.0.1.
    let mut s = tokio::net::TcpStream::connect(served.http).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: evil.example:8080\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    served.stop().await;
}
