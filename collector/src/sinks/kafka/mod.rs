//! The Kafka destination: `kafka://HOST:PORT[,HOST:PORT]/TOPIC` with `[sinks.kafka]`
//! ([`config`]), and its client ([`client`], an idempotent `rdkafka` producer).

pub mod client;
pub mod config;

use self::client::KafkaSink;
use self::config::KafkaConfig;
use crate::sinks::definition::SinkConfig;
use crate::sinks::destination::{Destination, DestinationProblem, json_only, read_section};
use crate::sinks::sink::{BuildContext, Sink, SinkError, SinkFuture};

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
    type Settings = KafkaConfig;

    fn parse(
        url: &str,
        section_value: Option<toml::Value>,
        sink: &SinkConfig,
    ) -> Result<Self, Vec<DestinationProblem>> {
        let mut problems = Vec::new();
        let rest = url.split_once("://").map_or("", |(_, r)| r);
        let address = parse_url(url, rest).map_err(|m| ("destination".to_owned(), m));
        let settings = read_section::<KafkaConfig>(Self::SECTION, section_value, &mut problems);
        problems.extend(json_only(sink));
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
