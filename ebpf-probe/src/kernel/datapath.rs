//! The eBPF datapath: compiles each policy generation into the maps, keeps the programs attached
//! to every local pod's veth, and turns ring-buffer events into [`VerdictEvent`]s for the logging
//! pipeline (the same pipeline the userspace datapath feeds).

use std::collections::{BTreeSet, VecDeque};
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use verdict_policy::engine::{EnforcementMode, Reason};
use verdict_schema::{Direction, Protocol, Timestamp};

use super::abi::{
    DIR_EGRESS, MAX_POLICIES, PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP,
    PodDirKey, REASON_ALLOWED_BY_POLICY, REASON_NODE_LOCAL, VerdictEventRaw, key_ip, read_event,
};
use super::attach;
use super::compile::{NodeContext, Numbering, Tables, compile};
use super::maps::{ApplyStats, KernelError, KernelMaps};
use crate::datapath::Datapath;
use crate::event::VerdictEvent;
use verdict_cluster::PolicySnapshot;

/// Generations kept to translate late events.
const HISTORY: usize = 32;

#[derive(Debug, Default)]
struct History {
    entries: VecDeque<(Arc<PolicySnapshot>, Arc<Tables>)>,
}

#[derive(Debug)]
pub struct EbpfDatapath {
    maps: KernelMaps,
    node: NodeContext,
    numbering: Numbering,
    history: Arc<Mutex<History>>,
    attached: BTreeSet<String>,
    uplinks: Vec<String>,
    uplinks_attached: BTreeSet<String>,
    /// The veths attached, by name, with their ifindex (their `ifaces` entries).
    attached_ifindex: std::collections::BTreeMap<String, u32>,
    lost_seen: u64,
    /// Cumulative kernel counters already published (drops by reason, conntrack full).
    drops_seen: Vec<u64>,
    conntrack_full_seen: u64,
    /// (pod, direction)s in force fail closed.
    fail_closed: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

impl EbpfDatapath {
    /// Loads the programs (maps pinned under `pin_dir`) and enforces `snapshot`. `uplinks`: the
    /// node's interfaces towards other nodes, for Service traffic to remote backends (see
    /// `bpf/verdict.bpf.c`).
    pub fn load(
        pin_dir: &Path,
        node: NodeContext,
        uplinks: Vec<String>,
        snapshot: Arc<PolicySnapshot>,
    ) -> Result<Self, DatapathError> {
        let maps = KernelMaps::load(pin_dir)?;
        let uplinks = attach::uplinks(&uplinks);
        if uplinks.is_empty() {
            tracing::warn!(
                "no --uplink given: connections from local pods to Service addresses whose \
                 backends run on other nodes are not judged on this node (their egress decision \
                 is taken after kube-proxy's DNAT, on the interface the packet leaves by); pass \
                 the node's interfaces towards other nodes with --uplink"
            );
        }
        let mut d = EbpfDatapath {
            numbering: maps.resume(),
            lost_seen: maps.lost_events(),
            drops_seen: maps.drops().iter().map(|(_, n)| *n).collect(),
            conntrack_full_seen: maps.conntrack_full(),
            maps,
            node,
            history: Arc::default(),
            attached: BTreeSet::new(),
            uplinks,
            uplinks_attached: BTreeSet::new(),
            attached_ifindex: Default::default(),
            fail_closed: 0,
        };
        d.apply(snapshot)?;
        Ok(d)
    }

    /// Compiles and writes a generation, then attaches to any new local pod.
    pub fn apply(&mut self, snapshot: Arc<PolicySnapshot>) -> Result<ApplyStats, DatapathError> {
        let previous = self
            .history
            .lock()
            .expect("history lock")
            .entries
            .back()
            .map(|(_, t)| t.clone());
        let tables = Arc::new(compile(
            &snapshot.engine,
            &self.node,
            &mut self.numbering,
            previous.as_deref(),
            snapshot.generation,
        ));
        for e in &tables.failed {
            tracing::error!(
                "{e}: this pod is denied every connection in that direction (fail closed) until \
                 its policies fit"
            );
        }
        let stats = self.maps.apply(&tables)?;
        for (key, why) in &stats.fail_closed {
            let pod = tables
                .local_pods
                .get(&key.local_id)
                .map(|p| format!("{}/{}", p.namespace, p.name))
                .unwrap_or_default();
            let direction = if key.dir == DIR_EGRESS {
                "egress"
            } else {
                "ingress"
            };
            tracing::error!(
                "pod {pod} ({direction}): its policy tables could not be written ({why}); it is \
                 denied every connection in that direction (fail closed), retried at the next \
                 update"
            );
        }
        for e in &stats.errors {
            tracing::error!("policy maps: {e}");
        }
        self.fail_closed = tables.failed.len() + stats.fail_closed.len();
        {
            let mut h = self.history.lock().expect("history lock");
            h.entries.push_back((snapshot, tables));
            while h.entries.len() > HISTORY {
                h.entries.pop_front();
            }
        }
        self.reconcile_attachments();
        Ok(stats)
    }

