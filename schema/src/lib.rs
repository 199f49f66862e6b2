//! Verdict's contracts (docs/design.md, Contracts 1–4), shared by every other crate.
//!
//! - [`record`]: the GKE policy-action flow record, byte-compatible with GKE's JSON.
//! - [`timestamp`]: RFC 3339 timestamps with nanosecond precision (any number of digits on input).
//! - [`log_entry`]: the Cloud Logging-like LogEntry envelope and the stable `insertId`.
//! - [`flat_schema`]: the flat Arrow schema of stored entries and LogEntry ⇄ RecordBatch.
//! - [`flat_loss_schema`]: the same for stored loss markers (`policy-action-loss`).
//! - [`proto`]: protobuf messages and the tonic service of the node → collector stream.
//! - [`loss_marker`]: what a node dropped instead of logging (`policy_action_loss.log`).
//! - [`network_logging`]: the GKE `NetworkLogging` object and its validation.
//!
//! schema/README.md documents every field and column.

pub mod flat_loss_schema;
pub mod flat_schema;
pub mod log_entry;
pub mod loss_marker;
pub mod network_logging;
pub mod proto;
pub mod record;
pub mod timestamp;

pub use log_entry::{LogEntry, LossLogEntry, NodeIdentity, Severity};
pub use loss_marker::{LossMarker, LossReason};
pub use network_logging::{ClusterLogging, LogAction, NetworkLogging, NetworkLoggingError};
pub use record::{
    Connection, Direction, Disposition, Endpoint, Enforcement, PodEndpoint, PolicyActionRecord,
    PolicyRef, Protocol,
};
pub use timestamp::Timestamp;
