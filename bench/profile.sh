#!/usr/bin/env bash
# Profile camunda-worker's own CPU with callgrind against the fake engine (no JVM):
#
#   bench/profile.sh [SECONDS=40] [MAX_TASKS=64]
#
# Needs bench/run.sh to have built target/release/camunda-worker and bench/ceiling once.
# Writes bench/results/callgrind.out (not committed) and the summaries callgrind-{self,inclusive}.txt.
set -euo pipefail
BENCH=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH")
SECONDS_TO_RUN=${1:-40}
MAX_TASKS=${2:-64}
PORT=18207
OUT=$BENCH/results
command -v valgrind >/dev/null || { echo "profile.sh: valgrind not found (apt-get install valgrind)" >&2; exit 1; }
mkdir -p "$OUT" "$BENCH/.work"

"$BENCH/ceiling/target/release/fake-engine" --port "$PORT" >"$BENCH/.work/profile-fake.log" 2>&1 &
FAKE=$!
trap 'kill "$FAKE" 2>/dev/null || true' EXIT
sleep 0.5
RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" \
  "$REPO/target/release/camunda-worker" --engine-url "http://127.0.0.1:$PORT/engine-rest" \
  --metrics-addr 127.0.0.1:$((PORT + 1)) --correlation-delay 0s --max-tasks "$MAX_TASKS" \
  >"$BENCH/.work/profile-worker.log" 2>&1 &
WORKER=$!
sleep "$SECONDS_TO_RUN"
STATS=$(curl -s "http://127.0.0.1:$PORT/stats")
kill -TERM "$WORKER"
wait "$WORKER" || true
echo "fake engine counters: $STATS"
{ echo "fake engine counters after ${SECONDS_TO_RUN}s under callgrind: $STATS"
  callgrind_annotate --inclusive=no "$OUT/callgrind.out" 2>/dev/null | sed -n '1,70p'; } >"$OUT/callgrind-self.txt"
{ echo "fake engine counters after ${SECONDS_TO_RUN}s under callgrind: $STATS"
  callgrind_annotate --inclusive=yes "$OUT/callgrind.out" 2>/dev/null | sed -n '1,120p'; } >"$OUT/callgrind-inclusive.txt"
echo "wrote $OUT/callgrind-self.txt and callgrind-inclusive.txt"
