//! The destinations sinks can route to, and reading whole sink definitions with them.
//!
//! Each destination lives in a folder of its own (`kafka/`, `pubsub/`, `object_export/`)
//! holding its settings type, which implements [`Destination`]: the URL schemes it serves, the
//! `[sinks.SECTION]` it reads, its validation and how it is built. Adding a destination is its
//! folder plus one line in the `destinations!` list below. Kafka and Pub/Sub are cargo features
//! of the crate (`kafka`, `pubsub`; both on by default): a build without one still recognises
//! its URLs and says which feature it lacks.
//!
//! Each `[[sinks]]` entry is parsed and validated on its own when the configuration is read
//! ([`parse_definitions`]): a bad one becomes a [`SinkDefinition::Rejected`] with its name (or
//! index) and every problem, and is skipped; the others run. Unknown fields are refused per
//! sink, as everywhere in the configuration. Definitions print with secrets redacted (object
//! store and Kafka options whose key names a secret).

use std::fmt;

use serde::{Deserialize, Deserializer};

use super::definition::SinkConfig;
use super::destination::{Destination, DestinationProblem};
use super::sink::{BuildContext, Sink, SinkError, SinkFuture};
use crate::config::values::ConfigProblem;

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

/// A definition that passed validation: the common part and the typed destination.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidSink {
    pub config: SinkConfig,
    pub destination: DestinationConfig,
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

/// One `[[sinks]]` entry as read: valid, or rejected with its problems (kept so the collector
/// reports it by name while the others run).
#[derive(Debug, Clone, PartialEq)]
pub enum SinkDefinition {
    Valid(Box<ValidSink>),
    Rejected(RejectedSink),
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
    // The destinations' sections are theirs to parse; the rest is the common part.
    let mut common = raw.clone();
    let sections: Vec<(String, toml::Value)> = sections()
        .into_iter()
        .filter_map(|s| common.remove(s).map(|v| (s.to_owned(), v)))
        .collect();
    let config = SinkConfig::deserialize(toml::Value::Table(common)).map_err(|e| {
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
    let destination = match parse(&config, sections) {
        Ok(dest) => Some(dest),
        Err(problems) => {
            for (setting, message) in problems {
                bad(&setting, message);
            }
            None
        }
    };
    match (destination, p.is_empty()) {
        (Some(destination), true) => Ok(ValidSink {
            config,
            destination,
        }),
        _ => Err(reject(p)),
    }
}

/// Parses and validates every definition, in order. Names must be unique; every definition
/// after the first with a name is rejected.
pub fn parse_definitions(raw: &[toml::Table]) -> Vec<SinkDefinition> {
    let mut out: Vec<SinkDefinition> = Vec::new();
    for (i, table) in raw.iter().enumerate() {
        let taken = |name: &str| {
            out.iter()
                .any(|d| matches!(d, SinkDefinition::Valid(v) if v.config.name == name))
        };
        out.push(match check_sink(table, i) {
            Ok(s) if taken(&s.config.name) => SinkDefinition::Rejected(RejectedSink {
                name: s.config.name.clone(),
                problems: vec![ConfigProblem {
                    setting: format!("sinks[{i}].name"),
                    message: format!("{:?} names an earlier sink too", s.config.name),
                }],
            }),
            Ok(s) => SinkDefinition::Valid(Box::new(s)),
            Err(r) => SinkDefinition::Rejected(r),
        });
    }
    out
}

/// Reads `[[sinks]]` for the configuration: never fails (a bad definition is kept as
/// rejected), except when `sinks` is not an array of tables at all.
pub fn deserialize_definitions<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<SinkDefinition>, D::Error> {
    let raw = Vec::<toml::Table>::deserialize(d)?;
    Ok(parse_definitions(&raw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::values::StorageKind;

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

    fn tables(text: &str) -> Vec<toml::Table> {
        let t: toml::Table = text.parse().unwrap();
        t["sinks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_table().unwrap().clone())
            .collect()
    }

    /// The valid and the rejected definitions of `raw`.
    fn split(raw: &[toml::Table]) -> (Vec<ValidSink>, Vec<RejectedSink>) {
        let mut valid = Vec::new();
        let mut rejected = Vec::new();
        for d in parse_definitions(raw) {
            match d {
                SinkDefinition::Valid(v) => valid.push(*v),
                SinkDefinition::Rejected(r) => rejected.push(r),
            }
        }
        (valid, rejected)
    }

    #[test]
    fn a_bad_definition_is_named_and_the_others_are_kept() {
        let (valid, rejected) = split(&tables(
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

        let (_, rejected) = split(&tables(
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
    fn secrets_in_definitions_are_redacted_when_printed() {
        let defs = parse_definitions(&tables(
            r#"
[[sinks]]
name = "to-s3"
destination = "s3://bucket/export"
[sinks.object_storage.options]
aws_access_key_id = "AKIDEXAMPLE"
aws_secret_access_key = "hunter2-secret"

[[sinks]]
name = "to-kafka"
destination = "kafka://127.0.0.1:9092/t"
[sinks.kafka.options]
"sasl.password" = "kafka-hunter2"
"sasl.username" = "verdict"
"#,
        ));
        assert!(
            defs.iter().all(|d| matches!(d, SinkDefinition::Valid(_))),
            "{defs:?}"
        );
        let printed = format!("{defs:?} {defs:#?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("verdict"), "{printed}");
    }
}
