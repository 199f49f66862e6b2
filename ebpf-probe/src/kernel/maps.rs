//! Loading the programs with pinned maps, and writing compiled [`Tables`] into the maps.
//!
//! Update order (the invariant that keeps packets from seeing half an update): for every changed
//! (pod, direction), its new version's rules, peer masks and cidr masks are written first, beside
//! the old version's; then its `pod_dirs` entry is switched to the new version in one map write;
//! only then is the old version deleted. Endpoints and named ports are added before and removed
//! after. The config (generation) is written last.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use aya::maps::lpm_trie::{Key as LpmKey, LpmTrie};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, RingBuf};
use aya::{Ebpf, EbpfLoader};

use super::abi::{
    Config, EpKey, EpVal, LPM_FIXED_BITS, LpmData, MaskVal, NamedKey, NamedVal, PeerKey, PodDirKey,
    PodDirVal, Rule, STAT_LOST_EVENTS,
};
use super::compile::{PodDirTables, Tables, mapped_prefix, pod_dir_val};

/// The compiled object, embedded at build time.
pub const OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/verdict.bpf.o"));
const RULE_SLOTS: u32 = 262_144;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(
        "cannot load eBPF programs: {0}. Verdict's datapath needs root (or CAP_BPF and CAP_NET_ADMIN), \
         Linux ≥ 5.17 (bpf_loop) and a bpffs mounted at /sys/fs/bpf"
    )]
    Load(String),
    #[error("eBPF map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("the rules map is full ({RULE_SLOTS} rules)")]
    RulesFull,
    #[error("attaching to {interface}: {message}")]
    Attach { interface: String, message: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> KernelError {
    move |source| KernelError::Map { map, source }
}

/// First-fit allocator of rule ranges.
#[derive(Debug)]
struct RuleRanges {
    free: BTreeMap<u32, u32>,
}

impl RuleRanges {
    fn new() -> Self {
        RuleRanges {
            free: BTreeMap::from([(0, RULE_SLOTS)]),
        }
    }

    fn alloc(&mut self, n: u32) -> Option<u32> {
        let n = n.max(1);
        let (&start, &len) = self.free.iter().find(|(_, len)| **len >= n)?;
        self.free.remove(&start);
        if len > n {
            self.free.insert(start + n, len - n);
        }
        Some(start)
    }

    fn release(&mut self, start: u32, n: u32) {
        let n = n.max(1);
        self.free.insert(start, n);
        // Merge with neighbours.
        let mut merged: BTreeMap<u32, u32> = BTreeMap::new();
        for (s, l) in std::mem::take(&mut self.free) {
            if let Some((&ps, pl)) = merged.iter_mut().next_back()
                && ps + *pl == s
            {
                *pl += l;
                continue;
            }
            merged.insert(s, l);
        }
        self.free = merged;
    }
}

/// The loaded programs and their maps.
pub struct KernelMaps {
    pub ebpf: Ebpf,
    pub pin_dir: PathBuf,
    endpoints: BpfHashMap<MapData, EpKey, EpVal>,
    pod_dirs: BpfHashMap<MapData, PodDirKey, PodDirVal>,
    peer_masks: BpfHashMap<MapData, PeerKey, MaskVal>,
    cidr_masks: LpmTrie<MapData, LpmData, MaskVal>,
    rules: Array<MapData, Rule>,
    named_ports: BpfHashMap<MapData, NamedKey, NamedVal>,
    services: BpfHashMap<MapData, EpKey, u32>,
    config: Array<MapData, Config>,
    stats: Array<MapData, u64>,
    /// What the maps hold now, with where each (pod, direction)'s rules are.
    applied: Tables,
    placed: HashMap<PodDirKey, (u64, u32)>,
    ranges: RuleRanges,
}

impl std::fmt::Debug for KernelMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelMaps")
            .field("pin_dir", &self.pin_dir)
            .field("generation", &self.applied.generation)
            .field("pod_dirs", &self.placed.len())
            .finish_non_exhaustive()
    }
}

/// Mounts bpffs at /sys/fs/bpf if nothing is mounted there.
pub fn ensure_bpffs() -> Result<(), KernelError> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf"))
    {
        return Ok(());
    }
    let status = std::process::Command::new("mount")
        .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(KernelError::Load(
            "no bpffs at /sys/fs/bpf and mounting one failed".into(),
        ))
    }
}

