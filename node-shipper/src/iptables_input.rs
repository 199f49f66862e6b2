//! The kube-iptables-tailer source (seed 004): iptables LOG lines of dropped packets become
//! deny records in the policy-action format, and optionally Kubernetes Events on the pods.
//!
//! - Lines come from a kernel log file (followed like any log: generations, byte-offset
//!   sequences, rotations) or from `/dev/kmsg` (one source per boot, the kernel's record
//!   numbers as sequences).
//! - A line carrying a configured prefix is parsed ([`crate::iptables_log`]); one that does not
//!   parse is malformed (counted, reported with file and offset, skipped).
//! - The same drop — (src, dst, protocol, dst port) — again within the dedup window is a repeat
//!   and is not shipped (counted as `repeat`). The window is measured in the lines' own time
//!   where the line has one. It is not persisted: after a restart the first repeat is shipped.
//! - Endpoints are pods by IP (cluster state), else `{"instance": IP}`. The direction is chosen
//!   by which side is on this node: the destination pod here means ingress, else the source
//!   pod here means egress; with neither, the LOG line's interfaces decide (no input interface:
//!   sent by this host, egress).
//! - Records are exactly [`verdict_schema::PolicyActionRecord`] with disposition deny, count 1
//!   and no `policies` (Kubernetes has no deny rules), sent as structured `FlowRecord`s.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use verdict_schema::proto::v1;
use verdict_schema::{Connection, Direction, Disposition, PolicyActionRecord, Protocol, Timestamp};

use crate::config::IptablesConfig;
use crate::input::{Entry, Input, Origin, Position, Run, SourceInfo, source_of};
use crate::iptables_log::{PacketDrop, parse_kmsg, parse_line};
use crate::metrics::{DropReason, InputMetrics};
use crate::pod_directory::{PodDirectory, PodInfo};
use crate::tailer::FileTailer;

/// What an Event on one affected pod says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropNotice {
    pub pod: PodInfo,
    /// The pod was receiving (it is the destination) rather than sending.
    pub receiving: bool,
    pub peer_ip: IpAddr,
    /// The peer's pod, Service or node name when the cluster state knows it.
    pub peer_name: Option<String>,
    pub timestamp: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct DropKey {
    src: IpAddr,
    dst: IpAddr,
    protocol_tcp_udp_other: u8,
    dest_port: u16,
}

/// Remembers recent drops for the dedup window (bounded).
#[derive(Debug)]
pub struct RepeatFilter {
    window_nanos: i64,
    max_entries: usize,
    seen: HashMap<DropKey, i64>,
}

impl RepeatFilter {
    pub fn new(window: std::time::Duration, max_entries: usize) -> Self {
        RepeatFilter {
            window_nanos: i64::try_from(window.as_nanos()).unwrap_or(i64::MAX),
            max_entries: max_entries.max(1),
            seen: HashMap::new(),
        }
    }

    /// Whether `d` at `at` repeats a drop shipped less than a window before.
    pub fn is_repeat(&mut self, d: &PacketDrop, at: Timestamp) -> bool {
        let key = DropKey {
            src: d.src_ip,
            dst: d.dest_ip,
            protocol_tcp_udp_other: match d.protocol {
                Protocol::Tcp => 6,
                Protocol::Udp => 17,
                Protocol::Sctp => 132,
                Protocol::Icmp => 1,
                Protocol::Icmpv6 => 58,
                Protocol::Other(_) => 0,
            },
            dest_port: d.dest_port,
        };
        let t = at.unix_nanos();
        if let Some(first) = self.seen.get(&key)
            && t >= *first
            && t - *first < self.window_nanos
        {
            return true;
        }
        if self.seen.len() >= self.max_entries {
            let window = self.window_nanos;
            self.seen
                .retain(|_, first| t.saturating_sub(*first) < window);
            if self.seen.len() >= self.max_entries {
                // Still full of fresh drops: forget them all rather than grow (a forgotten
                // drop is shipped again, never lost).
                self.seen.clear();
            }
        }
        self.seen.insert(key, t);
        false
    }
}

