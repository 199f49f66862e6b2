//! The `NetworkLogging` custom resource (`networking.gke.io/v1alpha1`, cluster-scoped), as GKE
//! defines it: one object named `default` whose `spec.cluster.{allow,deny}.{log,delegate}` say
//! what is logged. The CustomResourceDefinition under `deploy/helm/verdict/crds/` is generated from this type
//! ([`definition_yaml`]); a test keeps the checked-in file equal to it.
//!
//! The agent reads the object as raw JSON and validates it with GKE's rules
//! ([`verdict_schema::NetworkLogging::validate`]), so an invalid object is reported, not
//! silently half-applied; this type only describes the schema and the status it writes.

use kube::CustomResource;
use kube::CustomResourceExt as _;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `spec` of a NetworkLogging.
#[derive(
    CustomResource, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "networking.gke.io",
    version = "v1alpha1",
    kind = "NetworkLogging",
    plural = "networkloggings",
    singular = "networklogging",
    status = "NetworkLoggingStatus",
    doc = "Network policy logging settings for the cluster (GKE's NetworkLogging); the one object named `default` is used"
)]
pub struct NetworkLoggingSpec {
    /// Settings for connections the cluster's policies allow and deny.
    #[serde(default)]
    pub cluster: ClusterLoggingSpec,
}

/// `spec.cluster`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterLoggingSpec {
    /// Allowed connections.
    #[serde(default)]
    pub allow: LogActionSpec,
    /// Denied connections.
    #[serde(default)]
    pub deny: LogActionSpec,
}

/// `log`: write records of this disposition. `delegate`: only for policies (allow) or namespaces
/// (deny) that carry the opt-in annotation; it cannot be true when `log` is false.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LogActionSpec {
    #[serde(default)]
    pub log: bool,
    #[serde(default)]
    pub delegate: bool,
}

/// What the agents report about the object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NetworkLoggingStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A status condition (`metav1.Condition`'s fields).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Valid`.
    #[serde(rename = "type")]
    pub condition_type: String,
    /// `True` or `False`.
    pub status: String,
    /// `InvalidNetworkLogging` or `Valid`.
    pub reason: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    pub last_transition_time: String,
}

/// The status condition type the agents set.
pub const VALID_CONDITION: &str = "Valid";

/// The CustomResourceDefinition, as YAML (what `deploy/helm/verdict/crds/networklogging.yaml` holds).
pub fn definition_yaml() -> String {
    let crd = NetworkLogging::crd();
    let body = serde_yaml::to_string(&crd).expect("a CRD serializes");
    format!(
        "# Generated from cluster/src/api/crd.rs (the NetworkLogging type); do not edit.\n\
         # Regenerate: UPDATE_CRDS=1 cargo test -p verdict-cluster --test crd\n{body}"
    )
}
