#!/usr/bin/env bash
# Verdict's test command (the README's second command; .ci/run calls exactly this).
# Installs what the tests need, idempotently, then checks formatting and lints and runs every
# test of the workspace. Benchmarks are compiled and run once in test mode, never timed here.
set -euo pipefail
cd "$(dirname "$0")/.."

# One shared target dir (override with CARGO_TARGET_DIR); debug builds only (DESIGN.md).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

need() { command -v "$1" >/dev/null 2>&1; }

# System packages the build and tests use. Installed only when missing.
# clang + libbpf-dev: the eBPF programs; iproute2/iptables/python3: the network-namespace tests.
apt_packages=(pkg-config clang llvm libbpf-dev iproute2 iptables python3 tzdata)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]} (run as root or install them)" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# Python packages the tests use as real, independent peers: moto (an S3-compatible server on
# loopback), pyarrow and duckdb (independent Parquet readers), boto3 (creates test buckets).
if ! python3 -c 'import moto, pyarrow, duckdb, boto3' >/dev/null 2>&1; then
  python3 -m pip install -q 'moto[server]' pyarrow duckdb boto3
fi

for tool in cargo rustfmt cargo-clippy; do
  need "$tool" || { echo "missing $tool: install the Rust toolchain with rustfmt and clippy" >&2; exit 1; }
done

step() { printf '\n==> %s\n' "$*"; }

# eBPF tests pin maps under /sys/fs/bpf.
if [ "$(id -u)" -eq 0 ] && ! mountpoint -q /sys/fs/bpf; then
  mount -t bpf bpf /sys/fs/bpf || echo "warning: could not mount bpffs at /sys/fs/bpf" >&2
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (workspace, all targets)"
cargo test --workspace --all-targets --locked
