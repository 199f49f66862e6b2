//! Sink definitions: the `[[sinks]]` tables of the collector configuration, modelled on Cloud
//! Logging sinks (a name, a destination, an inclusion filter, exclusion filters).
//!
//! Each definition is parsed and validated on its own when the configuration is read
//! ([`parse_definitions`]): a bad one becomes a [`SinkDefinition::Rejected`] with its name (or
//! index) and every problem, and is skipped; the others run. The part every destination shares
//! is [`SinkConfig`]; the destination's own settings (`[sinks.kafka]`, …) are parsed by its
//! folder's type, found through the [`registry`](super::registry). Unknown fields are refused per
//! sink, as everywhere in the configuration. Definitions print with secrets redacted (object
//! store and Kafka options whose key names a secret).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::registry::{self, DestinationConfig};
use crate::config::ConfigProblem;

pub const DEFAULT_BATCH_RECORDS: usize = 10_000;
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(200);
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(30);

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
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            batch_records: DEFAULT_BATCH_RECORDS,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            dead_letter_file: None,
        }
    }
}

/// A problem of one destination's part of a definition: the setting relative to the sink
/// (`kafka.compression`, `destination`) and what is wrong.
pub type DestinationProblem = (String, String);

/// A definition that passed validation: the common part and the typed destination.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidSink {
    pub config: SinkConfig,
    pub destination: DestinationConfig,
}

/// A definition that was refused: which one and every problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedSink {
    /// The sink's name, or `sinks[INDEX]` when it has none.
    pub name: String,
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for RejectedSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sink {:?} rejected:", self.name)?;
        for p in &self.problems {
            write!(f, " {p};")?;
        }
        Ok(())
    }
}

/// One `[[sinks]]` entry as read: valid, or rejected with its problems (kept so the collector
/// reports it by name while the others run).
#[derive(Debug, Clone, PartialEq)]
pub enum SinkDefinition {
    Valid(Box<ValidSink>),
    Rejected(RejectedSink),
}

/// Checks that `path` names a LogEntry field (using the filter catalogue, which suggests a
/// spelling when it does not).
pub fn check_field(path: &str) -> Result<(), String> {
    verdict_filter::parse(&format!("{path}:*"))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn check_sink(raw: &toml::Table, index: usize) -> Result<ValidSink, RejectedSink> {
    let fallback_name = raw
        .get("name")
        .and_then(toml::Value::as_str)
        .map_or_else(|| format!("sinks[{index}]"), str::to_owned);
    let reject = |problems: Vec<ConfigProblem>| RejectedSink {
        name: fallback_name.clone(),
        problems,
    };
    // The destinations' sections are theirs to parse; the rest is the common part.
    let mut common = raw.clone();
    let sections: Vec<(String, toml::Value)> = registry::sections()
        .into_iter()
        .filter_map(|s| common.remove(s).map(|v| (s.to_owned(), v)))
        .collect();
    let config = SinkConfig::deserialize(toml::Value::Table(common)).map_err(|e| {
        reject(vec![ConfigProblem {
            setting: format!("sinks[{index}]"),
            message: e.to_string().trim().to_owned(),
        }])
    })?;
    let mut p = Vec::new();
    let mut bad = |setting: &str, message: String| {
        p.push(ConfigProblem {
            setting: format!("sinks.{}.{setting}", config.name),
            message,
        })
    };
    if config.name.is_empty()
        || config.name.len() > 64
        || !config
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bad(
            "name",
            format!("{:?}: use 1–64 letters, digits, '-' or '_'", config.name),
        );
    }
    if let Err(e) = verdict_filter::parse(&config.filter) {
        bad("filter", e.to_string());
    }
    for x in &config.exclusions {
        if let Err(e) = verdict_filter::parse(&x.filter) {
            bad(&format!("exclusions.{}.filter", x.name), e.to_string());
        }
    }
    let d = &config.delivery;
    if d.batch_records == 0 {
        bad("delivery.batch_records", "must be positive".into());
    }
    if d.max_attempts == 0 {
        bad("delivery.max_attempts", "must be at least 1".into());
    }
    if d.initial_backoff.is_zero() || d.max_backoff < d.initial_backoff {
        bad(
            "delivery.initial_backoff",
            "must be positive and at most delivery.max_backoff".into(),
        );
    }
    let destination = match registry::parse(&config, sections) {
        Ok(dest) => Some(dest),
        Err(problems) => {
            for (setting, message) in problems {
                bad(&setting, message);
            }
            None
        }
    };
    match (destination, p.is_empty()) {
        (Some(destination), true) => Ok(ValidSink {
            config,
            destination,
        }),
        _ => Err(reject(p)),
    }
}

