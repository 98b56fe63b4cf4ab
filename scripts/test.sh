#!/usr/bin/env bash
# Every test of the project, from a fresh checkout: formatting, lints, unit and contract tests,
# CLI tests, the real-engine suite (builds the bundled Camunda engine with Maven on first use),
# the fault-injection suite, the cluster tests (installs PostgreSQL and HAProxy from Debian's
# packages when missing), the release build the Dockerfile performs, and the deployment and
# monitoring lints (installs their pinned tools into .tools/).
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets --locked -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

step "no import circle among the modules of src/ (scripts/lint/import_graph.py)"
python3 scripts/lint/import_graph.py src

step "no new long file or function (scripts/lint/sizes.py; known ones in scripts/lint/sizes-allow.txt)"
python3 scripts/lint/sizes.py

step "building the bundled engine (engine/engine.sh build; cached)"
engine/engine.sh build

# Two groups run on their own, after the rest: the engine-restart scenario (it stops and starts
# an engine of its own, and is judged by what it rides out, not by how fast) and the cluster tests
# (PostgreSQL, two engine nodes and HAProxy: they share one cluster, one test at a time).
RESTART_TEST=resilience::the_worker_rides_out_an_engine_restart_without_being_restarted

step "cargo test --locked (unit, contract, CLI and real-engine tests)"
cargo test --locked -- --skip "$RESTART_TEST" --skip cluster::

step "the engine-restart scenario, alone"
cargo test --locked --test it -- --exact "$RESTART_TEST"

step "the cluster tests (engine/engine.sh cluster: PostgreSQL, two nodes, HAProxy), one at a time"
cargo test --locked --test it -- cluster:: --test-threads 1

step "the real-engine suite on the other engines of the matrix (Camunda 7.24, Operaton)"
scripts/engine-matrix.sh camunda-7.24 operaton

step "cargo build --release --locked (what the Dockerfile builds)"
cargo build --release --locked

step "deployment and monitoring files: hadolint, Kubernetes schemas, compose, dashboard, alert rules"
scripts/lint-deploy.sh
