#!/usr/bin/env bash
# Query latency of Verdict (verdict-collector's query API: DataFusion over the lake) against
# DuckDB on the same Parquet files, per query, in one run. Release builds; outside CI.
#
# usage: load-tests/query-bench.sh [RECORDS] [HOURS]     (default 100000000 over 24 hours)
#
# The lake is generated straight into the collector's layout by `query-lake-gen` (collector
# Parquet writer settings, a commit log naming every file) under $QUERY_BENCH_DIR (default
# /tmp/verdict-query-bench) and reused by later runs of the same size.
set -euo pipefail
RECORDS=${1:-100000000}
HOURS=${2:-24}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${QUERY_BENCH_DIR:-/tmp/verdict-query-bench}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/release

python3 -c 'import duckdb' 2>/dev/null || python3 -m pip install -q duckdb
(cd "$ROOT" && cargo build --release --locked -q -p verdict-collector --bin verdict-collector \
  -p verdict-load-tests --bin query-lake-gen)

LAKE=$WORK/lake-$RECORDS-$HOURS
if [ ! -f "$WORK/lake-$RECORDS-$HOURS.done" ]; then
  rm -rf "$LAKE"
  mkdir -p "$LAKE"
  "$BIN/query-lake-gen" --dir "$LAKE" --records "$RECORDS" --hours "$HOURS" --instance-id bench
  touch "$WORK/lake-$RECORDS-$HOURS.done"
fi

# The collector's scratch state (WAL, config, logs) goes with the script, whatever ends it.
STATE=$(mktemp -d "$WORK/state.XXXXXX")
PID=
trap '[ -n "$PID" ] && { kill $PID 2>/dev/null; wait $PID 2>/dev/null; }; rm -rf "$STATE"' EXIT
cat > "$STATE/collector.toml" <<TOML
instance_id = "bench"
data_dir = "$STATE"
[grpc]
listen = "127.0.0.1:0"
[http]
listen = "127.0.0.1:0"
[storage]
url = "$LAKE"
[compaction]
enabled = false
[retention]
flows = "0s"
loss = "0s"
rollups = "0s"
[query]
max_rows = 10000000
max_memory = "8GiB"
timeout = "15m"
TOML
"$BIN/verdict-collector" --config "$STATE/collector.toml" > "$STATE/stdout" 2> "$STATE/stderr" &
PID=$!
# The collector prints its bound addresses on stdout; wait for the HTTP one.
URL=""
for _ in $(seq 1 600); do
  URL=$(sed -n 's/.*listening .*http=\([0-9.:]*\).*/http:\/\/\1/p' "$STATE/stdout" | head -1)
  [ -n "$URL" ] && curl -fsS "$URL/healthz" >/dev/null 2>&1 && break
  kill -0 $PID 2>/dev/null || { cat "$STATE/stderr"; exit 1; }
  sleep 0.5
done
[ -n "$URL" ] || { echo "the collector did not start"; cat "$STATE/stderr"; exit 1; }
python3 "$ROOT/load-tests/query-bench.py" "$LAKE" "$URL" "${RUNS:-3}"
