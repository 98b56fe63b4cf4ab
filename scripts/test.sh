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

step "cargo test --locked (unit, contract, CLI and real-engine tests)"
cargo test --locked

step "the real-engine suite on the other engines of the matrix (Camunda 7.24, Operaton)"
scripts/engine-matrix.sh camunda-7.24 operaton

step "cargo build --release --locked (what the Dockerfile builds)"
cargo build --release --locked

step "deployment files: hadolint, Kubernetes schemas, compose"
scripts/lint-deploy.sh
