//! Datapaths decide connections and produce [`VerdictEvent`]s. The kernel datapath (eBPF) and the
//! userspace datapath here share the [`Datapath`] trait and feed the same logging pipeline.
//!
//! The userspace datapath judges connection attempts (from a traffic generator or a JSON-lines
//! file) with the policy engine — for machines without eBPF, for tests and for the demo:
//! - TCP and SCTP: every attempt is a new connection, decided once;
//! - UDP, ICMP and the rest: packets of one 5-tuple form one connection until it has been idle
//!   for the idle window (default 30 s); only its first packet is decided and produces events, and
//!   later packets get the same verdict;
//! - egress is decided on the source pod, then (if the packet got out) ingress on the
//!   destination pod; only pods on this node produce events (all pods if no node is set);
//! - audit mode (global, or `verdict.dev/enforcement` on the pod's namespace) never drops.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use verdict_policy::engine::{EnforcementMode, Flow, Reason};
use verdict_schema::{Protocol, Timestamp};

use crate::event::VerdictEvent;
use verdict_cluster::PolicySnapshot;

/// Idle time after which a UDP/ICMP 5-tuple starts a new connection.
pub const DEFAULT_IDLE_WINDOW: Duration = Duration::from_secs(30);

/// A source of verdict events that enforces a policy generation.
pub trait Datapath: Send {
    /// `userspace` or `ebpf`.
    fn name(&self) -> &'static str;
    /// Enforces `snapshot` from now on. Established connections keep their verdict.
    fn install(&mut self, snapshot: Arc<PolicySnapshot>);
}

/// One connection attempt (or packet, for UDP/ICMP) given to the userspace datapath.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attempt {
    pub src_ip: IpAddr,
    pub dest_ip: IpAddr,
    #[serde(default)]
    pub src_port: u16,
    #[serde(default)]
    pub dest_port: u16,
    pub protocol: Protocol,
    /// When it happened; default: now.
    #[serde(default)]
    pub timestamp: Option<Timestamp>,
}

/// What happened to an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// The traffic reached its destination (allowed, or denied in audit mode).
    pub delivered: bool,
    /// It started a new connection (and was decided); false for later packets of a UDP flow.
    pub new_connection: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FiveTuple {
    src_ip: IpAddr,
    dest_ip: IpAddr,
    src_port: u16,
    dest_port: u16,
    protocol: Protocol,
}

#[derive(Debug, Clone, Copy)]
struct Tracked {
    last_seen: i64,
    delivered: bool,
}

#[derive(Debug)]
pub struct UserspaceDatapath {
    snapshot: Arc<PolicySnapshot>,
    local_node: Option<String>,
    default_mode: EnforcementMode,
    idle_nanos: i64,
    flows: HashMap<FiveTuple, Tracked>,
}

/// Flows tracked before idle ones are swept.
const SWEEP_AT: usize = 65_536;

impl UserspaceDatapath {
    pub fn new(
        snapshot: Arc<PolicySnapshot>,
        local_node: Option<String>,
        default_mode: EnforcementMode,
        idle_window: Duration,
    ) -> Self {
        UserspaceDatapath {
            snapshot,
            local_node,
            default_mode,
            idle_nanos: i64::try_from(idle_window.as_nanos()).unwrap_or(i64::MAX),
            flows: HashMap::new(),
        }
    }

    /// Decides `attempt` (at its timestamp, else `now`) and appends the events it produces.
    pub fn process(
        &mut self,
        attempt: &Attempt,
        now: Timestamp,
        events: &mut Vec<VerdictEvent>,
    ) -> Delivery {
        let ts = attempt.timestamp.unwrap_or(now);
        let windowed = !attempt.protocol.is_connection_oriented();
        let key = FiveTuple {
            src_ip: attempt.src_ip,
            dest_ip: attempt.dest_ip,
            src_port: attempt.src_port,
            dest_port: attempt.dest_port,
            protocol: attempt.protocol.clone(),
        };
        if windowed
            && let Some(t) = self.flows.get_mut(&key)
            && ts.unix_nanos() - t.last_seen < self.idle_nanos
        {
            t.last_seen = t.last_seen.max(ts.unix_nanos());
            return Delivery {
                delivered: t.delivered,
                new_connection: false,
            };
        }
        let engine = &self.snapshot.engine;
        let flow = Flow {
            src: engine.resolve_ip(attempt.src_ip),
            dest: engine.resolve_ip(attempt.dest_ip),
            protocol: attempt.protocol.clone(),
            dest_port: attempt.dest_port,
        };
        let verdict = engine.evaluate(&flow);
        let mut delivered = true;
        for side in [verdict.egress, verdict.ingress] {
            let Some(pod) = side.enforced_pod else {
                continue;
            };
            if !delivered {
                break; // dropped on the way out: the destination never sees it
            }
            if side.reason == Reason::SamePod {
                continue; // never leaves the pod's network namespace
            }
            let mode = engine.enforcement_mode(pod, self.default_mode);
            let on_this_node = self
                .local_node
                .as_ref()
                .is_none_or(|n| engine.pod(pod).node_name.as_ref() == Some(n));
            if !side.allowed && mode == EnforcementMode::Enforce {
                delivered = false;
            }
            if on_this_node {
                events.push(VerdictEvent {
                    timestamp: ts,
                    generation: self.snapshot.generation,
                    src_ip: attempt.src_ip,
                    dest_ip: attempt.dest_ip,
                    src_port: attempt.src_port,
                    dest_port: attempt.dest_port,
                    protocol: attempt.protocol.clone(),
                    direction: side.direction,
                    allowed: side.allowed,
                    reason: side.reason,
                    isolated: side.isolated,
                    allowing: side.allowing,
                    enforcement: mode,
                });
            }
        }
        if windowed {
            if self.flows.len() >= SWEEP_AT {
                let horizon = ts.unix_nanos() - self.idle_nanos;
                self.flows.retain(|_, t| t.last_seen > horizon);
            }
            self.flows.insert(
                key,
                Tracked {
                    last_seen: ts.unix_nanos(),
                    delivered,
                },
            );
        }
        Delivery {
            delivered,
            new_connection: true,
        }
    }
}

impl Datapath for UserspaceDatapath {
    fn name(&self) -> &'static str {
        "userspace"
    }

    fn install(&mut self, snapshot: Arc<PolicySnapshot>) {
        self.snapshot = snapshot;
    }
}
