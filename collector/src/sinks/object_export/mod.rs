//! The object storage export destination: `s3://`, `gs://`, `az://` or `file:///` with
//! `[sinks.object_storage]` ([`config`]), and its writer ([`client`]: files per time window
//! in hive partitions).

pub mod client;
pub mod config;

use self::client::ObjectExport;
use self::config::ObjectExportConfig;
use crate::config::values::StorageKind;
use crate::sinks::definition::SinkConfig;
use crate::sinks::destination::{Destination, DestinationProblem, read_section};
use crate::sinks::sink::{BuildContext, Sink, SinkError, SinkFuture};

/// An object storage destination: its URL, backend and export settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectDestination {
    pub url: String,
    pub kind: StorageKind,
    pub settings: ObjectExportConfig,
}

impl Destination for ObjectDestination {
    const SECTION: &'static str = "object_storage";
    type Settings = ObjectExportConfig;
    const SCHEMES: &'static [&'static str] = &[
        "file", "s3", "s3a", "gs", "az", "azure", "abfs", "abfss", "adl",
    ];

    fn parse(
        url: &str,
        section_value: Option<toml::Value>,
        _sink: &SinkConfig,
    ) -> Result<Self, Vec<DestinationProblem>> {
        let mut problems = Vec::new();
        let kind = match StorageKind::of(url) {
            Ok(StorageKind::Local) if !url.starts_with("file:///") => {
                problems.push((
                    "destination".to_owned(),
                    format!("{url:?}: a local destination is file:///ABSOLUTE/PATH"),
                ));
                None
            }
            Ok(StorageKind::Local) => Some(StorageKind::Local),
            Ok(kind) => match url::Url::parse(url) {
                Ok(_) => Some(kind),
                Err(e) => {
                    problems.push((
                        "destination".to_owned(),
                        format!("{url:?} is not a URL: {e}"),
                    ));
                    None
                }
            },
            Err(m) => {
                problems.push(("destination".to_owned(), m));
                None
            }
        };
        let settings =
            read_section::<ObjectExportConfig>(Self::SECTION, section_value, &mut problems);
        if let (Some(settings), Some(kind)) = (&settings, kind) {
            problems.extend(settings.foreign_options(kind));
        }
        match (kind, settings) {
            (Some(kind), Some(settings)) if problems.is_empty() => Ok(ObjectDestination {
                url: url.to_owned(),
                kind,
                settings,
            }),
            _ => Err(problems),
        }
    }

    fn build<'a>(
        &'a self,
        sink: &'a SinkConfig,
        cx: &'a BuildContext,
    ) -> SinkFuture<'a, Result<Box<dyn Sink>, SinkError>> {
        Box::pin(async move {
            let export = ObjectExport::build(
                &sink.name,
                &self.url,
                self.kind,
                sink.format,
                &self.settings,
                &cx.parquet,
            )?;
            Ok(Box::new(export) as Box<dyn Sink>)
        })
    }
}
