#!/usr/bin/env bash
# Every test of the project, from a fresh checkout: formatting, lints, unit and contract tests,
# CLI tests, the real-engine suite (builds the bundled Camunda engine with Maven on first use),
# the release build the Dockerfile performs, and the deployment-file lints.
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets --locked -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

step "building the bundled engine (engine/engine.sh build; cached)"
engine/engine.sh build

# The engine-restart scenario runs on its own, after the rest: with the other real-engine tests
# loading both cores at the same time it has failed (the restarted engine stopped answering long
# polls); alone it passes. See the closing notes of issue 3.
RESTART_TEST=resilience::the_worker_rides_out_an_engine_restart_without_being_restarted

step "cargo test --locked (unit, contract, CLI and real-engine tests)"
cargo test --locked -- --skip "$RESTART_TEST"

step "the engine-restart scenario, alone"
cargo test --locked --test it -- --exact "$RESTART_TEST"

step "the real-engine suite on the other engines of the matrix (Camunda 7.24, Operaton)"
scripts/engine-matrix.sh camunda-7.24 operaton

step "cargo build --release --locked (what the Dockerfile builds)"
cargo build --release --locked

step "deployment files: hadolint, Kubernetes schemas, compose"
scripts/lint-deploy.sh
