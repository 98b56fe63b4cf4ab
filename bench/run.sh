#!/usr/bin/env bash
# camunda-worker benchmark: one command, installs what it needs, idempotent.
#
#   bench/run.sh [--instances N] [--quick] [--only cw-default,cw-10,...] [--skip idle,overhead,...]
#                [--history-levels full,audit] [--ledger]
#                [--cluster-contenders cw-nodes,cw-lb,py,js,java,ceiling] [--cluster-instances N]
#
# Phases (--skip): throughput, idle, overhead, mismatch, cluster, pg-h2 (see the driver's --help).
# The cluster phases start `engine/engine.sh cluster` (PostgreSQL + engine nodes + HAProxy on
# 127.0.0.1:18300-18350), which installs haproxy and postgresql with apt-get when they are missing.
#
# Builds/installs (each only when missing or stale):
#   target/release/camunda-worker     cargo build --release --locked (repo root)
#   bench/.lookup-build/<rev>/target/release/camunda-worker
#                                     the last build with the event-subscription look-up before
#                                     each message (contender cw-lookup): `git archive <rev>` into
#                                     bench/.lookup-build/<rev>/src, cargo build --release --locked
#                                     there; only when that binary is missing (the commit cannot change)
#   bench/ceiling (ceiling, fake-engine)  cargo build --release --locked
#   bench/.venv                       python3 -m venv + pip install -r bench/requirements.txt
#   bench/js/node_modules             npm ci
#   bench/java/target/*.jar           mvn package
#   engine/target/*.jar               engine/engine.sh build
# then runs the driver, the package bench/camunda_bench (python -m camunda_bench; see its --help).
# Results: bench/results/ (quick runs: bench/results/quick/; --ledger: bench/results/ledger/).
# CAMUNDA_WORKER_BIN=path skips building camunda-worker and benchmarks that binary instead.
set -euo pipefail

BENCH=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH")
log() { printf 'bench: %s\n' "$*" >&2; }

for tool in cargo python3 node npm java mvn curl; do
  command -v "$tool" >/dev/null || { log "error: $tool not found"; exit 1; }
done

# camunda-worker
if [[ -n "${CAMUNDA_WORKER_BIN:-}" ]]; then
  CW_BIN=$CAMUNDA_WORKER_BIN
else
  log "cargo build --release --locked (camunda-worker)"
  (cd "$REPO" && cargo build --release --locked --quiet)
  CW_BIN=$REPO/target/release/camunda-worker
fi

# camunda-worker as it was before the ledger (issue 14): the contender cw-lookup
LOOKUP_REV=d948207
LOOKUP_DIR=$BENCH/.lookup-build/$LOOKUP_REV
CW_LOOKUP_BIN=$LOOKUP_DIR/target/release/camunda-worker
if [[ ! -x "$CW_LOOKUP_BIN" ]]; then
  if [[ ! -f "$LOOKUP_DIR/src/Cargo.lock" ]]; then
    git -C "$REPO" cat-file -e "$LOOKUP_REV^{commit}" 2>/dev/null \
      || { log "error: commit $LOOKUP_REV not in this clone (a shallow clone? git fetch --unshallow)"; exit 1; }
    log "git archive $LOOKUP_REV -> ${LOOKUP_DIR#"$REPO"/}/src"
    rm -rf "$LOOKUP_DIR/src"
    mkdir -p "$LOOKUP_DIR/src"
    git -C "$REPO" archive "$LOOKUP_REV" | tar -x -C "$LOOKUP_DIR/src"
  fi
  log "cargo build --release --locked (camunda-worker at $LOOKUP_REV, the look-up build)"
  (cd "$LOOKUP_DIR/src" && cargo build --release --locked --quiet --target-dir "$LOOKUP_DIR/target")
fi

# ceiling client and fake engine
log "cargo build --release --locked (bench/ceiling)"
(cd "$BENCH/ceiling" && cargo build --release --locked --quiet)

# Python venv
VENV=$BENCH/.venv
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating $VENV"
  python3 -m venv "$VENV"
fi
if [[ ! -f "$VENV/.installed" || "$BENCH/requirements.txt" -nt "$VENV/.installed" ]]; then
  log "pip install -r bench/requirements.txt"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$BENCH/requirements.txt"
  touch "$VENV/.installed"
fi

# JS client
if [[ ! -f "$BENCH/js/node_modules/.package-lock.json" || "$BENCH/js/package-lock.json" -nt "$BENCH/js/node_modules/.package-lock.json" ]]; then
  log "npm ci (bench/js)"
  (cd "$BENCH/js" && npm ci --no-audit --no-fund --loglevel=error)
fi

# Java client
JAR=$BENCH/java/target/java-client-worker.jar
if [[ ! -f "$JAR" || -n "$(find "$BENCH/java/pom.xml" "$BENCH/java/src" -newer "$JAR" -print -quit)" ]]; then
  log "mvn package (bench/java)"
  mvn -B -q -f "$BENCH/java/pom.xml" package -DskipTests 2>&1 | sed -e 's/\x1b\[[0-9;]*m//g' >&2
fi

# The engine jar (engine.sh start would build it too; doing it here keeps build time out of the runs)
"$REPO/engine/engine.sh" build

export BENCH_COMMAND="bench/run.sh${*:+ $*}"
# bench/ on PYTHONPATH for -m to find the package (the driver takes it off again for what it starts).
PYTHONPATH="$BENCH${PYTHONPATH:+:$PYTHONPATH}" exec "$VENV/bin/python" -m camunda_bench \
  --cw-bin "$CW_BIN" \
  --cw-lookup-bin "$CW_LOOKUP_BIN" \
  --ceiling-bin "$BENCH/ceiling/target/release/ceiling" \
  --fake-bin "$BENCH/ceiling/target/release/fake-engine" \
  --java-jar "$JAR" \
  "$@"
