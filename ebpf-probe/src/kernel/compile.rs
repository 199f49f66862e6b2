//! Compiling the policy engine into the contents of the kernel's maps, and [`simulate`]: the
//! kernel's lookup written again in Rust, so tests can hold the compiled tables to the engine
//! without a kernel (the netns tests then hold the kernel to the same tables).
//!
//! Layout (see `bpf/verdict.h`):
//! - `endpoints`: every pod IP → its identity (pods of one namespace with equal labels and named
//!   ports are indistinguishable to any policy) and, for pods enforced on this node, a local id;
//!   this node's addresses are flagged host-local (kubelet probes).
//! - per enforced (local pod, direction) isolated by policies: the rules of all isolating policies
//!   flattened (one bit each, ≤ 2048 in chunks of 64; a rule with more than 8 ports is split),
//!   the policies they come from (≤ 512, the event's bits), and per chunk: `peer_masks` by peer
//!   identity (any-peer rules under [`ANY_PEER`]), and `cidr_masks` in an LPM trie: every ipBlock
//!   `cidr` and `except` of the chunk's rules is a stored prefix whose mask holds the rules whose
//!   block contains that prefix and no except of which does — so the longest stored prefix of an
//!   address gives exactly the rules whose ipBlock admits it.
//! - A (pod, direction) whose policies do not fit is compiled *fail closed*: isolated with no
//!   rules (every connection denied), and listed in [`Tables::failed`]; the other pods are not
//!   affected.
//! - Every (pod, direction) carries a table version; its peer/cidr entries are keyed by it and
//!   its rules live in their own range, so an update writes a new version beside the old one and
//!   switches the pod's entry in one map write: a packet never sees half an update.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;
use verdict_policy::Engine;
use verdict_policy::engine::{CompiledPeer, EnforcementMode, PodId, PortMatch};
use verdict_policy::model::PolicyProtocol;
use verdict_schema::Direction;

use super::abi::{
    ANY_PEER, Config, DIR_EGRESS, DIR_INGRESS, EP_HOST_LOCAL, EP_POD, EpKey, EpVal, MAX_POLICIES,
    MAX_PORTS, MAX_RULES, NamedKey, PD_AUDIT, PD_FAIL_CLOSED, PD_ISOLATED, POLICY_WORDS,
    PROTO_SCTP, PROTO_TCP, PROTO_UDP, PodDirKey, PodDirVal, PortRange, REASON_ALLOWED_BY_POLICY,
    REASON_NO_RULE_MATCHED, REASON_NODE_LOCAL, RULES_PER_CHUNK, Rule, ip_key,
};

/// What the compiler needs to know about this node.
#[derive(Debug, Clone)]
pub struct NodeContext {
    /// Pods with this `spec.nodeName` are enforced here.
    pub node_name: String,
    pub default_mode: EnforcementMode,
    /// UDP/ICMP idle window.
    pub idle_ns: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error(
        "pod {pod} ({direction}): {count} rules after splitting; the datapath holds at most {MAX_RULES} per pod and direction"
    )]
    TooManyRules {
        pod: String,
        direction: Direction,
        count: usize,
    },
    #[error(
        "pod {pod} ({direction}) is isolated by {count} policies; the datapath holds at most {MAX_POLICIES}"
    )]
    TooManyPolicies {
        pod: String,
        direction: Direction,
        count: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct IdentityKey {
    namespace: String,
    labels: Vec<(String, String)>,
    named_ports: Vec<(String, u8, u16)>,
}

/// Numbers that must stay stable across compiles (identities, local ids, names, versions).
#[derive(Debug, Default)]
pub struct Numbering {
    identities: HashMap<IdentityKey, u32>,
    local_ids: HashMap<(String, String), u32>,
    name_ids: HashMap<String, u32>,
    next_version: u64,
    /// Local ids a previous run gave to pod addresses (kept while those pods live).
    pinned_local_ids: HashMap<IpAddr, u32>,
    used_local_ids: HashSet<u32>,
    last_local_id: u32,
    /// Added to snapshot generations: the kernel's generation continues the previous run's.
    generation_base: u64,
}

impl Numbering {
    /// Continues a previous run's numbering (see `KernelMaps::resume`).
    pub fn resume(
        pinned_local_ids: HashMap<IpAddr, u32>,
        max_version: u64,
        generation: u64,
    ) -> Self {
        Numbering {
            last_local_id: pinned_local_ids.values().copied().max().unwrap_or(0),
            pinned_local_ids,
            next_version: max_version,
            generation_base: generation,
            ..Numbering::default()
        }
    }

    /// The kernel's generation for snapshot generation `generation`.
    pub fn kernel_generation(&self, generation: u64) -> u64 {
        self.generation_base + generation
    }

    fn identity(&mut self, key: IdentityKey) -> u32 {
        let n = self.identities.len() as u32 + 1;
        *self.identities.entry(key).or_insert(n)
    }

    fn local_id(&mut self, ns: &str, name: &str, ips: &[IpAddr]) -> u32 {
        let key = (ns.to_owned(), name.to_owned());
        if let Some(id) = self.local_ids.get(&key) {
            return *id;
        }
        let pinned = ips
            .iter()
            .find_map(|ip| self.pinned_local_ids.get(ip).copied())
            .filter(|id| !self.used_local_ids.contains(id));
        let id = pinned.unwrap_or_else(|| {
            self.last_local_id += 1;
            self.last_local_id
        });
        self.local_ids.insert(key, id);
        self.used_local_ids.insert(id);
        id
    }

    fn name_id(&mut self, name: &str) -> u32 {
        let n = self.name_ids.len() as u32 + 1;
        *self.name_ids.entry(name.to_owned()).or_insert(n)
    }
}

/// The tables of one enforced (pod, direction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDirTables {
    pub flags: u32,
    pub identity: u32,
    pub rules: Vec<Rule>,
    /// (peer identity or [`ANY_PEER`], chunk) → the chunk's rules selecting that peer.
    pub peer_masks: BTreeMap<(u32, u16), u64>,
    /// (chunk, prefix) → the chunk's rules whose ipBlock admits the prefix's addresses.
    pub cidr_masks: BTreeMap<(u16, IpNet), u64>,
    /// `(namespace, name)` of the policies; bit i of an event's mask is policies[i].
    pub policies: Vec<(String, String)>,
    /// Assigned by [`compile`]; unchanged while the content is unchanged.
    pub version: u64,
}

