//! Attacks on the eBPF datapath from a pod, with crafted packets in real network namespaces:
//! fragments, TCP packets without SYN, revoked allows, spoofed "replies", IPv6 extension
//! headers. Each one passed the programs before they failed closed (issue "Security"); a
//! positive control next to each shows that allowed traffic of the same shape still works.
//! These tests need root; in CI (CI=true) they fail rather than skip when they cannot run.

mod support;

use support::netns::{PodSpec, Topology, can_run, python_succeeds};

/// Crafts and sends packets with raw sockets, then reports what came back from the target.
/// `frag-syn SRC DST DPORT SPORT FIRST PAYLOAD`: a SYN carrying PAYLOAD bytes, sent as IPv4
///   fragments whose first holds FIRST bytes of the TCP segment (the rest in 8-byte pieces);
/// `flags SRC DST DPORT SPORT FLAGS`: one TCP packet with FLAGS (IPv4 or IPv6);
/// `spoof SRC DST SPORT DPORT`: a SYN-ACK "reply" with someone else's source, TTL 1.
/// Prints the TCP flags of the target's answer to SPORT (decimal), or `none`.
const CRAFT: &str = r#"
import random, select, socket, struct, sys, time

def csum(b):
    if len(b) % 2:
        b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff

def v6(a):
    return ':' in a

def segment(src, dst, sport, dport, flags, payload=b''):
    h = struct.pack('!HHIIBBHHH', sport, dport, random.randrange(1, 1 << 31),
                    1 if flags & 0x10 else 0, 5 << 4, flags, 65535, 0, 0) + payload
    if v6(src):
        pseudo = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst) \
            + struct.pack('!I3xB', len(h), 6)
    else:
        pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack('!BBH', 0, 6, len(h))
    return h[:16] + struct.pack('!H', csum(pseudo + h)) + h[18:]

def ipv4(src, dst, payload, ident, units, more, ttl=64):
    h = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(payload), ident,
                    (0x2000 if more else 0) | units, ttl, 6, 0,
                    socket.inet_aton(src), socket.inet_aton(dst))
    return h[:10] + struct.pack('!H', csum(h)) + h[12:] + payload

def send(src, dst, packets):
    if v6(dst):
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_TCP)
        s.bind((src, 0))
        for p in packets:
            s.sendto(p, (dst, 0))
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        for p in packets:
            s.sendto(p, (dst, 0))

def sniffer(dst):
    return socket.socket(socket.AF_INET6 if v6(dst) else socket.AF_INET, socket.SOCK_RAW,
                         socket.IPPROTO_TCP)

def answer(sock, peer, peer_port, my_port, timeout=1.5):
    end = time.time() + timeout
    while True:
        left = end - time.time()
        if left <= 0:
            return 'none'
        r, _, _ = select.select([sock], [], [], left)
        if not r:
            return 'none'
        data, addr = sock.recvfrom(65535)
        if addr[0] != peer:
            continue
        tcp = data if v6(peer) else data[(data[0] & 15) * 4:]
        sp, dp = struct.unpack('!HH', tcp[:4])
        if sp == peer_port and dp == my_port:
            return str(tcp[13])

