//! The demo's traffic: a scenario of flows (`examples/shop.traffic.yaml`) played as connection
//! attempts at steady rates, plus periodic port-scan bursts that make deny spikes.
//!
//! Scheduling is credit based and deterministic: each flow earns `per_minute / 60` attempts per
//! second of elapsed time and emits whole attempts as they are earned, so a run of N seconds
//! produces the same counts every time (only source ports differ), which the tests rely on.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;
use verdict_policy::{EndpointSpec, Engine, Flow};
use verdict_probe::datapath::Attempt;
use verdict_schema::Protocol;

/// What a flow is expected to get from the policies (checked against the engine by a test).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowSpec {
    pub src: String,
    pub dest: String,
    pub protocol: String,
    pub port: u16,
    pub per_minute: f64,
    pub expect: Expect,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BurstSpec {
    pub src: String,
    pub dest: String,
    pub protocol: String,
    pub first_port: u16,
    pub ports: u16,
    pub every_seconds: u64,
}

/// A traffic scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub flows: Vec<FlowSpec>,
    #[serde(default)]
    pub bursts: Vec<BurstSpec>,
}

/// A scenario problem, naming the flow (1-based, in file order) and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{origin}: {source}")]
    Syntax {
        origin: String,
        source: serde_yaml::Error,
    },
    #[error("{origin}: {what} {index}: {message}")]
    Entry {
        origin: String,
        what: &'static str,
        index: usize,
        message: String,
    },
}

/// A flow with its endpoints resolved to addresses.
#[derive(Debug, Clone)]
pub struct ResolvedFlow {
    pub spec: FlowSpec,
    pub src_ip: IpAddr,
    pub dest_ip: IpAddr,
    pub protocol: Protocol,
}

#[derive(Debug, Clone)]
struct ResolvedBurst {
    spec: BurstSpec,
    src_ip: IpAddr,
    dest_ip: IpAddr,
    protocol: Protocol,
}

impl Scenario {
    pub fn parse(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario =
            serde_yaml::from_str(text).map_err(|source| ScenarioError::Syntax {
                origin: origin.to_owned(),
                source,
            })?;
        for (i, f) in scenario.flows.iter().enumerate() {
            if !(f.per_minute.is_finite() && f.per_minute > 0.0) {
                return Err(ScenarioError::Entry {
                    origin: origin.to_owned(),
                    what: "flow",
                    index: i + 1,
                    message: format!("per_minute must be a positive number, not {}", f.per_minute),
                });
            }
        }
        for (i, b) in scenario.bursts.iter().enumerate() {
            if b.every_seconds == 0 || b.ports == 0 {
                return Err(ScenarioError::Entry {
                    origin: origin.to_owned(),
                    what: "burst",
                    index: i + 1,
                    message: "every_seconds and ports must be at least 1".into(),
                });
            }
        }
        Ok(scenario)
    }

    /// Resolves every endpoint against the cluster `engine` knows.
    pub fn resolve(
        &self,
        engine: &Engine,
        origin: &str,
    ) -> Result<(Vec<ResolvedFlow>, Vec<BurstPlan>), ScenarioError> {
        let entry_error = |what, index: usize, message: String| ScenarioError::Entry {
            origin: origin.to_owned(),
            what,
            index: index + 1,
            message,
        };
        let mut flows = Vec::new();
        for (i, f) in self.flows.iter().enumerate() {
            let (src_ip, dest_ip, protocol) =
                resolve_endpoints(engine, &f.src, &f.dest, &f.protocol)
                    .map_err(|m| entry_error("flow", i, m))?;
            flows.push(ResolvedFlow {
                spec: f.clone(),
                src_ip,
                dest_ip,
                protocol,
            });
        }
        let mut bursts = Vec::new();
        for (i, b) in self.bursts.iter().enumerate() {
            let (src_ip, dest_ip, protocol) =
                resolve_endpoints(engine, &b.src, &b.dest, &b.protocol)
                    .map_err(|m| entry_error("burst", i, m))?;
            bursts.push(BurstPlan(ResolvedBurst {
                spec: b.clone(),
                src_ip,
                dest_ip,
                protocol,
            }));
        }
        Ok((flows, bursts))
    }
}

/// A resolved burst (opaque: the generator plays it).
#[derive(Debug, Clone)]
pub struct BurstPlan(ResolvedBurst);