impl PodDirTables {
    /// Isolated, with no rules yet.
    fn isolated(identity: u32, flags: u32) -> Self {
        PodDirTables {
            flags: PD_ISOLATED | flags,
            identity,
            rules: Vec::new(),
            peer_masks: BTreeMap::new(),
            cidr_masks: BTreeMap::new(),
            policies: Vec::new(),
            version: 0,
        }
    }

    /// Isolated with nothing allowed: for a (pod, direction) whose policies cannot be held.
    pub fn fail_closed(identity: u32, mode: EnforcementMode) -> Self {
        Self::isolated(identity, PD_FAIL_CLOSED | mode_flags(mode))
    }

    fn same_content(&self, other: &PodDirTables) -> bool {
        PodDirTables {
            version: 0,
            ..self.clone()
        } == PodDirTables {
            version: 0,
            ..other.clone()
        }
    }
}

/// A pod enforced on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPod {
    pub namespace: String,
    pub name: String,
    pub ips: Vec<IpAddr>,
}

/// Everything the kernel maps should hold for one policy generation.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    pub generation: u64,
    pub config: Config,
    pub endpoints: BTreeMap<EpKey, EpVal>,
    pub pod_dirs: BTreeMap<PodDirKey, PodDirTables>,
    pub named_ports: BTreeMap<NamedKey, u32>,
    pub services: BTreeSet<EpKey>,
    pub local_pods: BTreeMap<u32, LocalPod>,
    /// (pod, direction)s compiled fail closed, with why.
    pub failed: Vec<CompileError>,
}

fn mode_flags(mode: EnforcementMode) -> u32 {
    if mode == EnforcementMode::Audit {
        PD_AUDIT
    } else {
        0
    }
}

fn proto_number(p: PolicyProtocol) -> u8 {
    match p {
        PolicyProtocol::Tcp => PROTO_TCP,
        PolicyProtocol::Udp => PROTO_UDP,
        PolicyProtocol::Sctp => PROTO_SCTP,
    }
}

fn dir_number(d: Direction) -> u32 {
    match d {
        Direction::Ingress => DIR_INGRESS,
        Direction::Egress => DIR_EGRESS,
    }
}

/// An address or prefix in the kernel's 128-bit space (IPv4 mapped).
pub fn mapped_prefix(net: IpNet) -> (u32, [u8; 16]) {
    match net {
        IpNet::V4(v4) => (
            96 + u32::from(v4.prefix_len()),
            ip_key(IpAddr::V4(v4.network())),
        ),
        IpNet::V6(v6) => (u32::from(v6.prefix_len()), ip_key(IpAddr::V6(v6.network()))),
    }
}

