//! Each section of the configuration, with its defaults: what each part of the collector is
//! given (the ingest endpoint `[grpc]`, `[flush]`, `[parquet]`, …).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::values::{ByteSize, Secret, StorageOptions, humantime_serde_compat};

pub const DEFAULT_GRPC_LISTEN: &str = "127.0.0.1:9000";
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_MAX_BATCH_BYTES: u64 = 8 << 20;
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 16 << 20;
pub const DEFAULT_MAX_RECORDS_PER_BATCH: usize = 100_000;
pub const DEFAULT_MAX_RECORD_BYTES: u64 = 64 << 10;
pub const DEFAULT_MAX_IN_FLIGHT_BATCHES: usize = 8;
pub const DEFAULT_MAX_STREAMS: usize = 10_000;
/// Cloud Logging refuses entries older than 30 days or more than a day ahead; so does ingest.
pub const DEFAULT_MAX_RECORD_AGE: Duration = Duration::from_secs(30 * 86_400);
pub const DEFAULT_MAX_RECORD_AHEAD: Duration = Duration::from_secs(86_400);
/// 64 MiB: six times a GKE log generation (10 MB); no honest gap comes near it.
pub const DEFAULT_MAX_SEQUENCE_GAP: u64 = 64 << 20;
pub const DEFAULT_WAL_SEGMENT_BYTES: u64 = 64 << 20;
pub const DEFAULT_WAL_MAX_GROUP_BYTES: u64 = 32 << 20;
pub const DEFAULT_WAL_MAX_SINK_RETENTION_BYTES: u64 = 4 << 30;
pub const DEFAULT_FLUSH_MAX_AGE: Duration = Duration::from_secs(5);
pub const DEFAULT_FLUSH_MAX_ROWS: usize = 2_000_000;
pub const DEFAULT_MAX_UNFLUSHED_BYTES: u64 = 1 << 30;
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
pub const DEFAULT_ROW_GROUP_ROWS: usize = 256 * 1024;
pub const DEFAULT_DATA_PAGE_ROWS: usize = 16 * 1024;
pub const DEFAULT_BLOOM_FILTER_FPP: f64 = 0.01;
pub const DEFAULT_COMPACTION_INTERVAL: Duration = Duration::from_secs(60);
pub const DEFAULT_COMPACTION_MIN_FILES: usize = 8;
pub const DEFAULT_COMPACTION_TARGET_FILE_BYTES: u64 = 128 << 20;
pub const DEFAULT_RETENTION_FLOWS: Duration = Duration::from_secs(30 * 86_400);
pub const DEFAULT_RETENTION_LOSS: Duration = Duration::from_secs(30 * 86_400);
pub const DEFAULT_RETENTION_ROLLUPS: Duration = Duration::from_secs(400 * 86_400);
pub const DEFAULT_RETENTION_INTERVAL: Duration = Duration::from_secs(3600);
pub const DEFAULT_SOURCE_RETENTION: Duration = Duration::from_secs(7 * 86_400);
pub const DEFAULT_QUERY_MAX_ROWS: usize = 100_000;
pub const DEFAULT_QUERY_MAX_MEMORY: u64 = 1 << 30;
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_QUERY_MAX_CONCURRENT: usize = 4;
pub const DEFAULT_QUERY_MAX_SQL_BYTES: u64 = 256 << 10;
pub const DEFAULT_QUERY_MAX_VALUE_BYTES: u64 = 1 << 20;
pub const DEFAULT_QUERY_MAX_RESULT_BYTES: u64 = 64 << 20;

