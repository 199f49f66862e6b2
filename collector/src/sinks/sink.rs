//! What a destination is to the runner: the [`Sink`] trait its client implements, what it
//! reports ([`Refused`], [`SinkError`]), and what it may use when built ([`BuildContext`]).

use std::fmt::{self, Write as _};
use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use super::route::Routed;
use crate::config::sections::ParquetConfig;

/// A boxed future returned by [`Sink`] methods (the trait is used as `dyn Sink`).
pub type SinkFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A destination. The runner hands it filtered records in log order and moves the sink's
/// cursor once they are delivered; implementations only talk to their destination.
pub trait Sink: Send + fmt::Debug {
    /// Sends `records`. `Ok` lists the records the destination refused (by index into
    /// `records`); all others are delivered — or, for a sink that gathers records
    /// ([`flush_due`](Self::flush_due) is `Some`), held until [`flush`](Self::flush).
    /// `Err` means nothing can be said about the batch (the destination is unreachable): the
    /// runner sends it all again later.
    fn send<'a>(
        &'a mut self,
        records: &'a [&'a Routed],
    ) -> SinkFuture<'a, Result<Vec<Refused>, SinkError>>;

    /// Delivers every held record (object storage: writes the files). Streaming sinks hold
    /// nothing.
    fn flush(&mut self) -> SinkFuture<'_, Result<(), SinkError>> {
        Box::pin(async { Ok(()) })
    }

    /// When held records must be flushed; `None` when nothing is held.
    fn flush_due(&self) -> Option<Instant> {
        None
    }

    /// Whether the client is unusable after an error (e.g. a fenced Kafka producer) and must be
    /// built anew before retrying.
    fn broken(&self) -> bool {
        false
    }
}

/// A record the destination refused.
#[derive(Debug, Clone)]
pub struct Refused {
    /// Index into the records given to [`Sink::send`].
    pub index: usize,
    /// Refused for good (too large, invalid): dead-lettered at once. Otherwise retried up to
    /// `delivery.max_attempts`.
    pub permanent: bool,
    pub error: String,
}

/// Why a sink could not deliver.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The destination cannot be reached or refuses the whole batch for now: retry later.
    #[error("{message}")]
    Unavailable {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The sink cannot work as defined (a setting the destination refuses): it is stopped and
    /// reported; the other sinks keep running.
    #[error("{message}")]
    Definition {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl SinkError {
    pub fn unavailable(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        SinkError::Unavailable {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    pub fn definition(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        SinkError::Definition {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// The message with its causes.
    pub fn chain(&self) -> String {
        let mut s = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            let _ = write!(s, ": {c}");
            cause = c.source();
        }
        s
    }
}

/// What every destination may use when it is built.
#[derive(Debug, Clone)]
pub struct BuildContext {
    pub parquet: ParquetConfig,
}