    /// Attaches to the veth of every local pod that has one, detaches from pods that are gone.
    /// Called on every apply and periodically (a pod's veth may appear after the pod). The
    /// veth's pod addresses are written to `ifaces` before the programs are attached there.
    pub fn reconcile_attachments(&mut self) -> Vec<KernelError> {
        let mut want: std::collections::BTreeMap<String, Vec<IpAddr>> = Default::default();
        for pod in self.maps.applied().local_pods.values() {
            for ip in &pod.ips {
                if let Some(iface) = attach::host_interface_for(*ip) {
                    want.entry(iface).or_default().push(*ip);
                }
            }
        }
        let mut errors = Vec::new();
        for uplink in self.uplinks.clone() {
            if !self.uplinks_attached.contains(&uplink) {
                match attach::attach_uplink(&mut self.maps, &uplink) {
                    Ok(()) => {
                        tracing::info!(interface = %uplink, "attached to uplink");
                        self.uplinks_attached.insert(uplink);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "uplink attach failed");
                        errors.push(e);
                    }
                }
            }
        }
        for (iface, ips) in &want {
            let index = match attach::ifindex(iface) {
                Ok(i) => i,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            // A veth renamed or re-created under the same name has a new index.
            if let Some(old) = self
                .attached_ifindex
                .get(iface)
                .filter(|old| **old != index)
            {
                self.maps.remove_iface(*old);
            }
            if let Err(e) = self.maps.set_iface(index, ips) {
                tracing::warn!(error = %e, interface = %iface, "not attached");
                errors.push(e);
                continue;
            }
            self.attached_ifindex.insert(iface.clone(), index);
            if self.attached.contains(iface) {
                continue;
            }
            match attach::attach(&mut self.maps, iface) {
                Ok(()) => {
                    tracing::info!(interface = %iface, "attached");
                    self.attached.insert(iface.clone());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "attach failed");
                    errors.push(e);
                }
            }
        }
        for iface in self
            .attached
            .iter()
            .filter(|i| !want.contains_key(*i))
            .cloned()
            .collect::<Vec<_>>()
        {
            let _ = attach::detach(&iface);
            self.attached.remove(&iface);
            if let Some(index) = self.attached_ifindex.remove(&iface) {
                self.maps.remove_iface(index);
            }
        }
        errors
    }

    /// Publishes the kernel's counters (drops before any decision, conntrack inserts that
    /// failed) and the fail-closed pods to `metrics`.
    pub fn publish(&mut self, metrics: &crate::metrics::Metrics) {
        for (i, (reason, n)) in self.maps.drops().into_iter().enumerate() {
            let seen = self.drops_seen.get(i).copied().unwrap_or(0);
            metrics
                .datapath_dropped(reason)
                .inc_by(n.saturating_sub(seen));
            if let Some(s) = self.drops_seen.get_mut(i) {
                *s = n;
            }
        }
        let full = self.maps.conntrack_full();
        metrics
            .conntrack_insert_failures
            .inc_by(full.saturating_sub(self.conntrack_full_seen));
        self.conntrack_full_seen = full;
        metrics.pods_fail_closed.set(self.fail_closed as i64);
    }

    pub fn attached_interfaces(&self) -> &BTreeSet<String> {
        &self.attached
    }

    /// Events the kernel lost since the last call (ring buffer full).
    pub fn take_lost_events(&mut self) -> u64 {
        let now = self.maps.lost_events();
        let delta = now.saturating_sub(self.lost_seen);
        self.lost_seen = now;
        delta
    }

