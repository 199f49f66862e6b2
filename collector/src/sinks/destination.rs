//! A kind of destination: the [`Destination`] trait each destination folder's settings type
//! implements (its URL schemes, its `[sinks.SECTION]`, validation, building), and what they
//! share.

use std::fmt;

use super::definition::SinkConfig;
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
