//! Attaching the programs to pod veths, and finding them.
//!
//! A pod's host-side interface is the one its host route points at (`/proc/net/route`,
//! `/proc/net/ipv6_route`): CNIs like ptp, Calico and Cilium route each pod IP to its veth.
//! Programs are attached as classic TC (netlink) filters at a fixed priority and handle, so they
//! stay attached — and keep enforcing — when the agent exits, and a restarted agent replaces them
//! in place (no moment without enforcement). `uninstall` removes them.

use std::net::IpAddr;

use aya::programs::links::Link;
use aya::programs::tc::{NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle};
use aya::programs::{SchedClassifier, TcAttachType, tc};

use super::maps::{KernelError, KernelMaps};

/// TC filter priority and handle of Verdict's programs.
pub const PRIORITY: u16 = 0x5644; // "VD"
pub const HANDLE: TcHandle = TcHandle::new(0, 1);

const HOOKS: [(&str, TcAttachType); 2] = [
    ("verdict_from_pod", TcAttachType::Ingress),
    ("verdict_to_pod", TcAttachType::Egress),
];

/// The interface the host routes `ip` to with a host route, if any.
pub fn host_interface_for(ip: IpAddr) -> Option<String> {
    match ip {
        IpAddr::V4(v4) => {
            let text = std::fs::read_to_string("/proc/net/route").ok()?;
            let want = u32::from_le_bytes(v4.octets());
            text.lines().skip(1).find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
                let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
                (dest == want && mask == u32::MAX).then(|| f[0].to_owned())
            })
        }
        IpAddr::V6(v6) => {
            let text = std::fs::read_to_string("/proc/net/ipv6_route").ok()?;
            let want: String = v6.octets().iter().map(|b| format!("{b:02x}")).collect();
            text.lines().find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.first() == Some(&want.as_str()) && f.get(1) == Some(&"80"))
                    .then(|| f.get(9).map(|s| s.to_string()))
                    .flatten()
            })
        }
    }
}

/// The index of `interface` (in this thread's network namespace).
#[allow(unsafe_code)]
pub fn ifindex(interface: &str) -> Result<u32, KernelError> {
    let err = |message: String| KernelError::Attach {
        interface: interface.to_owned(),
        message,
    };
    let name = std::ffi::CString::new(interface).map_err(|e| err(e.to_string()))?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(err(std::io::Error::last_os_error().to_string()));
    }
    Ok(index)
}

/// Attaches both programs to `interface`, replacing ours if already there.
pub fn attach(maps: &mut KernelMaps, interface: &str) -> Result<(), KernelError> {
    add_clsact(interface);
    for (name, attach_type) in HOOKS {
        attach_hook(maps, interface, name, attach_type)?;
    }
    Ok(())
}

/// Attaches the post-DNAT hook to a node uplink (tc egress): Service traffic from local pods to
/// backends on other nodes gets its egress decision there.
pub fn attach_uplink(maps: &mut KernelMaps, interface: &str) -> Result<(), KernelError> {
    add_clsact(interface);
    let (name, attach_type) = HOOKS[1];
    attach_hook(maps, interface, name, attach_type)
}

/// `--uplink auto`: the interfaces this node's default routes leave by (IPv4 and IPv6), read
/// from `/proc/net/route` and `/proc/net/ipv6_route` of the agent's network namespace (the
/// node's: the agent uses the host network). Traffic to other nodes' pods leaves there.
pub fn uplinks(requested: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in requested {
        if name == "auto" {
            let v4 = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
            let v6 = std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
            let found = default_route_interfaces(&v4, &v6);
            if found.is_empty() {
                tracing::warn!(
                    "--uplink auto: this node has no default route; no uplink is attached"
                );
            }
            out.extend(found);
        } else {
            out.push(name.clone());
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The interfaces of the default routes in the kernel's route tables (`/proc/net/route`,
/// `/proc/net/ipv6_route` text), loopback excluded, in order of appearance.
pub fn default_route_interfaces(route_v4: &str, route_v6: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    // Iface Destination Gateway Flags RefCnt Use Metric Mask ...; hex, host byte order.
    for line in route_v4.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 8 && f[1] == "00000000" && f[7] == "00000000" {
            out.push(f[0].to_owned());
        }
    }
    // dest plen src splen next_hop metric refcnt use flags iface
    for line in route_v6.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 10 && f[0].bytes().all(|b| b == b'0') && f[1] == "00" {
            out.push(f[9].to_owned());
        }
    }
    out.retain(|i| i != "lo");
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|i| seen.insert(i.clone()));
    out
}

/// Fails when the interface already has a clsact qdisc (ours from a previous run, or another
/// tool's, which we share): the filter attach is what decides.
fn add_clsact(interface: &str) {
    if let Err(e) = tc::qdisc_add_clsact(interface) {
        tracing::debug!(interface, error = %e, "clsact qdisc not added (probably present)");
    }
}

/// Attaches one program at our priority and handle, replacing our previous filter in place, and
/// leaves it attached when this process exits: enforcement must outlive the agent.
fn attach_hook(
    maps: &mut KernelMaps,
    interface: &str,
    name: &str,
    attach_type: TcAttachType,
) -> Result<(), KernelError> {
    let err = |message: String| KernelError::Attach {
        interface: interface.to_owned(),
        message,
    };
    let prog: &mut SchedClassifier = maps
        .ebpf
        .program_mut(name)
        .ok_or_else(|| err(format!("program {name} missing")))?
        .try_into()
        .map_err(|e| err(format!("{name}: {e}")))?;
    let id = match SchedClassifierLink::attached(interface, attach_type, PRIORITY, HANDLE, None) {
        Ok(existing) => prog.attach_to_link(existing).or_else(|_| {
            prog.attach_with_options(
                interface,
                attach_type,
                TcAttachOptions::Netlink(NlOptions {
                    priority: PRIORITY,
                    handle: HANDLE,
                    classid: None,
                }),
            )
        }),
        Err(e) => return Err(err(e.to_string())),
    }
    .map_err(|e| err(format!("{name}: {e:#}")))?;
    let link = prog.take_link(id).map_err(|e| err(e.to_string()))?;
    std::mem::forget(link);
    Ok(())
}

/// Removes both programs from `interface` (an interface that is gone took them along).
pub fn detach(interface: &str) -> Result<(), KernelError> {
    for (_, attach_type) in HOOKS {
        if let Ok(link) =
            SchedClassifierLink::attached(interface, attach_type, PRIORITY, HANDLE, None)
        {
            let _ = link.detach();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::default_route_interfaces;

    #[test]
    fn default_routes_name_the_uplinks() {
        let v4 = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            ens4\t00000000\t0100800A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
            ens4\t0000800A\t00000000\t0001\t0\t0\t100\t00F0FFFF\t0\t0\t0\n\
            cilium_host\t0001F40A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let v6 = "00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000002 00000000 00000001       lo\n\
            fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth1\n\
            00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eth1\n\
            00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n";
        assert_eq!(default_route_interfaces(v4, v6), ["ens4", "eth1"]);
        assert_eq!(default_route_interfaces(v4, ""), ["ens4"]);
        assert!(default_route_interfaces("Iface\tDestination\n", "").is_empty());
    }
}
