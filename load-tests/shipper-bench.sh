#!/usr/bin/env bash
# Node shipper benchmark (release builds; out of CI). The release `verdict-shipper` ships a
# policy_action.log to the release `verdict-collector` (default settings: fsynced WAL, zstd
# Parquet, local folder) over loopback gRPC, both processes on this machine.
#
# 1. Throughput: BACKLOG realistic records (~450 bytes each) already in the log; the clock runs
#    from the shipper's start until the collector has acknowledged the last one (the shipper's
#    own acked counter). CPU seconds and peak RSS of the shipper process for that run.
# 2. Steady rates: for each RATE records/s a writer appends lines (in 10 ms slices, with GKE's
#    rotation at 10 MB, 5 kept) for SECONDS; the shipper's CPU over that window (from
#    /proc/PID/stat) gives mCPU, scaled to "per 10,000 records/s", and its RSS (VmRSS at the end,
#    VmHWM peak). Every record written must be acknowledged at the end.
# The writer (python3) and the collector run on the same 2 cores and are not counted.
# Prints a Markdown table.
# Usage: bash load-tests/shipper-bench.sh [BACKLOG] [SECONDS] [RATE ...]   (default 500000 20 10000 50000)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/t-release}"
# SHIPPER_BENCH_BIN_DIR: use binaries built elsewhere (e.g. a debug build, to try the script).
if [ -z "${SHIPPER_BENCH_BIN_DIR:-}" ]; then
  cargo build -q --release -p verdict-shipper -p verdict-collector
