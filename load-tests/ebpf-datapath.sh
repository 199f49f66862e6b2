#!/usr/bin/env bash
# eBPF datapath benchmarks (root; release builds; out of CI). Builds its own network namespaces:
# a "node" with two "pods" (client, server) on veth pairs, as the kernel tests do, then prints:
#  1. the latency the programs add to a TCP connect and to a request/response round trip
#     (same run: without the programs, then with them);
#  2. verdict events per second from the ring buffer through the logging pipeline, with the
#     events the kernel lost (ring buffer full), at increasing offered rates of new connections.
# Usage: bash load-tests/ebpf-datapath.sh [SECONDS_PER_RATE] [RATE ...]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RATE=${1:-5}
shift || true
RATES=${*:-"20000 50000 100000 200000"}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build -q --release -p verdict-probe --bin verdict-probe --example netbench
BIN="$CARGO_TARGET_DIR/release"
ID="vbench$$"
NODE="$ID-node"; CLIENT="$ID-client"; SERVER="$ID-server"
PIN="/sys/fs/bpf/$ID"
WORK=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  ip netns exec "$NODE" "$BIN/verdict-probe" --uninstall --bpf-pin-dir "$PIN" >/dev/null 2>&1 || true
  for ns in "$CLIENT" "$SERVER" "$NODE"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap "exit 130" INT TERM
n() { ip netns exec "$NODE" "$@"; }
ip netns add "$NODE"
n ip link set lo up
n ip addr add 169.254.1.1/32 dev lo
n ip addr add 172.31.255.1/32 dev lo
n sysctl -qw net.ipv4.ip_forward=1
i=10
for ns in "$SERVER" "$CLIENT"; do
  ip netns add "$ns"
  veth="vb$$$i"; veth=${veth:0:15}
  n ip link add "$veth" type veth peer name eth0 netns "$ns"
  ip netns exec "$ns" ip link set lo up
  ip netns exec "$ns" ip link set eth0 up
  ip netns exec "$ns" ip addr add "10.244.7.$i/32" dev eth0
  ip netns exec "$ns" ip route add 169.254.1.1 dev eth0 scope link
  ip netns exec "$ns" ip route add default via 169.254.1.1 dev eth0
  n ip link set "$veth" up
  n sysctl -qw "net.ipv4.conf.$veth.proxy_arp=1"
  n ip route add "10.244.7.$i/32" dev "$veth"
  i=$((i + 1))
