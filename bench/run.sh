#!/usr/bin/env bash
# camunda-worker benchmark: one command, installs what it needs, idempotent.
#
#   bench/run.sh [--instances N] [--quick] [--only cw-default,cw-10,...] [--skip idle,overhead,...]
#                [--history-levels full,audit] [--rounds R]
#                [--ledger | --ledger-parts | --max-tasks-sweep | --neighbour | --structure | --compare REV]
#                [--cluster-contenders cw-nodes,cw-lb,py,js,java,ceiling] [--cluster-instances N]
#
# Phases (--skip): throughput, idle, overhead, mismatch, cluster, pg-h2 (see the driver's --help).
# The cluster phases start `engine/engine.sh cluster` (PostgreSQL + engine nodes + HAProxy on
# 127.0.0.1:18300-18350), which installs haproxy and postgresql with apt-get when they are missing.
#
# Builds/installs (each only when missing or stale):
#   target/release/camunda-worker     cargo build --release --locked (repo root)
#   bench/.lookup-build/<rev>/target/release/camunda-worker
#                                     camunda-worker at an older commit, for each <rev> of
#                                     LOOKUP_REV=d948207 (contender cw-lookup: the last build with the
#                                     event-subscription look-up before each message) and
#                                     STRUCTURE_REV=e38ba4e (contender cw-structure: its child, the
#                                     structure refactor, same behaviour): `git archive <rev>` into
#                                     bench/.lookup-build/<rev>/src, cargo build --release --locked
#                                     there; only when that binary is missing (a commit cannot change)
#   bench/ceiling (ceiling, neighbour, fake-engine)  cargo build --release --locked
#   bench/.venv                       python3 -m venv + pip install -r bench/requirements.txt
#   bench/js/node_modules             npm ci
#   bench/java/target/*.jar           mvn package
#   .tools/bin/jaeger                 scripts/jaeger.sh (contender cw-traced only)
#   engine/target/*.jar               engine/engine.sh build
# then runs the driver, the package bench/camunda_bench (python -m camunda_bench; see its --help).
# Results: bench/results/ (quick runs: bench/results/quick/; --ledger: bench/results/ledger/;
# --structure: bench/results/structure/; --neighbour: bench/results/neighbour/).
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

# camunda-worker as it was at an older commit, for the contenders that compare builds: `git archive
# REV` into bench/.lookup-build/REV/src, cargo build --release --locked there (its own target dir);
# only when that binary is missing (a commit cannot change).
rev_bin() { printf '%s\n' "$BENCH/.lookup-build/$1/target/release/camunda-worker"; }
build_rev() {
  local rev=$1 what=$2 dir=$BENCH/.lookup-build/$1
  [[ -x "$(rev_bin "$rev")" ]] && return 0
  if [[ ! -f "$dir/src/Cargo.lock" ]]; then
    git -C "$REPO" cat-file -e "$rev^{commit}" 2>/dev/null \
      || { log "error: commit $rev not in this clone (a shallow clone? git fetch --unshallow)"; exit 1; }
    log "git archive $rev -> ${dir#"$REPO"/}/src"
    rm -rf "$dir/src"
    mkdir -p "$dir/src"
    git -C "$REPO" archive "$rev" | tar -x -C "$dir/src"
  fi
  log "cargo build --release --locked (camunda-worker at $rev, $what)"
  (cd "$dir/src" && cargo build --release --locked --quiet --target-dir "$dir/target")
}
# cw-lookup: as it was before the ledger (issue 14), the look-up before each message
LOOKUP_REV=d948207
# cw-structure: the structure refactor (src/worker/, api/transport/node), LOOKUP_REV's child, same behaviour
STRUCTURE_REV=e38ba4e
# Each older build only when a run asks for its contender (a release build of an old commit takes
# minutes on two cores): cw-lookup by --ledger or --structure or --only naming it, cw-structure by
# --structure or --only, cw-base by --compare REV.
args=" $* "
wants() { [[ "$args" == *"$1"* ]]; }
EXTRA_BINS=()
if wants cw-lookup || wants " --ledger " || wants " --structure "; then
  build_rev "$LOOKUP_REV" "the look-up build"
  EXTRA_BINS+=(--cw-lookup-bin "$(rev_bin "$LOOKUP_REV")")
fi
if wants cw-structure || wants " --structure "; then
  build_rev "$STRUCTURE_REV" "the restructured build"
  EXTRA_BINS+=(--cw-structure-bin "$(rev_bin "$STRUCTURE_REV")")
fi
# cw-traced: the worker's spans go to a real Jaeger v2 (scripts/jaeger.sh builds it; cached)
if wants cw-traced; then
  log "Jaeger v2 (scripts/jaeger.sh)"
  EXTRA_BINS+=(--jaeger-bin "$("$REPO/scripts/jaeger.sh")")
fi
# --compare REV: this tree against REV (git rev-parse accepts any commit name; the build is keyed by
# the full hash, so a branch that moves is rebuilt).
COMPARE_REV=
prev=
for a in "$@"; do
  [[ "$prev" == --compare ]] && COMPARE_REV=$a
  [[ "$a" == --compare=* ]] && COMPARE_REV=${a#--compare=}
  prev=$a
done
if [[ -n "$COMPARE_REV" ]]; then
  base=$(git -C "$REPO" rev-parse --short=7 "$COMPARE_REV^{commit}") \
    || { log "error: --compare $COMPARE_REV: not a commit in this clone"; exit 1; }
  build_rev "$base" "the base of --compare"
  EXTRA_BINS+=(--cw-base-bin "$(rev_bin "$base")")
  NEW_REV=$(git -C "$REPO" rev-parse --short=7 HEAD)
  [[ -z "$(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock)" ]] || NEW_REV="$NEW_REV+changes"
  EXTRA_BINS+=(--new-rev "$NEW_REV")
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
  "${EXTRA_BINS[@]}" \
  --ceiling-bin "$BENCH/ceiling/target/release/ceiling" \
  --fake-bin "$BENCH/ceiling/target/release/fake-engine" \
  --java-jar "$JAR" \
  "$@"