fi
BIN="${SHIPPER_BENCH_BIN_DIR:-$CARGO_TARGET_DIR/release}"
BACKLOG="${1:-500000}"
SECONDS_PER_RATE="${2:-20}"
shift $(( $# > 2 ? 2 : $# ))
RATES=("${@:-10000 50000}")
# shellcheck disable=SC2206
RATES=(${RATES[*]})
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

python3 - "$BIN" "$WORK" "$BACKLOG" "$SECONDS_PER_RATE" "${RATES[@]}" <<'PY'
import os, subprocess, sys, time, re, urllib.request, threading

bin_dir, work, backlog, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
rates = [int(r) for r in sys.argv[5:]]
tick = os.sysconf("SC_CLK_TCK")

def line(i):
    ns = ("default", "shop", "payments", "kube-system")[i % 4]
    deny = i % 3 == 0
    pol = "" if deny else f',"policies":[{{"name":"allow-{ns}","namespace":"{ns}"}}]'
    secs = 1767225600 + i // 4
    t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{(i % 1000) * 1000000:09d}Z"
    return (f'{{"connection":{{"src_ip":"10.0.{i % 7}.{i % 11}","dest_ip":"10.1.0.{i % 13}",'
            f'"src_port":{32768 + (i * 7919) % 28000},"dest_port":{(80, 443, 8080, 5432)[i % 4]},'
            f'"protocol":"tcp","direction":"ingress"}},"disposition":"{"deny" if deny else "allow"}"{pol},'
            f'"src":{{"pod_name":"client-{i % 13}","pod_namespace":"shop","namespace":"shop",'
            f'"workload_name":"client-5d9f","workload_kind":"ReplicaSet"}},"dest":{{"pod_name":"api-{i % 11}",'
            f'"pod_namespace":"{ns}","namespace":"{ns}","workload_name":"api-7c4b","workload_kind":"ReplicaSet"}},'
            f'"count":{1 + i % 5 if deny else 1},"node_name":"bench-node","timestamp":"{t}"}}\n')

def start_collector():
    data = os.path.join(work, "collector")
    os.makedirs(data, exist_ok=True)
    cfg = os.path.join(work, "collector.toml")
    with open(cfg, "w") as f:
        f.write(f'data_dir = "{data}"\n[grpc]\nlisten = "127.0.0.1:0"\n[http]\nlisten = "127.0.0.1:0"\n'
                '[retention]\nflows = "0s"\nloss = "0s"\nrollups = "0s"\n')
    p = subprocess.Popen([f"{bin_dir}/verdict-collector", "--config", cfg], stdout=subprocess.PIPE,
                         stderr=open(os.path.join(work, "collector.log"), "w"), text=True,
                         env={**os.environ, "RUST_LOG": "warn"})
    for l in p.stdout:
        m = re.match(r"verdict-collector listening grpc=(\S+)", l)
        if m:
            threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
            return p, m.group(1)
    raise SystemExit("the collector did not start; see " + os.path.join(work, "collector.log"))

def start_shipper(name, grpc):
    logs = os.path.join(work, name, "logs")
    state = os.path.join(work, name, "state")
    os.makedirs(logs, exist_ok=True)
    p = subprocess.Popen([f"{bin_dir}/verdict-shipper", "--log-dir", logs, "--checkpoint-dir", state,
                          "--collector", f"http://{grpc}", "--node-name", name, "--project", "bench",
                          "--metrics-addr", "127.0.0.1:0"],
                         stdout=subprocess.PIPE, stderr=open(os.path.join(work, name + ".log"), "w"),
                         text=True, env={**os.environ, "RUST_LOG": "warn"})
    for l in p.stdout:
        m = re.match(r"verdict-shipper started metrics=(\S+)", l)
        if m:
            return p, m.group(1), logs
    raise SystemExit("the shipper did not start")

def acked(metrics):
    body = urllib.request.urlopen(f"http://{metrics}/metrics").read().decode()
    m = re.search(r'verdict_shipper_records_acked_total\{input="policy_action"\} (\d+)', body)
    return int(m.group(1))

def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick

def rss_mib(pid, key):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith(key + ":"):
            return int(l.split()[1]) / 1024
    return 0.0

collector, grpc = start_collector()
rows = []

# 1. Throughput from a backlog.
logs = os.path.join(work, "backlog", "logs")
os.makedirs(logs, exist_ok=True)
with open(os.path.join(logs, "policy_action.log"), "w") as f:
    for i in range(1, backlog + 1):
        f.write(line(i))
t0 = time.monotonic()
shipper, metrics, _ = start_shipper("backlog", grpc)
while acked(metrics) < backlog:
    time.sleep(0.05)
elapsed = time.monotonic() - t0
cpu = cpu_seconds(shipper.pid)
rows.append(("backlog", f"{backlog:,} records", f"{backlog / elapsed:,.0f} rec/s",
             f"{cpu / elapsed * 1000:,.0f} mCPU ({cpu / backlog * 1e6:.2f} µs/record)",
             f"{cpu / backlog * 1e6 * 10:.1f} mCPU",
             f"{rss_mib(shipper.pid, 'VmRSS'):.1f} / {rss_mib(shipper.pid, 'VmHWM'):.1f} MiB"))
shipper.terminate(); shipper.wait()

# 2. Steady rates with rotation.
for rate in rates:
    name = f"rate{rate}"
    shipper, metrics, logs = start_shipper(name, grpc)
    path = os.path.join(logs, "policy_action.log")
    f = open(path, "a")
    size, i, written = 0, 0, 0
    t_start = time.monotonic()
    cpu0, t_cpu0 = None, None
    per_slice = rate / 100.0
    owed = 0.0
    while True:
        now = time.monotonic()
        if now - t_start >= seconds:
            break
        if cpu0 is None and now - t_start >= 2.0:
            cpu0, t_cpu0 = cpu_seconds(shipper.pid), now
        owed += per_slice
        chunk = []
        while owed >= 1:
            i += 1
            owed -= 1
            chunk.append(line(i))
        data = "".join(chunk)
        if size + len(data) > 10 * 1024 * 1024:
            f.close()
            for k in range(4, 0, -1):
                if os.path.exists(f"{path}.{k}"):
                    os.rename(f"{path}.{k}", f"{path}.{k + 1}")
            os.rename(path, f"{path}.1")
            f, size = open(path, "a"), 0
        f.write(data); f.flush()
        size += len(data)
        written = i
        time.sleep(max(0.0, 0.01 - (time.monotonic() - now)))
    t_cpu1 = time.monotonic()
    cpu1 = cpu_seconds(shipper.pid)
    achieved = written / (t_cpu1 - t_start)
    deadline = time.monotonic() + 60
    while acked(metrics) < written:
        if time.monotonic() > deadline:
            raise SystemExit(f"rate {rate}: only {acked(metrics)} of {written} acknowledged")
        time.sleep(0.05)
    mcpu = (cpu1 - cpu0) / (t_cpu1 - t_cpu0) * 1000
    rows.append((f"{rate:,}/s offered", f"{written:,} records, {seconds:.0f} s", f"{achieved:,.0f} rec/s written and acked",
                 f"{mcpu:,.0f} mCPU", f"{mcpu * 10000 / achieved:.1f} mCPU",
                 f"{rss_mib(shipper.pid, 'VmRSS'):.1f} / {rss_mib(shipper.pid, 'VmHWM'):.1f} MiB"))
    shipper.terminate(); shipper.wait()

collector.terminate(); collector.wait()
print("| run | records | file → acknowledged | shipper CPU | CPU per 10,000 records/s | shipper RSS (now / peak) |")
print("|---|---|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
PY