    /// Reads the ring buffer on a task, sending events to the pipeline (waiting when it is full:
    /// the kernel then counts what it cannot queue). When `stop` fires, whatever the ring buffer
    /// holds is read and sent before the task ends.
    pub fn spawn_event_reader(
        &mut self,
        events: mpsc::Sender<VerdictEvent>,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) -> Result<tokio::task::JoinHandle<()>, DatapathError> {
        let ring = self.maps.take_events()?;
        let mut fd = register_ring(ring)?;
        let history = self.history.clone();
        Ok(tokio::spawn(async move {
            let mut batch = Vec::new();
            loop {
                let stopping = tokio::select! {
                    _ = &mut stop => true,
                    ready = fd.readable_mut() => match ready {
                        Ok(mut guard) => {
                            drain(guard.get_inner_mut(), &history, &mut batch);
                            guard.clear_ready();
                            false
                        }
                        Err(_) => true,
                    },
                };
                if stopping {
                    drain(fd.get_mut(), &history, &mut batch);
                }
                for ev in batch.drain(..) {
                    if events.send(ev).await.is_err() {
                        return;
                    }
                }
                if stopping {
                    return;
                }
            }
        }))
    }

    /// Detaches from every interface we attached to and removes the pinned maps.
    pub fn uninstall(self) -> Result<(), KernelError> {
        for iface in self.attached.iter().chain(&self.uplinks_attached) {
            attach::detach(iface)?;
        }
        let pin_dir = self.maps.pin_dir.clone();
        drop(self.maps);
        remove_pins(&pin_dir)
    }
}

impl Datapath for EbpfDatapath {
    fn name(&self) -> &'static str {
        "ebpf"
    }

    fn install(&mut self, snapshot: Arc<PolicySnapshot>) {
        match self.apply(snapshot) {
            Ok(s) => tracing::info!(
                writes = s.writes,
                pods_changed = s.pod_dirs_changed,
                fail_closed = s.fail_closed.len(),
                "policy maps updated"
            ),
            Err(e) => {
                tracing::error!(error = %e, "policy maps not updated; the previous policy stays in force")
            }
        }
    }
}

/// Removes Verdict's filters from every interface and its pinned maps (`verdict-probe --uninstall`).
pub fn uninstall_everywhere(pin_dir: &Path) -> Result<(), KernelError> {
    for entry in std::fs::read_dir("/sys/class/net")? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        attach::detach(&name)?;
    }
    remove_pins(pin_dir)
}

fn remove_pins(pin_dir: &Path) -> Result<(), KernelError> {
    if pin_dir.exists() {
        for entry in std::fs::read_dir(pin_dir)? {
            std::fs::remove_file(entry?.path())?;
        }
        std::fs::remove_dir(pin_dir)?;
    }
    Ok(())
}

/// Reads every event the ring buffer holds.
fn drain(
    ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
    history: &Mutex<History>,
    out: &mut Vec<VerdictEvent>,
) {
    let offset = monotonic_to_wall_offset();
    let h = history.lock().expect("history lock");
    while let Some(item) = ring.next() {
        if let Some(raw) = read_event(&item)
            && let Some(ev) = convert(&raw, &h, offset)
        {
            out.push(ev);
        }
    }
}

/// Registers the ring buffer with the reactor.
#[allow(unsafe_code)]
fn register_ring(
    ring: aya::maps::RingBuf<aya::maps::MapData>,
) -> Result<AsyncFd<aya::maps::RingBuf<aya::maps::MapData>>, KernelError> {
    // SAFETY: the RingBuf owns its map fd for its whole life and always returns that same fd from
    // as_raw_fd; the AsyncFd takes ownership of the RingBuf, so the fd outlives the registration.
    unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| KernelError::Io(e.into()))
}

/// Wall time minus CLOCK_MONOTONIC (what bpf_ktime_get_ns reads), in nanoseconds.
#[allow(unsafe_code)]
fn monotonic_to_wall_offset() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    let mono = ts.tv_sec * 1_000_000_000 + ts.tv_nsec;
    Timestamp::now().unix_nanos() - mono
}

