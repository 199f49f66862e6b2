//! `pubsub://projects/P/topics/T` with `[sinks.pubsub]`: the Pub/Sub destination's settings and
//! their validation.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::PubsubSink;
use crate::sinks::definition::{
    DestinationProblem, Format, SinkConfig, check_field, duration_text,
};
use crate::sinks::registry::{Destination, section};
use crate::sinks::{BuildContext, Sink, SinkError, SinkFuture};

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

impl PubsubConfig {
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

/// A Pub/Sub destination: the topic and publisher settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PubsubDestination {
    /// `projects/P/topics/T`.
    pub topic: String,
    pub settings: PubsubConfig,
}

impl Destination for PubsubDestination {
    const SECTION: &'static str = "pubsub";
    const SCHEMES: &'static [&'static str] = &["pubsub"];

    fn parse(
        url: &str,
        section_value: Option<toml::Value>,
        sink: &SinkConfig,
    ) -> Result<Self, Vec<DestinationProblem>> {
        let mut problems = Vec::new();
        let rest = url.split_once("://").map_or("", |(_, r)| r);
        let topic = match rest.split('/').collect::<Vec<_>>().as_slice() {
            ["projects", p, "topics", t] if !p.is_empty() && !t.is_empty() => Some(rest.to_owned()),
            _ => {
                problems.push((
                    "destination".to_owned(),
                    format!("{url:?}: write pubsub://projects/PROJECT/topics/TOPIC"),
                ));
                None
            }
        };
        let settings = match section::<PubsubConfig>(Self::SECTION, section_value) {
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
        match (topic, settings) {
            (Some(topic), Some(settings)) if problems.is_empty() => {
                Ok(PubsubDestination { topic, settings })
            }
            _ => Err(problems),
        }
    }

    fn check_section(value: toml::Value) -> Vec<DestinationProblem> {
        match section::<PubsubConfig>(Self::SECTION, Some(value)) {
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
            let sink = PubsubSink::build(&self.topic, &self.settings).await?;
            Ok(Box::new(sink) as Box<dyn Sink>)
        })
    }
}
