//! Sink definitions: the `[[sinks]]` tables of the collector configuration, modelled on Cloud
//! Logging sinks (a name, a destination, an inclusion filter, exclusion filters).
//!
//! Each definition is parsed and validated on its own ([`parse_definitions`]): a bad one is
//! reported with its name (or index) and every problem, and skipped; the others run. Unknown
//! fields are refused per sink, as everywhere in the configuration.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigProblem, StorageKind, StorageOptions};

pub const DEFAULT_BATCH_RECORDS: usize = 10_000;
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(200);
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(30);
pub const DEFAULT_KAFKA_KEY: &str = "jsonPayload.dest.namespace";
pub const DEFAULT_KAFKA_PARTITIONS: i32 = 3;
pub const DEFAULT_KAFKA_REPLICATION_FACTOR: i32 = 1;
pub const DEFAULT_KAFKA_MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_PUBSUB_BATCH_MESSAGES: u32 = 1000;
pub const DEFAULT_PUBSUB_BATCH_BYTES: u32 = 1 << 20;
pub const DEFAULT_PUBSUB_BATCH_DELAY: Duration = Duration::from_millis(10);
pub const DEFAULT_EXPORT_WINDOW: Duration = Duration::from_secs(300);
pub const DEFAULT_EXPORT_MAX_RECORDS: usize = 500_000;

/// One sink, as written in `[[sinks]]`.
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
    /// `sinks_max_wal_retention_bytes`) but sends nothing.
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
    /// Kafka settings (only with a `kafka://` destination).
    #[serde(default)]
    pub kafka: Option<KafkaConfig>,
    /// Pub/Sub settings (only with a `pubsub://` destination).
    #[serde(default)]
    pub pubsub: Option<PubsubConfig>,
    /// Object storage settings (only with an object storage destination).
    #[serde(default)]
    pub object_storage: Option<ObjectExportConfig>,
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

/// Kafka producer settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// LogEntry field whose value is the message key, so one key's records stay in order in
    /// one partition (default: the destination namespace). Empty: no key.
    pub key: String,
    /// Create the topic through the admin API at start when it does not exist.
    pub create_topic: bool,
    /// Partitions of a created topic.
    pub partitions: i32,
    /// Replication factor of a created topic.
    pub replication_factor: i32,
    /// `none`, `snappy` or `lz4` (built into the bundled librdkafka).
    pub compression: String,
    /// How long librdkafka retries a message before reporting it failed (the sink then
    /// retries it again with backoff).
    #[serde(with = "duration_text")]
    pub message_timeout: Duration,
    /// Extra librdkafka settings (`security.protocol`, `sasl.*`, …). `acks` and
    /// `enable.idempotence` are fixed (`all`, `true`).
    pub options: StorageOptions,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            key: DEFAULT_KAFKA_KEY.to_owned(),
            create_topic: false,
            partitions: DEFAULT_KAFKA_PARTITIONS,
            replication_factor: DEFAULT_KAFKA_REPLICATION_FACTOR,
            compression: "lz4".to_owned(),
            message_timeout: DEFAULT_KAFKA_MESSAGE_TIMEOUT,
            options: StorageOptions::default(),
        }
    }
}

/// Pub/Sub publisher settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PubsubConfig {
    /// API endpoint, e.g. `http://127.0.0.1:8085` for a local server. Absent: Google's.
    pub endpoint: Option<String>,
    /// `default` (Application Default Credentials) or `anonymous` (local servers).
    pub credentials: Credentials,
    /// LogEntry field whose value is the ordering key (the topic's subscriptions must enable
    /// message ordering). Empty: no ordering key.
    pub ordering_key: String,
    /// Message attributes: attribute name → LogEntry field. An absent field sets no attribute.
    pub attributes: BTreeMap<String, String>,
    /// A batch is sent at this many messages …
    pub batch_messages: u32,
    /// … or bytes …
    pub batch_bytes: u32,
    /// … or after this delay.
    #[serde(with = "duration_text")]
    pub batch_delay: Duration,
}

