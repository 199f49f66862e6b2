//! The GKE `NetworkLogging` object (`networking.gke.io/v1alpha1`, cluster-scoped, name `default`)
//! and GKE's validation. An invalid object never takes effect: the caller keeps the previous valid
//! configuration and reports [`NetworkLoggingError`], whose text is GKE's.

use serde::{Deserialize, Serialize};

pub const API_VERSION: &str = "networking.gke.io/v1alpha1";
pub const KIND: &str = "NetworkLogging";
/// The only name GKE accepts (one object per cluster; it can't be renamed).
pub const NAME: &str = "default";

/// Per-policy annotation that opts an allowing policy into logging under `allow.delegate`.
pub const ENABLE_LOGGING_ANNOTATION: &str = "policy.network.gke.io/enable-logging";
/// Per-namespace annotation that opts its pods' denies into logging under `deny.delegate`.
pub const ENABLE_DENY_LOGGING_ANNOTATION: &str = "policy.network.gke.io/enable-deny-logging";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkLogging {
    pub api_version: String,
    pub kind: String,
    pub metadata: NetworkLoggingMetadata,
    #[serde(default)]
    pub spec: NetworkLoggingSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NetworkLoggingMetadata {
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkLoggingSpec {
    #[serde(default)]
    pub cluster: ClusterLogging,
}

/// `spec.cluster`: settings for allowed and denied connections. The default logs nothing, as
/// the object GKE creates in a new cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterLogging {
    #[serde(default)]
    pub allow: LogAction,
    #[serde(default)]
    pub deny: LogAction,
}

/// `log`: write records of this disposition. `delegate`: only for policies (allow) or
/// namespaces (deny) that carry the opt-in annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogAction {
    #[serde(default)]
    pub log: bool,
    #[serde(default)]
    pub delegate: bool,
}

/// Every problem with a NetworkLogging object, in GKE's words, joined by "; ".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.join("; "))]
pub struct NetworkLoggingError {
    pub problems: Vec<String>,
}

impl NetworkLogging {
    /// A valid object with the given cluster settings.
    pub fn new(cluster: ClusterLogging) -> Self {
        NetworkLogging {
            api_version: API_VERSION.to_owned(),
            kind: KIND.to_owned(),
            metadata: NetworkLoggingMetadata {
                name: NAME.to_owned(),
            },
            spec: NetworkLoggingSpec { cluster },
        }
    }

    /// GKE's validation. The allow/deny message is GKE's exact text, e.g.
    /// `cluster allow log action is invalid: delegate cannot be true when log is false`.
    pub fn validate(&self) -> Result<(), NetworkLoggingError> {
        let mut problems = Vec::new();
        if self.api_version != API_VERSION {
            problems.push(format!(
                "apiVersion must be {API_VERSION:?}, got {:?}",
                self.api_version
            ));
        }
        if self.metadata.name != NAME {
            problems.push(format!(
                "NetworkLogging must be named {NAME:?} (there is one per cluster), got {:?}",
                self.metadata.name
            ));
        }
        for (which, action) in [
            ("allow", self.spec.cluster.allow),
            ("deny", self.spec.cluster.deny),
        ] {
            if action.delegate && !action.log {
                problems.push(format!(
                    "cluster {which} log action is invalid: delegate cannot be true when log is false"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(NetworkLoggingError { problems })
        }
    }
}

/// Whether an annotation value opts in. GKE documents the value `"true"`; we accept exactly
/// that (case-sensitive), so `"True"` or `"yes"` do not silently enable logging.
pub fn annotation_enabled(value: Option<&str>) -> bool {
    value == Some("true")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(allow: LogAction, deny: LogAction) -> NetworkLogging {
        NetworkLogging::new(ClusterLogging { allow, deny })
    }

    #[test]
    fn gke_error_text_for_delegate_without_log() {
        let nl = with(
            LogAction {
                log: false,
                delegate: true,
            },
            LogAction::default(),
        );
        assert_eq!(
            nl.validate().unwrap_err().to_string(),
            "cluster allow log action is invalid: delegate cannot be true when log is false"
        );
        let nl = with(
            LogAction::default(),
            LogAction {
                log: false,
                delegate: true,
            },
        );
        assert_eq!(
            nl.validate().unwrap_err().to_string(),
            "cluster deny log action is invalid: delegate cannot be true when log is false"
        );
    }

    #[test]
    fn every_valid_combination_validates() {
        for log in [false, true] {
            for delegate in [false, true] {
                if delegate && !log {
                    continue;
                }
                let a = LogAction { log, delegate };
                assert!(with(a, a).validate().is_ok());
            }
        }
    }

    #[test]
    fn name_must_be_default() {
        let mut nl = NetworkLogging::new(ClusterLogging::default());
        nl.metadata.name = "other".into();
        assert!(
            nl.validate()
                .unwrap_err()
                .to_string()
                .contains("must be named \"default\"")
        );
    }

    #[test]
    fn seed_yaml_shape_parses() {
        let json = r#"{"kind":"NetworkLogging","apiVersion":"networking.gke.io/v1alpha1",
            "metadata":{"name":"default"},
            "spec":{"cluster":{"allow":{"log":true,"delegate":false},"deny":{"log":true,"delegate":false}}}}"#;
        let nl: NetworkLogging = serde_json::from_str(json).unwrap();
        assert!(nl.validate().is_ok());
        assert!(nl.spec.cluster.allow.log && nl.spec.cluster.deny.log);
    }
}
