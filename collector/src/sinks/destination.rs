//! A kind of destination: the [`Destination`] trait each destination folder's settings type
//! implements (its URL schemes, its `[sinks.SECTION]`, validation, building), and what they
//! share.

use std::fmt;

use serde::de::DeserializeOwned;

use super::definition::{Format, SinkConfig};
use super::sink::{BuildContext, Sink, SinkError, SinkFuture};

/// A problem of one destination's part of a definition: the setting relative to the sink
/// (`kafka.compression`, `destination`) and what is wrong.
pub type DestinationProblem = (String, String);

/// A kind of destination.
pub trait Destination: Clone + PartialEq + fmt::Debug + Send + Sync + Sized + 'static {
    /// The section of a `[[sinks]]` entry holding its settings (`kafka` for `[sinks.kafka]`).
    const SECTION: &'static str;
    /// The URL schemes it serves (`kafka` for `kafka://…`).
    const SCHEMES: &'static [&'static str];
    /// What its section holds.
    type Settings: Settings;

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
    fn check_section(section: toml::Value) -> Vec<DestinationProblem> {
        let mut problems = Vec::new();
        read_section::<Self::Settings>(Self::SECTION, Some(section), &mut problems);
        problems
    }

    /// Builds the client that sends to the destination.
    fn build<'a>(
        &'a self,
        sink: &'a SinkConfig,
        cx: &'a BuildContext,
    ) -> SinkFuture<'a, Result<Box<dyn Sink>, SinkError>>;
}

/// A destination's settings section.
pub trait Settings: DeserializeOwned + Default {
    /// What is wrong with the settings on their own, each problem naming its setting relative
    /// to the sink (`kafka.compression`).
    fn problems(&self) -> Vec<DestinationProblem>;
}

/// Reads section `name` as settings `T` (absent: the defaults) and adds every problem to
/// `problems`; `None` when the section does not even deserialize.
pub fn read_section<T: Settings>(
    name: &str,
    value: Option<toml::Value>,
    problems: &mut Vec<DestinationProblem>,
) -> Option<T> {
    let settings = match value {
        None => T::default(),
        Some(v) => match T::deserialize(v) {
            Ok(s) => s,
            Err(e) => {
                problems.push((name.to_owned(), e.to_string().trim().to_owned()));
                return None;
            }
        },
    };
    problems.extend(settings.problems());
    Some(settings)
}

/// The problem of a sink asking a streaming destination (Kafka, Pub/Sub) for Parquet.
pub fn json_only(sink: &SinkConfig) -> Option<DestinationProblem> {
    (sink.format == Format::Parquet).then(|| {
        (
            "format".to_owned(),
            "parquet is for object storage destinations only".to_owned(),
        )
    })
}
