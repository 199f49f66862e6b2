//! The Kubernetes NetworkPolicy engine of Verdict: no BPF or OS dependencies, so the CLI, the
//! node agent and the collector share one implementation of the semantics.
//!
//! - [`model`]: the Kubernetes objects (Namespace, Pod, Node, Service, NetworkPolicy) with the API
//!   server's validation of policies.
//! - [`labels`]: label selectors and their compiled form.
//! - [`cluster`]: a snapshot of cluster state.
//! - [`manifests`]: loading cluster state from a folder of YAML, with file/line errors.
//! - [`engine`]: the compiled engine and its verdicts (isolation, verdict, allowing policies).
//! - [`logging`]: the GKE logging decision and the policy-action record of a verdict.
//! - [`endpoint_spec`]: `NS/POD`, `ip:ADDR`, `node:NODE` and their resolution to addresses.
//! - [`dataplane_v2`]: warnings about forms GKE Dataplane V2 rejects.
//! - [`explain`]: readable explanations and the smallest change that allows a connection.
//! - [`synthetic`]: generated clusters for benchmarks.

pub mod cluster;
pub mod dataplane_v2;
pub mod endpoint_spec;
pub mod engine;
pub mod error;
pub mod explain;
pub mod labels;
pub mod logging;
pub mod manifests;
pub mod model;
pub mod synthetic;

pub use cluster::ClusterState;
pub use endpoint_spec::EndpointSpec;
pub use engine::{Engine, Flow, IpBlockMode, Reason, SideVerdict, Verdict};
pub use error::{Error, ManifestError, Result};
pub use logging::LogDecision;
