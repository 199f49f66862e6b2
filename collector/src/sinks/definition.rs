//! The part of a sink definition (`[[sinks]]`, modelled on Cloud Logging sinks: a name, a
//! destination, an inclusion filter, exclusion filters) that every destination shares:
//! [`SinkConfig`]. The destination's own settings (`[sinks.kafka]`, …) belong to its folder;
//! the sinks' `registry` reads whole definitions.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::values::ByteSize;

pub const DEFAULT_BATCH_RECORDS: usize = 10_000;
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(200);
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_DEAD_LETTER_BYTES: u64 = 1 << 30;

/// What every sink has, whatever its destination (`[[sinks]]` without the destination's
/// section).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Names the sink in metrics (`sink="NAME"`), logs, its cursor file and its dead-letter
    /// file: 1–64 letters, digits, `-` or `_`, unique.
    pub name: String,
    /// Where records go: `kafka://HOST:PORT[,HOST:PORT]/TOPIC`, `pubsub://projects/P/topics/T`,
    /// or object storage `s3://BUCKET/PREFIX`, `gs://BUCKET/PREFIX`, `az://CONTAINER/PREFIX`,
    /// `file:///PATH`.
    pub destination: String,
    /// Free text for operators.
    #[serde(default)]
    pub description: String,
    /// A disabled sink keeps its cursor (and so holds the write-ahead log, up to
    /// `wal.max_sink_retention_bytes`) but sends nothing.
    #[serde(default)]
    pub disabled: bool,
    /// Inclusion filter in the Logs Explorer query language over LogEntry JSON
    /// (`jsonPayload.disposition="deny"`). Empty: every record.
    #[serde(default)]
    pub filter: String,
    /// Records matching any enabled exclusion are not sent (applied after `filter`).
    #[serde(default)]
    pub exclusions: Vec<ExclusionConfig>,
    /// `json` (LogEntry JSON; one object per message, or JSON lines in object storage) or, for
    /// object storage only, `parquet` (the lake's flat schema).
    #[serde(default)]
    pub format: Format,
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

/// A Cloud Logging-style exclusion.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExclusionConfig {
    /// Names the exclusion in problems and logs.
    pub name: String,
    /// Records matching this filter are not sent.
    pub filter: String,
    /// A disabled exclusion excludes nothing.
    #[serde(default)]
    pub disabled: bool,
}

/// How records are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// LogEntry JSON (JSON lines in object storage).
    #[default]
    #[serde(alias = "json_lines", alias = "jsonl")]
    Json,
    /// Parquet files in the lake's flat schema (object storage only).
    Parquet,
}

/// Retries and dead letters, the same for every destination.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Most records handed to the destination at once (whole write-ahead log entries are
    /// read, so a batch may exceed this by one entry).
    pub batch_records: usize,
    /// A record the destination keeps refusing (while it accepts others) is dead-lettered after
    /// this many attempts. A destination that is unreachable is retried without limit: the sink
    /// falls behind and catches up when it returns.
    pub max_attempts: u32,
    /// First retry delay; doubled per attempt up to `max_backoff`.
    #[serde(with = "duration_text")]
    pub initial_backoff: Duration,
    #[serde(with = "duration_text")]
    pub max_backoff: Duration,
    /// Where refused records go, as JSON lines with the error. Absent:
    /// `DATA_DIR/sinks/dead-letter/NAME.jsonl`.
    pub dead_letter_file: Option<PathBuf>,
    /// The dead-letter file grows to this many bytes at most; past it refused records are
    /// dropped and counted (`verdict_collector_sink_records_dropped_total{reason="dead_letter_full"}`).
    pub max_dead_letter_bytes: ByteSize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            batch_records: DEFAULT_BATCH_RECORDS,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            dead_letter_file: None,
            max_dead_letter_bytes: ByteSize(DEFAULT_MAX_DEAD_LETTER_BYTES),
        }
    }
}

/// Checks that `path` names a LogEntry field (using the filter catalogue, which suggests a
/// spelling when it does not).
pub fn check_field(path: &str) -> Result<(), String> {
    verdict_filter::parse(&format!("{path}:*"))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The default dead-letter file of `name` under `data_dir`.
pub fn default_dead_letter_file(data_dir: &Path, name: &str) -> PathBuf {
    data_dir
        .join("sinks")
        .join("dead-letter")
        .join(format!("{name}.jsonl"))
}

/// Serde for `Duration` as humantime text.
pub(crate) mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "{s:?} is not a duration ({e}); write e.g. \"200ms\", \"5s\", \"5m\""
            ))
        })
    }
}
