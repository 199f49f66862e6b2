#!/usr/bin/env bash
# Detection quality and cost of the collector's deny-spike detectors (release build; out of CI).
#  1. A simulated day (no sleeping) of diurnal background traffic over 200 namespaces with
#     labelled attacks (floods, slow ramps, port scans) and a noisy but benign batch job, fed to
#     the collector's alert engine with its default flow rules: detection delay p50/p99 per
#     attack type, missed attacks, false alerts per day by rule.
#  2. --throughput: 200,000 rows per simulated second through the engine and the log-based
#     metrics: CPU as % of one core at 200k records/s, and the rows/s one core sustains.
# The scenario and the matching rules are in the module doc of alert-quality/main.rs and in
# load-tests/README.md. Prints Markdown tables, each followed by a `summary:` line.
# Usage: bash load-tests/alert-quality.sh [HOURS] [SEED]   (default 24 1)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build -q --release -p verdict-load-tests --bin alert-quality
BIN="$CARGO_TARGET_DIR/release/alert-quality"
HOURS=${1:-24}
SEED=${2:-1}
"$BIN" --hours "$HOURS" --seed "$SEED"
echo
"$BIN" --throughput --seed "$SEED"
