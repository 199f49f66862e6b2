//! `s3://`, `gs://`, `az://` and `file:///` with `[sinks.object_storage]`: the object storage
//! export destination's settings and their validation.

use std::time::Duration;

use serde::Deserialize;

use crate::config::values::{StorageKind, StorageOptions};
use crate::sinks::definition::duration_text;
use crate::sinks::destination::{DestinationProblem, Settings};

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

impl Settings for ObjectExportConfig {
    fn problems(&self) -> Vec<DestinationProblem> {
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
        p
    }
}

impl ObjectExportConfig {
    /// Options that are not object_store options of `kind`'s backend.
    pub(super) fn foreign_options(&self, kind: StorageKind) -> Vec<DestinationProblem> {
        self.options
            .0
            .keys()
            .filter(|key| !kind.accepts_option(key))
            .map(|key| {
                (
                    format!("object_storage.options.{key}"),
                    format!("not an option of the {kind:?} backend"),
                )
            })
            .collect()
    }
}
