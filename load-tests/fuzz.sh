#!/usr/bin/env bash
# Long fuzzing runs of the parsers and decoders an attacker reaches (the tests run a short,
# fixed one): the Logging filter, the SQL endpoint, the ingest decoder, the manifest loader, the
# iptables line parser and WAL replay. Prints a table per run; inputs that found something are
# saved under fuzz-findings/TARGET/ (replay one with `verdict-fuzz --replay FILE`).
# Usage: bash load-tests/fuzz.sh [SECONDS_PER_TARGET] [SEED] [TARGET ...]   (defaults: 300, 1, all)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
SECONDS_PER_TARGET=${1:-300}
SEED=${2:-1}
shift 2 || shift $# || true
# Debug builds: they keep overflow checks and debug assertions on, and need no release build of
# DataFusion.
cargo build -q -p verdict-fuzz --bin verdict-fuzz
"$CARGO_TARGET_DIR/debug/verdict-fuzz" --seconds "$SECONDS_PER_TARGET" --seed "$SEED" "$@"
