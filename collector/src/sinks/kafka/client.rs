//! The Kafka sink: LogEntry JSON messages through librdkafka (bundled, built by `rdkafka`'s
//! `cmake-build`) with an idempotent producer and `acks=all`, so a message retried inside
//! librdkafka is written once and only after every in-sync replica has it. Each record is
//! enqueued, then the sink waits for every delivery report: the reports decide which records
//! are delivered, which are refused (dead-lettered when refused for good), and — when none got
//! through — that the broker is unavailable (the runner retries the batch with backoff).
//!
//! The message key is a LogEntry field (by default the destination namespace), so one key's
//! records keep their order in one partition; an `insertId` header lets consumers dedup
//! re-sent records. With `create_topic = true` the topic is created through the admin API at
//! start (an existing topic is fine).

use std::time::Duration;

use futures::StreamExt as _;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;

use super::config::KafkaConfig;
use crate::sinks::route::Routed;
use crate::sinks::route::field_text;
use crate::sinks::sink::{Refused, Sink, SinkError, SinkFuture};

/// Records librdkafka may hold in its queue (it refuses more with `QueueFull`; the sink then
/// waits for deliveries).
const QUEUE_MESSAGES: &str = "1000000";

pub struct KafkaSink {
    producer: FutureProducer,
    topic: String,
    key: Option<String>,
    brokers: String,
    /// Set when a delivery failed with an error that fences this producer.
    fenced: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Producer settings of `config` for `brokers`.
fn client_config(brokers: &str, config: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in &config.options.0 {
        c.set(k, v);
    }
    c.set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", &config.compression)
        .set(
            "message.timeout.ms",
            config.message_timeout.as_millis().to_string(),
        )
        .set("queue.buffering.max.messages", QUEUE_MESSAGES)
        .set("linger.ms", "5");
    c
}

/// Delivery errors a retry cannot fix.
fn is_permanent(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidRecord
    )
}

fn code_of(e: &KafkaError) -> Option<RDKafkaErrorCode> {
    e.rdkafka_error_code()
}

impl KafkaSink {
    /// Creates the producer (and the topic, when asked to).
    pub async fn build(
        brokers: &str,
        topic: &str,
        config: &KafkaConfig,
    ) -> Result<KafkaSink, SinkError> {
        let cc = client_config(brokers, config);
        if config.create_topic {
            let admin: AdminClient<DefaultClientContext> = cc
                .create()
                .map_err(|e| SinkError::definition("the Kafka settings are refused", e))?;
            let new = NewTopic::new(
                topic,
                config.partitions,
                TopicReplication::Fixed(config.replication_factor),
            );
            let opts = AdminOptions::new()
                .request_timeout(Some(Timeout::After(Duration::from_secs(10))))
                .operation_timeout(Some(Timeout::After(Duration::from_secs(10))));
            let results = admin.create_topics([&new], &opts).await.map_err(|e| {
                SinkError::unavailable(format!("creating topic {topic:?} at {brokers}"), e)
            })?;
            for r in results {
                match r {
                    Ok(_) => tracing::info!(topic, brokers, "created the Kafka topic"),
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((t, code)) => {
                        let e = KafkaError::AdminOp(code);
                        return Err(match code {
                            RDKafkaErrorCode::InvalidPartitions
                            | RDKafkaErrorCode::InvalidReplicationFactor
                            | RDKafkaErrorCode::InvalidTopic
                            | RDKafkaErrorCode::TopicAuthorizationFailed
                            | RDKafkaErrorCode::PolicyViolation => SinkError::definition(
                                format!("the broker refuses to create topic {t:?}"),
                                e,
                            ),
                            _ => SinkError::unavailable(
                                format!("creating topic {t:?} at {brokers}"),
                                e,
                            ),
                        });
                    }
                }
            }
        }
        let producer: FutureProducer = cc
            .create()
            .map_err(|e| SinkError::definition("the Kafka producer settings are refused", e))?;
        Ok(KafkaSink {
            producer,
            topic: topic.to_owned(),
            key: (!config.key.is_empty()).then(|| config.key.clone()),
            brokers: brokers.to_owned(),
            fenced: std::sync::atomic::AtomicBool::new(false),
        })
    }