impl Default for PubsubConfig {
    fn default() -> Self {
        PubsubConfig {
            endpoint: None,
            credentials: Credentials::Default,
            ordering_key: String::new(),
            attributes: [
                ("disposition", "jsonPayload.disposition"),
                ("src_namespace", "jsonPayload.src.namespace"),
                ("dest_namespace", "jsonPayload.dest.namespace"),
                ("insert_id", "insertId"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            batch_messages: DEFAULT_PUBSUB_BATCH_MESSAGES,
            batch_bytes: DEFAULT_PUBSUB_BATCH_BYTES,
            batch_delay: DEFAULT_PUBSUB_BATCH_DELAY,
        }
    }
}

/// Pub/Sub credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Credentials {
    /// Application Default Credentials (`GOOGLE_APPLICATION_CREDENTIALS`, metadata server).
    Default,
    /// No credentials: for local Pub/Sub servers.
    Anonymous,
}

/// Object storage export settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectExportConfig {
    /// object_store options of the destination's backend (as `storage.options`).
    pub options: StorageOptions,
    /// Records are gathered this long, then written as one file per hour partition.
    #[serde(with = "duration_text")]
    pub window: Duration,
    /// Files are written early when this many records are gathered.
    pub max_records: usize,
}

impl Default for ObjectExportConfig {
    fn default() -> Self {
        ObjectExportConfig {
            options: StorageOptions::default(),
            window: DEFAULT_EXPORT_WINDOW,
            max_records: DEFAULT_EXPORT_MAX_RECORDS,
        }
    }
}

/// A parsed destination URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Kafka { brokers: String, topic: String },
    Pubsub { topic: String },
    ObjectStorage { url: String, kind: StorageKind },
}

impl Destination {
    pub fn parse(url: &str) -> Result<Destination, String> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(format!(
                "{url:?} is not a destination URL; use kafka://HOST:PORT/TOPIC, \
                 pubsub://projects/P/topics/T, s3://, gs://, az:// or file:///PATH"
            ));
        };
        match scheme {
            "kafka" => {
                let (brokers, topic) = rest
                    .split_once('/')
                    .ok_or_else(|| format!("{url:?}: missing /TOPIC after the brokers"))?;
                if brokers.is_empty()
                    || brokers.split(',').any(|b| {
                        b.rsplit_once(':')
                            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
                    })
                {
                    return Err(format!("{url:?}: brokers must be HOST:PORT[,HOST:PORT]"));
                }
                if topic.is_empty()
                    || topic.len() > 249
                    || !topic
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                {
                    return Err(format!(
                        "{url:?}: a Kafka topic is 1–249 letters, digits, '.', '_' or '-'"
                    ));
                }
                Ok(Destination::Kafka {
                    brokers: brokers.to_owned(),
                    topic: topic.to_owned(),
                })
            }
            "pubsub" => {
                let parts: Vec<&str> = rest.split('/').collect();
                match parts.as_slice() {
                    ["projects", p, "topics", t] if !p.is_empty() && !t.is_empty() => {
                        Ok(Destination::Pubsub {
                            topic: rest.to_owned(),
                        })
                    }
                    _ => Err(format!(
                        "{url:?}: write pubsub://projects/PROJECT/topics/TOPIC"
                    )),
                }
            }
            _ => {
                let kind = StorageKind::of(url)?;
                if kind == StorageKind::Local && !url.starts_with("file:///") {
                    return Err(format!(
                        "{url:?}: a local destination is file:///ABSOLUTE/PATH"
                    ));
                }
                if kind != StorageKind::Local {
                    url::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
                }
                Ok(Destination::ObjectStorage {
                    url: url.to_owned(),
                    kind,
                })
            }
        }
    }
}

/// A definition that passed validation, with its parsed destination.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidSink {
    pub config: SinkConfig,
    pub destination: Destination,
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

