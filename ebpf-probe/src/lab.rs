//! A network-namespace lab: a "node" namespace with pods and outside hosts plugged into it the
//! way routed CNIs (ptp, Calico) plug pods — a veth pair per pod, the pod's /32 on `eth0`, a
//! default route via 169.254.1.1 answered by the node's proxy ARP, a host route per pod on the
//! node. The kernel tests and `verdict demo`'s eBPF mode run real traffic through it.
//!
//! Needs root and iproute2 (`ip`, `sysctl`). A [`Lab`] deletes every namespace it created when
//! dropped (veths and the programs attached to them go with them), also after a failure half way.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::process::Command;

/// A command of the lab failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("`{command}` could not run: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
}

/// Whether this process runs as root (effective uid 0 is what namespaces and eBPF need; the
/// real uid is what `/proc/self/status` lists first, and they agree for `sudo` and root shells).
pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Runs a command to completion; its stdout on success.
pub fn run(args: &[&str]) -> Result<String, LabError> {
    let command = args.join(" ");
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|source| LabError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(LabError::Command {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `args` inside network namespace `ns`.
pub fn run_in(ns: &str, args: &[&str]) -> Result<String, LabError> {
    run(&[&["ip", "netns", "exec", ns][..], args].concat())
}

/// Creates netns `ns` joined to netns `parent` by a veth pair (`veth` on the parent's side,
/// `eth0` inside): `ipv4`/32 on eth0, the default route via 169.254.1.1 (answered at once by
/// the parent's proxy ARP: `proxy_delay=0`, the default waits up to 0.8 s), and a host route to
/// it on the parent.
pub fn plug(parent: &str, ns: &str, veth: &str, ipv4: &str) -> Result<(), LabError> {
    run(&["ip", "netns", "add", ns])?;
    run_in(
        parent,
        &[
            "ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ],
    )?;
    run_in(ns, &["ip", "link", "set", "lo", "up"])?;
    run_in(ns, &["ip", "link", "set", "eth0", "up"])?;
    run_in(
        ns,
        &["ip", "addr", "add", &format!("{ipv4}/32"), "dev", "eth0"],
    )?;
    run_in(
        ns,
        &[
            "ip",
            "route",
            "add",
            "169.254.1.1",
            "dev",
            "eth0",
            "scope",
            "link",
        ],
    )?;
    run_in(
        ns,
        &[
            "ip",
            "route",
            "add",
            "default",
            "via",
            "169.254.1.1",
            "dev",
            "eth0",
        ],
    )?;
    run_in(parent, &["ip", "link", "set", veth, "up"])?;
    run_in(
        parent,
        &[
            "sysctl",
            "-qw",
            &format!("net.ipv4.conf.{veth}.proxy_arp=1"),
        ],
    )?;
    run_in(
        parent,
        &[
            "sysctl",
            "-qw",
            &format!("net.ipv4.neigh.{veth}.proxy_delay=0"),
        ],
    )?;
    run_in(
        parent,
        &["ip", "route", "add", &format!("{ipv4}/32"), "dev", veth],
    )?;
    Ok(())
}

/// A node namespace and what is plugged into it.
#[derive(Debug)]
pub struct Lab {
    pub node_ns: String,
    /// Namespaces to delete, node last.
    created: Vec<String>,
    veths: usize,
}

impl Lab {
    /// Creates the node namespace `node_ns` (deleting a leftover one of that name first), with
    /// forwarding on, `node_addr` (the node's InternalIP, where kubelet traffic comes from) and
    /// the pods' gateway 169.254.1.1 on its loopback.
    pub fn create(node_ns: &str, node_addr: Ipv4Addr) -> Result<Lab, LabError> {
        let _ = run(&["ip", "netns", "del", node_ns]);
        run(&["ip", "netns", "add", node_ns])?;
        let lab = Lab {
            node_ns: node_ns.to_owned(),
            created: vec![node_ns.to_owned()],
            veths: 0,
        };
        lab.node(&["ip", "link", "set", "lo", "up"])?;
        lab.node(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        lab.node(&["ip", "addr", "add", &format!("{node_addr}/32"), "dev", "lo"])?;
        lab.node(&["ip", "addr", "add", "169.254.1.1/32", "dev", "lo"])?;
        Ok(lab)
    }

    /// Runs `args` in the node namespace.
    pub fn node(&self, args: &[&str]) -> Result<String, LabError> {
        run_in(&self.node_ns, args)
    }

    /// Plugs a namespace `ns` (deleting a leftover one of that name first) holding `addrs`: the
    /// first on `eth0` like a pod's, the others as further /32s routed to the same veth (an
    /// outside host with several addresses). Returns the node-side veth's name.
    pub fn add_host(&mut self, ns: &str, addrs: &[Ipv4Addr]) -> Result<String, LabError> {
        let _ = run(&["ip", "netns", "del", ns]);
        let veth = format!("vl{}{}", std::process::id() % 100_000, self.veths)
            .chars()
            .take(15)
            .collect::<String>();
        self.veths += 1;
        let (first, rest) = addrs.split_first().expect("a host has an address");
        // Deleted before the node: on failure half way, drop still removes it.
        self.created.insert(0, ns.to_owned());
        plug(&self.node_ns, ns, &veth, &first.to_string())?;
        for a in rest {
            run_in(
                ns,
                &["ip", "addr", "add", &format!("{a}/32"), "dev", "eth0"],
            )?;
            self.node(&["ip", "route", "add", &format!("{a}/32"), "dev", &veth])?;
        }
        Ok(veth)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in &self.created {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `f` with this thread in network namespace `ns` (created by `ip netns add`), then moves
/// the thread back. Sockets `f` creates stay in `ns` for their whole life, so one process can
/// talk from many namespaces. `f` must not block on other tasks: the thread is switched only
/// for the duration of the call.
pub fn in_netns<T>(ns: &str, f: impl FnOnce() -> std::io::Result<T>) -> std::io::Result<T> {
    let home = std::fs::File::open("/proc/thread-self/ns/net")?;
    let target = std::fs::File::open(format!("/var/run/netns/{ns}"))?;
    set_netns(&target)?;
    let result = f();
    // Failing to come back would leave the thread in the wrong namespace for whatever runs on it
    // next: that is not recoverable.
    set_netns(&home).expect("returning the thread to its network namespace");
    result
}

#[allow(unsafe_code)]
fn set_netns(ns: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = ns.as_fd();
    // SAFETY: setns only reads the descriptor, which `ns` keeps open for the whole call.
    let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