done
mkdir -p "$WORK/manifests"
cat > "$WORK/manifests/cluster.yaml" <<YAML
apiVersion: v1
kind: Node
metadata: {name: node-1}
status: {addresses: [{type: InternalIP, address: 172.31.255.1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: bench, labels: {app: server}}
spec: {nodeName: node-1}
status: {podIP: 10.244.7.10}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: bench, labels: {app: client}}
spec: {nodeName: node-1}
status: {podIP: 10.244.7.11}
---
# The server is isolated and allows the client: every connection is judged and logged.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-client, namespace: bench}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress: [{from: [{podSelector: {matchLabels: {app: client}}}]}]
---
apiVersion: networking.gke.io/v1alpha1
kind: NetworkLogging
metadata: {name: default}
spec: {cluster: {allow: {log: true}, deny: {log: true}}}
YAML
ip netns exec "$SERVER" "$BIN/examples/netbench" serve 7000 > "$WORK/server.out" &
pids+=($!)
for _ in $(seq 100); do grep -q ready "$WORK/server.out" 2>/dev/null && break; sleep 0.05; done

echo "measuring latency without the programs..." >&2
without=$(ip netns exec "$CLIENT" "$BIN/examples/netbench" latency 10.244.7.10 7000 3000)
# Started directly (not through a shell function) so that $! is the probe and cleanup stops it.
ip netns exec "$NODE" "$BIN/verdict-probe" --datapath ebpf --node-name node-1 --manifests "$WORK/manifests" \
  --log-path "$WORK/log/policy_action.log" --bpf-pin-dir "$PIN" --rate-limit 0 \
  --metrics-addr 127.0.0.1:9990 2> "$WORK/probe.err" &
pids+=($!)
for _ in $(seq 200); do grep -q "datapath: ebpf, ready" "$WORK/probe.err" 2>/dev/null && break; sleep 0.05; done
grep -q "datapath: ebpf, ready" "$WORK/probe.err" || { cat "$WORK/probe.err"; exit 1; }
echo "measuring latency with the programs..." >&2
with=$(ip netns exec "$CLIENT" "$BIN/examples/netbench" latency 10.244.7.10 7000 3000)

# The programs' own time on the established path: kernel.bpf_stats counts each program's runs
# and nanoseconds; 3,000 round trips on one connection are 4 runs each (request and reply, out of
# one veth and into the other), plus ACKs. Measured apart, as the counting itself costs time.
command -v bpftool >/dev/null || apt-get install -y -qq bpftool >/dev/null
prog_stats() {
  bpftool -j prog show | python3 -c 'import json,sys; p=[x for x in json.load(sys.stdin) if x.get("name","").startswith("verdict_")]; print(sum(x.get("run_time_ns",0) for x in p), sum(x.get("run_cnt",0) for x in p))'
}
stats_was=$(sysctl -n kernel.bpf_stats_enabled)
sysctl -qw kernel.bpf_stats_enabled=1
read -r ns0 runs0 <<< "$(prog_stats)"
ip netns exec "$CLIENT" "$BIN/examples/netbench" rr 10.244.7.10 7000 3000 >/dev/null
read -r ns1 runs1 <<< "$(prog_stats)"
sysctl -qw kernel.bpf_stats_enabled="$stats_was"

echo "| TCP between two namespaces (3,000 each) | connect p50 | connect p99 | request/response p50 | request/response p99 |"
echo "|---|---:|---:|---:|---:|"
read -r c50 c99 r50 r99 <<< "$without"; echo "| without Verdict's programs | ${c50} µs | ${c99} µs | ${r50} µs | ${r99} µs |"
read -r c50 c99 r50 r99 <<< "$with"; echo "| with Verdict's programs (server isolated, every connection judged and logged) | ${c50} µs | ${c99} µs | ${r50} µs | ${r99} µs |"
echo
python3 -c "import sys; ns,runs=int(sys.argv[1]),int(sys.argv[2]); print('Established path: the programs ran %d times for 3,000 round trips, %.0f ns per run on average (%.2f µs per round trip of 4 runs; kernel.bpf_stats).' % (runs, ns/max(runs,1), 4*ns/max(runs,1)/1000))" "$((ns1 - ns0))" "$((runs1 - runs0))"
echo

metric() { n python3 -c "import urllib.request,sys; t=urllib.request.urlopen('http://127.0.0.1:9990/metrics').read().decode(); print(sum(float(l.split()[-1]) for l in t.splitlines() if l.startswith(sys.argv[1])))" "$1"; }
echo "| offered new connections/s | datagrams sent | events through the pipeline | events lost (ring buffer full) | packets dropped by the datapath | conntrack inserts failed |"
echo "|---:|---:|---:|---:|---:|---:|"
run=0
for rate in $RATES; do
  run=$((run + 1))
  before=$(metric policy_logging_allowed_connections_total)
  lost_before=$(metric policy_logging_lost_events_total)
  dropped_before=$(metric verdict_probe_datapath_dropped_packets_total)
  ct_before=$(metric verdict_probe_conntrack_insert_failures_total)
  sent=$(ip netns exec "$CLIENT" "$BIN/examples/netbench" flood 10.244.7.10 "$rate" "$SECONDS_PER_RATE" "$run")
  # Let the pipeline drain what is queued: wait until its counter stops moving.
  after=$(metric policy_logging_allowed_connections_total)
  while sleep 0.5; do
    now=$(metric policy_logging_allowed_connections_total)
    [ "$now" = "$after" ] && break
    after=$now
  done
  lost_after=$(metric policy_logging_lost_events_total)
  dropped_after=$(metric verdict_probe_datapath_dropped_packets_total)
  ct_after=$(metric verdict_probe_conntrack_insert_failures_total)
  python3 -c "import sys; r,s,b,a,lb,la,db,da,cb,ca,secs=map(float,sys.argv[1:]); print('| %d | %d (%.0f/s) | %d (%.0f/s) | %d | %d | %d |' % (r, s, s/secs, a-b, (a-b)/secs, la-lb, da-db, ca-cb))" "$rate" "$sent" "$before" "$after" "$lost_before" "$lost_after" "$dropped_before" "$dropped_after" "$ct_before" "$ct_after" "$SECONDS_PER_RATE"
done