/// Builds the deny record of a drop, choosing the direction from which side is on `node`.
pub fn deny_record(
    d: &PacketDrop,
    dir: &PodDirectory,
    node: &str,
    at: Timestamp,
) -> PolicyActionRecord {
    let local = |ip: &IpAddr| {
        dir.pod(ip)
            .is_some_and(|p| p.node_name.as_deref() == Some(node))
    };
    let direction = if local(&d.dest_ip) {
        Direction::Ingress
    } else if local(&d.src_ip) || d.in_interface.is_empty() {
        Direction::Egress
    } else {
        Direction::Ingress
    };
    PolicyActionRecord {
        connection: Connection {
            src_ip: d.src_ip,
            dest_ip: d.dest_ip,
            src_port: d.src_port,
            dest_port: d.dest_port,
            protocol: d.protocol.clone(),
            direction,
        },
        disposition: Disposition::Deny,
        policies: None,
        src: dir.endpoint(d.src_ip),
        dest: dir.endpoint(d.dest_ip),
        count: 1,
        node_name: node.to_owned(),
        timestamp: at,
        enforcement: None,
    }
}

/// The Events a drop calls for: one per side that is a known pod.
pub fn notices(d: &PacketDrop, dir: &PodDirectory, at: Timestamp) -> Vec<DropNotice> {
    let name = |ip: &IpAddr| {
        dir.pod(ip)
            .map(|p| p.name.clone())
            .or_else(|| dir.name(ip).map(str::to_owned))
    };
    let mut out = Vec::new();
    if let Some(p) = dir.pod(&d.dest_ip) {
        out.push(DropNotice {
            pod: p.clone(),
            receiving: true,
            peer_ip: d.src_ip,
            peer_name: name(&d.src_ip),
            timestamp: at,
        });
    }
    if let Some(p) = dir.pod(&d.src_ip) {
        out.push(DropNotice {
            pod: p.clone(),
            receiving: false,
            peer_ip: d.dest_ip,
            peer_name: name(&d.dest_ip),
            timestamp: at,
        });
    }
    out
}

/// Where the kernel log lines come from.
#[derive(Debug)]
enum KernelLog {
    File(Box<FileTailer>),
    Kmsg(KmsgReader),
}

/// Kernel log lines to record entries.
#[derive(Debug)]
struct Translator {
    prefixes: Vec<String>,
    node: String,
    repeats: RepeatFilter,
    notices: Option<mpsc::Sender<DropNotice>>,
    all_metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Drops read, malformed lines and repeats of the current read.
    counts: (u64, u64, u64),
}

/// The iptables input.
#[derive(Debug)]
pub struct IptablesInput {
    log: KernelLog,
    translator: Translator,
    directory: watch::Receiver<Arc<PodDirectory>>,
    metrics: Arc<InputMetrics>,
    current: Option<Arc<SourceInfo>>,
}

impl IptablesInput {
    pub const NAME: &'static str = "iptables";

    pub fn open(
        config: &IptablesConfig,
        checkpoint: Option<&Position>,
        node: &str,
        directory: watch::Receiver<Arc<PodDirectory>>,
        notices: Option<mpsc::Sender<DropNotice>>,
        metrics: &Arc<crate::metrics::Metrics>,
        max_line_bytes: usize,
    ) -> std::io::Result<Self> {
        let log = if config.log_path == Path::new("/dev/kmsg") {
            let after = match checkpoint {
                Some(Position::Kmsg { boot_id, sequence }) => Some((boot_id.clone(), *sequence)),
                _ => None,
            };
            KernelLog::Kmsg(KmsgReader::open(&config.log_path, after)?)
        } else {
            let cp = match checkpoint {
                Some(Position::File(cp)) => Some(cp),
                _ => None,
            };
            KernelLog::File(Box::new(
                FileTailer::new(&config.log_path, cp)?.with_max_line_bytes(max_line_bytes),
            ))
        };
        Ok(IptablesInput {
            log,
            translator: Translator {
                prefixes: config.prefixes.clone(),
                node: node.to_owned(),
                repeats: RepeatFilter::new(config.dedup_window, config.dedup_entries),
                notices,
                all_metrics: Some(Arc::clone(metrics)),
                counts: (0, 0, 0),
            },
            directory,
            metrics: metrics.input(Self::NAME),
            current: None,
        })
    }
}

