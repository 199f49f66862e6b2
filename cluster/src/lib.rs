//! `verdict-cluster`: cluster state for the parts that enforce or name things — the node agent
//! (`verdict-probe`), the shipper's iptables source and the CLI — without linking any of them to
//! a kernel loader, a query engine or a Kafka client.
//!
//! - [`source`]: the [`ClusterSource`] trait (a consistent state, then a new state per change)
//!   and [`ManifestDirSource`], a watched folder of manifests.
//! - [`choice`]: [`StateSource`], the configured source, and [`StateArgs`], its flags.
//! - [`api`]: the same over the Kubernetes API server ([`api::ApiSource`]), the NetworkLogging
//!   custom resource, and Events.
//! - [`compiler`]: [`PolicyCompiler`], states → numbered [`PolicySnapshot`]s, keeping the last
//!   valid NetworkLogging in force.
//! - [`snapshot`]: [`PolicySnapshot`] and [`Generations`], the current generation plus the
//!   superseded ones kept for late events.

pub mod api;
pub mod choice;
pub mod compiler;
#[cfg(feature = "fake-apiserver")]
pub mod fake_apiserver;
pub mod snapshot;
pub mod source;

pub use choice::{OpenSource, StateArgs, StateSource};
pub use compiler::{Compiled, PolicyCompiler};
pub use snapshot::{Generations, PolicySnapshot};
pub use source::{ClusterSource, ManifestDirSource, SourceError, StateUpdate};
