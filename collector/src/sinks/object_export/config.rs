//! `s3://`, `gs://`, `az://` and `file:///` with `[sinks.object_storage]`: the object storage
//! export destination's settings and their validation.

use std::time::Duration;

use serde::Deserialize;

use super::ObjectExport;
use crate::config::{StorageKind, StorageOptions};
use crate::sinks::definition::{DestinationProblem, SinkConfig, duration_text};
use crate::sinks::registry::{Destination, section};
use crate::sinks::{BuildContext, Sink, SinkError, SinkFuture};

pub const DEFAULT_EXPORT_WINDOW: Duration = Duration::from_secs(300);
pub const DEFAULT_EXPORT_MAX_RECORDS: usize = 500_000;

/// Object storage export settings (`[sinks.object_storage]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectExportConfig {
    /// object_store options of the destination's backend (as `storage.options`; values of
    /// secret-looking keys are redacted when printed).
    pub options: StorageOptions,
    /// Records are gathered this long, then written as one file per hour partition.
    #[serde(with = "duration_text")]
    pub window: Duration,
    /// Files are written early when this many records are gathered.
    pub max_records: usize,
}

impl Default for ObjectExportConfig {
    fn default() -> Self {
        ObjectExportConfig {
            options: StorageOptions::default(),
            window: DEFAULT_EXPORT_WINDOW,
            max_records: DEFAULT_EXPORT_MAX_RECORDS,
        }
    }
}

impl ObjectExportConfig {
    /// Problems of the settings; option names are checked against `kind`'s backend when known.
    fn problems(&self, kind: Option<StorageKind>) -> Vec<DestinationProblem> {
        let mut p = Vec::new();
        if self.window < Duration::from_secs(1) {
            p.push((
                "object_storage.window".to_owned(),
                "must be at least 1s".to_owned(),
            ));
        }
        if self.max_records == 0 {
            p.push((
                "object_storage.max_records".to_owned(),
                "must be positive".to_owned(),
            ));
        }
        if let Some(kind) = kind {
            for key in self.options.0.keys() {
                if !kind.accepts_option(key) {
                    p.push((
                        format!("object_storage.options.{key}"),
                        format!("not an option of the {kind:?} backend"),
                    ));
                }
            }
        }
        p
    }
}

/// An object storage destination: its URL, backend and export settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectDestination {
    pub url: String,
    pub kind: StorageKind,
    pub settings: ObjectExportConfig,
}

impl Destination for ObjectDestination {
    const SECTION: &'static str = "object_storage";
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
        let settings = match section::<ObjectExportConfig>(Self::SECTION, section_value) {
            Ok(s) => {
                problems.extend(s.problems(kind));
                Some(s)
            }
            Err(p) => {
                problems.extend(p);
                None
            }
        };
        match (kind, settings) {
            (Some(kind), Some(settings)) if problems.is_empty() => Ok(ObjectDestination {
                url: url.to_owned(),
                kind,
                settings,
            }),
            _ => Err(problems),
        }
    }

    fn check_section(value: toml::Value) -> Vec<DestinationProblem> {
        match section::<ObjectExportConfig>(Self::SECTION, Some(value)) {
            Ok(s) => s.problems(None),
            Err(p) => p,
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
