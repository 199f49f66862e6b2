//! The Pub/Sub destination: `pubsub://projects/P/topics/T` with `[sinks.pubsub]` ([`config`]),
//! and its client ([`client`], Google's `google-cloud-pubsub` publisher).

pub mod client;
pub mod config;

use self::client::PubsubSink;
use self::config::PubsubConfig;
use crate::sinks::definition::SinkConfig;
use crate::sinks::destination::{Destination, DestinationProblem, json_only, read_section};
use crate::sinks::sink::{BuildContext, Sink, SinkError, SinkFuture};

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
    type Settings = PubsubConfig;

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
        let settings = read_section::<PubsubConfig>(Self::SECTION, section_value, &mut problems);
        problems.extend(json_only(sink));
        match (topic, settings) {
            (Some(topic), Some(settings)) if problems.is_empty() => {
                Ok(PubsubDestination { topic, settings })
            }
            _ => Err(problems),
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
