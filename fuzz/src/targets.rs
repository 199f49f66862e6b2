//! The fuzz targets: what an attacker can send, each through the code that first reads it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use verdict_collector::decode::{Limits, TimeWindow, build_rows, peek_header, prepare};
use verdict_collector::wal::{WalEntry, encode_record, frame_entry, replay};
use verdict_schema::proto::v1;
use verdict_schema::timestamp::Timestamp;

use crate::{Outcome, Target};

/// The kind of an error: its `Debug` up to the first delimiter (the variant's name).
fn kind(debug: String) -> String {
    debug
        .split(|c: char| !c.is_alphanumeric() && c != '_')
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn text(input: &[u8]) -> String {
    String::from_utf8_lossy(input).into_owned()
}

fn tokens(list: &[&str]) -> Vec<Vec<u8>> {
    list.iter().map(|t| t.as_bytes().to_vec()).collect()
}

/// Every target, by name.
pub fn all() -> Vec<Box<dyn Target>> {
    vec![
        Box::new(FilterTarget::new()),
        Box::new(SqlTarget::new()),
        Box::new(IngestTarget::new()),
        Box::new(ManifestTarget),
        Box::new(IptablesTarget),
        Box::new(WalTarget::new()),
    ]
}

/// The Logging filter: parse, evaluate on the conformance entries, translate to DataFusion.
#[derive(Debug)]
pub struct FilterTarget {
    entries: Vec<serde_json::Value>,
}

impl FilterTarget {
    pub fn new() -> FilterTarget {
        FilterTarget {
            entries: verdict_filter::conformance::entries(),
        }
    }
}

impl Default for FilterTarget {
    fn default() -> Self {
        Self::new()
    }
}

impl Target for FilterTarget {
    fn name(&self) -> &'static str {
        "filter"
    }
    fn seeds(&self) -> Vec<Vec<u8>> {
        verdict_filter::conformance::cases()
            .into_iter()
            .map(|c| c.query.into_bytes())
            .collect()
    }
    fn dictionary(&self) -> Vec<Vec<u8>> {
        tokens(&[
            " AND ",
            " OR ",
            " NOT ",
            "-",
            "(",
            ")",
            ":",
            "=",
            "!=",
            "=~",
            "!~",
            ">=",
            "<",
            "\"",
            "\\",
            "*",
            ".",
            "jsonPayload.",
            "jsonPayload.connection.dest_port",
            "timestamp>=",
            "\"2026-01-01T00:00:00Z\"",
            "resource.labels.",
            "labels.\"a\"",
            "SEARCH(",
            "sample(insertId, 0.5)",
            "severity>=WARNING",
            "log_id(",
            "cast(",
            " AS ",
            "jsonPayload.policies.name",
            "ip_in_net(",
            "\"10.0.0.0/8\"",
            "1e400",
            "-9223372036854775809",
            "regex(",
            "\u{0130}",
            "\u{1F600}",
        ])
    }
    fn run(&mut self, input: &[u8]) -> Result<Outcome, String> {
        let query = text(input);
        let filter = match verdict_filter::parse(&query) {
            Ok(f) => f,
            Err(e) => {
                if e.to_string().is_empty() {
                    return Err(format!("an empty error for {query:?}"));
                }
                return Ok(Outcome::Refused(kind(format!("{e:?}"))));
            }
        };
        let matched = self.entries.iter().filter(|e| filter.matches(e)).count();
        let translated = verdict_query::translate(&filter);
        Ok(Outcome::Accepted(format!(
            "matched {} of {}, {}",
            matched.min(2),
            self.entries.len(),
            match translated {
                Ok(t) if t.fallback_nodes.is_empty() => "translated".to_owned(),
                Ok(_) => "translated with fallback".to_owned(),
                Err(e) => kind(format!("{e:?}")),
            }
        )))
    }
}

/// The SQL endpoint's engine (with the collector's default limits, a short timeout), over an
/// empty lake with the real schemas and views.
#[derive(Debug)]
pub struct SqlTarget {
    runtime: tokio::runtime::Runtime,
    engine: verdict_query::QueryEngine,
}

