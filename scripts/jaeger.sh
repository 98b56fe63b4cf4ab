#!/usr/bin/env bash
# Builds the Jaeger v2 the tracing tests (tests/it/tracing.rs) send their spans to, into
# .tools/bin/jaeger: the version pinned in scripts/tools/jaeger/go.mod (with its go.sum), from the
# Go module proxy. The Go module and build caches live on the machine, not in the clone (as in
# scripts/lint-deploy.sh), so a fresh clone builds it again in seconds; the first build on a
# machine takes a few minutes.
#
#   scripts/jaeger.sh          build when missing or when the pin changed; prints the binary's path
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
MODULE_DIR="$ROOT/scripts/tools/jaeger"
BIN="$ROOT/.tools/bin"
TARGET="$BIN/jaeger"
STAMP="$BIN/.jaeger.version"
GO_CACHE_ROOT="${CAMUNDA_WORKER_GO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/camunda-worker/go}"

# The pin is the module's go.mod and go.sum together.
want=$(cat "$MODULE_DIR/go.mod" "$MODULE_DIR/go.sum" | sha256sum | cut -d' ' -f1)
if [[ -x "$TARGET" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  echo "$TARGET"
  exit 0
fi

command -v go >/dev/null || { echo "error: go not found (needed to build Jaeger for the tracing tests)" >&2; exit 1; }
mkdir -p "$BIN"
log="$BIN/.jaeger-build.log"
echo "building Jaeger (scripts/tools/jaeger/go.mod) into .tools/bin/jaeger; Go caches in $GO_CACHE_ROOT" >&2
if ! (cd "$MODULE_DIR" &&
  GOTOOLCHAIN=local GOFLAGS="-modcacherw -mod=readonly" GOMODCACHE="$GO_CACHE_ROOT/mod" \
    GOCACHE="$GO_CACHE_ROOT/build" GOPATH="$GO_CACHE_ROOT/path" \
    go build -trimpath -o "$TARGET.tmp" github.com/jaegertracing/jaeger/cmd/jaeger) >"$log" 2>&1; then
  cat "$log" >&2
  echo "error: the Jaeger build failed (output above, also in $log)" >&2
  exit 1
fi
mv "$TARGET.tmp" "$TARGET"
printf '%s' "$want" >"$STAMP"
echo "$TARGET"
