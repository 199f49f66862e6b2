//! The collector's errors. Each variant keeps its cause (`source()`), and says what was being
//! done, so a log line or a start-up failure tells the operator what to fix.

use std::path::PathBuf;

use crate::config::values::ConfigErrors;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid (every problem is listed).
    #[error(transparent)]
    Config(#[from] ConfigErrors),

    /// A setting that validated but turned out unusable at start (a directory that cannot be
    /// written, a storage bucket that cannot be reached, a certificate that does not parse).
    #[error("{setting}: {message}")]
    Setting {
        setting: String,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("object storage: {context}: {source}")]
    ObjectStore {
        context: String,
        #[source]
        source: object_store::Error,
    },

    #[error("parquet: {context}: {source}")]
    Parquet {
        context: String,
        #[source]
        source: parquet::errors::ParquetError,
    },

    #[error("arrow: {context}: {source}")]
    Arrow {
        context: String,
        #[source]
        source: arrow_schema::ArrowError,
    },

    /// The write-ahead log is corrupt somewhere other than a torn tail.
    #[error("write-ahead log {path}: {message}")]
    WalCorrupt { path: PathBuf, message: String },

    /// The write-ahead log could not be written (a full or failing disk): the batch was not
    /// stored. The writer undoes the failed write and accepts batches again once it can write.
    #[error(
        "the write-ahead log could not be written ({0}); nothing of the batch was stored: send it again"
    )]
    WalFailed(String),

    /// The commit log (manifest) in object storage cannot be read.
    #[error("commit log {path}: {message}")]
    Manifest { path: String, message: String },

    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),

    /// The collector is shutting down.
    #[error("the collector is shutting down")]
    ShuttingDown,
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn store(context: impl Into<String>, source: object_store::Error) -> Self {
        Error::ObjectStore {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn parquet(
        context: impl Into<String>,
        source: parquet::errors::ParquetError,
    ) -> Self {
        Error::Parquet {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn arrow(context: impl Into<String>, source: arrow_schema::ArrowError) -> Self {
        Error::Arrow {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn setting(setting: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Setting {
            setting: setting.into(),
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn setting_caused(
        setting: impl Into<String>,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Setting {
            setting: setting.into(),
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// The gRPC status a client sees when this error ends its batch or stream. One place maps
    /// every kind, so equal failures always look equal on the wire.
    pub fn to_status(&self) -> tonic::Status {
        match self {
            Error::ShuttingDown => tonic::Status::unavailable(self.to_string()),
            Error::WalFailed(_) | Error::Io { .. } | Error::WalCorrupt { .. } => {
                tonic::Status::unavailable(format!("not durable: {self}"))
            }
            Error::Config(_) | Error::Setting { .. } => {
                tonic::Status::failed_precondition(self.to_string())
            }
            _ => tonic::Status::internal(self.to_string()),
        }
    }
}
