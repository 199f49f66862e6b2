//! Loading the programs with pinned maps, and writing compiled [`Tables`] into the maps.
//!
//! Update order (the invariant that keeps packets from seeing half an update): for every changed
//! (pod, direction), its new version's rules, peer masks and cidr masks are written first, beside
//! the old version's; then its `pod_dirs` entry is switched to the new version in one map write;
//! only then is the old version deleted. Endpoints and named ports are added before and removed
//! after. The config (generation) is written last: it makes conntrack re-judge every connection.
//!
//! Each (pod, direction) is applied on its own: when its tables cannot be written (a map is
//! full), what was written of them is removed and its `pod_dirs` entry becomes *fail closed*
//! (isolated, nothing allowed); when even that entry cannot be written, the pod's addresses stop
//! being local in `endpoints`, which makes its veth drop everything. The other pods are applied
//! as usual, and the failed one is tried again at the next apply.
//!
//! A restarted agent finds the previous run's maps pinned and leaves them enforcing: it keeps
//! their local ids and continues their versions and generations (see [`KernelMaps::resume`]),
//! writes the new state beside the old one, and deletes what is left of the old one after its
//! first apply — there is no moment without enforcement.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use aya::maps::lpm_trie::{Key as LpmKey, LpmTrie};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, RingBuf};
use aya::{Ebpf, EbpfLoader};