impl SqlTarget {
    pub fn new() -> SqlTarget {
        use verdict_query::lake::LakeTableDef;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let lake = verdict_query::FixedLake {
            store: Arc::new(object_store::memory::InMemory::new()),
            tables: vec![
                LakeTableDef {
                    name: "policy_action",
                    schema: verdict_schema::flat_schema::log_entry_schema(),
                    time_column: "timestamp",
                },
                LakeTableDef {
                    name: "policy_action_loss",
                    schema: verdict_schema::flat_loss_schema::loss_entry_schema(),
                    time_column: "timestamp",
                },
            ],
            snapshots: Default::default(),
        };
        let limits = verdict_query::QueryLimits {
            timeout: Duration::from_secs(2),
            ..verdict_query::QueryLimits::default()
        };
        let engine = runtime
            .block_on(verdict_query::QueryEngine::new(Arc::new(lake), limits, &[]))
            .expect("the engine");
        SqlTarget { runtime, engine }
    }
}

impl Default for SqlTarget {
    fn default() -> Self {
        Self::new()
    }
}

impl Target for SqlTarget {
    fn name(&self) -> &'static str {
        "sql"
    }
    fn seeds(&self) -> Vec<Vec<u8>> {
        tokens(&[
            "SELECT 1",
            "SELECT count(*) FROM policy_action WHERE disposition = 'deny'",
            "SELECT * FROM denies_by_namespace ORDER BY connections DESC LIMIT 10",
            "SELECT * FROM top_talkers LIMIT 5",
            "SELECT * FROM namespace_matrix",
            "SELECT * FROM deny_rate_per_minute",
            "SELECT * FROM allows_by_policy",
            "SELECT date_trunc('minute', timestamp) AS m, count(*) FROM policy_action GROUP BY 1 ORDER BY 1",
            "SELECT dest_namespace, sum(count) FROM policy_action WHERE timestamp > now() - INTERVAL '1 hour' GROUP BY dest_namespace",
            "WITH t AS (SELECT * FROM policy_action) SELECT src_ip, dest_ip FROM t UNION ALL SELECT '1', '2'",
            "SELECT repeat('ab', 3), lpad('7', 3, '0'), range(0, 10, 3), generate_series(1, 5)",
            "SELECT array_repeat('a', 4), array_resize([1, 2], 5, 0)",
            "SELECT equals_ignoring_case(disposition, 'DENY') FROM policy_action",
            "EXPLAIN SELECT * FROM policy_action_loss",
            "SELECT regexp_replace('abc', 'b+', 'x'), unnest([1, 2, 3])",
            "VALUES (1, 'a'), (2, 'b')",
        ])
    }
    fn dictionary(&self) -> Vec<Vec<u8>> {
        tokens(&[
            "SELECT ",
            " FROM ",
            " WHERE ",
            " GROUP BY ",
            " ORDER BY ",
            " LIMIT ",
            " UNION ALL ",
            " JOIN ",
            " ON ",
            "(",
            ")",
            ",",
            "'",
            "\"",
            "*",
            " OR 1=1",
            " AND ",
            "NOT ",
            "CAST(",
            " AS ",
            "repeat(",
            "range(",
            "generate_series(",
            "lpad(",
            "array_repeat(",
            "unnest(",
            "regexp_replace(",
            "date_trunc(",
            "to_timestamp(",
            "arrow_cast(",
            "make_array(",
            "string_agg(",
            "array_agg(",
            "policy_action",
            "policy_action_loss",
            "policy_action_1m",
            "denies_by_namespace",
            "disposition",
            "timestamp",
            "policies",
            "src_ip",
            "count",
            "INTERVAL '1 day'",
            "2147483647",
            "-9223372036854775808",
            "1e308",
            "NULL",
            "[",
            "]",
            "{",
            "}",
            ";",
            "--",
            "/*",
            "COPY ",
            "CREATE TABLE ",
            "INSERT INTO ",
            "SET ",
        ])
    }
    fn max_len(&self) -> usize {
        16 * 1024
    }
    fn run(&mut self, input: &[u8]) -> Result<Outcome, String> {
        let sql = text(input);
        match self.runtime.block_on(self.engine.sql(&sql)) {
            Ok(_) => Ok(Outcome::Accepted("answered".into())),
            Err(verdict_query::QueryError::Internal(m))
                if m.starts_with(verdict_query::PANICKED) =>
            {
                Err(format!("{m} (SQL: {sql:?})"))
            }
            Err(e) => Ok(Outcome::Refused(format!(
                "{} {}",
                e.status().as_u16(),
                kind(format!("{e:?}"))
            ))),
        }
    }
}