impl Translator {
    /// Turns one kernel log line into a record entry (or nothing).
    fn take_line(
        &mut self,
        text: &str,
        sequence: u64,
        kernel_time: Option<Timestamp>,
        where_: &dyn Fn() -> String,
        dir: &PodDirectory,
    ) -> Option<Entry> {
        let counts = &mut self.counts;
        let d = match parse_line(text, &self.prefixes)? {
            Ok(d) => d,
            Err(e) => {
                counts.1 += 1;
                tracing::warn!(
                    input = IptablesInput::NAME,
                    "malformed iptables LOG line skipped: {}: {e}",
                    where_()
                );
                return None;
            }
        };
        counts.0 += 1;
        let at = d.timestamp.or(kernel_time).unwrap_or_else(Timestamp::now);
        if self.repeats.is_repeat(&d, at) {
            counts.2 += 1;
            return None;
        }
        if let Some(tx) = &self.notices {
            for n in notices(&d, dir, at) {
                if tx.try_send(n).is_err()
                    && let Some(m) = &self.all_metrics
                {
                    m.events.dropped_queue_full.inc();
                }
            }
        }
        let record = deny_record(&d, dir, &self.node, at);
        Some(Entry {
            sequence,
            log_id: v1::LogId::PolicyAction,
            payload: v1::record::Payload::Flow(Box::new(v1::FlowRecord::from(&record))),
            bytes: 256,
        })
    }
}

fn push(runs: &mut Vec<Run>, source: &Arc<SourceInfo>, entry: Entry) {
    match runs.last_mut() {
        Some(r) if Arc::ptr_eq(&r.source, source) => r.entries.push(entry),
        _ => runs.push(Run {
            source: Arc::clone(source),
            entries: vec![entry],
        }),
    }
}

impl Input for IptablesInput {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn read(&mut self, max_bytes: usize) -> std::io::Result<Vec<Run>> {
        let dir = Arc::clone(&self.directory.borrow());
        let mut runs = Vec::new();
        let tr = &mut self.translator;
        tr.counts = (0, 0, 0);
        match &mut self.log {
            KernelLog::File(tailer) => {
                let lines = tailer.poll_up_to(max_bytes)?;
                for line in lines {
                    let source = source_of(
                        &mut self.current,
                        tailer,
                        &line,
                        v1::SourceKind::KernelLogFile,
                    );
                    let text = String::from_utf8_lossy(&line.bytes);
                    let where_ = || format!("{} offset {}", source.path.display(), line.start);
                    if let Some(e) = tr.take_line(&text, line.sequence, None, &where_, &dir) {
                        push(&mut runs, &source, e);
                    }
                }
            }
            KernelLog::Kmsg(reader) => {
                let records = reader.read(max_bytes)?;
                let source = Arc::clone(reader.source());
                let boot = reader.boot_unix_nanos;
                if reader.overrun > 0 {
                    self.metrics
                        .count_drop(DropReason::KmsgOverrun, std::mem::take(&mut reader.overrun));
                }
                for raw in records {
                    let Some(rec) = parse_kmsg(&raw) else {
                        continue;
                    };
                    let kernel_time = Some(Timestamp::from_unix_nanos(
                        boot + i64::try_from(rec.micros).unwrap_or(0) * 1000,
                    ));
                    let where_ = || format!("/dev/kmsg record {}", rec.sequence);
                    // kmsg numbers records from 0; the collector's watermarks start at 0.
                    if let Some(e) =
                        tr.take_line(rec.message, rec.sequence + 1, kernel_time, &where_, &dir)
                    {
                        push(&mut runs, &source, e);
                    }
                }
            }
        }
        let (read, malformed, repeats) = tr.counts;
        self.metrics.records_read.inc_by(read);
        self.metrics.count_drop(DropReason::Malformed, malformed);
        self.metrics.count_drop(DropReason::Repeat, repeats);
        Ok(runs)
    }

