#!/usr/bin/env bash
# The demo, end to end on the bundled engine: build the worker and the engine side by side, start
# the engine, deploy the BPMN, start a batch of instances with business keys, run the worker until every
# instance has completed, print a summary, and stop everything this script started.
#
#   scripts/demo.sh                 50 instances on port 8080
#   DEMO_INSTANCES=500 DEMO_PORT=18080 scripts/demo.sh
#   DEMO_COMMAND=1 scripts/demo.sh  the long work as a command: examples/follow_up.py runs after each
#                                   complete, and its result goes with the message
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
INSTANCES=${DEMO_INSTANCES:-50}
export ENGINE_PORT=${DEMO_PORT:-8080}
URL="http://127.0.0.1:$ENGINE_PORT/engine-rest"
METRICS_PORT=${DEMO_METRICS_PORT:-9464}
TIMEOUT=${DEMO_TIMEOUT:-300}
BIN="$ROOT/target/release/camunda-worker"
WORKER_PID=""
ENGINE_BUILD_PID=""
WORK_FLAGS=()
if [[ "${DEMO_COMMAND:-0}" == 1 ]]; then
  WORK_FLAGS=(--follow-up-command "$ROOT/examples/follow_up.py")
fi

say() { printf '\033[1mdemo:\033[0m %s\n' "$*" >&2; }

cleanup() {
  # The engine's build runs in a process group of its own (see build_side_by_side): end the whole
  # group, Maven's JVM with it, by the pid we started.
  if [[ -n "$ENGINE_BUILD_PID" ]]; then
    kill -TERM -- "-$ENGINE_BUILD_PID" 2>/dev/null || true
    wait "$ENGINE_BUILD_PID" 2>/dev/null || true
  fi
  if [[ -n "$WORKER_PID" ]] && kill -0 "$WORKER_PID" 2>/dev/null; then
    kill -TERM "$WORKER_PID" 2>/dev/null || true
    wait "$WORKER_PID" 2>/dev/null || true
  fi
  "$ROOT/engine/engine.sh" stop || true
}
trap cleanup EXIT
# Interrupted (Ctrl-C, a TERM): exit, so that the EXIT trap above ends what this script started.
trap 'exit 130' INT
trap 'exit 143' TERM

# The worker (cargo) and the engine (Maven, ~45 s when cold) share nothing: the engine builds in
# the background while cargo builds in the foreground, and the demo goes on once both are built.
# The background build gets a process group of its own (set -m), so that cleanup can end it and
# its JVM by that one pid; a failed build is named in one line.
build_side_by_side() {
  say "building the worker (cargo build --release --locked) and the engine (engine/engine.sh build) side by side"
  set -m
  "$ROOT/engine/engine.sh" build </dev/null &
  ENGINE_BUILD_PID=$!
  set +m
  if ! cargo build --release --locked --manifest-path "$ROOT/Cargo.toml" --quiet; then
    say "error: the worker's build failed (cargo build --release --locked; its output is above)"
    exit 1
  fi
  local engine_status=0
  wait "$ENGINE_BUILD_PID" || engine_status=$?
  ENGINE_BUILD_PID=""
  if ((engine_status != 0)); then
    say "error: the engine's build failed (engine/engine.sh build exited $engine_status; Maven's output is above)"
    exit 1
  fi
}

build_side_by_side

say "starting the bundled Camunda engine on port $ENGINE_PORT"
"$ROOT/engine/engine.sh" start >/dev/null

say "deploying bpmn/message-correlation.bpmn"
"$BIN" --engine-url "$URL" deploy

say "starting $INSTANCES instances of message_correlation with generated business keys"
"$BIN" --engine-url "$URL" start --count "$INSTANCES" >/dev/null
began=$(date +%s.%N)

say "running the worker until every instance has completed"
# A short shutdown grace keeps the demo's exit quick (the grace bounds how long the worker waits
# to release what its abandoned long poll could still lock).
"$BIN" --engine-url "$URL" --metrics-addr "127.0.0.1:$METRICS_PORT" --shutdown-grace 5s "${WORK_FLAGS[@]}" &
WORKER_PID=$!

completed=0
deadline=$((SECONDS + TIMEOUT))
while ((completed < INSTANCES)); do
  if ((SECONDS >= deadline)); then
    say "error: only $completed of $INSTANCES instances completed within ${TIMEOUT}s"
    "$BIN" --engine-url "$URL" status >&2 || true
    exit 1
  fi
  kill -0 "$WORKER_PID" 2>/dev/null || { say "error: the worker exited"; exit 1; }
  sleep 0.5
  count=$(curl -sf "$URL/history/process-instance/count?processDefinitionKey=message_correlation&completed=true") \
    || continue
  completed=$(sed -E 's/.*"count":([0-9]+).*/\1/' <<<"$count")
done
finished=$(date +%s.%N)

kill -TERM "$WORKER_PID"
wait "$WORKER_PID" && worker_exit=0 || worker_exit=$?
WORKER_PID=""

echo
echo "demo summary"
echo "  instances completed: $completed of $INSTANCES (each task completed with var1=1, var2=\"value\", then its message correlated by business key and process instance id)"
awk -v a="$began" -v b="$finished" -v n="$completed" \
  'BEGIN { t = b - a; printf "  time from start to last completion: %.1f s (%.1f instances/s, including the 2 s correlation delay)\n", t, n / t }'
if ((${#WORK_FLAGS[@]})); then
  results=$(curl -sf "$URL/history/variable-instance/count?variableName=result&processDefinitionKey=message_correlation" \
    | sed -E 's/.*"count":([0-9]+).*/\1/')
  echo "  follow-up command examples/follow_up.py: its result arrived with the message of $results instances (history variable \"result\")"
fi
echo "  worker exit code after SIGTERM: $worker_exit"
"$BIN" --engine-url "$URL" status | sed 's/^/  /'