fn flow_line(timestamp: &str) -> String {
    format!(
        r#"{{"connection":{{"src_ip":"10.0.0.1","dest_ip":"10.0.0.2","src_port":40000,"dest_port":80,"protocol":"tcp","direction":"ingress"}},"disposition":"allow","policies":[{{"name":"p","namespace":"ns"}}],"src":{{"pod_name":"a","pod_namespace":"ns","namespace":"ns","workload_name":"a","workload_kind":"Deployment"}},"dest":{{"pod_name":"b","pod_namespace":"ns","namespace":"ns","workload_name":"b","workload_kind":"Deployment"}},"count":1,"node_name":"n1","timestamp":"{timestamp}"}}"#
    )
}

fn json_record(sequence: u64, line: String) -> v1::Record {
    v1::Record {
        sequence,
        log_id: v1::LogId::PolicyAction as i32,
        payload: Some(v1::record::Payload::JsonLine(line.into_bytes().into())),
    }
}

fn node() -> v1::NodeIdentity {
    v1::NodeIdentity {
        node_name: "n1".into(),
        cluster_name: "c".into(),
        location: "l".into(),
        project_id: "p".into(),
    }
}

/// The ingest decoder: the bytes of one stream message, through the size check before decoding,
/// the protobuf decoder and the record checks and conversion into rows.
#[derive(Debug)]
pub struct IngestTarget {
    limits: Limits,
}

impl IngestTarget {
    pub fn new() -> IngestTarget {
        IngestTarget {
            limits: Limits {
                max_batch_bytes: 8 << 20,
                max_records: 100_000,
                max_record_bytes: 64 << 10,
                // Wide, so that the seeds' fixed timestamps stay accepted.
                window: TimeWindow {
                    max_age: Duration::from_secs(100 * 365 * 86_400),
                    max_ahead: Duration::from_secs(86_400),
                },
                max_sequence_gap: 64 << 20,
            },
        }
    }
}

impl Default for IngestTarget {
    fn default() -> Self {
        Self::new()
    }
}

impl Target for IngestTarget {
    fn name(&self) -> &'static str {
        "ingest"
    }
    fn seeds(&self) -> Vec<Vec<u8>> {
        let batch = |records: Vec<v1::Record>| {
            v1::Batch {
                schema_version: v1::SchemaVersion::V1 as i32,
                batch_id: 7,
                node: Some(node()),
                source: Some(v1::Source {
                    id: "src-1".into(),
                    kind: v1::SourceKind::PolicyActionLog as i32,
                    path: "/var/log/network/policy_action.log".into(),
                }),
                records,
            }
            .encode_to_vec()
        };
        vec![
            batch(vec![json_record(
                600,
                flow_line("2026-11-21T13:15:02.123456789Z"),
            )]),
            batch(vec![
                json_record(600, flow_line("2026-11-21T13:15:02Z")),
                json_record(1200, flow_line("2026-11-21T14:15:02Z")),
                json_record(1800, flow_line("2026-11-22T00:00:00+01:00")),
            ]),
            batch(Vec::new()),
        ]
    }
    fn dictionary(&self) -> Vec<Vec<u8>> {
        let mut d = tokens(&[
            "{",
            "}",
            "[",
            "]",
            "\"",
            ":",
            ",",
            "null",
            "\\u0000",
            "\\ud800",
            "\"count\":",
            "\"timestamp\":",
            "\"connection\":",
            "\"policies\":",
            "\"direction\":\"egress\"",
            "\"disposition\":\"deny\"",
            "\"src_ip\":\"::ffff:1.2.3.4\"",
            "\"dest_port\":70000",
            "1e999",
            "-0",
        ]);
        d.extend([
            vec![0x08, 0x01],
            vec![
                0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
            vec![0x2a, 0xff, 0xff, 0xff, 0xff, 0x0f],
            vec![0x1a, 0x00],
            vec![0x22, 0x00],
            vec![0xff, 0xff, 0xff, 0xff, 0x0f],
        ]);
        d
    }
    fn run(&mut self, input: &[u8]) -> Result<Outcome, String> {
        // The header read without decoding (only to answer an oversized batch by its id; every
        // accepted batch is judged and stored by what the decoder read) must agree with the
        // decoder whenever both read the message. It may refuse what the decoder accepts
        // (groups, which the decoder skips): such a batch is refused, never misread.
        let header = peek_header(input);
        let batch = match v1::Batch::decode(input) {
            Ok(b) => b,
            Err(_) => return Ok(Outcome::Refused("malformed".into())),
        };
        if let Some(h) = header
            && (h.batch_id != batch.batch_id || h.records != batch.records.len())
        {
            return Err(format!(
                "peek_header read batch {} with {} records; the decoder: batch {} with {} records",
                h.batch_id,
                h.records,
                batch.batch_id,
                batch.records.len()
            ));
        }
        let receive = Timestamp::from_unix_nanos(1_795_000_000_000_000_000);
        match prepare(batch, input.len(), &self.limits, receive) {
            Ok(p) => Ok(Outcome::Accepted(format!("{} parts", p.parts.len().min(3)))),
            Err(r) => {
                if r.message.is_empty() {
                    return Err(format!("a {:?} rejection without a message", r.code));
                }
                Ok(Outcome::Refused(format!("{:?}", r.code)))
            }
        }
    }
}