fn resolve_endpoints(
    engine: &Engine,
    src: &str,
    dest: &str,
    protocol: &str,
) -> Result<(IpAddr, IpAddr, Protocol), String> {
    let src = EndpointSpec::parse(src).map_err(|e| e.to_string())?;
    let dest = EndpointSpec::parse(dest).map_err(|e| e.to_string())?;
    let (s, d) = engine
        .resolve_pair(&src, &dest)
        .map_err(|e| e.to_string())?;
    let protocol: Protocol = protocol.parse().expect("infallible");
    if !matches!(protocol, Protocol::Tcp | Protocol::Udp | Protocol::Sctp) {
        return Err(format!(
            "protocol {:?}: the demo plays TCP, UDP or SCTP",
            protocol.as_str()
        ));
    }
    Ok((s.ip, d.ip, protocol))
}

impl ResolvedFlow {
    /// What the policies decide for this flow now.
    pub fn decide(&self, engine: &Engine) -> Expect {
        let flow = Flow {
            src: engine.resolve_ip(self.src_ip),
            dest: engine.resolve_ip(self.dest_ip),
            protocol: self.protocol.clone(),
            dest_port: self.spec.port,
        };
        if engine.evaluate(&flow).allowed() {
            Expect::Allow
        } else {
            Expect::Deny
        }
    }
}

/// Plays flows and bursts: call [`TrafficGenerator::advance`] with the elapsed time.
#[derive(Debug)]
pub struct TrafficGenerator {
    flows: Vec<ResolvedFlow>,
    bursts: Vec<BurstPlan>,
    credits: Vec<f64>,
    bursts_played: Vec<u64>,
    played_until: Duration,
    /// Multiplies every rate (1.0 = as written).
    speed: f64,
    next_src_port: u16,
}

/// The first burst comes this long after the start, so a new user sees a spike early.
pub const FIRST_BURST_AFTER: Duration = Duration::from_secs(10);

impl TrafficGenerator {
    pub fn new(flows: Vec<ResolvedFlow>, bursts: Vec<BurstPlan>, speed: f64) -> Self {
        TrafficGenerator {
            // Every flow plays once right away, so the first seconds already show each kind.
            credits: vec![1.0; flows.len()],
            bursts_played: vec![0; bursts.len()],
            flows,
            bursts,
            played_until: Duration::ZERO,
            speed: if speed.is_finite() && speed > 0.0 {
                speed
            } else {
                1.0
            },
            next_src_port: 32768,
        }
    }

    /// Every address the traffic uses, sources and destinations.
    pub fn addresses(&self) -> BTreeSet<IpAddr> {
        let flows = self.flows.iter().flat_map(|f| [f.src_ip, f.dest_ip]);
        let bursts = self
            .bursts
            .iter()
            .flat_map(|BurstPlan(b)| [b.src_ip, b.dest_ip]);
        flows.chain(bursts).collect()
    }

    /// Where the steady flows connect to: the servers to start.
    pub fn listeners(&self) -> BTreeSet<(IpAddr, u16, Protocol)> {
        self.flows
            .iter()
            .map(|f| (f.dest_ip, f.spec.port, f.protocol.clone()))
            .collect()
    }

    /// Appends the attempts due between the last call and `elapsed` (time since the start).
    pub fn advance(&mut self, elapsed: Duration, out: &mut Vec<Attempt>) {
        if elapsed <= self.played_until {
            return;
        }
        let dt = (elapsed - self.played_until).as_secs_f64();
        self.played_until = elapsed;
        for (i, flow) in self.flows.iter().enumerate() {
            self.credits[i] += flow.spec.per_minute / 60.0 * dt * self.speed;
            while self.credits[i] >= 1.0 {
                self.credits[i] -= 1.0;
                let src_port = next_port(&mut self.next_src_port);
                out.push(Attempt {
                    src_ip: flow.src_ip,
                    dest_ip: flow.dest_ip,
                    src_port,
                    dest_port: flow.spec.port,
                    protocol: flow.protocol.clone(),
                    timestamp: None,
                });
            }
        }
        for (i, BurstPlan(b)) in self.bursts.iter().enumerate() {
            let Some(since_first) = elapsed.checked_sub(FIRST_BURST_AFTER) else {
                continue;
            };
            let due = since_first.as_secs() / b.spec.every_seconds + 1;
            while self.bursts_played[i] < due {
                self.bursts_played[i] += 1;
                let src_port = next_port(&mut self.next_src_port);
                for k in 0..b.spec.ports {
                    out.push(Attempt {
                        src_ip: b.src_ip,
                        dest_ip: b.dest_ip,
                        src_port,
                        dest_port: b.spec.first_port.saturating_add(k),
                        protocol: b.protocol.clone(),
                        timestamp: None,
                    });
                }
            }
        }
    }
}

