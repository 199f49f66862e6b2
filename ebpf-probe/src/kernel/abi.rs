//! The kernel ABI: `#[repr(C)]` twins of the structs in `bpf/verdict.h`, byte for byte.
//!
//! `aya::Pod` is an unsafe marker trait ("plain old data: any bit pattern is valid, no padding
//! the kernel would read uninitialised"); every struct here is made only of integers and byte
//! arrays with explicit padding fields, which is what makes those impls sound.
#![allow(unsafe_code)]

pub const RULES_PER_CHUNK: usize = 64;
pub const MAX_CHUNKS: usize = 32;
pub const MAX_RULES: usize = RULES_PER_CHUNK * MAX_CHUNKS;
pub const MAX_POLICIES: usize = 512;
pub const POLICY_WORDS: usize = MAX_POLICIES / 64;
pub const MAX_PORTS: usize = 8;
pub const MAX_IFACE_IPS: usize = 4;
/// The `peer_masks` identity of rules without peers.
pub const ANY_PEER: u32 = 0;

pub const DIR_INGRESS: u32 = 0;
pub const DIR_EGRESS: u32 = 1;

pub const EP_POD: u32 = 1;
pub const EP_HOST_LOCAL: u32 = 2;

pub const PD_ISOLATED: u32 = 1;
pub const PD_AUDIT: u32 = 2;
pub const PD_FAIL_CLOSED: u32 = 4;

pub const REASON_ALLOWED_BY_POLICY: u8 = 1;
pub const REASON_NODE_LOCAL: u8 = 2;
pub const REASON_NO_RULE_MATCHED: u8 = 3;

pub const STAT_LOST_EVENTS: u32 = 0;
pub const STAT_SPOOFED: u32 = 1;
pub const STAT_NOT_FOR_POD: u32 = 2;
pub const STAT_FRAGMENT: u32 = 3;
pub const STAT_MALFORMED: u32 = 4;
pub const STAT_CT_FULL: u32 = 5;
pub const STAT_UNKNOWN_POD: u32 = 6;
/// The datapath's drop counters (stats index, metric reason), all taken before any policy
/// decision.
pub const DROP_STATS: [(u32, &str); 5] = [
    (STAT_SPOOFED, "spoofed_source"),
    (STAT_NOT_FOR_POD, "not_for_pod"),
    (STAT_FRAGMENT, "fragment_without_first"),
    (STAT_MALFORMED, "malformed"),
    (STAT_UNKNOWN_POD, "unknown_pod"),
];

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;
pub const PROTO_SCTP: u8 = 132;

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EpKey {
    pub ip: [u8; 16],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EpVal {
    pub identity: u32,
    pub local_id: u32,
    pub flags: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodDirKey {
    pub local_id: u32,
    pub dir: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PodDirVal {
    pub table_version: u64,
    pub rule_base: u32,
    pub n_rules: u32,
    pub flags: u32,
    pub identity: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerKey {
    pub local_id: u32,
    pub dir: u16,
    pub chunk: u16,
    pub identity: u32,
    pub version: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MaskVal {
    pub mask: u64,
}

/// The part of an LPM key after `prefixlen` (aya's `lpm_trie::Key` adds the prefix length).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LpmData {
    pub local_id: u32,
    pub dir: u16,
    pub chunk: u16,
    pub version: u32,
    pub ip: [u8; 16],
}

/// Bits of an LPM key before the address (local_id, dir, chunk, version).
pub const LPM_FIXED_BITS: u32 = 96;

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PortRange {
    pub proto: u8,
    pub named: u8,
    pub lo: u16,
    pub hi: u16,
    pub pad: u16,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Rule {
    pub policy_idx: u32,
    pub n_ports: u32,
    pub ports: [PortRange; MAX_PORTS],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamedKey {
    pub identity: u32,
    pub name_id: u32,
    pub proto: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NamedVal {
    pub port: u32,
    pub pad: u32,
}

/// The addresses of the pod behind a host veth (key: the veth's ifindex).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct IfaceVal {
    pub ips: [[u8; 16]; MAX_IFACE_IPS],
    pub n_ips: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Config {
    pub generation: u64,
    pub idle_ns: u64,
    pub calico: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct VerdictEventRaw {
    pub ts_ns: u64,
    pub generation: u64,
    pub table_version: u64,
    pub policy_mask: [u64; POLICY_WORDS],
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub local_id: u32,
    pub proto: u8,
    pub dir: u8,
    pub allowed: u8,
    pub reason: u8,
    pub audit: u8,
    pub pad: [u8; 3],
}

unsafe impl aya::Pod for EpKey {}
unsafe impl aya::Pod for EpVal {}
unsafe impl aya::Pod for PodDirKey {}
unsafe impl aya::Pod for PodDirVal {}
unsafe impl aya::Pod for PeerKey {}
unsafe impl aya::Pod for MaskVal {}
unsafe impl aya::Pod for LpmData {}
unsafe impl aya::Pod for PortRange {}
unsafe impl aya::Pod for Rule {}
unsafe impl aya::Pod for NamedKey {}
unsafe impl aya::Pod for NamedVal {}
unsafe impl aya::Pod for Config {}
unsafe impl aya::Pod for IfaceVal {}

/// An address as the kernel keys it: IPv4 as `::ffff:a.b.c.d`.
pub fn ip_key(ip: std::net::IpAddr) -> [u8; 16] {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(v6) => v6.octets(),
    }
}

/// The address of a kernel key (IPv4-mapped addresses become IPv4).
pub fn key_ip(bytes: [u8; 16]) -> std::net::IpAddr {
    let v6 = std::net::Ipv6Addr::from(bytes);
    match v6.to_ipv4_mapped() {
        Some(v4) => std::net::IpAddr::V4(v4),
        None => std::net::IpAddr::V6(v6),
    }
}

/// Reads a raw event from ring-buffer bytes.
pub fn read_event(bytes: &[u8]) -> Option<VerdictEventRaw> {
    if bytes.len() < std::mem::size_of::<VerdictEventRaw>() {
        return None;
    }
    // SAFETY: the length was checked and VerdictEventRaw is plain integers (any bit pattern is
    // valid); read_unaligned copes with the ring buffer's 8-byte alignment not being guaranteed
    // for the slice.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<VerdictEventRaw>()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_the_c_side() {
        // Computed from bpf/verdict.h by hand; a mismatch corrupts every map.
        assert_eq!(std::mem::size_of::<EpVal>(), 16);
        assert_eq!(std::mem::size_of::<PodDirVal>(), 24);
        assert_eq!(std::mem::size_of::<PeerKey>(), 16);
        assert_eq!(std::mem::size_of::<LpmData>(), 28);
        assert_eq!(std::mem::size_of::<PortRange>(), 8);
        assert_eq!(std::mem::size_of::<Rule>(), 8 + 8 * MAX_PORTS);
        assert_eq!(std::mem::size_of::<Config>(), 24);
        assert_eq!(std::mem::size_of::<IfaceVal>(), 16 * MAX_IFACE_IPS + 8);
        assert_eq!(
            std::mem::size_of::<VerdictEventRaw>(),
            24 + 8 * POLICY_WORDS + 32 + 8 + 8
        );
    }

    #[test]
    fn addresses_round_trip() {
        for s in ["10.1.2.3", "fd00::1", "::1"] {
            let ip: std::net::IpAddr = s.parse().unwrap();
            assert_eq!(key_ip(ip_key(ip)), ip);
        }
    }
}