/// The manifest loader and the policy engine built from what it loaded.
#[derive(Debug)]
pub struct ManifestTarget;

impl Target for ManifestTarget {
    fn name(&self) -> &'static str {
        "manifests"
    }
    fn seeds(&self) -> Vec<Vec<u8>> {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut seeds = Vec::new();
        for example in ["allow-green", "shop", "kubelet-probe"] {
            let mut all = String::new();
            for file in ["cluster.yaml", "policies.yaml", "network-logging.yaml"] {
                if let Ok(t) = std::fs::read_to_string(examples.join(example).join(file)) {
                    seeds.push(t.clone().into_bytes());
                    all.push_str("---\n");
                    all.push_str(&t);
                }
            }
            seeds.push(all.into_bytes());
        }
        seeds
    }
    fn dictionary(&self) -> Vec<Vec<u8>> {
        tokens(&[
            "---\n",
            "apiVersion: networking.k8s.io/v1\n",
            "kind: NetworkPolicy\n",
            "kind: Pod\n",
            "kind: Namespace\n",
            "podSelector: {}\n",
            "matchLabels: {a: b}",
            "matchExpressions: [{key: a, operator: NotIn, values: [b]}]",
            "ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}",
            "ports: [{port: http, endPort: 65535, protocol: SCTP}]",
            "namespaceSelector: {}",
            "policyTypes: [Ingress, Egress]",
            "&a ",
            "*a",
            "<<: *a",
            "[",
            "]",
            "{",
            "}",
            "\n  ",
            ": ",
            "- ",
            "!!binary ",
            "~",
            "0x7fffffff",
            "::/0",
            "podIPs: [{ip: 'fd00::1'}]",
        ])
    }
    fn run(&mut self, input: &[u8]) -> Result<Outcome, String> {
        let yaml = text(input);
        let loaded = match verdict_policy::manifests::load_str(&yaml, Path::new("fuzz.yaml")) {
            Ok(l) => l,
            Err(e) => {
                let message = e.to_string();
                if !message.contains("fuzz.yaml") {
                    return Err(format!("an error that does not name its file: {message}"));
                }
                return Ok(Outcome::Refused(kind(format!("{e:?}"))));
            }
        };
        match verdict_policy::Engine::build(&loaded.state, verdict_policy::IpBlockMode::DataplaneV2)
        {
            Ok(_) => Ok(Outcome::Accepted(format!(
                "built, {} warnings",
                loaded.warnings.len().min(3)
            ))),
            Err(e) => Ok(Outcome::Refused(format!(
                "build {}",
                kind(format!("{e:?}"))
            ))),
        }
    }
}

/// The iptables LOG line parser (kern.log and /dev/kmsg records).
#[derive(Debug)]
pub struct IptablesTarget;

