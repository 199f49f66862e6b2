#!/usr/bin/env bash
# The security review's attacks against the built binaries, as tables of what must happen and what
# did (root, for the kernel part). Not a benchmark: debug builds are enough and build fastest.
#  1. verdict-attack: starts verdict-collector (node tokens, a query token) on loopback, streams
#     legitimate records as one node throughout, and attacks ingest (oversized and malformed
#     batches, forged node names and sequence gaps, floods), the SQL and filter endpoints
#     (amplifying functions, deep expressions, huge results, concurrency), the HTTP listener
#     (slow headers, connection floods, forwarded requests) and the shipper (token handling,
#     corrupt checkpoints); after each, the collector must still answer, and at the end every
#     acknowledged record must be stored exactly once.
#  2. the kernel datapath attacks (tests/datapath_attacks.rs: fragments, spoofing, IPv6
#     extension headers, non-SYN packets without a connection, revoked policies).
# Usage: bash load-tests/attack.sh [--release]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
PROFILE=debug
FLAGS=()
if [[ "${1:-}" == "--release" ]]; then PROFILE=release; FLAGS=(--release); fi
cargo build -q "${FLAGS[@]}" -p verdict-collector --bin verdict-collector \
  -p verdict-shipper --bin verdict-shipper -p verdict-load-tests --bin verdict-attack
BIN="$CARGO_TARGET_DIR/$PROFILE"
status=0
echo "## Collector and shipper ($PROFILE build)"
"$BIN/verdict-attack" --collector-bin "$BIN/verdict-collector" --shipper-bin "$BIN/verdict-shipper" || status=1
echo
echo "## Kernel datapath (root, network namespaces)"
echo
echo "| attack | outcome |"
echo "|---|---|"
out=$(cargo test "${FLAGS[@]}" -p verdict-probe --test datapath_attacks -- --test-threads=1 2>&1) || status=1
grep -E '^test .* \.\.\. ' <<<"$out" | sed -E 's/^test ([a-z0-9_]+) \.\.\. (ok|FAILED).*$/| \1 | \2 |/; s/_/ /g' || true
grep -E '^test result' <<<"$out" || echo "$out" | tail -20
exit $status
