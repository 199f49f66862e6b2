//! The destinations sinks can route to. Each lives in a folder of its own (`kafka/`, `pubsub/`,
//! `object_export/`) holding its settings type, which implements [`Destination`]: the URL
//! schemes it serves, the `[sinks.SECTION]` it reads, its validation and how it is built.
//!
//! Adding a destination is its folder plus one line in the `destinations!` list below. Kafka
//! and Pub/Sub are cargo features of the crate (`kafka`, `pubsub`; both on by default): a build
//! without one still recognises its URLs and says which feature it lacks.

use std::fmt;

use super::definition::{DestinationProblem, SinkConfig};
use super::{BuildContext, Sink, SinkError, SinkFuture};

/// A kind of destination.
pub trait Destination: Clone + PartialEq + fmt::Debug + Send + Sync + Sized + 'static {
    /// The section of a `[[sinks]]` entry holding its settings (`kafka` for `[sinks.kafka]`).
    const SECTION: &'static str;
    /// The URL schemes it serves (`kafka` for `kafka://…`).
    const SCHEMES: &'static [&'static str];

    /// Parses the destination URL and its settings section (absent: defaults). `sink` is the
    /// common part of the definition (a destination may accept only some formats). Every
    /// problem names its setting relative to the sink (`kafka.compression`, `destination`).
    fn parse(
        url: &str,
        section: Option<toml::Value>,
        sink: &SinkConfig,
    ) -> Result<Self, Vec<DestinationProblem>>;

    /// The problems of a settings section on its own (for a section given to a sink of another
    /// destination, which is refused, so that every problem is reported at once).
    fn check_section(section: toml::Value) -> Vec<DestinationProblem>;

    /// Builds the client that sends to the destination.
    fn build<'a>(
        &'a self,
        sink: &'a SinkConfig,
        cx: &'a BuildContext,
    ) -> SinkFuture<'a, Result<Box<dyn Sink>, SinkError>>;
}

/// [`Destination::parse`] of one destination, into the [`DestinationConfig`] variant.
type ParseFn = fn(
    &str,
    Option<toml::Value>,
    &SinkConfig,
) -> Result<DestinationConfig, Vec<DestinationProblem>>;

/// A built-in destination, type-erased.
struct BuiltIn {
    schemes: &'static [&'static str],
    section: &'static str,
    parse: ParseFn,
    check_section: fn(toml::Value) -> Vec<DestinationProblem>,
}