impl Target for IptablesTarget {
    fn name(&self) -> &'static str {
        "iptables"
    }
    fn seeds(&self) -> Vec<Vec<u8>> {
        let log = include_str!("../../node-shipper/tests/fixtures/iptables/kern.log");
        let mut seeds: Vec<Vec<u8>> = log.lines().map(|l| l.as_bytes().to_vec()).collect();
        seeds.push(b"4,1234,5678901,-;calico-drop: IN=eth0 OUT=cali1 SRC=fd00::1 DST=fd00::2 LEN=80 PROTO=ICMPv6 TYPE=128 CODE=0 ID=1 SEQ=1".to_vec());
        seeds
    }
    fn dictionary(&self) -> Vec<Vec<u8>> {
        tokens(&[
            " SRC=",
            " DST=",
            " PROTO=TCP",
            " PROTO=UDP",
            " PROTO=ICMP",
            " SPT=",
            " DPT=",
            " IN=",
            " OUT=",
            "calico-drop:",
            "kernel: [",
            "]",
            ";",
            ",",
            "=",
            "65536",
            "::ffff:",
            "\u{FEFF}",
            "\\x0a",
        ])
    }
    fn run(&mut self, input: &[u8]) -> Result<Outcome, String> {
        let line = text(input);
        let prefixes = vec!["calico-drop:".to_owned()];
        let kmsg = verdict_shipper::iptables_log::parse_kmsg(&line).is_some();
        let _ = verdict_shipper::iptables_log::syslog_timestamp(&line);
        Ok(
            match verdict_shipper::iptables_log::parse_line(&line, &prefixes) {
                None => Outcome::Accepted(format!("not a drop line, kmsg {kmsg}")),
                Some(Ok(_)) => Outcome::Accepted(format!("a drop, kmsg {kmsg}")),
                Some(Err(e)) => Outcome::Refused(kind(format!("{e:?}"))),
            },
        )
    }
}

/// WAL replay of one segment (what a collector reads at start), applying each entry's records
/// as the collector does.
#[derive(Debug)]
pub struct WalTarget {
    dir: tempfile::TempDir,
}

impl WalTarget {
    pub fn new() -> WalTarget {
        WalTarget {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }
}

impl Default for WalTarget {
    fn default() -> Self {
        Self::new()
    }
}

const SEGMENT: &str = "wal-00000000000000000001.log";

impl Target for WalTarget {
    fn name(&self) -> &'static str {
        "wal"
    }
    fn seeds(&self) -> Vec<Vec<u8>> {
        let entry = |lsn: u64, seq: u64, group: &mut Vec<u8>| {
            let header = WalEntry {
                node: Some(node()),
                source_id: "src-1".into(),
                receive_unix_nanos: 1_795_000_000_000_000_000,
                watermark: seq,
                records: Vec::new(),
            };
            let mut records = Vec::new();
            encode_record(
                &json_record(seq, flow_line("2026-11-21T13:15:02Z")),
                &mut records,
            );
            frame_entry(group, lsn, &header, &records);
        };
        let mut one = Vec::new();
        entry(1, 600, &mut one);
        let mut two = one.clone();
        entry(2, 1200, &mut two);
        vec![one, two]
    }
    fn dictionary(&self) -> Vec<Vec<u8>> {
        vec![
            vec![0; 8],
            vec![0xff; 4],
            1u64.to_le_bytes().to_vec(),
            u32::MAX.to_le_bytes().to_vec(),
        ]
    }
    fn run(&mut self, input: &[u8]) -> Result<Outcome, String> {
        let path = self.dir.path().join(SEGMENT);
        std::fs::write(&path, input).map_err(|e| format!("writing the segment: {e}"))?;
        let mut rows = 0;
        let result = replay(self.dir.path(), 0, |_, entry| {
            let node = entry.node.unwrap_or_default();
            let receive = Timestamp::from_unix_nanos(entry.receive_unix_nanos);
            if let Ok((parts, _)) =
                build_rows(&node, &entry.source_id, receive, &entry.records, None)
            {
                rows += parts.len();
            }
            Ok(())
        });
        match result {
            Ok(o) => Ok(Outcome::Accepted(format!(
                "{} entries{}",
                o.replayed.min(3),
                if o.torn_bytes > 0 {
                    ", torn tail cut"
                } else {
                    ""
                }
            ))),
            Err(e) => {
                let message = e.to_string();
                if !message.contains(SEGMENT) {
                    return Err(format!(
                        "an error that does not name the segment: {message}"
                    ));
                }
                Ok(Outcome::Refused(kind(format!("{e:?}"))))
            }
        }
    }
}
