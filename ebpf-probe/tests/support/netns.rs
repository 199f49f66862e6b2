//! Test topology for the eBPF datapath: a "node" network namespace with IP forwarding, and
//! "pods" — namespaces joined to it by veth pairs, each pod IP routed to its host-side veth
//! (as ptp/Calico-style CNIs do), pods reaching the node through 169.254.1.1 / fe80::1 by proxy
//! ARP (answered at once: `proxy_delay=0`, the default waits up to 0.8 s). The
//! probe binary runs inside the node namespace. Everything is removed on drop, also on failure.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use verdict_schema::PolicyActionRecord;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Fails (CI) or explains and returns false (developer machine) when the kernel tests can't run.
pub fn can_run() -> bool {
    let root = verdict_probe::lab::running_as_root();
    let ip = Command::new("ip").arg("-V").output().is_ok();
    if root && ip {
        return true;
    }
    let why = if root {
        "the `ip` command (iproute2) is missing"
    } else {
        "they need root (network namespaces, eBPF)"
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("eBPF datapath tests cannot run: {why}");
    }
    eprintln!("SKIPPED: eBPF datapath tests: {why}");
    false
}

/// A binary of the workspace: this package's own through Cargo, another package's from the
/// target folder (`cargo test --workspace` builds every binary before any test runs).
pub fn workspace_binary(name: &str) -> PathBuf {
    if name == "verdict-probe"
        && let Some(own) = option_env!("CARGO_BIN_EXE_verdict-probe")
    {
        return PathBuf::from(own);
    }
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/TEST → target/debug/NAME
    let path = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace --bins` (the workspace's tests build it)",
        path.display()
    );
    path
}

pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub const SERVER: &str = r#"
import socket, sys, threading
def echo(c):
    try:
        while True:
            d = c.recv(4096)
            if not d:
                break
            c.sendall(d)
    except Exception:
        pass
    c.close()
def tcp(port):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(('::', port)); s.listen(128)
    while True:
        c, _ = s.accept()
        threading.Thread(target=echo, args=(c,), daemon=True).start()
def udp(port):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(('::', port))
    while True:
        d, a = s.recvfrom(4096); s.sendto(d, a)
for a in sys.argv[1:]:
    proto, port = a.split(':')
    threading.Thread(target=tcp if proto == 'tcp' else udp, args=(int(port),), daemon=True).start()
print('ready', flush=True)
threading.Event().wait()
"#;

/// `proto host port [src_port] [timeout] [rounds] [gap]`: exit 0 if every round trip works.
pub const CLIENT: &str = r#"
import socket, sys, time
proto, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
sport = int(sys.argv[4]) if len(sys.argv) > 4 else 0
timeout = float(sys.argv[5]) if len(sys.argv) > 5 else 0.4
rounds = int(sys.argv[6]) if len(sys.argv) > 6 else 1
gap = float(sys.argv[7]) if len(sys.argv) > 7 else 0
fam = socket.AF_INET6 if ':' in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM if proto == 'tcp' else socket.SOCK_DGRAM)
s.settimeout(timeout)
if sport:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('', sport))
try:
    s.connect((host, port))
    for i in range(rounds):
        s.send(b'ping%d' % i)
        if s.recv(64) != b'ping%d' % i:
            sys.exit(1)
        print('ok', i, flush=True)
        time.sleep(gap)
    sys.exit(0)
except Exception:
    sys.exit(1)
"#;

#[derive(Debug, Clone)]
pub struct PodSpec {
    pub namespace: &'static str,
    pub name: &'static str,
    pub labels: &'static str,
    pub ipv4: String,
    pub ipv6: String,
    /// Container ports, as YAML flow items.
    pub ports: &'static str,
}

pub struct Topology {
    pub id: String,
    pub node_ns: String,
    pub node_ipv4: &'static str,
    pub pods: Vec<(PodSpec, String, String)>, // spec, netns, host veth
    pub dir: tempfile::TempDir,
    pub pin_dir: PathBuf,
    /// The host's bpffs, bind-mounted outside /sys: `ip netns exec` remounts /sys, so the agent
    /// mounts this over its /sys/fs/bpf, as a pod gets the node's through a hostPath. Pins then
    /// outlive the agent, and the test sees them at `pin_dir`.
    host_bpffs: PathBuf,
    children: Vec<Child>,
    extra_netns: Vec<String>,
    /// Pods on a second node (not enforced here): spec and netns.
    pub remote_pods: Vec<(PodSpec, String)>,
}

pub const NODE_NAME: &str = "node-1";

impl Topology {
    pub fn new(pods: Vec<PodSpec>) -> Topology {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("vd{}x{n}", std::process::id() % 100_000);
        let node_ns = format!("{id}-node");
        let dir = tempfile::tempdir().unwrap();
        let host_bpffs = dir.path().join("host-bpffs");
        std::fs::create_dir(&host_bpffs).unwrap();
        if !Command::new("mountpoint")
            .args(["-q", "/sys/fs/bpf"])
            .status()
            .unwrap()
            .success()
        {
            sh(&["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"]);
        }
        sh(&[
            "mount",
            "--bind",
            "/sys/fs/bpf",
            host_bpffs.to_str().unwrap(),
        ]);
        let mut t = Topology {
            node_ns: node_ns.clone(),
            node_ipv4: "172.31.255.1",
            pods: Vec::new(),
            dir,
            pin_dir: PathBuf::from(format!("/sys/fs/bpf/{id}")),
            host_bpffs,
            children: Vec::new(),
            extra_netns: Vec::new(),
            remote_pods: Vec::new(),
            id: id.clone(),
        };
        sh(&["ip", "netns", "add", &node_ns]);
        t.node(&["ip", "link", "set", "lo", "up"]);
        t.node(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        t.node(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        // The node's own address (kubelet probes come from it).
        t.node(&["ip", "addr", "add", "172.31.255.1/32", "dev", "lo"]);
        // The pods' gateway: an address of the node, so the node answers their ARP for it.
        t.node(&["ip", "addr", "add", "169.254.1.1/32", "dev", "lo"]);
        for (i, p) in pods.into_iter().enumerate() {
            let ns = format!("{id}-p{i}");
            let veth = format!("vh{id}{i}").chars().take(15).collect::<String>();
            plug(&node_ns, &ns, &veth, &p.ipv4);
            // IPv6: the pod's address, a route to it, and fe80::1 on the host side as gateway.
            t.pod_cmd(
                &ns,
                &[
                    "ip",
                    "-6",
                    "addr",
                    "add",
                    &format!("{}/128", p.ipv6),
                    "dev",
                    "eth0",
                    "nodad",
                ],
            );
            t.node(&[
                "ip",
                "-6",
                "addr",
                "add",
                "fe80::1/64",
                "dev",
                &veth,
                "nodad",
            ]);
            t.pod_cmd(
                &ns,
                &[
                    "ip", "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0",
                ],
            );
            t.node(&[
                "ip",
                "-6",
                "route",
                "add",
                &format!("{}/128", p.ipv6),
                "dev",
                &veth,
            ]);
            t.pods.push((p, ns, veth));
        }
        t
    }

    /// A namespace outside the cluster ("external host"), routed from the node.
    pub fn add_external(&mut self, ipv4: &str) -> String {
        let ns = format!("{}-ext{}", self.id, self.extra_netns.len());
        let veth = format!("ve{}{}", self.id, self.extra_netns.len())
            .chars()
            .take(15)
            .collect::<String>();
        // A host route like a pod's: the probe attaches only to veths of pods it knows.
        plug(&self.node_ns, &ns, &veth, ipv4);
        self.extra_netns.push(ns.clone());
        ns
    }

    /// A second node ("node-2") joined to this one by a veth pair, with its own pods (addresses
    /// outside 10.244.1.0/24). Returns this node's end of the link: its uplink.
    pub fn add_remote_node(&mut self, pods: Vec<PodSpec>) -> String {
        let rnode = format!("{}-node2", self.id);
        let uplink = format!("vu{}", self.id)
            .chars()
            .take(15)
            .collect::<String>();
        sh(&["ip", "netns", "add", &rnode]);
        let r = |args: &[&str]| {
            let mut v = vec!["ip", "netns", "exec", rnode.as_str()];
            v.extend_from_slice(args);
            sh(&v)
        };
        r(&["ip", "link", "set", "lo", "up"]);
        r(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        r(&["ip", "addr", "add", "169.254.1.1/32", "dev", "lo"]);
        self.node(&[
            "ip", "link", "add", &uplink, "type", "veth", "peer", "name", "uplink", "netns", &rnode,
        ]);
        self.node(&["ip", "link", "set", &uplink, "up"]);
        self.node(&[
            "sysctl",
            "-qw",
            &format!("net.ipv4.conf.{uplink}.proxy_arp=1"),
        ]);
        self.node(&[
            "sysctl",
            "-qw",
            &format!("net.ipv4.neigh.{uplink}.proxy_delay=0"),
        ]);
        // Each end needs an address of its own as ARP sender (both nodes own 169.254.1.1).
        self.node(&["ip", "addr", "add", "172.31.254.1/32", "dev", &uplink]);
        // Like a node's default route: towards the other nodes (`--uplink auto` finds it).
        self.node(&["ip", "route", "add", "default", "dev", &uplink]);
        r(&["ip", "addr", "add", "172.31.254.2/32", "dev", "uplink"]);
        r(&["ip", "link", "set", "uplink", "up"]);
        r(&["sysctl", "-qw", "net.ipv4.conf.uplink.proxy_arp=1"]);
        r(&["sysctl", "-qw", "net.ipv4.neigh.uplink.proxy_delay=0"]);
        r(&["ip", "route", "add", "10.244.1.0/24", "dev", "uplink"]);
        for (i, p) in pods.into_iter().enumerate() {
            let ns = format!("{}-r{i}", self.id);
            let veth = format!("vr{}{i}", self.id)
                .chars()
                .take(15)
                .collect::<String>();
            plug(&rnode, &ns, &veth, &p.ipv4);
            self.node(&[
                "ip",
                "route",
                "add",
                &format!("{}/32", p.ipv4),
                "dev",
                &uplink,
            ]);
            self.extra_netns.push(ns.clone());
            self.remote_pods.push((p, ns));
        }
        self.extra_netns.push(rnode);
        uplink
    }

    pub fn node(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "netns", "exec", &self.node_ns];
        v.extend_from_slice(args);
        sh(&v)
    }

    pub fn pod_cmd(&self, ns: &str, args: &[&str]) -> String {
        let mut v = vec!["ip", "netns", "exec", ns];
        v.extend_from_slice(args);
        sh(&v)
    }

    pub fn pod(&self, name: &str) -> &(PodSpec, String, String) {
        self.pods
            .iter()
            .find(|(p, _, _)| format!("{}/{}", p.namespace, p.name) == name)
            .unwrap_or_else(|| panic!("no pod {name}"))
    }

    /// Starts the echo server in a pod: e.g. `["tcp:8080", "udp:53"]`.
    pub fn serve(&mut self, ns: &str, listeners: &[&str]) {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, "python3", "-u", "-c", SERVER])
            .args(listeners)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "server in {ns} did not start");
        self.children.push(child);
    }

    /// One client exchange from `ns`; true if it worked.
    pub fn connect(&self, ns: &str, proto: &str, host: &str, port: u16, src_port: u16) -> bool {
        python_succeeds(
            ns,
            CLIENT,
            &[proto, host, &port.to_string(), &src_port.to_string()],
        )
    }

    /// A long-lived client: `rounds` exchanges `gap` seconds apart.
    pub fn spawn_client(
        &self,
        ns: &str,
        proto: &str,
        host: &str,
        port: u16,
        rounds: u32,
        gap: f32,
    ) -> Child {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "python3",
                "-u",
                "-c",
                CLIENT,
                proto,
                host,
                &port.to_string(),
                "0",
                "2",
                &rounds.to_string(),
                &gap.to_string(),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    }

    pub fn manifests_dir(&self) -> PathBuf {
        self.dir.path().join("manifests")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("log/policy_action.log")
    }

    /// Writes the cluster manifests (node, namespaces, pods) plus `extra` (policies, logging).
    pub fn write_manifests(&self, extra: &str) {
        let dir = self.manifests_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let mut y = format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {NODE_NAME}}}\nstatus: {{addresses: [{{type: InternalIP, address: {}}}]}}\n",
            self.node_ipv4
        );
        let mut namespaces: Vec<&str> = self
            .pods
            .iter()
            .map(|(p, _, _)| p.namespace)
            .chain(self.remote_pods.iter().map(|(p, _)| p.namespace))
            .collect();
        namespaces.sort();
        namespaces.dedup();
        for ns in namespaces {
            y.push_str(&format!(
                "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"
            ));
        }
        for (p, _, _) in &self.pods {
            y.push_str(&format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {}\n  namespace: {}\n  labels: {}\n  ownerReferences: [{{apiVersion: apps/v1, kind: ReplicaSet, name: {}-rs, controller: true}}]\nspec:\n  nodeName: {NODE_NAME}\n  containers: [{{name: c, ports: [{}]}}]\nstatus:\n  podIP: {}\n  podIPs: [{{ip: {}}}, {{ip: '{}'}}]\n",
                p.name, p.namespace, p.labels, p.name, p.ports, p.ipv4, p.ipv4, p.ipv6
            ));
        }
        for (p, _) in &self.remote_pods {
            y.push_str(&format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {}\n  namespace: {}\n  labels: {}\nspec:\n  nodeName: node-2\n  containers: [{{name: c, ports: [{}]}}]\nstatus:\n  podIP: {}\n",
                p.name, p.namespace, p.labels, p.ports, p.ipv4
            ));
        }
        std::fs::write(dir.join("cluster.yaml"), y).unwrap();
        std::fs::write(dir.join("policies.yaml"), extra).unwrap();
    }

    /// Starts verdict-probe (eBPF datapath) in the node namespace and waits until every pod's
    /// veth has both programs.
    pub fn start_probe(&mut self, extra_args: &[&str]) -> Probe {
        self.start_probe_with(None, extra_args)
    }

    /// The probe as root holding only `capabilities` (e.g. `["bpf", "net_admin"]`).
    pub fn start_probe_with_capabilities(
        &mut self,
        capabilities: &[&str],
        extra_args: &[&str],
    ) -> Probe {
        self.start_probe_with(Some(capabilities), extra_args)
    }

    /// `verdict-probe` as the node's agent: in the node's network namespace, the host's bpffs at
    /// /sys/fs/bpf, and (given `capabilities`) root with only those, as a container whose
    /// securityContext drops ALL and adds them (the bounding set is narrowed by `setpriv`, so
    /// root's capabilities after exec are exactly these). Arguments follow.
    pub fn agent_command(&self, capabilities: Option<&[&str]>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.node_ns])
            .args(["sh", "-c", "mount --bind \"$0\" /sys/fs/bpf && exec \"$@\""])
            .arg(&self.host_bpffs);
        if let Some(caps) = capabilities {
            let set: String = caps.iter().map(|c| format!(",+{c}")).collect();
            cmd.args([
                "setpriv".into(),
                format!("--bounding-set=-all{set}"),
                "--inh-caps=-all".into(),
                "--".into(),
            ]);
        }
        cmd.arg(workspace_binary("verdict-probe"));
        cmd
    }

    /// The enforcing agent's command (eBPF datapath, this topology's state, log and pins), not
    /// started: [`Topology::start_probe`] starts it and waits until it is ready.
    pub fn probe_command(&self, capabilities: Option<&[&str]>, extra_args: &[&str]) -> Command {
        let mut cmd = self.agent_command(capabilities);
        cmd.args([
            "--datapath",
            "ebpf",
            "--node-name",
            NODE_NAME,
            "--metrics-addr",
            "127.0.0.1:0",
            "--reload-interval",
            "200ms",
        ])
        // State from the manifest folder, unless the test gives an API server.
        .args(if extra_args.contains(&"--kubeconfig") {
            vec![]
        } else {
            vec!["--manifests".into(), self.manifests_dir().into_os_string()]
        })
        .arg("--log-path")
        .arg(self.log_path())
        .arg("--bpf-pin-dir")
        .arg(&self.pin_dir)
        .args(extra_args);
        cmd
    }

    fn start_probe_with(&mut self, capabilities: Option<&[&str]>, extra_args: &[&str]) -> Probe {
        let mut cmd = self.probe_command(capabilities, extra_args);
        cmd.env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        // Ready when it says so (its event reader runs from then on). Its log is echoed, and kept
        // in the test folder for failures.
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let log_copy = self.dir.path().join("probe.stderr");
        std::thread::spawn(move || {
            use std::io::{BufRead, Write};
            let mut copy = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log_copy)
                .ok();
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                eprintln!("[probe] {line}");
                if let Some(f) = copy.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                if line.contains("datapath: ebpf, ready") {
                    let _ = tx.send(());
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while rx.recv_timeout(Duration::from_millis(50)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "verdict-probe exited before it was ready: {status}\n{}",
                    self.probe_log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "verdict-probe not ready\n{}",
                self.probe_log()
            );
        }
        self.wait_attached(&mut child);
        Probe(Some(child))
    }

    /// What the probe logged.
    pub fn probe_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("probe.stderr")).unwrap_or_default()
    }

    pub fn wait_attached(&self, probe: &mut Child) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for (_, _, veth) in &self.pods {
            loop {
                if let Some(status) = probe.try_wait().unwrap() {
                    panic!("verdict-probe exited before attaching: {status}");
                }
                let ingress = self.node(&["tc", "filter", "show", "dev", veth, "ingress"]);
                let egress = self.node(&["tc", "filter", "show", "dev", veth, "egress"]);
                if ingress.contains("verdict_from_pod") && egress.contains("verdict_to_pod") {
                    break;
                }
                assert!(Instant::now() < deadline, "programs not attached to {veth}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Stops the probe cleanly (SIGINT: open deny windows are written) and returns the records.
    pub fn stop_probe(&self, mut probe: Probe) -> Vec<PolicyActionRecord> {
        let mut probe = probe.0.take().expect("running");
        sh(&["kill", "-INT", &probe.id().to_string()]);
        let status = probe.wait().unwrap();
        assert!(status.success(), "probe exited with {status}");
        records(&self.log_path())
    }

    /// Poll with a deadline until `cond` holds.
    pub fn eventually(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The running probe; killed if the test fails before stopping it.
pub struct Probe(pub Option<Child>);

impl Probe {
    /// kill -9: the agent dies without any cleanup.
    pub fn kill9(mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Plugs netns `ns` into `parent` like a routed CNI's pod (see [`verdict_probe::lab::plug`]).
fn plug(parent: &str, ns: &str, veth: &str, ipv4: &str) {
    verdict_probe::lab::plug(parent, ns, veth, ipv4).unwrap_or_else(|e| panic!("{e}"));
}

pub fn records(path: &Path) -> Vec<PolicyActionRecord> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

impl Drop for Topology {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Programs attached to pod veths go with the veths; the node netns takes the rest.
        for (_, ns, _) in &self.pods {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        for ns in &self.extra_netns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.node_ns])
            .status();
        if self.pin_dir.exists() {
            if let Ok(entries) = std::fs::read_dir(&self.pin_dir) {
                for e in entries.flatten() {
                    let _ = std::fs::remove_file(e.path());
                }
            }
            let _ = std::fs::remove_dir(&self.pin_dir);
        }
        let _ = Command::new("umount")
            .arg("--lazy")
            .arg(&self.host_bpffs)
            .status();
    }
}

/// Runs the Python `script` with `args` in the network namespace `ns`; true if it exited 0.
pub fn python_succeeds(ns: &str, script: &str, args: &[&str]) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c", script])
        .args(args)
        .status()
        .unwrap()
        .success()
}