/// Checks that `path` names a LogEntry field (using the filter catalogue, which suggests a
/// spelling when it does not).
fn check_field(path: &str) -> Result<(), String> {
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
    let config = SinkConfig::deserialize(toml::Value::Table(raw.clone())).map_err(|e| {
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
    let destination = match Destination::parse(&config.destination) {
        Ok(dest) => Some(dest),
        Err(m) => {
            bad("destination", m);
            None
        }
    };
    let sections = [
        ("kafka", config.kafka.is_some()),
        ("pubsub", config.pubsub.is_some()),
        ("object_storage", config.object_storage.is_some()),
    ];
    let own = match &destination {
        Some(Destination::Kafka { .. }) => Some("kafka"),
        Some(Destination::Pubsub { .. }) => Some("pubsub"),
        Some(Destination::ObjectStorage { .. }) => Some("object_storage"),
        None => None,
    };
    if let Some(own) = own {
        for (section, present) in sections {
            if present && section != own {
                bad(
                    section,
                    format!("does not apply to the destination {:?}", config.destination),
                );
            }
        }
    }
    if config.format == Format::Parquet && own.is_some_and(|o| o != "object_storage") {
        bad(
            "format",
            "parquet is for object storage destinations only".into(),
        );
    }
    if let Some(k) = &config.kafka {
        if !k.key.is_empty()
            && let Err(e) = check_field(&k.key)
        {
            bad("kafka.key", e);
        }
        if !matches!(k.compression.as_str(), "none" | "snappy" | "lz4") {
            bad(
                "kafka.compression",
                format!("{:?}: use none, snappy or lz4", k.compression),
            );
        }
        if k.partitions < 1 {
            bad("kafka.partitions", "must be at least 1".into());
        }
        if k.replication_factor < 1 {
            bad("kafka.replication_factor", "must be at least 1".into());
        }
        if k.message_timeout < Duration::from_millis(100) {
            bad("kafka.message_timeout", "must be at least 100ms".into());
        }
        for key in k.options.0.keys() {
            if matches!(
                key.as_str(),
                "acks" | "enable.idempotence" | "bootstrap.servers"
            ) {
                bad(
                    &format!("kafka.options.{key}"),
                    "is set by the sink (acks=all, idempotence on, brokers from the destination)"
                        .into(),
                );
            }
        }
    }
    if let Some(ps) = &config.pubsub {
        if !ps.ordering_key.is_empty()
            && let Err(e) = check_field(&ps.ordering_key)
        {
            bad("pubsub.ordering_key", e);
        }
        for (name, field) in &ps.attributes {
            if name.is_empty() || name.starts_with("goog") {
                bad(
                    &format!("pubsub.attributes.{name}"),
                    "attribute names must be non-empty and not start with \"goog\"".into(),
                );
            }
            if let Err(e) = check_field(field) {
                bad(&format!("pubsub.attributes.{name}"), e);
            }
        }
        if ps.batch_messages == 0 || ps.batch_messages > 1000 {
            bad(
                "pubsub.batch_messages",
                "must be 1–1000 (the API's limit)".into(),
            );
        }
        if ps.batch_bytes == 0 || ps.batch_bytes > 10_000_000 {
            bad(
                "pubsub.batch_bytes",
                "must be 1–10000000 (the API's limit)".into(),
            );
        }
        if let Some(e) = &ps.endpoint
            && url::Url::parse(e).is_err()
        {
            bad("pubsub.endpoint", format!("{e:?} is not a URL"));
        }
    }
    if let Some(o) = &config.object_storage {
        if o.window < Duration::from_secs(1) {
            bad("object_storage.window", "must be at least 1s".into());
        }
        if o.max_records == 0 {
            bad("object_storage.max_records", "must be positive".into());
        }
        if let Some(Destination::ObjectStorage { kind, .. }) = &destination {
            for key in o.options.0.keys() {
                if !kind.accepts_option(key) {
                    bad(
                        &format!("object_storage.options.{key}"),
                        format!("not an option of the {kind:?} backend"),
                    );
                }
            }
        }
    }
    match (destination, p.is_empty()) {
        (Some(destination), true) => Ok(ValidSink {
            config,
            destination,
        }),
        _ => Err(reject(p)),
    }
}

/// Parses and validates every definition: the valid ones, and each rejected one with its
/// problems. Names must be unique; every definition after the first with a name is rejected.
pub fn parse_definitions(raw: &[toml::Table]) -> (Vec<ValidSink>, Vec<RejectedSink>) {
    let mut valid: Vec<ValidSink> = Vec::new();
    let mut rejected = Vec::new();
    for (i, table) in raw.iter().enumerate() {
        match check_sink(table, i) {
            Ok(s) if valid.iter().any(|v| v.config.name == s.config.name) => {
                rejected.push(RejectedSink {
                    name: s.config.name.clone(),
                    problems: vec![ConfigProblem {
                        setting: format!("sinks[{i}].name"),
                        message: format!("{:?} names an earlier sink too", s.config.name),
                    }],
                })
            }
            Ok(s) => valid.push(s),
            Err(r) => rejected.push(r),
        }
    }
    (valid, rejected)
}

/// The default dead-letter file of `name` under `data_dir`.
pub fn default_dead_letter_file(data_dir: &Path, name: &str) -> PathBuf {
    data_dir
        .join("sinks")
        .join("dead-letter")
        .join(format!("{name}.jsonl"))
}

/// Serde for `Duration` as humantime text.
mod duration_text {
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

    #[test]
    fn destinations_parse_or_say_what_is_wrong() {
        assert_eq!(
            Destination::parse("kafka://127.0.0.1:9092,h2:9093/verdict.flows").unwrap(),
            Destination::Kafka {
                brokers: "127.0.0.1:9092,h2:9093".into(),
                topic: "verdict.flows".into()
            }
        );
        assert_eq!(
            Destination::parse("pubsub://projects/p/topics/t").unwrap(),
            Destination::Pubsub {
                topic: "projects/p/topics/t".into()
            }
        );
        assert!(matches!(
            Destination::parse("s3://bucket/export").unwrap(),
            Destination::ObjectStorage {
                kind: StorageKind::S3,
                ..
            }
        ));
        assert!(matches!(
            Destination::parse("gs://bucket/export").unwrap(),
            Destination::ObjectStorage {
                kind: StorageKind::Gcs,
                ..
            }
        ));
        assert!(matches!(
            Destination::parse("az://container/export").unwrap(),
            Destination::ObjectStorage {
                kind: StorageKind::Azure,
                ..
            }
        ));
        for (url, says) in [
            ("kafka://broker/topic", "HOST:PORT"),
            ("kafka://h:1", "missing /TOPIC"),
            ("kafka://h:1/a b", "Kafka topic"),
            (
                "pubsub://topics/t",
                "pubsub://projects/PROJECT/topics/TOPIC",
            ),
            ("file://rel/path", "file:///ABSOLUTE/PATH"),
            ("ftp://x/y", "unsupported scheme"),
            ("just-a-path", "not a destination URL"),
        ] {
            let e = Destination::parse(url).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
        }
    }

    #[test]
    fn a_bad_definition_is_named_and_the_others_are_kept() {
        let (valid, rejected) = parse_definitions(&tables(
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
        assert_eq!(valid[0].config.kafka, None);
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

        let (_, rejected) = parse_definitions(&tables(
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
    fn defaults_fill_every_section() {
        let (valid, rejected) = parse_definitions(&tables(
            r#"
[[sinks]]
name = "ps"
destination = "pubsub://projects/p/topics/t"
[sinks.pubsub]
endpoint = "http://127.0.0.1:8085"
credentials = "anonymous"
"#,
        ));
        assert!(rejected.is_empty(), "{rejected:?}");
        let ps = valid[0].config.pubsub.clone().unwrap();
        assert_eq!(ps.attributes["disposition"], "jsonPayload.disposition");
        assert_eq!(ps.batch_messages, DEFAULT_PUBSUB_BATCH_MESSAGES);
        assert_eq!(valid[0].config.delivery, DeliveryConfig::default());
        assert_eq!(valid[0].config.format, Format::Json);
    }
}