/// Compiles one generation. `previous` keeps table versions of unchanged (pod, direction)s.
pub fn compile(
    engine: &Engine,
    node: &NodeContext,
    numbering: &mut Numbering,
    previous: Option<&Tables>,
    generation: u64,
) -> Tables {
    let generation = numbering.kernel_generation(generation);
    let mut t = Tables {
        generation,
        config: Config {
            generation,
            idle_ns: node.idle_ns,
            calico: u32::from(engine.mode() == verdict_policy::IpBlockMode::Calico),
            pad: 0,
        },
        ..Tables::default()
    };
    // Identities of every pod that can be a peer.
    let mut identity_of: Vec<Option<u32>> = vec![None; engine.pods().len()];
    for (id, pod) in engine.pods().iter().enumerate() {
        if pod.host_network || pod.ips.is_empty() {
            continue;
        }
        let mut named: Vec<(String, u8, u16)> = pod
            .named_ports
            .iter()
            .map(|(n, p, port)| (n.clone(), proto_number(*p), *port))
            .collect();
        named.sort();
        let key = IdentityKey {
            namespace: engine.namespace(pod.namespace).name.clone(),
            labels: pod
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            named_ports: named.clone(),
        };
        let identity = numbering.identity(key);
        identity_of[id] = Some(identity);
        for (name, proto, port) in named {
            let name_id = numbering.name_id(&name);
            t.named_ports.insert(
                NamedKey {
                    identity,
                    name_id,
                    proto: u32::from(proto),
                    pad: 0,
                },
                u32::from(port),
            );
        }
    }
    // One representative pod per identity (all members of an identity are equal to selectors).
    let mut representatives: BTreeMap<u32, PodId> = BTreeMap::new();
    for (id, identity) in identity_of.iter().enumerate() {
        if let Some(i) = identity {
            representatives.entry(*i).or_insert(id as PodId);
        }
    }

    for (id, pod) in engine.pods().iter().enumerate() {
        let Some(identity) = identity_of[id] else {
            continue;
        };
        let local = pod.node_name.as_deref() == Some(node.node_name.as_str());
        let local_id = if local {
            let ns = &engine.namespace(pod.namespace).name;
            let lid = numbering.local_id(ns, &pod.name, &pod.ips);
            t.local_pods.insert(
                lid,
                LocalPod {
                    namespace: ns.clone(),
                    name: pod.name.clone(),
                    ips: pod.ips.clone(),
                },
            );
            lid
        } else {
            0
        };
        for ip in &pod.ips {
            t.endpoints.insert(
                EpKey { ip: ip_key(*ip) },
                EpVal {
                    identity,
                    local_id,
                    flags: EP_POD,
                    pad: 0,
                },
            );
        }
        if local {
            for d in [Direction::Ingress, Direction::Egress] {
                let tables = match compile_pod_dir(
                    engine,
                    id as PodId,
                    d,
                    identity,
                    node,
                    numbering,
                    &representatives,
                ) {
                    Ok(tables) => tables,
                    Err(e) => {
                        t.failed.push(e);
                        Some(PodDirTables::fail_closed(
                            identity,
                            engine.enforcement_mode(id as PodId, node.default_mode),
                        ))
                    }
                };
                if let Some(tables) = tables {
                    t.pod_dirs.insert(
                        PodDirKey {
                            local_id,
                            dir: dir_number(d),
                        },
                        tables,
                    );
                }
            }
        }
    }
    // This node's own addresses: kubelet probes come from here.
    if let Ok(node_id) = engine.find_node(&node.node_name) {
        for ip in engine.node_ips(node_id) {
            t.endpoints
                .entry(EpKey { ip: ip_key(*ip) })
                .or_insert(EpVal {
                    identity: 0,
                    local_id: 0,
                    flags: EP_HOST_LOCAL,
                    pad: 0,
                });
        }
    }
    for ip in engine.service_ips() {
        t.services.insert(EpKey { ip: ip_key(*ip) });
    }
    // Versions: unchanged content keeps its version (and its kernel entries).
    for (key, tables) in t.pod_dirs.iter_mut() {
        match previous.and_then(|p| p.pod_dirs.get(key)) {
            Some(prev) if prev.same_content(tables) => tables.version = prev.version,
            _ => {
                numbering.next_version += 1;
                tables.version = numbering.next_version;
            }
        }
    }
    t
}

