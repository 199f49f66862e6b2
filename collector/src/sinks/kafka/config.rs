//! `kafka://HOST:PORT[,HOST:PORT]/TOPIC` with `[sinks.kafka]`: the Kafka destination's settings
//! and their validation.

use std::time::Duration;

use serde::Deserialize;

use crate::config::values::StorageOptions;
use crate::sinks::definition::{check_field, duration_text};
use crate::sinks::destination::{DestinationProblem, Settings};

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

impl Settings for KafkaConfig {
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
