#!/usr/bin/env bash
# Every test of the project, from a fresh checkout: formatting, lints, unit and contract tests,
# CLI tests, the real-engine suite (builds the bundled Camunda engine with Maven on first use),
# the fault-injection suite, the tracing tests (builds Jaeger v2 with Go, scripts/jaeger.sh), the
# rolling-update tests (builds the previous release from this clone's history,
# scripts/previous-release.sh), the
# cluster tests (installs PostgreSQL and HAProxy from Debian's packages when missing), the release build the Dockerfile performs, and the deployment and
# monitoring lints (installs their pinned tools into .tools/). Each part of the suite prints how
# many tests it ran (scripts/test-count.sh), and the end prints them all and their sum.
#
#   scripts/test.sh            everything
#   scripts/test.sh --count    only the test parts, listed (libtest --list), not run: how many
#                              tests each part would run; builds the tests, nothing else
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/test-count.sh
source scripts/test-count.sh

case "${1:-}" in
  "") export TEST_COUNT_LIST=0 ;;
  --count) export TEST_COUNT_LIST=1 ;;
  *) echo "usage: scripts/test.sh [--count]" >&2; exit 2 ;;
esac

# Each step says when it began (minutes since the start): a CI log shows where the time goes.
step() { printf '\n==> [+%dm%02ds] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }

ENGINE_BUILD_PID=""
cleanup() {
  # The engine's build runs in a process group of its own (see below): end the whole group,
  # Maven's JVM with it, by the pid we started.
  if [[ -n "$ENGINE_BUILD_PID" ]]; then
    kill -TERM -- "-$ENGINE_BUILD_PID" 2>/dev/null || true
    wait "$ENGINE_BUILD_PID" 2>/dev/null || true
  fi
  if [[ -n "${TALLY_OWNER:-}" ]]; then rm -f "$TEST_TALLY"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The bundled engine (Maven) builds in the background while fmt and clippy run in the foreground;
# the tests wait for it. Its own process group (set -m) lets cleanup end it by its pid.
start_engine_build() {
  set -m
  engine/engine.sh build </dev/null &
  ENGINE_BUILD_PID=$!
  set +m
}

wait_for_engine_build() {
  step "the bundled engine (engine/engine.sh build, started in the background; cached)"
  local status=0
  wait "$ENGINE_BUILD_PID" || status=$?
  ENGINE_BUILD_PID=""
  if ((status != 0)); then
    echo "error: the engine's build failed (engine/engine.sh build exited $status; Maven's output is above)" >&2
    exit 1
  fi
}

# The clock-skew tests (tests/it/clock_skew.rs) run worker replicas under libfaketime: Debian's
# faketime package, installed here when missing (as root, like the cluster's PostgreSQL and HAProxy).
ensure_faketime() {
  local lib
  lib=$(compgen -G '/usr/lib/*/faketime/libfaketime.so.1' || true)
  [[ -n "$lib" ]] && return 0
  step "faketime (Debian's package) for the clock-skew tests"
  [[ $(id -u) == 0 ]] || { echo "error: libfaketime is missing: apt-get install faketime (as root), then retry" >&2; exit 1; }
  local apt=(apt-get -q -y -o DPkg::Lock::Timeout=300 --no-install-recommends)
  "${apt[@]}" install faketime || { apt-get -q -o DPkg::Lock::Timeout=300 update && "${apt[@]}" install faketime; } \
    || { echo "error: apt-get install faketime failed" >&2; exit 1; }
}

lints() {
  step "cargo fmt --check"
  cargo fmt --all -- --check

  step "cargo clippy --all-targets --locked -- -D warnings"
  cargo clippy --all-targets --locked -- -D warnings

  step "no import circle among the modules of src/ (scripts/lint/import_graph.py)"
  python3 scripts/lint/import_graph.py src

  step "no new long file or function (scripts/lint/sizes.py; known ones in scripts/lint/sizes-allow.txt)"
  python3 scripts/lint/sizes.py
}

# Three groups run on their own, after the rest: the engine-restart scenario (it stops and starts
# an engine of its own, and is judged by what it rides out, not by how fast), the cluster tests
# (PostgreSQL, two engine nodes and HAProxy: they share one cluster, one test at a time) and the
# chaos gate.
RESTART_TEST=resilience::the_worker_rides_out_an_engine_restart_without_being_restarted
# The chaos gate (scripts/chaos.sh gate) starts a cluster of its own and loads both cores for about
# three minutes: alone. A red gate is a broken promise (RELIABILITY.md), never noise.
CHAOS_GATE=chaos::gate_two_fixed_seeds_on_the_cluster_break_no_promise

test_parts() {
  step "cargo test --locked (unit, contract, CLI and real-engine tests)"
  counted_tests "the main part" --locked -- --skip "$RESTART_TEST" --skip cluster:: --skip "$CHAOS_GATE"

  step "the engine-restart scenario, alone"
  counted_tests "the engine-restart scenario" --locked --test it -- --exact "$RESTART_TEST"

  step "the cluster tests (engine/engine.sh cluster: PostgreSQL, two nodes, HAProxy), one at a time"
  counted_tests "the cluster tests" --locked --test it -- cluster:: --test-threads 1

  step "the chaos gate (scripts/chaos.sh gate: two fixed seeds of combined faults on a cluster), alone"
  counted_tests "the chaos gate" --locked --test it -- --exact "$CHAOS_GATE" --nocapture

  step "the real-engine suite on the other engines of the matrix (Camunda 7.24, Operaton)"
  scripts/engine-matrix.sh camunda-7.24 operaton
}

tally_begin
if ((TEST_COUNT_LIST)); then
  test_parts
  tally_print
  exit 0
fi

start_engine_build
lints
ensure_faketime
# Before the tests, not from within them: the first build on a machine takes minutes of both
# cores, which the tests' timings should not share.
step "Jaeger v2 for the tracing tests (scripts/jaeger.sh: Go module proxy, caches on the machine)"
scripts/jaeger.sh
step "the previous release for the rolling-update tests (scripts/previous-release.sh: cached on the machine)"
scripts/previous-release.sh
wait_for_engine_build
test_parts

step "cargo build --release --locked (what the Dockerfile builds)"
cargo build --release --locked

step "deployment and monitoring files: hadolint, Kubernetes schemas, compose, dashboard, alert rules, Helm chart"
scripts/lint-deploy.sh

tally_print
printf '\nscripts/test.sh: all green in %dm%02ds\n' $((SECONDS / 60)) $((SECONDS % 60))