use super::abi::{
    Config, DROP_STATS, EpKey, EpVal, IfaceVal, LPM_FIXED_BITS, LpmData, MAX_IFACE_IPS, MaskVal,
    NamedKey, NamedVal, PD_AUDIT, PD_FAIL_CLOSED, PD_ISOLATED, PeerKey, PodDirKey, PodDirVal, Rule,
    STAT_CT_FULL, STAT_LOST_EVENTS, ip_key, key_ip,
};
use super::compile::{Numbering, PodDirTables, Tables, mapped_prefix, pod_dir_val};

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

    /// Marks `[start, start + n)` as used (ranges a previous run left in the pinned maps).
    fn reserve(&mut self, start: u32, n: u32) {
        let n = n.max(1);
        let Some((&s, &len)) = self.free.range(..=start).next_back() else {
            return;
        };
        if start + n > s + len {
            return;
        }
        self.free.remove(&s);
        if start > s {
            self.free.insert(s, start - s);
        }
        if s + len > start + n {
            self.free.insert(start + n, s + len - start - n);
        }
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
    ifaces: BpfHashMap<MapData, u32, IfaceVal>,
    config: Array<MapData, Config>,
    stats: Array<MapData, u64>,
    /// What the maps hold now, with where each (pod, direction)'s rules are.
    applied: Tables,
    placed: HashMap<PodDirKey, (u64, u32)>,
    ranges: RuleRanges,
    /// The `pod_dirs` of a previous run, until the first apply replaced them.
    inherited: Vec<(PodDirKey, PodDirVal)>,
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
        unpin_incompatible(pin_dir)?;
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
        let ifaces = take!("ifaces", BpfHashMap<MapData, u32, IfaceVal>);
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
            ifaces,
            config,
            stats,
            applied: Tables::default(),
            placed: HashMap::new(),
            ranges: RuleRanges::new(),
            inherited: Vec::new(),
        };
        maps.inherit();
        Ok(maps)
    }

    /// Takes over the state pinned by a previous run (empty on a first start): it stays in force
    /// until the first apply replaces it. The apply diffs against what the maps hold, so entries
    /// it does not write are removed there.
    fn inherit(&mut self) {
        self.inherited = self.pod_dirs.iter().filter_map(Result::ok).collect();
        for (_, v) in &self.inherited {
            self.ranges.reserve(v.rule_base, v.n_rules);
        }
        self.applied.endpoints = self.endpoints.iter().filter_map(Result::ok).collect();
        self.applied.named_ports = self
            .named_ports
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k, v.port))
            .collect();
        self.applied.services = self.services.keys().filter_map(Result::ok).collect();
        self.applied.config = self.config.get(&0, 0).unwrap_or_default();
    }

    /// Numbering that continues the pinned state's: local pods keep their local ids, new table
    /// versions and generations start above the pinned ones (conntrack entries of the previous
    /// run are then re-judged, never taken for current).
    pub fn resume(&self) -> Numbering {
        let local_ids = self
            .applied
            .endpoints
            .iter()
            .filter(|(_, v)| v.local_id != 0)
            .map(|(k, v)| (key_ip(k.ip), v.local_id))
            .collect();
        let max_version = self
            .inherited
            .iter()
            .map(|(_, v)| v.table_version)
            .max()
            .unwrap_or(0);
        Numbering::resume(local_ids, max_version, self.applied.config.generation)
    }

    /// Events lost because the ring buffer was full (cumulative).
    pub fn lost_events(&self) -> u64 {
        self.stat(STAT_LOST_EVENTS)
    }

    fn stat(&self, index: u32) -> u64 {
        self.stats.get(&index, 0).unwrap_or(0)
    }

    /// The datapath's drop counters (cumulative): reason label, packets.
    pub fn drops(&self) -> Vec<(&'static str, u64)> {
        DROP_STATS
            .iter()
            .map(|(index, reason)| (*reason, self.stat(*index)))
            .collect()
    }

    /// Packets judged without a conntrack entry because the insert failed (cumulative).
    pub fn conntrack_full(&self) -> u64 {
        self.stat(STAT_CT_FULL)
    }

    /// Tells the programs which pod is behind the host veth `ifindex` (written before the
    /// programs are attached there: a veth without an entry drops everything).
    pub fn set_iface(&mut self, ifindex: u32, ips: &[std::net::IpAddr]) -> Result<(), KernelError> {
        let mut v = IfaceVal::default();
        for (slot, ip) in v.ips.iter_mut().zip(ips.iter().take(MAX_IFACE_IPS)) {
            *slot = ip_key(*ip);
        }
        v.n_ips = ips.len().min(MAX_IFACE_IPS) as u32;
        if self.ifaces.get(&ifindex, 0).ok() == Some(v) {
            return Ok(());
        }
        self.ifaces.insert(ifindex, v, 0).map_err(map_err("ifaces"))
    }

    /// Forgets the veth `ifindex`.
    pub fn remove_iface(&mut self, ifindex: u32) {
        let _ = self.ifaces.remove(&ifindex);
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

    /// Brings the maps to `next`, never exposing a torn (pod, direction) to packets. What could
    /// not be written is in the report (and fails closed, see the module comment); only the
    /// config write failing is an error.
    pub fn apply(&mut self, next: &Tables) -> Result<ApplyStats, KernelError> {
        let mut stats = ApplyStats::default();
        let mut applied = next.clone();
        for (k, v) in &next.endpoints {
            if self.applied.endpoints.get(k) != Some(v) {
                match self.endpoints.insert(k, v, 0) {
                    Ok(()) => stats.writes += 1,
                    Err(e) => {
                        stats.errors.push(map_err("endpoints")(e).to_string());
                        applied.endpoints.remove(k);
                    }
                }
            }
        }
        for (k, port) in &next.named_ports {
            if self.applied.named_ports.get(k) != Some(port) {
                let v = NamedVal {
                    port: *port,
                    pad: 0,
                };
                match self.named_ports.insert(k, v, 0) {
                    Ok(()) => stats.writes += 1,
                    Err(e) => {
                        stats.errors.push(map_err("named_ports")(e).to_string());
                        applied.named_ports.remove(k);
                    }
                }
            }
        }
        for k in &next.services {
            if !self.applied.services.contains(k) {
                match self.services.insert(k, 1, 0) {
                    Ok(()) => stats.writes += 1,
                    Err(e) => {
                        stats.errors.push(map_err("service_ips")(e).to_string());
                        applied.services.remove(k);
                    }
                }
            }
        }
        let mut retired: Vec<(PodDirKey, PodDirTables, u32)> = Vec::new();
        for (key, t) in &next.pod_dirs {
            if self.placed.get(key).is_some_and(|(v, _)| *v == t.version) {
                continue;
            }
            let old = self.applied.pod_dirs.get(key).cloned();
            let old_base = self.placed.remove(key).map(|(_, base)| base);
            match self.write_pod_dir(*key, t) {
                Ok(base) => {
                    stats.writes += t.rules.len() + t.peer_masks.len() + t.cidr_masks.len() + 1;
                    self.placed.insert(*key, (t.version, base));
                }
                Err(e) => {
                    // Fail closed: nothing of this pod's new tables is in force.
                    let closed = PodDirTables::fail_closed(
                        t.identity,
                        if t.flags & PD_AUDIT != 0 {
                            verdict_policy::engine::EnforcementMode::Audit
                        } else {
                            verdict_policy::engine::EnforcementMode::Enforce
                        },
                    );
                    let val = PodDirVal {
                        table_version: t.version,
                        rule_base: 0,
                        n_rules: 0,
                        flags: PD_ISOLATED | PD_FAIL_CLOSED | (t.flags & PD_AUDIT),
                        identity: t.identity,
                    };
                    let mut why = e.to_string();
                    if let Err(e) = self.pod_dirs.insert(key, val, 0) {
                        why = format!("{why}; {}", map_err("pod_dirs")(e));
                        self.unlocalize(key.local_id, &mut applied);
                    }
                    stats.fail_closed.push((*key, why));
                    applied.pod_dirs.insert(
                        *key,
                        PodDirTables {
                            version: t.version,
                            ..closed
                        },
                    );
                }
            }
            stats.pod_dirs_changed += 1;
            if let (Some(old), Some(base)) = (old, old_base) {
                retired.push((*key, old, base));
            }
        }
        let gone: Vec<PodDirKey> = self
            .applied
            .pod_dirs
            .keys()
            .filter(|k| !next.pod_dirs.contains_key(k))
            .copied()
            .collect();
        for key in gone {
            let _ = self.pod_dirs.remove(&key);
            stats.pod_dirs_changed += 1;
            if let (Some(old), Some((_, base))) =
                (self.applied.pod_dirs.get(&key), self.placed.remove(&key))
            {
                retired.push((key, old.clone(), base));
            }
        }
        for (key, old, base) in retired {
            self.remove_version(key, &old);
            self.ranges.release(base, old.rules.len() as u32);
        }
        self.retire_inherited(next);
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
        self.applied = applied;
        Ok(stats)
    }

    /// Writes one (pod, direction)'s new version and switches to it; on failure removes what
    /// it wrote (the old version, if any, is still in force).
    fn write_pod_dir(&mut self, key: PodDirKey, t: &PodDirTables) -> Result<u32, KernelError> {
        let base = self
            .ranges
            .alloc(t.rules.len() as u32)
            .ok_or(KernelError::RulesFull)?;
        let written = (|| {
            for (i, r) in t.rules.iter().enumerate() {
                self.rules
                    .set(base + i as u32, r, 0)
                    .map_err(map_err("rules"))?;
            }
            for ((identity, chunk), mask) in &t.peer_masks {
                self.peer_masks
                    .insert(
                        peer_key(key, t.version, *identity, *chunk),
                        MaskVal { mask: *mask },
                        0,
                    )
                    .map_err(map_err("peer_masks"))?;
            }
            for ((chunk, net), mask) in &t.cidr_masks {
                self.cidr_masks
                    .insert(
                        &lpm_key(key, t.version, *chunk, *net),
                        MaskVal { mask: *mask },
                        0,
                    )
                    .map_err(map_err("cidr_masks"))?;
            }
            // The switch: one write.
            self.pod_dirs
                .insert(key, pod_dir_val(t, base), 0)
                .map_err(map_err("pod_dirs"))
        })();
        match written {
            Ok(()) => Ok(base),
            Err(e) => {
                self.remove_version(key, t);
                self.ranges.release(base, t.rules.len() as u32);
                Err(e)
            }
        }
    }

    fn remove_version(&mut self, key: PodDirKey, t: &PodDirTables) {
        for (identity, chunk) in t.peer_masks.keys() {
            let _ = self
                .peer_masks
                .remove(&peer_key(key, t.version, *identity, *chunk));
        }
        for (chunk, net) in t.cidr_masks.keys() {
            let _ = self
                .cidr_masks
                .remove(&lpm_key(key, t.version, *chunk, *net));
        }
    }

    /// The last resort for a pod whose `pod_dirs` entry cannot be written: its addresses are no
    /// longer local, so its veth drops everything (the programs require a local pod there).
    fn unlocalize(&mut self, local_id: u32, applied: &mut Tables) {
        for (k, v) in applied.endpoints.iter_mut() {
            if v.local_id == local_id {
                v.local_id = 0;
                let _ = self.endpoints.insert(k, *v, 0);
            }
        }
    }

    /// After the first apply, removes what the previous run left: its `pod_dirs` entries the
    /// apply did not overwrite, and every peer and cidr entry of a version no longer in force.
    fn retire_inherited(&mut self, next: &Tables) {
        if self.inherited.is_empty() {
            return;
        }
        for (key, val) in std::mem::take(&mut self.inherited) {
            if !next.pod_dirs.contains_key(&key) && self.pod_dirs.get(&key, 0).ok() == Some(val) {
                let _ = self.pod_dirs.remove(&key);
            }
            self.ranges.release(val.rule_base, val.n_rules);
        }
        let current = |local_id: u32, dir: u16, version: u32| {
            let key = PodDirKey {
                local_id,
                dir: u32::from(dir),
            };
            self.placed
                .get(&key)
                .is_some_and(|(v, _)| *v as u32 == version)
        };
        let stale: Vec<PeerKey> = self
            .peer_masks
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !current(k.local_id, k.dir, k.version))
            .collect();
        let stale_cidrs: Vec<LpmKey<LpmData>> = self
            .cidr_masks
            .keys()
            .filter_map(Result::ok)
            .filter(|k| {
                let d = k.data();
                !current(d.local_id, d.dir, d.version)
            })
            .collect();
        for k in stale {
            let _ = self.peer_masks.remove(&k);
        }
        for k in stale_cidrs {
            let _ = self.cidr_masks.remove(&k);
        }
    }
}