fn compile_pod_dir(
    engine: &Engine,
    pod: PodId,
    d: Direction,
    identity: u32,
    node: &NodeContext,
    numbering: &mut Numbering,
    representatives: &BTreeMap<u32, PodId>,
) -> Result<Option<PodDirTables>, CompileError> {
    let isolating = engine.isolating(pod, d);
    if isolating.is_empty() {
        return Ok(None);
    }
    let pod_name = || {
        let p = engine.pod(pod);
        format!("{}/{}", engine.namespace(p.namespace).name, p.name)
    };
    if isolating.len() > MAX_POLICIES {
        return Err(CompileError::TooManyPolicies {
            pod: pod_name(),
            direction: d,
            count: isolating.len(),
        });
    }
    let mode = engine.enforcement_mode(pod, node.default_mode);
    let mut t = PodDirTables::isolated(identity, mode_flags(mode));
    // (bit, block) for every ipBlock peer, to build the LPM partition afterwards.
    let mut blocks: Vec<(usize, &verdict_policy::model::IpBlock)> = Vec::new();
    for (policy_idx, &pid) in isolating.iter().enumerate() {
        let policy = engine.policy(pid);
        t.policies
            .push((policy.namespace.clone(), policy.name.clone()));
        for rule in policy.rules(d) {
            // Ports of the rule, split into groups of MAX_PORTS (each group is one kernel rule
            // with the same peers).
            let ports: Vec<PortRange> = match &rule.ports {
                None => Vec::new(),
                Some(ports) => ports
                    .iter()
                    .map(|p| {
                        let proto = proto_number(p.protocol);
                        match &p.port {
                            PortMatch::Any => PortRange {
                                proto,
                                named: 0,
                                lo: 0,
                                hi: u16::MAX,
                                pad: 0,
                            },
                            PortMatch::Range(lo, hi) => PortRange {
                                proto,
                                named: 0,
                                lo: *lo,
                                hi: *hi,
                                pad: 0,
                            },
                            PortMatch::Named(n) => PortRange {
                                proto,
                                named: 1,
                                lo: numbering.name_id(n) as u16,
                                hi: 0,
                                pad: 0,
                            },
                        }
                    })
                    .collect(),
            };
            let groups: Vec<&[PortRange]> = if ports.is_empty() {
                vec![&[]]
            } else {
                ports.chunks(MAX_PORTS).collect()
            };
            for group in groups {
                let bit = t.rules.len();
                if bit >= MAX_RULES {
                    return Err(CompileError::TooManyRules {
                        pod: pod_name(),
                        direction: d,
                        count: bit + 1,
                    });
                }
                let mut r = Rule {
                    policy_idx: policy_idx as u32,
                    n_ports: group.len() as u32,
                    ..Rule::default()
                };
                r.ports[..group.len()].copy_from_slice(group);
                t.rules.push(r);
                let (chunk, in_chunk) = ((bit / RULES_PER_CHUNK) as u16, 1u64 << (bit % 64));
                match &rule.peers {
                    None => *t.peer_masks.entry((ANY_PEER, chunk)).or_default() |= in_chunk,
                    Some(peers) => {
                        for peer in peers {
                            match peer {
                                CompiledPeer::Pods(set) => {
                                    for (&ident, &rep) in representatives {
                                        if set.contains(rep) {
                                            *t.peer_masks.entry((ident, chunk)).or_default() |=
                                                in_chunk;
                                        }
                                    }
                                }
                                CompiledPeer::IpBlock(b) => blocks.push((bit, b)),
                            }
                        }
                    }
                }
            }
        }
    }
    // The LPM partition of each chunk: every cidr and except of its rules is stored (a zero mask
    // too: it hides the shorter prefixes); its mask is the chunk's rules whose block contains it
    // and none of whose excepts contain it.
    let mut prefixes: BTreeSet<(u16, IpNet)> = BTreeSet::new();
    for (bit, b) in &blocks {
        let chunk = (bit / RULES_PER_CHUNK) as u16;
        prefixes.insert((chunk, b.cidr));
        prefixes.extend(b.except.iter().map(|e| (chunk, *e)));
    }
    for (chunk, q) in prefixes {
        let mut mask = 0u64;
        for (bit, b) in &blocks {
            if (bit / RULES_PER_CHUNK) as u16 == chunk
                && b.cidr.contains(&q)
                && !b.except.iter().any(|e| e.contains(&q))
            {
                mask |= 1 << (bit % 64);
            }
        }
        t.cidr_masks.insert((chunk, q), mask);
    }
    Ok(Some(t))
}

/// What the kernel would decide for one direction (None: the enforced side is not a local pod).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimDecision {
    pub isolated: bool,
    pub allowed: bool,
    pub reason: u8,
    /// Bit i: the (pod, direction)'s policies[i] allows the connection.
    pub policy_mask: [u64; POLICY_WORDS],
    pub audit: bool,
}

