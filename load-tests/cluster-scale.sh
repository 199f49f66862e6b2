#!/usr/bin/env bash
# The node agent on a large cluster (release builds; out of CI). `cluster-scale measure` serves a
# synthetic cluster from the fake Kubernetes API server on loopback (no real API server runs on
# this machine) and starts the release `verdict-probe --kubeconfig` (userspace datapath) on it;
# prints a Markdown table: start → initial list returned, list returned → ready (policy
# generation 1 on /metrics), RSS at ready + 2 s and peak, and one pod change → next generation.
# Usage: bash load-tests/cluster-scale.sh [NAMESPACES] [PODS] [POLICIES]   (default 1000 10000 2000)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/t-release}"
cargo build -q --release -p verdict-probe -p verdict-cluster-scale
BIN="$CARGO_TARGET_DIR/release"
"$BIN/cluster-scale" measure --probe "$BIN/verdict-probe" \
  --namespaces "${1:-1000}" --pods "${2:-10000}" --policies "${3:-2000}"