cmd = sys.argv[1]
if cmd == 'frag-syn':
    src, dst, dport, sport, first, size = sys.argv[2], sys.argv[3], int(sys.argv[4]), \
        int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
    seg = segment(src, dst, sport, dport, 0x02, b'x' * size)
    ident = random.randrange(1, 65535)
    pieces = [seg[:first]] + [seg[i:i + 8] for i in range(first, len(seg), 8)]
    packets, off = [], 0
    for i, p in enumerate(pieces):
        packets.append(ipv4(src, dst, p, ident, off // 8, i < len(pieces) - 1))
        off += len(p)
    sn = sniffer(dst)
    send(src, dst, packets)
    print(answer(sn, dst, dport, sport))
elif cmd == 'flags':
    src, dst, dport, sport, flags = sys.argv[2], sys.argv[3], int(sys.argv[4]), \
        int(sys.argv[5]), int(sys.argv[6])
    seg = segment(src, dst, sport, dport, flags)
    sn = sniffer(dst)
    if v6(dst):
        send(src, dst, [seg])
    else:
        send(src, dst, [ipv4(src, dst, seg, random.randrange(1, 65535), 0, False)])
    print(answer(sn, dst, dport, sport))
elif cmd == 'spoof':
    src, dst, sport, dport = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    seg = segment(src, dst, sport, dport, 0x12)
    send(src, dst, [ipv4(src, dst, seg, random.randrange(1, 65535), 0, False, ttl=1)])
    print('sent')
"#;

/// One TCP exchange over IPv6 with a Hop-by-Hop header on every packet (a sticky option).
const HOP_BY_HOP_CLIENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
# Hop-by-Hop: next header (filled in), length 0, PadN option of 4 bytes.
s.setsockopt(socket.IPPROTO_IPV6, 54, bytes([0, 0, 1, 4, 0, 0, 0, 0]))
s.settimeout(0.5)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    s.send(b'ping')
    sys.exit(0 if s.recv(64) == b'ping' else 1)
except Exception:
    sys.exit(1)
"#;

/// A UDP round trip of `size` bytes (fragmented on the way: the veths' MTU is 1500).
const BIG_UDP_CLIENT: &str = r#"
import socket, sys
host, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.5)
try:
    s.sendto(b'y' * size, (host, port))
    d, _ = s.recvfrom(65535)
    sys.exit(0 if len(d) == size else 1)
except Exception:
    sys.exit(1)
"#;

const SERVER_V4: &str = "10.244.1.10";
const SERVER_V6: &str = "fd00:244::10";
const GREEN_V4: &str = "10.244.1.11";
const GREEN_V6: &str = "fd00:244::11";
const RED_V4: &str = "10.244.1.12";
const RED_V6: &str = "fd00:244::12";

fn pod(name: &'static str, labels: &'static str, i: u8) -> PodSpec {
    PodSpec {
        namespace: "default",
        name,
        labels,
        ipv4: format!("10.244.1.{i}"),
        ipv6: format!("fd00:244::{i}"),
        ports: "",
    }
}

fn policy(allowed: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: allow-one, namespace: default}}\nspec:\n  podSelector: {{matchLabels: {{app: server}}}}\n  ingress: [{{from: [{{podSelector: {{matchLabels: {{app: {allowed}}}}}}}]}}]\n"
    )
}

/// The server allows only green; echo servers on TCP and UDP 8080.
fn cluster() -> (Topology, String, String) {
    let mut t = Topology::new(vec![
        pod("server", "{app: server}", 10),
        pod("green", "{app: green}", 11),
        pod("red", "{app: red}", 12),
    ]);
    t.write_manifests(&policy("green"));
    let server = t.pod("default/server").1.clone();
    t.serve(&server, &["tcp:8080", "udp:8080"]);
    let green = t.pod("default/green").1.clone();
    let red = t.pod("default/red").1.clone();
    (t, green, red)
}

/// Runs `body` against a running probe on the cluster (green, red), then stops the probe.
fn attack(body: impl FnOnce(&mut Topology, String, String)) {
    if !can_run() {
        return;
    }
    let (mut t, green, red) = cluster();
    let probe = t.start_probe(&[]);
    body(&mut t, green, red);
    drop(t.stop_probe(probe));
}

fn craft(t: &Topology, ns: &str, args: &[&str]) -> String {
    let mut v = vec!["python3", "-c", CRAFT];
    v.extend_from_slice(args);
    t.pod_cmd(ns, &v).trim().to_owned()
}

/// The target's answer to a crafted packet: SYN-ACK (18) or RST (20) means it got through.
fn got_through(answer: &str) -> bool {
    answer != "none"
}

#[test]
fn a_syn_in_tiny_fragments_does_not_reach_a_denied_port() {
    attack(|t, green, red| {
        // The attack: the TCP header split over 8-byte fragments (no ports in the first one).
        let tiny = craft(
            t,
            &red,
            &["frag-syn", RED_V4, SERVER_V4, "8080", "41001", "8", "0"],
        );
        assert!(!got_through(&tiny), "the server answered {tiny}");
        // The first fragment holds the whole header, for the denied client: judged, dropped.
        let denied = craft(
            t,
            &red,
            &["frag-syn", RED_V4, SERVER_V4, "8080", "41002", "24", "32"],
        );
        assert!(!got_through(&denied), "the server answered {denied}");
        // The same shape from the allowed client: reassembled and answered with a SYN-ACK.
        let allowed = craft(
            t,
            &green,
            &["frag-syn", GREEN_V4, SERVER_V4, "8080", "41003", "24", "32"],
        );
        assert_eq!(allowed, "18", "SYN-ACK to the allowed fragmented SYN");
    });
}

