//! `verdict-shipper`, the node shipper: it tails node-local logs (`policy_action.log`, the loss
//! markers in `policy_action_loss.log`, and iptables LOG lines of dropped packets), streams them in
//! batches over gRPC to the collector (docs/design.md, "Contract 3: node to collector") and
//! checkpoints only positions the collector acknowledged, so every record reaches the collector at
//! least once and, through its per-source watermarks, is stored exactly once.
//!
//! - [`tailer`]: one log file followed across rename and copy-truncate rotations, lines with
//!   their source (file generation) and sequence (byte offset), checkpoints.
//! - [`input`]: inputs (the two probe logs), sources, positions and checkpoint files.
//! - [`iptables_log`]: parsing iptables LOG lines (syslog and `/dev/kmsg`).
//! - [`iptables_input`]: the kube-iptables-tailer source: drops → deny records (+ Events).
//! - [`pod_directory`]: IP → pod / Service / node from cluster state; cached reverse DNS.
//! - [`k8s_events`]: `PacketDrop` Events posted to the Kubernetes API, rate limited.
//! - [`collector_client`]: the gRPC channel and stream, reconnection backoff with jitter.
//! - [`ship`]: the per-input loop: read, batch, send, acknowledge, checkpoint.
//! - [`metrics`]: Prometheus counters and gauges on `:9991/metrics`.
//! - [`config`], [`error`]: configuration with defaults; the crate's errors.
//! - [`shipper`]: [`Shipper::start`] and the [`ShipperHandle`] (in-process use, shutdown).

pub mod collector_client;
pub mod config;
pub mod error;
pub mod input;
pub mod iptables_input;
pub mod iptables_log;
pub mod k8s_events;
pub mod metrics;
pub mod pod_directory;
pub mod ship;
pub mod shipper;
pub mod tailer;

pub use config::Config;
pub use error::{Error, Result};
pub use shipper::{Listeners, Shipper, ShipperHandle, run};
