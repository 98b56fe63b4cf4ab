#!/usr/bin/env bash
# Builds the previous release of camunda-worker, the one a rolling update replaces, for the
# rolling-update tests (tests/it/rolling_update.rs): markers it writes must be recovered by this
# build and markers this build writes by it, never delivered twice. The release is the commit in
# scripts/tools/previous-release/commit (the project has no tagged releases yet: it is the main
# this build's changes were made on; move it forward when a change lands). It is built from this
# clone's history (git archive), in the dev profile, into a cache on the machine keyed by the
# commit, so a fresh clone finds it built; the first build takes a few minutes of both cores.
#
#   scripts/previous-release.sh    build when missing; prints the binary's path
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
REV=$(tr -d '[:space:]' <"$ROOT/scripts/tools/previous-release/commit")
CACHE_ROOT="${CAMUNDA_WORKER_PREVIOUS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/camunda-worker/previous-release}"

cd "$ROOT"
if [[ "$(git rev-parse --is-shallow-repository 2>/dev/null || echo false)" == true ]] &&
  ! git cat-file -e "$REV^{commit}" 2>/dev/null; then
  echo "the clone is shallow and lacks $REV: fetching the rest of its history" >&2
  git fetch -q --unshallow || { echo "error: git fetch --unshallow failed: the previous release $REV is not in this clone" >&2; exit 1; }
fi
full=$(git rev-parse --verify -q "$REV^{commit}") ||
  { echo "error: the previous release $REV (scripts/tools/previous-release/commit) is not in this clone's history" >&2; exit 1; }

DIR="$CACHE_ROOT/$full"
TARGET="$DIR/camunda-worker"
if [[ -x "$TARGET" ]]; then
  echo "$TARGET"
  exit 0
fi

mkdir -p "$DIR"
work=$(mktemp -d "$DIR/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
log="$DIR/build.log"
echo "building the previous release ${full:0:12} (scripts/tools/previous-release/commit) into $DIR" >&2
git archive "$full" | tar -x -C "$work"
if ! (cd "$work" && CARGO_TARGET_DIR="$work/target" cargo build --locked --bin camunda-worker) >"$log" 2>&1; then
  cat "$log" >&2
  echo "error: the previous release's build failed (output above, also in $log)" >&2
  exit 1
fi
mv "$work/target/debug/camunda-worker" "$TARGET.tmp"
mv "$TARGET.tmp" "$TARGET"
echo "$TARGET"