impl KernelMaps {
    /// Loads the programs; maps are pinned under `pin_dir` (reused if already there, so
    /// conntrack and policy survive a restart of the agent).
    pub fn load(pin_dir: &Path) -> Result<Self, KernelError> {
        ensure_bpffs()?;
        std::fs::create_dir_all(pin_dir)?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pin_dir)
            .load(OBJECT)
            .map_err(|e| KernelError::Load(format!("{e:#}")))?;
        for name in ["verdict_from_pod", "verdict_to_pod"] {
            let prog: &mut aya::programs::SchedClassifier = ebpf
                .program_mut(name)
                .ok_or_else(|| {
                    KernelError::Load(format!("program {name} missing from the object"))
                })?
                .try_into()
                .map_err(|e| KernelError::Load(format!("{name}: {e}")))?;
            prog.load()
                .map_err(|e| KernelError::Load(format!("{name}: {e:#}")))?;
        }
        macro_rules! take {
            ($name:literal, $ty:ty) => {
                <$ty>::try_from(
                    ebpf.take_map($name)
                        .ok_or_else(|| KernelError::Load(format!("map {} missing", $name)))?,
                )
                .map_err(map_err($name))?
            };
        }
        let endpoints = take!("endpoints", BpfHashMap<MapData, EpKey, EpVal>);
        let pod_dirs = take!("pod_dirs", BpfHashMap<MapData, PodDirKey, PodDirVal>);
        let peer_masks = take!("peer_masks", BpfHashMap<MapData, PeerKey, MaskVal>);
        let cidr_masks = take!("cidr_masks", LpmTrie<MapData, LpmData, MaskVal>);
        let rules = take!("rules", Array<MapData, Rule>);
        let named_ports = take!("named_ports", BpfHashMap<MapData, NamedKey, NamedVal>);
        let services = take!("service_ips", BpfHashMap<MapData, EpKey, u32>);
        let config = take!("config", Array<MapData, Config>);
        let stats = take!("stats", Array<MapData, u64>);
        let mut maps = KernelMaps {
            ebpf,
            pin_dir: pin_dir.to_owned(),
            endpoints,
            pod_dirs,
            peer_masks,
            cidr_masks,
            rules,
            named_ports,
            services,
            config,
            stats,
            applied: Tables::default(),
            placed: HashMap::new(),
            ranges: RuleRanges::new(),
        };
        // Pinned maps of a previous run hold a previous state we know nothing about: start the
        // policy tables from empty (conntrack stays, so established connections keep working).
        maps.clear_policy_tables()?;
        Ok(maps)
    }

    fn clear_policy_tables(&mut self) -> Result<(), KernelError> {
        let stale: Vec<PeerKey> = self.peer_masks.keys().filter_map(Result::ok).collect();
        for k in stale {
            let _ = self.peer_masks.remove(&k);
        }
        let stale: Vec<LpmKey<LpmData>> = self.cidr_masks.keys().filter_map(Result::ok).collect();
        for k in stale {
            let _ = self.cidr_masks.remove(&k);
        }
        // pod_dirs/endpoints are overwritten by the first apply; entries it does not write are
        // removed there (it diffs against what the maps hold).
        let dirs: Vec<(PodDirKey, PodDirVal)> =
            self.pod_dirs.iter().filter_map(Result::ok).collect();
        let eps: Vec<(EpKey, EpVal)> = self.endpoints.iter().filter_map(Result::ok).collect();
        let named: Vec<(NamedKey, NamedVal)> =
            self.named_ports.iter().filter_map(Result::ok).collect();
        let svcs: Vec<EpKey> = self.services.keys().filter_map(Result::ok).collect();
        self.applied.endpoints = eps.into_iter().collect();
        self.applied.named_ports = named.into_iter().map(|(k, v)| (k, v.port)).collect();
        self.applied.services = svcs.into_iter().collect();
        for (k, _) in dirs {
            self.pod_dirs.remove(&k).map_err(map_err("pod_dirs"))?;
        }
        Ok(())
    }

    /// Events lost because the ring buffer was full (cumulative).
    pub fn lost_events(&self) -> u64 {
        self.stats.get(&STAT_LOST_EVENTS, 0).unwrap_or(0)
    }

    /// The ring buffer of verdict events.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, KernelError> {
        let map = self
            .ebpf
            .take_map("events")
            .ok_or_else(|| KernelError::Load("map events missing".into()))?;
        RingBuf::try_from(map).map_err(map_err("events"))
    }

    /// What the maps hold.
    pub fn applied(&self) -> &Tables {
        &self.applied
    }

    /// Brings the maps to `next`, never exposing a torn (pod, direction) to packets.
    pub fn apply(&mut self, next: &Tables) -> Result<ApplyStats, KernelError> {
        let mut stats = ApplyStats::default();
        for (k, v) in &next.endpoints {
            if self.applied.endpoints.get(k) != Some(v) {
                self.endpoints
                    .insert(k, v, 0)
                    .map_err(map_err("endpoints"))?;
                stats.writes += 1;
            }
        }
        for (k, port) in &next.named_ports {
            if self.applied.named_ports.get(k) != Some(port) {
                self.named_ports
                    .insert(
                        k,
                        NamedVal {
                            port: *port,
                            pad: 0,
                        },
                        0,
                    )
                    .map_err(map_err("named_ports"))?;
                stats.writes += 1;
            }
        }
        for k in &next.services {
            if !self.applied.services.contains(k) {
                self.services
                    .insert(k, 1, 0)
                    .map_err(map_err("service_ips"))?;
                stats.writes += 1;
            }
        }
        let mut retired: Vec<(PodDirKey, PodDirTables, u32)> = Vec::new();
        for (key, t) in &next.pod_dirs {
            if self.placed.get(key).is_some_and(|(v, _)| *v == t.version) {
                continue;
            }
            let base = self
                .ranges
                .alloc(t.rules.len() as u32)
                .ok_or(KernelError::RulesFull)?;
            for (i, r) in t.rules.iter().enumerate() {
                self.rules
                    .set(base + i as u32, r, 0)
                    .map_err(map_err("rules"))?;
            }
            for (identity, mask) in &t.peer_masks {
                let k = PeerKey {
                    local_id: key.local_id,
                    dir: key.dir,
                    identity: *identity,
                    version: t.version as u32,
                };
                self.peer_masks
                    .insert(k, MaskVal { mask: *mask }, 0)
                    .map_err(map_err("peer_masks"))?;
            }
            for (net, mask) in &t.cidr_masks {
                self.cidr_masks
                    .insert(&lpm_key(*key, t.version, *net), MaskVal { mask: *mask }, 0)
                    .map_err(map_err("cidr_masks"))?;
            }
            stats.writes += t.rules.len() + t.peer_masks.len() + t.cidr_masks.len();
            // The switch: one write.
            self.pod_dirs
                .insert(key, pod_dir_val(t, base), 0)
                .map_err(map_err("pod_dirs"))?;
            stats.writes += 1;
            stats.pod_dirs_changed += 1;
            if let (Some(old), Some((_, old_base))) =
                (self.applied.pod_dirs.get(key), self.placed.get(key))
            {
                retired.push((*key, old.clone(), *old_base));
            }
            self.placed.insert(*key, (t.version, base));
        }
        let gone: Vec<PodDirKey> = self
            .applied
            .pod_dirs
            .keys()
            .filter(|k| !next.pod_dirs.contains_key(k))
            .copied()
            .collect();
        for key in gone {
            self.pod_dirs.remove(&key).map_err(map_err("pod_dirs"))?;
            stats.pod_dirs_changed += 1;
            if let (Some(old), Some((_, base))) =
                (self.applied.pod_dirs.get(&key), self.placed.remove(&key))
            {
                retired.push((key, old.clone(), base));
            }
        }
        for (key, old, base) in retired {
            for identity in old.peer_masks.keys() {
                let _ = self.peer_masks.remove(&PeerKey {
                    local_id: key.local_id,
                    dir: key.dir,
                    identity: *identity,
                    version: old.version as u32,
                });
            }
            for net in old.cidr_masks.keys() {
                let _ = self.cidr_masks.remove(&lpm_key(key, old.version, *net));
            }
            self.ranges.release(base, old.rules.len() as u32);
        }
        for k in self.applied.endpoints.keys() {
            if !next.endpoints.contains_key(k) {
                let _ = self.endpoints.remove(k);
            }
        }
        for k in self.applied.named_ports.keys() {
            if !next.named_ports.contains_key(k) {
                let _ = self.named_ports.remove(k);
            }
        }
        for k in &self.applied.services {
            if !next.services.contains(k) {
                let _ = self.services.remove(k);
            }
        }
        self.config
            .set(0, next.config, 0)
            .map_err(map_err("config"))?;
        self.applied = next.clone();
        Ok(stats)
    }
}

fn lpm_key(key: PodDirKey, version: u64, net: ipnet::IpNet) -> LpmKey<LpmData> {
    let (bits, ip) = mapped_prefix(net);
    LpmKey::new(
        LPM_FIXED_BITS + bits,
        LpmData {
            local_id: key.local_id,
            dir: key.dir,
            version: version as u32,
            ip,
        },
    )
}

/// What one [`KernelMaps::apply`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyStats {
    pub writes: usize,
    pub pod_dirs_changed: usize,
}

#[cfg(test)]
mod tests {
    use super::RuleRanges;

    #[test]
    fn rule_ranges_are_reused_and_merged() {
        let mut r = RuleRanges::new();
        let a = r.alloc(10).unwrap();
        let b = r.alloc(5).unwrap();
        assert_eq!((a, b), (0, 10));
        r.release(a, 10);
        assert_eq!(r.alloc(4), Some(0));
        r.release(0, 4);
        r.release(b, 5);
        assert_eq!(r.free.len(), 1, "everything merged back: {:?}", r.free);
    }
}