/// Pinned maps whose layout differs from this build's (left by another version of Verdict) are
/// unpinned, all of them: reusing one would read its entries with the wrong layout, and mixing old
/// and new state is no better. The programs still attached keep using the old maps until the new
/// ones replace them, so enforcement does not stop; conntrack starts empty.
fn unpin_incompatible(pin_dir: &Path) -> Result<(), KernelError> {
    let obj = aya_obj::Object::parse(OBJECT).map_err(|e| KernelError::Load(e.to_string()))?;
    let mut incompatible = Vec::new();
    for (name, map) in &obj.maps {
        let path = pin_dir.join(name);
        if !path.exists() {
            continue;
        }
        let same = aya::maps::MapInfo::from_pin(&path).is_ok_and(|info| {
            info.key_size() == map.key_size()
                && info.value_size() == map.value_size()
                && info.max_entries() == map.max_entries()
        });
        if !same {
            incompatible.push(name.clone());
        }
    }
    if incompatible.is_empty() {
        return Ok(());
    }
    tracing::warn!(
        maps = ?incompatible,
        "pinned maps under {} have another layout (another version of Verdict): starting from \
         new maps (conntrack starts empty; the programs attached enforce until replaced)",
        pin_dir.display()
    );
    for name in obj.maps.keys() {
        let path = pin_dir.join(name);
        if path.exists() {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

fn peer_key(key: PodDirKey, version: u64, identity: u32, chunk: u16) -> PeerKey {
    PeerKey {
        local_id: key.local_id,
        dir: key.dir as u16,
        chunk,
        identity,
        version: version as u32,
    }
}

fn lpm_key(key: PodDirKey, version: u64, chunk: u16, net: ipnet::IpNet) -> LpmKey<LpmData> {
    let (bits, ip) = mapped_prefix(net);
    LpmKey::new(
        LPM_FIXED_BITS + bits,
        LpmData {
            local_id: key.local_id,
            dir: key.dir as u16,
            chunk,
            version: version as u32,
            ip,
        },
    )
}

/// What one [`KernelMaps::apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyStats {
    pub writes: usize,
    pub pod_dirs_changed: usize,
    /// (pod, direction)s whose tables could not be written, with why: they deny everything.
    pub fail_closed: Vec<(PodDirKey, String)>,
    /// Other writes that failed (endpoints, named ports, Service addresses).
    pub errors: Vec<String>,
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
