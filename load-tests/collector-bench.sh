#!/usr/bin/env bash
# Collector storage-path benchmark (release build; out of CI). For each run, N simulated nodes
# stream realistic policy-action JSON lines over loopback gRPC into an in-process collector with
# its default settings (WAL fsync per group commit, zstd Parquet, rollups) storing in a local
# folder; the clock stops when the last record is in a committed Parquet file. The same rows are
# then written by a bare arrow-rs ArrowWriter: the ceiling. Prints a Markdown table.
# Usage: bash load-tests/collector-bench.sh [NODES:RECORDS_PER_NODE ...]   (default 8:500000)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build -q --release -p verdict-load-tests --bin collector-load
BIN="$CARGO_TARGET_DIR/release/collector-load"
RUNS=("${@:-8:500000}")

echo "| nodes | records | end to end to committed Parquet | ack p50 / p99 | stored bytes/record (flushed / compacted) | rollup bytes/record | ceiling: bare ArrowWriter, default props / zstd | ratio to ceiling (default / zstd) |"
echo "|---|---|---|---|---|---|---|---|"
for run in "${RUNS[@]}"; do
  nodes=${run%%:*}
  per=${run##*:}
  line=$("$BIN" --nodes "$nodes" --records-per-node "$per" | tail -1)
  get() { tr ' ' '\n' <<<"$line" | awk -F= -v k="$1" '$1 == k { print $2 }'; }
  printf '| %s | %s | %s rec/s | %s / %s ms | %s / %s | %s | %s / %s rows/s | %s / %s |\n' \
    "$nodes" "$(get records)" "$(get records_per_s)" "$(get ack_p50_ms)" "$(get ack_p99_ms)" \
    "$(get stored_bytes_per_record)" "$(get compacted_bytes_per_record)" "$(get rollup_bytes_per_record)" \
    "$(get ceiling_default_rows_per_s)" "$(get ceiling_zstd_rows_per_s)" \
    "$(get ratio_to_default_ceiling)" "$(get ratio_to_zstd_ceiling)"
  echo "<!-- $line -->" >&2
done
