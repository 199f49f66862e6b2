//! The GKE logging decision (docs/design.md, "Logging semantics (GKE Dataplane V2)"): given a
//! side's verdict and the NetworkLogging in force, is a record written, and with which `policies`;
//! and the record itself.
//!
//! - allow: logged only when the pod is isolated and a policy (or the node-local rule) allowed it,
//!   and `allow.log`; with `allow.delegate`, only if an allowing policy carries
//!   `policy.network.gke.io/enable-logging: "true"`, listing only those. Kubelet traffic from the
//!   pod's own node is logged with `policies: [{"name": ""}]`, and never under delegate (no policy
//!   can carry the annotation).
//! - deny: logged when `deny.log`; with `deny.delegate` only if the enforced pod's namespace
//!   carries `policy.network.gke.io/enable-deny-logging: "true"`. Deny records have no
//!   `policies`.
//! - a pod talking to itself is never seen by the datapath and never logged.

use verdict_schema::{Connection, Disposition, Endpoint, PolicyActionRecord, PolicyRef, Timestamp};

use crate::engine::{EndpointKind, Engine, Flow, Reason, ResolvedEndpoint, SideVerdict};

/// Whether a side is logged, and the `policies` its record carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogDecision {
    NotLogged,
    /// Logged; `policies` is `Some` for allow records, `None` for deny records.
    Logged {
        disposition: Disposition,
        policies: Option<Vec<PolicyRef>>,
    },
}

impl LogDecision {
    pub fn is_logged(&self) -> bool {
        matches!(self, LogDecision::Logged { .. })
    }
}

impl Engine {
    /// The logging decision for one side of a connection.
    pub fn log_decision(&self, side: &SideVerdict) -> LogDecision {
        let logging = self.logging();
        let Some(pod) = side.enforced_pod else {
            return LogDecision::NotLogged;
        };
        if !side.allowed {
            let ns = self.namespace(self.pod(pod).namespace);
            let logged = logging.deny.log && (!logging.deny.delegate || ns.deny_logging);
            return if logged {
                LogDecision::Logged {
                    disposition: Disposition::Deny,
                    policies: None,
                }
            } else {
                LogDecision::NotLogged
            };
        }
        if !logging.allow.log || !side.isolated {
            return LogDecision::NotLogged;
        }
        let policies: Vec<PolicyRef> = match side.reason {
            Reason::NodeLocal if !logging.allow.delegate => vec![PolicyRef::node_local()],
            Reason::AllowedByPolicy => side
                .allowing
                .iter()
                .map(|&id| self.policy(id))
                .filter(|p| !logging.allow.delegate || p.logging_enabled)
                .map(|p| p.policy_ref())
                .collect(),
            _ => Vec::new(),
        };
        if policies.is_empty() {
            LogDecision::NotLogged
        } else {
            LogDecision::Logged {
                disposition: Disposition::Allow,
                policies: Some(policies),
            }
        }
    }

    /// A side of a connection as it appears in records: pod metadata, or `{instance: IP}`.
    pub fn record_endpoint(&self, e: ResolvedEndpoint) -> Endpoint {
        match e.kind {
            EndpointKind::Pod(p) => Endpoint::Pod(self.pod(p).endpoint.clone()),
            EndpointKind::Node(_) | EndpointKind::External => Endpoint::Instance { instance: e.ip },
        }
    }

    /// The policy-action record for one attempt of a logged side (`count` 1), or None.
    pub fn record(
        &self,
        flow: &Flow,
        src_port: u16,
        side: &SideVerdict,
        timestamp: Timestamp,
    ) -> Option<PolicyActionRecord> {
        let LogDecision::Logged {
            disposition,
            policies,
        } = self.log_decision(side)
        else {
            return None;
        };
        let pod = side.enforced_pod?;
        Some(PolicyActionRecord {
            connection: Connection {
                src_ip: flow.src.ip,
                dest_ip: flow.dest.ip,
                src_port,
                dest_port: flow.dest_port,
                protocol: flow.protocol.clone(),
                direction: side.direction,
            },
            disposition,
            policies,
            src: self.record_endpoint(flow.src),
            dest: self.record_endpoint(flow.dest),
            count: 1,
            node_name: self.pod(pod).node_name.clone().unwrap_or_default(),
            timestamp,
            enforcement: None,
        })
    }
}