    async fn send_all(&self, records: &[&Routed]) -> Result<Vec<Refused>, SinkError> {
        let mut pending = futures::stream::FuturesOrdered::new();
        let mut results: Vec<Option<Result<(), KafkaError>>> = vec![None; records.len()];
        let mut done = 0usize;
        for (i, r) in records.iter().enumerate() {
            let key = self.key.as_deref().and_then(|k| field_text(&r.entry, k));
            let headers = OwnedHeaders::new().insert(Header {
                key: "insertId",
                value: Some(r.insert_id.as_str()),
            });
            let mut record = FutureRecord::to(&self.topic)
                .payload(r.json.as_ref())
                .headers(headers);
            if let Some(k) = &key {
                record = record.key(k.as_str());
            }
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        pending.push_back(async move { (i, delivery.await) });
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        // Wait for a delivery to make room (or poll briefly if none is ours).
                        match pending.next().await {
                            Some((j, d)) => {
                                results[j] = Some(outcome(d));
                                done += 1;
                            }
                            None => tokio::time::sleep(Duration::from_millis(5)).await,
                        }
                    }
                    Err((e, _)) => {
                        results[i] = Some(Err(e));
                        done += 1;
                        break;
                    }
                }
            }
        }
        while let Some((j, d)) = pending.next().await {
            results[j] = Some(outcome(d));
            done += 1;
        }
        debug_assert_eq!(done, records.len());
        let mut refused = Vec::new();
        let mut delivered = 0usize;
        let mut first_error = None;
        for (i, r) in results.into_iter().enumerate() {
            match r.expect("every record has a result") {
                Ok(()) => delivered += 1,
                Err(e) => {
                    if matches!(
                        code_of(&e),
                        Some(
                            RDKafkaErrorCode::ProducerFenced
                                | RDKafkaErrorCode::Fatal
                                | RDKafkaErrorCode::InvalidProducerEpoch
                        )
                    ) {
                        self.fenced
                            .store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    let permanent = code_of(&e).is_some_and(is_permanent);
                    if first_error.is_none() {
                        first_error = Some(e.clone());
                    }
                    refused.push(Refused {
                        index: i,
                        permanent,
                        error: e.to_string(),
                    });
                }
            }
        }
        if delivered == 0 && !refused.is_empty() && refused.iter().all(|r| !r.permanent) {
            return Err(SinkError::unavailable(
                format!(
                    "Kafka at {} (topic {:?}) delivered none of {} records",
                    self.brokers,
                    self.topic,
                    records.len()
                ),
                first_error.expect("an error was seen"),
            ));
        }
        Ok(refused)
    }
}

fn outcome<Canceled>(
    d: Result<rdkafka::producer::future_producer::OwnedDeliveryResult, Canceled>,
) -> Result<(), KafkaError> {
    match d {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(e),
        Err(_) => Err(KafkaError::Canceled),
    }
}

impl Sink for KafkaSink {
    fn send<'a>(
        &'a mut self,
        records: &'a [&'a Routed],
    ) -> SinkFuture<'a, Result<Vec<Refused>, SinkError>> {
        Box::pin(self.send_all(records))
    }

    fn flush(&mut self) -> SinkFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            let producer = self.producer.clone();
            tokio::task::spawn_blocking(move || {
                producer.flush(Timeout::After(Duration::from_secs(10)))
            })
            .await
            .map_err(|e| SinkError::Unavailable {
                message: format!("flush task: {e}"),
                source: None,
            })?
            .map_err(|e| SinkError::unavailable("flushing the Kafka producer", e))
        })
    }

    /// After a long outage librdkafka may time out in-flight messages and bump the idempotent
    /// producer's epoch; a broker can answer that with a fatal error (tansu: ProducerFenced).
    /// Such a producer never recovers: the runner builds a new one.
    fn broken(&self) -> bool {
        self.producer.client().fatal_error().is_some()
            || self.fenced.load(std::sync::atomic::Ordering::Relaxed)
    }
}