/// Declares the destinations: the [`DestinationConfig`] enum (one variant per destination
/// type), the sections they own, and the dispatch of parsing and building.
macro_rules! destinations {
    ($($(#[$cfg:meta])* $variant:ident($ty:ty),)*) => {
        /// A destination's parsed settings (the typed part of a definition).
        #[derive(Debug, Clone, PartialEq)]
        pub enum DestinationConfig {
            $($(#[$cfg])* $variant($ty),)*
        }

        /// The destinations built in.
        fn built_in() -> Vec<BuiltIn> {
            vec![$(
                $(#[$cfg])*
                BuiltIn {
                    schemes: <$ty as Destination>::SCHEMES,
                    section: <$ty as Destination>::SECTION,
                    parse: |url, section, sink| {
                        <$ty as Destination>::parse(url, section, sink).map(DestinationConfig::$variant)
                    },
                    check_section: <$ty as Destination>::check_section,
                },
            )*]
        }

        impl DestinationConfig {
            /// Builds the client that sends to the destination.
            pub fn build<'a>(
                &'a self,
                sink: &'a SinkConfig,
                cx: &'a BuildContext,
            ) -> SinkFuture<'a, Result<Box<dyn Sink>, SinkError>> {
                match self {
                    $($(#[$cfg])* DestinationConfig::$variant(d) => d.build(sink, cx),)*
                }
            }
        }
    };
}

destinations! {
    #[cfg(feature = "kafka")]
    Kafka(super::kafka::KafkaDestination),
    #[cfg(feature = "pubsub")]
    Pubsub(super::pubsub::PubsubDestination),
    ObjectStorage(super::object_export::ObjectDestination),
}

/// Destinations this build was compiled without: (scheme, section, cargo feature).
const NOT_BUILT: &[(&str, &str, &str)] = &[
    #[cfg(not(feature = "kafka"))]
    ("kafka", "kafka", "kafka"),
    #[cfg(not(feature = "pubsub"))]
    ("pubsub", "pubsub", "pubsub"),
];

/// Every section a `[[sinks]]` entry may hold for some destination (those of destinations this
/// build lacks too, so they are reported as such rather than as unknown fields).
pub fn sections() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = built_in().iter().map(|b| b.section).collect();
    out.extend(NOT_BUILT.iter().map(|(_, section, _)| *section));
    out
}

const URL_FORMS: &str = "use kafka://HOST:PORT/TOPIC, pubsub://projects/P/topics/T, s3://, gs://, \
                         az:// or file:///PATH";

/// Finds the destination of `sink.destination` and parses it with its section (from
/// `sections`, the destination sections the entry holds); a section of another destination is a
/// problem.
pub fn parse(
    sink: &SinkConfig,
    sections: Vec<(String, toml::Value)>,
) -> Result<DestinationConfig, Vec<DestinationProblem>> {
    let url = sink.destination.as_str();
    let Some((scheme, _)) = url.split_once("://") else {
        return Err(vec![(
            "destination".into(),
            format!("{url:?} is not a destination URL; {URL_FORMS}"),
        )]);
    };
    let scheme = scheme.to_ascii_lowercase();
    if let Some((_, _, feature)) = NOT_BUILT.iter().find(|(s, _, _)| *s == scheme) {
        return Err(vec![(
            "destination".into(),
            format!(
                "{url:?}: this collector is built without {scheme}:// destinations (cargo feature `{feature}`)"
            ),
        )]);
    }
    let destinations = built_in();
    let Some(destination) = destinations
        .iter()
        .find(|d| d.schemes.contains(&scheme.as_str()))
    else {
        return Err(vec![(
            "destination".into(),
            format!("{url:?}: unsupported scheme {scheme:?}; {URL_FORMS}"),
        )]);
    };
    let mut problems = Vec::new();
    let mut own = None;
    for (name, value) in sections {
        if name == destination.section {
            own = Some(value);
            continue;
        }
        problems.push((
            name.clone(),
            format!("does not apply to the destination {url:?}"),
        ));
        if let Some(other) = destinations.iter().find(|d| d.section == name) {
            problems.extend((other.check_section)(value));
        }
    }
    match (destination.parse)(url, own, sink) {
        Ok(d) if problems.is_empty() => Ok(d),
        Ok(_) => Err(problems),
        Err(mut more) => {
            problems.append(&mut more);
            Err(problems)
        }
    }
}

/// Deserializes a destination's section (absent: its defaults), naming the section in errors.
pub fn section<T: serde::de::DeserializeOwned + Default>(
    name: &str,
    value: Option<toml::Value>,
) -> Result<T, Vec<DestinationProblem>> {
    match value {
        None => Ok(T::default()),
        Some(v) => serde::Deserialize::deserialize(v)
            .map_err(|e: toml::de::Error| vec![(name.to_owned(), e.to_string().trim().to_owned())]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorageKind;

    fn sink(destination: &str) -> SinkConfig {
        SinkConfig {
            name: "s".into(),
            destination: destination.into(),
            description: String::new(),
            disabled: false,
            filter: String::new(),
            exclusions: Vec::new(),
            format: Default::default(),
            delivery: Default::default(),
        }
    }

    fn parsed(url: &str) -> Result<DestinationConfig, String> {
        parse(&sink(url), Vec::new()).map_err(|p| {
            p.into_iter()
                .map(|(s, m)| format!("{s}: {m}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    #[test]
    fn destinations_parse_or_say_what_is_wrong() {
        match parsed("kafka://127.0.0.1:9092,h2:9093/verdict.flows").unwrap() {
            DestinationConfig::Kafka(k) => {
                assert_eq!(k.brokers, "127.0.0.1:9092,h2:9093");
                assert_eq!(k.topic, "verdict.flows");
            }
            other => panic!("{other:?}"),
        }
        match parsed("pubsub://projects/p/topics/t").unwrap() {
            DestinationConfig::Pubsub(p) => assert_eq!(p.topic, "projects/p/topics/t"),
            other => panic!("{other:?}"),
        }
        for (url, kind) in [
            ("s3://bucket/export", StorageKind::S3),
            ("gs://bucket/export", StorageKind::Gcs),
            ("az://container/export", StorageKind::Azure),
        ] {
            match parsed(url).unwrap() {
                DestinationConfig::ObjectStorage(o) => assert_eq!(o.kind, kind, "{url}"),
                other => panic!("{other:?}"),
            }
        }
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
            let e = parsed(url).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
        }
    }
}