impl SimDecision {
    /// Indexes of the allowing policies.
    pub fn allowing(&self) -> impl Iterator<Item = usize> + '_ {
        (0..MAX_POLICIES).filter(|i| self.policy_mask[i / 64] & (1 << (i % 64)) != 0)
    }
}

/// The kernel's `decide()` over [`Tables`], step for step.
pub fn simulate(
    t: &Tables,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    dport: u16,
    dir: u32,
) -> Option<SimDecision> {
    let (enforced_ip, peer_ip) = if dir == DIR_EGRESS {
        (src, dst)
    } else {
        (dst, src)
    };
    let enforced = t
        .endpoints
        .get(&EpKey {
            ip: ip_key(enforced_ip),
        })
        .filter(|e| e.local_id != 0)?;
    let peer = t.endpoints.get(&EpKey {
        ip: ip_key(peer_ip),
    });
    let mut d = SimDecision {
        isolated: false,
        allowed: true,
        reason: 0,
        policy_mask: [0; POLICY_WORDS],
        audit: false,
    };
    let Some(pd) = t.pod_dirs.get(&PodDirKey {
        local_id: enforced.local_id,
        dir,
    }) else {
        return Some(d);
    };
    if pd.flags & PD_ISOLATED == 0 {
        return Some(d);
    }
    d.isolated = true;
    d.audit = pd.flags & PD_AUDIT != 0;
    if dir == DIR_INGRESS && peer.is_some_and(|p| p.flags & EP_HOST_LOCAL != 0) {
        d.reason = REASON_NODE_LOCAL;
        return Some(d);
    }
    if pd.flags & PD_FAIL_CLOSED != 0 {
        d.allowed = false;
        d.reason = REASON_NO_RULE_MATCHED;
        return Some(d);
    }
    let dest_identity = if dir == DIR_INGRESS {
        pd.identity
    } else {
        peer.filter(|p| p.flags & EP_POD != 0)
            .map_or(0, |p| p.identity)
    };
    let peer_is_pod = peer.is_some_and(|p| p.flags & EP_POD != 0);
    let chunk_mask = |chunk: u16| {
        let mut mask = pd.peer_masks.get(&(ANY_PEER, chunk)).copied().unwrap_or(0);
        if let Some(p) = peer.filter(|_| peer_is_pod) {
            mask |= pd
                .peer_masks
                .get(&(p.identity, chunk))
                .copied()
                .unwrap_or(0);
        }
        if !peer_is_pod || t.config.calico != 0 {
            // Longest stored prefix of the chunk containing the peer.
            let best = pd
                .cidr_masks
                .iter()
                .filter(|((c, net), _)| *c == chunk && net.contains(&peer_ip))
                .max_by_key(|((_, net), _)| net.prefix_len());
            mask |= best.map_or(0, |(_, m)| *m);
        }
        mask
    };
    let mut mask = 0;
    for (i, r) in pd.rules.iter().enumerate() {
        if i % RULES_PER_CHUNK == 0 {
            mask = chunk_mask((i / RULES_PER_CHUNK) as u16);
        }
        if mask & (1 << (i % 64)) == 0 {
            continue;
        }
        let ports_ok = r.n_ports == 0
            || r.ports[..r.n_ports as usize].iter().any(|p| {
                p.proto == proto
                    && if p.named != 0 {
                        dest_identity != 0
                            && t.named_ports.get(&NamedKey {
                                identity: dest_identity,
                                name_id: u32::from(p.lo),
                                proto: u32::from(proto),
                                pad: 0,
                            }) == Some(&u32::from(dport))
                    } else {
                        (p.lo..=p.hi).contains(&dport)
                    }
            });
        if ports_ok {
            let p = r.policy_idx as usize % MAX_POLICIES;
            d.policy_mask[p / 64] |= 1 << (p % 64);
        }
    }
    if d.policy_mask.iter().any(|w| *w != 0) {
        d.reason = REASON_ALLOWED_BY_POLICY;
    } else {
        d.allowed = false;
        d.reason = REASON_NO_RULE_MATCHED;
    }
    Some(d)
}

/// The kernel's `pod_dirs` value for a table placed at `rule_base`.
pub fn pod_dir_val(t: &PodDirTables, rule_base: u32) -> PodDirVal {
    PodDirVal {
        table_version: t.version,
        rule_base,
        n_rules: t.rules.len() as u32,
        flags: t.flags,
        identity: t.identity,
    }
}