/// Ephemeral ports cycle through 32768–60999 (Linux's default range).
fn next_port(next: &mut u16) -> u16 {
    let port = *next;
    *next = if port >= 60999 { 32768 } else { port + 1 };
    port
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/shop");
    const SCENARIO: &str = include_str!("../../../examples/shop.traffic.yaml");

    fn shop() -> (Engine, Vec<ResolvedFlow>, Vec<BurstPlan>) {
        let loaded = verdict_policy::manifests::load_dir(std::path::Path::new(MANIFESTS))
            .expect("shop manifests load");
        let engine = Engine::build(&loaded.state, verdict_policy::IpBlockMode::DataplaneV2)
            .expect("shop engine");
        let scenario = Scenario::parse(SCENARIO, "shop.traffic.yaml").expect("scenario parses");
        let (flows, bursts) = scenario
            .resolve(&engine, "shop.traffic.yaml")
            .expect("scenario resolves");
        (engine, flows, bursts)
    }

    #[test]
    fn every_flow_gets_the_verdict_the_scenario_expects() {
        let (engine, flows, _) = shop();
        assert!(flows.iter().any(|f| f.spec.expect == Expect::Deny));
        assert!(flows.iter().any(|f| f.spec.expect == Expect::Allow));
        for f in &flows {
            assert_eq!(
                f.decide(&engine),
                f.spec.expect,
                "{} -> {} {}/{}",
                f.spec.src,
                f.spec.dest,
                f.spec.protocol,
                f.spec.port
            );
        }
    }

    #[test]
    fn rates_and_bursts_are_played_as_written() {
        let (_, flows, bursts) = shop();
        let per_minute: f64 = flows.iter().map(|f| f.spec.per_minute).sum();
        let burst_ports = 200;
        let n_flows = flows.len() as f64;
        let mut generator = TrafficGenerator::new(flows, bursts, 1.0);
        let mut out = Vec::new();
        // 60 s in uneven steps: the credit scheme must not lose or invent attempts.
        let mut t = Duration::ZERO;
        while t < Duration::from_secs(60) {
            t += Duration::from_millis(137);
            generator.advance(t.min(Duration::from_secs(60)), &mut out);
        }
        // Bursts at 10 s, 40 s (every 30 s from the first).
        let frontend: IpAddr = "10.84.0.10".parse().unwrap();
        let scans = out
            .iter()
            .filter(|a| a.dest_ip == frontend && a.dest_port <= burst_ports)
            .count();
        assert_eq!(scans, 2 * burst_ports as usize);
        let steady = out.len() - scans;
        // One attempt per flow at the start, then the rate; each flow may still hold less than
        // one attempt of credit (and float sums may round a whole attempt down by a hair).
        let expected = per_minute + n_flows;
        assert!(
            steady as f64 <= expected && steady as f64 > expected - n_flows - 1.0,
            "{steady} steady attempts in a minute, expected {expected}"
        );
    }

    #[test]
    fn a_bad_scenario_names_the_entry() {
        let err = Scenario::parse(
            "flows:\n- {src: a/b, dest: c/d, protocol: TCP, port: 1, per_minute: 0, expect: deny}\n",
            "t.yaml",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.yaml: flow 1: per_minute must be a positive number, not 0"
        );
        let (engine, _, _) = shop();
        let scenario = Scenario::parse(
            "flows:\n- {src: shop/nope, dest: shop/redis-0, protocol: TCP, port: 1, per_minute: 1, expect: deny}\n",
            "t.yaml",
        )
        .unwrap();
        let err = scenario.resolve(&engine, "t.yaml").unwrap_err().to_string();
        assert!(err.starts_with("t.yaml: flow 1: "), "{err}");
        assert!(err.contains("shop/nope") || err.contains("nope"), "{err}");
    }
}