    fn unread_bytes(&self) -> u64 {
        match &self.log {
            KernelLog::File(t) => t.position().map_or(0, |(p, offset)| {
                std::fs::metadata(p).map_or(0, |m| m.len().saturating_sub(offset))
            }),
            KernelLog::Kmsg(_) => 0,
        }
    }
}

/// `/dev/kmsg`, read without blocking; one source per boot (sequences restart at boot).
#[derive(Debug)]
pub struct KmsgReader {
    file: File,
    source: Arc<SourceInfo>,
    /// Records at or below this sequence were acknowledged before a restart.
    skip_through: Option<u64>,
    buf: Vec<u8>,
    /// Records the kernel overwrote before we read them (since the last read).
    pub overrun: u64,
    /// Wall-clock time of boot, for the records' monotonic microseconds.
    pub boot_unix_nanos: i64,
}

impl KmsgReader {
    pub fn open(path: &Path, after: Option<(String, u64)>) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)?;
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?
            .trim()
            .to_owned();
        let uptime: f64 = std::fs::read_to_string("/proc/uptime")?
            .split_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0.0);
        let boot_unix_nanos = Timestamp::now().unix_nanos() - (uptime * 1e9) as i64;
        let skip_through = after.filter(|(b, _)| *b == boot_id).map(|(_, seq)| seq);
        Ok(KmsgReader {
            file,
            source: Arc::new(SourceInfo {
                id: format!("kmsg-{boot_id}"),
                kind: v1::SourceKind::Kmsg,
                path: path.to_owned(),
                origin: Origin::Kmsg { boot_id },
            }),
            skip_through,
            buf: vec![0; 16 * 1024],
            overrun: 0,
            boot_unix_nanos,
        })
    }

    pub fn source(&self) -> &Arc<SourceInfo> {
        &self.source
    }

    /// Reads the records available now (about `max_bytes`), skipping acknowledged ones.
    pub fn read(&mut self, max_bytes: usize) -> std::io::Result<Vec<String>> {
        let mut out = Vec::new();
        let mut total = 0;
        while total < max_bytes {
            match self.file.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => {
                    total += n;
                    let text = String::from_utf8_lossy(&self.buf[..n]).into_owned();
                    // The "+ 1" matches the sequence the input ships (kmsg counts from 0).
                    let seq = parse_kmsg(&text).map(|r| r.sequence + 1);
                    if let (Some(seq), Some(skip)) = (seq, self.skip_through)
                        && seq <= skip
                    {
                        continue;
                    }
                    out.push(text);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // The ring buffer wrapped past our position: records were lost; reading
                // continues from the oldest one still there.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => self.overrun += 1,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drop_line(src: &str, dst: &str) -> PacketDrop {
        parse_line(
            &format!("calico-drop: IN=cali1 OUT=eth0 SRC={src} DST={dst} LEN=60 PROTO=TCP SPT=40000 DPT=80"),
            &["calico-drop:".to_owned()],
        )
        .unwrap()
        .unwrap()
    }

    #[test]
    fn repeats_within_the_window_are_filtered_and_bounded() {
        let mut f = RepeatFilter::new(std::time::Duration::from_secs(10), 2);
        let t = |s: i64| Timestamp::from_unix_nanos(s * 1_000_000_000);
        let a = drop_line("10.0.0.1", "10.0.0.2");
        assert!(!f.is_repeat(&a, t(100)));
        assert!(f.is_repeat(&a, t(109)));
        assert!(!f.is_repeat(&a, t(110)), "a new window starts");
        let b = drop_line("10.0.0.1", "10.0.0.3");
        let c = drop_line("10.0.0.1", "10.0.0.4");
        assert!(!f.is_repeat(&b, t(111)));
        assert!(!f.is_repeat(&c, t(112)));
        assert!(f.seen.len() <= 2);
    }
}
