//! `verdict-probe`, the node agent: datapaths decide connections and emit verdict events; the
//! logging pipeline turns them into exactly what GKE Dataplane V2 writes to
//! `/var/log/network/policy_action.log`.
//!
//! - [`event`]: the verdict event every datapath produces.
//! - [`datapath`]: the [`datapath::Datapath`] trait and the userspace datapath.
//! - [`pipeline`]: logging decision, enrichment, deny aggregation, rate limit, loss markers.
//! - [`aggregation`], [`rate_limit`]: the two bounded stages of the pipeline.
//! - [`log_writer`]: the writer thread and GKE's rotation (10 MB, 5 kept).
//! - [`metrics`]: `policy_logging_*` counters on `:9990/metrics`.
//! - [`agent`]: the pipeline, the writer and the cluster-state watcher wired together, with
//!   clean shutdown.
//! - [`node`]: the agent as a service: [`node::Node`] start/run with a datapath and the metrics
//!   endpoint, and [`node::run`].
//! - [`clock`]: wall time that follows tokio's (pausable) clock.
//! - [`synthetic`]: a synthetic cluster and traffic mix for benchmarks.
//! - [`lab`]: network namespaces plugged like a routed CNI's pods (kernel tests, `verdict demo`).

pub mod agent;
pub mod aggregation;
pub mod clock;
pub mod datapath;
pub mod event;
pub mod kernel;
pub mod lab;
pub mod log_writer;
pub mod metrics;
pub mod node;
pub mod pipeline;
pub mod rate_limit;
pub mod synthetic;
