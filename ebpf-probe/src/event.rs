//! Verdict events: "a new connection was decided", the one type every datapath (userspace or
//! kernel) produces and the logging pipeline consumes.
//!
//! An event refers to the policy generation its datapath decided with; the pipeline judges
//! logging and attributes endpoints with that same generation (cluster state at the time of the
//! event), so a late event is never attributed to a pod that got the IP afterwards.

use std::net::IpAddr;

use verdict_policy::engine::{EnforcementMode, PolicyId, Reason};
use verdict_schema::{Direction, Protocol, Timestamp};

/// One direction of one new connection, as decided by a datapath.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictEvent {
    /// When the connection's first packet was seen.
    pub timestamp: Timestamp,
    /// The policy generation the decision used (see [`verdict_cluster::snapshot`]).
    pub generation: u64,
    pub src_ip: IpAddr,
    pub dest_ip: IpAddr,
    pub src_port: u16,
    pub dest_port: u16,
    pub protocol: Protocol,
    /// Egress: decided on the source pod; ingress: on the destination pod.
    pub direction: Direction,
    /// What policy decided (in audit mode the traffic passed anyway).
    pub allowed: bool,
    pub reason: Reason,
    /// Whether a policy isolates the enforced pod in this direction.
    pub isolated: bool,
    /// Ids, in the generation's engine, of every policy that allowed the connection.
    pub allowing: Vec<PolicyId>,
    pub enforcement: EnforcementMode,
}