/// The node → collector ingest endpoint (docs/design.md, "Contract 3: node to collector").
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// Address of the gRPC ingest service.
    pub listen: SocketAddr,
    /// A batch whose encoded size exceeds this is refused with `REJECTION_CODE_TOO_LARGE`; the
    /// stream stays open.
    pub max_batch_bytes: ByteSize,
    /// Hard limit of one gRPC message. A message above it cannot even be read, so it ends its
    /// stream with `RESOURCE_EXHAUSTED`/`OUT_OF_RANGE`. At least `max_batch_bytes`.
    pub max_message_bytes: ByteSize,
    /// A batch with more records is refused with `REJECTION_CODE_TOO_LARGE`.
    pub max_records_per_batch: usize,
    /// A record (one JSON line) larger than this makes its batch `REJECTION_CODE_TOO_LARGE`.
    pub max_record_bytes: ByteSize,
    /// Batches of one stream being made durable at once. When they are all pending the stream is
    /// not read further: the sender feels backpressure through HTTP/2 flow control.
    pub max_in_flight_batches: usize,
    /// Concurrent ingest streams over all connections; more are refused with
    /// `RESOURCE_EXHAUSTED`.
    pub max_streams: usize,
    /// A record whose event time is older than this (by the collector's clock) refuses its
    /// batch with `REJECTION_CODE_INVALID_RECORD` naming it; the shipper drops it and sends the
    /// rest. Without a bound a record stamped 1970 or 2100 makes a partition retention never
    /// reaches.
    #[serde(with = "humantime_serde_compat")]
    pub max_record_age: Duration,
    /// Likewise for event times this far ahead of the collector's clock.
    #[serde(with = "humantime_serde_compat")]
    pub max_record_ahead: Duration,
    /// How far past a source's watermark (or the record before it) a record's sequence may be,
    /// beyond the record's own bytes: for log files, the bytes the shipper skipped (malformed
    /// lines, other programs' kernel log lines); for `/dev/kmsg`, records overwritten before they
    /// were read. A larger leap is refused (`REJECTION_CODE_OUT_OF_ORDER`): a forged or buggy
    /// sequence cannot move a watermark past records still to come.
    pub max_sequence_gap: ByteSize,
    /// Node credentials: one line per token, `NODE_NAME TOKEN` or `NODE_NAME sha256:HEX`. A
    /// stream presenting a token (`authorization: Bearer TOKEN`) may send only that node's
    /// batches. Read at start.
    pub node_tokens_file: Option<PathBuf>,
    /// Accept streams without a node credential on a non-loopback `listen` address. Off: such a
    /// configuration is refused at start (set `node_tokens_file` or `tls.client_ca_file`).
    pub insecure: bool,
    /// TLS for the ingest endpoint; absent: plaintext HTTP/2. With `client_ca_file`, a client's
    /// certificate names its node (DNS names, else the common name).
    pub tls: Option<TlsConfig>,
    /// Nodes authenticate with their agent pod's projected ServiceAccount token, reviewed by the
    /// Kubernetes API server (TokenReview): the pod's node is the node the stream may send for.
    pub kubernetes: Option<KubernetesIdentityConfig>,
}

/// Per-node identity from the Kubernetes API (`[grpc.kubernetes]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesIdentityConfig {
    /// The audience the agents' projected tokens are issued for (and reviewed against).
    pub audience: String,
    /// The agents' ServiceAccounts, `NAMESPACE:NAME`: a token of any other is refused.
    pub service_accounts: Vec<String>,
    /// How long an accepted token's review is reused before the API server is asked again.
    #[serde(default = "default_review_cache_ttl", with = "humantime_serde_compat")]
    pub cache_ttl: Duration,
    /// A kubeconfig for the API server; absent: in-cluster (the collector's own
    /// ServiceAccount, which needs create on tokenreviews), else `$KUBECONFIG`.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context; absent: its current one.
    #[serde(default)]
    pub context: Option<String>,
}

fn default_review_cache_ttl() -> Duration {
    Duration::from_secs(300)
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            listen: DEFAULT_GRPC_LISTEN.parse().expect("default address"),
            max_batch_bytes: ByteSize(DEFAULT_MAX_BATCH_BYTES),
            max_message_bytes: ByteSize(DEFAULT_MAX_MESSAGE_BYTES),
            max_records_per_batch: DEFAULT_MAX_RECORDS_PER_BATCH,
            max_record_bytes: ByteSize(DEFAULT_MAX_RECORD_BYTES),
            max_in_flight_batches: DEFAULT_MAX_IN_FLIGHT_BATCHES,
            max_streams: DEFAULT_MAX_STREAMS,
            max_record_age: DEFAULT_MAX_RECORD_AGE,
            max_record_ahead: DEFAULT_MAX_RECORD_AHEAD,
            max_sequence_gap: ByteSize(DEFAULT_MAX_SEQUENCE_GAP),
            node_tokens_file: None,
            insecure: false,
            tls: None,
            kubernetes: None,
        }
    }
}

/// TLS (and optionally mutual TLS) for the ingest endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain the server presents.
    pub cert_file: PathBuf,
    /// PEM private key of `cert_file`.
    pub key_file: PathBuf,
    /// PEM CA bundle. When set, every client must present a certificate signed by it (mTLS).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

