//! `kafka://HOST:PORT[,HOST:PORT]/TOPIC` with `[sinks.kafka]`: the Kafka destination's settings
//! and their validation.

use std::time::Duration;

use serde::Deserialize;

use super::KafkaSink;
use crate::config::StorageOptions;
use crate::sinks::definition::{
    DestinationProblem, Format, SinkConfig, check_field, duration_text,
};
use crate::sinks::registry::{Destination, section};
use crate::sinks::{BuildContext, Sink, SinkError, SinkFuture};

pub const DEFAULT_KAFKA_KEY: &str = "jsonPayload.dest.namespace";
pub const DEFAULT_KAFKA_PARTITIONS: i32 = 3;
pub const DEFAULT_KAFKA_REPLICATION_FACTOR: i32 = 1;
pub const DEFAULT_KAFKA_MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Kafka producer settings (`[sinks.kafka]`).
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
    /// `enable.idempotence` are fixed (`all`, `true`). Values of secret-looking keys
    /// (`sasl.password`, …) are redacted when printed.
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

impl KafkaConfig {
    fn problems(&self) -> Vec<DestinationProblem> {
        let mut p = Vec::new();
        let mut bad = |setting: &str, message: String| p.push((setting.to_owned(), message));
        if !self.key.is_empty()
            && let Err(e) = check_field(&self.key)
        {
            bad("kafka.key", e);
        }
        if !matches!(self.compression.as_str(), "none" | "snappy" | "lz4") {
            bad(
                "kafka.compression",
                format!("{:?}: use none, snappy or lz4", self.compression),
            );
        }
        if self.partitions < 1 {
            bad("kafka.partitions", "must be at least 1".into());
        }
        if self.replication_factor < 1 {
            bad("kafka.replication_factor", "must be at least 1".into());
        }
        if self.message_timeout < Duration::from_millis(100) {
            bad("kafka.message_timeout", "must be at least 100ms".into());
        }
        for key in self.options.0.keys() {
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
        p
    }
}

/// A Kafka destination: brokers, topic and producer settings.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaDestination {
    /// `HOST:PORT[,HOST:PORT]`.
    pub brokers: String,
    pub topic: String,
    pub settings: KafkaConfig,
}

/// `HOST:PORT[,HOST:PORT]/TOPIC` of `url` (the part after `kafka://`).
fn parse_url(url: &str, rest: &str) -> Result<(String, String), String> {
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
    Ok((brokers.to_owned(), topic.to_owned()))
}

impl Destination for KafkaDestination {
    const SECTION: &'static str = "kafka";
    const SCHEMES: &'static [&'static str] = &["kafka"];

    fn parse(
        url: &str,
        section_value: Option<toml::Value>,
        sink: &SinkConfig,
    ) -> Result<Self, Vec<DestinationProblem>> {
        let mut problems = Vec::new();
        let rest = url.split_once("://").map_or("", |(_, r)| r);
        let address = parse_url(url, rest).map_err(|m| ("destination".to_owned(), m));
        let settings = match section::<KafkaConfig>(Self::SECTION, section_value) {
            Ok(s) => {
                problems.extend(s.problems());
                Some(s)
            }
            Err(p) => {
                problems.extend(p);
                None
            }
        };
        if sink.format == Format::Parquet {
            problems.push((
                "format".into(),
                "parquet is for object storage destinations only".into(),
            ));
        }
        match (address, settings) {
            (Ok((brokers, topic)), Some(settings)) if problems.is_empty() => Ok(KafkaDestination {
                brokers,
                topic,
                settings,
            }),
            (address, _) => {
                if let Err(p) = address {
                    problems.insert(0, p);
                }
                Err(problems)
            }
        }
    }

    fn check_section(value: toml::Value) -> Vec<DestinationProblem> {
        match section::<KafkaConfig>(Self::SECTION, Some(value)) {
            Ok(s) => s.problems(),
            Err(p) => p,
        }
    }

    fn build<'a>(
        &'a self,
        _sink: &'a SinkConfig,
        _cx: &'a BuildContext,
    ) -> SinkFuture<'a, Result<Box<dyn Sink>, SinkError>> {
        Box::pin(async move {
            let sink = KafkaSink::build(&self.brokers, &self.topic, &self.settings).await?;
            Ok(Box::new(sink) as Box<dyn Sink>)
        })
    }
}