fn protocol(n: u8) -> Protocol {
    match n {
        PROTO_TCP => Protocol::Tcp,
        PROTO_UDP => Protocol::Udp,
        PROTO_SCTP => Protocol::Sctp,
        PROTO_ICMP => Protocol::Icmp,
        PROTO_ICMPV6 => Protocol::Icmpv6,
        other => Protocol::Other(other.to_string()),
    }
}

/// A kernel event as the pipeline's [`VerdictEvent`]: policies by name from the tables of the
/// event's table version, ids from the engine of its generation.
fn convert(raw: &VerdictEventRaw, history: &History, offset: i64) -> Option<VerdictEvent> {
    let snapshot = history
        .entries
        .iter()
        .rev()
        .find(|(_, t)| t.generation == raw.generation)
        .or_else(|| history.entries.back())
        .map(|(s, _)| s)?;
    let key = PodDirKey {
        local_id: raw.local_id,
        dir: u32::from(raw.dir),
    };
    let policies = history
        .entries
        .iter()
        .rev()
        .filter_map(|(_, t)| t.pod_dirs.get(&key))
        .find(|t| t.version == raw.table_version)
        .map(|t| t.policies.clone())
        .unwrap_or_default();
    let allowing = (0..MAX_POLICIES)
        .filter(|b| raw.policy_mask[b / 64] & (1u64 << (b % 64)) != 0)
        .filter_map(|b| policies.get(b))
        .filter_map(|(ns, name)| snapshot.engine.find_policy(ns, name))
        .collect();
    let src: IpAddr = key_ip(raw.src);
    let dst: IpAddr = key_ip(raw.dst);
    Some(VerdictEvent {
        timestamp: Timestamp::from_unix_nanos(raw.ts_ns as i64 + offset),
        generation: snapshot.generation,
        src_ip: src,
        dest_ip: dst,
        src_port: raw.sport,
        dest_port: raw.dport,
        protocol: protocol(raw.proto),
        direction: if u32::from(raw.dir) == DIR_EGRESS {
            Direction::Egress
        } else {
            Direction::Ingress
        },
        allowed: raw.allowed != 0,
        reason: match raw.reason {
            REASON_ALLOWED_BY_POLICY => Reason::AllowedByPolicy,
            REASON_NODE_LOCAL => Reason::NodeLocal,
            _ => Reason::NoRuleMatched,
        },
        isolated: true,
        allowing,
        enforcement: if raw.audit != 0 {
            EnforcementMode::Audit
        } else {
            EnforcementMode::Enforce
        },
    })
}

/// Runs the eBPF datapath for `agent` until `stop` resolves: policy updates, attachments to new
/// pods, lost events. Logs "datapath: ebpf, ready" once events flow. Programs stay attached when
/// this returns: enforcement outlives the agent (`verdict-probe --uninstall` removes them).
pub async fn run_with_agent(
    mut ebpf: EbpfDatapath,
    agent: &crate::agent::Agent,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), DatapathError> {
    let (stop_reader, reader_stopped) = tokio::sync::oneshot::channel();
    let reader = ebpf.spawn_event_reader(agent.events.clone(), reader_stopped)?;
    tracing::info!(
        interfaces = ebpf.attached_interfaces().len(),
        "datapath: ebpf, ready"
    );
    let lost = agent.lost_events_counter();
    let mut snapshots = agent.snapshots.clone();
    let mut snapshots_open = true;
    let mut every_second = tokio::time::interval(std::time::Duration::from_secs(1));
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            changed = snapshots.changed(), if snapshots_open => match changed {
                Ok(()) => ebpf.install(snapshots.borrow_and_update().clone()),
                Err(_) => snapshots_open = false,
            },
            _ = every_second.tick() => {
                ebpf.reconcile_attachments();
                report_lost(&mut ebpf, &lost);
                ebpf.publish(&agent.metrics);
            }
        }
    }
    report_lost(&mut ebpf, &lost);
    // Read what the ring buffer still holds into the pipeline before it stops.
    let _ = stop_reader.send(());
    let _ = reader.await;
    Ok(())
}

/// Lost-event accounting shared with the agent.
pub fn report_lost(datapath: &mut EbpfDatapath, counter: &AtomicU64) {
    let n = datapath.take_lost_events();
    if n > 0 {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