/// The HTTP endpoint: `/metrics`, `/healthz`, `/sinks` and the query API.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the HTTP server.
    pub listen: SocketAddr,
    /// Connections open at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// A client must send a request's head within this (slow clients are cut off).
    #[serde(with = "humantime_serde_compat")]
    pub header_read_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: DEFAULT_HTTP_LISTEN.parse().expect("default address"),
            max_connections: verdict_service::http::DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: verdict_service::http::DEFAULT_HEADER_READ_TIMEOUT,
        }
    }
}

/// Where Parquet files and the commit log go.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `file:///abs/path`, a plain local path, `s3://bucket/prefix`, `gs://bucket/prefix`,
    /// `az://container/prefix` (or `abfss://…`). Absent: the local folder `DATA_DIR/lake`.
    pub url: Option<String>,
    /// object_store options for the URL's backend, e.g. `aws_endpoint`, `aws_region`,
    /// `aws_access_key_id`, `aws_secret_access_key`, `aws_allow_http`,
    /// `aws_virtual_hosted_style_request`, `google_service_account`, `azure_storage_account_name`.
    /// Unset options come from the backend's usual environment variables (`AWS_*`,
    /// `GOOGLE_*`, `AZURE_*`). Values of secret-looking keys are redacted in logs.
    pub options: StorageOptions,
}

/// The write-ahead log that makes a batch durable before it is acknowledged.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalConfig {
    /// Directory of the log's segment files. Absent: `DATA_DIR/wal`. Must be a local disk that
    /// honours fsync and survives restarts (a PersistentVolume in Kubernetes).
    pub dir: Option<PathBuf>,
    /// A segment is closed and a new one started past this size; closed segments are deleted
    /// once their records are committed to Parquet.
    pub segment_bytes: ByteSize,
    /// Most bytes written by one group commit (one fsync acknowledges every batch in it).
    pub max_group_bytes: ByteSize,
    /// Segments already committed to Parquet are kept for sinks that have not read them, up to
    /// this many bytes; past it the oldest go and a sink that still needed them counts the
    /// records as dropped (`verdict_collector_sink_records_dropped_total`).
    pub max_sink_retention_bytes: ByteSize,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            dir: None,
            segment_bytes: ByteSize(DEFAULT_WAL_SEGMENT_BYTES),
            max_group_bytes: ByteSize(DEFAULT_WAL_MAX_GROUP_BYTES),
            max_sink_retention_bytes: ByteSize(DEFAULT_WAL_MAX_SINK_RETENTION_BYTES),
        }
    }
}

/// When buffered rows become Parquet files.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlushConfig {
    /// Buffered rows are written out at most this long after the oldest of them arrived, so
    /// files readers see trail ingest by about this much.
    #[serde(with = "humantime_serde_compat")]
    pub max_age: Duration,
    /// Buffered rows that trigger a flush before `max_age`.
    pub max_rows: usize,
    /// Buffered (and being-flushed) bytes at which ingest pauses until a flush completes:
    /// backpressure when storage is slower than ingest.
    pub max_unflushed_bytes: ByteSize,
}

impl Default for FlushConfig {
    fn default() -> Self {
        FlushConfig {
            max_age: DEFAULT_FLUSH_MAX_AGE,
            max_rows: DEFAULT_FLUSH_MAX_ROWS,
            max_unflushed_bytes: ByteSize(DEFAULT_MAX_UNFLUSHED_BYTES),
        }
    }
}

/// How Parquet files are written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ParquetConfig {
    /// zstd level (1–22).
    pub zstd_level: i32,
    /// Rows per row group: the unit readers skip by statistics (time, namespaces).
    pub row_group_rows: usize,
    /// Rows per data page: the unit the page index lets readers skip inside a row group.
    pub data_page_rows: usize,
    /// Bloom filters on the high-cardinality columns queried by equality (pod names, IPs).
    pub bloom_filters: bool,
    /// False-positive probability of those bloom filters (0 < fpp < 1).
    pub bloom_filter_fpp: f64,
}

impl Default for ParquetConfig {
    fn default() -> Self {
        ParquetConfig {
            zstd_level: DEFAULT_ZSTD_LEVEL,
            row_group_rows: DEFAULT_ROW_GROUP_ROWS,
            data_page_rows: DEFAULT_DATA_PAGE_ROWS,
            bloom_filters: true,
            bloom_filter_fpp: DEFAULT_BLOOM_FILTER_FPP,
        }
    }
}

