//! Errors of the policy crate.

use std::fmt;
use std::path::PathBuf;

/// A manifest that cannot be used, with where it is: file, line and column (1-based) of the
/// offending field when known, and the object it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// `Kind namespace/name` of the object, when known.
    pub object: Option<String>,
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        if let Some(obj) = &self.object {
            write!(f, ": {obj}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Errors building or querying the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid NetworkLogging: {0}")]
    NetworkLogging(#[from] verdict_schema::NetworkLoggingError),
    #[error("unknown namespace {0:?}")]
    UnknownNamespace(String),
    #[error("unknown pod {namespace}/{name}")]
    UnknownPod { namespace: String, name: String },
    #[error("unknown node {0:?}")]
    UnknownNode(String),
    #[error("{0}")]
    Endpoint(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
