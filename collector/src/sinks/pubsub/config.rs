//! `pubsub://projects/P/topics/T` with `[sinks.pubsub]`: the Pub/Sub destination's settings and
//! their validation.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::sinks::definition::{check_field, duration_text};
use crate::sinks::destination::{DestinationProblem, Settings};

pub const DEFAULT_PUBSUB_BATCH_MESSAGES: u32 = 1000;
pub const DEFAULT_PUBSUB_BATCH_BYTES: u32 = 1 << 20;
pub const DEFAULT_PUBSUB_BATCH_DELAY: Duration = Duration::from_millis(10);

/// Pub/Sub publisher settings (`[sinks.pubsub]`).
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

impl Settings for PubsubConfig {
    fn problems(&self) -> Vec<DestinationProblem> {
        let mut p = Vec::new();
        let mut bad = |setting: &str, message: String| p.push((setting.to_owned(), message));
        if !self.ordering_key.is_empty()
            && let Err(e) = check_field(&self.ordering_key)
        {
            bad("pubsub.ordering_key", e);
        }
        for (name, field) in &self.attributes {
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
        if self.batch_messages == 0 || self.batch_messages > 1000 {
            bad(
                "pubsub.batch_messages",
                "must be 1–1000 (the API's limit)".into(),
            );
        }
        if self.batch_bytes == 0 || self.batch_bytes > 10_000_000 {
            bad(
                "pubsub.batch_bytes",
                "must be 1–10000000 (the API's limit)".into(),
            );
        }
        if let Some(e) = &self.endpoint
            && url::Url::parse(e).is_err()
        {
            bad("pubsub.endpoint", format!("{e:?} is not a URL"));
        }
        p
    }
}