/// Merging of small files.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompactionConfig {
    /// Whether small files are merged at all.
    pub enabled: bool,
    /// How often partitions are checked.
    #[serde(with = "humantime_serde_compat")]
    pub interval: Duration,
    /// A partition still receiving rows is compacted once it has this many small files; a
    /// partition whose hour has passed is compacted once it has two.
    pub min_files: usize,
    /// Files below half this size are small; merged files aim at this size.
    pub target_file_bytes: ByteSize,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            enabled: true,
            interval: DEFAULT_COMPACTION_INTERVAL,
            min_files: DEFAULT_COMPACTION_MIN_FILES,
            target_file_bytes: ByteSize(DEFAULT_COMPACTION_TARGET_FILE_BYTES),
        }
    }
}

/// How long stored data is kept, by event time. `0s` keeps a table forever.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Flow records (`policy_action/`).
    #[serde(with = "humantime_serde_compat")]
    pub flows: Duration,
    /// Loss markers (`policy_action_loss/`).
    #[serde(with = "humantime_serde_compat")]
    pub loss: Duration,
    /// One-minute rollups (`policy_action_1m/`), kept longer for dashboards over months.
    #[serde(with = "humantime_serde_compat")]
    pub rollups: Duration,
    /// How often expired partitions are looked for.
    #[serde(with = "humantime_serde_compat")]
    pub interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            flows: DEFAULT_RETENTION_FLOWS,
            loss: DEFAULT_RETENTION_LOSS,
            rollups: DEFAULT_RETENTION_ROLLUPS,
            interval: DEFAULT_RETENTION_INTERVAL,
        }
    }
}

/// Exactly-once bookkeeping.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupConfig {
    /// A (node, source) watermark is forgotten once the source has sent nothing for this long.
    /// A shipper that resends older records after that would store them again, so keep it above
    /// the longest time a node may be cut off and still retry.
    #[serde(with = "humantime_serde_compat")]
    pub source_retention: Duration,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            source_retention: DEFAULT_SOURCE_RETENTION,
        }
    }
}

/// The query API on `http.listen`: `POST /v2/entries:list`, `POST /v1/sql`, `GET /v1/tail`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Accepted bearer tokens (`Authorization: Bearer TOKEN`). Empty: no token is asked for,
    /// and only clients on a loopback address are answered.
    pub auth_tokens: Vec<Secret>,
    /// Rows a SQL result may have; a larger result is an error (aggregate, or add a LIMIT).
    pub max_rows: usize,
    /// Memory all running queries together may hold (sorts and aggregations that need more
    /// fail with a clear error).
    pub max_memory: ByteSize,
    /// Wall time of one query (planning and execution).
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// Queries running at once (they run on threads of their own, apart from ingest); more wait
    /// half a second, then are refused with 429.
    pub max_concurrent: usize,
    /// A longer SQL text is refused before it is parsed.
    pub max_sql_bytes: ByteSize,
    /// Bytes one value built by a function (`repeat`, `lpad`, `range`, `array_repeat`, …) may
    /// have; a call over a batch of rows may build sixteen times this. Checked before the value
    /// is built, at planning too.
    pub max_value_bytes: ByteSize,
    /// Bytes (in memory) of a whole result; a larger one is an error (select fewer columns or
    /// rows).
    pub max_result_bytes: ByteSize,
    /// A directory of extra SQL views, `NAME.sql` each holding one SELECT, loaded after the
    /// built-in ones of the repository's `sql/` (a file may replace one). Absent: built-in only.
    #[serde(default)]
    pub views_dir: Option<PathBuf>,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            auth_tokens: Vec::new(),
            max_rows: DEFAULT_QUERY_MAX_ROWS,
            max_memory: ByteSize(DEFAULT_QUERY_MAX_MEMORY),
            timeout: DEFAULT_QUERY_TIMEOUT,
            max_concurrent: DEFAULT_QUERY_MAX_CONCURRENT,
            max_sql_bytes: ByteSize(DEFAULT_QUERY_MAX_SQL_BYTES),
            max_value_bytes: ByteSize(DEFAULT_QUERY_MAX_VALUE_BYTES),
            max_result_bytes: ByteSize(DEFAULT_QUERY_MAX_RESULT_BYTES),
            views_dir: None,
        }
    }
}
