//! The Pub/Sub sink: LogEntry JSON messages through Google's official client
//! (`google-cloud-pubsub`), which batches them (`batch_messages`, `batch_bytes`,
//! `batch_delay`) and retries retryable RPC errors itself. Messages carry attributes read from
//! the LogEntry (by default `disposition`, `src_namespace`, `dest_namespace` and `insert_id`,
//! for subscription filters and dedup) and optionally an ordering key.
//!
//! The endpoint and credentials are configurable: Google's endpoint with Application Default
//! Credentials in production; a local server (`endpoint = "http://127.0.0.1:PORT"`,
//! `credentials = "anonymous"`) in tests — the client ignores `PUBSUB_EMULATOR_HOST`.
//!
//! Each publish future is awaited: a message is delivered when the service returned its id. A
//! message refused with `INVALID_ARGUMENT` (e.g. too large) is refused for good; when no
//! message got through and none was refused for good, the service is unavailable and the
//! runner retries the batch. An ordering key paused by a failure is resumed before a retry.

use std::collections::BTreeSet;

use google_cloud_pubsub::client::Publisher;
use google_cloud_pubsub::error::PublishError;
use google_cloud_pubsub::model::Message;

use super::config::{Credentials, PubsubConfig};
use crate::sinks::route::Routed;
use crate::sinks::route::field_text;
use crate::sinks::sink::{Refused, Sink, SinkError, SinkFuture};

pub struct PubsubSink {
    publisher: Publisher,
    topic: String,
    ordering_key: Option<String>,
    attributes: Vec<(String, String)>,
}

impl std::fmt::Debug for PubsubSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubsubSink")
            .field("topic", &self.topic)
            .field("ordering_key", &self.ordering_key)
            .finish_non_exhaustive()
    }
}

/// Whether a failed publish can never succeed.
fn is_permanent(e: &PublishError) -> bool {
    match e {
        PublishError::Rpc(e) => e.status().is_some_and(|s| {
            matches!(
                s.code.name(),
                "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE"
            )
        }),
        _ => false,
    }
}

impl PubsubSink {
    /// Creates the publisher (no RPC is made until the first publish).
    pub async fn build(topic: &str, config: &PubsubConfig) -> Result<PubsubSink, SinkError> {
        let mut b = Publisher::builder(topic)
            .set_message_count_threshold(config.batch_messages)
            .set_byte_threshold(config.batch_bytes)
            .set_delay_threshold(config.batch_delay);
        if let Some(e) = &config.endpoint {
            b = b.with_endpoint(e.clone());
        }
        if config.credentials == Credentials::Anonymous {
            b = b.with_credentials(
                google_cloud_auth::credentials::anonymous::Builder::new().build(),
            );
        }
        let publisher = b.build().await.map_err(|e| {
            SinkError::definition(format!("cannot create a Pub/Sub publisher for {topic}"), e)
        })?;
        Ok(PubsubSink {
            publisher,
            topic: topic.to_owned(),
            ordering_key: (!config.ordering_key.is_empty()).then(|| config.ordering_key.clone()),
            attributes: config
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }

    async fn publish_all(&self, records: &[&Routed]) -> Result<Vec<Refused>, SinkError> {
        let mut futures = Vec::with_capacity(records.len());
        for r in records {
            let attrs: Vec<(String, String)> = self
                .attributes
                .iter()
                .filter_map(|(name, field)| field_text(&r.entry, field).map(|v| (name.clone(), v)))
                .collect();
            let mut m = Message::new()
                .set_data(r.json.clone())
                .set_attributes(attrs);
            let key = self
                .ordering_key
                .as_deref()
                .and_then(|k| field_text(&r.entry, k));
            if let Some(k) = &key {
                m = m.set_ordering_key(k.clone());
            }
            futures.push(async move { (self.publisher.publish(m).await, key) });
        }
        let results = futures::future::join_all(futures).await;
        let mut refused = Vec::new();
        let mut paused = BTreeSet::new();
        let mut first_error = None;
        for (i, (result, key)) in results.into_iter().enumerate() {
            if let Err(e) = result {
                if let Some(k) = key {
                    paused.insert(k);
                }
                refused.push(Refused {
                    index: i,
                    permanent: is_permanent(&e),
                    error: e.to_string(),
                });
                first_error.get_or_insert(e);
            }
        }
        for k in paused {
            self.publisher.resume_publish(k);
        }
        if !refused.is_empty()
            && refused.len() == records.len()
            && refused.iter().all(|r| !r.permanent)
        {
            return Err(SinkError::unavailable(
                format!(
                    "Pub/Sub topic {} accepted none of {} messages",
                    self.topic,
                    records.len()
                ),
                first_error.expect("an error was seen"),
            ));
        }
        Ok(refused)
    }
}

impl Sink for PubsubSink {
    fn send<'a>(
        &'a mut self,
        records: &'a [&'a Routed],
    ) -> SinkFuture<'a, Result<Vec<Refused>, SinkError>> {
        Box::pin(self.publish_all(records))
    }
}