/// Parses and validates every definition, in order. Names must be unique; every definition
/// after the first with a name is rejected.
pub fn parse_definitions(raw: &[toml::Table]) -> Vec<SinkDefinition> {
    let mut out: Vec<SinkDefinition> = Vec::new();
    for (i, table) in raw.iter().enumerate() {
        let taken = |name: &str| {
            out.iter()
                .any(|d| matches!(d, SinkDefinition::Valid(v) if v.config.name == name))
        };
        out.push(match check_sink(table, i) {
            Ok(s) if taken(&s.config.name) => SinkDefinition::Rejected(RejectedSink {
                name: s.config.name.clone(),
                problems: vec![ConfigProblem {
                    setting: format!("sinks[{i}].name"),
                    message: format!("{:?} names an earlier sink too", s.config.name),
                }],
            }),
            Ok(s) => SinkDefinition::Valid(Box::new(s)),
            Err(r) => SinkDefinition::Rejected(r),
        });
    }
    out
}

/// Reads `[[sinks]]` for the configuration: never fails (a bad definition is kept as
/// rejected), except when `sinks` is not an array of tables at all.
pub fn deserialize_definitions<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<SinkDefinition>, D::Error> {
    let raw = Vec::<toml::Table>::deserialize(d)?;
    Ok(parse_definitions(&raw))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(text: &str) -> Vec<toml::Table> {
        let t: toml::Table = text.parse().unwrap();
        t["sinks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_table().unwrap().clone())
            .collect()
    }

    /// The valid and the rejected definitions of `raw`.
    fn split(raw: &[toml::Table]) -> (Vec<ValidSink>, Vec<RejectedSink>) {
        let mut valid = Vec::new();
        let mut rejected = Vec::new();
        for d in parse_definitions(raw) {
            match d {
                SinkDefinition::Valid(v) => valid.push(*v),
                SinkDefinition::Rejected(r) => rejected.push(r),
            }
        }
        (valid, rejected)
    }

    #[test]
    fn a_bad_definition_is_named_and_the_others_are_kept() {
        let (valid, rejected) = split(&tables(
            r#"
[[sinks]]
name = "denies"
destination = "kafka://127.0.0.1:9092/denies"
filter = 'jsonPayload.disposition="deny"'
exclusions = [{ name = "probes", filter = 'jsonPayload.dest.namespace="kube-system"' }]

[[sinks]]
name = "typo"
destination = "pubsub://projects/p/topics/t"
filter = 'jsonPayload.dispositon="deny"'
[sinks.pubsub]
ordering_key = "jsonPayload.dest.nmespace"

[[sinks]]
name = "unknown-field"
destination = "file:///tmp/x"
colour = "blue"

[[sinks]]
destination = "s3://b/p"
format = "parquet"
[sinks.kafka]

[[sinks]]
name = "denies"
destination = "file:///tmp/y"
"#,
        ));
        assert_eq!(valid.len(), 1);
        assert_eq!(valid[0].config.name, "denies");
        let names: Vec<&str> = rejected.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["typo", "unknown-field", "sinks[3]", "denies"]);
        let text: Vec<String> = rejected.iter().map(ToString::to_string).collect();
        assert!(text[0].contains("sinks.typo.filter: line 1, column 1: undefined field \"jsonPayload.dispositon\"; did you mean \"jsonPayload.disposition\"?"), "{}", text[0]);
        assert!(
            text[0].contains("sinks.typo.pubsub.ordering_key"),
            "{}",
            text[0]
        );
        assert!(text[1].contains("unknown field `colour`"), "{}", text[1]);
        assert!(text[2].contains("missing field `name`"), "{}", text[2]);
        assert!(text[3].contains("names an earlier sink"), "{}", text[3]);

        let (_, rejected) = split(&tables(
            r#"
[[sinks]]
name = "wrong-section"
destination = "s3://b/p"
format = "parquet"
[sinks.kafka]
compression = "zstd"
"#,
        ));
        let text = rejected[0].to_string();
        assert!(
            text.contains("sinks.wrong-section.kafka: does not apply"),
            "{text}"
        );
        assert!(text.contains("kafka.compression"), "{text}");
    }

    #[test]
    fn secrets_in_definitions_are_redacted_when_printed() {
        let defs = parse_definitions(&tables(
            r#"
[[sinks]]
name = "to-s3"
destination = "s3://bucket/export"
[sinks.object_storage.options]
aws_access_key_id = "AKIDEXAMPLE"
aws_secret_access_key = "hunter2-secret"

[[sinks]]
name = "to-kafka"
destination = "kafka://127.0.0.1:9092/t"
[sinks.kafka.options]
"sasl.password" = "kafka-hunter2"
"sasl.username" = "verdict"
"#,
        ));
        assert!(
            defs.iter().all(|d| matches!(d, SinkDefinition::Valid(_))),
            "{defs:?}"
        );
        let printed = format!("{defs:?} {defs:#?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("verdict"), "{printed}");
    }
}