#[test]
fn tcp_packets_without_syn_and_without_an_entry_are_judged() {
    attack(|t, green, red| {
        for (src, dst, sport) in [(RED_V4, SERVER_V4, "42001"), (RED_V6, SERVER_V6, "42002")] {
            for flags in ["16", "24"] {
                // ACK, PSH|ACK: the server's stack answers RST when one reaches it.
                let answer = craft(t, &red, &["flags", src, dst, "8080", sport, flags]);
                assert!(
                    !got_through(&answer),
                    "{src} flags {flags}: the server answered {answer}"
                );
            }
        }
        for (src, dst, sport) in [
            (GREEN_V4, SERVER_V4, "42003"),
            (GREEN_V6, SERVER_V6, "42004"),
        ] {
            let answer = craft(t, &green, &["flags", src, dst, "8080", sport, "16"]);
            assert_eq!(
                answer, "4",
                "{src}: RST from the server to an allowed bare ACK"
            );
        }
    });
}

#[test]
fn a_revoked_allow_ends_established_connections_and_reused_tuples() {
    attack(|t, green, red| {
        // Long-lived: an exchange every 100 ms for 6 s.
        let mut long_lived = t.spawn_client(&green, "tcp", SERVER_V4, 8080, 60, 0.1);
        {
            use std::io::BufRead;
            let mut first = String::new();
            std::io::BufReader::new(long_lived.stdout.as_mut().unwrap())
                .read_line(&mut first)
                .unwrap();
            assert_eq!(first.trim(), "ok 0");
        }
        assert!(t.connect(&green, "tcp", SERVER_V4, 8080, 43100));
        // A change that still allows green keeps its connection.
        std::fs::write(
            t.manifests_dir().join("policies.yaml"),
            policy("green") + "---\n" + &policy("red").replace("allow-one", "allow-red"),
        )
        .unwrap();
        t.eventually("red allowed too", || {
            t.connect(&red, "tcp", SERVER_V4, 8080, 0)
        });
        assert!(
            long_lived.try_wait().unwrap().is_none(),
            "green's connection survives a change that still allows it"
        );
        // Revoked: only red now.
        std::fs::write(t.manifests_dir().join("policies.yaml"), policy("red")).unwrap();
        t.eventually("green refused", || {
            !t.connect(&green, "tcp", SERVER_V4, 8080, 0)
        });
        let status = long_lived.wait().unwrap();
        assert!(
            !status.success(),
            "the established connection must end with its allow"
        );
        assert!(
            !t.connect(&green, "tcp", SERVER_V4, 8080, 43100),
            "a SYN reusing the tuple of a revoked connection is judged anew"
        );
    });
}

#[test]
fn a_spoofed_reply_opens_nothing() {
    attack(|t, _green, red| {
        // Red claims to be the server answering red's port 45555, then connects from that port.
        assert_eq!(
            craft(t, &red, &["spoof", SERVER_V4, RED_V4, "8080", "45555"]),
            "sent"
        );
        assert!(
            !t.connect(&red, "tcp", SERVER_V4, 8080, 45555),
            "the spoofed reply made red's connection look like a reply"
        );
    });
}

#[test]
fn ipv6_extension_headers_are_walked() {
    attack(|_, green, red| {
        let hbh = |ns: &str| python_succeeds(ns, HOP_BY_HOP_CLIENT, &[SERVER_V6, "8080"]);
        assert!(hbh(&green), "allowed traffic behind a Hop-by-Hop header");
        assert!(!hbh(&red), "denied traffic behind a Hop-by-Hop header");
    });
}

#[test]
fn fragmented_datagrams_follow_their_first_fragment() {
    attack(|_, green, red| {
        let big =
            |ns: &str, host: &str| python_succeeds(ns, BIG_UDP_CLIENT, &[host, "8080", "4000"]);
        for host in [SERVER_V4, SERVER_V6] {
            assert!(
                big(&green, host),
                "4000-byte datagrams from green to {host}"
            );
            assert!(!big(&red, host), "4000-byte datagrams from red to {host}");
        }
    });
}
